//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A fresh temporary folder for one test.
pub fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// Path of the built `sae` binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sae"))
}

/// Runs `sae` with `args`; returns (success, stdout, stderr).
pub fn run_bin(args: &[&str], cwd: &Path) -> (bool, String, String) {
    let out = Command::new(bin())
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run sae");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The shared real-image folder, if present (it is outside the repository).
pub fn shared_data(name: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data")
        .join(name);
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!("skipping: {} is absent", p.display());
        None
    }
}

/// Committed test fixtures.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

/// Pixel (i, y, x, c) of the pickle fixtures.
pub fn fixture_pixel(i: usize, y: usize, x: usize, c: usize) -> u8 {
    ((i * 37 + y * 11 + x * 5 + c * 60) % 256) as u8
}

/// Checkpoint body files in a run's checkpoint folder (`ckpt-*.bin`; old ones are
/// pruned, so at most two).
pub fn checkpoint_files(db: &Path) -> usize {
    std::fs::read_dir(db).map_or(0, |r| {
        r.filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("ckpt-"))
            .count()
    })
}
