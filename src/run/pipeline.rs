//! The stages of a run, each reading one artefact and writing the next, and
//! [`run_with`], which chains them from a [`Config`] into one run folder: open the
//! data, then the stages of [`Run`] (patch store, model, feature sets, evaluation),
//! each reusing a finished artefact of the same key or making it. Where each file
//! lives and what its key is: [`crate::run::layout`].

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::data::ingest::resize::resized;
use crate::data::ingest::synth::{write_dataset, SynthSpec};
use crate::data::ingest::{Dataset, ImageSet, OpenOptions};
use crate::data::patches::PatchSpec;
use crate::data::store::{Kind, PatchMeta, Store};
use crate::dist::{broadcast_value, Comm, Single};
use crate::encode::{write_raw, Encoder};
use crate::error::{Error, Result};
use crate::evaluate::classify::{evaluate, Classifier};
use crate::evaluate::l2path::PathCheckpoints;
use crate::evaluate::linear::Features;
use crate::evaluate::metrics::write_confusion;
use crate::evaluate::results::Record;
use crate::learn::checkpoint::Checkpoints;
use crate::learn::dictionary::{omp1, random_patches};
use crate::learn::model::Model;
use crate::learn::sae::Architecture;
use crate::learn::training::{train_resumable, write_trace, CheckpointPolicy, TrainJob};
use crate::progress::say;
use crate::run::config::{Config, Learner};
use crate::run::layout::{RunLayout, CONFIG, DONE, LOSS, RESULTS_CSV, RESULTS_PARQUET};

