//! Classifiers on image features: smartcore's random forest and logistic regression
//! (the study's pair) and the [`crate::evaluate::linear`] softmax and L2-SVM that scale to wide
//! features, scored by [`crate::evaluate::metrics`].
//!
//! smartcore types stay inside this module; the rest of `sae` passes [`Features`] (a
//! matrix in memory or a feature store on disk) and u32 labels. Features are
//! standardised here ([`Standardiser`], fitted on the training rows, scaled as
//! `classify.scaling` says; trees do not care, linear models need it). smartcore's
//! models take the standardised matrices in memory; the linear ones read the rows as
//! they go, so their width is not bounded by memory.

use ndarray::Array2;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use smartcore::ensemble::random_forest_classifier::{
    RandomForestClassifier, RandomForestClassifierParameters,
};
use smartcore::linalg::basic::matrix::DenseMatrix;
use smartcore::linear::logistic_regression::{LogisticRegression, LogisticRegressionParameters};

use crate::error::{Error, Result};
use crate::evaluate::l2path::PathCheckpoints;
use crate::evaluate::linear::{self, Features, LinearParams, Loss, Scaling, Standardiser};
use crate::evaluate::metrics::{score, Evaluation, PathSummary};

/// A classifier kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Classifier {
    /// Random forest.
    Rf,
    /// smartcore's logistic regression (the study's; slow on wide features).
    Lr,
    /// Multinomial logistic regression by L-BFGS, L2 chosen on a validation split.
    Softmax,
    /// One-vs-all L2-SVM (squared hinge) by L-BFGS, L2 chosen on a validation split.
    Svm,
}

impl Classifier {
    /// Short name.
    pub fn name(self) -> &'static str {
        match self {
            Classifier::Rf => "rf",
            Classifier::Lr => "lr",
            Classifier::Softmax => "softmax",
            Classifier::Svm => "svm",
        }
    }
}

/// Classifier settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassifyParams {
    /// Trees of the random forest.
    pub rf_trees: u16,
    /// L2 penalty of logistic regression on the summed log-loss (1 = scikit-learn's C = 1).
    pub lr_alpha: f64,
    /// Softmax and SVM settings.
    pub linear: LinearParams,
    /// Variance floor of the standardisation, as a fraction of the mean variance.
    pub var_floor: f64,
    /// How the features are scaled.
    pub scaling: Scaling,
    /// Seed.
    pub seed: u64,
}

fn dense(x: &Array2<f32>) -> Result<DenseMatrix<f32>> {
    let v: Vec<f32> = x.iter().copied().collect();
    DenseMatrix::new(x.nrows(), x.ncols(), v, false).map_err(|e| Error::Classifier(e.to_string()))
}

