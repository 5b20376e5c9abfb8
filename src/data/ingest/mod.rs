//! Datasets: every reader turns its files into [`ImageSet`]s, random-access views of
//! uint8 images that stay in the OS page cache (memory maps) rather than on the heap.
//!
//! Downstream stages (patch sampling, encoding, raw-pixel baselines) only see
//! [`Dataset`] and [`ImageSet`], so they work the same for every format.

pub mod cifar;
pub mod folder;
pub mod layout;
pub mod pickle;
pub mod resize;
pub mod stl10;
pub mod synth;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
pub use layout::PixelOrder;

/// Bytes an [`ImageSet`] reads from: a memory-mapped file or a decoded buffer.
pub enum Source {
    /// A read-only memory map of a whole file.
    Mapped(Arc<memmap2::Mmap>),
    /// Bytes decoded into memory (compressed images, latin-1 pickle strings).
    Owned(Vec<u8>),
}

impl Source {
    /// Memory-maps `path` read-only.
    pub fn map(path: &Path) -> Result<Self> {
        Ok(Source::Mapped(crate::mmap::map_file(path)?))
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Source::Mapped(m) => m,
            Source::Owned(v) => v,
        }
    }
}

/// A run of equally sized image records inside one [`Source`].
#[derive(Clone)]
pub struct Part {
    source: Arc<Source>,
    /// Byte offset of the first record's pixels.
    offset: usize,
    /// Bytes from one record to the next (pixels plus any per-record header).
    stride: usize,
    /// Number of images.
    len: usize,
}

impl Part {
    /// A part of `len` records of `stride` bytes starting at `offset`.
    pub fn new(source: Arc<Source>, offset: usize, stride: usize, len: usize) -> Self {
        Part {
            source,
            offset,
            stride,
            len,
        }
    }
}

/// Shape of the images of a set: all images share it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shape {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// Colour channels (3 for RGB).
    pub channels: usize,
}

impl Shape {
    /// Square RGB images.
    pub fn rgb(side: usize) -> Self {
        Shape {
            height: side,
            width: side,
            channels: 3,
        }
    }

    /// Bytes per image.
    pub fn pixels(&self) -> usize {
        self.height * self.width * self.channels
    }
}

/// Random access to uint8 images of one shape, with optional labels (0-based).
#[derive(Clone)]
pub struct ImageSet {
    name: PathBuf,
    parts: Vec<Part>,
    /// Cumulative image counts: `starts[k]` is the index of part k's first image.
    starts: Vec<usize>,
    shape: Shape,
    order: PixelOrder,
    labels: Option<Vec<u8>>,
}

impl ImageSet {
    /// A set of images held in memory: `bytes` are whole images of `shape`, one after
    /// the other, pixels interleaved (HWC).
    pub fn from_hwc(
        name: impl Into<PathBuf>,
        bytes: Vec<u8>,
        shape: Shape,
        labels: Option<Vec<u8>>,
    ) -> Result<Self> {
        let n = bytes.len() / shape.pixels().max(1);
        let part = Part::new(Arc::new(Source::Owned(bytes)), 0, shape.pixels(), n);
        ImageSet::new(name, vec![part], shape, PixelOrder::Hwc, labels)
    }

    /// Builds a set; `name` is the file or folder the images come from (for messages).
    pub fn new(
        name: impl Into<PathBuf>,
        parts: Vec<Part>,
        shape: Shape,
        order: PixelOrder,
        labels: Option<Vec<u8>>,
    ) -> Result<Self> {
        let name = name.into();
        let mut starts = Vec::with_capacity(parts.len());
        let mut n = 0;
        for p in &parts {
            let need = p.offset + p.len.saturating_sub(1) * p.stride + shape.pixels();
            if p.stride < shape.pixels() || (p.len > 0 && need > p.source.bytes().len()) {
                return Err(Error::bad(
                    &name,
                    "image records run past the end of the data",
                ));
            }
            starts.push(n);
            n += p.len;
        }
        if n == 0 {
            return Err(Error::bad(&name, "no images"));
        }
        if let Some(l) = &labels {
            if l.len() != n {
                return Err(Error::bad(
                    &name,
                    format!("{} labels for {n} images", l.len()),
                ));
            }
        }
        Ok(ImageSet {
            name,
            parts,
            starts,
            shape,
            order,
            labels,
        })
    }

