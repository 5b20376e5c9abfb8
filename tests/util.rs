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

/// A folder of the shared real-image data (outside the repository). Tests that read
/// it are `#[ignore]`d with that reason and run by `.ci/run`; called without it, they
/// fail saying what is missing.
pub fn shared_data(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data")
        .join(name);
    assert!(
        p.is_dir(),
        "{} is absent: this test needs the shared real-image data beside the repository",
        p.display()
    );
    p
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

/// The four 8x8 fixture images as one HWC byte array.
pub fn fixture_hwc() -> Vec<u8> {
    let mut data = Vec::new();
    for i in 0..4 {
        for y in 0..8 {
            for x in 0..8 {
                for c in 0..3 {
                    data.push(fixture_pixel(i, y, x, c));
                }
            }
        }
    }
    data
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

/// One numpy array of a pickled dict: key, shape, dtype code (`u1`, `f4`, ...), byte
/// order (`'<'`, `'>'` or `'|'`) and the element bytes.
pub type PickledArray<'a> = (&'a str, &'a [usize], &'a str, char, &'a [u8]);

/// A dict of numpy arrays pickled as numpy does with protocol 2 (`str` keys, data as
/// byte strings), built by hand so that tests need no Python.
pub fn numpy_pickle(arrays: &[PickledArray]) -> Vec<u8> {
    let mut p = vec![0x80, 2, b'}', b'q', 0, b'('];
    let global = |p: &mut Vec<u8>, m: &str, name: &str| {
        p.push(b'c');
        p.extend_from_slice(format!("{m}\n{name}\n").as_bytes());
    };
    let sbs = |p: &mut Vec<u8>, s: &[u8]| {
        p.push(b'U');
        p.push(s.len() as u8);
        p.extend_from_slice(s);
    };
    for &(key, shape, code, order, bytes) in arrays {
        sbs(&mut p, key.as_bytes());
        global(&mut p, "numpy.core.multiarray", "_reconstruct");
        global(&mut p, "numpy", "ndarray");
        p.extend_from_slice(&[b'K', 0, 0x85]);
        sbs(&mut p, b"b");
        p.extend_from_slice(&[0x87, b'R', b'(', b'K', 1, b'(']);
        for &d in shape {
            p.push(b'J');
            p.extend_from_slice(&(d as i32).to_le_bytes());
        }
        p.push(b't');
        global(&mut p, "numpy", "dtype");
        sbs(&mut p, code.as_bytes());
        p.extend_from_slice(&[b'K', 0, b'K', 1, 0x87, b'R']);
        p.extend_from_slice(&[b'(', b'K', 3]);
        sbs(&mut p, order.to_string().as_bytes());
        p.extend_from_slice(b"NNNJ");
        p.extend_from_slice(&(-1i32).to_le_bytes());
        p.push(b'J');
        p.extend_from_slice(&(-1i32).to_le_bytes());
        p.extend_from_slice(&[b'K', 0, b't', b'b', 0x89]);
        p.push(b'T');
        p.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        p.extend_from_slice(bytes);
        p.extend_from_slice(b"tb");
    }
    p.extend_from_slice(b"u.");
    p
}