/// Fits `which` on the training features (standardised by a [`Standardiser`] fitted
/// on them) and evaluates it on the test features. `images` and `test_images` number
/// the image of each row where consecutive rows come from one image (an image and its
/// mirror): the linear classifiers then hold out whole images to choose L2, and each
/// test (and validation) image is classified once, from the summed scores (or tree
/// votes) of its rows. The linear classifiers save each stage of their L2 path in
/// `saved`, when given, and read back the stages saved there before.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    which: Classifier,
    p: &ClassifyParams,
    saved: Option<&PathCheckpoints>,
    xtr: Features,
    ytr: &[u32],
    images: Option<&[u32]>,
    xte: Features,
    yte: &[u32],
    test_images: Option<&[u32]>,
    classes: usize,
) -> Result<Evaluation> {
    if xtr.rows() == 0 || xte.rows() == 0 {
        return Err(Error::Classifier("no training or test rows".into()));
    }
    if xtr.dim() != xte.dim() {
        return Err(Error::Classifier(format!(
            "{} has {} features, {} has {}",
            xtr.origin(),
            xtr.dim(),
            xte.origin(),
            xte.dim()
        )));
    }
    if xtr.rows() != ytr.len()
        || xte.rows() != yte.len()
        || images.is_some_and(|g| g.len() != ytr.len())
        || test_images.is_some_and(|g| g.len() != yte.len())
    {
        return Err(Error::Classifier(format!(
            "{} ({} rows) or {} ({} rows): labels or image numbers differ in number",
            xtr.origin(),
            xtr.rows(),
            xte.origin(),
            xte.rows()
        )));
    }
    let all: Vec<usize> = (0..xte.rows()).collect();
    let runs = linear::image_runs(&all, test_images);
    let truth: Vec<u32> = runs.iter().map(|r| yte[r.start]).collect();
    if which == Classifier::Lr && runs.len() < xte.rows() {
        return Err(Error::Classifier(format!(
            "{}: lr gives classes, not scores, so it cannot classify an image from its \
             rows together (features.flip); use softmax or svm",
            xte.origin()
        )));
    }
    let s = Standardiser::fit(xtr, p.var_floor, p.scaling)?;
    let fail = |e: smartcore::error::Failed| Error::Classifier(format!("{}: {e}", which.name()));
    let mut detail = String::new();
    let mut path = None;
    let pred: Vec<u32> = match which {
        Classifier::Rf => {
            // smartcore fits trees one after another; fitting one-tree forests in
            // parallel and taking the majority vote of all trees is the same forest
            // (each tree with its own bootstrap seed) on every core.
            let (a, b) = (dense(&s.matrix(xtr)?)?, dense(&s.matrix(xte)?)?);
            let y = ytr.to_vec();
            let votes: Vec<Vec<u32>> = (0..u64::from(p.rf_trees))
                .into_par_iter()
                .map(|t| {
                    let params = RandomForestClassifierParameters::default()
                        .with_n_trees(1)
                        .with_seed(p.seed.wrapping_mul(1_000_003).wrapping_add(t));
                    let m = RandomForestClassifier::fit(&a, &y, params).map_err(fail)?;
                    m.predict(&b).map_err(fail)
                })
                .collect::<Result<_>>()?;
            majority(&votes, &runs, classes)
        }
        Classifier::Lr => {
            let params = LogisticRegressionParameters::default().with_alpha(p.lr_alpha as f32);
            let (a, b) = (dense(&s.matrix(xtr)?)?, dense(&s.matrix(xte)?)?);
            let m = LogisticRegression::fit(&a, &ytr.to_vec(), params).map_err(fail)?;
            m.predict(&b).map_err(fail)?
        }
        Classifier::Softmax | Classifier::Svm => {
            let loss = if which == Classifier::Svm {
                Loss::SquaredHinge
            } else {
                Loss::Softmax
            };
            let lp = LinearParams {
                seed: p.seed,
                ..p.linear.clone()
            };
            let f = linear::fit(loss, xtr, ytr, images, &s, classes, &lp, saved)?;
            detail = format!("l2 {:.0e}, {} iterations", f.l2, f.iterations);
            if f.reused > 0 {
                detail.push_str(&format!(" ({} stages read back)", f.reused));
            }
            if let Some(acc) = f.chosen_validation {
                detail.push_str(&format!(", validation {acc:.4}"));
            }
            path = Some(PathSummary {
                l2: f.l2,
                validation: f.chosen_validation,
                iterations: f.iterations as u64,
            });
            f.model.predict_all(xte, test_images, &s)?
        }
    };
    let mut e = score(&pred, &truth, classes);
    e.detail = detail;
    e.path = path;
    Ok(e)
}

