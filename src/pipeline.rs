//! The stages of a run, each reading one artefact and writing the next, and `run`,
//! which chains them from a [`Config`] into one run folder:
//!
//! ```text
//! runs/<name>/config.toml            the config as run
//!             patches.arrow          normalised training patches (+ image, x, y)
//!             model.sae              network + normalisation
//!             checkpoint.sled/       training checkpoints
//!             loss.csv               training trace
//!             filters.png patches.png
//!             features/<set>-{train,test}.arrow
//!             results.csv            accuracy per feature set and classifier
//!             confusion/<set>-<classifier>.csv
//! ```
//!
//! With `cache_dir` set (sweeps), the store, model, checkpoints and features go to the
//! cache under hashed names instead, and the run folder keeps the rest ([`Paths`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ndarray::{s, Axis};

use crate::checkpoint::{Checkpoint, Checkpoints, OptState, TracePoint};
use crate::classify::{evaluate, write_confusion, Classifier};
use crate::config::{Config, TrainConfig};
use crate::error::{Error, Result};
use crate::features::{write_raw, Encoder};
use crate::ingest::synth::{write_dataset, SynthSpec};
use crate::ingest::{Dataset, ImageSet, OpenOptions};
use crate::minibatch::{run_epoch, steps_per_epoch, MinibatchParams, MinibatchState};
use crate::model::{Header, Model};
use crate::optim::{LbfgsParams, LbfgsState, Stop};
use crate::patches::{sample_chunk, PatchSpec};
use crate::preprocess::{Fitter, NormSpec, Normaliser};
use crate::progress::{say, Progress};
use crate::sae::objective::{Objective, Penalty};
use crate::sae::{Architecture, Network};
use crate::store::{read_features, Kind, Store, StoreWriter};

/// Where a run's artefacts live: in the run folder, or in the shared cache under
/// names that carry the hash of what determines them.
pub struct Paths {
    /// Synthetic data folder.
    pub data: PathBuf,
    /// Patch store.
    pub store: PathBuf,
    /// Model file.
    pub model: PathBuf,
    /// Loss trace of the training that made the model.
    pub loss: PathBuf,
    /// Checkpoint database.
    pub checkpoints: PathBuf,
    /// Feature files.
    pub features: PathBuf,
}

impl Paths {
    /// The paths of `cfg`.
    pub fn of(cfg: &Config) -> Paths {
        let dir = cfg.run_dir();
        match &cfg.cache_dir {
            None => Paths {
                data: dir.join("data"),
                store: dir.join("patches.arrow"),
                model: dir.join("model.sae"),
                loss: dir.join("loss.csv"),
                checkpoints: dir.join("checkpoint.sled"),
                features: dir.join("features"),
            },
            Some(c) => {
                let (p, t) = (cfg.patches_hash(), cfg.training_hash());
                Paths {
                    data: c.join(format!("data-{p}")),
                    store: c.join(format!("patches-{p}.arrow")),
                    model: c.join(format!("model-{t}.sae")),
                    loss: c.join(format!("model-{t}.loss.csv")),
                    checkpoints: c.join(format!("checkpoints-{t}.sled")),
                    features: c.join(format!("features-{t}")),
                }
            }
        }
    }
}

/// The model file of a run.
pub fn model_path(cfg: &Config) -> PathBuf {
    Paths::of(cfg).model
}

/// Opens the run's dataset. When the config asks for synthetic data, it is written
/// into `synth_dir` first and read from there.
pub fn open_data(cfg: &Config, synth_dir: &Path) -> Result<Dataset> {
    let path = match &cfg.synth {
        Some(s) => {
            let out = synth_dir.to_path_buf();
            let spec = SynthSpec {
                layout: s.layout,
                train: s.train,
                test: s.test,
                unlabeled: s.unlabeled,
                seed: cfg.seed,
            };
            let t = Instant::now();
            write_dataset(&spec, &out)?;
            say(format!(
                "synth: {} train, {} test, {} unlabeled images in {:.1} s -> {}",
                s.train,
                s.test,
                s.unlabeled,
                t.elapsed().as_secs_f64(),
                out.display()
            ));
            out
        }
        None => cfg.data.path.clone(),
    };
    let format = match &cfg.synth {
        Some(s) => match s.layout {
            crate::ingest::synth::Layout::Cifar10 => crate::ingest::Format::Cifar10,
            crate::ingest::synth::Layout::Stl10 => crate::ingest::Format::Stl10,
        },
        None => cfg.data.format,
    };
    let opts = OpenOptions {
        pixel_order: match cfg.data.pixel_order.as_str() {
            "auto" => None,
            o => Some(o.parse()?),
        },
    };
    let mut ds = Dataset::open(format, &path, &opts)?;
    let limit = |set: ImageSet, n: usize| if n > 0 { set.truncated(n) } else { set };
    ds.train = limit(ds.train, cfg.data.train_limit);
    ds.test = limit(ds.test, cfg.data.test_limit);
    ds.unlabeled = limit(ds.unlabeled, cfg.data.unlabeled_limit);
    Ok(ds)
}

