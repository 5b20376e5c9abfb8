//! Where a run's files live, and the hashes that name what runs share. A run folder
//! holds what is the run's own; with `cache_dir` set (sweeps) the artefacts that other
//! runs can reuse go to the cache under names carrying the hash of what determines
//! them:
//!
//! ```text
//! runs/<name>/config.toml            the config as run
//!             patches.arrow          normalised training patches (+ image, x, y)
//!             model.sae              network + normalisation
//!             checkpoint.sled/       training checkpoints
//!             loss.csv               training trace
//!             filters.png patches.png
//!             features/<labelled>/<set>-{train,test}.arrow
//!             features/<labelled>/fits/<set>-<classifier>/  saved L2-path stages
//!             results.csv, .parquet  accuracy per feature set and classifier
//!             confusion/<set>-<classifier>.csv
//!             done.json              a finished sweep run
//! <cache>/patches-<patches>.arrow, model-<training>.sae, model-<training>.loss.csv,
//!         checkpoints-<lineage>.sled/, features-<training>-<labelled>/ (with fits/),
//!         data-<data>/ (synthetic images), images-<data>/ (resized copies)
//! ```

use std::path::PathBuf;

use crate::learn::minibatch::Schedule;
use crate::run::config::{Config, Learner, Optimizer};

/// The config as run.
pub const CONFIG: &str = "config.toml";
/// The result table, CSV.
pub const RESULTS_CSV: &str = crate::evaluate::results::CSV;
/// The result table, Parquet.
pub const RESULTS_PARQUET: &str = crate::evaluate::results::PARQUET;
/// Marks a finished sweep run.
pub const DONE: &str = "done.json";
/// The training trace.
pub const LOSS: &str = "loss.csv";

fn hash(key: &serde_json::Value) -> String {
    format!("{:08x}", crc32fast::hash(key.to_string().as_bytes()))
}

/// The hashes of what determines each shared artefact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hashes {
    /// The images before any selection: the source and size.
    pub data: String,
    /// Which labelled images are used and how they are labelled: the source, limits,
    /// fold, held-out fraction and label base.
    pub labelled: String,
    /// The patch store: the unlabeled images, sampling, normalisation, seed. Which
    /// labelled images are used (limits, fold) is not part of it, so runs that only
    /// differ there share patches and models.
    pub patches: String,
    /// The training trajectory: what determines the model except how long it trains
    /// (and the checkpoint schedule, which changes nothing). Runs that differ only in
    /// `max_iter` or `epochs` follow the same path and share checkpoints: a longer run
    /// continues from a shorter one's last checkpoint.
    pub lineage: String,
    /// The trained model, the iteration limit (L-BFGS) or epoch count (SGD, Adam)
    /// included: runs asked to train for different lengths make different models.
    pub training: String,
}

impl Hashes {
    /// The hashes of `cfg`.
    pub fn of(cfg: &Config) -> Hashes {
        let d = &cfg.data;
        let data = hash(&serde_json::json!({
            "synth": cfg.synth, "seed": cfg.synth.as_ref().map(|_| cfg.seed),
            "format": d.format, "path": d.path, "order": d.pixel_order, "resize": d.resize,
        }));
        let mut key = serde_json::json!({
            "data": data, "train": d.train_limit, "test": d.test_limit, "fold": d.fold,
        });
        // Added keys enter the hash only when set, so earlier runs keep their names.
        if d.holdout > 0.0 {
            key["holdout"] = serde_json::json!([d.holdout, cfg.seed]);
        }
        if let Some(b) = d.label_base {
            key["label_base"] = serde_json::json!(b);
        }
        let labelled = hash(&key);
        let mut key = serde_json::json!({
            "data": data, "unlabeled_limit": d.unlabeled_limit,
            "patches": cfg.patches, "seed": cfg.seed, "chunk": cfg.train.chunk,
        });
        // Held-out images are left out of the patches too.
        if d.holdout > 0.0 {
            key["holdout"] = serde_json::json!(d.holdout);
        }
        let patches = hash(&key);
        // The limits and the checkpoint policy do not shape the trajectory, unless a
        // step-size schedule spans the run. The keys are those of the configs before
        // the schedule existed (with the limits zeroed), so that their checkpoints keep
        // their names; the schedule's keys join only for the optimisers that use them.
        let t = &cfg.train;
        let mut train = serde_json::json!({
            "optimizer": t.optimizer, "learning_rate": t.learning_rate,
            "momentum": t.momentum, "batch_size": t.batch_size, "epochs": 0,
            "max_iter": 0, "memory": t.memory, "gtol": t.gtol, "ftol": t.ftol,
            "chunk": t.chunk, "checkpoint_every": 0, "checkpoint_seconds": 0.0,
        });
        if t.optimizer != Optimizer::Lbfgs {
            let spans = t.schedule != Schedule::Constant || t.warmup > 0.0;
            train["lr_probe"] = serde_json::json!(t.lr_probe);
            train["schedule"] = serde_json::json!(t.schedule);
            train["warmup"] = serde_json::json!(t.warmup);
            if spans {
                train["epochs"] = serde_json::json!(t.epochs);
            }
        }
        // A dictionary depends on the store, its size and the seed only: runs that
        // differ in the autoencoder's penalties or the optimiser share it. OMP-1's
        // passes are its limit, like the optimisers' iterations: a longer run continues
        // a shorter one's checkpoints.
        let m = &cfg.model;
        let lineage = if m.learner.is_autoencoder() {
            hash(&serde_json::json!({
                "patches": patches, "model": m, "train": train,
            }))
        } else {
            hash(&serde_json::json!({
                "patches": patches, "learner": m.learner, "hidden": m.hidden,
                "sparse_layer": m.sparse_layer,
            }))
        };
        let limit = match (cfg.model.learner, cfg.train.optimizer) {
            (Learner::Omp1, _) => cfg.model.passes,
            (Learner::Random, _) => 0,
            (_, Optimizer::Lbfgs) => cfg.train.max_iter,
            (_, Optimizer::Sgd | Optimizer::Adam) => cfg.train.epochs,
        };
        let training = hash(&serde_json::json!({ "lineage": lineage, "limit": limit }));
        Hashes {
            data,
            labelled,
            patches,
            lineage,
            training,
        }
    }
}