    /// The same images with `labels` (0-based, one per image).
    pub fn with_labels(self, labels: Vec<u8>) -> Result<Self> {
        ImageSet::new(self.name, self.parts, self.shape, self.order, Some(labels))
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.starts.last().copied().unwrap_or(0) + self.parts.last().map_or(0, |p| p.len)
    }

    /// True when the set holds no image (never, for a set built by `new`).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Image shape.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// Byte order of the pixels inside each record.
    pub fn order(&self) -> PixelOrder {
        self.order
    }

    /// Where the images come from.
    pub fn name(&self) -> &Path {
        &self.name
    }

    /// Labels (0-based), if the set is labelled.
    pub fn labels(&self) -> Option<&[u8]> {
        self.labels.as_deref()
    }

    /// The first `n` images (all if `n` is larger).
    pub fn truncated(mut self, n: usize) -> Self {
        let n = n.min(self.len()).max(1);
        let mut kept = Vec::new();
        let mut left = n;
        for p in self.parts.drain(..) {
            if left == 0 {
                break;
            }
            let take = p.len.min(left);
            left -= take;
            kept.push(Part { len: take, ..p });
        }
        self.parts = kept;
        self.starts = self
            .parts
            .iter()
            .scan(0, |acc, p| {
                let s = *acc;
                *acc += p.len;
                Some(s)
            })
            .collect();
        if let Some(l) = &mut self.labels {
            l.truncate(n);
        }
        self
    }

    /// The images at `indices`, in that order (e.g. one fold of STL-10's training set).
    pub fn select(&self, indices: &[usize]) -> Result<Self> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.len()) {
            return Err(Error::bad(
                &self.name,
                format!("image index {bad} out of range ({} images)", self.len()),
            ));
        }
        let parts = indices
            .iter()
            .map(|&i| {
                let k = self.starts.partition_point(|&s| s <= i) - 1;
                let p = &self.parts[k];
                Part {
                    offset: p.offset + (i - self.starts[k]) * p.stride,
                    len: 1,
                    ..p.clone()
                }
            })
            .collect();
        let labels = self
            .labels
            .as_ref()
            .map(|l| indices.iter().map(|&i| l[i]).collect());
        ImageSet::new(self.name.clone(), parts, self.shape, self.order, labels)
    }

    /// The raw record bytes of image `i` (pixels in [`Self::order`]).
    #[track_caller]
    pub fn raw(&self, i: usize) -> &[u8] {
        let k = self.starts.partition_point(|&s| s <= i) - 1;
        let p = &self.parts[k];
        let j = i - self.starts[k];
        assert!(j < p.len, "image {i} out of range");
        let at = p.offset + j * p.stride;
        &p.source.bytes()[at..at + self.shape.pixels()]
    }

    /// Writes image `i` into `out` as interleaved rows (HWC), the order every stage uses.
    pub fn read_hwc(&self, i: usize, out: &mut [u8]) {
        layout::to_hwc(self.raw(i), self.shape, self.order, out);
    }

    /// Hands the pages read so far back to the page cache (see [`crate::mmap`]), so
    /// that random access over a multi-gigabyte file does not grow the resident set.
    pub fn release(&self) {
        // A selection (a fold, held-out images) has a part per image over one file:
        // release each file once, not once per part.
        let mut done: Vec<*const Source> = Vec::new();
        for p in &self.parts {
            let id = Arc::as_ptr(&p.source);
            if done.contains(&id) {
                continue;
            }
            done.push(id);
            if let Source::Mapped(m) = p.source.as_ref() {
                crate::mmap::release(m, 0, m.len());
            }
        }
    }

    /// Checks that a labelled set's labels are all below `classes`.
    pub fn check_labels(&self, classes: usize) -> Result<()> {
        if let Some(l) = &self.labels {
            if let Some((i, &bad)) = l.iter().enumerate().find(|(_, &v)| v as usize >= classes) {
                return Err(Error::bad(
                    &self.name,
                    format!("label {bad} of image {i} is out of range (classes: {classes})"),
                ));
            }
        }
        Ok(())
    }
}

