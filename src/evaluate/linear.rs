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
//! solution for `warm_iter`; each stage can be saved as it ends and read back
//! ([`crate::evaluate::l2path`]). On wide CIFAR-10 features the path's accuracy follows the
//! iterations along the whole path (README, "Classifier path"), so the default keeps
//! every candidate's budget and `warm_iter` is the knob that trades accuracy for time.
//!
//! The rows come from a matrix in memory or straight from a feature store on disk
//! ([`Features`]), standardised on the fly a cache-sized sub-block at a time, with the
//! store's pages handed back as soon as they are read: the resident set does not grow
//! with the features, so widths whose matrix is larger than memory fit (the page cache
//! keeps the file between evaluations when it can). Memory and store give identical
//! results, since both run the same blocks in the same order.
//!
//! The f32 kernels use fused multiply-adds (`f32::mul_add`): AVX2 + FMA intrinsics
//! where the processor has them, and portable copies with the same results elsewhere,
//! which are slow on processors without FMA (a software `fmaf` per product).

use ndarray::{s, Array1, Array2, ArrayView2, ArrayViewMut2, Axis};
use rand::seq::SliceRandom;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::store::{Row, Span, Store};
use crate::error::{Error, Result};
use crate::evaluate::l2path::{PathCheckpoints, Solution};
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

/// Feature rows, raw (unstandardised), with their labels kept apart.
#[derive(Clone, Copy)]
pub enum Features<'a> {
    /// A matrix in memory.
    Memory(ArrayView2<'a, f32>),
    /// A feature store, read through its memory map a block at a time.
    Stored(&'a Store),
}

/// Rows `lo..hi` of [`Features`], to read by index.
enum Block<'a> {
    Memory(ArrayView2<'a, f32>),
    Stored(Span<'a>),
}

impl Block<'_> {
    fn row(&self, i: usize) -> Row<'_> {
        match self {
            Block::Memory(x) => Row::F32(
                x.row(i)
                    .to_slice()
                    .expect("rows of a standard-layout matrix are contiguous"),
            ),
            Block::Stored(s) => s.row(i),
        }
    }

    fn release(&self, lo: usize, hi: usize) {
        if let Block::Stored(s) = self {
            s.release(lo, hi)
        }
    }
}

impl<'a> Features<'a> {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        match self {
            Features::Memory(x) => x.nrows(),
            Features::Stored(s) => s.rows(),
        }
    }

    /// Features per row.
    pub fn dim(&self) -> usize {
        match self {
            Features::Memory(x) => x.ncols(),
            Features::Stored(s) => s.dim(),
        }
    }

    /// Where the rows come from, for messages.
    pub fn origin(&self) -> String {
        match self {
            Features::Memory(_) => "features in memory".into(),
            Features::Stored(s) => s.path().display().to_string(),
        }
    }

    fn block(&self, lo: usize, hi: usize) -> Result<Block<'a>> {
        Ok(match *self {
            Features::Memory(x) => {
                if !x.is_standard_layout() {
                    return Err(Error::Classifier(
                        "feature matrix is not in row-major layout".into(),
                    ));
                }
                Block::Memory(x)
            }
            Features::Stored(s) => Block::Stored(s.span(lo, hi)?),
        })
    }

    /// Calls `f` on every row of `rows` (ascending indices) in fixed blocks, in
    /// parallel, with sub-blocks of standardised rows gathered into a buffer; returns
    /// the blocks' results in order, so sums over them do not depend on the threads.
    fn map_blocks<T, F, I>(
        &self,
        rows: &[usize],
        std: &Standardiser,
        f: F,
        init: I,
    ) -> Result<Vec<T>>
    where
        T: Send,
        F: Fn(&[usize], ArrayView2<f32>, &mut T) + Sync,
        I: Fn() -> T + Sync,
    {
        let d = self.dim();
        let sub = sub_rows(d);
        rows.par_chunks(BLOCK)
            .map(|chunk| {
                let block = self.block(chunk[0], chunk[chunk.len() - 1] + 1)?;
                let mut acc = init();
                let mut buf = Array2::<f32>::zeros((sub.min(chunk.len()), d));
                for part in chunk.chunks(sub) {
                    let mut xb = buf.slice_mut(s![..part.len(), ..]);
                    for (&i, mut dst) in part.iter().zip(xb.rows_mut()) {
                        std.apply_row(block.row(i), dst.as_slice_mut().expect("row"));
                    }
                    block.release(part[0], part[part.len() - 1] + 1);
                    f(part, xb.view(), &mut acc);
                }
                // Reading a page maps its neighbours too (the kernel's fault-around),
                // part of them rows released just before: let the block's go again.
                block.release(chunk[0], chunk[chunk.len() - 1] + 1);
                Ok(acc)
            })
            .collect()
    }
}

/// How features are scaled before a linear classifier or a forest sees them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scaling {
    /// Each feature centred and divided by its own deviation (with the variance floor):
    /// every feature weighs the same under the L2 penalty.
    #[default]
    Feature,
    /// Each feature centred, all divided by one deviation (the root of the mean floored
    /// variance): features keep their relative scales, so strong ones cost less L2.
    Global,
    /// Features as encoded, neither centred nor scaled.
    None,
}

