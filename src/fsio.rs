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
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp).map_err(Error::io(&tmp))?;
        f.write_all(bytes).map_err(Error::io(&tmp))?;
        f.sync_all().map_err(Error::io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(Error::io(path))?;
    sync_dir(path)
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