/// Samples patches from `images`, fits the normalisation on them, and writes the
/// normalised patches to a store at `path`. Two passes over regenerated chunks, so
/// memory is one chunk whatever the number of patches.
pub fn sample_patches(
    images: &ImageSet,
    spec: &PatchSpec,
    norm: NormSpec,
    path: &Path,
    batch_rows: usize,
    extra_meta: &[(&str, String)],
) -> Result<Normaliser> {
    let shape = images.shape();
    spec.check(shape)?;
    let dim = spec.dim(shape.channels);
    let mut fitter = Fitter::new(norm, dim);
    let mut prog = Progress::new("patches (fit normalisation)", spec.count, "patches");
    for c in 0..spec.chunks() {
        let (raw, _) = sample_chunk(images, spec, c);
        images.release();
        fitter.add(raw.view());
        prog.inc(raw.nrows());
    }
    prog.finish();
    let normaliser = fitter.finish()?;
    let mut meta = HashMap::new();
    meta.insert("sae.patch".into(), spec.size.to_string());
    meta.insert("sae.channels".into(), shape.channels.to_string());
    meta.insert("sae.seed".into(), spec.seed.to_string());
    for (k, v) in extra_meta {
        meta.insert((*k).into(), v.clone());
    }
    meta.insert(
        "sae.norm".into(),
        serde_json::to_string(&normaliser).expect("normaliser serialises"),
    );
    let mut w = StoreWriter::create(path, Kind::Patches, dim, batch_rows, &meta)?;
    let mut prog = Progress::new("patches (write store)", spec.count, "patches");
    for c in 0..spec.chunks() {
        let (raw, origins) = sample_chunk(images, spec, c);
        images.release();
        let n = raw.nrows();
        let x = normaliser.apply(raw);
        if x.iter().any(|v| !v.is_finite()) {
            return Err(Error::Numeric(format!(
                "normalised patches of chunk {c} are not finite"
            )));
        }
        for (row, o) in x.axis_iter(Axis(0)).zip(&origins) {
            w.push(row.as_slice().expect("contiguous"), &[o.image, o.x, o.y])?;
        }
        prog.inc(n);
    }
    prog.finish();
    w.finish()?;
    Ok(normaliser)
}

/// The normalisation and patch side a store was written with.
pub fn store_geometry(store: &Store) -> Result<(Normaliser, usize, usize)> {
    let get = |k: &str| {
        store
            .meta(k)
            .ok_or_else(|| Error::bad(store.path(), format!("missing metadata {k}")))
    };
    let norm: Normaliser = serde_json::from_str(get("sae.norm")?)
        .map_err(|e| Error::bad(store.path(), format!("bad sae.norm: {e}")))?;
    let num = |k: &str| -> Result<usize> {
        get(k)?
            .parse()
            .map_err(|_| Error::bad(store.path(), format!("bad {k}")))
    };
    Ok((norm, num("sae.patch")?, num("sae.channels")?))
}

/// Result of a training run.
pub struct Trained {
    /// The model, normalisation included.
    pub model: Model,
    /// Why training stopped.
    pub stop: String,
    /// L-BFGS iterations or mini-batch steps.
    pub iterations: usize,
    /// Function evaluations (L-BFGS) or steps (mini-batch).
    pub evals: usize,
    /// Seconds of training.
    pub seconds: f64,
}

/// When to write checkpoints during training.
#[derive(Clone, Copy, Debug)]
pub struct CheckpointPolicy {
    /// Every this many iterations (L-BFGS) or steps (mini-batch).
    pub every: usize,
    /// Or when this many seconds passed since the last one.
    pub seconds: f64,
}

