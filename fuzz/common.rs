//! Shared by the fuzz targets: a scratch folder per process, and a walk over every
//! image of an opened set so that reads past the end would show.

// Each target includes this file and uses only part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sae::data::ingest::ImageSet;

/// A folder that lives as long as the fuzzing process.
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("scratch folder"))
        .path()
}

/// Writes `bytes` to `name` in the scratch folder.
pub fn put(name: &str, bytes: &[u8]) -> PathBuf {
    let p = scratch().join(name);
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).expect("scratch subfolder");
    }
    std::fs::write(&p, bytes).expect("scratch file");
    p
}

/// Reads every image and label of `set`.
pub fn touch(set: &ImageSet) {
    let mut buf = vec![0u8; set.shape().pixels()];
    for i in 0..set.len() {
        set.read_hwc(i, &mut buf);
        std::hint::black_box(&buf);
    }
    if let Some(l) = set.labels() {
        assert_eq!(l.len(), set.len(), "one label per image");
    }
}

/// Splits fuzz input in two at a point named by its first two bytes.
pub fn split(data: &[u8]) -> (&[u8], &[u8]) {
    if data.len() < 2 {
        return (data, &[]);
    }
    let at = u16::from_le_bytes([data[0], data[1]]) as usize;
    let rest = &data[2..];
    rest.split_at(at.min(rest.len()))
}
