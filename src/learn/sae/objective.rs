//! The training objective: loss and gradient of the sparse autoencoder, summed over
//! the patch set chunk by chunk.
//!
//! One code path serves L-BFGS, the gradient check, mini-batch and distributed
//! training (each rank sums its shard; [`crate::dist`] all-reduces the sums). Each chunk is cut into blocks of [`BLOCK`] rows that rayon
//! workers process independently; block results are added in block order, so the
//! result does not depend on the thread count, and depends on the chunk size only
//! through rounding. The sparsity term needs the mean activation ρ̂ of the sparse
//! layer over all patches before any delta can be formed, so a full evaluation makes
//! two passes: a forward pass to the sparse layer for ρ̂, then forward + backward.

use ndarray::{Array1, Array2, ArrayView2, Axis};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{affine, sigmoid_inplace, Architecture, Decoder, Real};
use crate::data::store::Rows;
use crate::dist::{Comm, Single};
use crate::error::{Error, Result};

/// Default largest first-layer activation cache kept between the two passes of an
/// evaluation (a memory budget may lower it: [`Objective::with_cache_bytes`]). Bounded, so memory stays independent
/// of the store size: big stores just recompute.
pub const CACHE_BYTES: usize = 256 << 20;

/// First-layer activations of every block, in block order.
type ActivationCache<F> = Vec<Array2<F>>;

/// Rows per parallel work item. Fixed (not derived from the thread count) so that
/// results are bit-for-bit repeatable on any number of threads.
pub const BLOCK: usize = 2048;

/// Weight decay and sparsity hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Penalty {
    /// Weight decay λ.
    pub lambda: f64,
    /// Sparsity weight β.
    pub beta: f64,
    /// Target activation ρ.
    pub rho: f64,
}

/// Loss with its parts, for reports.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Loss {
    /// Total J.
    pub total: f64,
    /// Mean half squared reconstruction error.
    pub reconstruction: f64,
    /// λ/2 Σ W².
    pub decay: f64,
    /// β Σ KL(ρ‖ρ̂).
    pub sparsity: f64,
}

/// What an objective is of: the network, its penalty, and the largest activation cache
/// the memory budget allows. Built once per training run; [`ObjectiveSpec::on`] gives
/// its objective on any rows (the whole store, a shard, a mini-batch).
#[derive(Clone, Debug)]
pub struct ObjectiveSpec {
    /// Network shape.
    pub arch: Architecture,
    /// Weight decay and sparsity.
    pub penalty: Penalty,
    /// Largest first-layer activation cache, bytes.
    pub cache_bytes: usize,
}

impl ObjectiveSpec {
    /// The objective of `arch` with `penalty`, with the default activation cache.
    pub fn new(arch: Architecture, penalty: Penalty) -> Self {
        ObjectiveSpec {
            arch,
            penalty,
            cache_bytes: CACHE_BYTES,
        }
    }

    /// Its objective on the rows of `data`.
    pub fn on<'a>(&'a self, data: &'a dyn Rows) -> Objective<'a> {
        Objective::new(&self.arch, self.penalty, data).with_cache_bytes(self.cache_bytes)
    }
}

/// Loss and gradient of an architecture with a penalty on some rows.
pub struct Objective<'a> {
    arch: &'a Architecture,
    penalty: Penalty,
    data: &'a dyn Rows,
    block: usize,
    comm: &'a dyn Comm,
    cache_bytes: usize,
}

struct Partial {
    sq: f64,
    gw: Vec<Array2<f64>>,
    gb: Vec<Array1<f64>>,
}

impl<'a> Objective<'a> {
    /// The objective of `arch` with `penalty` on the rows of `data`.
    pub fn new(arch: &'a Architecture, penalty: Penalty, data: &'a dyn Rows) -> Self {
        assert_eq!(
            data.dim(),
            arch.visible(),
            "data width must match the network"
        );
        Objective {
            arch,
            penalty,
            data,
            block: BLOCK,
            comm: &Single,
            cache_bytes: CACHE_BYTES,
        }
    }

