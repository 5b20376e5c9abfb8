//! Folders of PNG/JPEG images: `train/<class>/*`, `test/<class>/*`, and optionally
//! `unlabeled/` (any depth, labels ignored). Class names are the sorted subfolder names
//! of `train/`. Images are decoded once into memory, interleaved (HWC); all must share
//! the size of the first one.

use std::path::{Path, PathBuf};

use super::{Dataset, ImageSet, Shape};
use crate::error::{Error, Result};

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(Error::io(dir))?
        .map(|e| e.map(|e| e.path()).map_err(Error::io(dir)))
        .collect::<Result<_>>()?;
    v.sort();
    Ok(v)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for p in sorted_entries(dir)? {
        if p.is_dir() {
            walk(&p, out)?;
        } else if is_image(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// Decodes `files` (with labels) into one in-memory set.
fn decode(name: &Path, files: &[(PathBuf, u8)], labelled: bool) -> Result<ImageSet> {
    if files.is_empty() {
        return Err(Error::bad(name, "no PNG/JPEG images"));
    }
    let mut shape: Option<Shape> = None;
    let mut bytes = Vec::new();
    for (f, _) in files {
        let img = image::open(f)
            .map_err(|e| Error::bad(f, format!("cannot decode image: {e}")))?
            .to_rgb8();
        let s = Shape {
            height: img.height() as usize,
            width: img.width() as usize,
            channels: 3,
        };
        match shape {
            None => shape = Some(s),
            Some(first) if first != s => {
                return Err(Error::bad(
                    f,
                    format!(
                        "image is {}x{}, the others {}x{}; resize them to one size",
                        s.width, s.height, first.width, first.height
                    ),
                ))
            }
            _ => {}
        }
        bytes.extend_from_slice(img.as_raw());
    }
    let shape = shape.expect("non-empty");
    let labels = labelled.then(|| files.iter().map(|f| f.1).collect());
    ImageSet::from_hwc(name, bytes, shape, labels)
}

/// Lists `split/<class>/*` with class indices from `classes`.
fn labelled_files(split: &Path, classes: &[String]) -> Result<Vec<(PathBuf, u8)>> {
    let mut files = Vec::new();
    for d in sorted_entries(split)? {
        if !d.is_dir() {
            continue;
        }
        let name = d
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let k = classes
            .iter()
            .position(|c| *c == name)
            .ok_or_else(|| Error::bad(&d, "class folder that the training set does not have"))?;
        let mut imgs = Vec::new();
        walk(&d, &mut imgs)?;
        files.extend(imgs.into_iter().map(|p| (p, k as u8)));
    }
    Ok(files)
}

/// Opens a folder dataset.
pub fn open(dir: &Path) -> Result<Dataset> {
    let train_dir = dir.join("train");
    let test_dir = dir.join("test");
    for d in [&train_dir, &test_dir] {
        if !d.is_dir() {
            return Err(Error::bad(d, "missing (expected one subfolder per class)"));
        }
    }
    let classes: Vec<String> = sorted_entries(&train_dir)?
        .into_iter()
        .filter(|p| p.is_dir())
        .map(|p| {
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    if classes.is_empty() {
        return Err(Error::bad(&train_dir, "no class subfolders"));
    }
    if classes.len() > 256 {
        return Err(Error::bad(&train_dir, "more than 256 classes"));
    }
    let train = decode(&train_dir, &labelled_files(&train_dir, &classes)?, true)?;
    let test = decode(&test_dir, &labelled_files(&test_dir, &classes)?, true)?;
    let unl_dir = dir.join("unlabeled");
    let mut notes = vec![format!("folder: {} classes", classes.len())];
    let unlabeled = if unl_dir.is_dir() {
        let mut files = Vec::new();
        walk(&unl_dir, &mut files)?;
        let files: Vec<(PathBuf, u8)> = files.into_iter().map(|p| (p, 0)).collect();
        decode(&unl_dir, &files, false)?
    } else {
        notes.push("no unlabeled/ folder; patches come from train".into());
        train.clone()
    };
    Ok(Dataset {
        unlabeled,
        train,
        test,
        classes,
        notes,
    })
}
