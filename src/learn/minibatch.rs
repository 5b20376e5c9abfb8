//! Mini-batch optimisers (SGD with momentum, Adam) for stores too large for full-batch
//! L-BFGS: each epoch walks the store's batches in a fresh seeded order and takes one
//! step per mini-batch of rows, with the sparsity penalty on the mini-batch's own ρ̂.
//!
//! The step size follows a [`Schedule`] over the whole run (by default a linear
//! warm-up, then a cosine decay to zero: large steps early, small ones to settle), and
//! its peak can be chosen by [`probe_lr`]: short runs from the initial weights on the
//! same mini-batches at step sizes √10 apart, keeping the one that lowers the loss most.
//! Adam's good step size depends on the data's scale and the network's width, so
//! a fixed default is wrong by orders of magnitude somewhere; the probe costs a few
//! passes over one store batch.
//!
//! The state (parameters, moments, step count, position in the epoch) is plain data,
//! so a run can be checkpointed between steps and continued exactly (the probe is
//! deterministic, so a resumed run finds the same step size again).

use ndarray::{ArrayView2, Axis};
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

impl Method {
    /// The (peak) step size.
    pub fn lr(&self) -> f64 {
        match *self {
            Method::Sgd { lr, .. } | Method::Adam { lr, .. } => lr,
        }
    }

    /// The same rule with peak step size `lr`.
    pub fn with_lr(mut self, new: f64) -> Self {
        match &mut self {
            Method::Sgd { lr, .. } | Method::Adam { lr, .. } => *lr = new,
        }
        self
    }
}

/// How the step size changes over a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// The peak step size throughout (after the warm-up).
    Constant,
    /// Half a cosine from the peak down to zero over the run's steps (after the
    /// warm-up). The curve spans the whole run, so the number of epochs is part of
    /// the trajectory: a longer run is another run, not a continuation.
    Cosine,
}

/// Mini-batch settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MinibatchParams {
    /// Update rule (its step size is the peak of the schedule).
    pub method: Method,
    /// Rows per step.
    pub batch: usize,
    /// Passes over the store.
    pub epochs: usize,
    /// Step-size schedule.
    pub schedule: Schedule,
    /// Fraction of the run's steps over which the step size rises linearly to its peak.
    pub warmup: f64,
    /// Choose the peak step size with [`probe_lr`], starting from the method's.
    pub probe: bool,
}

