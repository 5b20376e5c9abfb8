//! Pictures: grids of first-layer filters and of sample patches as PNG, each tile
//! scaled to its own range (as UFLDL's `display_network`).

use std::path::Path;

use image::{Rgb, RgbImage};
use ndarray::ArrayView2;

use crate::error::{Error, Result};

/// Draws a model's first-layer filters into `filters` and, given a patch store, its
/// first 100 patches into the second path.
pub fn draw_model(
    model: &crate::learn::model::Model,
    filters: &Path,
    patches: Option<(&crate::data::store::Store, &Path)>,
) -> Result<()> {
    let (p, ch) = (model.header.patch, model.header.channels);
    grid_png(model.net.weight(0), p, ch, filters)?;
    if let Some((store, out)) = patches {
        let b = store.batch(0)?;
        let v = b.values();
        let n = v.nrows().min(100);
        grid_png(v.slice(ndarray::s![..n, ..]), p, ch, out)?;
    }
    Ok(())
}

/// Writes the rows of `tiles` (each `channels * p * p`, planar) as a grid of colour
/// tiles, each pixel drawn as a block so that a tile is at least 24 pixels wide (a
/// 6x6 filter of a 1,600-unit model stays readable), with a two-pixel grey border.
pub fn grid_png(tiles: ArrayView2<f32>, p: usize, channels: usize, path: &Path) -> Result<()> {
    let n = tiles.nrows();
    if n == 0 {
        return Err(Error::bad(path, "nothing to draw"));
    }
    assert_eq!(tiles.ncols(), channels * p * p, "tile width");
    let cols = (n as f64).sqrt().ceil() as usize;
    let rows = n.div_ceil(cols);
    let (zoom, border) = (24usize.div_ceil(p.max(1)), 2);
    let cell = p * zoom + border;
    let mut img = RgbImage::from_pixel(
        (cols * cell + border) as u32,
        (rows * cell + border) as u32,
        Rgb([96, 96, 96]),
    );
    for (k, t) in tiles.rows().into_iter().enumerate() {
        let (lo, hi) = t
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        let span = if hi > lo { hi - lo } else { 1.0 };
        let (ox, oy) = ((k % cols) * cell + border, (k / cols) * cell + border);
        for r in 0..p * zoom {
            for c in 0..p * zoom {
                let (sr, sc) = (r / zoom, c / zoom);
                let px: [u8; 3] = std::array::from_fn(|ch| {
                    let ch = ch.min(channels - 1);
                    let v = (t[ch * p * p + sr * p + sc] - lo) / span;
                    (v * 255.0).round().clamp(0.0, 255.0) as u8
                });
                img.put_pixel((ox + c) as u32, (oy + r) as u32, Rgb(px));
            }
        }
    }
    img.save(path)
        .map_err(|e| Error::bad(path, format!("cannot write PNG: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1,600 6x6 colour filters: 40 x 40 tiles of 24 x 24 pixels, each filter pixel a
    /// 4 x 4 block, each tile stretched to its own range.
    #[test]
    fn many_small_filters_stay_readable() {
        let (n, p) = (1600, 6);
        let tiles = ndarray::Array2::from_shape_fn((n, 3 * p * p), |(k, j)| (k + j) as f32);
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("f.png");
        grid_png(tiles.view(), p, 3, &path).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (40 * 26 + 2, 40 * 26 + 2));
        // Tile 0: its first value (red of pixel 0) is its minimum, the blue of its
        // last pixel its maximum.
        let at = |x: u32, y: u32| img.get_pixel(x, y).0;
        assert_eq!(at(2, 2)[0], 0);
        assert_eq!(at(5, 5), at(2, 2), "a filter pixel is a 4 x 4 block");
        assert_eq!(at(2 + 23, 2 + 23)[2], 255);
        assert_eq!(at(0, 0), [96, 96, 96], "border");
    }
}
