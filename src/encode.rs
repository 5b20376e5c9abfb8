//! Image features: every labelled image is cut into patches on a grid of a given step,
//! normalised as in training, encoded by the sparse layer ([`Code`]: the study's
//! sigmoid activations, a two-sided soft threshold, or k-means "triangle" activations
//! on the distances to the code layer's weight vectors), and the codes are either
//! concatenated (`concat`, the study's) or sum-pooled over the cells of a g x g grid
//! of the responses (`pool`; by default the four quadrants, Coates 2011: 4·H values).
//!
//! Encoding is fused and tiled: for a tile of images, build the patch matrix in a
//! buffer, normalise, encode with matrix products, pool, and write the tile's feature
//! rows. Tiles are processed in parallel a group at a time and written in image order,
//! so memory is a few tiles whatever the number of images and the step.
//!
//! Around the one product of a single-layer code: ZCA whitening is linear, so it is
//! folded into the code layer's weights once (`W·Z` and an offset for the mean) instead
//! of costing a product per patch; and the product's output is pooled row by row as it
//! is thresholded, so the 2·H soft-threshold (or sigmoid) codes of a patch are never
//! stored. The triangle code measures distances in the whitened space: it whitens the
//! patches and pools finished codes.

use std::path::Path;

use ndarray::{Array1, Array2, ArrayView2, Axis};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::ingest::{ImageSet, Shape};
use crate::data::patches::grid;
use crate::data::preprocess::{contrast_normalise, Normaliser};
use crate::data::store::{FeatureMeta, Kind, Precision, StoreWriter};
use crate::error::{Error, Result};
use crate::learn::sae::{affine, sigmoid_inplace, Network};
use crate::progress::Progress;

/// Default patch rows per tile (a memory budget may lower it:
/// [`Encoder::with_tile_rows`]): a tile holds this many patches (at least one image).
pub const TILE_ROWS: usize = 4096;

/// Most rows per record batch of a feature store: the writer holds one batch (and its
/// encoded copy while writing it).
pub const FEATURE_BATCH: usize = 4096;

/// Most bytes of one feature batch's values. Wide rows get fewer rows per batch, so
/// that the writer's batch stays small beside the tiles: at 4,096 rows, 8,000 units'
/// 64,000 pooled features made a 1 GiB batch, most of the encoder's peak.
pub const FEATURE_BATCH_BYTES: usize = 32 << 20;

/// Rows per record batch of a feature store whose rows hold `width` values.
pub fn feature_batch_rows(width: usize) -> usize {
    (FEATURE_BATCH_BYTES / (4 * width.max(1))).clamp(1, FEATURE_BATCH)
}

/// How an image's patch codes become its feature vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// All codes in grid order (row by row), `positions · H` values.
    Concat,
    /// Sums over the cells of a g x g grid of the positions (by default the four
    /// quadrants: top-left, top-right, bottom-left, bottom-right), row by row.
    Pool,
}

impl Mode {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Concat => "concat",
            Mode::Pool => "pool",
        }
    }
}

/// How the code layer (weights `W`, bias `b`, H units) turns its input `a` into
/// features.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Code {
    /// `sigmoid(W·a + b)`: the autoencoder's own activations (H values).
    Sigmoid,
    /// `[max(0, z − α), max(0, −z − α)]` with `z = W·a` or, with `bias`, `W·a + b`
    /// (2·H values, Coates & Ng 2011). The autoencoder learns `b` to make its sigmoid
    /// sparse, so whether it helps the thresholded code is an empirical question
    /// (`features.bias`; README, "How defaults were chosen").
    SoftThreshold {
        /// Threshold α.
        alpha: f32,
        /// Add the code layer's bias before thresholding.
        bias: bool,
    },
    /// `max(0, mean_k d_k − d_k)` with `d_k = |a − W_k|` (H values, Coates et al. 2011).
    Triangle,
}

impl Code {
    /// Features per code unit.
    pub fn width(self) -> usize {
        match self {
            Code::SoftThreshold { .. } => 2,
            Code::Sigmoid | Code::Triangle => 1,
        }
    }

