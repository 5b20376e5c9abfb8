//! Files written whole or not at all: every artefact (models, checkpoints, tables,
//! reports) goes to a temporary name, is synced, renamed into place, and its folder
//! synced, so a crash leaves the old file or the new one, never a torn one.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Writes `bytes` to `path` through a synced temporary file and a rename, then syncs
/// the folder: the rename itself is durable only once the folder's entry is on disk,
/// and a checkpoint index must never point at a body a power cut could take back.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    // A temporary name of this process and call alone: two writers of one file (runs
    // sharing a cache) must not truncate each other's half-written copy.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!("{name}.{}-{n}.tmp", std::process::id()));
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .map_err(Error::io(&tmp))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(Error::io(path)));
    if written.is_err() {
        // A full disk must not also keep the partial copy.
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    sync_dir(path)
}

/// `head`, then the CRC-32 (u32 LE) of `value`'s bincode encoding, then that encoding:
/// the layout of every checksummed binary body `sae` writes (checkpoints, classifier
/// path stages).
pub fn framed<T: serde::Serialize>(head: &[u8], value: &T) -> Vec<u8> {
    let body = bincode::serialize(value).expect("a body serialises");
    let mut blob = Vec::with_capacity(head.len() + 4 + body.len());
    blob.extend_from_slice(head);
    blob.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    blob.extend_from_slice(&body);
    blob
}

/// Why a [`framed`] blob does not read back.
#[derive(Debug)]
pub enum Unframed {
    /// Too short for its head and checksum.
    Short,
    /// The body does not match its checksum.
    Checksum,
    /// The body is not a value of the type asked for.
    Decode(String),
}

/// The value of a [`framed`] blob whose head is `head` bytes long, its checksum
/// checked. The blob's length bounds every length prefix, so a damaged one cannot ask
/// for more memory than the blob holds.
pub fn unframe<T: serde::de::DeserializeOwned>(
    blob: &[u8],
    head: usize,
) -> std::result::Result<T, Unframed> {
    if blob.len() < head + 4 {
        return Err(Unframed::Short);
    }
    let crc = u32::from_le_bytes(blob[head..head + 4].try_into().expect("4 bytes"));
    let body = &blob[head + 4..];
    if crc32fast::hash(body) != crc {
        return Err(Unframed::Checksum);
    }
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .with_limit(blob.len() as u64)
        .deserialize(body)
        .map_err(|e| Unframed::Decode(e.to_string()))
}

/// Syncs the folder that holds `path`.
pub fn sync_dir(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io(dir))
}

/// An exclusive lock on a file, held until dropped.
pub struct FileLock {
    _file: std::fs::File,
}

/// Takes an exclusive lock on `path` (created if missing), waiting while another process
/// holds it: processes that may build the same shared file (sweep workers) take it
/// first, so that one builds and the others then find it finished.
pub fn lock(path: &Path) -> Result<FileLock> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(Error::io(path))?;
    file.lock().map_err(Error::io(path))?;
    Ok(FileLock { _file: file })
}
