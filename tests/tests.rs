//! Integration tests: one binary, topic modules, shared helpers in `util`.

mod cli;
mod fixtures;
mod hostile;
mod memory;
#[cfg(feature = "mpi")]
mod mpi;
mod pipeline;
mod properties;
mod readers;
mod resume;
mod store;
mod util;