/// Shift and scale per column, fitted on training features.
#[derive(Clone, Debug)]
pub struct Standardiser {
    mean: Vec<f32>,
    inv_std: Vec<f32>,
}

impl Standardiser {
    /// Leaves rows of width `d` as they are.
    pub fn identity(d: usize) -> Self {
        Standardiser {
            mean: vec![0.0; d],
            inv_std: vec![1.0; d],
        }
    }

    /// A hash of the shifts and scales: two standardisers with the same fingerprint
    /// standardise alike.
    pub fn fingerprint(&self) -> String {
        let mut h = crc32fast::Hasher::new();
        for v in self.mean.iter().chain(&self.inv_std) {
            h.update(&v.to_le_bytes());
        }
        format!("{:08x}-{}", h.finalize(), self.mean.len())
    }

    /// Fits on every row of `x` in one streamed pass, scaled as `scaling` says. Each
    /// variance gets `floor` times the mean variance added, so that near-constant
    /// columns (a rarely active unit) are not blown up into noise. Non-finite values
    /// are an error naming the source, whatever the scaling.
    pub fn fit(x: Features, floor: f64, scaling: Scaling) -> Result<Self> {
        let (n, d) = (x.rows(), x.dim());
        if n == 0 {
            return Err(Error::Classifier(format!("{} has no rows", x.origin())));
        }
        // Sums of deviations from the first row, so that columns with a large mean
        // lose no precision to cancellation.
        let shift: Vec<f32> = x.block(0, 1)?.row(0).to_vec();
        let all: Vec<usize> = (0..n).collect();
        let sums = x.map_blocks(
            &all,
            &Standardiser::identity(d),
            |_, xb: ArrayView2<f32>, (s1, s2, bad): &mut (Vec<f64>, Vec<f64>, bool)| {
                for row in xb.rows() {
                    for (j, (&v, &k)) in row.iter().zip(&shift).enumerate() {
                        *bad |= !v.is_finite();
                        let c = f64::from(v) - f64::from(k);
                        s1[j] += c;
                        s2[j] += c * c;
                    }
                }
            },
            || (vec![0.0; d], vec![0.0; d], false),
        )?;
        let (mut s1, mut s2) = (vec![0.0; d], vec![0.0; d]);
        for (a, b, bad) in sums {
            if bad {
                return Err(Error::Classifier(format!(
                    "{}: features contain NaN or Inf",
                    x.origin()
                )));
            }
            s1.iter_mut().zip(a).for_each(|(s, v)| *s += v);
            s2.iter_mut().zip(b).for_each(|(s, v)| *s += v);
        }
        let nf = n as f64;
        let var: Vec<f64> = s1
            .iter()
            .zip(&s2)
            .map(|(a, b)| (b / nf - (a / nf).powi(2)).max(0.0))
            .collect();
        let constant = var.iter().filter(|&&v| v == 0.0).count();
        if constant == d {
            return Err(Error::Classifier(format!(
                "{}: all {d} features have one value on every one of its {n} rows, so they \
                 say nothing about the images (a code layer whose responses all stay \
                 under the soft threshold gives zeros everywhere)",
                x.origin()
            )));
        }
        if constant > 0 {
            crate::progress::say(format!(
                "classify: {constant} of {d} features have one value on every row of {}",
                x.origin()
            ));
        }
        let mean_var = var.iter().sum::<f64>() / d.max(1) as f64;
        let add = floor * mean_var + 1e-12;
        let mean = s1
            .iter()
            .zip(&shift)
            .map(|(a, &k)| (a / nf + f64::from(k)) as f32)
            .collect();
        Ok(match scaling {
            Scaling::Feature => Standardiser {
                mean,
                inv_std: var
                    .iter()
                    .map(|v| (1.0 / (v + add).sqrt()) as f32)
                    .collect(),
            },
            Scaling::Global => Standardiser {
                mean,
                inv_std: vec![(1.0 / (mean_var + add).sqrt()) as f32; d],
            },
            Scaling::None => Standardiser::identity(d),
        })
    }

    fn apply_row(&self, src: Row, dst: &mut [f32]) {
        match src {
            Row::F32(src) => {
                for (((o, &v), &m), &s) in
                    dst.iter_mut().zip(src).zip(&self.mean).zip(&self.inv_std)
                {
                    *o = (v - m) * s;
                }
            }
            Row::F16(_) => {
                src.copy_to(dst);
                for ((o, &m), &s) in dst.iter_mut().zip(&self.mean).zip(&self.inv_std) {
                    *o = (*o - m) * s;
                }
            }
        }
    }

