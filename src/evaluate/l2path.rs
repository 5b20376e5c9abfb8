//! Checkpoints of the linear classifiers' L2 path, so that a killed classify resumes
//! from its last finished candidate and a longer grid continues a shorter one.
//!
//! Each stage of the path (a candidate, or the refit on all rows) is saved as one file
//! named by the hash of everything that determines its solution: what the caller
//! names as the fit's identity (feature file, classifier), the standardiser, the split,
//! the iteration budgets, and the L2 values of the path up to and including it. Every
//! candidate starts from the previous solution alone (a fresh L-BFGS history), so a
//! resumed path reaches exactly the solutions of an uninterrupted one, and a grid that
//! extends an earlier one (3e-3 … 1e-4 to 3e-3 … 3e-5) trains only its new candidates.
//!
//! ```text
//! <dir>/<hash>.fit   "SAEFIT01", CRC-32 of the body (u32 LE), bincode body:
//!                    the key, θ (f64), validation accuracy, L-BFGS iterations
//! ```
//!
//! Files are written whole or not at all ([`crate::fsio::write_atomic`]). One that
//! does not read back (damaged, or another key under the same hash) is reported and
//! its stage trained again.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"SAEFIT01";

/// A stage's solution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Solution {
    /// `[W (row-major, classes x d), b]`.
    pub theta: Vec<f64>,
    /// Validation accuracy of a candidate (NaN for the refit).
    pub accuracy: f64,
    /// L-BFGS iterations the stage took.
    pub iterations: usize,
}

#[derive(Serialize, Deserialize)]
struct Body {
    key: String,
    solution: Solution,
}

/// The saved stages of one fit's path.
#[derive(Clone, Debug)]
pub struct PathCheckpoints {
    dir: PathBuf,
    identity: String,
}

impl PathCheckpoints {
    /// Stages saved under `dir`, for the fit that `identity` names (with the features'
    /// file and its modification time, so that re-encoded features start afresh).
    pub fn new(dir: impl Into<PathBuf>, identity: impl Into<String>) -> Self {
        PathCheckpoints {
            dir: dir.into(),
            identity: identity.into(),
        }
    }

    /// The key of stage `stage` of a fit with settings `fit` after the L2 values `l2s`.
    pub fn key(&self, fit: &serde_json::Value, stage: &str, l2s: &[f64]) -> String {
        // Exact values, so that 1e-4 and a nearby 1.0000001e-4 never share a stage.
        let l2: Vec<String> = l2s
            .iter()
            .map(|v| format!("{:016x}", v.to_bits()))
            .collect();
        serde_json::json!({
            "identity": self.identity, "fit": fit, "stage": stage, "l2": l2,
        })
        .to_string()
    }

    /// The file of the stage with `key`.
    pub fn file(&self, key: &str) -> PathBuf {
        let salted = format!("sae-fit/{key}");
        self.dir.join(format!(
            "{:08x}{:08x}.fit",
            crc32fast::hash(key.as_bytes()),
            crc32fast::hash(salted.as_bytes())
        ))
    }

    /// The saved solution of `key`, when there is one that reads back whole, with
    /// `params` finite parameters. A file that does not is reported and ignored.
    pub fn load(&self, key: &str, params: usize) -> Result<Option<Solution>> {
        let file = self.file(key);
        let blob = match std::fs::read(&file) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&file)(e)),
        };
        match decode(&blob, key, params) {
            Ok(s) => Ok(Some(s)),
            Err(problem) => {
                crate::progress::say(format!(
                    "classify: {}: {problem}; training that stage again",
                    file.display()
                ));
                Ok(None)
            }
        }
    }

    /// Saves the solution of `key` (durable when this returns).
    pub fn save(&self, key: &str, s: &Solution) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(Error::io(&self.dir))?;
        let body = bincode::serialize(&Body {
            key: key.to_string(),
            solution: s.clone(),
        })
        .expect("a solution serialises");
        let mut blob = Vec::with_capacity(body.len() + 12);
        blob.extend_from_slice(MAGIC);
        blob.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        blob.extend_from_slice(&body);
        crate::fsio::write_atomic(&self.file(key), &blob)
    }

    /// The folder of the saved stages.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn decode(blob: &[u8], key: &str, params: usize) -> std::result::Result<Solution, String> {
    if blob.len() < 12 || &blob[..8] != MAGIC {
        return Err("not a saved classifier stage".into());
    }
    let crc = u32::from_le_bytes(blob[8..12].try_into().expect("4 bytes"));
    if crc32fast::hash(&blob[12..]) != crc {
        return Err("checksum mismatch (damaged)".into());
    }
    use bincode::Options;
    let body: Body = bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .with_limit(blob.len() as u64)
        .deserialize(&blob[12..])
        .map_err(|e| format!("undecodable: {e}"))?;
    if body.key != key {
        return Err("saved for another fit (hash collision)".into());
    }
    let s = body.solution;
    if s.theta.len() != params || s.theta.iter().any(|v| !v.is_finite()) {
        return Err(format!(
            "holds {} parameters, not {params} finite ones",
            s.theta.len()
        ));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_stage_reads_back_only_under_its_own_key_and_whole() {
        let d = tempfile::tempdir().unwrap();
        let c = PathCheckpoints::new(d.path().join("fits"), "features-a svm");
        let fit = serde_json::json!({"max_iter": 10});
        let k = c.key(&fit, "candidate", &[1e-3, 1e-4]);
        let s = Solution {
            theta: vec![0.5, -1.25, 3.0],
            accuracy: 0.75,
            iterations: 9,
        };
        assert_eq!(c.load(&k, 3).unwrap(), None);
        c.save(&k, &s).unwrap();
        assert_eq!(c.load(&k, 3).unwrap(), Some(s.clone()));
        // Another path prefix, stage, settings or identity is another key and file.
        let others = [
            c.key(&fit, "candidate", &[1e-3]),
            c.key(&fit, "refit", &[1e-3, 1e-4]),
            c.key(
                &serde_json::json!({"max_iter": 11}),
                "candidate",
                &[1e-3, 1e-4],
            ),
            PathCheckpoints::new(d.path().join("fits"), "features-b svm").key(
                &fit,
                "candidate",
                &[1e-3, 1e-4],
            ),
        ];
        for o in &others {
            assert_ne!(c.file(o), c.file(&k));
            assert_eq!(c.load(o, 3).unwrap(), None);
        }
        // The wrong size, a flipped byte, a cut file: ignored, not returned.
        assert_eq!(c.load(&k, 4).unwrap(), None);
        let f = c.file(&k);
        let mut blob = std::fs::read(&f).unwrap();
        let last = blob.len() - 1;
        blob[last] ^= 1;
        std::fs::write(&f, &blob).unwrap();
        assert_eq!(c.load(&k, 3).unwrap(), None);
        std::fs::write(&f, &blob[..10]).unwrap();
        assert_eq!(c.load(&k, 3).unwrap(), None);
        // A key that lands on another key's file is not taken for it.
        c.save(&k, &s).unwrap();
        std::fs::copy(&f, c.file(&others[0])).unwrap();
        assert_eq!(c.load(&others[0], 3).unwrap(), None);
    }
}