/// Trains `arch` on a patch store with the configured optimiser (loss and gradient in
/// f32, summed in f64), writing the trace to `loss_csv`.
pub fn train(
    store: &Store,
    arch: Architecture,
    penalty: Penalty,
    tc: &TrainConfig,
    seed: u64,
    loss_csv: &Path,
) -> Result<Trained> {
    train_resumable(store, arch, penalty, tc, seed, loss_csv, None)
}

/// [`train`] with checkpoints: resumes from the newest one in `ckpt`, saves new ones as
/// the policy says, and one at the end.
pub fn train_resumable(
    store: &Store,
    arch: Architecture,
    penalty: Penalty,
    tc: &TrainConfig,
    seed: u64,
    loss_csv: &Path,
    ckpt: Option<(&Checkpoints, CheckpointPolicy)>,
) -> Result<Trained> {
    let (norm, patch, channels) = store_geometry(store)?;
    if store.dim() != arch.visible() {
        return Err(Error::bad(
            store.path(),
            format!(
                "rows have {} values, the network {}",
                store.dim(),
                arch.visible()
            ),
        ));
    }
    let resumed = match ckpt {
        Some((c, _)) => c.latest()?,
        None => None,
    };
    let mut session = Session {
        trace: resumed
            .as_ref()
            .map(|c| c.trace.clone())
            .unwrap_or_default(),
        t0: Instant::now(),
        offset: 0.0,
        last_save: Instant::now(),
        since_save: 0,
        ckpt,
        loss_csv,
    };
    session.offset = session.trace.last().map_or(0.0, |p| p.seconds);
    if resumed.is_some() {
        let last = session.trace.last();
        say(format!(
            "train: resuming from checkpoint at iteration {} (loss {:.6})",
            last.map_or(0, |p| p.iteration),
            last.map_or(f64::NAN, |p| p.loss)
        ));
    }
    let lbfgs = tc.lbfgs();
    let (theta, loss, stop, iterations, evals) = match (tc.minibatch(), resumed.map(|c| c.opt)) {
        (None, None) => run_lbfgs(store, &arch, penalty, &lbfgs, seed, None, &mut session)?,
        (None, Some(OptState::Lbfgs(s))) => {
            run_lbfgs(store, &arch, penalty, &lbfgs, seed, Some(s), &mut session)?
        }
        (Some(mb), None) => run_minibatch(store, &arch, penalty, &mb, seed, None, &mut session)?,
        (Some(mb), Some(OptState::Minibatch(s))) => {
            run_minibatch(store, &arch, penalty, &mb, seed, Some(s), &mut session)?
        }
        _ => {
            return Err(Error::config(
                "train.optimizer",
                "the checkpoint was made by another optimiser (use --restart)",
            ))
        }
    };
    write_trace(loss_csv, &session.trace)?;
    let seconds = session.seconds();
    say(format!(
        "train: stopped ({stop}) after {iterations} iterations, {evals} evaluations, \
         loss {loss:.6}, {seconds:.1} s"
    ));
    let net = Network::from_theta(arch.clone(), &theta);
    Ok(Trained {
        model: Model {
            header: Header {
                arch,
                norm,
                patch,
                channels,
                loss,
                config: String::new(),
            },
            net,
        },
        stop,
        iterations,
        evals,
        seconds,
    })
}

/// Bookkeeping of one training session: trace, timing and checkpoint schedule.
struct Session<'a> {
    trace: Vec<TracePoint>,
    t0: Instant,
    offset: f64,
    last_save: Instant,
    since_save: usize,
    ckpt: Option<(&'a Checkpoints, CheckpointPolicy)>,
    loss_csv: &'a Path,
}

impl Session<'_> {
    fn seconds(&self) -> f64 {
        self.offset + self.t0.elapsed().as_secs_f64()
    }

    /// Records a point and saves a checkpoint when one is due (or `force`).
    fn record(
        &mut self,
        point: TracePoint,
        opt: impl FnOnce() -> OptState,
        force: bool,
    ) -> Result<()> {
        self.trace.push(point);
        self.since_save += 1;
        let Some((c, policy)) = self.ckpt else {
            return Ok(());
        };
        let due = self.since_save >= policy.every
            || self.last_save.elapsed().as_secs_f64() >= policy.seconds;
        if force || due {
            c.save(&Checkpoint {
                opt: opt(),
                trace: self.trace.clone(),
            })?;
            write_trace(self.loss_csv, &self.trace)?;
            self.since_save = 0;
            self.last_save = Instant::now();
        }
        Ok(())
    }
}