    /// Adds the codes of one patch, from the code layer's pre-activation `z` (H
    /// values), to `out` (`width()·H` values): the pooling sum and the code in one pass.
    /// Triangle codes need a whole row of distances, so for them `z` is the code.
    fn add_code(self, z: &[f32], out: &mut [f32]) {
        match self {
            Code::Sigmoid => add_sigmoid(z, out),
            Code::SoftThreshold { alpha, .. } => add_soft_threshold(z, alpha, out),
            Code::Triangle => out.iter_mut().zip(z).for_each(|(o, v)| *o += v),
        }
    }

    /// Short tag for file names (empty for the study's sigmoid code).
    pub fn tag(self) -> String {
        match self {
            Code::Sigmoid => String::new(),
            Code::SoftThreshold { alpha, bias } => {
                format!("-soft{alpha}{}", if bias { "b" } else { "" })
            }
            Code::Triangle => "-triangle".into(),
        }
    }
}

/// Triangle codes `max(0, mean_k d_k − d_k)` of the rows of `a`, with `d_k = |a − W_k|`.
fn triangle(a: ArrayView2<f32>, w: &Array2<f32>) -> Array2<f32> {
    let mut z = a.dot(&w.t());
    let wn: Vec<f32> = w.axis_iter(Axis(0)).map(|r| r.dot(&r)).collect();
    for (ar, mut zr) in a.axis_iter(Axis(0)).zip(z.axis_iter_mut(Axis(0))) {
        let an = ar.dot(&ar);
        zr.iter_mut()
            .zip(&wn)
            .for_each(|(v, &n)| *v = (an - 2.0 * *v + n).max(0.0).sqrt());
        let mean = zr.mean().unwrap_or(0.0);
        zr.mapv_inplace(|d| (mean - d).max(0.0));
    }
    z
}

crate::avx2_or_plain! {
    /// `out += sigmoid(z)`.
    fn add_sigmoid(z: &[f32], out: &mut [f32]) {
        for (o, &v) in out.iter_mut().zip(z) {
            *o += 1.0 / (1.0 + crate::learn::sae::fast_exp(-v));
        }
    }
}

crate::avx2_or_plain! {
    /// `out[..H] += max(0, z − α)`, `out[H..] += max(0, −z − α)`.
    fn add_soft_threshold(z: &[f32], alpha: f32, out: &mut [f32]) {
        let (pos, neg) = out.split_at_mut(z.len());
        for ((p, n), &v) in pos.iter_mut().zip(neg.iter_mut()).zip(z) {
            *p += (v - alpha).max(0.0);
            *n += (-v - alpha).max(0.0);
        }
    }
}

/// The first layer with ZCA whitening folded in: for contrast-normalised rows `c`,
/// `(c − μ)·Z·Wᵀ + b = c·(W·Zᵀ)ᵀ + (b − μ·Z·Wᵀ)`, computed once in f64.
struct Folded {
    /// `W·Zᵀ`, H x D.
    w: Array2<f32>,
    /// `−μ·Z·Wᵀ`.
    offset: Array1<f32>,
    /// `b − μ·Z·Wᵀ`.
    offset_bias: Array1<f32>,
    contrast: bool,
    cn_eps: f32,
}

impl Folded {
    fn of(norm: &Normaliser, (w, b): &(Array2<f32>, Array1<f32>)) -> Option<Folded> {
        let Normaliser::Zca {
            contrast,
            cn_eps,
            mean,
            w: zca,
        } = norm
        else {
            return None;
        };
        let d = mean.len();
        let z = ArrayView2::from_shape((d, d), zca).ok()?.mapv(f64::from);
        let m = z.dot(&w.mapv(f64::from).t());
        let mu = Array1::from_iter(mean.iter().map(|&v| f64::from(v)));
        let mu_m = mu.dot(&m);
        Some(Folded {
            w: m.t().mapv(|v| v as f32),
            offset: mu_m.mapv(|v| -v as f32),
            offset_bias: Array1::from_iter(
                b.iter()
                    .zip(&mu_m)
                    .map(|(&b, &v)| (f64::from(b) - v) as f32),
            ),
            contrast: *contrast,
            cn_eps: *cn_eps,
        })
    }
}