/// The most voted class per run of rows, over every tree and row of the run (ties go
/// to the smaller label).
fn majority(votes: &[Vec<u32>], runs: &[std::ops::Range<usize>], classes: usize) -> Vec<u32> {
    let k = classes.max(votes.iter().flatten().max().map_or(0, |&m| m as usize + 1));
    let mut counts = vec![0u32; k];
    runs.iter()
        .map(|run| {
            counts.iter_mut().for_each(|c| *c = 0);
            for v in votes {
                for i in run.clone() {
                    counts[v[i] as usize] += 1;
                }
            }
            let best = counts
                .iter()
                .enumerate()
                .max_by_key(|&(j, &c)| (c, std::cmp::Reverse(j)));
            best.map_or(0, |(j, _)| j as u32)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blobs(n: usize, seed: u64) -> (Array2<f32>, Vec<u32>) {
        let mut r = crate::rng::stream(seed, crate::rng::Stream::Classify, 0);
        let y: Vec<u32> = (0..n).map(|i| (i % 3) as u32).collect();
        let x = Array2::from_shape_fn((n, 4), |(i, j)| {
            let c = y[i] as f64;
            (if j == (y[i] as usize) { 3.0 } else { 0.0 }
                + c * 0.1
                + crate::rng::normal(&mut r) * 0.5) as f32
        });
        (x, y)
    }

    #[test]
    fn both_classifiers_separate_blobs() {
        let (xtr, ytr) = blobs(150, 1);
        let (xte, yte) = blobs(90, 2);
        let p = ClassifyParams {
            rf_trees: 20,
            ..crate::run::config::ClassifyConfig::default().params(0)
        };
        for c in [
            Classifier::Rf,
            Classifier::Lr,
            Classifier::Softmax,
            Classifier::Svm,
        ] {
            let (a, b) = (Features::Memory(xtr.view()), Features::Memory(xte.view()));
            let e = evaluate(c, &p, None, a, &ytr, None, b, &yte, None, 3).unwrap();
            assert!(e.accuracy > 0.9, "{c:?}: {}", e.accuracy);
            assert_eq!(e.confusion.sum() as usize, 90);
        }
    }

    #[test]
    fn nan_features_are_refused() {
        let (mut xtr, ytr) = blobs(30, 1);
        xtr[[3, 1]] = f32::NAN;
        let (mut xte, yte) = blobs(9, 2);
        let p = crate::run::config::ClassifyConfig::default().params(0);
        for c in [Classifier::Lr, Classifier::Svm] {
            let (a, b) = (Features::Memory(xtr.view()), Features::Memory(xte.view()));
            assert!(
                evaluate(c, &p, None, a, &ytr, None, b, &yte, None, 3).is_err(),
                "{c:?}"
            );
        }
        // NaN in the test rows only.
        xte[[2, 0]] = f32::NAN;
        let xtr = blobs(30, 1).0;
        for c in [Classifier::Lr, Classifier::Svm] {
            let (a, b) = (Features::Memory(xtr.view()), Features::Memory(xte.view()));
            assert!(
                evaluate(c, &p, None, a, &ytr, None, b, &yte, None, 3).is_err(),
                "{c:?}"
            );
        }
    }

    /// Test rows in pairs of one image each are scored once per image by rf and svm
    /// (the confusion matrix counts images), and lr, which gives no scores, refuses.
    #[test]
    fn paired_test_rows_are_scored_per_image() {
        let (xtr, ytr) = blobs(150, 1);
        let (xte, yte) = blobs(90, 2);
        // Each test image twice: the pairs share their label.
        let x2 = ndarray::concatenate(ndarray::Axis(0), &[xte.view(), xte.view()]).unwrap();
        let order: Vec<usize> = (0..90).flat_map(|i| [i, 90 + i]).collect();
        let x2 = x2.select(ndarray::Axis(0), &order);
        let y2: Vec<u32> = order.iter().map(|&i| yte[i % 90]).collect();
        let images: Vec<u32> = (0..90u32).flat_map(|i| [i, i]).collect();
        let p = ClassifyParams {
            rf_trees: 20,
            ..crate::run::config::ClassifyConfig::default().params(0)
        };
        for c in [Classifier::Rf, Classifier::Svm] {
            let (a, b) = (Features::Memory(xtr.view()), Features::Memory(x2.view()));
            let e = evaluate(c, &p, None, a, &ytr, None, b, &y2, Some(&images), 3).unwrap();
            assert_eq!(e.confusion.sum() as usize, 90, "{c:?}");
            assert!(e.accuracy > 0.9, "{c:?}: {}", e.accuracy);
        }
        let (a, b) = (Features::Memory(xtr.view()), Features::Memory(x2.view()));
        let err = evaluate(
            Classifier::Lr,
            &p,
            None,
            a,
            &ytr,
            None,
            b,
            &y2,
            Some(&images),
            3,
        );
        assert!(err.unwrap_err().to_string().contains("features.flip"));
    }
}
