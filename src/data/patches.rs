//! Patch sampling: seeded random patches from the unlabeled images, normalised into a
//! patch store ([`sample_patches`]), and the grid of patches an image is encoded from.
//!
//! A patch is a vector of `c * p * p` values in [0, 1], channel-planar and row-major
//! (`i = c*p*p + r*p + col`). Sampled positions come from a random stream per chunk
//! of [`SAMPLE_CHUNK`] patches, so any chunk can be regenerated on its own: the
//! normaliser is fitted in one pass and the store written in a second without keeping
//! positions or patches in memory.

use std::path::Path;

use ndarray::{Array2, Axis};
use rand::RngExt;
use rayon::prelude::*;

use crate::data::ingest::{ImageSet, Shape};
use crate::data::preprocess::{Fitter, NormSpec, Normaliser};
use crate::data::store::{Kind, PatchMeta, StoreWriter};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::rng::{stream, Stream};

/// Patches per sampling chunk.
pub const SAMPLE_CHUNK: usize = 16_384;

/// How many patches of which size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PatchSpec {
    /// Side of a square patch.
    pub size: usize,
    /// Number of patches.
    pub count: usize,
    /// Seed of the positions.
    pub seed: u64,
}

impl PatchSpec {
    /// Values per patch for `channels` channels.
    pub fn dim(&self, channels: usize) -> usize {
        channels * self.size * self.size
    }

    /// Number of chunks.
    pub fn chunks(&self) -> usize {
        self.count.div_ceil(SAMPLE_CHUNK)
    }

    /// Checks the spec against the images' shape.
    pub fn check(&self, shape: Shape) -> Result<()> {
        if self.size == 0 || self.size > shape.height || self.size > shape.width {
            return Err(Error::config(
                "patches.size",
                format!(
                    "patch side {} does not fit {}x{} images",
                    self.size, shape.height, shape.width
                ),
            ));
        }
        if self.count == 0 {
            return Err(Error::config("patches.count", "must be at least 1"));
        }
        Ok(())
    }
}

/// Provenance of a sampled patch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    /// Image index.
    pub image: u32,
    /// Left column.
    pub x: u32,
    /// Top row.
    pub y: u32,
}

/// Chunk `c` of the sample: raw patches (`/255`) and where they come from.
pub fn sample_chunk(images: &ImageSet, spec: &PatchSpec, c: usize) -> (Array2<f32>, Vec<Origin>) {
    let s = images.shape();
    let lo = c * SAMPLE_CHUNK;
    let n = SAMPLE_CHUNK.min(spec.count - lo);
    let mut rng = stream(spec.seed, Stream::Patches, c as u64);
    let origins: Vec<Origin> = (0..n)
        .map(|_| Origin {
            image: rng.random_range(0..images.len()) as u32,
            y: rng.random_range(0..=s.height - spec.size) as u32,
            x: rng.random_range(0..=s.width - spec.size) as u32,
        })
        .collect();
    let d = spec.dim(s.channels);
    let mut out = Array2::<f32>::zeros((n, d));
    out.as_slice_mut()
        .expect("standard layout")
        .par_chunks_mut(d)
        .zip(origins.par_iter())
        .for_each(|(row, o)| {
            let raw = images.raw(o.image as usize);
            let order = images.order();
            let p = spec.size;
            for ch in 0..s.channels {
                for r in 0..p {
                    for col in 0..p {
                        let v = raw[order.index(s, ch, o.y as usize + r, o.x as usize + col)];
                        row[ch * p * p + r * p + col] = f32::from(v) / 255.0;
                    }
                }
            }
        });
    (out, origins)
}

/// Top-left offsets `0, step, 2*step, ... <= side - patch` along one axis.
pub fn grid(side: usize, patch: usize, step: usize) -> Vec<usize> {
    assert!(step > 0 && patch <= side);
    (0..=side - patch).step_by(step).collect()
}

/// Writes the patch at (y, x) of an HWC image into `out` (planar, `/255`).
#[inline]
pub fn extract(hwc: &[u8], s: Shape, p: usize, y: usize, x: usize, out: &mut [f32]) {
    let pp = p * p;
    for r in 0..p {
        let row = &hwc[((y + r) * s.width + x) * s.channels..];
        for col in 0..p {
            for ch in 0..s.channels {
                out[ch * pp + r * p + col] = f32::from(row[col * s.channels + ch]) / 255.0;
            }
        }
    }
}

/// Samples patches from `images`, fits the normalisation on them, and writes the
/// normalised patches to a store at `path` in batches of `batch_rows`, recording the
/// config hash `config` (empty outside a run). Two passes over regenerated chunks, so
/// memory is one chunk whatever the number of patches.
pub fn sample_patches(
    images: &ImageSet,
    spec: &PatchSpec,
    norm: NormSpec,
    path: &Path,
    batch_rows: usize,
    config: &str,
) -> Result<Normaliser> {
    let shape = images.shape();
    spec.check(shape)?;
    let dim = spec.dim(shape.channels);
    let mut fitter = Fitter::new(norm, dim);
    let mut prog = Progress::new("patches (fit normalisation)", spec.count, "patches");
    for c in 0..spec.chunks() {
        let (raw, _) = sample_chunk(images, spec, c);
        images.release();
        fitter.add(raw.view());
        prog.inc(raw.nrows());
    }
    prog.finish();
    let normaliser = fitter.finish()?;
    let meta = PatchMeta {
        patch: spec.size,
        channels: shape.channels,
        seed: Some(spec.seed),
        norm: normaliser.clone(),
        config: config.to_string(),
    };
    let mut w = StoreWriter::create(path, Kind::Patches, dim, batch_rows, &meta.entries())?;
    let mut prog = Progress::new("patches (write store)", spec.count, "patches");
    for c in 0..spec.chunks() {
        let (raw, origins) = sample_chunk(images, spec, c);
        images.release();
        let n = raw.nrows();
        let x = normaliser.apply(raw);
        if x.iter().any(|v| !v.is_finite()) {
            return Err(Error::Numeric(format!(
                "normalised patches of chunk {c} are not finite"
            )));
        }
        for (row, o) in x.axis_iter(Axis(0)).zip(&origins) {
            w.push(row.as_slice().expect("contiguous"), &[o.image, o.x, o.y])?;
        }
        prog.inc(n);
    }
    prog.finish();
    w.finish()?;
    Ok(normaliser)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_positions() {
        assert_eq!(grid(32, 8, 8), vec![0, 8, 16, 24]);
        assert_eq!(grid(96, 8, 8).len(), 12);
        assert_eq!(grid(96, 8, 1).len(), 89);
        assert_eq!(grid(10, 8, 4), vec![0]);
        assert_eq!(grid(8, 8, 3), vec![0]);
    }

    #[test]
    fn extract_is_planar_row_major() {
        let s = Shape {
            height: 3,
            width: 4,
            channels: 3,
        };
        let hwc: Vec<u8> = (0..36).collect();
        let mut out = vec![0.0; 12];
        extract(&hwc, s, 2, 1, 2, &mut out);
        // pixel (y=1,x=2) channel 0 is hwc[(1*4+2)*3] = 18
        assert_eq!(out[0] * 255.0, 18.0);
        assert_eq!(out[1] * 255.0, 21.0); // (1,3)
        assert_eq!(out[2] * 255.0, 30.0); // (2,2)
        assert_eq!(out[4] * 255.0, 19.0); // channel 1 of (1,2)
    }
}