/// A trained network with its normalisation, ready to encode images.
pub struct Encoder {
    layers: Vec<(Array2<f32>, Array1<f32>)>,
    norm: Normaliser,
    /// The first layer with ZCA folded in, for ZCA normalisers (the triangle code,
    /// which measures distances in the whitened space, does not use it).
    folded: Option<Folded>,
    patch: usize,
    code: usize,
    kind: Code,
    tile_rows: usize,
    /// Cells per side of the pooling grid.
    pool: usize,
    /// How the feature files keep their values.
    precision: Precision,
}

impl Encoder {
    /// Encoder of `net` for patches of side `patch` normalised by `norm`.
    pub fn new(net: &Network, norm: Normaliser, patch: usize) -> Self {
        let layers = net.encoder_layers();
        Encoder {
            folded: Folded::of(&norm, &layers[0]),
            layers,
            norm,
            patch,
            code: net.arch.code_size(),
            kind: Code::Sigmoid,
            tile_rows: TILE_ROWS,
            pool: 2,
            precision: Precision::F32,
        }
    }

    /// The same encoder pooling over a `cells` x `cells` grid (rows and columns of
    /// positions split into runs whose lengths differ by at most one).
    pub fn with_pool_grid(mut self, cells: usize) -> Self {
        self.pool = cells.max(1);
        self
    }

    /// The same encoder with each code unit's weights (and bias) scaled to unit norm,
    /// so that a soft threshold α means the same for every unit, as for a dictionary
    /// of unit-norm atoms.
    pub fn with_unit_atoms(mut self) -> Self {
        let (w, b) = self.layers.last_mut().expect("at least one layer");
        for (mut row, bj) in w.rows_mut().into_iter().zip(b.iter_mut()) {
            let n = row
                .iter()
                .map(|v| f64::from(*v).powi(2))
                .sum::<f64>()
                .sqrt();
            if n > 1e-12 {
                row.mapv_inplace(|v| (f64::from(v) / n) as f32);
                *bj = (f64::from(*bj) / n) as f32;
            }
        }
        self.folded = Folded::of(&self.norm, &self.layers[0]);
        self
    }

    /// The same encoder with tiles of about `rows` patch rows (at least one image),
    /// as a memory budget allows.
    pub fn with_tile_rows(mut self, rows: usize) -> Self {
        self.tile_rows = rows.max(1);
        self
    }

    /// The same encoder writing feature files in `precision`.
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// The same encoder with another code.
    pub fn with_code(mut self, kind: Code) -> Self {
        self.kind = kind;
        self
    }

    /// Features per patch.
    pub fn code_width(&self) -> usize {
        self.code * self.kind.width()
    }

    /// Values per patch of the widest layer up to the code layer (what a tile's
    /// activations hold per row at most).
    pub fn widest_layer(&self) -> usize {
        self.layers
            .iter()
            .map(|(w, _)| w.nrows())
            .max()
            .unwrap_or(0)
    }

    /// What [`Encoder::tile`] pools for raw patch rows `x`: the code layer's
    /// pre-activation, which [`Code::add_code`] turns into codes as it pools them, or
    /// for the triangle code (which needs a whole row of distances first) the codes
    /// themselves. A ZCA normaliser is folded into the first layer; any other is
    /// applied to the rows first.
    fn pre_codes(&self, mut x: Array2<f32>) -> Array2<f32> {
        let last = self.layers.len() - 1;
        let (mut a, first) = match &self.folded {
            Some(f) if self.kind != Code::Triangle => {
                if f.contrast {
                    for mut row in x.rows_mut() {
                        contrast_normalise(row.as_slice_mut().expect("contiguous"), f.cn_eps);
                    }
                }
                let mut z = x.dot(&f.w.t());
                let off = if self.uses_bias(0) {
                    &f.offset_bias
                } else {
                    &f.offset
                };
                z += &off.view().insert_axis(Axis(0));
                (z, 1)
            }
            _ => (self.norm.apply(x), 0),
        };
        for l in first..=last {
            if l > 0 {
                sigmoid_inplace(&mut a);
            }
            if l == last && self.kind == Code::Triangle {
                return triangle(a.view(), &self.layers[l].0);
            }
            let (w, b) = &self.layers[l];
            a = if self.uses_bias(l) {
                affine(&a.view(), w, b)
            } else {
                a.dot(&w.t())
            };
        }
        a
    }

