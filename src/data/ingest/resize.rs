//! Resized copies of image sets (e.g. STL-10's 96x96 images at 32x32, as the
//! literature compares them), written once to a mapped file so that every later stage
//! reads them like any other dataset.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use rayon::prelude::*;

use super::{ImageSet, Part, PixelOrder, Shape, Source};
use crate::error::{Error, Result};

/// Images per parallel group.
const GROUP: usize = 512;

/// Area-averaging weights: for each output index, the (input index, weight) pairs of
/// the input cells it covers; the weights of one output sum to 1.
fn weights(from: usize, to: usize) -> Vec<Vec<(usize, f32)>> {
    let scale = from as f64 / to as f64;
    (0..to)
        .map(|o| {
            let (lo, hi) = (o as f64 * scale, (o + 1) as f64 * scale);
            let mut v = Vec::new();
            let mut i = lo.floor() as usize;
            while (i as f64) < hi && i < from {
                let overlap = hi.min(i as f64 + 1.0) - lo.max(i as f64);
                if overlap > 1e-12 {
                    v.push((i, (overlap / scale) as f32));
                }
                i += 1;
            }
            v
        })
        .collect()
}

/// Resizes one HWC image of shape `s` to `t` by area averaging.
pub fn resize_hwc(src: &[u8], s: Shape, t: Shape, out: &mut [u8]) {
    let (wy, wx) = (weights(s.height, t.height), weights(s.width, t.width));
    let ch = s.channels;
    let mut acc = vec![0f32; ch];
    for (oy, ys) in wy.iter().enumerate() {
        for (ox, xs) in wx.iter().enumerate() {
            acc.iter_mut().for_each(|a| *a = 0.0);
            for &(iy, fy) in ys {
                for &(ix, fx) in xs {
                    let at = (iy * s.width + ix) * ch;
                    for (c, a) in acc.iter_mut().enumerate() {
                        *a += fy * fx * f32::from(src[at + c]);
                    }
                }
            }
            let at = (oy * t.width + ox) * ch;
            for (c, a) in acc.iter().enumerate() {
                out[at + c] = a.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
}

/// `set` resized to `side`x`side`, read from `path` (written there first unless a
/// complete copy is already there).
pub fn resized(set: &ImageSet, side: usize, path: &Path) -> Result<ImageSet> {
    let s = set.shape();
    let t = Shape {
        height: side,
        width: side,
        channels: s.channels,
    };
    let need = (set.len() * t.pixels()) as u64;
    let complete = std::fs::metadata(path).is_ok_and(|m| m.len() == need);
    if !complete {
        let tmp = path.with_extension("partial");
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(Error::io(&tmp))?);
        let starts: Vec<usize> = (0..set.len()).step_by(GROUP).collect();
        for lo in starts {
            let hi = (lo + GROUP).min(set.len());
            let bytes: Vec<Vec<u8>> = (lo..hi)
                .into_par_iter()
                .map(|i| {
                    let mut hwc = vec![0u8; s.pixels()];
                    set.read_hwc(i, &mut hwc);
                    let mut out = vec![0u8; t.pixels()];
                    resize_hwc(&hwc, s, t, &mut out);
                    out
                })
                .collect();
            set.release();
            for b in bytes {
                f.write_all(&b).map_err(Error::io(&tmp))?;
            }
        }
        let f = f
            .into_inner()
            .map_err(|e| Error::io(&tmp)(e.into_error()))?;
        f.sync_all().map_err(Error::io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(Error::io(path))?;
        crate::fsio::sync_dir(path)?;
    }
    let source = Arc::new(Source::map(path)?);
    let part = Part::new(source, 0, t.pixels(), set.len());
    ImageSet::new(
        set.name(),
        vec![part],
        t,
        PixelOrder::Hwc,
        set.labels().map(<[u8]>::to_vec),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_factor_is_a_box_average() {
        let s = Shape::rgb(6);
        let t = Shape::rgb(2);
        let src: Vec<u8> = (0..s.pixels()).map(|i| (i % 251) as u8).collect();
        let mut out = vec![0u8; t.pixels()];
        resize_hwc(&src, s, t, &mut out);
        for oy in 0..2 {
            for ox in 0..2 {
                for c in 0..3 {
                    let mut sum = 0.0;
                    for y in 0..3 {
                        for x in 0..3 {
                            sum += f64::from(src[((oy * 3 + y) * 6 + ox * 3 + x) * 3 + c]);
                        }
                    }
                    assert_eq!(out[(oy * 2 + ox) * 3 + c], (sum / 9.0).round() as u8);
                }
            }
        }
    }

    #[test]
    fn weights_cover_the_input_once() {
        for (from, to) in [(96, 32), (96, 64), (32, 48), (7, 3)] {
            let w = weights(from, to);
            let mut cover = vec![0.0f64; from];
            for ws in &w {
                let total: f32 = ws.iter().map(|p| p.1).sum();
                assert!((total - 1.0).abs() < 1e-5, "{from}->{to}: {total}");
                for &(i, f) in ws {
                    cover[i] += f64::from(f) * from as f64 / to as f64;
                }
            }
            assert!(cover.iter().all(|c| (c - 1.0).abs() < 1e-4), "{from}->{to}");
        }
    }
}
