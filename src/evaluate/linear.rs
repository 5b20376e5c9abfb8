//! Linear classifiers that scale to wide features: multinomial logistic regression
//! (softmax) and one-vs-all L2-SVM (squared hinge), trained by full-batch L-BFGS.
//!
//! The objective is two matrix products per evaluation (scores `X·Wᵀ`, gradient
//! `dSᵀ·X`) over row blocks in parallel, in f32 with sums in f64, so 50,000 x 6,400
//! features cost a fraction of a second per evaluation. Blocks are summed in a fixed
//! order, so results do not depend on the thread count. The L2 weight is chosen on a
//! held-out split of the training rows (largest first, each fit starting from the
//! previous solution), then the model is refitted on all training rows.

use ndarray::{s, Array1, Array2, ArrayView2, Axis};
use rand::seq::SliceRandom;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::learn::optim::{minimize, LbfgsParams};
use crate::learn::sae::Real;

/// Rows per parallel block of the objective.
const BLOCK: usize = 2048;

/// Rows per cache-resident sub-block within a block.
const SUB: usize = 128;

/// The loss a linear classifier minimises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Loss {
    /// Multinomial logistic regression: mean cross-entropy of the softmax.
    Softmax,
    /// One-vs-all L2-SVM: mean over rows of Σ_c max(0, 1 − t_c·s_c)².
    SquaredHinge,
}

impl Loss {
    /// The classifier's name in configs and tables.
    pub fn name(self) -> &'static str {
        match self {
            Loss::Softmax => "softmax",
            Loss::SquaredHinge => "svm",
        }
    }
}

/// Training settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinearParams {
    /// Candidate L2 weights (on the mean loss); one candidate skips validation.
    pub l2: Vec<f64>,
    /// Fraction of training rows held out to choose `l2`.
    pub validation: f64,
    /// L-BFGS iterations per fit.
    pub max_iter: usize,
    /// Seed of the validation split.
    pub seed: u64,
}

/// A fitted classifier: `argmax_c (W·x + b)_c`.
#[derive(Clone, Debug)]
pub struct LinearModel {
    /// Weights, classes x features.
    pub w: Array2<f32>,
    /// Biases.
    pub b: Array1<f32>,
}

/// A fit and how its L2 weight was chosen.
#[derive(Clone, Debug)]
pub struct Fitted {
    /// The model refitted on all training rows.
    pub model: LinearModel,
    /// The chosen L2 weight.
    pub l2: f64,
    /// (l2, validation accuracy) of every candidate (empty without validation).
    pub validation: Vec<(f64, f64)>,
}

/// Loss and gradient at `theta = [W (row-major, classes x d), b]`, mean over the rows
/// of `x` plus `l2/2·|W|²`. Computed in `F`; `F = f64` is for the gradient check.
pub fn objective<F: Real>(
    loss: Loss,
    x: ArrayView2<f32>,
    y: &[u32],
    classes: usize,
    l2: f64,
    theta: &[f64],
) -> (f64, Vec<f64>) {
    let (n, d) = x.dim();
    let w = Array2::from_shape_fn((classes, d), |(c, j)| F::from_f64(theta[c * d + j]));
    let b = Array1::from_shape_fn(classes, |c| F::from_f64(theta[classes * d + c]));
    let blocks: Vec<(f64, Array2<F>, Array1<F>)> = (0..n.div_ceil(BLOCK))
        .into_par_iter()
        .map(|k| {
            let (lo, hi) = (k * BLOCK, ((k + 1) * BLOCK).min(n));
            let mut sum = 0.0;
            let mut gw = Array2::<F>::zeros((classes, d));
            let mut gb = Array1::<F>::zeros(classes);
            // Sub-blocks small enough to stay in cache between the two products, so
            // the features are read from memory once per evaluation, not twice.
            for sub in (lo..hi).step_by(SUB) {
                let top = (sub + SUB).min(hi);
                let xb = F::cast_rows(x.slice(s![sub..top, ..]));
                let mut sc = xb.dot(&w.t());
                sc += &b.view().insert_axis(Axis(0));
                for (r, mut row) in sc.axis_iter_mut(Axis(0)).enumerate() {
                    sum += dscores(loss, row.as_slice_mut().expect("row"), y[sub + r] as usize);
                }
                ndarray::linalg::general_mat_mul(F::one(), &sc.t(), &xb, F::one(), &mut gw);
                gb += &sc.sum_axis(Axis(0));
            }
            (sum, gw, gb)
        })
        .collect();
    let inv_n = 1.0 / n.max(1) as f64;
    let mut f = 0.0;
    let mut g = vec![0.0; theta.len()];
    for (sum, gw, gb) in &blocks {
        f += sum;
        for (gi, v) in g.iter_mut().zip(gw.iter()) {
            *gi += v.as_f64();
        }
        for (gi, v) in g[classes * d..].iter_mut().zip(gb.iter()) {
            *gi += v.as_f64();
        }
    }
    f *= inv_n;
    g.iter_mut().for_each(|v| *v *= inv_n);
    for (gi, wi) in g.iter_mut().zip(&theta[..classes * d]) {
        f += 0.5 * l2 * wi * wi;
        *gi += l2 * wi;
    }
    (f, g)
}

