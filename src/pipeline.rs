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
//!             results.csv, .parquet  accuracy per feature set and classifier
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
use crate::classify::{evaluate, write_confusion, Classifier, Standardiser};
use crate::config::{Config, TrainConfig};
use crate::dist::{broadcast_value, Comm, Single};
use crate::error::{Error, Result};
use crate::features::{write_raw, Encoder};
use crate::ingest::resize::resized;
use crate::ingest::synth::{write_dataset, SynthSpec};
use crate::ingest::{Dataset, ImageSet, OpenOptions};
use crate::minibatch::{run_epoch, steps_per_epoch, MinibatchParams, MinibatchState};
use crate::model::{Header, Model};
use crate::optim::{LbfgsParams, LbfgsState, Stop};
use crate::patches::{sample_chunk, PatchSpec};
use crate::preprocess::{Fitter, NormSpec, Normaliser};
use crate::progress::{say, Progress};
use crate::results::Record;
use crate::sae::objective::{Objective, Penalty};
use crate::sae::{Architecture, Network};
use crate::store::{read_features, Kind, Shard, Store, StoreWriter};

/// Where a run's artefacts live: in the run folder, or in the shared cache under
/// names that carry the hash of what determines them.
pub struct Paths {
    /// Synthetic data folder.
    pub data: PathBuf,
    /// Resized images (with `data.resize`).
    pub images: PathBuf,
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
                images: dir.join("images"),
                store: dir.join("patches.arrow"),
                model: dir.join("model.sae"),
                loss: dir.join("loss.csv"),
                checkpoints: dir.join("checkpoint.sled"),
                features: dir.join("features").join(cfg.labelled_hash()),
            },
            Some(c) => {
                let (p, t) = (cfg.patches_hash(), cfg.training_hash());
                Paths {
                    data: c.join(format!("data-{p}")),
                    images: c.join(format!("images-{}", cfg.data_hash())),
                    store: c.join(format!("patches-{p}.arrow")),
                    model: c.join(format!("model-{t}.sae")),
                    loss: c.join(format!("model-{t}.loss.csv")),
                    // Runs that differ only in their limits share one trajectory.
                    checkpoints: c.join(format!("checkpoints-{}.sled", cfg.lineage_hash())),
                    features: c.join(format!("features-{t}-{}", cfg.labelled_hash())),
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
/// into `paths.data` first and read from there; resized images go to `paths.images`.
pub fn open_data(cfg: &Config, paths: &Paths) -> Result<Dataset> {
    open_data_as(cfg, paths, true)
}

/// [`open_data`]; without `write`, synthetic data and resized copies must already be
/// there (another rank wrote them).
fn open_data_as(cfg: &Config, paths: &Paths, write: bool) -> Result<Dataset> {
    let path = match &cfg.synth {
        Some(_) if !write => paths.data.clone(),
        Some(s) => {
            let out = paths.data.clone();
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
        label_base: cfg.data.label_base,
    };
    let mut ds = Dataset::open(format, &path, &opts)?;
    let side = cfg.data.resize;
    if side > 0 && ds.train.shape() != crate::ingest::Shape::rgb(side) {
        let dir = &paths.images;
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
        let t = Instant::now();
        let same = ds.unlabeled.name() == ds.train.name() && ds.unlabeled.len() == ds.train.len();
        let hash = cfg.data_hash();
        let at = |split: &str| dir.join(format!("{hash}-{side}-{split}.u8"));
        ds.train = resized(&ds.train, side, &at("train"))?;
        ds.test = resized(&ds.test, side, &at("test"))?;
        ds.unlabeled = if same {
            ds.train.clone()
        } else {
            resized(&ds.unlabeled, side, &at("unlabeled"))?
        };
        say(format!(
            "data: resized to {side}x{side} in {:.1} s -> {}",
            t.elapsed().as_secs_f64(),
            dir.display()
        ));
    }
    // Whether patches come from the training images (CIFAR-10, or no unlabeled file),
    // decided before any selection changes the training set.
    let same = ds.unlabeled.name() == ds.train.name() && ds.unlabeled.len() == ds.train.len();
    if cfg.data.fold > 0 {
        ds.train = ds.train.select(&fold_indices(&path, cfg.data.fold)?)?;
    }
    if cfg.data.holdout > 0.0 {
        let (keep, held) = holdout_split(ds.train.len(), cfg.data.holdout, cfg.seed);
        if keep.is_empty() || held.is_empty() {
            return Err(Error::config(
                "data.holdout",
                format!(
                    "holding out {} of {} training images leaves one side empty",
                    cfg.data.holdout,
                    ds.train.len()
                ),
            ));
        }
        ds.test = ds.train.select(&held)?;
        ds.train = ds.train.select(&keep)?;
        // Held-out images feed no stage but the evaluation, patches included.
        if same {
            ds.unlabeled = ds.train.clone();
        }
        ds.notes.push(format!(
            "evaluating on {} held-out training images (data.holdout = {}); the test set is \
             not used",
            held.len(),
            cfg.data.holdout
        ));
    }
    let limit = |set: ImageSet, n: usize| if n > 0 { set.truncated(n) } else { set };
    ds.train = limit(ds.train, cfg.data.train_limit);
    ds.test = limit(ds.test, cfg.data.test_limit);
    ds.unlabeled = limit(ds.unlabeled, cfg.data.unlabeled_limit);
    // Reading labels interleaved with the pixels (CIFAR-10) touched every record; the
    // stages fault in what they read.
    for set in [&ds.unlabeled, &ds.train, &ds.test] {
        set.release();
    }
    Ok(ds)
}

/// Splits `n` training images into (kept, held out) by a seeded shuffle; each list in
/// file order.
pub fn holdout_split(n: usize, fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    use rand::RngExt;
    let mut idx: Vec<usize> = (0..n).collect();
    let mut r = crate::rng::stream(seed, crate::rng::Stream::Holdout, 0);
    for i in (1..n).rev() {
        idx.swap(i, r.random_range(0..=i));
    }
    let k = ((n as f64) * fraction).round() as usize;
    let (mut held, mut keep) = (idx[..k].to_vec(), idx[k..].to_vec());
    held.sort_unstable();
    keep.sort_unstable();
    (keep, held)
}

/// The training-image indices of fold `fold` (1-based) in `<data>/fold_indices.txt`:
/// one line per fold of 0-based, space-separated indices, as STL-10 ships them.
pub fn fold_indices(data: &Path, fold: usize) -> Result<Vec<usize>> {
    let path = data.join("fold_indices.txt");
    let text = std::fs::read_to_string(&path).map_err(Error::io(&path))?;
    let line = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .nth(fold - 1)
        .ok_or_else(|| Error::bad(&path, format!("has no fold {fold}")))?;
    line.split_whitespace()
        .map(|v| {
            v.parse()
                .map_err(|_| Error::bad(&path, format!("fold {fold}: {v:?} is not an index")))
        })
        .collect()
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
    train_resumable(store, arch, penalty, tc, seed, loss_csv, None, &Single)
}

/// [`train`] with checkpoints: resumes from the newest one in `ckpt`, saves new ones as
/// the policy says, and one at the end. Under `comm` every rank trains on its shard of
/// the store; rank 0 holds the checkpoints (pass `None` elsewhere) and sends the
/// resumed state to the others.
#[allow(clippy::too_many_arguments)]
pub fn train_resumable(
    store: &Store,
    arch: Architecture,
    penalty: Penalty,
    tc: &TrainConfig,
    seed: u64,
    loss_csv: &Path,
    ckpt: Option<(&Checkpoints, CheckpointPolicy)>,
    comm: &dyn Comm,
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
        Some((c, _)) => usable_checkpoint(c, tc)?,
        None => None,
    };
    let resumed = if comm.size() > 1 {
        broadcast_value(comm, comm.is_root().then_some(resumed))?
    } else {
        resumed
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
        comm,
    };
    session.offset = session.trace.last().map_or(0.0, |p| p.seconds);
    if let Some(c) = &resumed {
        let (unit, at) = match &c.opt {
            OptState::Lbfgs(s) => ("iteration", s.iter),
            OptState::Minibatch(s) => ("step", s.steps as usize),
        };
        say(format!(
            "train: resuming from checkpoint at {unit} {at} (loss {:.6})",
            session.trace.last().map_or(f64::NAN, |p| p.loss)
        ));
    }
    let lbfgs = tc.lbfgs();
    let ended = resumed.as_ref().and_then(|c| c.ended.clone());
    let (theta, loss, stop, iterations, evals) = match (tc.minibatch(), resumed.map(|c| c.opt)) {
        (None, None) => run_lbfgs(store, &arch, penalty, &lbfgs, seed, None, &mut session)?,
        (None, Some(OptState::Lbfgs(s))) => {
            let resumed = Some((s, ended));
            run_lbfgs(store, &arch, penalty, &lbfgs, seed, resumed, &mut session)?
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
    if comm.is_root() {
        write_trace(loss_csv, &session.trace)?;
    }
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
                iterations,
                stop: stop.clone(),
            },
            net,
        },
        stop,
        iterations,
        evals,
        seconds,
    })
}