    /// The standardised rows of `x`, in memory (for classifiers that need a matrix).
    pub fn matrix(&self, x: Features) -> Result<Array2<f32>> {
        let (n, d) = (x.rows(), x.dim());
        let mut out = Array2::<f32>::zeros((n, d));
        for lo in (0..n).step_by(BLOCK) {
            let hi = (lo + BLOCK).min(n);
            let block = x.block(lo, hi)?;
            for i in lo..hi {
                let mut dst = out.row_mut(i);
                self.apply_row(block.row(i), dst.as_slice_mut().expect("row"));
            }
            block.release(lo, hi);
        }
        if out.iter().any(|v| !v.is_finite()) {
            return Err(Error::Classifier(format!(
                "{}: features contain NaN or Inf",
                x.origin()
            )));
        }
        Ok(out)
    }
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

/// Peak heap of fitting `rows` rows of `width` features into `classes`: L-BFGS history
/// and iterates, and every block's partial gradient (or column sums) before they are
/// added in order. The rows themselves are read a sub-block at a time.
pub fn fit_bytes(rows: u64, width: u64, classes: u64) -> u64 {
    let n_params = classes * (width + 1);
    let history = LbfgsParams::default().memory as u64;
    let threads = rayon::current_num_threads().max(1) as u64;
    let padded = classes.div_ceil(GROUP as u64) * GROUP as u64;
    let blocks = rows.div_ceil(BLOCK as u64);
    let partials = blocks * (padded * width * 4).max(2 * width * 8);
    let sub = sub_rows(width as usize) as u64;
    let buffers = threads * (sub * width * 4 + padded * width * 4);
    // Pages of released rows that fault-around maps again, up to 64 KiB per sub-block,
    // until the block ends.
    let fault_around = threads * (BLOCK as u64).div_ceil(sub) * (64 << 10);
    (2 * history + 8) * n_params * 8 + partials + buffers + fault_around
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
    /// L-BFGS iterations of the path and the refit together (those of stages read
    /// back included).
    pub iterations: usize,
    /// Stages of the path (candidates and refit) read back from their checkpoints.
    pub reused: usize,
    /// Validation accuracy of the chosen candidate (none without validation).
    pub chosen_validation: Option<f64>,
}

/// A block's loss sum, gradient (weights, biases) and score scratch.
type Partial<F> = (f64, Array2<F>, Array1<F>, Array2<F>);

/// Loss and gradient at `theta = [W (row-major, classes x d), b]`, mean over the rows
/// `rows` (ascending) of `x`, standardised by `std`, plus `l2/2·|W|²`; `y` holds the
/// labels of all rows of `x`. Computed in `F`; `F = f64` is for the gradient check.
#[allow(clippy::too_many_arguments)]
pub fn objective<F: Products>(
    loss: Loss,
    x: Features,
    rows: &[usize],
    y: &[u32],
    std: &Standardiser,
    classes: usize,
    l2: f64,
    theta: &[f64],
) -> Result<(f64, Vec<f64>)> {
    let (n, d) = (rows.len(), x.dim());
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
    // Sub-blocks small enough to stay in cache between the two products, so the
    // features are read from memory once per evaluation, not twice.
    let blocks = x.map_blocks(
        rows,
        std,
        |part: &[usize], xb: ArrayView2<f32>, (sum, gw, gb, scratch): &mut Partial<F>| {
            let xb = F::cast_rows(xb);
            let mut sc = scratch.slice_mut(s![..part.len(), ..]);
            F::scores(&xb.view(), &w.view(), &mut sc);
            sc += &b.view().insert_axis(Axis(0));
            for (r, mut row) in sc.axis_iter_mut(Axis(0)).enumerate() {
                let row = &mut row.as_slice_mut().expect("row")[..classes];
                *sum += dscores(loss, row, y[part[r]] as usize);
            }
            F::add_gradient(&sc.view(), &xb.view(), gw);
            *gb += &sc.sum_axis(Axis(0));
        },
        || {
            (
                0.0,
                Array2::<F>::zeros((cp, d)),
                Array1::<F>::zeros(cp),
                Array2::<F>::zeros((sub, cp)),
            )
        },
    )?;
    let inv_n = 1.0 / n.max(1) as f64;
    let mut f = 0.0;
    let mut g = vec![0.0; theta.len()];
    for (sum, gw, gb, _) in &blocks {
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
    Ok((f, g))
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
    /// Predicted class of the rows `rows` (ascending) of `x`, standardised by `std`
    /// (the standardiser the model was fitted with): one per row, or, with `images`
    /// (the image number of every row of `x`), one per run of consecutive rows of the
    /// same image (an image and its mirror), from the sum of their scores.
    pub fn predict(
        &self,
        x: Features,
        rows: &[usize],
        images: Option<&[u32]>,
        std: &Standardiser,
    ) -> Result<Vec<u32>> {
        if x.dim() != self.w.ncols() {
            return Err(Error::Classifier(format!(
                "{} has {} features, the classifier {}",
                x.origin(),
                x.dim(),
                self.w.ncols()
            )));
        }
        let k = self.w.nrows();
        let parts = x.map_blocks(
            rows,
            std,
            |_, xb: ArrayView2<f32>, (scores, bad): &mut (Vec<f32>, bool)| {
                *bad |= xb.iter().any(|v| !v.is_finite());
                let sc = xb.dot(&self.w.t()) + self.b.view().insert_axis(Axis(0));
                scores.extend(sc.iter());
            },
            || (Vec::new(), false),
        )?;
        let mut scores = Vec::with_capacity(rows.len() * k);
        for (p, bad) in parts {
            if bad {
                return Err(Error::Classifier(format!(
                    "{}: features contain NaN or Inf",
                    x.origin()
                )));
            }
            scores.extend(p);
        }
        Ok(image_runs(rows, images)
            .into_iter()
            .map(|run| {
                let mut sum = vec![0f32; k];
                for r in run {
                    sum.iter_mut()
                        .zip(&scores[r * k..(r + 1) * k])
                        .for_each(|(a, &v)| *a += v);
                }
                argmax(&sum)
            })
            .collect())
    }

    /// Predicted class of every row of `x`, or of every image (see [`LinearModel::predict`]).
    pub fn predict_all(
        &self,
        x: Features,
        images: Option<&[u32]>,
        std: &Standardiser,
    ) -> Result<Vec<u32>> {
        let all: Vec<usize> = (0..x.rows()).collect();
        self.predict(x, &all, images, std)
    }

    fn from_theta(theta: &[f64], classes: usize, d: usize) -> Self {
        LinearModel {
            w: Array2::from_shape_fn((classes, d), |(c, j)| theta[c * d + j] as f32),
            b: Array1::from_shape_fn(classes, |c| theta[classes * d + c] as f32),
        }
    }
}

/// The index of the largest value (the first of equals).
fn argmax(v: &[f32]) -> u32 {
    v.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &x)| {
            if x > bv {
                (i, x)
            } else {
                (bi, bv)
            }
        })
        .0 as u32
}