impl MinibatchParams {
    /// The step-size multiplier of step `k` (0-based) of a run of `total` steps.
    pub fn factor(&self, k: u64, total: u64) -> f64 {
        let total = total.max(1) as f64;
        let k = k as f64;
        let warm = (self.warmup.clamp(0.0, 1.0) * total).floor();
        if k < warm {
            return (k + 1.0) / (warm + 1.0);
        }
        match self.schedule {
            Schedule::Constant => 1.0,
            Schedule::Cosine => {
                let progress = (k - warm) / (total - warm).max(1.0);
                0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
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

    /// One step of `method` with step size `lr` along gradient `g`.
    fn update(&mut self, method: &Method, lr: f64, g: &[f64]) {
        self.steps += 1;
        match *method {
            Method::Sgd { momentum, .. } => {
                for ((t, m), gi) in self.theta.iter_mut().zip(&mut self.m).zip(g) {
                    *m = momentum * *m + gi;
                    *t -= lr * *m;
                }
            }
            Method::Adam {
                beta1, beta2, eps, ..
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
    let total = (per_epoch * p.epochs) as u64;
    store.for_each_batch(&todo, &mut |_, rows| {
        for mb in rows.axis_chunks_iter(Axis(0), p.batch) {
            if skip > 0 {
                skip -= 1;
                continue;
            }
            let (loss, g) = batch_loss_grad(objective, comm, mb, &state.theta, state.steps)?;
            let lr = p.method.lr() * p.factor(state.steps, total);
            state.update(&p.method, lr, &g);
            state.pos += 1;
            state.epoch_sum.0 += loss;
            state.epoch_sum.1 += 1;
            if state.pos == per_epoch {
                state.epoch += 1;
                state.pos = 0;
                let (s, n) = std::mem::take(&mut state.epoch_sum);
                state.epoch_loss.push(s / n.max(1) as f64);
            }
            after_step(state, loss)?;
        }
        Ok(())
    })
}

/// Loss and gradient of one mini-batch at `theta`; under `comm` each rank takes its
/// share of the rows and the sums are all-reduced. A loss or gradient that is not
/// finite or explodes is an error naming `step`, so the caller never steps on it.
fn batch_loss_grad(
    objective: &ObjectiveSpec,
    comm: &dyn Comm,
    mb: ArrayView2<f32>,
    theta: &[f64],
    step: u64,
) -> Result<(f64, Vec<f64>)> {
    let mine = mb.slice_move(ndarray::s![
        crate::dist::share(mb.nrows(), comm.rank(), comm.size()),
        ..
    ]);
    let data = MemoryRows {
        data: mine,
        chunk: mine.nrows().max(1),
    };
    let (loss, grad) = objective
        .on(&data)
        .with_block(MINI_BLOCK)
        .with_comm(comm)
        .eval::<f32>(theta)?;
    // NaN compares false, hence the explicit finiteness test.
    if !loss.total.is_finite() || loss.total > 1e12 || grad.iter().any(|v| !v.is_finite()) {
        return Err(Error::Numeric(format!(
            "loss diverged ({:.3e}) at step {step}; lower train.learning_rate \
             (the last checkpoint holds the state before it)",
            loss.total
        )));
    }
    Ok((loss.total, grad))
}

/// Mini-batch steps of each probe run.
pub const PROBE_STEPS: usize = 48;

/// At most this many step sizes are tried.
const PROBE_TRIES: usize = 8;

/// Chooses the peak step size: from the method's own, runs [`PROBE_STEPS`] steps at
/// constant step size from `theta0` on the first mini-batches of the first epoch's
/// first store batch, for step sizes √10 apart, upwards while the loss improves (or
/// downwards, when the first step up does not), and returns the step size whose run
/// ends lowest (mean loss of its last quarter of steps) with every `(lr, loss)` tried
/// (a diverged run's loss is infinite). Deterministic: the same store, seed and
/// weights give the same choice.
pub fn probe_lr(
    store: &Store,
    objective: &ObjectiveSpec,
    p: &MinibatchParams,
    seed: u64,
    comm: &dyn Comm,
    theta0: &[f64],
) -> Result<(f64, Vec<(f64, f64)>)> {
    if p.batch == 0 {
        return Err(Error::config("train.batch_size", "must be at least 1"));
    }
    let Some(&first) = epoch_order(store.batches(), seed, 0).first() else {
        return Err(Error::bad(
            store.path(),
            "the patch store has no rows to train on",
        ));
    };
    let batch = store.batch(first)?;
    let rows = batch.values();
    let minis: Vec<ArrayView2<f32>> = rows
        .axis_chunks_iter(Axis(0), p.batch)
        .take(PROBE_STEPS)
        .collect();
    let tail = minis.len().div_ceil(4);
    let run = |lr: f64| -> Result<f64> {
        let mut state = MinibatchState::new(theta0.to_vec());
        let mut sum = 0.0;
        for (k, mb) in minis.iter().enumerate() {
            let (loss, g) = match batch_loss_grad(objective, comm, *mb, &state.theta, state.steps) {
                Ok(lg) => lg,
                Err(Error::Numeric(_)) => return Ok(f64::INFINITY),
                Err(e) => return Err(e),
            };
            if k >= minis.len() - tail {
                sum += loss;
            }
            state.update(&p.method, lr, &g);
        }
        Ok(sum / tail as f64)
    };
    let step = 10f64.sqrt();
    let start = p.method.lr();
    let mut tried = vec![(start, run(start)?)];
    let mut best = tried[0];
    for dir in [step, 1.0 / step] {
        let mut lr = start;
        while tried.len() < PROBE_TRIES {
            lr *= dir;
            let loss = run(lr)?;
            tried.push((lr, loss));
            if loss < best.1 {
                best = (lr, loss);
            } else {
                break;
            }
        }
        // Going up helped: no need to go down.
        if best.0 != start {
            break;
        }
    }
    drop(minis);
    drop(batch);
    // The epochs read the store in their own order; its pages need not stay resident.
    store.release(first);
    if tried.len() == PROBE_TRIES && tried.last().is_some_and(|t| t.0 == best.0) {
        crate::progress::say(format!(
            "train: the learning-rate probe stopped after {PROBE_TRIES} tries while the \
             loss still fell; set train.learning_rate nearer {:.1e} to start it there",
            best.0
        ));
    }
    if !best.1.is_finite() {
        return Err(Error::Numeric(format!(
            "every probed learning rate diverged on {} (tried {})",
            store.path().display(),
            tried
                .iter()
                .map(|(lr, _)| format!("{lr:.1e}"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok((best.0, tried))
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
                s.update(&method, method.lr(), &g);
            }
            assert!(
                s.theta.iter().all(|t| t.abs() < 1e-2),
                "{method:?}: {:?}",
                s.theta
            );
        }
    }

    #[test]
    fn the_schedule_warms_up_then_decays_to_zero() {
        let p = |schedule, warmup| MinibatchParams {
            method: Method::Sgd {
                lr: 1.0,
                momentum: 0.0,
            },
            batch: 1,
            epochs: 1,
            schedule,
            warmup,
            probe: false,
        };
        let cos = p(Schedule::Cosine, 0.1);
        let f: Vec<f64> = (0..100).map(|k| cos.factor(k, 100)).collect();
        // Linear rise over the first 10 steps, the peak, then a monotone fall to ~0.
        assert!((f[0] - 1.0 / 11.0).abs() < 1e-12 && (f[9] - 10.0 / 11.0).abs() < 1e-12);
        assert_eq!(f[10], 1.0);
        assert!(f[10..].windows(2).all(|w| w[1] < w[0]));
        assert!(f[99] > 0.0 && f[99] < 1e-3);
        assert!(
            (f[55] - 0.5).abs() < 1e-12,
            "half-way down at mid-decay: {}",
            f[55]
        );
        let flat = p(Schedule::Constant, 0.0);
        assert!((0..50).all(|k| flat.factor(k, 50) == 1.0));
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