/// Writes the loss trace as CSV (atomically).
fn write_trace(path: &Path, trace: &[TracePoint]) -> Result<()> {
    let mut out = String::from("iteration,evaluations,loss,max_abs_gradient,seconds\n");
    for p in trace {
        out.push_str(&format!(
            "{},{},{:.9e},{},{:.3}\n",
            p.iteration,
            p.evals,
            p.loss,
            if p.gmax.is_nan() {
                String::new()
            } else {
                format!("{:.6e}", p.gmax)
            },
            p.seconds
        ));
    }
    crate::model::write_atomic(path, out.as_bytes())
}

/// Parameters, final loss, stop reason, iterations, evaluations.
type Outcome = (Vec<f64>, f64, String, usize, usize);

fn run_lbfgs(
    store: &Store,
    arch: &Architecture,
    penalty: Penalty,
    lbfgs: &LbfgsParams,
    seed: u64,
    resumed: Option<LbfgsState>,
    session: &mut Session,
) -> Result<Outcome> {
    let obj = Objective::new(arch, penalty, store);
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut fg = |theta: &[f64]| -> Result<(f64, Vec<f64>)> {
        let (loss, g) = obj.eval::<f32>(theta)?;
        Ok((loss.total, g))
    };
    let mut st = match resumed {
        Some(s) => s,
        None => {
            let s = LbfgsState::start(arch.init(seed), &mut fg)?;
            let it = s.progress();
            let point = TracePoint {
                iteration: 0,
                evals: it.evals,
                loss: it.f,
                gmax: it.gmax,
                seconds: session.seconds(),
            };
            session.record(point, || OptState::Lbfgs(s.clone()), true)?;
            s
        }
    };
    let stop = loop {
        let stop = st.step(lbfgs, &mut fg)?;
        let it = st.progress();
        if stop.is_none() {
            let point = TracePoint {
                iteration: it.iter,
                evals: it.evals,
                loss: it.f,
                gmax: it.gmax,
                seconds: session.seconds(),
            };
            session.record(point, || OptState::Lbfgs(st.clone()), false)?;
            if it.iter.is_multiple_of(if tty { 1 } else { 10 }) {
                say(format!(
                    "train: iter {:4}/{}  loss {:.6}  max|g| {:.2e}  evals {}  {:.2} s/iter",
                    it.iter,
                    lbfgs.max_iter,
                    it.f,
                    it.gmax,
                    it.evals,
                    session.seconds() / it.iter.max(1) as f64
                ));
            }
        }
        if let Some(s) = stop {
            break s;
        }
    };
    if let Some((c, _)) = session.ckpt {
        c.save(&Checkpoint {
            opt: OptState::Lbfgs(st.clone()),
            trace: session.trace.clone(),
        })?;
    }
    if let Stop::LineSearchFailed(why) = &stop {
        say(format!(
            "train: line search failed ({why}); keeping the last good point"
        ));
    }
    Ok((st.x, st.f, format!("{stop:?}"), st.iter, st.evals))
}

fn run_minibatch(
    store: &Store,
    arch: &Architecture,
    penalty: Penalty,
    mb: &MinibatchParams,
    seed: u64,
    resumed: Option<MinibatchState>,
    session: &mut Session,
) -> Result<Outcome> {
    let mut state = resumed.unwrap_or_else(|| MinibatchState::new(arch.init(seed)));
    let per_epoch = steps_per_epoch(store, mb.batch);
    while state.epoch < mb.epochs {
        let mut prog = Progress::new(
            format!("train: epoch {}/{}", state.epoch + 1, mb.epochs),
            per_epoch - state.pos,
            "steps",
        );
        run_epoch(
            store,
            arch,
            penalty,
            mb,
            seed,
            &mut state,
            &mut |s, loss| {
                let point = TracePoint {
                    iteration: s.steps as usize,
                    evals: s.steps as usize,
                    loss,
                    gmax: f64::NAN,
                    seconds: session.seconds(),
                };
                prog.inc(1);
                session.record(point, || OptState::Minibatch(s.clone()), false)
            },
        )?;
        prog.finish();
        say(format!(
            "train: epoch {} mean mini-batch loss {:.6}",
            state.epoch,
            state.epoch_loss.last().copied().unwrap_or(f64::NAN)
        ));
    }
    if let Some((c, _)) = session.ckpt {
        c.save(&Checkpoint {
            opt: OptState::Minibatch(state.clone()),
            trace: session.trace.clone(),
        })?;
    }
    // The reported loss is the full-batch objective at the final parameters.
    let (loss, _) = Objective::new(arch, penalty, store).eval::<f32>(&state.theta)?;
    let steps = state.steps as usize;
    Ok((state.theta, loss.total, "epochs done".into(), steps, steps))
}

