//! The training driver: one [`TrainJob`] (network, penalty, optimiser settings, seed,
//! memory), its objective built once and handed to full-batch L-BFGS or to the
//! mini-batch loop, checkpoints saved as the [`CheckpointPolicy`] says and resumed
//! from when they lie on this run's path, and the loss trace.

use std::path::Path;
use std::time::Instant;

use crate::data::store::{PatchMeta, Shard, Store};
use crate::dist::{broadcast_value, Comm, Single};
use crate::error::{Error, Result};
use crate::learn::checkpoint::{Checkpoint, Checkpoints, OptState, TracePoint};
use crate::learn::minibatch::{
    probe_lr, run_epoch, steps_per_epoch, MinibatchParams, MinibatchState,
};
use crate::learn::model::{Header, Learner, Model};
use crate::learn::optim::{LbfgsParams, LbfgsState, Stop};
use crate::learn::sae::objective::{ObjectiveSpec, Penalty};
use crate::learn::sae::{Architecture, Network};
use crate::progress::{say, Progress};

/// Result of a training run.
pub struct Trained {
    /// The model, normalisation included.
    pub model: Model,
    /// Why training stopped.
    pub stop: String,
    /// L-BFGS iterations or mini-batch steps.
    pub iterations: usize,
    /// Function evaluations (L-BFGS) or steps (mini-batch).
    pub evals: usize,
    /// Seconds of training.
    pub seconds: f64,
}

/// When to write checkpoints during training.
#[derive(Clone, Copy, Debug)]
pub struct CheckpointPolicy {
    /// Every this many iterations (L-BFGS) or steps (mini-batch).
    pub every: usize,
    /// Or when this many seconds passed since the last one.
    pub seconds: f64,
}

/// Which optimiser trains the network, with its settings and limit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Optimiser {
    /// Full-batch L-BFGS.
    Lbfgs(LbfgsParams),
    /// Mini-batch SGD or Adam.
    Minibatch(MinibatchParams),
}

/// What one training run is: the objective (network, penalty, memory), the optimiser,
/// and the seed of the initial weights and mini-batch order.
#[derive(Clone, Debug)]
pub struct TrainJob {
    /// What is minimised.
    pub objective: ObjectiveSpec,
    /// How.
    pub optimiser: Optimiser,
    /// Seed of the initial weights (and mini-batch order).
    pub seed: u64,
}

impl TrainJob {
    /// A job with the default activation cache.
    pub fn new(arch: Architecture, penalty: Penalty, optimiser: Optimiser, seed: u64) -> Self {
        TrainJob {
            objective: ObjectiveSpec::new(arch, penalty),
            optimiser,
            seed,
        }
    }

    /// The same job with an activation cache of at most `bytes`
    /// ([`crate::run::limits::Plan`]).
    pub fn with_cache_bytes(mut self, bytes: usize) -> Self {
        self.objective.cache_bytes = bytes;
        self
    }
}

/// Trains on a patch store with the configured optimiser (loss and gradient in f32,
/// summed in f64), writing the trace to `loss_csv`.
pub fn train(store: &Store, job: &TrainJob, loss_csv: &Path) -> Result<Trained> {
    train_resumable(store, job, loss_csv, None, &Single)
}

