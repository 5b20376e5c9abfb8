//! Dictionaries beside the autoencoder, for comparing on equal terms (Coates & Ng
//! 2011): `H` normalised training patches drawn at random from the patch store and
//! scaled to unit norm, and OMP-1 (gain-shape vector quantisation, "spherical k-means")
//! started from them: each pass over the store gives every patch to the atom of
//! largest |inner product|, and each atom becomes the unit-norm sum of its patches
//! weighted by those inner products.
//!
//! OMP-1 checkpoints its atoms after every pass (like training, in the run's checkpoint
//! database), so a killed run resumes at the last pass and ends with the same atoms;
//! `model.passes` is its limit, so a longer run continues a shorter one's passes.
//!
//! The result is an ordinary [`Model`]: a one-hidden-layer network whose first-layer
//! rows are the atoms (zero biases, the decoder their transpose), so encoding, pooling,
//! the classifiers, `sae show` and the run cache treat it like a trained autoencoder.
//! Its header says which learner made it.

use std::time::Instant;

use ndarray::{Array2, ArrayView1, ArrayViewMut1, Axis};
use rand::seq::index::sample;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::store::{PatchMeta, Store};
use crate::error::{Error, Result};
use crate::learn::checkpoint::{Checkpoint, Checkpoints, OptState, TracePoint};
use crate::learn::model::{Header, Learner, Model};
use crate::learn::sae::{Architecture, Decoder, Network};
use crate::rng::{stream, Stream};

/// The learner names recorded in model headers.
pub const RANDOM_PATCHES: &str = "random patches";
/// See [`RANDOM_PATCHES`]; the header's `iterations` holds the passes.
pub const OMP1: &str = "omp-1";

/// Rows per parallel block of an OMP-1 pass.
const BLOCK: usize = 4096;

/// `hidden` distinct patches of `store`, drawn with `seed`, each scaled to unit norm.
pub fn random_patches(store: &Store, hidden: usize, seed: u64) -> Result<Model> {
    let atoms = random_atoms(store, hidden, seed)?;
    Ok(dictionary_model(
        atoms,
        PatchMeta::of(store)?,
        Learner::Random,
        0,
    ))
}

/// The atoms of [`random_patches`]. Patches of (near) zero norm cannot be scaled and
/// are an error naming the store.
fn random_atoms(store: &Store, hidden: usize, seed: u64) -> Result<Array2<f32>> {
    let (rows, d) = (store.rows(), store.dim());
    if hidden == 0 || hidden > rows {
        return Err(Error::config(
            "model.hidden",
            format!(
                "random patches need 1..={rows} atoms (the rows of {}), not {hidden}",
                store.path().display()
            ),
        ));
    }
    let mut picks = sample(&mut stream(seed, Stream::Init, 1), rows, hidden).into_vec();
    picks.sort_unstable();
    let mut atoms = Array2::<f32>::zeros((hidden, d));
    let mut next = 0;
    let mut start = 0;
    for b in 0..store.batches() {
        let n = store.batch_rows(b);
        if next < hidden && picks[next] < start + n {
            let batch = store.batch(b)?;
            let values = batch.values();
            while next < hidden && picks[next] < start + n {
                if !set_unit(atoms.row_mut(next), values.row(picks[next] - start)) {
                    return Err(Error::bad(
                        store.path(),
                        format!("patch {} has zero norm and cannot be an atom", picks[next]),
                    ));
                }
                next += 1;
            }
            store.release(b);
        }
        start += n;
    }
    Ok(atoms)
}

/// Sets `dst` to `src` scaled to unit norm (in f64); false, leaving `dst` as it was,
/// when `src` has no direction to keep.
fn set_unit(mut dst: ArrayViewMut1<f32>, src: ArrayView1<f32>) -> bool {
    let norm = src
        .iter()
        .map(|v| f64::from(*v).powi(2))
        .sum::<f64>()
        .sqrt();
    if norm.is_nan() || norm <= 1e-8 {
        return false;
    }
    dst.iter_mut()
        .zip(src)
        .for_each(|(a, &v)| *a = (f64::from(v) / norm) as f32);
    true
}

/// An OMP-1 dictionary after `pass` passes, as checkpointed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Omp1State {
    /// Passes done.
    pub pass: usize,
    /// Atoms, row-major (hidden x patch values).
    pub atoms: Vec<f32>,
    /// Number of atoms.
    pub hidden: usize,
}

/// The checkpoint to continue from, if `ckpt` holds one this run passes through.
fn resumable(
    ckpt: &Checkpoints,
    hidden: usize,
    d: usize,
    passes: usize,
) -> Result<Option<(Omp1State, Vec<TracePoint>)>> {
    let Some(c) = ckpt.latest()? else {
        return Ok(None);
    };
    match c.opt {
        OptState::Omp1(s) if s.hidden == hidden && s.atoms.len() == hidden * d => {
            if s.pass <= passes {
                return Ok(Some((s, c.trace)));
            }
            crate::progress::say(format!(
                "train: the checkpoint at pass {} is past model.passes = {passes} (a longer \
                 run made it); learning this one from the start",
                s.pass
            ));
        }
        _ => crate::progress::say(
            "train: the checkpoint holds no OMP-1 dictionary of this size; learning from the start",
        ),
    }
    ckpt.clear()?;
    Ok(None)
}