/// The newest checkpoint, if a run with these limits can continue from it. The
/// checkpoints of a trajectory are shared by every limit (`Config::lineage_hash`): one
/// at or before the limit is where a longer run picks up; one past it belongs to a
/// longer run, and this shorter one starts again from the beginning.
fn usable_checkpoint(c: &Checkpoints, tc: &TrainConfig) -> Result<Option<Checkpoint>> {
    let Some(latest) = c.latest()? else {
        return Ok(None);
    };
    let (limit, key, unit) = match (&latest.opt, tc.minibatch()) {
        (OptState::Lbfgs(_), None) => (tc.max_iter, "max_iter", "iteration"),
        (OptState::Minibatch(_), Some(mb)) => (mb.epochs, "epochs", "epoch"),
        // Another optimiser's state: refused by the caller with its reason.
        _ => return Ok(Some(latest)),
    };
    if within_limit(&latest.opt, limit) {
        return Ok(Some(latest));
    }
    say(format!(
        "train: the checkpoint at {unit} {} is past train.{key} = {limit} (a longer run \
         made it); training this one from the start",
        latest.position()
    ));
    c.clear()?;
    Ok(None)
}

/// Whether a run limited to `limit` iterations (L-BFGS) or epochs (mini-batch) passes
/// through `state`: a state part-way into the epoch after the last one does not.
fn within_limit(state: &OptState, limit: usize) -> bool {
    match state {
        OptState::Lbfgs(s) => s.iter <= limit,
        OptState::Minibatch(s) => s.epoch < limit || (s.epoch == limit && s.pos == 0),
    }
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
    comm: &'a dyn Comm,
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
                ended: None,
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
    resumed: Option<(LbfgsState, Option<String>)>,
    session: &mut Session,
) -> Result<Outcome> {
    if let Some((st, Some(why))) = resumed {
        // The interrupted run had already stopped here; stepping on would give
        // another result than the uninterrupted run.
        say(format!("train: the checkpoint is the final state ({why})"));
        return Ok((st.x, st.f, why, st.iter, st.evals));
    }
    let resumed = resumed.map(|r| r.0);
    let shard = Shard::of(store, session.comm.rank(), session.comm.size());
    let obj = Objective::new(arch, penalty, &shard).with_comm(session.comm);
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
            // A step that ended the run (a tolerance met) is the trace's last point;
            // it goes into the final checkpoint below, not a checkpoint of its own,
            // which a kill could leave without the stop reason.
            if session.trace.last().is_some_and(|p| p.iteration < it.iter) {
                session.trace.push(TracePoint {
                    iteration: it.iter,
                    evals: it.evals,
                    loss: it.f,
                    gmax: it.gmax,
                    seconds: session.seconds(),
                });
            }
            break s;
        }
    };
    // A stop of the optimiser's own (not the iteration limit) is stored with the
    // state, so a kill before the model is written cannot make the rerun step on.
    let ended = (!matches!(stop, Stop::MaxIter)).then(|| format!("{stop:?}"));
    if let Some((c, _)) = session.ckpt {
        c.save(&Checkpoint {
            opt: OptState::Lbfgs(st.clone()),
            trace: session.trace.clone(),
            ended,
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
            session.comm,
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
            ended: None,
        })?;
    }
    // The reported loss is the full-batch objective at the final parameters.
    let shard = Shard::of(store, session.comm.rank(), session.comm.size());
    let (loss, _) = Objective::new(arch, penalty, &shard)
        .with_comm(session.comm)
        .eval::<f32>(&state.theta)?;
    let steps = state.steps as usize;
    Ok((state.theta, loss.total, "epochs done".into(), steps, steps))
}

