//! # sae: sparse-autoencoder image features, out of core
//!
//! ## Brief overview
//! `sae` learns features from image patches with a UFLDL-style sparse autoencoder and
//! measures how well they classify, without ever holding all patches in memory:
//!
//! The folders follow the data, and imports run one way, from [`run`] down:
//!
//! 1. [`data`]: datasets ([`data::ingest`]: CIFAR-10 / STL-10 binaries, the study's
//!    numpy pickles, image folders, as memory-mapped image sets), seeded patch
//!    sampling ([`data::patches`]) and normalisation ([`data::preprocess`]: the study's
//!    scaling, or contrast normalisation + ZCA) into an Arrow IPC [`data::store`];
//! 2. [`learn`]: the autoencoder ([`learn::sae`]: loss and gradient streamed over the
//!    store in parallel blocks, gradient check), its optimisers ([`learn::optim`]
//!    L-BFGS, [`learn::minibatch`] SGD/Adam), the training driver
//!    ([`learn::training`]) with its [`learn::checkpoint`]s, and the [`learn::model`]
//!    file;
//! 3. [`encode`]: fused, tiled encoding of every image at any step, `concat` or
//!    grid `pool`;
//! 4. [`evaluate`]: classifiers ([`evaluate::classify`]: smartcore's random forest and
//!    logistic regression, the study's; [`evaluate::linear`] softmax / L2-SVM for wide
//!    features), [`evaluate::metrics`], and [`evaluate::results`] tables;
//! 5. [`run`]: the [`run::config`], the files of a run and the hashes that name shared
//!    artefacts ([`run::layout`]), the memory budget ([`run::limits`]), the stages
//!    chained into a run ([`run::pipeline`]) and grids of runs ([`run::sweep`]);
//! 6. [`report`]: pages, [`report::plot`]s and pictures of filters
//!    ([`report::show`]).
//!
//! Beside them, shared infrastructure: [`error`], [`fsio`] (files written whole),
//! [`mmap`] (the only `unsafe`), [`dist`] (MPI), [`progress`], [`rng`].
//!
//! ```no_run
//! let cfg = sae::run::config::Config::load(std::path::Path::new("configs/demo.toml"))?;
//! let (dir, results) = sae::run::pipeline::run(&cfg, false)?;
//! for r in results {
//!     println!("{} {} {:.3}", r.features, r.classifier, r.accuracy);
//! }
//! println!("tables in {}", dir.display());
//! # Ok::<(), sae::Error>(())
//! ```

#![deny(missing_docs)]

pub mod data;
pub mod dist;
pub mod encode;
pub mod error;
pub mod evaluate;
pub mod fsio;
pub mod learn;
pub mod mmap;
pub mod progress;
pub mod report;
pub mod rng;
pub mod run;

pub use error::{Error, Result};