    /// Keeps first-layer activations between the two passes only when they fit
    /// `bytes` (the memory budget's share; [`CACHE_BYTES`] by default).
    pub fn with_cache_bytes(mut self, bytes: usize) -> Self {
        self.cache_bytes = bytes;
        self
    }

    /// Sums over the rows of every rank of `comm`: `data` is this rank's shard, and
    /// every rank gets the loss and gradient of all shards together.
    pub fn with_comm(mut self, comm: &'a dyn Comm) -> Self {
        self.comm = comm;
        self
    }

    /// Uses parallel blocks of `rows` rows (mini-batches are smaller than [`BLOCK`]).
    pub fn with_block(mut self, rows: usize) -> Self {
        self.block = rows.max(1);
        self
    }

    /// Mean activation of the sparse layer over all rows (ρ̂). When the sparse layer is
    /// the first hidden layer and its activations for all rows fit [`CACHE_BYTES`],
    /// they are kept (one array per block, in order) so the second pass skips its
    /// first matrix product.
    fn rho_hat<F: Real>(
        &self,
        ws: &[Array2<F>],
        bs: &[Array1<F>],
        rows: usize,
    ) -> Result<(Array1<f64>, Option<ActivationCache<F>>)> {
        let s = self.arch.sparse;
        let keep = s == 1
            && self.data.rows() * self.arch.sizes[1] * std::mem::size_of::<F>() <= self.cache_bytes;
        let mut cache = Vec::new();
        let mut sum = Array1::<f64>::zeros(self.arch.sizes[s]);
        self.data.for_each_chunk(&mut |chunk| {
            let parts: Vec<(Array1<f64>, Option<Array2<F>>)> = blocks(chunk, self.block)
                .into_par_iter()
                .map(|x| {
                    let x = F::cast_rows(x);
                    let mut a = affine(&x.view(), &ws[0], &bs[0]);
                    sigmoid_inplace(&mut a);
                    for l in 1..s {
                        a = affine(&a.view(), &ws[l], &bs[l]);
                        sigmoid_inplace(&mut a);
                    }
                    let sums = column_sums(&a);
                    (sums, keep.then_some(a))
                })
                .collect();
            for (p, a) in parts {
                sum += &p;
                cache.extend(a);
            }
            Ok(())
        })?;
        self.comm.sum(sum.as_slice_mut().expect("contiguous sums"));
        Ok((sum / rows as f64, keep.then_some(cache)))
    }