/// Classifies one feature set with every configured classifier.
/// `row` holds what the rows share (run, feature set, model); `started` is when the
/// run began.
#[allow(clippy::too_many_arguments)]
fn classify_set(
    cfg: &Config,
    which: &[Classifier],
    dir: &Path,
    row: &Record,
    train: &Path,
    test: &Path,
    classes: &[String],
    started: Instant,
) -> Result<Vec<Record>> {
    let name = row.features.as_str();
    let (mut xtr, mut ytr) = read_features(train)?;
    let (mut xte, yte) = read_features(test)?;
    let s = Standardiser::fit(&xtr);
    s.apply(&mut xtr);
    s.apply(&mut xte);
    let mut rows = Vec::new();
    for &c in which {
        let t = Instant::now();
        let e = evaluate(
            c,
            &cfg.classify.params(cfg.seed),
            &mut xtr,
            &mut ytr,
            &xte,
            &yte,
            classes.len(),
        )?;
        let secs = t.elapsed().as_secs_f64();
        say(format!(
            "classify: {name:>14} {:>7}  accuracy {:.4}  ({} features, {:.1} s){}",
            c.name(),
            e.accuracy,
            xtr.ncols(),
            secs,
            if e.detail.is_empty() {
                String::new()
            } else {
                format!(" [{}]", e.detail)
            }
        ));
        write_confusion(
            &dir.join("confusion")
                .join(format!("{name}-{}.csv", c.name())),
            &e,
            classes,
        )?;
        rows.push(Record {
            classifier: c.name().into(),
            accuracy: e.accuracy,
            dim: xtr.ncols() as u64,
            classify_seconds: secs,
            run_seconds: started.elapsed().as_secs_f64(),
            peak_rss_kb: crate::limits::peak_rss_kb(),
            ..row.clone()
        });
    }
    Ok(rows)
}

