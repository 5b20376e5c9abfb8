//! STL-10 binary files: `*_X.bin` hold 3x96x96 uint8 per image (R, G, B planes, each
//! column-major), `*_y.bin` one label byte per image (1..10). `unlabeled_X.bin`
//! (2.7 GB) is only memory-mapped; when it is absent, patches come from `train_X.bin`.

use std::path::Path;
use std::sync::Arc;

use super::{
    class_names, numbered_classes, read_small, Dataset, ImageSet, Part, PixelOrder, Shape, Source,
};
use crate::error::{Error, Result};

/// Side of an STL-10 image.
pub const SIDE: usize = 96;

/// Opens an `*_X.bin` file, with labels from `*_y.bin` when given.
pub fn open_images(x: &Path, y: Option<&Path>) -> Result<ImageSet> {
    let shape = Shape::rgb(SIDE);
    let src = Arc::new(Source::map(x)?);
    let len = src.bytes().len();
    if len == 0 {
        return Err(Error::bad(x, "empty file"));
    }
    if len % shape.pixels() != 0 {
        return Err(Error::bad(
            x,
            format!(
                "size {len} is not a multiple of the {}-byte STL-10 image (truncated?)",
                shape.pixels()
            ),
        ));
    }
    let n = len / shape.pixels();
    let labels = match y {
        None => None,
        Some(y) => Some(read_labels(y, n)?),
    };
    let part = Part::new(src, 0, shape.pixels(), n);
    ImageSet::new(x, vec![part], shape, PixelOrder::Cwh, labels)
}

/// Reads 1-based labels and returns them 0-based.
fn read_labels(y: &Path, n: usize) -> Result<Vec<u8>> {
    let raw = read_small(y)?;
    if raw.len() != n {
        return Err(Error::bad(
            y,
            format!("{} labels but the image file holds {n} images", raw.len()),
        ));
    }
    raw.iter()
        .enumerate()
        .map(|(i, &l)| {
            if (1..=10).contains(&l) {
                Ok(l - 1)
            } else {
                Err(Error::bad(
                    y,
                    format!("label {l} of image {i} is out of range; STL-10 labels are 1..10"),
                ))
            }
        })
        .collect()
}

/// Opens an STL-10 folder.
pub fn open(dir: &Path) -> Result<Dataset> {
    let need = |f: &str| {
        let p = dir.join(f);
        if p.exists() {
            Ok(p)
        } else {
            Err(Error::bad(p, "missing"))
        }
    };
    let train = open_images(&need("train_X.bin")?, Some(&need("train_y.bin")?))?;
    let test = open_images(&need("test_X.bin")?, Some(&need("test_y.bin")?))?;
    let unl_path = dir.join("unlabeled_X.bin");
    let mut notes = Vec::new();
    let unlabeled = if unl_path.exists() {
        open_images(&unl_path, None)?
    } else {
        notes.push("STL-10: no unlabeled_X.bin; patches come from train_X.bin".into());
        train.clone()
    };
    let classes =
        class_names(&dir.join("class_names.txt"))?.unwrap_or_else(|| numbered_classes(10));
    Ok(Dataset {
        unlabeled,
        train,
        test,
        classes,
        notes,
    })
}