/// [`train`] with checkpoints: resumes from the newest one in `ckpt`, saves new ones as
/// the policy says, and one at the end. Under `comm` every rank trains on its shard of
/// the store; rank 0 holds the checkpoints (pass `None` elsewhere) and sends the
/// resumed state to the others.
pub fn train_resumable(
    store: &Store,
    job: &TrainJob,
    loss_csv: &Path,
    ckpt: Option<(&Checkpoints, CheckpointPolicy)>,
    comm: &dyn Comm,
) -> Result<Trained> {
    let arch = job.objective.arch.clone();
    let meta = PatchMeta::of(store)?;
    let (norm, patch, channels) = (meta.norm, meta.patch, meta.channels);
    if store.dim() != arch.visible() {
        return Err(Error::bad(
            store.path(),
            format!(
                "rows have {} values, the network {}",
                store.dim(),
                arch.visible()
            ),
        ));
    }
    let resumed = match ckpt {
        Some((c, _)) => usable_checkpoint(c, &job.optimiser)?,
        None => None,
    };
    let resumed = if comm.size() > 1 {
        broadcast_value(comm, comm.is_root().then_some(resumed))?
    } else {
        resumed
    };
    let mut session = Session {
        trace: resumed
            .as_ref()
            .map(|c| c.trace.clone())
            .unwrap_or_default(),
        t0: Instant::now(),
        offset: 0.0,
        last_save: Instant::now(),
        since_save: 0,
        ckpt,
        loss_csv,
        comm,
    };
    session.offset = session.trace.last().map_or(0.0, |p| p.seconds);
    if let Some(c) = &resumed {
        let (unit, at) = match &c.opt {
            OptState::Lbfgs(s) => ("iteration", s.iter),
            OptState::Minibatch(s) => ("step", s.steps as usize),
            OptState::Omp1(s) => ("pass", s.pass),
        };
        say(format!(
            "train: resuming from checkpoint at {unit} {at} (loss {:.6})",
            session.trace.last().map_or(f64::NAN, |p| p.loss)
        ));
    }
    let ended = resumed.as_ref().and_then(|c| c.ended.clone());
    let (theta, loss, stop, iterations, evals) = match (job.optimiser, resumed.map(|c| c.opt)) {
        (Optimiser::Lbfgs(p), None) => run_lbfgs(store, job, &p, None, &mut session)?,
        (Optimiser::Lbfgs(p), Some(OptState::Lbfgs(s))) => {
            run_lbfgs(store, job, &p, Some((s, ended)), &mut session)?
        }
        (Optimiser::Minibatch(mb), None) => run_minibatch(store, job, &mb, None, &mut session)?,
        (Optimiser::Minibatch(mb), Some(OptState::Minibatch(s))) => {
            run_minibatch(store, job, &mb, Some(s), &mut session)?
        }
        _ => {
            return Err(Error::config(
                "train.optimizer",
                "the checkpoint was made by another optimiser (use --restart)",
            ))
        }
    };
    if comm.is_root() {
        write_trace(loss_csv, &session.trace)?;
    }
    let seconds = session.seconds();
    say(format!(
        "train: stopped ({stop}) after {iterations} iterations, {evals} evaluations, \
         loss {loss:.6}, {seconds:.1} s"
    ));
    let net = Network::from_theta(arch.clone(), &theta);
    Ok(Trained {
        model: Model {
            header: Header {
                arch,
                norm,
                patch,
                channels,
                loss,
                config: String::new(),
                iterations,
                stop: stop.clone(),
                learner: Some(Learner::Autoencoder),
            },
            net,
        },
        stop,
        iterations,
        evals,
        seconds,
    })
}

/// The newest checkpoint, if a run with these limits can continue from it. The
/// checkpoints of a trajectory are shared by every limit (`Hashes::lineage`): one
/// at or before the limit is where a longer run picks up; one past it belongs to a
/// longer run, and this shorter one starts again from the beginning.
fn usable_checkpoint(c: &Checkpoints, optimiser: &Optimiser) -> Result<Option<Checkpoint>> {
    let Some(latest) = c.latest()? else {
        return Ok(None);
    };
    let (limit, key, unit) = match (&latest.opt, optimiser) {
        (OptState::Lbfgs(_), Optimiser::Lbfgs(p)) => (p.max_iter, "max_iter", "iteration"),
        (OptState::Minibatch(_), Optimiser::Minibatch(mb)) => (mb.epochs, "epochs", "epoch"),
        // Another optimiser's state: refused by the caller with its reason.
        _ => return Ok(Some(latest)),
    };
    if within_limit(&latest.opt, limit) {
        return Ok(Some(latest));
    }
    say(format!(
        "train: the checkpoint at {unit} {} is past train.{key} = {limit} (a longer run \
         made it); training this one from the start",
        latest.position()
    ));
    c.clear()?;
    Ok(None)
}

/// Whether a run limited to `limit` iterations (L-BFGS) or epochs (mini-batch) passes
/// through `state`: a state part-way into the epoch after the last one does not.
fn within_limit(state: &OptState, limit: usize) -> bool {
    match state {
        OptState::Lbfgs(s) => s.iter <= limit,
        OptState::Minibatch(s) => s.epoch < limit || (s.epoch == limit && s.pos == 0),
        OptState::Omp1(s) => s.pass <= limit,
    }
}