/// Opens the run's dataset. When the config asks for synthetic data, it is written
/// into `paths.data` first and read from there; resized images go to `paths.images`.
/// Without `write`, synthetic data and resized copies must already be there (another
/// rank wrote them).
fn open_data(cfg: &Config, paths: &RunLayout, write: bool) -> Result<Dataset> {
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
            // Runs of a sweep (and its worker processes) share the data: the first
            // writes it under the lock, the others find it complete. Files another
            // process has mapped are never rewritten.
            std::fs::create_dir_all(&out).map_err(Error::io(&out))?;
            let _lock = crate::fsio::lock(&out.join(".lock"))?;
            let marker = out.join(".complete");
            let want = format!("{spec:?}");
            if std::fs::read_to_string(&marker).ok().as_deref() != Some(want.as_str()) {
                let t = Instant::now();
                write_dataset(&spec, &out)?;
                crate::fsio::write_atomic(&marker, want.as_bytes())?;
                say(format!(
                    "synth: {} train, {} test, {} unlabeled images in {:.1} s -> {}",
                    s.train,
                    s.test,
                    s.unlabeled,
                    t.elapsed().as_secs_f64(),
                    out.display()
                ));
            }
            out
        }
        None => cfg.data.path.clone(),
    };
    let format = match &cfg.synth {
        Some(s) => match s.layout {
            crate::data::ingest::synth::Layout::Cifar10 => crate::data::ingest::Format::Cifar10,
            crate::data::ingest::synth::Layout::Stl10 => crate::data::ingest::Format::Stl10,
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
    // Whether patches come from the training images (CIFAR-10, or no unlabeled file),
    // decided before resizing or any selection changes the training set.
    let same = ds.unlabeled.name() == ds.train.name() && ds.unlabeled.len() == ds.train.len();
    let side = cfg.data.resize;
    if side > 0 && ds.train.shape() != crate::data::ingest::Shape::rgb(side) {
        let dir = &paths.images;
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
        let t = Instant::now();
        let hash = &paths.hashes.data;
        let at = |split: &str| dir.join(format!("{hash}-{side}-{split}.u8"));
        // One process resizes; others sharing the cache wait and reuse its files.
        let _lock = crate::fsio::lock(&dir.join(format!("{hash}-{side}.lock")))?;
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

/// A finished artefact reused, or made: the one place that decides, and says which.
fn reuse_or_make<T>(
    what: &str,
    path: &Path,
    reuse: impl FnOnce() -> Option<T>,
    make: impl FnOnce() -> Result<T>,
) -> Result<T> {
    match reuse() {
        Some(t) => {
            say(format!("{what}: reusing {}", path.display()));
            Ok(t)
        }
        None => make(),
    }
}

/// One run in progress: its config, files, memory plan and ranks. Each stage is a
/// method that reuses its artefact when a finished one of the same key is there
/// (the store's config hash, the model's training hash, the feature file's name
/// under the model's and images' hashes) and makes it otherwise.
pub struct Run<'a> {
    cfg: &'a Config,
    layout: RunLayout,
    plan: crate::run::limits::Plan,
    comm: &'a dyn Comm,
    started: Instant,
    /// When the run started (UTC), for its table.
    started_at: String,
}

impl<'a> Run<'a> {
    fn stage(&self, name: &'static str) -> crate::run::limits::Stage {
        crate::run::limits::Stage::begin(name, &self.plan, self.cfg.max_memory)
    }

    /// Stage 1: the patch store (rank 0 writes it; every rank opens it).
    pub fn patch_store(&self, ds: &Dataset, spec: &PatchSpec) -> Result<Store> {
        let path = &self.layout.store;
        let key = &self.layout.hashes.patches;
        if self.comm.is_root() {
            // Runs of a sweep's local workers may share the store: the first makes it
            // under the lock, the others wait and reuse it.
            let _lock = crate::fsio::lock(&path.with_extension("lock"))?;
            reuse_or_make(
                "patches",
                path,
                || {
                    let meta = Store::open(path, Kind::Patches).and_then(|s| PatchMeta::of(&s));
                    meta.is_ok_and(|m| &m.config == key).then_some(())
                },
                || {
                    let m = self.stage("sample");
                    let cfg = self.cfg;
                    let norm = cfg.patches.norm_spec();
                    let (unlabeled, chunk) = (&ds.unlabeled, cfg.train.chunk);
                    crate::data::patches::sample_patches(unlabeled, spec, norm, path, chunk, key)?;
                    m.end();
                    Ok(())
                },
            )?;
        }
        self.comm.barrier();
        Store::open(path, Kind::Patches)
    }

    /// Stage 2: the trained model, resumed from checkpoints when training was cut.
    pub fn model(
        &self,
        store: &Store,
        arch: Architecture,
        ckpt: Option<&Checkpoints>,
    ) -> Result<Model> {
        let (cfg, l, root) = (self.cfg, &self.layout, self.comm.is_root());
        let model = reuse_or_make(
            "train",
            &l.model,
            || {
                Model::load(&l.model)
                    .ok()
                    .filter(|m| m.header.config == l.hashes.training)
            },
            || {
                if root {
                    // Features of another model must not be taken for this one's.
                    let _ = std::fs::remove_dir_all(&l.features);
                    std::fs::create_dir_all(&l.features).map_err(Error::io(&l.features))?;
                }
                if !cfg.model.learner.is_autoencoder() {
                    let m = self.stage("train");
                    let h = arch.code_size();
                    let (mut model, trace) = match cfg.model.learner {
                        Learner::Random => (random_patches(store, h, cfg.seed)?, Vec::new()),
                        Learner::Omp1 => omp1(store, h, cfg.model.passes, cfg.seed, ckpt)?,
                        Learner::Autoencoder => unreachable!("trained below"),
                    };
                    m.end();
                    say(format!("train: {h} atoms by {}", model.header.stop));
                    model.header.config = l.hashes.training.clone();
                    crate::learn::checkpoint::crash_point("before-model");
                    if root {
                        write_trace(&l.loss, &trace)?;
                        model.save(&l.model)?;
                    }
                    return Ok(model);
                }
                let policy = CheckpointPolicy {
                    every: cfg.train.checkpoint_every.max(1),
                    seconds: cfg.train.checkpoint_seconds,
                };
                let m = self.stage("train");
                let job = TrainJob::new(arch, cfg.model.penalty(), cfg.train.optimiser(), cfg.seed)
                    .with_cache_bytes(self.plan.cache_bytes);
                let ckpt = ckpt.map(|c| (c, policy));
                let trained = train_resumable(store, &job, &l.loss, ckpt, self.comm)?;
                m.end();
                let mut model = trained.model;
                model.header.config = l.hashes.training.clone();
                crate::learn::checkpoint::crash_point("before-model");
                if root {
                    model.save(&l.model)?;
                }
                Ok(model)
            },
        )?;
        if root {
            if l.loss != l.file(LOSS) {
                std::fs::copy(&l.loss, l.file(LOSS)).map_err(Error::io(&l.loss))?;
            }
            draw(&model, store, l)?;
        }
        // Nothing reads the patches again: their pages need not stay resident.
        store.release_all();
        Ok(model)
    }

    /// Stage 3: the feature files of `set` (named `name`) for the train and test
    /// images, each rank encoding its share.
    pub fn feature_set(
        &self,
        enc: &Encoder,
        ds: &Dataset,
        name: &str,
        step: usize,
        mode: crate::encode::Mode,
    ) -> Result<()> {
        for (set, split) in [(&ds.train, "train"), (&ds.test, "test")] {
            let out = self.layout.feature(name, split);
            let need = broadcast_value(self.comm, self.comm.is_root().then(|| !out.exists()))?;
            if need {
                let m = self.stage("encode");
                let label = format!("encode {name} {split}");
                let flip = self.cfg.features.flip;
                encode_shared(enc, set, step, mode, flip, &out, &label, self.comm)?;
                set.release();
                m.end();
            }
        }
        Ok(())
    }

    /// Stage 4: every classifier of `which` on feature set `row.features`, scored on
    /// the test (or held-out) images; confusion matrices go to the run folder.
    pub fn evaluate(
        &self,
        which: &[Classifier],
        row: &Record,
        classes: &[String],
    ) -> Result<Vec<Record>> {
        let m = self.stage("classify");
        let name = row.features.as_str();
        let train = Store::open(&self.layout.feature(name, "train"), Kind::Features)?;
        let test = Store::open(&self.layout.feature(name, "test"), Kind::Features)?;
        let (ytr, yte) = (train.labels()?, test.labels()?);
        let (images, test_images) = (train.images()?, test.images()?);
        let (xtr, xte) = (Features::Stored(&train), Features::Stored(&test));
        let params = self.cfg.classify.params(self.cfg.seed);
        let mut rows = Vec::new();
        let train_file = self.layout.feature(name, "train");
        // Re-encoded features start a path afresh.
        let identity = std::fs::metadata(&train_file)
            .map_err(Error::io(&train_file))
            .map(|m| {
                let modified = m.modified().ok().and_then(|t| {
                    t.duration_since(std::time::UNIX_EPOCH)
                        .ok()
                        .map(|d| d.as_nanos())
                });
                format!("{name} {} bytes, modified {modified:?}", m.len())
            })?;
        for &c in which {
            let t = Instant::now();
            let saved = PathCheckpoints::new(
                self.layout.fits(name, c.name()),
                format!("{} {identity}", c.name()),
            );
            let e = evaluate(
                c,
                &params,
                Some(&saved),
                xtr,
                &ytr,
                Some(&images),
                xte,
                &yte,
                Some(&test_images),
                classes.len(),
            )?;
            let secs = t.elapsed().as_secs_f64();
            let detail = if e.detail.is_empty() {
                String::new()
            } else {
                format!(" [{}]", e.detail)
            };
            say(format!(
                "classify: {name:>14} {:>7}  accuracy {:.4}  ({} features, {secs:.1} s){detail}",
                c.name(),
                e.accuracy,
                xtr.dim(),
            ));
            write_confusion(&self.layout.confusion(name, c.name()), &e, classes)?;
            rows.push(Record {
                classifier: c.name().into(),
                accuracy: e.accuracy,
                dim: xtr.dim() as u64,
                classify_seconds: secs,
                validation: e.path.and_then(|p| p.validation),
                l2: e.path.map(|p| p.l2),
                classify_iterations: e.path.map(|p| p.iterations),
                run_seconds: self.started.elapsed().as_secs_f64(),
                peak_rss_kb: crate::run::limits::peak_rss_kb(),
                finished: crate::run::stamp::now(),
                ..row.clone()
            });
        }
        m.end();
        Ok(rows)
    }
}

/// Runs every stage of `cfg`; returns the run folder and the results.
///
/// A run folder remembers what is done: a patch store or model made by the same
/// config is reused, training resumes from its newest checkpoint, and existing
/// feature files of the same model are kept. `restart` discards all of it first.
pub fn run(cfg: &Config, restart: bool) -> Result<(PathBuf, Vec<Record>)> {
    run_with(cfg, restart, &Single)
}

/// Makes the run folder (and the cache) and takes the run's checkpoint lock; with
/// `restart`, discards what an earlier run left. Rank 0 only.
fn prepare(cfg: &Config, l: &RunLayout, restart: bool) -> Result<Checkpoints> {
    let dir = &l.dir;
    for d in [dir, l.store.parent().unwrap_or(dir)] {
        std::fs::create_dir_all(d).map_err(Error::io(d))?;
    }
    // Opening the checkpoint database takes the lock first, so a second process on
    // the same run stops here before touching anything.
    let ckpt = Checkpoints::open(&l.checkpoints, &l.hashes.lineage, restart)?;
    if restart {
        for f in [
            &l.store,
            &l.model,
            &l.loss,
            &l.file(RESULTS_CSV),
            &l.file(RESULTS_PARQUET),
            &l.file(DONE),
        ] {
            let _ = std::fs::remove_file(f);
        }
        let _ = std::fs::remove_dir_all(&l.features);
    }
    for d in [&l.features, &l.confusion_dir()] {
        std::fs::create_dir_all(d).map_err(Error::io(d))?;
    }
    let cfg_text = toml::to_string(cfg).expect("config serialises");
    crate::fsio::write_atomic(&l.file(CONFIG), cfg_text.as_bytes())?;
    Ok(ckpt)
}

/// Opens the run's data (rank 0 writes any data copies first; the others open what
/// it wrote), says what was found, and checks every key against it and the memory
/// budget before the first heavy stage.
fn open_and_plan(
    cfg: &Config,
    layout: &RunLayout,
    comm: &dyn Comm,
) -> Result<(Dataset, PatchSpec, crate::run::limits::Plan)> {
    let ds = if comm.is_root() {
        let ds = open_data(cfg, layout, true)?;
        comm.barrier();
        ds
    } else {
        comm.barrier();
        open_data(cfg, layout, false)?
    };
    for n in &ds.notes {
        say(format!("data: {n}"));
    }
    let shape = ds.train.shape();
    say(format!(
        "data: {} unlabeled, {} train, {} test images of {}x{}x{}",
        ds.unlabeled.len(),
        ds.train.len(),
        ds.test.len(),
        shape.height,
        shape.width,
        shape.channels
    ));
    let spec = PatchSpec {
        size: cfg.patches.size,
        count: cfg.patches.count,
        seed: cfg.seed,
    };
    spec.check(shape)?;
    let size = crate::run::limits::DataSize {
        shape,
        unlabeled: ds.unlabeled.len(),
        train: ds.train.len(),
        test: ds.test.len(),
        classes: ds.classes.len(),
    };
    let plan = crate::run::limits::plan(cfg, size, cfg.max_memory)?;
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
    Ok((ds, spec, plan))
}

impl Run<'_> {
    /// Stages 3 and 4 for every feature set of the config (and the raw-pixel baseline):
    /// encode, classify, and keep the result table up to date.
    fn features_and_evaluation(&self, model: &Model, ds: &Dataset) -> Result<Vec<Record>> {
        let (cfg, root) = (self.cfg, self.comm.is_root());
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
            loss_csv: LOSS.into(),
            status: crate::evaluate::results::FINISHED.into(),
            config_hash: crate::run::stamp::config_hash(cfg),
            git_rev: crate::run::stamp::git_rev().into(),
            started: self.started_at.clone(),
            ..Record::default()
        };
        let mut results = Vec::new();
        if cfg.classify.raw_baseline && root {
            for (set, split) in [(&ds.train, "train"), (&ds.test, "test")] {
                let out = self.layout.feature("raw", split);
                if !out.exists() {
                    write_raw(set, &out)?;
                }
            }
            let which = cfg
                .classify
                .raw_classifiers
                .as_ref()
                .unwrap_or(&cfg.classify.classifiers);
            results.extend(self.evaluate(which, &shared, &ds.classes)?);
            crate::evaluate::results::write(&self.layout.dir, &results)?;
        }
        let code = cfg.features.code();
        let mut enc = Encoder::new(&model.net, model.header.norm.clone(), model.header.patch)
            .with_code(code)
            .with_tile_rows(self.plan.tile_rows)
            .with_pool_grid(cfg.features.pool_grid)
            .with_precision(cfg.features.precision);
        if cfg.features.unit_atoms {
            enc = enc.with_unit_atoms();
        }
        for &step in &cfg.features.steps {
            for &mode in &cfg.features.modes {
                let name = cfg.features.set_name(step, mode);
                self.feature_set(&enc, ds, &name, step, mode)?;
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
                results.extend(self.evaluate(&cfg.classify.classifiers, &row, &ds.classes)?);
                crate::evaluate::results::write(&self.layout.dir, &results)?;
            }
        }
        // The table is written as each set is scored; a run that scored none still
        // leaves one.
        if root && results.is_empty() {
            crate::evaluate::results::write(&self.layout.dir, &results)?;
        }
        Ok(results)
    }
}

