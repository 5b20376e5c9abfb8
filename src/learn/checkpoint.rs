//! Training checkpoints in sled, so that a run killed at any moment resumes from its
//! last checkpoint and ends with the same parameters as an uninterrupted run.
//!
//! Layout (one folder per training trajectory, `checkpoint.sled/`: runs that differ
//! only in their iteration or epoch limit share it): a sled index plus one file per
//! checkpoint body.
//!
//! ```text
//! meta                      JSON: format version and the hash of the config
//! ckpt/<n:020>              length of checkpoint n (u64 BE)
//! latest                    n of the newest complete checkpoint (u64 BE)
//! ckpt-<n:020>.bin (file)   version (u32 LE), CRC-32 (u32 LE), bincode body
//! ```
//!
//! The bodies are files rather than sled values: sled keeps values in its tree nodes
//! and log, and multi-megabyte values (L-BFGS history at H = 400 is ~27 MB) grew its
//! resident memory by hundreds of MB and its log by gigabytes per run. A body is
//! written to a temporary name, synced and renamed; then the index entry and the
//! `latest` pointer are applied in one sled batch and flushed. A kill at any point
//! leaves `latest` on a checkpoint whose body is complete; the previous one is kept
//! as well. Randomness
//! needs no saved state: every random stream is derived from (seed, purpose, index),
//! so the optimiser's position (iteration, epoch, step) fixes it. sled's file lock
//! makes a second process on the same run folder fail with a clear error.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::learn::minibatch::MinibatchState;
use crate::learn::optim::LbfgsState;

/// Checkpoint body format version (2 added [`Checkpoint::ended`], 3 added
/// [`OptState::Omp1`]).
pub const VERSION: u32 = 3;

/// Versions this build reads.
const READS: [u32; 3] = [1, 2, 3];

/// The optimiser's state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum OptState {
    /// Full-batch L-BFGS.
    Lbfgs(LbfgsState),
    /// Mini-batch SGD or Adam.
    Minibatch(MinibatchState),
    /// An OMP-1 dictionary between passes.
    Omp1(crate::learn::dictionary::Omp1State),
}

/// One row of the loss trace.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TracePoint {
    /// Iteration or step.
    pub iteration: usize,
    /// Function evaluations.
    pub evals: usize,
    /// Loss.
    pub loss: f64,
    /// max |g| (NaN for mini-batch steps).
    pub gmax: f64,
    /// Seconds of training so far (over all sessions).
    pub seconds: f64,
}

/// Everything a training run needs to continue.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Optimiser state (parameters included).
    pub opt: OptState,
    /// The loss trace so far.
    pub trace: Vec<TracePoint>,
    /// Why the optimiser stopped here of its own accord (a tolerance met, a failed
    /// line search), if it did: the state is then final for any limit at or past its
    /// iteration, and a resumed run must not step on. `None` while it would go on.
    pub ended: Option<String>,
}

/// A version-1 body: no `ended`.
#[derive(Deserialize)]
struct CheckpointV1 {
    opt: OptState,
    trace: Vec<TracePoint>,
}