/// The dataset formats `sae` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// CIFAR-10 binary batches.
    Cifar10,
    /// STL-10 binary files.
    Stl10,
    /// The study's pickled numpy arrays.
    Pickle,
    /// One subfolder per class of PNG/JPEG images.
    Folder,
}

impl std::str::FromStr for Format {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cifar10" => Ok(Format::Cifar10),
            "stl10" => Ok(Format::Stl10),
            "pickle" => Ok(Format::Pickle),
            "folder" => Ok(Format::Folder),
            _ => Err(Error::config(
                "data.format",
                format!("unknown format {s:?} (cifar10, stl10, pickle, folder)"),
            )),
        }
    }
}

/// Options for opening a dataset.
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// Pixel order of pickled arrays; `None` detects it.
    pub pixel_order: Option<PixelOrder>,
    /// First label of pickled arrays (0 or 1); `None` decides it from all label files
    /// together.
    pub label_base: Option<u8>,
}

/// A dataset: images to learn features from, and labelled train and test images.
#[derive(Clone)]
pub struct Dataset {
    /// Images the autoencoder's patches are sampled from (labels ignored).
    pub unlabeled: ImageSet,
    /// Labelled training images.
    pub train: ImageSet,
    /// Labelled test images.
    pub test: ImageSet,
    /// Class names, index = label.
    pub classes: Vec<String>,
    /// What the reader decided on the way (e.g. a detected pixel order).
    pub notes: Vec<String>,
}

impl Dataset {
    /// Opens the dataset at `path` in `format`.
    pub fn open(format: Format, path: &Path, opts: &OpenOptions) -> Result<Dataset> {
        if !path.is_dir() {
            return Err(Error::bad(path, "dataset folder not found"));
        }
        // Formats with a fixed label base say so; pickles decide theirs (and say why).
        let fixed = match format {
            Format::Cifar10 => Some((0, "labels: 0-based (CIFAR-10 format)")),
            Format::Stl10 => Some((
                1,
                "labels: 1-based in the files (STL-10 format), read as 0-based",
            )),
            Format::Folder => Some((0, "labels: class subfolders in sorted order")),
            Format::Pickle => None,
        };
        if let (Some((b, _)), Some(want)) = (fixed, opts.label_base) {
            if format == Format::Folder {
                return Err(Error::config(
                    "data.label_base",
                    "image folders take their classes from subfolder names; leave it unset",
                ));
            }
            if b != want {
                return Err(Error::config(
                    "data.label_base",
                    format!("{format:?} labels are {b}-based by format, not {want}-based"),
                ));
            }
        }
        let mut ds = match format {
            Format::Cifar10 => cifar::open(path)?,
            Format::Stl10 => stl10::open(path)?,
            Format::Pickle => pickle::open_dataset(path, opts)?,
            Format::Folder => folder::open(path)?,
        };
        if let Some((_, note)) = fixed {
            ds.notes.push(note.into());
        }
        let k = ds.classes.len();
        ds.train.check_labels(k)?;
        ds.test.check_labels(k)?;
        for (set, what) in [(&ds.train, "train"), (&ds.test, "test")] {
            if set.labels().is_none() {
                return Err(Error::bad(set.name(), format!("{what} set has no labels")));
            }
        }
        for set in [&ds.unlabeled, &ds.test] {
            if set.shape() != ds.train.shape() {
                return Err(Error::bad(
                    set.name(),
                    format!(
                        "image shape {:?} differs from the training images' {:?}",
                        set.shape(),
                        ds.train.shape()
                    ),
                ));
            }
        }
        Ok(ds)
    }
}

/// Reads a whole small file (labels, metadata), naming it on error.
pub(crate) fn read_small(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(Error::io(path))
}

/// Default class names "0".."k-1".
pub(crate) fn numbered_classes(k: usize) -> Vec<String> {
    (0..k).map(|i| i.to_string()).collect()
}

/// Class names from a text file with one name per line, if it exists.
pub(crate) fn class_names(path: &Path) -> Result<Option<Vec<String>>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if names.is_empty() {
        return Err(Error::bad(path, "no class names"));
    }
    Ok(Some(names))
}