/// Every file of one run, in its folder or in the shared cache.
#[derive(Clone, Debug)]
pub struct RunLayout {
    /// The run folder.
    pub dir: PathBuf,
    /// What names the shared artefacts.
    pub hashes: Hashes,
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

impl RunLayout {
    /// The layout of `cfg`.
    pub fn of(cfg: &Config) -> RunLayout {
        let dir = cfg.run_dir();
        let hashes = Hashes::of(cfg);
        let h = &hashes;
        let (data, images, store, model, loss, checkpoints, features) = match &cfg.cache_dir {
            None => (
                dir.join("data"),
                dir.join("images"),
                dir.join("patches.arrow"),
                dir.join("model.sae"),
                dir.join(LOSS),
                dir.join("checkpoint.sled"),
                dir.join("features").join(&h.labelled),
            ),
            Some(c) => (
                c.join(format!("data-{}", h.data)),
                c.join(format!("images-{}", h.data)),
                c.join(format!("patches-{}.arrow", h.patches)),
                c.join(format!("model-{}.sae", h.training)),
                c.join(format!("model-{}.loss.csv", h.training)),
                c.join(format!("checkpoints-{}.sled", h.lineage)),
                c.join(format!("features-{}-{}", h.training, h.labelled)),
            ),
        };
        RunLayout {
            dir,
            hashes,
            data,
            images,
            store,
            model,
            loss,
            checkpoints,
            features,
        }
    }

    /// A file in the run folder.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The confusion-matrix folder.
    pub fn confusion_dir(&self) -> PathBuf {
        self.dir.join("confusion")
    }

    /// The confusion matrix of feature set `set` under `classifier`.
    pub fn confusion(&self, set: &str, classifier: &str) -> PathBuf {
        self.confusion_dir().join(format!("{set}-{classifier}.csv"))
    }

    /// The feature file of `set` for `split` (train or test).
    pub fn feature(&self, set: &str, split: &str) -> PathBuf {
        self.features.join(format!("{set}-{split}.arrow"))
    }

    /// The saved stages of `classifier`'s L2 path on feature set `set`, kept beside
    /// the features so that every run that shares them shares these.
    pub fn fits(&self, set: &str, classifier: &str) -> PathBuf {
        self.features
            .join("fits")
            .join(format!("{set}-{classifier}"))
    }

    /// The picture of the first-layer filters.
    pub fn filters_png(&self) -> PathBuf {
        self.dir.join("filters.png")
    }

    /// The picture of sample patches.
    pub fn patches_png(&self) -> PathBuf {
        self.dir.join("patches.png")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashes(f: impl Fn(&mut Config)) -> Hashes {
        let mut cfg: Config =
            toml::from_str("name = \"h\"\n[data]\nformat = \"cifar10\"\npath = \"d\"\n").unwrap();
        f(&mut cfg);
        Hashes::of(&cfg)
    }

    #[test]
    fn epochs_join_the_trajectory_only_when_the_schedule_spans_the_run() {
        let adam = |epochs, schedule, warmup| {
            hashes(move |c: &mut Config| {
                c.train.optimizer = Optimizer::Adam;
                c.train.epochs = epochs;
                c.train.schedule = schedule;
                c.train.warmup = warmup;
            })
        };
        let (a, b) = (
            adam(5, Schedule::Constant, 0.0),
            adam(9, Schedule::Constant, 0.0),
        );
        assert_eq!(a.lineage, b.lineage);
        assert_ne!(a.training, b.training);
        let (a, b) = (
            adam(5, Schedule::Cosine, 0.0),
            adam(9, Schedule::Cosine, 0.0),
        );
        assert_ne!(a.lineage, b.lineage);
        let (a, b) = (
            adam(5, Schedule::Constant, 0.1),
            adam(9, Schedule::Constant, 0.1),
        );
        assert_ne!(a.lineage, b.lineage);
        // L-BFGS ignores the mini-batch settings.
        let lbfgs = |schedule| hashes(move |c: &mut Config| c.train.schedule = schedule);
        assert_eq!(
            lbfgs(Schedule::Constant).lineage,
            lbfgs(Schedule::Cosine).lineage
        );
    }

    #[test]
    fn dictionaries_ignore_the_autoencoders_settings() {
        for learner in [Learner::Random, Learner::Omp1] {
            let dict = |rho, optimizer, hidden: usize| {
                hashes(move |c: &mut Config| {
                    c.model.learner = learner;
                    c.model.rho = rho;
                    c.model.hidden = vec![hidden];
                    c.train.optimizer = optimizer;
                })
            };
            let a = dict(0.01, Optimizer::Lbfgs, 16);
            assert_eq!(a.training, dict(0.1, Optimizer::Adam, 16).training);
            let longer = hashes(move |c: &mut Config| {
                c.model.learner = learner;
                c.model.hidden = vec![16];
                c.train.max_iter = 7;
            });
            assert_eq!(a.training, longer.training);
            assert_ne!(a.training, dict(0.01, Optimizer::Lbfgs, 32).training);
        }
        let ae = |rho| hashes(move |c: &mut Config| c.model.rho = rho);
        assert_ne!(ae(0.01).training, ae(0.1).training);
    }
}
