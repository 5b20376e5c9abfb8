//! Mini-batch optimisers (SGD with momentum, Adam) for stores too large for full-batch
//! L-BFGS: each epoch walks the store's batches in a fresh seeded order and takes one
//! step per mini-batch of rows, with the sparsity penalty on the mini-batch's own ρ̂.
//!
//! The state (parameters, moments, step count, position in the epoch) is plain data,
//! so a run can be checkpointed between steps and continued exactly.

use ndarray::Axis;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::data::store::{MemoryRows, Store};
use crate::dist::Comm;
use crate::error::{Error, Result};
use crate::learn::sae::objective::ObjectiveSpec;
use crate::rng::{stream, Stream};

/// Rows per parallel work item within a mini-batch: small enough that a mini-batch
/// of a thousand rows keeps every core busy, fixed so results do not depend on the
/// thread count.
const MINI_BLOCK: usize = 256;

/// Update rule.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Method {
    /// SGD with (heavy-ball) momentum.
    Sgd {
        /// Step size.
        lr: f64,
        /// Momentum coefficient.
        momentum: f64,
    },
    /// Adam (Kingma & Ba 2015).
    Adam {
        /// Step size.
        lr: f64,
        /// First-moment decay.
        beta1: f64,
        /// Second-moment decay.
        beta2: f64,
        /// Denominator ε.
        eps: f64,
    },
}

/// Mini-batch settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MinibatchParams {
    /// Update rule.
    pub method: Method,
    /// Rows per step.
    pub batch: usize,
    /// Passes over the store.
    pub epochs: usize,
}

/// Everything needed to continue a mini-batch run exactly.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MinibatchState {
    /// Parameters.
    pub theta: Vec<f64>,
    /// Momentum (SGD) or first moment (Adam).
    pub m: Vec<f64>,
    /// Second moment (Adam).
    pub v: Vec<f64>,
    /// Steps taken.
    pub steps: u64,
    /// Epochs finished.
    pub epoch: usize,
    /// Steps done in the current epoch.
    pub pos: usize,
    /// Sum and count of mini-batch losses in the current epoch.
    pub epoch_sum: (f64, usize),
    /// Mean mini-batch loss of each finished epoch.
    pub epoch_loss: Vec<f64>,
}

impl MinibatchState {
    /// A fresh state at `theta`.
    pub fn new(theta: Vec<f64>) -> Self {
        let n = theta.len();
        MinibatchState {
            theta,
            m: vec![0.0; n],
            v: vec![0.0; n],
            steps: 0,
            epoch: 0,
            pos: 0,
            epoch_sum: (0.0, 0),
            epoch_loss: Vec::new(),
        }
    }

    fn update(&mut self, method: &Method, g: &[f64]) {
        self.steps += 1;
        match *method {
            Method::Sgd { lr, momentum } => {
                for ((t, m), gi) in self.theta.iter_mut().zip(&mut self.m).zip(g) {
                    *m = momentum * *m + gi;
                    *t -= lr * *m;
                }
            }
            Method::Adam {
                lr,
                beta1,
                beta2,
                eps,
            } => {
                let k = self.steps as i32;
                let c1 = 1.0 - beta1.powi(k);
                let c2 = 1.0 - beta2.powi(k);
                for (((t, m), v), gi) in self
                    .theta
                    .iter_mut()
                    .zip(&mut self.m)
                    .zip(&mut self.v)
                    .zip(g)
                {
                    *m = beta1 * *m + (1.0 - beta1) * gi;
                    *v = beta2 * *v + (1.0 - beta2) * gi * gi;
                    *t -= lr * (*m / c1) / ((*v / c2).sqrt() + eps);
                }
            }
        }
    }
}

/// Mini-batch steps in one epoch (each store batch is cut into mini-batches).
pub fn steps_per_epoch(store: &Store, batch: usize) -> usize {
    (0..store.batches())
        .map(|b| store.batch_rows(b).div_ceil(batch))
        .sum()
}

/// The store's batch order for `epoch`.
pub fn epoch_order(batches: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..batches).collect();
    order.shuffle(&mut stream(seed, Stream::Shuffle, epoch as u64));
    order
}

/// Runs the rest of the current epoch from `state` (which may stop mid-epoch, after a
/// checkpoint), calling `after_step(state, loss)` after each step; it returns an error
/// to stop the run. Under `comm` every rank reads each mini-batch and evaluates its
/// share of the rows.
pub fn run_epoch(
    store: &Store,
    objective: &ObjectiveSpec,
    p: &MinibatchParams,
    seed: u64,
    comm: &dyn Comm,
    state: &mut MinibatchState,
    after_step: &mut dyn FnMut(&MinibatchState, f64) -> Result<()>,
) -> Result<()> {
    if p.batch == 0 {
        return Err(Error::config("train.batch_size", "must be at least 1"));
    }
    let order = epoch_order(store.batches(), seed, state.epoch);
    // Skip the store batches whose steps were all done before a resume.
    let mut skip = state.pos;
    let mut todo = Vec::new();
    for &b in &order {
        let steps = store.batch_rows(b).div_ceil(p.batch);
        if skip >= steps {
            skip -= steps;
        } else {
            todo.push(b);
        }
    }
    let per_epoch = steps_per_epoch(store, p.batch);
    store.for_each_batch(&todo, &mut |_, rows| {
        for mb in rows.axis_chunks_iter(Axis(0), p.batch) {
            if skip > 0 {
                skip -= 1;
                continue;
            }
            // Each rank takes its share of the mini-batch; the sums are all-reduced.
            let mine = mb.slice_move(ndarray::s![
                crate::dist::share(mb.nrows(), comm.rank(), comm.size()),
                ..
            ]);
            let data = MemoryRows {
                data: mine,
                chunk: mine.nrows().max(1),
            };
            let (loss, g) = objective
                .on(&data)
                .with_block(MINI_BLOCK)
                .with_comm(comm)
                .eval::<f32>(&state.theta)?;
            // Stops before the update, so the state (and every checkpoint) stays the
            // last good one; NaN compares false, hence the explicit finiteness test.
            if !loss.total.is_finite() || loss.total > 1e12 || g.iter().any(|v| !v.is_finite()) {
                return Err(Error::Numeric(format!(
                    "loss diverged ({:.3e}) at step {}; lower train.learning_rate \
                     (the last checkpoint holds the state before it)",
                    loss.total, state.steps
                )));
            }
            state.update(&p.method, &g);
            state.pos += 1;
            state.epoch_sum.0 += loss.total;
            state.epoch_sum.1 += 1;
            if state.pos == per_epoch {
                state.epoch += 1;
                state.pos = 0;
                let (s, n) = std::mem::take(&mut state.epoch_sum);
                state.epoch_loss.push(s / n.max(1) as f64);
            }
            after_step(state, loss.total)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adam_and_sgd_descend_a_quadratic() {
        for method in [
            Method::Sgd {
                lr: 0.05,
                momentum: 0.9,
            },
            Method::Adam {
                lr: 0.05,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
        ] {
            let mut s = MinibatchState::new(vec![3.0, -2.0]);
            for _ in 0..500 {
                let g: Vec<f64> = s.theta.iter().map(|t| 2.0 * t).collect();
                s.update(&method, &g);
            }
            assert!(
                s.theta.iter().all(|t| t.abs() < 1e-2),
                "{method:?}: {:?}",
                s.theta
            );
        }
    }

    #[test]
    fn epoch_orders_are_seeded_permutations() {
        let a = epoch_order(10, 1, 0);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(10, 1, 0));
        assert_ne!(a, epoch_order(10, 1, 1));
    }
}