/// Replaces one row of scores by d(loss)/d(score) and returns the row's loss.
fn dscores<F: Real>(loss: Loss, s: &mut [F], y: usize) -> f64 {
    match loss {
        Loss::Softmax => {
            let m = s.iter().fold(F::neg_infinity(), |m, &v| m.max(v));
            let mut z = F::zero();
            for v in s.iter_mut() {
                *v = (*v - m).exp();
                z += *v;
            }
            let l = -(s[y] / z).as_f64().ln();
            for v in s.iter_mut() {
                *v = *v / z;
            }
            s[y] -= F::one();
            l
        }
        Loss::SquaredHinge => {
            let mut l = 0.0;
            for (c, v) in s.iter_mut().enumerate() {
                let t = if c == y { F::one() } else { -F::one() };
                let m = (F::one() - t * *v).max(F::zero());
                l += (m * m).as_f64();
                *v = -(t + t) * m;
            }
            l
        }
    }
}

impl LinearModel {
    /// Predicted class of every row.
    pub fn predict(&self, x: ArrayView2<f32>) -> Vec<u32> {
        let n = x.nrows();
        (0..n.div_ceil(BLOCK))
            .into_par_iter()
            .flat_map_iter(|k| {
                let xb = x.slice(s![k * BLOCK..((k + 1) * BLOCK).min(n), ..]);
                let sc = xb.dot(&self.w.t()) + self.b.view().insert_axis(Axis(0));
                sc.axis_iter(Axis(0))
                    .map(|r| {
                        r.iter()
                            .enumerate()
                            .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
                                if v > bv {
                                    (i, v)
                                } else {
                                    (bi, bv)
                                }
                            })
                            .0 as u32
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn from_theta(theta: &[f64], classes: usize, d: usize) -> Self {
        LinearModel {
            w: Array2::from_shape_fn((classes, d), |(c, j)| theta[c * d + j] as f32),
            b: Array1::from_shape_fn(classes, |c| theta[classes * d + c] as f32),
        }
    }
}

fn train(
    loss: Loss,
    x: ArrayView2<f32>,
    y: &[u32],
    classes: usize,
    l2: f64,
    theta: Vec<f64>,
    max_iter: usize,
) -> Result<Vec<f64>> {
    let p = LbfgsParams {
        max_iter,
        gtol: 1e-7,
        ftol: 1e-10,
        ..LbfgsParams::default()
    };
    let mut fg = |t: &[f64]| -> Result<(f64, Vec<f64>)> {
        let (f, g) = objective::<f32>(loss, x, y, classes, l2, t);
        if !f.is_finite() {
            return Err(Error::Numeric(format!(
                "classifier loss became {f} (l2 = {l2})"
            )));
        }
        Ok((f, g))
    };
    let mut bar = crate::progress::Progress::new(
        format!("classify {} l2 {l2:.0e}", loss.name()),
        max_iter,
        "iterations",
    );
    let (st, stop) = minimize(theta, &p, &mut fg, &mut |it| {
        if it.iter > 0 {
            bar.inc(1)
        }
    })?;
    let secs = bar.finish();
    crate::progress::say(format!(
        "classify {} l2 {l2:.0e}: loss {:.6} after {} iterations, {} evaluations, {secs:.1} s ({stop:?})",
        loss.name(),
        st.f,
        st.iter,
        st.evals
    ));
    Ok(st.x)
}

/// Moves rows so that row `i` becomes the old row `perm[i]`, in place (one spare row).
fn permute_rows(x: &mut Array2<f32>, y: &mut [u32], perm: &[usize]) {
    let mut done = vec![false; perm.len()];
    let mut tmp = Array1::<f32>::zeros(x.ncols());
    for start in 0..perm.len() {
        if done[start] || perm[start] == start {
            continue;
        }
        tmp.assign(&x.row(start));
        let ty = y[start];
        let mut j = start;
        loop {
            done[j] = true;
            let k = perm[j];
            if k == start {
                x.row_mut(j).assign(&tmp);
                y[j] = ty;
                break;
            }
            let (mut dst, src) = x.multi_slice_mut((s![j, ..], s![k, ..]));
            dst.assign(&src);
            y[j] = y[k];
            j = k;
        }
    }
}

/// Fits a classifier on `x` (rows: standardised features) and `y`, choosing the L2
/// weight on a held-out split (a seeded shuffle of the rows, undone before returning).
pub fn fit(
    loss: Loss,
    x: &mut Array2<f32>,
    y: &mut [u32],
    classes: usize,
    p: &LinearParams,
) -> Result<Fitted> {
    let (n, d) = x.dim();
    if n != y.len() || n == 0 {
        return Err(Error::Classifier(format!(
            "{n} rows but {} labels",
            y.len()
        )));
    }
    if p.l2.is_empty() || p.l2.iter().any(|v| v.is_nan() || *v < 0.0) {
        return Err(Error::config(
            "classify.l2",
            "needs at least one non-negative value",
        ));
    }
    let mut l2s = p.l2.clone();
    l2s.sort_by(|a, b| b.total_cmp(a));
    let zero = vec![0.0; classes * (d + 1)];
    let held = ((n as f64) * p.validation).round() as usize;
    let mut validation = Vec::new();
    let mut best = (l2s[0], f64::NEG_INFINITY, zero.clone());
    if l2s.len() > 1 && held > 0 && held < n {
        let mut perm: Vec<usize> = (0..n).collect();
        perm.shuffle(&mut crate::rng::stream(
            p.seed,
            crate::rng::Stream::Classify,
            1,
        ));
        permute_rows(x, y, &perm);
        let fit_rows = n - held;
        let chosen: Result<()> = (|| {
            let (xa, xv) = x.view().split_at(Axis(0), fit_rows);
            let (ya, yv) = y.split_at(fit_rows);
            let mut theta = zero.clone();
            for &l2 in &l2s {
                theta = train(loss, xa, ya, classes, l2, theta, p.max_iter)?;
                let m = LinearModel::from_theta(&theta, classes, d);
                let acc = crate::evaluate::metrics::score(&m.predict(xv), yv, classes).accuracy;
                crate::progress::say(format!(
                    "classify: l2 {l2:.0e}: validation accuracy {acc:.4} ({held} rows)"
                ));
                validation.push((l2, acc));
                if acc > best.1 {
                    best = (l2, acc, theta.clone());
                }
            }
            Ok(())
        })();
        // Rows go back to their order, so the caller's data is as it was.
        let mut inverse = vec![0; n];
        for (i, &k) in perm.iter().enumerate() {
            inverse[k] = i;
        }
        permute_rows(x, y, &inverse);
        chosen?;
    }
    let theta = train(loss, x.view(), y, classes, best.0, best.2, p.max_iter)?;
    Ok(Fitted {
        model: LinearModel::from_theta(&theta, classes, d),
        l2: best.0,
        validation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, d: usize, classes: usize, seed: u64) -> (Array2<f32>, Vec<u32>) {
        let mut r = crate::rng::stream(seed, crate::rng::Stream::Classify, 9);
        let y: Vec<u32> = (0..n).map(|i| (i % classes) as u32).collect();
        let x = Array2::from_shape_fn((n, d), |(i, j)| {
            let mean = if j % classes == y[i] as usize {
                1.5
            } else {
                0.0
            };
            (mean + crate::rng::normal(&mut r)) as f32
        });
        (x, y)
    }

    #[test]
    fn gradients_match_finite_differences() {
        let (x, y) = data(BLOCK + 37, 7, 4, 1);
        for loss in [Loss::Softmax, Loss::SquaredHinge] {
            let mut r = crate::rng::stream(3, crate::rng::Stream::Classify, 2);
            let theta: Vec<f64> = (0..4 * 8)
                .map(|_| 0.3 * crate::rng::normal(&mut r))
                .collect();
            let (_, g) = objective::<f64>(loss, x.view(), &y, 4, 0.01, &theta);
            let eps = 1e-5;
            let (mut num, mut den) = (0.0f64, 0.0f64);
            for i in 0..theta.len() {
                let mut t = theta.clone();
                t[i] += eps;
                let (fp, _) = objective::<f64>(loss, x.view(), &y, 4, 0.01, &t);
                t[i] -= 2.0 * eps;
                let (fm, _) = objective::<f64>(loss, x.view(), &y, 4, 0.01, &t);
                let ng = (fp - fm) / (2.0 * eps);
                num += (ng - g[i]).powi(2);
                den += (ng + g[i]).powi(2);
            }
            let rel = num.sqrt() / den.sqrt();
            assert!(rel < 1e-7, "{loss:?}: relative error {rel:e}");
        }
    }

    #[test]
    fn both_losses_classify_held_out_data() {
        let (xte, yte) = data(600, 20, 5, 2);
        for loss in [Loss::Softmax, Loss::SquaredHinge] {
            let (mut x, mut y) = data(1000, 20, 5, 1);
            let p = LinearParams {
                l2: vec![1e-1, 1e-3],
                validation: 0.2,
                max_iter: 100,
                seed: 1,
            };
            let f = fit(loss, &mut x, &mut y, 5, &p).unwrap();
            assert_eq!(f.validation.len(), 2);
            let acc =
                crate::evaluate::metrics::score(&f.model.predict(xte.view()), &yte, 5).accuracy;
            assert!(acc > 0.85, "{loss:?}: {acc}");
        }
    }

    #[test]
    fn permutation_moves_rows_with_labels() {
        let mut x = Array2::from_shape_fn((5, 2), |(i, j)| (i * 10 + j) as f32);
        let mut y: Vec<u32> = (0..5).collect();
        permute_rows(&mut x, &mut y, &[3, 0, 4, 1, 2]);
        assert_eq!(y, vec![3, 0, 4, 1, 2]);
        for (i, &k) in y.iter().enumerate() {
            assert_eq!(x[[i, 1]], (k * 10 + 1) as f32);
        }
    }
}
