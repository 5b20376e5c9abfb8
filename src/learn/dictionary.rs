//! Dictionaries beside the autoencoder, for comparing on equal terms (Coates & Ng
//! 2011): `H` normalised training patches drawn at random from the patch store and
//! scaled to unit norm, and OMP-1 (gain-shape vector quantisation, "spherical k-means")
//! started from them: each pass over the store gives every patch to the atom of
//! largest |inner product|, and each atom becomes the unit-norm sum of its patches
//! weighted by those inner products.
//!
//! The result is an ordinary [`Model`]: a one-hidden-layer network whose first-layer
//! rows are the atoms (zero biases, the decoder their transpose), so encoding, pooling,
//! the classifiers, `sae show` and the run cache treat it like a trained autoencoder.
//! Its header says which learner made it.

use ndarray::{Array2, ArrayView1, ArrayViewMut1, Axis};
use rand::seq::index::sample;
use rayon::prelude::*;

use crate::data::store::{PatchMeta, Store};
use crate::error::{Error, Result};
use crate::learn::model::{Header, Model};
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
        RANDOM_PATCHES,
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

/// OMP-1 over `store` for `passes` full passes, from the atoms of [`random_patches`]
/// with `seed`. Rows are processed in fixed blocks whose sums are added in order, so
/// the result does not depend on the thread count. An atom no patch chose keeps its
/// old value.
pub fn omp1(store: &Store, hidden: usize, passes: usize, seed: u64) -> Result<Model> {
    let mut atoms = random_atoms(store, hidden, seed)?;
    let d = atoms.ncols();
    let mut bar = crate::progress::Progress::new("train: omp-1", passes, "passes");
    for _ in 0..passes {
        let mut sum = Array2::<f32>::zeros((hidden, d));
        let mut counts = vec![0usize; hidden];
        for b in 0..store.batches() {
            let batch = store.batch(b)?;
            let x = batch.values();
            let parts: Vec<(Array2<f32>, Vec<usize>)> = x
                .axis_chunks_iter(Axis(0), BLOCK)
                .collect::<Vec<_>>()
                .into_par_iter()
                .map(|xb| {
                    let s = xb.dot(&atoms.t());
                    let mut acc = Array2::<f32>::zeros((hidden, d));
                    let mut n = vec![0usize; hidden];
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
                    }
                    (acc, n)
                })
                .collect();
            for (acc, n) in parts {
                sum += &acc;
                counts.iter_mut().zip(n).for_each(|(c, k)| *c += k);
            }
            store.release(b);
        }
        for ((atom, new), &n) in atoms.rows_mut().into_iter().zip(sum.rows()).zip(&counts) {
            if n > 0 {
                set_unit(atom, new);
            }
        }
        bar.inc(1);
    }
    bar.finish();
    Ok(dictionary_model(atoms, PatchMeta::of(store)?, OMP1, passes))
}

/// A one-hidden-layer model whose first-layer rows are `atoms` (the decoder their
/// transpose, biases zero), made by the learner named `stop` in `iterations` passes.
fn dictionary_model(atoms: Array2<f32>, meta: PatchMeta, stop: &str, iterations: usize) -> Model {
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
        },
        net: Network { arch, theta },
    }
}
