//! Runs: the config, where a run's files live, the memory budget, the stages chained
//! into one run, and sweeps of runs.

pub mod config;
pub mod layout;
pub mod limits;
pub mod pipeline;
pub mod sweep;