/// One line of `results.csv`.
#[derive(Clone, Debug)]
pub struct ResultRow {
    /// Feature set name (`raw`, `step8-pool`, ...).
    pub features: String,
    /// Classifier.
    pub classifier: Classifier,
    /// Test accuracy.
    pub accuracy: f64,
    /// Feature width.
    pub dim: usize,
    /// Seconds to fit and predict.
    pub seconds: f64,
}

/// Classifies one feature set with every configured classifier.
fn classify_set(
    cfg: &Config,
    which: &[Classifier],
    dir: &Path,
    name: &str,
    train: &Path,
    test: &Path,
    classes: &[String],
) -> Result<Vec<ResultRow>> {
    let (xtr, ytr) = read_features(train)?;
    let (xte, yte) = read_features(test)?;
    let mut rows = Vec::new();
    for &c in which {
        let t = Instant::now();
        let e = evaluate(
            c,
            &cfg.classify.params(cfg.seed),
            &xtr,
            &ytr,
            &xte,
            &yte,
            classes.len(),
        )?;
        let secs = t.elapsed().as_secs_f64();
        say(format!(
            "classify: {name:>14} {:>2}  accuracy {:.4}  ({} features, {:.1} s)",
            c.name(),
            e.accuracy,
            xtr.ncols(),
            secs
        ));
        write_confusion(
            &dir.join("confusion")
                .join(format!("{name}-{}.csv", c.name())),
            &e,
            classes,
        )?;
        rows.push(ResultRow {
            features: name.into(),
            classifier: c,
            accuracy: e.accuracy,
            dim: xtr.ncols(),
            seconds: secs,
        });
    }
    Ok(rows)
}

/// Writes `results.csv`.
pub fn write_results(path: &Path, rows: &[ResultRow]) -> Result<()> {
    let mut out = String::from("features,classifier,accuracy,dim,seconds\n");
    for r in rows {
        out.push_str(&format!(
            "{},{},{:.6},{},{:.3}\n",
            r.features,
            r.classifier.name(),
            r.accuracy,
            r.dim,
            r.seconds
        ));
    }
    crate::model::write_atomic(path, out.as_bytes())
}