    /// Loss and gradient at `theta`, computing in `F` and summing in f64.
    pub fn eval<F: Real>(&self, theta: &[f64]) -> Result<(Loss, Vec<f64>)> {
        let mut rows = [self.data.rows() as f64];
        self.comm.sum(&mut rows);
        let m = rows[0] as usize;
        if m == 0 {
            return Err(Error::Numeric("no training rows".into()));
        }
        let arch = self.arch;
        let Penalty { lambda, beta, rho } = self.penalty;
        let (ws, bs) = arch.unpack::<F>(theta);
        let mut cache = None;
        let sparse = if beta > 0.0 {
            let (rh, c) = self.rho_hat(&ws, &bs, m)?;
            cache = c;
            if rh.iter().any(|&r| !(r > 0.0 && r < 1.0)) {
                return Err(Error::Numeric(
                    "sparse-layer mean activation reached 0 or 1 (saturated units)".into(),
                ));
            }
            let kl: f64 = rh
                .iter()
                .map(|&r| rho * (rho / r).ln() + (1.0 - rho) * ((1.0 - rho) / (1.0 - r)).ln())
                .sum();
            let term = rh.mapv(|r| F::from_f64(beta * (-rho / r + (1.0 - rho) / (1.0 - r))));
            Some((kl, term))
        } else {
            None
        };
        let term = sparse.as_ref().map(|s| &s.1);
        let mut total = Partial {
            sq: 0.0,
            gw: (0..arch.layers())
                .map(|l| Array2::zeros(arch.weight_shape(l)))
                .collect(),
            gb: (0..arch.layers())
                .map(|l| Array1::zeros(arch.sizes[l + 1]))
                .collect(),
        };
        let mut cache = cache.map(Vec::into_iter);
        self.data.for_each_chunk(&mut |chunk| {
            let bl = blocks(chunk, self.block);
            let firsts: Vec<Option<Array2<F>>> = match cache.as_mut() {
                Some(c) => c.by_ref().take(bl.len()).map(Some).collect(),
                None => vec![None; bl.len()],
            };
            let parts: Vec<Partial> = bl
                .into_par_iter()
                .zip(firsts)
                .map(|(x, a1)| block_gradient(arch, &ws, &bs, term, x, a1))
                .collect();
            for p in parts {
                total.sq += p.sq;
                for l in 0..arch.layers() {
                    total.gw[l] += &p.gw[l];
                    total.gb[l] += &p.gb[l];
                }
            }
            Ok(())
        })?;
        if self.comm.size() > 1 {
            let mut flat = vec![total.sq];
            for l in 0..arch.layers() {
                flat.extend(total.gw[l].iter());
                flat.extend(total.gb[l].iter());
            }
            self.comm.sum(&mut flat);
            total.sq = flat[0];
            let mut at = 1;
            for l in 0..arch.layers() {
                for v in total.gw[l].iter_mut().chain(total.gb[l].iter_mut()) {
                    *v = flat[at];
                    at += 1;
                }
            }
        }
        let inv_m = 1.0 / m as f64;
        let nw = arch.n_weights();
        let decay = 0.5 * lambda * theta[..nw].iter().map(|w| w * w).sum::<f64>();
        let loss = Loss {
            reconstruction: 0.5 * total.sq * inv_m,
            decay,
            sparsity: sparse.as_ref().map_or(0.0, |s| beta * s.0),
            total: 0.0,
        };
        let loss = Loss {
            total: loss.reconstruction + loss.decay + loss.sparsity,
            ..loss
        };
        let mut grad = Vec::with_capacity(theta.len());
        for g in &total.gw {
            grad.extend(g.iter().map(|v| v * inv_m));
        }
        for (g, t) in grad.iter_mut().zip(&theta[..nw]) {
            *g += lambda * t;
        }
        for g in &total.gb {
            grad.extend(g.iter().map(|v| v * inv_m));
        }
        if !loss.total.is_finite() || grad.iter().any(|g| !g.is_finite()) {
            return Err(Error::Numeric(format!(
                "loss or gradient is not finite (loss {})",
                loss.total
            )));
        }
        Ok((loss, grad))
    }
}