    /// Whether layer `l`'s bias enters its pre-activation: always, except the code
    /// layer's under a soft threshold without bias.
    fn uses_bias(&self, l: usize) -> bool {
        l + 1 < self.layers.len() || !matches!(self.kind, Code::SoftThreshold { bias: false, .. })
    }

    /// Feature width for images of `shape` at `step` in `mode`.
    pub fn feature_dim(&self, shape: Shape, step: usize, mode: Mode) -> usize {
        let (r, c) = (
            grid(shape.height, self.patch, step).len(),
            grid(shape.width, self.patch, step).len(),
        );
        match mode {
            Mode::Concat => r * c * self.code_width(),
            Mode::Pool => self.pool * self.pool * self.code_width(),
        }
    }

    /// Features of images `lo..hi` of `set`, one row per image.
    pub fn tile(
        &self,
        set: &ImageSet,
        lo: usize,
        hi: usize,
        step: usize,
        mode: Mode,
    ) -> Array2<f32> {
        self.tile_of(set, lo, hi, step, mode, false)
    }

    /// [`Encoder::tile`] of the images as they are, or mirrored left to right.
    fn tile_of(
        &self,
        set: &ImageSet,
        lo: usize,
        hi: usize,
        step: usize,
        mode: Mode,
        mirror: bool,
    ) -> Array2<f32> {
        let s = set.shape();
        let p = self.patch;
        let rows = grid(s.height, p, step);
        let cols = grid(s.width, p, step);
        let npos = rows.len() * cols.len();
        let d = s.channels * p * p;
        let n = hi - lo;
        let mut x = Array2::<f32>::zeros((n * npos, d));
        let mut hwc = vec![0u8; s.pixels()];
        // The image as f32 colour planes, once, so that each patch row is a copy of
        // `p` contiguous values instead of `p * channels` scattered byte reads.
        let mut planes = vec![0f32; s.pixels()];
        let (h, w) = (s.height, s.width);
        {
            let flat = x.as_slice_mut().expect("standard layout");
            for (k, i) in (lo..hi).enumerate() {
                set.read_hwc(i, &mut hwc);
                for (j, &v) in hwc.iter().enumerate() {
                    let (pix, c) = (j / s.channels, j % s.channels);
                    let (y, x) = (pix / w, pix % w);
                    let x = if mirror { w - 1 - x } else { x };
                    planes[c * h * w + y * w + x] = f32::from(v) / 255.0;
                }
                let mut at = k * npos * d;
                for &y in &rows {
                    for &xx in &cols {
                        let out = &mut flat[at..at + d];
                        for c in 0..s.channels {
                            for r in 0..p {
                                let src = c * h * w + (y + r) * w + xx;
                                out[c * p * p + r * p..][..p]
                                    .copy_from_slice(&planes[src..src + p]);
                            }
                        }
                        at += d;
                    }
                }
            }
        }
        let h = self.code_width();
        let mut out = Array2::<f32>::zeros((n, self.feature_dim(s, step, mode)));
        let g = self.pool;
        // Cell of each grid row and column: `g` runs whose lengths differ by at most
        // one (for two cells, split at half rounded up).
        let cell = |i: usize, n: usize| (i * g) / n.max(1);
        let codes = self.pre_codes(x);
        for k in 0..n {
            let mut o = out.row_mut(k);
            let o = o.as_slice_mut().expect("contiguous row");
            for ri in 0..rows.len() {
                for ci in 0..cols.len() {
                    let pos = ri * cols.len() + ci;
                    let code = codes.row(k * npos + pos);
                    let code = code.as_slice().expect("contiguous row");
                    let at = match mode {
                        Mode::Concat => pos * h,
                        Mode::Pool => (cell(ri, rows.len()) * g + cell(ci, cols.len())) * h,
                    };
                    self.kind.add_code(code, &mut o[at..at + h]);
                }
            }
        }
        out
    }

