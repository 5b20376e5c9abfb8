//! Checkpoints of the linear classifiers' L2 path, so that a killed classify resumes
//! from its last finished stage and a longer grid continues a shorter one.
//!
//! Each stage of the path (a candidate, or the refit on all rows) is saved as one file
//! named by a hash of everything that determines its solution: what the caller names
//! as the fit's identity (feature file, classifier), the labels, the standardiser, the
//! split, the optimiser's settings and budgets, and the L2 values of the path up to and
//! including it. Every candidate starts from the previous solution alone (a fresh
//! L-BFGS history), so a resumed path reaches exactly the solutions of an
//! uninterrupted one, and a grid that extends an earlier one downwards (3e-3 … 1e-4 to
//! 3e-3 … 3e-5) trains only its new candidates; the refit follows the candidates up to
//! the chosen one, so it is read back too while the choice stands.
//!
//! ```text
//! <dir>/<stage>-<k>-<hash>.fit   "SAEFIT01", CRC-32 of the body (u32 LE), bincode
//!                                body: the key, the build that trained it, θ (f64),
//!                                validation accuracy, L-BFGS iterations
//! ```
//!
//! Files are written whole or not at all ([`crate::fsio::write_atomic`]). The files
//! only save time, so none of their faults stops a fit: one that does not read back
//! (damaged, unreadable, or another key under the same hash) is reported and its stage
//! trained again, and one that cannot be written is reported and the fit goes on.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::Result;

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
    build: String,
    solution: Solution,
}

/// The saved stages of one fit's path.
#[derive(Clone, Debug)]
pub struct PathCheckpoints {
    dir: PathBuf,
    identity: String,
}

/// A stage of the path: its kind, its place and its key.
pub struct Stage {
    name: String,
    key: String,
}

/// 64-bit FNV-1a: stable across builds and platforms, and unlike a CRC not affine, so
/// keys of one length do not collide in pairs.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
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

    /// Stage `stage` of a fit whose solution is determined by `fit` and the L2 values
    /// `l2s` of the path up to and including it.
    pub fn stage(&self, fit: &serde_json::Value, stage: &str, l2s: &[f64]) -> Stage {
        // Exact values, so that 1e-4 and a nearby 1.0000001e-4 never share a stage.
        let l2: Vec<String> = l2s
            .iter()
            .map(|v| format!("{:016x}", v.to_bits()))
            .collect();
        let key = serde_json::json!({
            "identity": self.identity, "fit": fit, "stage": stage, "l2": l2,
        })
        .to_string();
        Stage {
            name: format!("{stage}-{}-{:016x}.fit", l2s.len(), fnv1a(key.as_bytes())),
            key,
        }
    }

    /// The file of `stage`.
    pub fn file(&self, stage: &Stage) -> PathBuf {
        self.dir.join(&stage.name)
    }

    /// The saved solution of `stage`, when there is one that reads back whole, with
    /// `params` finite parameters, and the build that trained it. A file that does not
    /// is reported and ignored.
    pub fn load(&self, stage: &Stage, params: usize) -> Option<(Solution, String)> {
        let file = self.file(stage);
        let found = match std::fs::read(&file) {
            Ok(blob) => decode(&blob, &stage.key, params),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => Err(format!("unreadable ({e})")),
        };
        found
            .map_err(|problem| {
                crate::progress::say(format!(
                    "classify: {}: {problem}; training that stage again",
                    file.display()
                ))
            })
            .ok()
    }

    /// Saves the solution of `stage` (durable when this returns). A failure is
    /// reported, not returned: the fit goes on without the checkpoint.
    pub fn save(&self, stage: &Stage, s: &Solution) {
        if let Err(e) = self.try_save(stage, s) {
            crate::progress::say(format!(
                "classify: could not save the stage ({e}); going on without its checkpoint"
            ));
        }
    }

    fn try_save(&self, stage: &Stage, s: &Solution) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(crate::error::Error::io(&self.dir))?;
        let body = Body {
            key: stage.key.clone(),
            build: crate::run::stamp::git_rev().to_string(),
            solution: s.clone(),
        };
        let blob = crate::fsio::framed(MAGIC, &body);
        crate::fsio::write_atomic(&self.file(stage), &blob)
    }
}

fn decode(
    blob: &[u8],
    key: &str,
    params: usize,
) -> std::result::Result<(Solution, String), String> {
    use crate::fsio::Unframed;
    if !blob.starts_with(MAGIC) {
        return Err("not a saved classifier stage".into());
    }
    let body: Body = crate::fsio::unframe(blob, MAGIC.len()).map_err(|e| match e {
        Unframed::Short => "cut short".to_string(),
        Unframed::Checksum => "checksum mismatch (damaged)".to_string(),
        Unframed::Decode(e) => format!("undecodable: {e}"),
    })?;
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
    Ok((s, body.build))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_stage_reads_back_only_under_its_own_key_and_whole() {
        let d = tempfile::tempdir().unwrap();
        let c = PathCheckpoints::new(d.path().join("fits"), "features-a svm");
        let fit = serde_json::json!({"max_iter": 10});
        let k = c.stage(&fit, "candidate", &[1e-3, 1e-4]);
        let s = Solution {
            theta: vec![0.5, -1.25, 3.0],
            accuracy: 0.75,
            iterations: 9,
        };
        assert_eq!(c.load(&k, 3), None);
        c.save(&k, &s);
        let (back, build) = c.load(&k, 3).unwrap();
        assert_eq!(back, s);
        assert_eq!(build, crate::run::stamp::git_rev());
        // Another path prefix, stage, settings or identity is another key and file.
        let others = [
            c.stage(&fit, "candidate", &[1e-3]),
            c.stage(&fit, "candidate", &[1e-3, 1.0000001e-4]),
            c.stage(&fit, "refit", &[1e-3, 1e-4]),
            c.stage(
                &serde_json::json!({"max_iter": 11}),
                "candidate",
                &[1e-3, 1e-4],
            ),
            PathCheckpoints::new(d.path().join("fits"), "features-b svm").stage(
                &fit,
                "candidate",
                &[1e-3, 1e-4],
            ),
        ];
        for o in &others {
            assert_ne!(c.file(o), c.file(&k));
            assert_eq!(c.load(o, 3), None);
        }
        // The wrong size, a flipped byte, a cut file, a folder in its place: ignored.
        assert_eq!(c.load(&k, 4), None);
        let f = c.file(&k);
        let mut blob = std::fs::read(&f).unwrap();
        let last = blob.len() - 1;
        blob[last] ^= 1;
        std::fs::write(&f, &blob).unwrap();
        assert_eq!(c.load(&k, 3), None);
        std::fs::write(&f, &blob[..10]).unwrap();
        assert_eq!(c.load(&k, 3), None);
        std::fs::remove_file(&f).unwrap();
        std::fs::create_dir(&f).unwrap();
        assert_eq!(c.load(&k, 3), None);
        // ... and a stage that cannot be written there is not an error either.
        c.save(&k, &s);
        assert_eq!(c.load(&k, 3), None);
        std::fs::remove_dir(&f).unwrap();
        // A key that lands on another key's file is not taken for it.
        c.save(&k, &s);
        std::fs::copy(&f, c.file(&others[0])).unwrap();
        assert_eq!(c.load(&others[0], 3), None);
    }
}
