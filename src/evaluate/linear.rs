//! Linear classifiers that scale to wide features: multinomial logistic regression
//! (softmax) and one-vs-all L2-SVM (squared hinge), trained by full-batch L-BFGS.
//!
//! The objective is two matrix products per evaluation (scores `X·Wᵀ`, gradient
//! `dSᵀ·X`) over row blocks in parallel, in f32 with sums in f64, so 50,000 x 6,400
//! features cost a fraction of a second per evaluation. Blocks are summed in a fixed
//! order, so results do not depend on the thread count. The L2 weight is chosen on a
//! held-out split of the training rows along a warm-started path: the largest first,
//! from zero, for `max_iter` iterations; each smaller one from the previous solution
//! for `warm_iter`; then the model is refitted on all training rows from the chosen
//! solution for `warm_iter`. On wide CIFAR-10 features the path's accuracy follows the
//! iterations along the whole path (README, "Classifier path"), so the default keeps
//! every candidate's budget and `warm_iter` is the knob that trades accuracy for time.
//!
//! The f32 kernels use fused multiply-adds (`f32::mul_add`): AVX2 + FMA intrinsics
//! where the processor has them, and portable copies with the same results elsewhere,
//! which are slow on processors without FMA (a software `fmaf` per product).

use ndarray::{s, Array1, Array2, ArrayView2, ArrayViewMut2, Axis};
use rand::seq::SliceRandom;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::learn::optim::{minimize, LbfgsParams};
use crate::learn::sae::{simd, Real};

/// Rows per parallel block of the objective.
const BLOCK: usize = 2048;

/// Rows per cache-resident sub-block within a block, for `d` features: about 384 KiB,
/// so that the rows read from memory for the scores are still in the core's L2 cache
/// for the gradient, beside the gradient's columns streaming through.
fn sub_rows(d: usize) -> usize {
    ((384 << 10) / (4 * d.max(1))).clamp(4, 256)
}

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
    /// L-BFGS iterations of the first candidate (from zero) or of the only fit.
    pub max_iter: usize,
    /// L-BFGS iterations of each later candidate (from the previous solution) and of
    /// the refit (from the chosen one).
    pub warm_iter: usize,
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
    /// L-BFGS iterations of the path and the refit together.
    pub iterations: usize,
}