/// Bookkeeping of one training session: trace, timing and checkpoint schedule.
struct Session<'a> {
    trace: Vec<TracePoint>,
    t0: Instant,
    offset: f64,
    last_save: Instant,
    since_save: usize,
    ckpt: Option<(&'a Checkpoints, CheckpointPolicy)>,
    loss_csv: &'a Path,
    comm: &'a dyn Comm,
}

impl Session<'_> {
    fn seconds(&self) -> f64 {
        self.offset + self.t0.elapsed().as_secs_f64()
    }

    /// Records a point and saves a checkpoint when one is due (or `force`).
    fn record(
        &mut self,
        point: TracePoint,
        opt: impl FnOnce() -> OptState,
        force: bool,
    ) -> Result<()> {
        self.trace.push(point);
        self.since_save += 1;
        let Some((c, policy)) = self.ckpt else {
            return Ok(());
        };
        let due = self.since_save >= policy.every
            || self.last_save.elapsed().as_secs_f64() >= policy.seconds;
        if force || due {
            c.save(&Checkpoint {
                opt: opt(),
                trace: self.trace.clone(),
                ended: None,
            })?;
            write_trace(self.loss_csv, &self.trace)?;
            self.since_save = 0;
            self.last_save = Instant::now();
        }
        Ok(())
    }
}

/// Writes the loss trace as CSV (atomically).
pub(crate) fn write_trace(path: &Path, trace: &[TracePoint]) -> Result<()> {
    let mut out = String::from("iteration,evaluations,loss,max_abs_gradient,seconds\n");
    for p in trace {
        out.push_str(&format!(
            "{},{},{:.9e},{},{:.3}\n",
            p.iteration,
            p.evals,
            p.loss,
            if p.gmax.is_nan() {
                String::new()
            } else {
                format!("{:.6e}", p.gmax)
            },
            p.seconds
        ));
    }
    crate::fsio::write_atomic(path, out.as_bytes())
}

/// The trace point of an L-BFGS iteration.
fn lbfgs_point(it: &crate::learn::optim::Iteration, seconds: f64) -> TracePoint {
    TracePoint {
        iteration: it.iter,
        evals: it.evals,
        loss: it.f,
        gmax: it.gmax,
        seconds,
    }
}

/// Parameters, final loss, stop reason, iterations, evaluations.
type Outcome = (Vec<f64>, f64, String, usize, usize);

fn run_lbfgs(
    store: &Store,
    job: &TrainJob,
    lbfgs: &LbfgsParams,
    resumed: Option<(LbfgsState, Option<String>)>,
    session: &mut Session,
) -> Result<Outcome> {
    if let Some((st, Some(why))) = resumed {
        // The interrupted run had already stopped here; stepping on would give
        // another result than the uninterrupted run.
        say(format!("train: the checkpoint is the final state ({why})"));
        return Ok((st.x, st.f, why, st.iter, st.evals));
    }
    let resumed = resumed.map(|r| r.0);
    let shard = Shard::of(store, session.comm.rank(), session.comm.size());
    let obj = job.objective.on(&shard).with_comm(session.comm);
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut fg = |theta: &[f64]| -> Result<(f64, Vec<f64>)> {
        let (loss, g) = obj.eval::<f32>(theta)?;
        Ok((loss.total, g))
    };
    let mut st = match resumed {
        Some(s) => s,
        None => {
            let s = LbfgsState::start(job.objective.arch.init(job.seed), &mut fg)?;
            let point = lbfgs_point(&s.progress(), session.seconds());
            session.record(point, || OptState::Lbfgs(s.clone()), true)?;
            s
        }
    };
    let stop = loop {
        let stop = st.step(lbfgs, &mut fg)?;
        let it = st.progress();
        if stop.is_none() {
            let point = lbfgs_point(&it, session.seconds());
            session.record(point, || OptState::Lbfgs(st.clone()), false)?;
            if it.iter.is_multiple_of(if tty { 1 } else { 10 }) {
                say(format!(
                    "train: iter {:4}/{}  loss {:.6}  max|g| {:.2e}  evals {}  {:.2} s/iter",
                    it.iter,
                    lbfgs.max_iter,
                    it.f,
                    it.gmax,
                    it.evals,
                    session.seconds() / it.iter.max(1) as f64
                ));
            }
        }
        if let Some(s) = stop {
            // A step that ended the run (a tolerance met) is the trace's last point;
            // it goes into the final checkpoint below, not a checkpoint of its own,
            // which a kill could leave without the stop reason.
            if session.trace.last().is_some_and(|p| p.iteration < it.iter) {
                let point = lbfgs_point(&it, session.seconds());
                session.trace.push(point);
            }
            break s;
        }
    };
    // A stop of the optimiser's own (not the iteration limit) is stored with the
    // state, so a kill before the model is written cannot make the rerun step on.
    let ended = (!matches!(stop, Stop::MaxIter)).then(|| format!("{stop:?}"));
    if let Some((c, _)) = session.ckpt {
        c.save(&Checkpoint {
            opt: OptState::Lbfgs(st.clone()),
            trace: session.trace.clone(),
            ended,
        })?;
    }
    if let Stop::LineSearchFailed(why) = &stop {
        say(format!(
            "train: line search failed ({why}); keeping the last good point"
        ));
    }
    Ok((st.x, st.f, format!("{stop:?}"), st.iter, st.evals))
}

