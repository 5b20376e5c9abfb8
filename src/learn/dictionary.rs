//! Dictionaries learned without an objective, beside the autoencoder, for comparing
//! on equal terms (Coates & Ng 2011): `H` normalised training patches drawn at random
//! from the patch store, scaled to unit norm, as the code layer's weights.
//!
//! The result is an ordinary [`Model`]: a one-hidden-layer network whose first-layer
//! rows are the atoms (zero biases, the decoder their transpose), so encoding, pooling,
//! the classifiers, `sae show` and the run cache treat it like a trained autoencoder.
//! Its header says which learner made it.

use ndarray::Array2;
use rand::seq::index::sample;

use crate::data::store::{PatchMeta, Store};
use crate::error::{Error, Result};
use crate::learn::model::{Header, Model};
use crate::learn::sae::{Architecture, Decoder, Network};
use crate::rng::{stream, Stream};

/// The learner name recorded in model headers.
pub const RANDOM_PATCHES: &str = "random patches";

/// `hidden` distinct patches of `store`, drawn with `seed`, each scaled to unit norm.
/// Patches of (near) zero norm cannot be scaled and are an error naming the store.
pub fn random_patches(store: &Store, hidden: usize, seed: u64) -> Result<Model> {
    let meta = PatchMeta::of(store)?;
    let (rows, d) = (store.rows(), store.dim());
    if hidden == 0 || hidden > rows {
        return Err(Error::config(
            "model.hidden",
            format!("random patches need 1..={rows} atoms (the store's rows), not {hidden}"),
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
                let row = values.row(picks[next] - start);
                let norm = row
                    .iter()
                    .map(|v| f64::from(*v).powi(2))
                    .sum::<f64>()
                    .sqrt();
                if norm.is_nan() || norm <= 1e-8 {
                    return Err(Error::bad(
                        store.path(),
                        format!("patch {} has zero norm and cannot be an atom", picks[next]),
                    ));
                }
                atoms
                    .row_mut(next)
                    .iter_mut()
                    .zip(row)
                    .for_each(|(a, &v)| *a = (f64::from(v) / norm) as f32);
                next += 1;
            }
            store.release(b);
        }
        start += n;
    }
    let arch = Architecture::new(d, &[hidden], None, Decoder::Linear)?;
    let mut theta = vec![0f32; arch.n_params()];
    // W1 (hidden x d) is the atoms, W2 (d x hidden) their transpose, biases zero.
    theta[..hidden * d].copy_from_slice(atoms.as_slice().expect("standard layout"));
    let t = atoms.t();
    for (dst, src) in theta[hidden * d..2 * hidden * d].iter_mut().zip(t.iter()) {
        *dst = *src;
    }
    Ok(Model {
        header: Header {
            arch: arch.clone(),
            norm: meta.norm,
            patch: meta.patch,
            channels: meta.channels,
            loss: f64::NAN,
            config: String::new(),
            iterations: 0,
            stop: RANDOM_PATCHES.into(),
        },
        net: Network { arch, theta },
    })
}