    /// Encodes every image of `set` and writes the features to `path`; returns rows.
    /// With `flip`, each image is followed by its mirror image (left to right), a
    /// second row with the same image number and label.
    pub fn write_features(
        &self,
        set: &ImageSet,
        step: usize,
        mode: Mode,
        flip: bool,
        path: &Path,
        label: &str,
    ) -> Result<usize> {
        self.write_part(set, 0..set.len(), step, mode, flip, path, label)
    }

    /// Encodes images `range` of `set` (one rank's share) and writes their features to
    /// `path` (with `flip`, each image's row followed by its mirror's); returns rows.
    #[allow(clippy::too_many_arguments)]
    pub fn write_part(
        &self,
        set: &ImageSet,
        range: std::ops::Range<usize>,
        step: usize,
        mode: Mode,
        flip: bool,
        path: &Path,
        label: &str,
    ) -> Result<usize> {
        if step == 0 {
            return Err(Error::config("features.steps", "step must be at least 1"));
        }
        let s = set.shape();
        let npos = grid(s.height, self.patch, step).len() * grid(s.width, self.patch, step).len();
        let per_tile = (self.tile_rows / npos).max(1);
        let labels = set
            .labels()
            .ok_or_else(|| Error::bad(set.name(), "images have no labels"))?;
        let meta = FeatureMeta {
            step: Some(step),
            mode: mode.name().into(),
        }
        .entries();
        let dim = self.feature_dim(s, step, mode);
        let rows = feature_batch_rows(dim);
        let mut w = StoreWriter::create_as(path, Kind::Features, dim, self.precision, rows, &meta)?;
        let end = range.end.min(set.len());
        let tiles: Vec<(usize, usize)> = (range.start..end)
            .step_by(per_tile)
            .map(|lo| (lo, (lo + per_tile).min(end)))
            .collect();
        let group = 2 * rayon::current_num_threads();
        let mut prog = Progress::new(label, end.saturating_sub(range.start), "images");
        // Each image as it is, then mirrored.
        let views: &[bool] = if flip { &[false, true] } else { &[false] };
        for g in tiles.chunks(group) {
            let feats: Vec<Vec<Array2<f32>>> = g
                .par_iter()
                .map(|&(lo, hi)| {
                    views
                        .iter()
                        .map(|&m| self.tile_of(set, lo, hi, step, mode, m))
                        .collect()
                })
                .collect();
            set.release();
            for (&(lo, hi), f) in g.iter().zip(feats) {
                for (feats, &mirrored) in f.iter().zip(views) {
                    if let Some(k) = feats
                        .rows()
                        .into_iter()
                        .position(|r| r.iter().any(|v| !v.is_finite()))
                    {
                        return Err(Error::Numeric(format!(
                            "features of image {}{} of {} are not finite",
                            lo + k,
                            if mirrored { " (mirrored)" } else { "" },
                            set.name().display()
                        )));
                    }
                }
                for (k, i) in (lo..hi).enumerate() {
                    for feats in &f {
                        w.push(
                            feats.row(k).as_slice().expect("contiguous"),
                            &[i as u32, labels[i].into()],
                        )?;
                    }
                }
                prog.inc(hi - lo);
            }
        }
        prog.finish();
        w.finish()
    }
}