/// Loss and gradient at `theta = [W (row-major, classes x d), b]`, mean over the rows
/// of `x` plus `l2/2·|W|²`. Computed in `F`; `F = f64` is for the gradient check.
pub fn objective<F: Products>(
    loss: Loss,
    x: ArrayView2<f32>,
    y: &[u32],
    classes: usize,
    l2: f64,
    theta: &[f64],
) -> (f64, Vec<f64>) {
    let (n, d) = x.dim();
    // Classes padded with zero weights to a multiple of the kernels' group: the padded
    // scores are exactly zero and add nothing to the gradient.
    let cp = classes.div_ceil(GROUP) * GROUP;
    let w = Array2::from_shape_fn((cp, d), |(c, j)| {
        if c < classes {
            F::from_f64(theta[c * d + j])
        } else {
            F::zero()
        }
    });
    let b = Array1::from_shape_fn(cp, |c| {
        if c < classes {
            F::from_f64(theta[classes * d + c])
        } else {
            F::zero()
        }
    });
    let sub = sub_rows(d);
    let blocks: Vec<(f64, Array2<F>, Array1<F>)> = (0..n.div_ceil(BLOCK))
        .into_par_iter()
        .map(|k| {
            let (lo, hi) = (k * BLOCK, ((k + 1) * BLOCK).min(n));
            let mut sum = 0.0;
            let mut gw = Array2::<F>::zeros((cp, d));
            let mut gb = Array1::<F>::zeros(cp);
            let mut sc = Array2::<F>::zeros((sub, cp));
            // Sub-blocks small enough to stay in cache between the two products, so
            // the features are read from memory once per evaluation, not twice.
            for at in (lo..hi).step_by(sub) {
                let top = (at + sub).min(hi);
                let xb = F::cast_rows(x.slice(s![at..top, ..]));
                let mut sc = sc.slice_mut(s![..top - at, ..]);
                F::scores(&xb.view(), &w.view(), &mut sc);
                sc += &b.view().insert_axis(Axis(0));
                for (r, mut row) in sc.axis_iter_mut(Axis(0)).enumerate() {
                    let row = &mut row.as_slice_mut().expect("row")[..classes];
                    sum += dscores(loss, row, y[at + r] as usize);
                }
                F::add_gradient(&sc.view(), &xb.view(), &mut gw);
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
        for (gi, v) in g.iter_mut().zip(gw.iter().take(classes * d)) {
            *gi += v.as_f64();
        }
        for (gi, v) in g[classes * d..].iter_mut().zip(gb.iter().take(classes)) {
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

/// The two products of the objective for a sub-block of rows. The classifier's
/// products are skinny (ten classes against thousands of features): a general matrix
/// product copies the whole sub-block into its packed layout for each of them, which
/// cost more than the arithmetic. The f32 kernels read the rows in place instead.
pub trait Products: Real {
    /// `out = x·wᵀ` (rows x classes).
    fn scores(x: &ArrayView2<Self>, w: &ArrayView2<Self>, out: &mut ArrayViewMut2<Self>);
    /// `gw += dsᵀ·x` (classes x features).
    fn add_gradient(ds: &ArrayView2<Self>, x: &ArrayView2<Self>, gw: &mut Array2<Self>);
}

impl Products for f64 {
    fn scores(x: &ArrayView2<f64>, w: &ArrayView2<f64>, out: &mut ArrayViewMut2<f64>) {
        ndarray::linalg::general_mat_mul(1.0, x, &w.t(), 0.0, out);
    }
    fn add_gradient(ds: &ArrayView2<f64>, x: &ArrayView2<f64>, gw: &mut Array2<f64>) {
        ndarray::linalg::general_mat_mul(1.0, &ds.t(), x, 1.0, gw);
    }
}

/// Classes handled together by the f32 kernels: five accumulators of eight lanes stay
/// in registers beside the loads (ten spill). [`objective`] pads the classes to a
/// multiple of it with zero weights.
const GROUP: usize = 5;

impl Products for f32 {
    fn scores(x: &ArrayView2<f32>, w: &ArrayView2<f32>, out: &mut ArrayViewMut2<f32>) {
        scores_f32(
            x.as_slice().expect("standard layout"),
            w.as_slice().expect("standard layout"),
            x.ncols(),
            out.as_slice_mut().expect("standard layout"),
        )
    }

    fn add_gradient(ds: &ArrayView2<f32>, x: &ArrayView2<f32>, gw: &mut Array2<f32>) {
        add_gradient_f32(
            ds.as_slice().expect("standard layout"),
            ds.ncols(),
            x.as_slice().expect("standard layout"),
            x.ncols(),
            gw.as_slice_mut().expect("standard layout"),
        )
    }
}

/// Features per column chunk of the scores: five weight rows of it (10 KiB) stay in the
/// L1 cache while every row of a sub-block passes over them.
const CHUNK: usize = 512;

/// `out = x·wᵀ` for row-major `x` (rows x d) and `w` (a multiple of [`GROUP`] classes x
/// d), chunk by chunk of [`CHUNK`] features so that the weights are read from L1, two
/// rows at a time so that each weight load serves two rows. The compiler's vectoriser
/// shuffles interleaved dot products into narrow registers, so the AVX2 copy is written
/// with intrinsics; both copies do the same fused multiply-adds per lane in the same
/// order, so they agree exactly.
fn scores_f32(x: &[f32], w: &[f32], d: usize, out: &mut [f32]) {
    let classes = w.len() / d.max(1);
    let rows = x.len() / d.max(1);
    out.fill(0.0);
    let n8 = d / 8 * 8;
    #[cfg(target_arch = "x86_64")]
    let fast = simd::has_avx2();
    for j0 in (0..n8).step_by(CHUNK) {
        let j1 = (j0 + CHUNK).min(n8);
        for c0 in (0..classes).step_by(GROUP) {
            let wg = &w[c0 * d..(c0 + GROUP) * d];
            let mut r = 0;
            while r < rows {
                let pair = r + 1 < rows;
                let x0 = &x[r * d..(r + 1) * d];
                let x1 = if pair {
                    &x[(r + 1) * d..(r + 2) * d]
                } else {
                    x0
                };
                #[cfg(target_arch = "x86_64")]
                let (s0, s1) = if fast {
                    // SAFETY: the features were detected on this processor.
                    unsafe { dots5x2_avx2(x0, x1, wg, d, j0, j1) }
                } else {
                    (dots5(x0, wg, d, j0, j1), dots5(x1, wg, d, j0, j1))
                };
                #[cfg(not(target_arch = "x86_64"))]
                let (s0, s1) = (dots5(x0, wg, d, j0, j1), dots5(x1, wg, d, j0, j1));
                for (o, v) in out[r * classes + c0..][..GROUP].iter_mut().zip(s0) {
                    *o += v;
                }
                if pair {
                    for (o, v) in out[(r + 1) * classes + c0..][..GROUP].iter_mut().zip(s1) {
                        *o += v;
                    }
                }
                r += 2;
            }
        }
    }
    // Features past the last multiple of eight.
    for (xr, o) in x.chunks_exact(d).zip(out.chunks_exact_mut(classes)) {
        for (c, oc) in o.iter_mut().enumerate() {
            for j in n8..d {
                *oc = xr[j].mul_add(w[c * d + j], *oc);
            }
        }
    }
}

/// Dot products of `x[j0..j1]` with the same columns of the five rows of `w` (rows `d`
/// wide), eight lanes at a time with fused multiply-adds; lanes summed in order.
fn dots5(x: &[f32], w: &[f32], d: usize, j0: usize, j1: usize) -> [f32; GROUP] {
    let mut a = [[0f32; 8]; GROUP];
    for j in (j0..j1).step_by(8) {
        for (k, acc) in a.iter_mut().enumerate() {
            for l in 0..8 {
                acc[l] = x[j + l].mul_add(w[k * d + j + l], acc[l]);
            }
        }
    }
    a.map(|acc| acc.iter().sum::<f32>())
}

/// [`dots5`] for two rows at once, with AVX2 + FMA intrinsics.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dots5x2_avx2(
    x0: &[f32],
    x1: &[f32],
    w: &[f32],
    d: usize,
    j0: usize,
    j1: usize,
) -> ([f32; GROUP], [f32; GROUP]) {
    use std::arch::x86_64::*;
    assert!(j1 <= d && x0.len() == d && x1.len() == d && w.len() == GROUP * d);
    let (p0, p1, wp) = (x0.as_ptr(), x1.as_ptr(), w.as_ptr());
    let mut a = [_mm256_setzero_ps(); GROUP];
    let mut b = [_mm256_setzero_ps(); GROUP];
    let mut j = j0;
    while j + 8 <= j1 {
        // SAFETY: j + 8 <= j1 <= d, and row k of w spans k·d..(k+1)·d.
        unsafe {
            let u = _mm256_loadu_ps(p0.add(j));
            let v = _mm256_loadu_ps(p1.add(j));
            for k in 0..GROUP {
                let wk = _mm256_loadu_ps(wp.add(k * d + j));
                a[k] = _mm256_fmadd_ps(u, wk, a[k]);
                b[k] = _mm256_fmadd_ps(v, wk, b[k]);
            }
        }
        j += 8;
    }
    let sum = |r: __m256| {
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` holds eight f32.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), r) };
        lanes.iter().sum::<f32>()
    };
    (a.map(sum), b.map(sum))
}

/// `gw += dsᵀ·x` for row-major `ds` (rows x classes), `x` (rows x d), `gw` (classes x
/// d), classes a multiple of [`GROUP`]: for each strip of 16 features, five classes'
/// gradient stays in registers while every row of the sub-block (in L2 after the
/// scores) adds to it. Both copies do the same fused multiply-adds in the same order.
fn add_gradient_f32(ds: &[f32], classes: usize, x: &[f32], d: usize, gw: &mut [f32]) {
    let n16 = d / 16 * 16;
    for c0 in (0..classes).step_by(GROUP) {
        let g = &mut gw[c0 * d..(c0 + GROUP) * d];
        #[cfg(target_arch = "x86_64")]
        if simd::has_avx2() {
            // SAFETY: the features were detected on this processor.
            unsafe { axpys5_avx2(ds, classes, c0, x, d, n16, g) };
        } else {
            axpys5(ds, classes, c0, x, d, 0..n16, g);
        }
        #[cfg(not(target_arch = "x86_64"))]
        axpys5(ds, classes, c0, x, d, 0..n16, g);
        axpys5(ds, classes, c0, x, d, n16..d, g);
    }
}

/// `g[k][j] += Σ_r ds[r][c0 + k]·x[r][j]` for the five rows of `g` and `j` in `cols`.
fn axpys5(
    ds: &[f32],
    classes: usize,
    c0: usize,
    x: &[f32],
    d: usize,
    cols: std::ops::Range<usize>,
    g: &mut [f32],
) {
    for j in cols {
        for k in 0..GROUP {
            let mut v = g[k * d + j];
            for (xr, dr) in x.chunks_exact(d).zip(ds.chunks_exact(classes)) {
                v = dr[c0 + k].mul_add(xr[j], v);
            }
            g[k * d + j] = v;
        }
    }
}

/// [`axpys5`] over the features `0..n16`, sixteen at a time, with AVX2 + FMA intrinsics.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn axpys5_avx2(
    ds: &[f32],
    classes: usize,
    c0: usize,
    x: &[f32],
    d: usize,
    n16: usize,
    g: &mut [f32],
) {
    use std::arch::x86_64::*;
    let rows = x.len() / d;
    assert!(n16 <= d && g.len() == GROUP * d && ds.len() >= rows * classes);
    assert!(c0 + GROUP <= classes);
    let (xp, dp, gp) = (x.as_ptr(), ds.as_ptr(), g.as_mut_ptr());
    let mut j = 0;
    while j < n16 {
        // SAFETY: j + 16 <= n16 <= d; rows of x are d wide, of ds `classes` wide, and
        // row k of g spans k·d..(k+1)·d.
        unsafe {
            let mut lo = [_mm256_setzero_ps(); GROUP];
            let mut hi = [_mm256_setzero_ps(); GROUP];
            for k in 0..GROUP {
                lo[k] = _mm256_loadu_ps(gp.add(k * d + j));
                hi[k] = _mm256_loadu_ps(gp.add(k * d + j + 8));
            }
            for r in 0..rows {
                let u = _mm256_loadu_ps(xp.add(r * d + j));
                let v = _mm256_loadu_ps(xp.add(r * d + j + 8));
                for k in 0..GROUP {
                    let a = _mm256_broadcast_ss(&*dp.add(r * classes + c0 + k));
                    lo[k] = _mm256_fmadd_ps(a, u, lo[k]);
                    hi[k] = _mm256_fmadd_ps(a, v, hi[k]);
                }
            }
            for k in 0..GROUP {
                _mm256_storeu_ps(gp.add(k * d + j), lo[k]);
                _mm256_storeu_ps(gp.add(k * d + j + 8), hi[k]);
            }
        }
        j += 16;
    }
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
) -> Result<(Vec<f64>, usize)> {
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
    Ok((st.x, st.iter))
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
    let mut iterations = 0;
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
            for (k, &l2) in l2s.iter().enumerate() {
                let iters = if k == 0 { p.max_iter } else { p.warm_iter };
                let (t, done) = train(loss, xa, ya, classes, l2, theta, iters)?;
                theta = t;
                iterations += done;
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
    // The refit starts from the chosen candidate's solution, which is close to the
    // solution on all rows, so it needs only the warm-start budget.
    let iters = if validation.is_empty() {
        p.max_iter
    } else {
        p.warm_iter
    };
    let (theta, done) = train(loss, x.view(), y, classes, best.0, best.2, iters)?;
    iterations += done;
    Ok(Fitted {
        model: LinearModel::from_theta(&theta, classes, d),
        l2: best.0,
        validation,
        iterations,
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

    /// The f32 kernels (AVX2 where the processor has it) against plain f64 products,
    /// and against their portable copies bit for bit, on widths that leave remainders
    /// past the lanes and the chunks.
    #[test]
    fn f32_kernels_match_plain_products_and_their_portable_copies() {
        let (rows, d, classes) = (7, 2 * CHUNK + 37, 2 * GROUP);
        let v = |i: usize| ((i * 7919) % 1009) as f32 / 1009.0 - 0.5;
        let x: Vec<f32> = (0..rows * d).map(v).collect();
        let w: Vec<f32> = (0..classes * d).map(|i| v(i + 3)).collect();
        let ds: Vec<f32> = (0..rows * classes).map(|i| v(i + 11)).collect();
        let mut sc = vec![0f32; rows * classes];
        scores_f32(&x, &w, d, &mut sc);
        let mut gw: Vec<f32> = (0..classes * d).map(|i| v(i + 5)).collect();
        let g0 = gw.clone();
        add_gradient_f32(&ds, classes, &x, d, &mut gw);
        for r in 0..rows {
            for c in 0..classes {
                let exact: f64 = (0..d)
                    .map(|j| x[r * d + j] as f64 * w[c * d + j] as f64)
                    .sum();
                assert!(
                    (sc[r * classes + c] as f64 - exact).abs() < 1e-4,
                    "score {r} {c}"
                );
            }
        }
        for c in 0..classes {
            for j in 0..d {
                let exact = g0[c * d + j] as f64
                    + (0..rows)
                        .map(|r| ds[r * classes + c] as f64 * x[r * d + j] as f64)
                        .sum::<f64>();
                assert!(
                    (gw[c * d + j] as f64 - exact).abs() < 1e-5,
                    "gradient {c} {j}"
                );
            }
        }
        // The portable copies, in the same order.
        let n8 = d / 8 * 8;
        for r in 0..rows {
            for c0 in (0..classes).step_by(GROUP) {
                let mut s = [0f32; GROUP];
                for j0 in (0..n8).step_by(CHUNK) {
                    let part = dots5(
                        &x[r * d..(r + 1) * d],
                        &w[c0 * d..(c0 + GROUP) * d],
                        d,
                        j0,
                        (j0 + CHUNK).min(n8),
                    );
                    s.iter_mut().zip(part).for_each(|(a, b)| *a += b);
                }
                for (k, a) in s.iter_mut().enumerate() {
                    for j in n8..d {
                        *a = x[r * d + j].mul_add(w[(c0 + k) * d + j], *a);
                    }
                }
                assert_eq!(&sc[r * classes + c0..][..GROUP], &s[..]);
            }
        }
        let mut portable = g0.clone();
        for c0 in (0..classes).step_by(GROUP) {
            axpys5(
                &ds,
                classes,
                c0,
                &x,
                d,
                0..d,
                &mut portable[c0 * d..(c0 + GROUP) * d],
            );
        }
        assert_eq!(gw, portable);
    }

    /// Seven classes pad to ten in the f32 kernels; several sub-blocks of rows.
    #[test]
    fn f32_objective_with_padded_classes_matches_f64() {
        let (d, c) = (37, 7);
        let (x, y) = data(700, d, c, 3);
        assert!(700 > sub_rows(d));
        let theta: Vec<f64> = (0..c * (d + 1))
            .map(|i| ((i * 37) % 19) as f64 * 0.01 - 0.09)
            .collect();
        for loss in [Loss::Softmax, Loss::SquaredHinge] {
            let (f32v, g32) = objective::<f32>(loss, x.view(), &y, c, 1e-2, &theta);
            let (f64v, g64) = objective::<f64>(loss, x.view(), &y, c, 1e-2, &theta);
            assert!(
                (f32v - f64v).abs() < 1e-5 * f64v.abs(),
                "{loss:?}: {f32v} vs {f64v}"
            );
            assert_eq!(g32.len(), g64.len());
            let num: f64 = g32.iter().zip(&g64).map(|(a, b)| (a - b).powi(2)).sum();
            let den: f64 = g64.iter().map(|b| b * b).sum();
            assert!((num / den).sqrt() < 1e-5, "{loss:?}: gradient");
        }
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
                warm_iter: 2,
                seed: 1,
            };
            let f = fit(loss, &mut x, &mut y, 5, &p).unwrap();
            assert_eq!(f.validation.len(), 2);
            // The second candidate and the refit start warm and stop at `warm_iter`
            // (the first, from zero, needs more than that).
            assert!(
                f.iterations > 2 * 2 && f.iterations <= 100 + 2 * 2,
                "{}",
                f.iterations
            );
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
