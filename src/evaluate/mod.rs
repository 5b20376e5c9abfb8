//! Stage 4, evaluation: classifiers on the features, how their predictions score, and
//! the result tables other tools read.

pub mod classify;
pub mod l2path;
pub mod linear;
pub mod metrics;
pub mod results;