/// Splits a chunk into fixed-size blocks.
fn blocks(chunk: ArrayView2<'_, f32>, block: usize) -> Vec<ArrayView2<'_, f32>> {
    let n = chunk.nrows();
    (0..n)
        .step_by(block)
        .map(|lo| chunk.slice_move(ndarray::s![lo..(lo + block).min(n), ..]))
        .collect()
}

fn column_sums<F: Real>(a: &Array2<F>) -> Array1<f64> {
    let mut s = Array1::<f64>::zeros(a.ncols());
    for row in a.rows() {
        for (acc, v) in s.iter_mut().zip(row) {
            *acc += v.as_f64();
        }
    }
    s
}

/// Unscaled loss and gradient sums of one block (backpropagation).
fn block_gradient<F: Real>(
    arch: &Architecture,
    ws: &[Array2<F>],
    bs: &[Array1<F>],
    sparse_term: Option<&Array1<F>>,
    x: ArrayView2<f32>,
    first: Option<Array2<F>>,
) -> Partial {
    let x = F::cast_rows(x);
    let layers = arch.layers();
    let mut acts: Vec<Array2<F>> = Vec::with_capacity(layers);
    let mut first = first;
    for l in 0..layers {
        if let Some(a) = first.take() {
            acts.push(a);
            continue;
        }
        let input = if l == 0 { x.view() } else { acts[l - 1].view() };
        let mut z = affine(&input, &ws[l], &bs[l]);
        if l + 1 < layers || arch.decoder == Decoder::Sigmoid {
            sigmoid_inplace(&mut z);
        }
        acts.push(z);
    }
    let mut delta = acts.pop().expect("at least one layer");
    delta -= &x;
    let sq: f64 = delta.iter().map(|d| d.as_f64() * d.as_f64()).sum();
    if arch.decoder == Decoder::Sigmoid {
        // out = diff + x, so f'(z) = out (1 - out) is recomputed from diff and x.
        ndarray::Zip::from(&mut delta).and(&x).for_each(|d, &xi| {
            let out = *d + xi;
            *d = *d * out * (F::one() - out);
        });
    }
    let mut gw = vec![Array2::zeros((0, 0)); layers];
    let mut gb = vec![Array1::zeros(0); layers];
    for l in (0..layers).rev() {
        let input = if l == 0 { x.view() } else { acts[l - 1].view() };
        gw[l] = delta.t().dot(&input).mapv(|v| v.as_f64());
        gb[l] = column_sums(&delta);
        if l > 0 {
            let mut d = delta.dot(&ws[l]);
            if l == arch.sparse {
                if let Some(t) = sparse_term {
                    d += &t.view().insert_axis(Axis(0));
                }
            }
            ndarray::Zip::from(&mut d)
                .and(&acts[l - 1])
                .for_each(|d, &a| *d = *d * a * (F::one() - a));
            delta = d;
        }
    }
    Partial { sq, gw, gb }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::store::MemoryRows;

    fn data(m: usize, d: usize) -> Array2<f32> {
        let mut r = crate::rng::stream(1, crate::rng::Stream::Patches, 0);
        Array2::from_shape_fn((m, d), |_| crate::rng::uniform(&mut r, 0.1, 0.9) as f32)
    }

    #[test]
    fn chunking_changes_only_rounding() {
        let x = data(5000, 12);
        let arch = Architecture::new(12, &[5], None, Decoder::Sigmoid).unwrap();
        let pen = Penalty {
            lambda: 1e-3,
            beta: 3.0,
            rho: 0.1,
        };
        let theta = arch.init(3);
        let one = MemoryRows {
            data: x.view(),
            chunk: 5000,
        };
        let (l1, g1) = Objective::new(&arch, pen, &one)
            .eval::<f64>(&theta)
            .unwrap();
        for chunk in [1, 7, 999, 4096] {
            let many = MemoryRows {
                data: x.view(),
                chunk,
            };
            let (l2, g2) = Objective::new(&arch, pen, &many)
                .eval::<f64>(&theta)
                .unwrap();
            assert!((l1.total - l2.total).abs() <= 1e-12 * l1.total.abs());
            for (a, b) in g1.iter().zip(&g2) {
                assert!((a - b).abs() <= 1e-10 * (a.abs() + 1e-6), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn f32_close_as_f64() {
        let x = data(3000, 12);
        let arch = Architecture::new(12, &[6, 4, 6], None, Decoder::Linear).unwrap();
        let pen = Penalty {
            lambda: 1e-4,
            beta: 3.0,
            rho: 0.05,
        };
        let rows = MemoryRows {
            data: x.view(),
            chunk: 1000,
        };
        let obj = Objective::new(&arch, pen, &rows);
        let theta = arch.init(5);
        let (l64, g64) = obj.eval::<f64>(&theta).unwrap();
        let (l32, g32) = obj.eval::<f32>(&theta).unwrap();
        assert!((l64.total - l32.total).abs() < 1e-5 * l64.total);
        let num: f64 = g64.iter().zip(&g32).map(|(a, b)| (a - b).powi(2)).sum();
        let den: f64 = g64.iter().map(|a| a * a).sum();
        assert!((num / den).sqrt() < 1e-4);
    }

    #[test]
    fn empty_data_is_an_error() {
        let x = Array2::<f32>::zeros((0, 4));
        let arch = Architecture::new(4, &[2], None, Decoder::Sigmoid).unwrap();
        let rows = MemoryRows {
            data: x.view(),
            chunk: 8,
        };
        let pen = Penalty {
            lambda: 0.0,
            beta: 0.0,
            rho: 0.1,
        };
        assert!(Objective::new(&arch, pen, &rows)
            .eval::<f64>(&arch.init(0))
            .is_err());
    }
}