/// [`run`] on every rank of `comm`. Rank 0 writes the shared files (data copies, patch
/// store, checkpoints, model, features, tables) and classifies; every rank trains on
/// its shard of the patch store and encodes its share of the images. Ranks other than
/// 0 return no results.
pub fn run_with(cfg: &Config, restart: bool, comm: &dyn Comm) -> Result<(PathBuf, Vec<Record>)> {
    let (started, started_at) = (Instant::now(), crate::run::stamp::now());
    // Peak memory is reported per run, not over every run a sweep made before it.
    crate::run::limits::reset_peak();
    crate::run::limits::enter("setup");
    let layout = RunLayout::of(cfg);
    let ckpt = match comm.is_root() {
        true => Some(prepare(cfg, &layout, restart)?),
        false => None,
    };
    let (ds, spec, plan) = open_and_plan(cfg, &layout, comm)?;
    let arch = Architecture::new(
        spec.dim(ds.train.shape().channels),
        &cfg.model.hidden,
        cfg.model.sparse_layer,
        cfg.model.decoder,
    )?;
    let run = Run {
        cfg,
        layout,
        plan,
        comm,
        started,
        started_at,
    };
    let store = run.patch_store(&ds, &spec)?;
    let model = run.model(&store, arch, ckpt.as_ref())?;
    let results = run.features_and_evaluation(&model, &ds)?;
    comm.barrier();
    Ok((run.layout.dir, results))
}