/// Runs every stage of `cfg`; returns the run folder and the results.
///
/// A run folder remembers what is done: a patch store or model made by the same
/// config is reused, training resumes from its newest checkpoint, and existing
/// feature files of the same model are kept. `restart` discards all of it first.
pub fn run(cfg: &Config, restart: bool) -> Result<(PathBuf, Vec<Record>)> {
    run_with(cfg, restart, &Single)
}

/// [`run`] on every rank of `comm`. Rank 0 writes the shared files (data copies, patch
/// store, checkpoints, model, features, tables) and classifies; every rank trains on
/// its shard of the patch store and encodes its share of the images. Ranks other than
/// 0 return no results.
pub fn run_with(cfg: &Config, restart: bool, comm: &dyn Comm) -> Result<(PathBuf, Vec<Record>)> {
    let started = Instant::now();
    // Peak memory is reported per run, not over every run a sweep made before it.
    crate::limits::reset_peak();
    let root = comm.is_root();
    let dir = cfg.run_dir();
    let paths = Paths::of(cfg);
    let ckpt = if root {
        for d in [&dir, paths.store.parent().unwrap_or(&dir)] {
            std::fs::create_dir_all(d).map_err(Error::io(d))?;
        }
        // Opening the checkpoint database takes the lock first, so a second process
        // on the same run stops here before touching anything.
        let ckpt = Checkpoints::open(&paths.checkpoints, &cfg.lineage_hash(), restart)?;
        if restart {
            for f in [
                &paths.store,
                &paths.model,
                &paths.loss,
                &dir.join("results.csv"),
                &dir.join("results.parquet"),
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
        Some(ckpt)
    } else {
        None
    };
    // Rank 0 writes any data copies first; the others open what it wrote.
    let ds = if root {
        let ds = open_data_as(cfg, &paths, true)?;
        comm.barrier();
        ds
    } else {
        comm.barrier();
        open_data_as(cfg, &paths, false)?
    };
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
    let size = crate::limits::DataSize {
        shape: ds.train.shape(),
        unlabeled: ds.unlabeled.len(),
        train: ds.train.len(),
        test: ds.test.len(),
        classes: ds.classes.len(),
    };
    let plan = crate::limits::plan(cfg, size, cfg.max_memory)?;
    plan.apply();
    let budget = cfg.max_memory;
    let stage = |name| crate::limits::Stage::begin(name, &plan, budget);
    if cfg.max_memory > 0 {
        let est: Vec<String> = plan
            .stages
            .iter()
            .map(|(k, b)| format!("{k} {:.0} MiB", *b as f64 / 1048576.0))
            .collect();
        say(format!(
            "memory: budget {:.0} MiB; estimated peaks: {}",
            cfg.max_memory as f64 / 1048576.0,
            est.join(", ")
        ));
    }
    let arch = Architecture::new(
        spec.dim(ds.train.shape().channels),
        &cfg.model.hidden,
        cfg.model.sparse_layer,
        cfg.model.decoder,
    )?;
    let store_path = paths.store.clone();
    let hash = cfg.patches_hash();
    if root {
        let reusable = Store::open(&store_path, Kind::Patches)
            .ok()
            .is_some_and(|s| s.meta("sae.config") == Some(hash.as_str()));
        if reusable {
            say(format!("patches: reusing {}", store_path.display()));
        } else {
            let m = stage("sample");
            sample_patches(
                &ds.unlabeled,
                &spec,
                cfg.patches.norm_spec(),
                &store_path,
                cfg.train.chunk,
                &[("sae.config", hash.clone())],
            )?;
            m.end();
        }
    }
    comm.barrier();
    let store = Store::open(&store_path, Kind::Patches)?;
    let model_path = paths.model.clone();
    let model = match Model::load(&model_path) {
        Ok(m) if m.header.config == cfg.training_hash() => {
            say(format!("train: reusing {}", model_path.display()));
            m
        }
        _ => {
            if root {
                let _ = std::fs::remove_dir_all(&paths.features);
                std::fs::create_dir_all(&paths.features).map_err(Error::io(&paths.features))?;
            }
            let policy = CheckpointPolicy {
                every: cfg.train.checkpoint_every.max(1),
                seconds: cfg.train.checkpoint_seconds,
            };
            let m = stage("train");
            let trained = train_resumable(
                &store,
                arch,
                cfg.model.penalty(),
                &cfg.train,
                cfg.seed,
                &paths.loss,
                ckpt.as_ref().map(|c| (c, policy)),
                comm,
            )?;
            m.end();
            let mut model = trained.model;
            model.header.config = cfg.training_hash();
            crate::checkpoint::crash_point("before-model");
            if root {
                model.save(&model_path)?;
            }
            model
        }
    };
    if root {
        if paths.loss != dir.join("loss.csv") {
            std::fs::copy(&paths.loss, dir.join("loss.csv")).map_err(Error::io(&paths.loss))?;
        }
        draw(&model, &store, &dir)?;
    }
    // Nothing reads the patches again: their pages need not stay resident.
    store.release_all();

    let mut results = Vec::new();
    let feat = |n: &str, split: &str| paths.features.join(format!("{n}-{split}.arrow"));
    let hidden: Vec<String> = cfg.model.hidden.iter().map(|h| h.to_string()).collect();
    let shared = Record {
        run: cfg.name.clone(),
        grid: Vec::new(),
        features: "raw".into(),
        classifier: String::new(),
        accuracy: f64::NAN,
        dim: 0,
        step: None,
        mode: "raw".into(),
        code: "raw".into(),
        patches: cfg.patches.count as u64,
        hidden: hidden.join("-"),
        final_loss: model.header.loss,
        iterations: model.header.iterations as u64,
        stop: model.header.stop.clone(),
        classify_seconds: 0.0,
        run_seconds: 0.0,
        peak_rss_kb: 0,
        loss_csv: "loss.csv".into(),
    };
    if cfg.classify.raw_baseline && root {
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
        let m = stage("classify");
        results.extend(classify_set(
            cfg,
            which,
            &dir,
            &shared,
            &feat("raw", "train"),
            &feat("raw", "test"),
            &ds.classes,
            started,
        )?);
        m.end();
    }
    let code = cfg.features.code();
    let enc =
        Encoder::new(&model.net, model.header.norm.clone(), model.header.patch).with_code(code);
    for &step in &cfg.features.steps {
        for &mode in &cfg.features.modes {
            let name = format!("step{step}-{}{}", mode.name(), code.tag());
            for (set, split) in [(&ds.train, "train"), (&ds.test, "test")] {
                let out = feat(&name, split);
                let need = broadcast_value(comm, root.then(|| !out.exists()))?;
                if need {
                    let m = stage("encode");
                    encode_shared(
                        &enc,
                        set,
                        step,
                        mode,
                        &out,
                        &format!("encode {name} {split}"),
                        comm,
                    )?;
                    set.release();
                    m.end();
                }
            }
            if !root {
                continue;
            }
            let row = Record {
                features: name.clone(),
                step: Some(step as u64),
                mode: mode.name().into(),
                code: cfg.features.encoder.name().into(),
                ..shared.clone()
            };
            let m = stage("classify");
            results.extend(classify_set(
                cfg,
                &cfg.classify.classifiers,
                &dir,
                &row,
                &feat(&name, "train"),
                &feat(&name, "test"),
                &ds.classes,
                started,
            )?);
            m.end();
            crate::results::write(&dir, &results)?;
        }
    }
    if root {
        crate::results::write(&dir, &results)?;
    }
    comm.barrier();
    Ok((dir, results))
}

/// Encodes `set` into `out` with every rank of `comm`: each encodes its share of the
/// images into a part file next to `out`, and rank 0 joins the parts in image order.
pub fn encode_shared(
    enc: &Encoder,
    set: &ImageSet,
    step: usize,
    mode: crate::features::Mode,
    out: &Path,
    label: &str,
    comm: &dyn Comm,
) -> Result<usize> {
    if comm.size() == 1 {
        return enc.write_features(set, step, mode, out, label);
    }
    let part = |r: usize| out.with_extension(format!("part{r}.arrow"));
    let range = crate::dist::share(set.len(), comm.rank(), comm.size());
    enc.write_part(set, range, step, mode, &part(comm.rank()), label)?;
    comm.barrier();
    let mut rows = 0;
    if comm.is_root() {
        let parts: Vec<PathBuf> = (0..comm.size()).map(part).collect();
        rows = crate::store::concat(&parts, Kind::Features, out)?;
        for p in &parts {
            let _ = std::fs::remove_file(p);
        }
    }
    comm.barrier();
    Ok(rows)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_continues_only_from_states_on_its_own_path() {
        let mut mb = MinibatchState::new(vec![0.0; 3]);
        mb.epoch = 1;
        assert!(within_limit(&OptState::Minibatch(mb.clone()), 1));
        assert!(within_limit(&OptState::Minibatch(mb.clone()), 2));
        // Part-way into epoch 2: a one-epoch run never passed through here.
        mb.pos = 5;
        assert!(!within_limit(&OptState::Minibatch(mb.clone()), 1));
        assert!(within_limit(&OptState::Minibatch(mb), 2));
        let lbfgs = |iter| {
            OptState::Lbfgs(LbfgsState {
                x: vec![0.0],
                f: 1.0,
                g: vec![0.0],
                history: Default::default(),
                iter,
                evals: iter,
            })
        };
        assert!(within_limit(&lbfgs(10), 10));
        assert!(!within_limit(&lbfgs(11), 10));
    }
}
