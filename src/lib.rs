//! # sae: sparse-autoencoder image features, out of core
//!
//! ## Brief overview
//! `sae` learns features from image patches with a UFLDL-style sparse autoencoder and
//! measures how well they classify, without ever holding all patches in memory:
//!
//! 1. [`ingest`]: CIFAR-10 / STL-10 binaries, the study's numpy pickles and image
//!    folders, as memory-mapped [`ingest::ImageSet`]s;
//! 2. [`patches`] + [`preprocess`]: seeded patch sampling and normalisation (the study's
//!    scaling, or contrast normalisation + ZCA) into an Arrow IPC [`store`];
//! 3. [`sae`] + [`optim`]: the autoencoder's loss and gradient streamed over the store
//!    in parallel blocks, full-batch L-BFGS, numerical gradient check;
//! 4. [`features`]: fused, tiled encoding of every image at any step, `concat` or
//!    quadrant `pool`; [`show`] draws filters;
//! 5. [`classify`]: random forest and logistic regression (smartcore, the study's),
//!    and [`linear`] softmax / L2-SVM classifiers that scale to wide features, scored
//!    by [`metrics`];
//! 6. [`pipeline`]: the stages chained from one [`config::Config`] into a run folder;
//!    [`sweep`] runs grids of them, [`results`] tables and [`report`] pages with
//!    [`plot`]s show what came out.
//!
//! ```no_run
//! let cfg = sae::config::Config::load(std::path::Path::new("configs/demo.toml"))?;
//! let (dir, results) = sae::pipeline::run(&cfg, false)?;
//! for r in results {
//!     println!("{} {} {:.3}", r.features, r.classifier, r.accuracy);
//! }
//! println!("tables in {}", dir.display());
//! # Ok::<(), sae::Error>(())
//! ```

#![deny(missing_docs)]

pub mod checkpoint;
pub mod classify;
pub mod config;
pub mod dist;
pub mod error;
pub mod features;
pub mod fsio;
pub mod ingest;
pub mod layout;
pub mod limits;
pub mod linear;
pub mod metrics;
pub mod minibatch;
pub mod mmap;
pub mod model;
pub mod optim;
pub mod patches;
pub mod pipeline;
pub mod plot;
pub mod preprocess;
pub mod progress;
pub mod report;
pub mod results;
pub mod rng;
pub mod sae;
pub mod show;
pub mod store;
pub mod sweep;
pub mod training;

pub use error::{Error, Result};