fn run_minibatch(
    store: &Store,
    job: &TrainJob,
    mb: &MinibatchParams,
    resumed: Option<MinibatchState>,
    session: &mut Session,
) -> Result<Outcome> {
    let seed = job.seed;
    let init = job.objective.arch.init(seed);
    let mb = &if mb.probe {
        let (lr, tried) = probe_lr(store, &job.objective, mb, seed, session.comm, &init)?;
        say(format!(
            "train: learning rate {lr:.1e} by probe ({})",
            tried
                .iter()
                .map(|(lr, loss)| format!("{lr:.1e}: {loss:.4}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        MinibatchParams {
            method: mb.method.with_lr(lr),
            ..*mb
        }
    } else {
        *mb
    };
    let mut state = resumed.unwrap_or_else(|| MinibatchState::new(init));
    let per_epoch = steps_per_epoch(store, mb.batch);
    while state.epoch < mb.epochs {
        let mut prog = Progress::new(
            format!("train: epoch {}/{}", state.epoch + 1, mb.epochs),
            per_epoch - state.pos,
            "steps",
        );
        run_epoch(
            store,
            &job.objective,
            mb,
            seed,
            session.comm,
            &mut state,
            &mut |s, loss| {
                let point = TracePoint {
                    iteration: s.steps as usize,
                    evals: s.steps as usize,
                    loss,
                    gmax: f64::NAN,
                    seconds: session.seconds(),
                };
                prog.inc(1);
                session.record(point, || OptState::Minibatch(s.clone()), false)
            },
        )?;
        prog.finish();
        say(format!(
            "train: epoch {} mean mini-batch loss {:.6}",
            state.epoch,
            state.epoch_loss.last().copied().unwrap_or(f64::NAN)
        ));
    }
    if let Some((c, _)) = session.ckpt {
        c.save(&Checkpoint {
            opt: OptState::Minibatch(state.clone()),
            trace: session.trace.clone(),
            ended: None,
        })?;
    }
    // The reported loss is the full-batch objective at the final parameters.
    let shard = Shard::of(store, session.comm.rank(), session.comm.size());
    let (loss, _) = job
        .objective
        .on(&shard)
        .with_comm(session.comm)
        .eval::<f32>(&state.theta)?;
    let steps = state.steps as usize;
    let stop = format!(
        "EpochsDone (lr {:.1e}{})",
        mb.method.lr(),
        if mb.probe { " by probe" } else { "" }
    );
    Ok((state.theta, loss.total, stop, steps, steps))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_continues_only_from_states_on_its_own_path() {
        let mut mb = MinibatchState::new(vec![0.0; 3]);
        mb.epoch = 1;
        assert!(within_limit(&OptState::Minibatch(mb.clone()), 1));
        assert!(within_limit(&OptState::Minibatch(mb.clone()), 2));
        // Part-way into epoch 2: a one-epoch run never passed through here.
        mb.pos = 5;
        assert!(!within_limit(&OptState::Minibatch(mb.clone()), 1));
        assert!(within_limit(&OptState::Minibatch(mb), 2));
        let lbfgs = |iter| {
            OptState::Lbfgs(LbfgsState {
                x: vec![0.0],
                f: 1.0,
                g: vec![0.0],
                history: Default::default(),
                iter,
                evals: iter,
            })
        };
        assert!(within_limit(&lbfgs(10), 10));
        assert!(!within_limit(&lbfgs(11), 10));
    }
}
