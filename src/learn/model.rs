//! The model file: trained network, fitted normalisation and patch geometry, so that
//! encoding applies exactly what training saw.
//!
//! Layout: magic `SAEMODEL`, format version (u32 LE), header length (u64 LE), a JSON
//! header, the parameters as f32 LE, and a CRC-32 of everything before it. Written to
//! a temporary file, synced, then renamed, so a crash never leaves a torn model.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::data::preprocess::Normaliser;
use crate::error::{Error, Result};
use crate::learn::sae::{Architecture, Network};

const MAGIC: &[u8; 8] = b"SAEMODEL";
/// Model format version.
pub const VERSION: u32 = 1;

/// Everything about a trained model except its parameters.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Header {
    /// Network shape.
    pub arch: Architecture,
    /// Fitted normalisation.
    pub norm: Normaliser,
    /// Patch side.
    pub patch: usize,
    /// Channels per pixel.
    pub channels: usize,
    /// Final training loss (NaN for dictionaries that minimise none; written as null).
    #[serde(deserialize_with = "null_as_nan")]
    pub loss: f64,
    /// Hash of the config that trained it (empty when trained outside a run).
    #[serde(default)]
    pub config: String,
    /// L-BFGS iterations or mini-batch steps it was trained for (0: not recorded).
    #[serde(default)]
    pub iterations: usize,
    /// Why training stopped (empty: not recorded).
    #[serde(default)]
    pub stop: String,
    /// What made the code layer. `None` only in files written before the field, where
    /// [`Header::learner`] reads it from `stop`.
    #[serde(default)]
    pub learner: Option<Learner>,
}

impl Header {
    /// What made the code layer.
    pub fn learner(&self) -> Learner {
        self.learner.unwrap_or(match self.stop.as_str() {
            crate::learn::dictionary::OMP1 => Learner::Omp1,
            crate::learn::dictionary::RANDOM_PATCHES => Learner::Random,
            _ => Learner::Autoencoder,
        })
    }
}

/// What makes the code layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Learner {
    /// The sparse autoencoder, trained by `[train]`.
    #[default]
    Autoencoder,
    /// `hidden` random patches of the store at unit norm (Coates & Ng 2011's baseline).
    Random,
    /// OMP-1 (spherical k-means) from random patches, `passes` passes over the store.
    Omp1,
}

impl Learner {
    /// Whether this is the default (left out of the config's hash, so configs from
    /// before the key keep their cache names).
    pub fn is_autoencoder(&self) -> bool {
        *self == Learner::Autoencoder
    }

    /// The name configs use for it.
    pub fn name(self) -> &'static str {
        match self {
            Learner::Autoencoder => "autoencoder",
            Learner::Random => "random",
            Learner::Omp1 => "omp1",
        }
    }
}

/// JSON has no NaN: serde_json writes it as null, read back here.
pub(crate) fn null_as_nan<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// A trained model.
#[derive(Clone, Debug)]
pub struct Model {
    /// Metadata.
    pub header: Header,
    /// The network (its `arch` equals `header.arch`).
    pub net: Network,
}

impl Model {
    /// Saves atomically to `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let head = serde_json::to_vec(&self.header).expect("header serialises");
        let mut buf = Vec::with_capacity(24 + head.len() + 4 * self.net.theta.len());
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&VERSION.to_le_bytes());
        buf.extend_from_slice(&(head.len() as u64).to_le_bytes());
        buf.extend_from_slice(&head);
        for t in &self.net.theta {
            buf.extend_from_slice(&t.to_le_bytes());
        }
        let crc = crc32fast::hash(&buf);
        buf.extend_from_slice(&crc.to_le_bytes());
        crate::fsio::write_atomic(path, &buf)
    }

    /// Loads from `path`, checking magic, version, sizes and checksum.
    pub fn load(path: &Path) -> Result<Model> {
        let buf = std::fs::read(path).map_err(Error::io(path))?;
        let bad = |m: &str| Error::bad(path, m.to_string());
        if buf.len() < 24 || &buf[..8] != MAGIC {
            return Err(bad("not an sae model file"));
        }
        let version = u32::from_le_bytes(buf[8..12].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(Error::Incompatible {
                path: path.to_path_buf(),
                what: "model",
                found: version.to_string(),
                reads: VERSION.to_string(),
                hint: "",
            });
        }
        let (body, crc) = buf.split_at(buf.len() - 4);
        if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
            return Err(Error::corrupt(
                path,
                "checksum mismatch (damaged or truncated)",
            ));
        }
        let hlen = u64::from_le_bytes(buf[12..20].try_into().expect("8 bytes")) as usize;
        if hlen > body.len() - 20 {
            return Err(bad("header length exceeds the file"));
        }
        let header: Header = serde_json::from_slice(&body[20..20 + hlen])
            .map_err(|e| Error::bad(path, format!("bad header: {e}")))?;
        let params = &body[20 + hlen..];
        check_header(&header, params.len()).map_err(|m| bad(&m))?;
        if params.len() != 4 * header.arch.n_params() {
            return Err(bad("parameter block does not match the architecture"));
        }
        let theta = params
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        let net = Network {
            arch: header.arch.clone(),
            theta,
        };
        Ok(Model { header, net })
    }
}

