//! Stage 1, data: datasets read in place, patches sampled from them, normalised, and
//! written to a memory-mapped patch store.

pub mod ingest;
pub mod patches;
pub mod preprocess;
pub mod store;
