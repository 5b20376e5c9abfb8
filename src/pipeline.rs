//! The stages of a run, each reading one artefact and writing the next, and `run`,
//! which chains them from a [`Config`] into one run folder:
//!
//! ```text
//! runs/<name>/config.toml            the config as run
//!             patches.arrow          normalised training patches (+ image, x, y)
//!             model.sae              network + normalisation
//!             loss.csv               L-BFGS trace
//!             filters.png patches.png
//!             features/<set>-{train,test}.arrow
//!             results.csv            accuracy per feature set and classifier
//!             confusion/<set>-<classifier>.csv
//! ```

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ndarray::{s, Axis};

use crate::classify::{evaluate, write_confusion, Classifier};
use crate::config::{Config, TrainConfig};
use crate::error::{Error, Result};
use crate::features::{write_raw, Encoder};
use crate::ingest::synth::{write_dataset, SynthSpec};
use crate::ingest::{Dataset, ImageSet, OpenOptions};
use crate::minibatch::{run_epoch, MinibatchParams, MinibatchState};
use crate::model::{Header, Model};
use crate::optim::{minimize, LbfgsParams};
use crate::patches::{sample_chunk, PatchSpec};
use crate::preprocess::{Fitter, NormSpec, Normaliser};
use crate::progress::{say, Progress};
use crate::sae::objective::{Objective, Penalty};
use crate::sae::{Architecture, Network};
use crate::store::{read_features, Kind, Store, StoreWriter};

/// Opens the run's dataset, generating it first when the config asks for synthetic data.
pub fn open_data(cfg: &Config, dir: &Path) -> Result<Dataset> {
    let path = match &cfg.synth {
        Some(s) => {
            let out = dir.join("data");
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
    let mut trace =
        std::io::BufWriter::new(std::fs::File::create(loss_csv).map_err(Error::io(loss_csv))?);
    writeln!(trace, "iteration,evaluations,loss,max_abs_gradient,seconds")
        .map_err(Error::io(loss_csv))?;
    let t0 = Instant::now();
    let (theta, loss, stop, iterations, evals) = match tc.minibatch() {
        None => run_lbfgs(store, &arch, penalty, &tc.lbfgs(), seed, &mut trace, t0)?,
        Some(mb) => run_minibatch(store, &arch, penalty, &mb, seed, &mut trace, t0)?,
    };
    trace.flush().map_err(Error::io(loss_csv))?;
    let seconds = t0.elapsed().as_secs_f64();
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
            },
            net,
        },
        stop,
        iterations,
        evals,
        seconds,
    })
}

/// Parameters, final loss, stop reason, iterations, evaluations.
type Outcome = (Vec<f64>, f64, String, usize, usize);

fn run_lbfgs(
    store: &Store,
    arch: &Architecture,
    penalty: Penalty,
    lbfgs: &LbfgsParams,
    seed: u64,
    trace: &mut dyn Write,
    t0: Instant,
) -> Result<Outcome> {
    let obj = Objective::new(arch, penalty, store);
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut fg = |theta: &[f64]| -> Result<(f64, Vec<f64>)> {
        let (loss, g) = obj.eval::<f32>(theta)?;
        Ok((loss.total, g))
    };
    let mut io_err = None;
    let mut progress = |it: &crate::optim::Iteration| {
        let secs = t0.elapsed().as_secs_f64();
        if let Err(e) = writeln!(
            trace,
            "{},{},{:.9e},{:.6e},{:.3}",
            it.iter, it.evals, it.f, it.gmax, secs
        ) {
            io_err.get_or_insert(e);
        }
        if it.iter.is_multiple_of(if tty { 1 } else { 10 }) || it.iter == lbfgs.max_iter {
            say(format!(
                "train: iter {:4}/{}  loss {:.6}  max|g| {:.2e}  evals {}  {:.2} s/iter",
                it.iter,
                lbfgs.max_iter,
                it.f,
                it.gmax,
                it.evals,
                secs / it.iter.max(1) as f64
            ));
        }
    };
    let (state, stop) = minimize(arch.init(seed), lbfgs, &mut fg, &mut progress)?;
    if let Some(e) = io_err {
        return Err(Error::Io {
            path: "loss.csv".into(),
            source: e,
        });
    }
    Ok((
        state.x,
        state.f,
        format!("{stop:?}"),
        state.iter,
        state.evals,
    ))
}

fn run_minibatch(
    store: &Store,
    arch: &Architecture,
    penalty: Penalty,
    mb: &MinibatchParams,
    seed: u64,
    trace: &mut dyn Write,
    t0: Instant,
) -> Result<Outcome> {
    let mut state = MinibatchState::new(arch.init(seed));
    let steps_per_epoch = store.rows().div_ceil(mb.batch);
    let mut io_err = None;
    while state.epoch < mb.epochs {
        let mut prog = Progress::new(
            format!("train: epoch {}/{}", state.epoch + 1, mb.epochs),
            steps_per_epoch,
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
                let secs = t0.elapsed().as_secs_f64();
                if let Err(e) = writeln!(trace, "{},{},{loss:.9e},,{secs:.3}", s.steps, s.steps) {
                    io_err.get_or_insert(e);
                }
                prog.inc(1);
            },
        )?;
        prog.finish();
        say(format!(
            "train: epoch {} mean mini-batch loss {:.6}",
            state.epoch,
            state.epoch_loss.last().copied().unwrap_or(f64::NAN)
        ));
    }
    if let Some(e) = io_err {
        return Err(Error::Io {
            path: "loss.csv".into(),
            source: e,
        });
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
pub fn run(cfg: &Config) -> Result<(PathBuf, Vec<ResultRow>)> {
    let dir = cfg.run_dir();
    for d in [dir.clone(), dir.join("features"), dir.join("confusion")] {
        std::fs::create_dir_all(&d).map_err(Error::io(&d))?;
    }
    let cfg_text = toml::to_string(cfg).expect("config serialises");
    crate::model::write_atomic(&dir.join("config.toml"), cfg_text.as_bytes())?;
    let ds = open_data(cfg, &dir)?;
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
    let store_path = dir.join("patches.arrow");
    sample_patches(
        &ds.unlabeled,
        &spec,
        cfg.patches.norm_spec(),
        &store_path,
        cfg.train.chunk,
    )?;
    let store = Store::open(&store_path, Kind::Patches)?;
    let trained = train(
        &store,
        arch,
        cfg.model.penalty(),
        &cfg.train,
        cfg.seed,
        &dir.join("loss.csv"),
    )?;
    let model = trained.model;
    model.save(&dir.join("model.sae"))?;
    draw(&model, &store, &dir)?;

    let mut results = Vec::new();
    let feat = |n: &str, split: &str| dir.join("features").join(format!("{n}-{split}.arrow"));
    if cfg.classify.raw_baseline {
        write_raw(&ds.train, &feat("raw", "train"))?;
        write_raw(&ds.test, &feat("raw", "test"))?;
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
                enc.write_features(
                    set,
                    step,
                    mode,
                    &feat(&name, split),
                    &format!("encode {name} {split}"),
                )?;
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
