//! CIFAR-10 binary batches: records of 1 label byte + 3,072 pixel bytes (R, G, B planes
//! of 32x32, each row-major). `data_batch_*.bin` are the training set (and the source
//! of unlabeled patches), `test_batch.bin` the test set, `batches.meta.txt` the names.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{class_names, numbered_classes, Dataset, ImageSet, Part, PixelOrder, Shape, Source};
use crate::error::{Error, Result};

/// Side of a CIFAR image.
pub const SIDE: usize = 32;
/// Bytes per record.
pub const RECORD: usize = 1 + 3 * SIDE * SIDE;

/// Opens one or more batch files as a labelled set.
pub fn open_batches(name: &Path, files: &[PathBuf]) -> Result<ImageSet> {
    let mut parts = Vec::new();
    let mut labels = Vec::new();
    for f in files {
        let src = Arc::new(Source::map(f)?);
        let bytes = src.bytes();
        if bytes.is_empty() {
            return Err(Error::bad(f, "empty file"));
        }
        if bytes.len() % RECORD != 0 {
            return Err(Error::bad(
                f,
                format!(
                    "size {} is not a multiple of the {RECORD}-byte CIFAR-10 record \
                     (truncated or not a CIFAR-10 batch; {} bytes left over)",
                    bytes.len(),
                    bytes.len() % RECORD
                ),
            ));
        }
        let n = bytes.len() / RECORD;
        for i in 0..n {
            let l = bytes[i * RECORD];
            if l >= 10 {
                return Err(Error::bad(
                    f,
                    format!("record {i} has label {l}; CIFAR-10 labels are 0..9"),
                ));
            }
            labels.push(l);
        }
        parts.push(Part::new(src, 1, RECORD, n));
    }
    ImageSet::new(name, parts, Shape::rgb(SIDE), PixelOrder::Chw, Some(labels))
}

/// The training batch files in `dir`, in numeric order.
fn train_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found: Vec<(u32, PathBuf)> = Vec::new();
    for e in std::fs::read_dir(dir).map_err(Error::io(dir))? {
        let e = e.map_err(Error::io(dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(k) = name
            .strip_prefix("data_batch_")
            .and_then(|r| r.strip_suffix(".bin"))
            .and_then(|k| k.parse().ok())
        {
            found.push((k, e.path()));
        }
    }
    found.sort();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// Opens a CIFAR-10 folder.
pub fn open(dir: &Path) -> Result<Dataset> {
    let train_files = train_files(dir)?;
    if train_files.is_empty() {
        return Err(Error::bad(dir, "no data_batch_*.bin files"));
    }
    let test_file = dir.join("test_batch.bin");
    if !test_file.exists() {
        return Err(Error::bad(&test_file, "missing"));
    }
    let train = open_batches(&train_files[0], &train_files)?;
    let test = open_batches(&test_file, std::slice::from_ref(&test_file))?;
    let classes =
        class_names(&dir.join("batches.meta.txt"))?.unwrap_or_else(|| numbered_classes(10));
    if classes.len() < 10 {
        return Err(Error::bad(
            dir.join("batches.meta.txt"),
            format!("{} class names; CIFAR-10 has 10", classes.len()),
        ));
    }
    Ok(Dataset {
        unlabeled: train.clone(),
        train,
        test,
        classes,
        notes: vec![format!(
            "CIFAR-10: {} training batch file(s)",
            train_files.len()
        )],
    })
}
