//! Runs: the config, where a run's files live, the memory budget, the stages chained
//! into one run, sweeps of runs, and what identifies a run in a table.

pub mod config;
pub mod layout;
pub mod limits;
pub mod pipeline;
pub mod stamp;
pub mod sweep;
