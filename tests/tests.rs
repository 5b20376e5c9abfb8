//! Integration tests: one binary, topic modules, shared helpers in `util`.

mod cli;
mod fixtures;
#[cfg(feature = "mpi")]
mod mpi;
mod pipeline;
mod readers;
mod resume;
mod store;
mod util;