/// OMP-1 over `store` for `passes` full passes, from the atoms of [`random_patches`]
/// with `seed`, or from the last pass checkpointed in `ckpt`. Rows are processed in
/// fixed blocks whose sums are added in order, so the result does not depend on the
/// thread count. An atom no patch chose keeps its old value. Returns the model and
/// the trace: per pass, the mean squared residual of the patches' one-atom
/// approximations before that pass's update (the objective OMP-1 lowers).
pub fn omp1(
    store: &Store,
    hidden: usize,
    passes: usize,
    seed: u64,
    ckpt: Option<&Checkpoints>,
) -> Result<(Model, Vec<TracePoint>)> {
    let d = store.dim();
    let resumed = match ckpt {
        Some(c) => resumable(c, hidden, d, passes)?,
        None => None,
    };
    let (mut atoms, mut trace, first) = match resumed {
        Some((s, trace)) => {
            crate::progress::say(format!("train: omp-1 resuming after pass {}", s.pass));
            let atoms = Array2::from_shape_vec((hidden, d), s.atoms).expect("checked size");
            (atoms, trace, s.pass)
        }
        None => (random_atoms(store, hidden, seed)?, Vec::new(), 0),
    };
    let offset = trace.last().map_or(0.0, |p| p.seconds);
    let t0 = Instant::now();
    let mut bar = crate::progress::Progress::new("train: omp-1", passes - first, "passes");
    for pass in first..passes {
        let mut sum = Array2::<f32>::zeros((hidden, d));
        let mut counts = vec![0usize; hidden];
        let mut residual = 0.0f64;
        for b in 0..store.batches() {
            let batch = store.batch(b)?;
            let x = batch.values();
            let parts: Vec<(Array2<f32>, Vec<usize>, f64)> = x
                .axis_chunks_iter(Axis(0), BLOCK)
                .collect::<Vec<_>>()
                .into_par_iter()
                .map(|xb| {
                    let s = xb.dot(&atoms.t());
                    let mut acc = Array2::<f32>::zeros((hidden, d));
                    let mut n = vec![0usize; hidden];
                    let mut r = 0.0f64;
                    for (row, sr) in xb.rows().into_iter().zip(s.rows()) {
                        let (j, v) = sr.iter().enumerate().fold((0, 0f32), |(bj, bv), (j, &v)| {
                            if v.abs() > bv.abs() {
                                (j, v)
                            } else {
                                (bj, bv)
                            }
                        });
                        acc.row_mut(j).scaled_add(v, &row);
                        n[j] += 1;
                        r += f64::from(row.dot(&row)) - f64::from(v) * f64::from(v);
                    }
                    (acc, n, r)
                })
                .collect();
            for (acc, n, r) in parts {
                sum += &acc;
                counts.iter_mut().zip(n).for_each(|(c, k)| *c += k);
                residual += r;
            }
            store.release(b);
        }
        for ((atom, new), &n) in atoms.rows_mut().into_iter().zip(sum.rows()).zip(&counts) {
            if n > 0 {
                set_unit(atom, new);
            }
        }
        trace.push(TracePoint {
            iteration: pass + 1,
            evals: pass + 1,
            loss: residual / store.rows().max(1) as f64,
            gmax: f64::NAN,
            seconds: offset + t0.elapsed().as_secs_f64(),
        });
        if let Some(c) = ckpt {
            c.save(&Checkpoint {
                opt: OptState::Omp1(Omp1State {
                    pass: pass + 1,
                    atoms: atoms.iter().copied().collect(),
                    hidden,
                }),
                trace: trace.clone(),
                ended: None,
            })?;
        }
        bar.inc(1);
    }
    bar.finish();
    let mut model = dictionary_model(atoms, PatchMeta::of(store)?, Learner::Omp1, passes);
    model.header.loss = trace.last().map_or(f64::NAN, |p| p.loss);
    Ok((model, trace))
}

/// A one-hidden-layer model whose first-layer rows are `atoms` (the decoder their
/// transpose, biases zero), made by `learner` in `iterations` passes.
fn dictionary_model(
    atoms: Array2<f32>,
    meta: PatchMeta,
    learner: Learner,
    iterations: usize,
) -> Model {
    let stop = match learner {
        Learner::Random => RANDOM_PATCHES,
        Learner::Omp1 => OMP1,
        Learner::Autoencoder => unreachable!("an autoencoder is trained, not drawn"),
    };
    let (hidden, d) = atoms.dim();
    let arch = Architecture::new(d, &[hidden], None, Decoder::Linear).expect("valid shape");
    let mut theta = vec![0f32; arch.n_params()];
    // W1 (hidden x d) is the atoms, W2 (d x hidden) their transpose, biases zero.
    theta[..hidden * d].copy_from_slice(atoms.as_slice().expect("standard layout"));
    let t = atoms.t();
    for (dst, src) in theta[hidden * d..2 * hidden * d].iter_mut().zip(t.iter()) {
        *dst = *src;
    }
    Model {
        header: Header {
            arch: arch.clone(),
            norm: meta.norm,
            patch: meta.patch,
            channels: meta.channels,
            loss: f64::NAN,
            config: String::new(),
            iterations,
            stop: stop.into(),
            learner: Some(learner),
        },
        net: Network { arch, theta },
    }
}
