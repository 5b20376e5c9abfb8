//! The model file: trained network, fitted normalisation and patch geometry, so that
//! encoding applies exactly what training saw.
//!
//! Layout: magic `SAEMODEL`, format version (u32 LE), header length (u64 LE), a JSON
//! header, the parameters as f32 LE, and a CRC-32 of everything before it. Written to
//! a temporary file, synced, then renamed, so a crash never leaves a torn model.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::preprocess::Normaliser;
use crate::sae::{Architecture, Network};

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
    /// Final training loss.
    pub loss: f64,
    /// Hash of the config that trained it (empty when trained outside a run).
    #[serde(default)]
    pub config: String,
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
        write_atomic(path, &buf)
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
            return Err(Error::bad(
                path,
                format!("incompatible model version {version}; this build reads {VERSION}"),
            ));
        }
        let (body, crc) = buf.split_at(buf.len() - 4);
        if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
            return Err(bad("checksum mismatch (damaged or truncated)"));
        }
        let hlen = u64::from_le_bytes(buf[12..20].try_into().expect("8 bytes")) as usize;
        if hlen > body.len() - 20 {
            return Err(bad("header length exceeds the file"));
        }
        let header: Header = serde_json::from_slice(&body[20..20 + hlen])
            .map_err(|e| Error::bad(path, format!("bad header: {e}")))?;
        let params = &body[20 + hlen..];
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

/// Writes `bytes` to `path` through a synced temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp).map_err(Error::io(&tmp))?;
        f.write_all(bytes).map_err(Error::io(&tmp))?;
        f.sync_all().map_err(Error::io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(Error::io(path))
}
