//! Read-only memory maps, and handing freed heap back to the system: the only
//! `unsafe` of `sae`.
//!
//! Datasets and stores are read through maps so that data stays in the page cache
//! rather than on the heap. Pages a process has touched count towards its resident
//! set, though, so a pass over a 7.7 GB store would "use" 7.7 GB: callers hand back
//! ranges they are done with ([`release`]), which keeps the resident set at what is
//! being worked on while the page cache still holds the data for the next pass.

use std::path::Path;
use std::sync::Arc;

use memmap2::{Advice, Mmap, UncheckedAdvice};

use crate::error::{Error, Result};

/// Maps `path` read-only.
pub fn map_file(path: &Path) -> Result<Arc<Mmap>> {
    let file = std::fs::File::open(path).map_err(Error::io(path))?;
    // SAFETY: the map is read-only, and `sae` never modifies a file it maps: datasets
    // are inputs, stores are written under a temporary name and renamed when complete.
    // Another process truncating a mapped file is outside what any reader can defend.
    let map = unsafe { Mmap::map(&file) }.map_err(Error::io(path))?;
    Ok(Arc::new(map))
}

/// Drops the pages of `map[offset..offset + len]` from this process's resident set.
pub fn release(map: &Mmap, offset: usize, len: usize) {
    let len = len.min(map.len().saturating_sub(offset));
    if len == 0 {
        return;
    }
    // SAFETY: on a read-only shared file mapping, MADV_DONTNEED only unmaps the pages;
    // the next access faults them back in from the page cache or the file, with the
    // same content, so borrowed slices stay valid and unchanged. Failure is harmless
    // (the pages just stay resident), hence ignored.
    let _ = unsafe { map.unchecked_advise_range(UncheckedAdvice::DontNeed, offset, len) };
}

/// Tells the kernel `map[offset..offset + len]` will be read soon (read-ahead).
pub fn will_need(map: &Mmap, offset: usize, len: usize) {
    let len = len.min(map.len().saturating_sub(offset));
    if len > 0 {
        let _ = map.advise_range(Advice::WillNeed, offset, len);
    }
}

/// Owner of a shared map, so `bytes::Bytes` (and Arrow buffers) can borrow from it.
pub struct MapOwner(pub Arc<Mmap>);

impl AsRef<[u8]> for MapOwner {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Hands memory the allocator holds but no one uses back to the system: glibc keeps
/// large freed blocks (an earlier stage's activation cache or tiles) resident, and
/// the next stage would carry them in its resident set.
pub fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only gives back free memory of the allocator's own arenas;
    // it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}
