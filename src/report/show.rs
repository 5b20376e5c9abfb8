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

/// Writes the rows of `tiles` (each `channels * p * p`, planar) as a grid of
/// `p x p` colour tiles with a one-pixel border.
pub fn grid_png(tiles: ArrayView2<f32>, p: usize, channels: usize, path: &Path) -> Result<()> {
    let n = tiles.nrows();
    if n == 0 {
        return Err(Error::bad(path, "nothing to draw"));
    }
    assert_eq!(tiles.ncols(), channels * p * p, "tile width");
    let cols = (n as f64).sqrt().ceil() as usize;
    let rows = n.div_ceil(cols);
    let cell = p + 1;
    let mut img = RgbImage::from_pixel(
        (cols * cell + 1) as u32,
        (rows * cell + 1) as u32,
        Rgb([0, 0, 0]),
    );
    for (k, t) in tiles.rows().into_iter().enumerate() {
        let (lo, hi) = t
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        let span = if hi > lo { hi - lo } else { 1.0 };
        let (ox, oy) = ((k % cols) * cell + 1, (k / cols) * cell + 1);
        for r in 0..p {
            for c in 0..p {
                let px: [u8; 3] = std::array::from_fn(|ch| {
                    let ch = ch.min(channels - 1);
                    let v = (t[ch * p * p + r * p + c] - lo) / span;
                    (v * 255.0).round().clamp(0.0, 255.0) as u8
                });
                img.put_pixel((ox + c) as u32, (oy + r) as u32, Rgb(px));
            }
        }
    }
    // Small tiles are hard to see: scale up so the picture is at least ~400 px wide.
    let scale = (400 / img.width()).max(1);
    let img = image::imageops::resize(
        &img,
        img.width() * scale,
        img.height() * scale,
        image::imageops::FilterType::Nearest,
    );
    img.save(path)
        .map_err(|e| Error::bad(path, format!("cannot write PNG: {e}")))
}