/// Positions in `rows` grouped into runs of consecutive rows of one image (`images`
/// numbers the image of every row); without `images`, one run per row.
pub fn image_runs(rows: &[usize], images: Option<&[u32]>) -> Vec<std::ops::Range<usize>> {
    let mut out: Vec<std::ops::Range<usize>> = Vec::new();
    for (k, &r) in rows.iter().enumerate() {
        let same = match (images, out.last()) {
            (Some(g), Some(last)) => g[rows[last.start]] == g[r],
            _ => false,
        };
        match out.last_mut() {
            Some(last) if same => last.end = k + 1,
            _ => out.push(k..k + 1),
        }
    }
    out
}

/// What every L-BFGS fit along a classifier's path shares.
/// The classifier's L-BFGS settings, for `max_iter` iterations.
fn optimiser(max_iter: usize) -> LbfgsParams {
    LbfgsParams {
        max_iter,
        gtol: 1e-7,
        ftol: 1e-10,
        ..LbfgsParams::default()
    }
}

struct Split<'a, 'b> {
    x: Features<'a>,
    y: &'b [u32],
    std: &'b Standardiser,
    classes: usize,
}

impl Split<'_, '_> {
    fn train(
        &self,
        loss: Loss,
        rows: &[usize],
        l2: f64,
        theta: Vec<f64>,
        max_iter: usize,
    ) -> Result<(Vec<f64>, usize)> {
        let p = optimiser(max_iter);
        let mut fg = |t: &[f64]| -> Result<(f64, Vec<f64>)> {
            let (f, g) =
                objective::<f32>(loss, self.x, rows, self.y, self.std, self.classes, l2, t)?;
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
}

/// The (fit, validation) rows of a held-out split of `n` rows, each ascending: a
/// seeded `fraction` of the images (`images` numbers each row's image; without it
/// every row is its own image), all rows of an image on one side. `None` when the
/// split would leave either side empty.
fn holdout(
    n: usize,
    images: Option<&[u32]>,
    fraction: f64,
    seed: u64,
) -> Option<(Vec<usize>, Vec<usize>)> {
    let mut ids: Vec<u32> = match images {
        Some(g) => g.to_vec(),
        None => (0..n as u32).collect(),
    };
    ids.sort_unstable();
    ids.dedup();
    let m = ids.len();
    let held = ((m as f64) * fraction).round() as usize;
    if held == 0 || held >= m {
        return None;
    }
    ids.shuffle(&mut crate::rng::stream(
        seed,
        crate::rng::Stream::Classify,
        1,
    ));
    let mut out = ids[m - held..].to_vec();
    out.sort_unstable();
    let is_held = |row: usize| {
        let id = images.map_or(row as u32, |g| g[row]);
        out.binary_search(&id).is_ok()
    };
    let (val, fit): (Vec<usize>, Vec<usize>) = (0..n).partition(|&r| is_held(r));
    Some((fit, val))
}

/// Fits a classifier on the rows of `x` (raw features, standardised by `std` as they
/// are read) with labels `y`, choosing the L2 weight on a held-out split: a seeded
/// choice of rows, or of images where `images` numbers the image of each row (rows of
/// one image, such as an image and its mirror, are held out together). With `saved`,
/// every stage of the path is saved as it ends, and a stage saved before is read back
/// instead of trained.
#[allow(clippy::too_many_arguments)]
pub fn fit(
    loss: Loss,
    x: Features,
    y: &[u32],
    images: Option<&[u32]>,
    std: &Standardiser,
    classes: usize,
    p: &LinearParams,
    saved: Option<&PathCheckpoints>,
) -> Result<Fitted> {
    let (n, d) = (x.rows(), x.dim());
    if n != y.len() || n == 0 {
        return Err(Error::Classifier(format!(
            "{}: {n} rows but {} labels",
            x.origin(),
            y.len()
        )));
    }
    if let Some(&bad) = y.iter().find(|&&c| c as usize >= classes) {
        return Err(Error::Classifier(format!(
            "{}: label {bad} is not below the {classes} classes",
            x.origin()
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
    let split = Split { x, y, std, classes };
    let params = classes * (d + 1);
    let zero = vec![0.0; params];
    let split_rows = if l2s.len() > 1 {
        holdout(n, images, p.validation, p.seed)
    } else {
        None
    };
    // What shapes every stage's solution besides its budgets and L2 values: the data
    // (the caller's identity of the features, the labels, the image numbers, the
    // standardiser), the split and the optimiser.
    let crc =
        |v: &[u32]| crc32fast::hash(&v.iter().flat_map(|c| c.to_le_bytes()).collect::<Vec<_>>());
    let mut settings = serde_json::json!({
        "loss": loss.name(), "rows": n, "dim": d, "classes": classes,
        "labels": crc(y), "images": images.map(crc), "standardiser": std.fingerprint(),
        "lbfgs": optimiser(0),
    });
    if split_rows.is_some() {
        settings["split"] = serde_json::json!([p.validation, p.seed]);
    }
    let mut stages = Stages {
        saved,
        settings,
        params,
        reused: 0,
        iterations: 0,
    };
    let mut validation = Vec::new();
    // (index in the grid, accuracy, solution) of the best candidate so far.
    let mut best = (0, f64::NEG_INFINITY, zero.clone());
    if let Some((fit_rows, val_rows)) = split_rows {
        let held = val_rows.len();
        let truth: Vec<u32> = image_runs(&val_rows, images)
            .into_iter()
            .map(|run| y[val_rows[run.start]])
            .collect();
        let mut theta = zero.clone();
        for (k, &l2) in l2s.iter().enumerate() {
            // A candidate depends on the first one's budget and, past it, on the warm
            // one; a change of `warm_iter` keeps the first.
            let budgets = match k {
                0 => serde_json::json!([p.max_iter]),
                _ => serde_json::json!([p.max_iter, p.warm_iter]),
            };
            let iters = if k == 0 { p.max_iter } else { p.warm_iter };
            let s = stages.run("candidate", budgets, &l2s[..=k], || {
                let (t, done) = split.train(loss, &fit_rows, l2, theta.clone(), iters)?;
                let m = LinearModel::from_theta(&t, classes, d);
                let pred = m.predict(x, &val_rows, images, std)?;
                let acc = crate::evaluate::metrics::score(&pred, &truth, classes).accuracy;
                Ok(Solution {
                    theta: t,
                    accuracy: acc,
                    iterations: done,
                })
            })?;
            crate::progress::say(format!(
                "classify: l2 {l2:.0e}: validation accuracy {:.4} ({} images, {held} rows)",
                s.accuracy,
                truth.len()
            ));
            validation.push((l2, s.accuracy));
            if s.accuracy > best.1 {
                best = (k, s.accuracy, s.theta.clone());
            }
            theta = s.theta;
        }
        // A choice at either end of the grid says the best weight may lie beyond it
        // (a split, and so this branch, exists only for two or more candidates).
        let end = match best.0 {
            0 => Some("largest"),
            k if k + 1 == l2s.len() => Some("smallest"),
            _ => None,
        };
        if let Some(end) = end {
            crate::progress::say(format!(
                "classify: the {end} L2 candidate, {:.0e}, won on validation: the best \
                 weight may lie beyond classify.l2; extend it (a saved path trains only \
                 the new candidates)",
                l2s[best.0]
            ));
        }
    }
    // The refit starts from the chosen candidate's solution, which is close to the
    // solution on all rows, so it needs only the warm-start budget. It follows the
    // path up to that candidate alone: a grid extended past the choice keeps it.
    let chosen = best.0;
    let (iters, budgets) = if validation.is_empty() {
        (p.max_iter, serde_json::json!([p.max_iter]))
    } else {
        (p.warm_iter, serde_json::json!([p.max_iter, p.warm_iter]))
    };
    let all: Vec<usize> = (0..n).collect();
    let s = stages.run("refit", budgets, &l2s[..=chosen], || {
        let (t, done) = split.train(loss, &all, l2s[chosen], best.2.clone(), iters)?;
        Ok(Solution {
            theta: t,
            accuracy: f64::NAN,
            iterations: done,
        })
    })?;
    Ok(Fitted {
        model: LinearModel::from_theta(&s.theta, classes, d),
        l2: l2s[chosen],
        chosen_validation: (!validation.is_empty()).then_some(best.1),
        validation,
        iterations: stages.iterations,
        reused: stages.reused,
    })
}

/// The stages of one fit's path, each read back from `saved` when it holds it, or
/// trained and then saved there.
struct Stages<'a> {
    saved: Option<&'a PathCheckpoints>,
    settings: serde_json::Value,
    params: usize,
    reused: usize,
    iterations: usize,
}

impl Stages<'_> {
    /// Stage `name` after the L2 values `l2s` (its own last), with iteration budgets
    /// `budgets`, read back or trained by `train`.
    fn run(
        &mut self,
        name: &str,
        budgets: serde_json::Value,
        l2s: &[f64],
        train: impl FnOnce() -> Result<Solution>,
    ) -> Result<Solution> {
        let Some(c) = self.saved else {
            let s = train()?;
            self.iterations += s.iterations;
            return Ok(s);
        };
        let mut fit = self.settings.clone();
        fit["budgets"] = budgets;
        let stage = c.stage(&fit, name, l2s);
        let s = match c.load(&stage, self.params) {
            Some((s, build)) => {
                self.reused += 1;
                crate::progress::say(format!(
                    "classify: {name} at l2 {:.0e}: read back from {} ({} iterations, \
                     trained by build {build})",
                    l2s[l2s.len() - 1],
                    c.file(&stage).display(),
                    s.iterations
                ));
                s
            }
            None => {
                let s = train()?;
                c.save(&stage, &s);
                crate::learn::checkpoint::crash_point("after-classify-stage");
                s
            }
        };
        self.iterations += s.iterations;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::store::{Kind, Precision};

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
            let (all, id) = ((0..700).collect::<Vec<_>>(), Standardiser::identity(d));
            let m = Features::Memory(x.view());
            let (f32v, g32) = objective::<f32>(loss, m, &all, &y, &id, c, 1e-2, &theta).unwrap();
            let (f64v, g64) = objective::<f64>(loss, m, &all, &y, &id, c, 1e-2, &theta).unwrap();
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
        // Every other row, standardised: the gradient is of the loss the fit minimises.
        let rows: Vec<usize> = (0..x.nrows()).step_by(2).collect();
        let m = Features::Memory(x.view());
        let std = Standardiser::fit(m, 0.01, Scaling::Feature).unwrap();
        for loss in [Loss::Softmax, Loss::SquaredHinge] {
            let obj = |t: &[f64]| objective::<f64>(loss, m, &rows, &y, &std, 4, 0.01, t).unwrap();
            let mut r = crate::rng::stream(3, crate::rng::Stream::Classify, 2);
            let theta: Vec<f64> = (0..4 * 8)
                .map(|_| 0.3 * crate::rng::normal(&mut r))
                .collect();
            let (_, g) = obj(&theta);
            let eps = 1e-5;
            let (mut num, mut den) = (0.0f64, 0.0f64);
            for i in 0..theta.len() {
                let mut t = theta.clone();
                t[i] += eps;
                let (fp, _) = obj(&t);
                t[i] -= 2.0 * eps;
                let (fm, _) = obj(&t);
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
        let (x, y) = data(1000, 20, 5, 1);
        let std = Standardiser::fit(Features::Memory(x.view()), 0.01, Scaling::Feature).unwrap();
        for loss in [Loss::Softmax, Loss::SquaredHinge] {
            let p = LinearParams {
                l2: vec![1e-1, 1e-3],
                validation: 0.2,
                max_iter: 100,
                warm_iter: 2,
                seed: 1,
            };
            let f = fit(
                loss,
                Features::Memory(x.view()),
                &y,
                None,
                &std,
                5,
                &p,
                None,
            )
            .unwrap();
            assert_eq!(f.validation.len(), 2);
            // The second candidate and the refit start warm and stop at `warm_iter`
            // (the first, from zero, needs more than that).
            assert!(
                f.iterations > 2 * 2 && f.iterations <= 100 + 2 * 2,
                "{}",
                f.iterations
            );
            let pred = f
                .model
                .predict_all(Features::Memory(xte.view()), None, &std)
                .unwrap();
            let acc = crate::evaluate::metrics::score(&pred, &yte, 5).accuracy;
            assert!(acc > 0.85, "{loss:?}: {acc}");
        }
    }

    /// A fit read from a feature store on disk, a block at a time, is the fit in memory,
    /// bit for bit: same blocks, same order.
    #[test]
    fn a_stored_fit_is_the_fit_in_memory() {
        stored_fit_matches_memory(Precision::F32);
    }

    /// An f16 store is read as its values rounded to f16: the fit is the in-memory fit
    /// of the rounded matrix, bit for bit.
    #[test]
    fn an_f16_stored_fit_is_the_fit_of_its_rounded_values() {
        stored_fit_matches_memory(Precision::F16);
    }

    fn stored_fit_matches_memory(precision: Precision) {
        let (n, d, c) = (2 * BLOCK + 300, 300, 4);
        let (mut x, y) = data(n, d, c, 5);
        // Columns with large means and different scales, as pooled codes have.
        for (j, mut col) in x.columns_mut().into_iter().enumerate() {
            col.mapv_inplace(|v| v * (1.0 + j as f32 / 50.0) + 40.0);
        }
        if precision == Precision::F16 {
            x.mapv_inplace(|v| f32::from(half::f16::from_f32(v)));
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.arrow");
        let ids: Vec<u32> = (0..n as u32).collect();
        let meta = crate::data::store::FeatureMeta {
            step: Some(1),
            mode: "pool".into(),
        }
        .entries();
        // Batches of 1,000 rows, so that blocks of rows straddle batches.
        let mut w = crate::data::store::StoreWriter::create_as(
            &path,
            Kind::Features,
            d,
            precision,
            1000,
            &meta,
        )
        .unwrap();
        w.push_rows(x.view(), &[&ids, &y]).unwrap();
        w.finish().unwrap();
        let store = Store::open(&path, Kind::Features).unwrap();
        assert_eq!(store.precision(), precision);
        assert!(store.batches() > 1, "rows span several batches");
        assert_eq!(store.labels().unwrap(), y);
        let (mem, disk) = (Features::Memory(x.view()), Features::Stored(&store));
        let (sm, sd) = (
            Standardiser::fit(mem, 0.01, Scaling::Feature).unwrap(),
            Standardiser::fit(disk, 0.01, Scaling::Feature).unwrap(),
        );
        assert_eq!((&sm.mean, &sm.inv_std), (&sd.mean, &sd.inv_std));
        let p = LinearParams {
            l2: vec![1e-2, 1e-3],
            validation: 0.2,
            max_iter: 20,
            warm_iter: 5,
            seed: 3,
        };
        let a = fit(Loss::SquaredHinge, mem, &y, None, &sm, c, &p, None).unwrap();
        let b = fit(Loss::SquaredHinge, disk, &y, None, &sd, c, &p, None).unwrap();
        assert_eq!(a.validation, b.validation);
        assert_eq!(a.model.w, b.model.w);
        assert_eq!(a.model.b, b.model.b);
        assert_eq!(
            a.model.predict_all(mem, None, &sm).unwrap(),
            b.model.predict_all(disk, None, &sd).unwrap()
        );
        let acc =
            crate::evaluate::metrics::score(&a.model.predict_all(mem, None, &sm).unwrap(), &y, c);
        assert!(acc.accuracy > 0.8, "{}", acc.accuracy);
    }

    /// A path saved stage by stage reaches the uninterrupted fit exactly: a shorter
    /// grid's candidates are read back and only the new ones train, a damaged stage
    /// trains again, and a changed setting keeps only the stages it does not shape.
    #[test]
    fn a_saved_path_extends_to_the_uninterrupted_fit() {
        let (x, y) = data(600, 12, 4, 5);
        let mem = Features::Memory(x.view());
        let std = Standardiser::fit(mem, 0.01, Scaling::Feature).unwrap();
        let p = |l2: Vec<f64>, warm_iter| LinearParams {
            l2,
            validation: 0.25,
            max_iter: 30,
            warm_iter,
            seed: 2,
        };
        let full = p(vec![1e-1, 1e-2, 1e-3], 10);
        let fit_with = |p: &LinearParams, c| fit(Loss::SquaredHinge, mem, &y, None, &std, 4, p, c);
        let whole = fit_with(&full, None).unwrap();
        assert_eq!(whole.reused, 0);
        let same = |f: &Fitted| {
            assert_eq!(f.validation, whole.validation);
            assert_eq!((f.l2, f.iterations), (whole.l2, whole.iterations));
            assert_eq!(f.chosen_validation, whole.chosen_validation);
            assert_eq!((&f.model.w, &f.model.b), (&whole.model.w, &whole.model.b));
        };
        let d = tempfile::tempdir().unwrap();
        let c = PathCheckpoints::new(d.path(), "test features");
        let short = fit_with(&p(vec![1e-2, 1e-1], 10), Some(&c)).unwrap();
        assert_eq!(short.reused, 0);
        assert_eq!(short.validation, whole.validation[..2]);
        // The refit is read back too when the longer grid chooses as the shorter did.
        let long = fit_with(&full, Some(&c)).unwrap();
        let refit = usize::from(short.l2 == whole.l2);
        assert_eq!(long.reused, 2 + refit, "{:?}", whole.validation);
        same(&long);
        let again = fit_with(&full, Some(&c)).unwrap();
        assert_eq!(again.reused, 4);
        same(&again);
        // The middle candidate damaged: it alone trains again, to the same solution.
        let middle: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|f| {
                f.file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with("candidate-2-")
            })
            .collect();
        assert_eq!(middle.len(), 1, "{middle:?}");
        let mut blob = std::fs::read(&middle[0]).unwrap();
        blob[20] ^= 0xff;
        std::fs::write(&middle[0], &blob).unwrap();
        let mended = fit_with(&full, Some(&c)).unwrap();
        assert_eq!(mended.reused, 3);
        same(&mended);
        // The first candidate does not depend on `warm_iter`; the rest do.
        assert_eq!(
            fit_with(&p(full.l2.clone(), 11), Some(&c)).unwrap().reused,
            1
        );
    }

    /// Features that are all constant (a threshold above every response) carry no
    /// information: an error naming the source, not a classifier at chance; a few
    /// constant columns among informative ones are fine.
    #[test]
    fn features_without_information_are_refused() {
        let x = Array2::<f32>::zeros((40, 5));
        for scaling in [Scaling::Feature, Scaling::Global, Scaling::None] {
            let e = Standardiser::fit(Features::Memory(x.view()), 0.01, scaling).unwrap_err();
            assert!(e.to_string().contains("all 5 features"), "{scaling:?}: {e}");
        }
        let (mut x, _) = data(50, 6, 3, 1);
        x.column_mut(3).fill(2.0);
        assert!(Standardiser::fit(Features::Memory(x.view()), 0.01, Scaling::Feature).is_ok());
    }

    #[test]
    fn non_finite_features_are_refused_naming_their_source() {
        let (mut x, _) = data(50, 6, 3, 1);
        x[[7, 2]] = f32::NAN;
        let e = Standardiser::fit(Features::Memory(x.view()), 0.01, Scaling::Feature).unwrap_err();
        assert!(e.to_string().contains("NaN"), "{e}");
        for scaling in [Scaling::Global, Scaling::None] {
            let e = Standardiser::fit(Features::Memory(x.view()), 0.0, scaling).unwrap_err();
            assert!(e.to_string().contains("NaN"), "{scaling:?}: {e}");
        }
    }

    /// Feature scaling gives every column unit variance; global scaling centres the
    /// columns and divides them by one deviation, so their ratios stay; none leaves
    /// the rows as encoded.
    #[test]
    fn scalings_standardise_centre_or_keep_the_rows() {
        let (x, _) = data(400, 5, 3, 7);
        let x = x * Array1::from(vec![1.0f32, 10.0, 0.1, 3.0, 1.0]) + 4.0;
        let m = Features::Memory(x.view());
        let rows = |s: Scaling| Standardiser::fit(m, 0.0, s).unwrap().matrix(m).unwrap();
        let (raw, f, g) = (
            x.std_axis(Axis(0), 0.0),
            rows(Scaling::Feature),
            rows(Scaling::Global),
        );
        for v in f.std_axis(Axis(0), 0.0) {
            assert!((v - 1.0).abs() < 1e-3, "{v}");
        }
        let gs = g.std_axis(Axis(0), 0.0);
        for j in 0..5 {
            let (want, got) = (raw[j] / raw[1], gs[j] / gs[1]);
            assert!(
                (got - want).abs() < 1e-4 * want.max(1.0),
                "{j}: {got} {want}"
            );
        }
        let mean_var = gs.mapv(|v| v * v).mean().unwrap();
        assert!((mean_var - 1.0).abs() < 1e-3, "{mean_var}");
        for a in [&f, &g] {
            for v in a.mean_axis(Axis(0)).unwrap() {
                assert!(v.abs() < 1e-4, "{v}");
            }
        }
        assert_eq!(rows(Scaling::None), x);
    }

    /// Rows of one image stay together on one side of the split; without image
    /// numbers every row is its own image; a fraction too small or too large for the
    /// images is no split.
    #[test]
    fn holdout_keeps_an_images_rows_together() {
        let images: Vec<u32> = (0..400u32).flat_map(|i| [i, i]).collect();
        let (fit, val) = holdout(800, Some(&images), 0.1, 3).unwrap();
        assert_eq!((fit.len(), val.len()), (720, 80));
        assert!(fit.windows(2).all(|w| w[0] < w[1]) && val.windows(2).all(|w| w[0] < w[1]));
        let held: std::collections::BTreeSet<u32> = val.iter().map(|&r| images[r]).collect();
        assert_eq!(held.len(), 40);
        assert!(fit.iter().all(|&r| !held.contains(&images[r])));
        let (fit, val) = holdout(400, None, 0.1, 3).unwrap();
        assert_eq!((fit.len(), val.len()), (360, 40));
        assert!(holdout(5, None, 0.05, 3).is_none());
        assert!(holdout(4, Some(&[1, 1, 1, 1]), 0.5, 3).is_none());
    }

    /// With image numbers, consecutive rows of one image are classified together from
    /// their summed scores; without, row by row.
    #[test]
    fn an_image_is_classified_from_the_sum_of_its_rows_scores() {
        let m = LinearModel {
            w: Array2::eye(2),
            b: Array1::zeros(2),
        };
        let x = ndarray::array![[1.0f32, 0.0], [0.0, 3.0], [2.0, 0.5], [0.0, 1.0]];
        let std = Standardiser::identity(2);
        let mem = Features::Memory(x.view());
        assert_eq!(m.predict_all(mem, None, &std).unwrap(), vec![0, 1, 0, 1]);
        let pairs = [7, 7, 9, 9];
        assert_eq!(m.predict_all(mem, Some(&pairs), &std).unwrap(), vec![1, 0]);
        assert_eq!(
            image_runs(&[0, 1, 2, 3], Some(&[4, 4, 4, 5])),
            vec![0..3, 3..4]
        );
        assert_eq!(image_runs(&[1, 3], None), vec![0..1, 1..2]);
    }
}