/// Encodes `set` into `out` with every rank of `comm` (with `flip`, each image and then
/// its mirror): each encodes its share of the images into a part file next to `out`,
/// and rank 0 joins the parts in image order.
#[allow(clippy::too_many_arguments)]
pub fn encode_shared(
    enc: &Encoder,
    set: &ImageSet,
    step: usize,
    mode: crate::encode::Mode,
    flip: bool,
    out: &Path,
    label: &str,
    comm: &dyn Comm,
) -> Result<usize> {
    if comm.size() == 1 {
        return enc.write_features(set, step, mode, flip, out, label);
    }
    let part = |r: usize| out.with_extension(format!("part{r}.arrow"));
    let range = crate::dist::share(set.len(), comm.rank(), comm.size());
    enc.write_part(set, range, step, mode, flip, &part(comm.rank()), label)?;
    comm.barrier();
    let mut rows = 0;
    if comm.is_root() {
        let parts: Vec<PathBuf> = (0..comm.size()).map(part).collect();
        rows = crate::data::store::concat(&parts, Kind::Features, out)?;
        for p in &parts {
            let _ = std::fs::remove_file(p);
        }
    }
    comm.barrier();
    Ok(rows)
}

/// Writes the first-layer filters and the first 100 patches as pictures.
pub fn draw(model: &Model, store: &Store, l: &RunLayout) -> Result<()> {
    let patches = l.patches_png();
    crate::report::show::draw_model(model, &l.filters_png(), Some((store, &patches)))
}