/// Checks a header read from a file before any size in it is used: the network must
/// be one `Architecture::new` builds, its input must be `channels · patch²` values,
/// and its parameter count (with overflow checked) must fit `param_bytes`.
fn check_header(h: &Header, param_bytes: usize) -> std::result::Result<(), String> {
    let a = &h.arch;
    let n = a.sizes.len();
    if n < 3 || a.sizes.contains(&0) || a.sizes[0] != a.sizes[n - 1] {
        return Err(format!("header has an impossible network {:?}", a.sizes));
    }
    if a.sparse == 0 || a.sparse >= n - 1 {
        return Err(format!(
            "header's sparse layer {} is not a hidden layer",
            a.sparse
        ));
    }
    let input = h
        .patch
        .checked_mul(h.patch)
        .and_then(|v| v.checked_mul(h.channels));
    if input != Some(a.sizes[0]) {
        return Err(format!(
            "header's {} inputs do not match {} channels of {}x{} patches",
            a.sizes[0], h.channels, h.patch, h.patch
        ));
    }
    let norm_ok = match &h.norm {
        Normaliser::Ufldl { pstd } => pstd.is_finite() && *pstd > 0.0,
        Normaliser::Zca {
            mean, w, cn_eps, ..
        } => {
            mean.len() == input.unwrap_or(0)
                && Some(w.len()) == mean.len().checked_mul(mean.len())
                && cn_eps.is_finite()
                && mean.iter().chain(w).all(|v| v.is_finite())
        }
    };
    if !norm_ok {
        return Err("header's normalisation does not fit its patches or is not finite".into());
    }
    let count = a.sizes.windows(2).try_fold(0usize, |k, w| {
        w[0].checked_mul(w[1])
            .and_then(|v| v.checked_add(w[1]))
            .and_then(|v| k.checked_add(v))
    });
    match count.and_then(|c| c.checked_mul(4)) {
        Some(b) if b == param_bytes => Ok(()),
        _ => Err("parameter block does not match the architecture".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Files from before the `learner` field name a dictionary learner only in `stop`.
    #[test]
    fn an_older_header_says_its_learner_by_its_stop_reason() {
        let arch = Architecture::new(4, &[2], None, crate::learn::sae::Decoder::Linear).unwrap();
        let mut h = Header {
            arch,
            norm: Normaliser::Ufldl { pstd: 0.3 },
            patch: 2,
            channels: 1,
            loss: f64::NAN,
            config: String::new(),
            iterations: 3,
            stop: crate::learn::dictionary::OMP1.into(),
            learner: Some(Learner::Omp1),
        };
        let older = |h: &Header| -> Header {
            let mut v = serde_json::to_value(h).unwrap();
            v.as_object_mut().unwrap().remove("learner");
            serde_json::from_value(v).unwrap()
        };
        assert_eq!(older(&h).learner(), Learner::Omp1);
        h.stop = crate::learn::dictionary::RANDOM_PATCHES.into();
        assert_eq!(older(&h).learner(), Learner::Random);
        h.stop = "MaxIter".into();
        assert_eq!(older(&h).learner(), Learner::Autoencoder);
        // A recorded learner is what the header says, whatever `stop` holds.
        let back: Header = serde_json::from_value(serde_json::to_value(&h).unwrap()).unwrap();
        assert_eq!(back.learner(), Learner::Omp1);
        for l in [Learner::Autoencoder, Learner::Random, Learner::Omp1] {
            assert_eq!(
                serde_json::to_value(l).unwrap(),
                l.name(),
                "the config's name"
            );
        }
    }
}