impl Checkpoint {
    /// L-BFGS iterations or mini-batch epochs done: where the run stands against its
    /// limit (`train.max_iter` or `train.epochs`).
    pub fn position(&self) -> usize {
        match &self.opt {
            OptState::Lbfgs(s) => s.iter,
            OptState::Minibatch(s) => s.epoch,
            OptState::Omp1(s) => s.pass,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Meta {
    version: u32,
    config_hash: String,
}

/// A run's checkpoint database.
pub struct Checkpoints {
    path: PathBuf,
    db: sled::Db,
    config_hash: String,
}

fn sled_err(path: &Path, e: sled::Error) -> Error {
    match e {
        sled::Error::Io(io)
            if io.kind() == std::io::ErrorKind::WouldBlock
                || io.to_string().contains("could not acquire lock") =>
        {
            Error::bad(
                path,
                "in use by another sae process (the run folder is locked); wait for it or \
             point this run elsewhere",
            )
        }
        sled::Error::Io(io) => Error::Io {
            path: path.to_path_buf(),
            source: io,
        },
        other => Error::bad(path, format!("checkpoint database: {other}")),
    }
}

impl Checkpoints {
    /// Opens (or creates) the database at `path` for a run with `config_hash`. A
    /// database made by another config is refused unless `restart`, which clears it.
    pub fn open(path: &Path, config_hash: &str, restart: bool) -> Result<Self> {
        let config = sled::Config::new()
            .path(path)
            .mode(sled::Mode::LowSpace)
            // sled caches up to 1 GiB by default; checkpoints are written, rarely read.
            .cache_capacity(16 << 20);
        // sled's background flusher keeps a just-dropped database (and its file lock)
        // alive for a moment, so reopening in the same process can briefly see the lock;
        // wait up to a second before calling it another process's.
        let mut tries = 0;
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                Err(e) => {
                    let err = sled_err(path, e);
                    let locked = err.to_string().contains("in use by another sae process");
                    if !locked || tries == 20 {
                        return Err(err);
                    }
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }
        };
        let me = Checkpoints {
            path: path.to_path_buf(),
            db,
            config_hash: config_hash.to_string(),
        };
        let meta = me.db.get("meta").map_err(|e| sled_err(path, e))?;
        match meta {
            Some(m) if !restart => {
                let m: Meta = serde_json::from_slice(&m)
                    .map_err(|e| Error::bad(path, format!("unreadable meta: {e}")))?;
                if !READS.contains(&m.version) {
                    return Err(Error::Incompatible {
                        path: path.to_path_buf(),
                        what: "checkpoint",
                        found: m.version.to_string(),
                        reads: format!("{READS:?}"),
                        hint: " (use --restart to begin afresh)",
                    });
                }
                if m.config_hash != config_hash {
                    return Err(Error::bad(
                        path,
                        format!(
                            "checkpoint was made by a different config (hash {} vs {config_hash}); \
                             use --restart to begin afresh, or another run name",
                            m.config_hash
                        ),
                    ));
                }
            }
            _ => me.clear()?,
        }
        Ok(me)
    }

    /// Forgets every checkpoint (their files included), leaving only the meta entry
    /// (this build's version, the config hash the database was opened with): for a
    /// new database, a restart, or a run that must start again from the beginning.
    pub fn clear(&self) -> Result<()> {
        let path = &self.path;
        let meta = Meta {
            version: VERSION,
            config_hash: self.config_hash.clone(),
        };
        self.db.clear().map_err(|e| sled_err(path, e))?;
        self.db
            .insert("meta", serde_json::to_vec(&meta).expect("meta serialises"))
            .map_err(|e| sled_err(path, e))?;
        self.db.flush().map_err(|e| sled_err(path, e))?;
        // Bodies go after the index no longer names them.
        let dir = std::fs::read_dir(path).map_err(Error::io(path))?;
        for e in dir.flatten() {
            if e.file_name().to_string_lossy().starts_with("ckpt-") {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(())
    }

    /// Saves `c` as the newest checkpoint (durable when this returns).
    pub fn save(&self, c: &Checkpoint) -> Result<()> {
        let blob = crate::fsio::framed(&VERSION.to_le_bytes(), c);
        let n = self.latest_id()?.map_or(0, |n| n + 1);
        // The blob is written and synced first; only then does the index point at it,
        // in one sled batch that is flushed. A kill before the flush leaves the index
        // on the previous checkpoint, whose file is still there.
        crate::fsio::write_atomic(&self.blob_path(n), &blob)?;
        let mut batch = sled::Batch::default();
        batch.insert(
            format!("ckpt/{n:020}").as_bytes(),
            &(blob.len() as u64).to_be_bytes(),
        );
        batch.insert("latest", &n.to_be_bytes());
        if n >= 2 {
            batch.remove(format!("ckpt/{:020}", n - 2).as_bytes());
        }
        self.db
            .apply_batch(batch)
            .map_err(|e| sled_err(&self.path, e))?;
        self.db.flush().map_err(|e| sled_err(&self.path, e))?;
        if n >= 2 {
            let _ = std::fs::remove_file(self.blob_path(n - 2));
        }
        Ok(())
    }

    fn blob_path(&self, n: u64) -> PathBuf {
        self.path.join(format!("ckpt-{n:020}.bin"))
    }

    fn latest_id(&self) -> Result<Option<u64>> {
        let v = self.db.get("latest").map_err(|e| sled_err(&self.path, e))?;
        Ok(v.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok().map(u64::from_be_bytes)))
    }

    /// The newest checkpoint, if any.
    pub fn latest(&self) -> Result<Option<Checkpoint>> {
        let Some(n) = self.latest_id()? else {
            return Ok(None);
        };
        let key = format!("ckpt/{n:020}");
        let len = self
            .db
            .get(&key)
            .map_err(|e| sled_err(&self.path, e))?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok().map(u64::from_be_bytes))
            .ok_or_else(|| Error::bad(&self.path, format!("{key} is missing")))?;
        let file = self.blob_path(n);
        let blob = std::fs::read(&file).map_err(Error::io(&file))?;
        if blob.len() as u64 != len {
            return Err(Error::bad(
                &file,
                format!("holds {} bytes, the index says {len}", blob.len()),
            ));
        }
        decode(&file, &blob).map(Some)
    }
}

/// Decodes a checkpoint blob, checking version and checksum.
pub fn decode(path: &Path, blob: &[u8]) -> Result<Checkpoint> {
    if blob.len() < 8 {
        return Err(Error::bad(path, "checkpoint blob too short"));
    }
    let version = u32::from_le_bytes(blob[..4].try_into().expect("4 bytes"));
    if !READS.contains(&version) {
        return Err(Error::Incompatible {
            path: path.to_path_buf(),
            what: "checkpoint",
            found: version.to_string(),
            reads: format!("{READS:?}"),
            hint: "",
        });
    }
    use crate::fsio::{unframe, Unframed};
    let refused = |e| match e {
        Unframed::Checksum => Error::corrupt(path, "checkpoint checksum mismatch (damaged)"),
        Unframed::Short => Error::bad(path, "checkpoint blob too short"),
        Unframed::Decode(e) => Error::bad(path, format!("undecodable checkpoint: {e}")),
    };
    if version == 1 {
        let c: CheckpointV1 = unframe(blob, 4).map_err(refused)?;
        return Ok(Checkpoint {
            opt: c.opt,
            trace: c.trace,
            ended: None,
        });
    }
    unframe(blob, 4).map_err(refused)
}

/// Stops the process abruptly at the named point when `SAE_CRASH_AT` names it: the
/// crash-safety tests use it to land a kill at an exact moment (for example between
/// the final checkpoint and the model file). `panic:<name>` panics there instead, as a
/// bug would. Does nothing otherwise.
pub fn crash_point(name: &str) {
    let Some(at) = std::env::var_os("SAE_CRASH_AT") else {
        return;
    };
    if at == name {
        std::process::abort();
    }
    if at.to_str().and_then(|a| a.strip_prefix("panic:")) == Some(name) {
        panic!("SAE_CRASH_AT={}", at.to_string_lossy());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ckpt(x: f64) -> Checkpoint {
        Checkpoint {
            opt: OptState::Minibatch(MinibatchState::new(vec![x; 5])),
            trace: vec![TracePoint {
                iteration: 1,
                evals: 1,
                loss: x,
                gmax: f64::NAN,
                seconds: 0.5,
            }],
            ended: None,
        }
    }

    #[test]
    fn save_load_and_config_guard() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.sled");
        {
            let c = Checkpoints::open(&p, "abc", false).unwrap();
            assert!(c.latest().unwrap().is_none());
            for i in 0..4 {
                c.save(&ckpt(i as f64)).unwrap();
            }
            let OptState::Minibatch(s) = c.latest().unwrap().unwrap().opt else {
                panic!()
            };
            assert_eq!(s.theta[0], 3.0);
        }
        let e = Checkpoints::open(&p, "other", false)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("different config"), "{e}");
        let c = Checkpoints::open(&p, "other", true).unwrap();
        assert!(c.latest().unwrap().is_none());
    }

    #[test]
    fn damaged_blob_is_refused() {
        let c = ckpt(1.0);
        let body = bincode::serialize(&c).unwrap();
        let mut blob = VERSION.to_le_bytes().to_vec();
        blob.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        blob.extend_from_slice(&body);
        assert!(decode(Path::new("x"), &blob).is_ok());
        let k = blob.len() - 3;
        blob[k] ^= 0xff;
        assert!(decode(Path::new("x"), &blob)
            .unwrap_err()
            .to_string()
            .contains("checksum"));
        blob[0] = 9;
        assert!(decode(Path::new("x"), &blob)
            .unwrap_err()
            .to_string()
            .contains("version"));
    }
}
