//! How well predictions match the truth: accuracy and the confusion matrix, and the
//! confusion matrix as a CSV file. Shared by every classifier and by the validation
//! that chooses their settings.

use std::io::Write;
use std::path::Path;

use ndarray::Array2;

use crate::error::{Error, Result};

/// Test-set result of one classifier.
#[derive(Clone, Debug)]
pub struct Evaluation {
    /// Fraction correct.
    pub accuracy: f64,
    /// `confusion[[true, predicted]]` counts.
    pub confusion: Array2<u32>,
    /// What was chosen on the way (e.g. the L2 weight), for the log.
    pub detail: String,
    /// How a linear classifier was chosen and fitted, for the result table.
    pub path: Option<PathSummary>,
}

/// The chosen candidate of a linear classifier's L2 path.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PathSummary {
    /// The chosen L2 weight.
    pub l2: f64,
    /// Its validation accuracy (none when the grid has one value or nothing could be
    /// held out).
    pub validation: Option<f64>,
    /// L-BFGS iterations of the path and the refit together.
    pub iterations: u64,
}

/// Accuracy and confusion matrix of predictions.
pub fn score(pred: &[u32], truth: &[u32], classes: usize) -> Evaluation {
    assert_eq!(pred.len(), truth.len());
    let k = classes.max(
        pred.iter()
            .chain(truth)
            .max()
            .map_or(0, |&m| m as usize + 1),
    );
    let mut confusion = Array2::<u32>::zeros((k, k));
    let mut right = 0;
    for (&p, &t) in pred.iter().zip(truth) {
        confusion[[t as usize, p as usize]] += 1;
        right += usize::from(p == t);
    }
    Evaluation {
        accuracy: right as f64 / truth.len().max(1) as f64,
        confusion,
        detail: String::new(),
        path: None,
    }
}

/// Writes a confusion matrix as CSV: a header of predicted class names, one row per
/// true class.
pub fn write_confusion(path: &Path, e: &Evaluation, names: &[String]) -> Result<()> {
    let mut out = String::from("true\\predicted");
    let k = e.confusion.nrows();
    let name = |i: usize| names.get(i).cloned().unwrap_or_else(|| i.to_string());
    for j in 0..k {
        out.push(',');
        out.push_str(&name(j));
    }
    out.push('\n');
    for i in 0..k {
        out.push_str(&name(i));
        for j in 0..k {
            out.push_str(&format!(",{}", e.confusion[[i, j]]));
        }
        out.push('\n');
    }
    let mut f = std::fs::File::create(path).map_err(Error::io(path))?;
    f.write_all(out.as_bytes()).map_err(Error::io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_counts() {
        let e = score(&[0, 1, 1, 2], &[0, 1, 2, 2], 3);
        assert_eq!(e.accuracy, 0.75);
        assert_eq!(e.confusion[[2, 1]], 1);
    }
}