/// Writes raw pixels (`/255`, interleaved) of every image as features.
pub fn write_raw(set: &ImageSet, path: &Path) -> Result<usize> {
    let s = set.shape();
    let labels = set
        .labels()
        .ok_or_else(|| Error::bad(set.name(), "images have no labels"))?;
    let meta = FeatureMeta {
        step: None,
        mode: "raw".into(),
    }
    .entries();
    let rows = feature_batch_rows(s.pixels());
    let mut w = StoreWriter::create(path, Kind::Features, s.pixels(), rows, &meta)?;
    let mut hwc = vec![0u8; s.pixels()];
    let mut row = vec![0f32; s.pixels()];
    for (i, &label) in labels.iter().enumerate() {
        set.read_hwc(i, &mut hwc);
        row.iter_mut()
            .zip(&hwc)
            .for_each(|(r, &v)| *r = f32::from(v) / 255.0);
        w.push(&row, &[i as u32, label.into()])?;
    }
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learn::sae::{Architecture, Decoder};

    fn images(n: usize, side: usize) -> ImageSet {
        let shape = Shape::rgb(side);
        let bytes: Vec<u8> = (0..n * shape.pixels())
            .map(|i| ((i * 37 + i / 97) % 251) as u8)
            .collect();
        ImageSet::from_hwc("t", bytes, shape, Some(vec![0; n])).unwrap()
    }

    /// A whitening matrix that is symmetric but far from the identity, and a mean.
    fn zca(d: usize, contrast: bool) -> Normaliser {
        let a = Array2::from_shape_fn((d, d), |(i, j)| ((i * 7 + j * 3) % 11) as f32 * 0.05);
        let w: Array2<f32> = &a + &a.t() + Array2::<f32>::eye(d);
        Normaliser::Zca {
            contrast,
            cn_eps: 10.0 / 255.0 / 255.0,
            mean: (0..d).map(|i| (i % 5) as f32 * 0.01 - 0.02).collect(),
            w: w.iter().copied().collect(),
        }
    }

    /// The fused path (whitening folded into the first layer, codes pooled as they are
    /// made) gives the features of the plain one: whiten, encode, then pool.
    #[test]
    fn folded_whitening_and_fused_pooling_match_the_plain_path() {
        let set = images(3, 12);
        let d = 3 * 4 * 4;
        for (hidden, contrast) in [(vec![10], true), (vec![9, 7], false)] {
            let arch = Architecture::new(d, &hidden, Some(hidden.len()), Decoder::Linear).unwrap();
            let mut theta = arch.init(4);
            let nw = arch.n_weights();
            theta[nw..]
                .iter_mut()
                .enumerate()
                .for_each(|(i, t)| *t = (i % 3) as f64 * 0.1 - 0.1);
            let net = Network::from_theta(arch, &theta);
            for code in [
                Code::Sigmoid,
                Code::SoftThreshold {
                    alpha: 0.25,
                    bias: false,
                },
                Code::SoftThreshold {
                    alpha: 0.1,
                    bias: true,
                },
            ] {
                let enc = Encoder::new(&net, zca(d, contrast), 4).with_code(code);
                assert!(enc.folded.is_some());
                let mut plain = Encoder::new(&net, zca(d, contrast), 4).with_code(code);
                plain.folded = None;
                for (step, mode) in [(1, Mode::Pool), (3, Mode::Concat)] {
                    let a = enc.tile(&set, 0, 3, step, mode);
                    let b = plain.tile(&set, 0, 3, step, mode);
                    assert_eq!(a.dim(), b.dim());
                    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
                    assert!(scale > 0.0);
                    for (x, y) in a.iter().zip(b.iter()) {
                        assert!(
                            (x - y).abs() <= 1e-4 * scale,
                            "{code:?} {hidden:?}: {x} vs {y}"
                        );
                    }
                }
            }
        }
    }

    /// Unit atoms make the features independent of each code unit's scale: a network
    /// and a copy with its code rows (and biases) scaled by positive factors encode
    /// alike, through the folded whitening.
    #[test]
    fn unit_atoms_ignore_each_units_scale() {
        let set = images(2, 10);
        let d = 3 * 4 * 4;
        let arch = Architecture::new(d, &[6], None, Decoder::Linear).unwrap();
        let theta = arch.init(5);
        let mut scaled = theta.clone();
        for j in 0..6 {
            let k = 0.5 + j as f64;
            scaled[j * d..(j + 1) * d].iter_mut().for_each(|v| *v *= k);
            let b = arch.n_weights() + j;
            scaled[b] = (j as f64 - 2.0) * 0.1 * k;
        }
        let mut base = theta;
        (0..6).for_each(|j| base[arch.n_weights() + j] = (j as f64 - 2.0) * 0.1);
        let (a, b) = (
            Network::from_theta(arch.clone(), &base),
            Network::from_theta(arch, &scaled),
        );
        let code = Code::SoftThreshold {
            alpha: 0.1,
            bias: true,
        };
        let enc = |n: &Network| {
            Encoder::new(n, zca(d, true), 4)
                .with_code(code)
                .with_unit_atoms()
                .tile(&set, 0, 2, 1, Mode::Pool)
        };
        let (fa, fb) = (enc(&a), enc(&b));
        let scale = fa.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(scale > 0.0);
        assert!(fa
            .iter()
            .zip(&fb)
            .all(|(x, y)| (x - y).abs() <= 1e-4 * scale));
        let raw = Encoder::new(&b, zca(d, true), 4)
            .with_code(code)
            .tile(&set, 0, 2, 1, Mode::Pool);
        assert!(raw
            .iter()
            .zip(&fb)
            .any(|(x, y)| (x - y).abs() > 1e-2 * scale));
    }

    /// A feature batch holds at most [`FEATURE_BATCH_BYTES`] of values (at least one
    /// row), and narrow rows keep [`FEATURE_BATCH`] rows.
    #[test]
    fn wide_feature_rows_make_smaller_batches() {
        assert_eq!(feature_batch_rows(12), FEATURE_BATCH);
        for width in [12_800, 32_000, 64_000, 3_000_000, FEATURE_BATCH_BYTES] {
            let rows = feature_batch_rows(width);
            assert!(rows >= 1 && rows * width * 4 <= FEATURE_BATCH_BYTES.max(width * 4));
            assert!(rows < FEATURE_BATCH, "{width}: {rows}");
        }
        assert_eq!(feature_batch_rows(64_000), 131);
    }

    /// A flipped feature file holds each image's row and then its mirror's, under the
    /// same image number and label: the mirror's row is the plain encoding of the image
    /// mirrored by hand, and the original rows are the file written without `flip`.
    #[test]
    fn flip_adds_each_images_mirror_after_it() {
        let (n, side) = (3, 10);
        let shape = Shape::rgb(side);
        let bytes: Vec<u8> = (0..n * shape.pixels())
            .map(|i| ((i * 37 + i / 97) % 251) as u8)
            .collect();
        let mut mirrored = bytes.clone();
        for (img, out) in bytes
            .chunks(shape.pixels())
            .zip(mirrored.chunks_mut(shape.pixels()))
        {
            for y in 0..side {
                for x in 0..side {
                    for c in 0..3 {
                        out[(y * side + side - 1 - x) * 3 + c] = img[(y * side + x) * 3 + c];
                    }
                }
            }
        }
        let labels = Some(vec![4, 1, 7]);
        let set = ImageSet::from_hwc("t", bytes, shape, labels.clone()).unwrap();
        let flipped = ImageSet::from_hwc("m", mirrored, shape, labels).unwrap();
        let d = 3 * 4 * 4;
        let arch = Architecture::new(d, &[5], None, Decoder::Linear).unwrap();
        let net = Network::from_theta(arch.clone(), &arch.init(2));
        let enc = Encoder::new(&net, zca(d, true), 4).with_code(Code::SoftThreshold {
            alpha: 0.1,
            bias: false,
        });
        let dir = tempfile::tempdir().unwrap();
        let (plain, flip) = (
            dir.path().join("plain.arrow"),
            dir.path().join("flip.arrow"),
        );
        assert_eq!(
            enc.write_features(&set, 2, Mode::Pool, false, &plain, "t")
                .unwrap(),
            3
        );
        assert_eq!(
            enc.write_features(&set, 2, Mode::Pool, true, &flip, "t")
                .unwrap(),
            6
        );
        let (p, f) = (
            crate::data::store::Store::open(&plain, Kind::Features).unwrap(),
            crate::data::store::Store::open(&flip, Kind::Features).unwrap(),
        );
        assert_eq!(f.images().unwrap(), vec![0, 0, 1, 1, 2, 2]);
        assert_eq!(f.labels().unwrap(), vec![4, 4, 1, 1, 7, 7]);
        let by_hand = enc.tile(&flipped, 0, n, 2, Mode::Pool);
        let span = f.span(0, 2 * n).unwrap();
        let plain_span = p.span(0, n).unwrap();
        for i in 0..n {
            assert_eq!(span.row(2 * i), plain_span.row(i));
            assert_eq!(span.row(2 * i + 1).to_vec(), by_hand.row(i).to_vec());
            assert_ne!(span.row(2 * i), span.row(2 * i + 1));
        }
    }
}