/// Runs every stage of `cfg`; returns the run folder and the results.
///
/// A run folder remembers what is done: a patch store or model made by the same
/// config is reused, training resumes from its newest checkpoint, and existing
/// feature files of the same model are kept. `restart` discards all of it first.
pub fn run(cfg: &Config, restart: bool) -> Result<(PathBuf, Vec<ResultRow>)> {
    let dir = cfg.run_dir();
    let paths = Paths::of(cfg);
    for d in [&dir, paths.store.parent().unwrap_or(&dir)] {
        std::fs::create_dir_all(d).map_err(Error::io(d))?;
    }
    // Opening the checkpoint database takes the lock first, so a second process on
    // the same run stops here before touching anything.
    let ckpt = Checkpoints::open(&paths.checkpoints, &cfg.training_hash(), restart)?;
    if restart {
        for f in [
            &paths.store,
            &paths.model,
            &paths.loss,
            &dir.join("results.csv"),
        ] {
            let _ = std::fs::remove_file(f);
        }
        let _ = std::fs::remove_dir_all(&paths.features);
        let _ = std::fs::remove_file(dir.join("done.json"));
    }
    for d in [&paths.features, &dir.join("confusion")] {
        std::fs::create_dir_all(d).map_err(Error::io(d))?;
    }
    let cfg_text = toml::to_string(cfg).expect("config serialises");
    crate::model::write_atomic(&dir.join("config.toml"), cfg_text.as_bytes())?;
    let ds = open_data(cfg, &paths.data)?;
    for n in &ds.notes {
        say(format!("data: {n}"));
    }
    say(format!(
        "data: {} unlabeled, {} train, {} test images of {}x{}x{}",
        ds.unlabeled.len(),
        ds.train.len(),
        ds.test.len(),
        ds.train.shape().height,
        ds.train.shape().width,
        ds.train.shape().channels
    ));
    // Every key is checked before the first heavy stage.
    let spec = PatchSpec {
        size: cfg.patches.size,
        count: cfg.patches.count,
        seed: cfg.seed,
    };
    spec.check(ds.train.shape())?;
    let arch = Architecture::new(
        spec.dim(ds.train.shape().channels),
        &cfg.model.hidden,
        cfg.model.sparse_layer,
        cfg.model.decoder,
    )?;
    let store_path = paths.store.clone();
    let hash = cfg.patches_hash();
    let store = match Store::open(&store_path, Kind::Patches)
        .ok()
        .filter(|s| s.meta("sae.config") == Some(hash.as_str()))
    {
        Some(s) => {
            say(format!("patches: reusing {}", store_path.display()));
            s
        }
        None => {
            sample_patches(
                &ds.unlabeled,
                &spec,
                cfg.patches.norm_spec(),
                &store_path,
                cfg.train.chunk,
                &[("sae.config", hash.clone())],
            )?;
            Store::open(&store_path, Kind::Patches)?
        }
    };
    let model_path = paths.model.clone();
    let model = match Model::load(&model_path) {
        Ok(m) if m.header.config == cfg.training_hash() => {
            say(format!("train: reusing {}", model_path.display()));
            m
        }
        _ => {
            let _ = std::fs::remove_dir_all(dir.join("features"));
            std::fs::create_dir_all(dir.join("features"))
                .map_err(Error::io(dir.join("features")))?;
            let policy = CheckpointPolicy {
                every: cfg.train.checkpoint_every.max(1),
                seconds: cfg.train.checkpoint_seconds,
            };
            let trained = train_resumable(
                &store,
                arch,
                cfg.model.penalty(),
                &cfg.train,
                cfg.seed,
                &paths.loss,
                Some((&ckpt, policy)),
            )?;
            let mut model = trained.model;
            model.header.config = cfg.training_hash();
            model.save(&model_path)?;
            model
        }
    };
    if paths.loss != dir.join("loss.csv") {
        std::fs::copy(&paths.loss, dir.join("loss.csv")).map_err(Error::io(&paths.loss))?;
    }
    draw(&model, &store, &dir)?;

    let mut results = Vec::new();
    let feat = |n: &str, split: &str| paths.features.join(format!("{n}-{split}.arrow"));
    if cfg.classify.raw_baseline {
        for (set, split) in [(&ds.train, "train"), (&ds.test, "test")] {
            if !feat("raw", split).exists() {
                write_raw(set, &feat("raw", split))?;
            }
        }
        let which = cfg
            .classify
            .raw_classifiers
            .as_ref()
            .unwrap_or(&cfg.classify.classifiers);
        results.extend(classify_set(
            cfg,
            which,
            &dir,
            "raw",
            &feat("raw", "train"),
            &feat("raw", "test"),
            &ds.classes,
        )?);
    }
    let enc = Encoder::new(&model.net, model.header.norm.clone(), model.header.patch);
    for &step in &cfg.features.steps {
        for &mode in &cfg.features.modes {
            let name = format!("step{step}-{}", mode.name());
            for (set, split) in [(&ds.train, "train"), (&ds.test, "test")] {
                if !feat(&name, split).exists() {
                    enc.write_features(
                        set,
                        step,
                        mode,
                        &feat(&name, split),
                        &format!("encode {name} {split}"),
                    )?;
                }
            }
            results.extend(classify_set(
                cfg,
                &cfg.classify.classifiers,
                &dir,
                &name,
                &feat(&name, "train"),
                &feat(&name, "test"),
                &ds.classes,
            )?);
            write_results(&dir.join("results.csv"), &results)?;
        }
    }
    write_results(&dir.join("results.csv"), &results)?;
    Ok((dir, results))
}

/// Writes `filters.png` (first-layer weights) and `patches.png` (first 100 patches).
pub fn draw(model: &Model, store: &Store, dir: &Path) -> Result<()> {
    let p = model.header.patch;
    let ch = model.header.channels;
    crate::show::grid_png(model.net.weight(0), p, ch, &dir.join("filters.png"))?;
    let b = store.batch(0)?;
    let v = b.values();
    let n = v.nrows().min(100);
    crate::show::grid_png(v.slice(s![..n, ..]), p, ch, &dir.join("patches.png"))
}
