//! Property tests: round trips and invariants over generated inputs (proptest shrinks
//! any failure to a small case).

use std::collections::HashMap;

use ndarray::{Array2, Axis};
use proptest::prelude::*;
use sae::data::ingest::{pickle, ImageSet, PixelOrder, Shape};
use sae::data::patches::grid;
use sae::data::preprocess::{Fitter, NormSpec};
use sae::data::store::{Kind, Store, StoreWriter};
use sae::encode::{Code, Encoder, Mode};
use sae::learn::sae::{Architecture, Decoder, Network};

use crate::util::{numpy_pickle, tmp};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(48))]

    /// Whatever the width, row count and batch size, a store gives back exactly the
    /// rows and columns written, in order, across batch boundaries.
    #[test]
    fn store_round_trip(
        dim in 1usize..40,
        batch in 1usize..50,
        rows in 0usize..200,
        seed in any::<u64>(),
    ) {
        let d = tmp();
        let p = d.path().join("s.arrow");
        let x = Array2::from_shape_fn((rows, dim), |(i, j)| {
            let h = (i as u64 * 7919 + j as u64 * 104_729) ^ seed;
            f32::from_bits(0x3f00_0000 | (h as u32 & 0x007f_ffff)) - 0.75
        });
        let cols: Vec<Vec<u32>> = (0..3)
            .map(|k| (0..rows as u32).map(|i| i.wrapping_mul(2654435761) ^ (seed as u32 + k)).collect())
            .collect();
        let mut w = StoreWriter::create(&p, Kind::Patches, dim, batch, &HashMap::new()).unwrap();
        let aux: Vec<&[u32]> = cols.iter().map(|c| c.as_slice()).collect();
        w.push_rows(x.view(), &aux).unwrap();
        prop_assert_eq!(w.finish().unwrap(), rows);
        let s = Store::open(&p, Kind::Patches).unwrap();
        prop_assert_eq!((s.rows(), s.dim(), s.batches()), (rows, dim, rows.div_ceil(batch)));
        let mut at = 0;
        for b in 0..s.batches() {
            let batch = s.batch(b).unwrap();
            let v = batch.values();
            prop_assert_eq!(v.view(), x.slice(ndarray::s![at..at + v.nrows(), ..]));
            for (k, c) in cols.iter().enumerate() {
                prop_assert_eq!(batch.column(k), &c[at..at + v.nrows()]);
            }
            at += v.nrows();
        }
        prop_assert_eq!(at, rows);
    }

    /// Every shape and dtype the pickle reader accepts gives back the pixels written:
    /// flat, HWC and CHW arrays of uint8, and float32/float64 in [0, 255] or [0, 1]
    /// in either byte order.
    #[test]
    fn pickle_arrays_of_any_accepted_shape_and_dtype(
        n in 1usize..5,
        h in 1usize..12,
        w in 1usize..12,
        layout in 0usize..3,
        dtype in 0usize..5,
        big in any::<bool>(),
        seed in any::<u8>(),
    ) {
        // A flat array only carries square images.
        let w = if layout == 0 { h } else { w };
        let px = |i: usize, y: usize, x: usize, c: usize| {
            ((i * 37 + y * 11 + x * 5 + c * 60 + seed as usize) % 256) as u8
        };
        let mut vals = Vec::new();
        for i in 0..n {
            match layout {
                0 | 1 => (0..h).for_each(|y| (0..w).for_each(|x| (0..3).for_each(|c| vals.push(px(i, y, x, c))))),
                _ => (0..3).for_each(|c| (0..h).for_each(|y| (0..w).for_each(|x| vals.push(px(i, y, x, c))))),
            }
        }
        let shape: Vec<usize> = match layout {
            0 => vec![n, 3 * h * w],
            1 => vec![n, h, w, 3],
            _ => vec![n, 3, h, w],
        };
        let (code, bytes): (&str, Vec<u8>) = match dtype {
            0 => ("u1", vals.clone()),
            1 => ("f4", vals.iter().flat_map(|&v| {
                let f = f32::from(v);
                if big { f.to_be_bytes() } else { f.to_le_bytes() }
            }).collect()),
            2 => ("f4", vals.iter().flat_map(|&v| {
                let f = f32::from(v) / 255.0;
                if big { f.to_be_bytes() } else { f.to_le_bytes() }
            }).collect()),
            3 => ("f8", vals.iter().flat_map(|&v| {
                let f = f64::from(v);
                if big { f.to_be_bytes() } else { f.to_le_bytes() }
            }).collect()),
            _ => ("f8", vals.iter().flat_map(|&v| {
                let f = f64::from(v) / 255.0;
                if big { f.to_be_bytes() } else { f.to_le_bytes() }
            }).collect()),
        };
        let order = if dtype == 0 { '|' } else if big { '>' } else { '<' };
        let labels: Vec<u8> = (0..n as u8).collect();
        let d = tmp();
        let f = d.path().join("a.pk");
        std::fs::write(&f, numpy_pickle(&[("X", &shape, code, order, &bytes), ("y", &[n], "u1", '|', &labels)])).unwrap();
        // Flat arrays carry no layout: name it rather than rely on detection, which
        // needs natural images. N x 3 x H x 3 is ambiguous and needs it named too.
        let ambiguous = (layout == 1 && h == 3) || (layout == 2 && w == 3);
        if ambiguous {
            let e = pickle::open_file(&f, None).err().unwrap().to_string();
            prop_assert!(e.contains("pixel_order"), "{}", e);
        }
        let forced = match layout {
            0 => Some(PixelOrder::Hwc),
            1 if ambiguous => Some(PixelOrder::Hwc),
            2 if ambiguous => Some(PixelOrder::Chw),
            _ => None,
        };
        let file = pickle::open_file(&f, forced).unwrap();
        // A file's labels come as stored; the dataset decides the base.
        let stored: Vec<i64> = labels.iter().map(|&v| i64::from(v)).collect();
        prop_assert_eq!(file.labels.as_deref(), Some(&stored[..]));
        let set = file.labelled(0).unwrap();
        prop_assert_eq!(set.len(), n);
        prop_assert_eq!(set.shape(), Shape { height: h, width: w, channels: 3 });
        prop_assert_eq!(set.labels().unwrap(), &labels[..]);
        let mut out = vec![0u8; set.shape().pixels()];
        for i in 0..n {
            set.read_hwc(i, &mut out);
            for y in 0..h {
                for x in 0..w {
                    for c in 0..3 {
                        prop_assert_eq!(out[(y * w + x) * 3 + c], px(i, y, x, c), "image {} ({}, {}, {})", i, y, x, c);
                    }
                }
            }
        }
    }

    /// ZCA whitening (with contrast normalisation or not) of random correlated data
    /// leaves the fitted rows with zero mean and a covariance whose eigenvalues are
    /// λ/(λ+ε), so at most 1; the study's scaling maps into [0.1, 0.9].
    #[test]
    fn normalisers_on_random_data(
        dim in 2usize..10,
        rows in 200usize..400,
        contrast in any::<bool>(),
        seed in any::<u64>(),
    ) {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_pcg::Pcg64::seed_from_u64(seed);
        let mix = Array2::from_shape_fn((dim, dim), |_| rng.random_range(-1.0f32..1.0));
        let z = Array2::from_shape_fn((rows, dim), |_| rng.random_range(-1.0f32..1.0));
        let x = (z.dot(&mix) * 0.2).mapv(|v| (v + 0.5).clamp(0.0, 1.0));
        let eps = 1e-3;
        let mut fit = Fitter::new(NormSpec::Zca { contrast, cn_eps: 0.0, zca_eps: eps }, dim);
        fit.add(x.view());
        let Ok(norm) = fit.finish() else {
            // Contrast normalisation of 2-value rows can leave nothing to whiten.
            prop_assume!(false);
            unreachable!()
        };
        let y = norm.apply(x.clone()).mapv(f64::from);
        let mean = y.mean_axis(Axis(0)).unwrap();
        prop_assert!(mean.iter().all(|m| m.abs() < 1e-3), "mean {:?}", mean);
        let cov = |m: &Array2<f64>| {
            let c = m - &m.mean_axis(Axis(0)).unwrap().insert_axis(Axis(0));
            c.t().dot(&c) / rows as f64
        };
        let (mut vals, _) = sae::data::preprocess::symmetric_eigen(cov(&y));
        // What whitening must give: for each eigenvalue λ of the input covariance
        // (after contrast normalisation, done here independently), λ/(λ+ε). A
        // whitener that outputs zeros, or scales wrongly, fails this.
        let mut input = x.mapv(f64::from);
        if contrast {
            for mut r in input.axis_iter_mut(Axis(0)) {
                let m = r.mean().unwrap();
                r.mapv_inplace(|v| v - m);
                let var = r.iter().map(|v| v * v).sum::<f64>() / (dim as f64 - 1.0).max(1.0);
                r.mapv_inplace(|v| v / var.sqrt());
            }
        }
        let (lambdas, _) = sae::data::preprocess::symmetric_eigen(cov(&input));
        let mut want: Vec<f64> = lambdas.iter().map(|&l| l.max(0.0) / (l.max(0.0) + eps)).collect();
        vals.as_slice_mut().unwrap().sort_by(f64::total_cmp);
        want.sort_by(f64::total_cmp);
        for (v, w) in vals.iter().zip(&want) {
            prop_assert!((v - w).abs() < 2e-2, "eigenvalues {:?}, want {:?}", vals, want);
        }
        prop_assert!(want.last().unwrap() > &0.5, "the data must have variance to whiten");
        // ZCA, not just any whitening: W is symmetric, so the cross-covariance of the
        // output with the (contrast-normalised) input, W·C, is symmetric. A PCA or
        // otherwise rotated whitener passes the eigenvalue check and fails this.
        let centred = |m: &Array2<f64>| m - &m.mean_axis(Axis(0)).unwrap().insert_axis(Axis(0));
        let cross = centred(&y).t().dot(&centred(&input)) / rows as f64;
        let scale = cross.iter().fold(0f64, |a, v| a.max(v.abs()));
        for i in 0..dim {
            for j in 0..i {
                prop_assert!((cross[[i, j]] - cross[[j, i]]).abs() < 1e-2 * scale.max(1e-3), "W·C not symmetric at ({}, {}): {} vs {}", i, j, cross[[i, j]], cross[[j, i]]);
            }
        }
        let mut fit = Fitter::new(NormSpec::Ufldl, dim);
        fit.add(x.view());
        let y = fit.finish().unwrap().apply(x);
        prop_assert!(y.iter().all(|v| (0.1 - 1e-6..=0.9 + 1e-6).contains(v)));
    }

    /// For any image size, patch size, step and pooling grid, features have
    /// `feature_dim` columns, and pooling sums the concatenated codes unit by unit into
    /// the cells of the grid, row by row (for two cells per side, the four quadrants:
    /// rows and columns split at half, rounded up).
    #[test]
    fn concat_and_pool_shapes(
        side in 1usize..24,
        patch in 1usize..8,
        step in 1usize..9,
        hidden in 1usize..6,
        n in 1usize..4,
        soft in any::<bool>(),
        cells in 1usize..5,
    ) {
        prop_assume!(patch <= side);
        let shape = Shape::rgb(side);
        let bytes: Vec<u8> = (0..n * shape.pixels()).map(|i| (i * 31 % 251) as u8).collect();
        let set = ImageSet::from_hwc("p", bytes, shape, None).unwrap();
        let arch = Architecture::new(3 * patch * patch, &[hidden], None, Decoder::Sigmoid).unwrap();
        let net = Network::from_theta(arch.clone(), &arch.init(3));
        let code = if soft { Code::SoftThreshold { alpha: 0.1, bias: false } } else { Code::Sigmoid };
        let enc = Encoder::new(&net, sae::data::preprocess::Normaliser::Ufldl { pstd: 0.3 }, patch)
            .with_code(code)
            .with_pool_grid(cells);
        let cw = enc.code_width();
        prop_assert_eq!(cw, if soft { 2 * hidden } else { hidden });
        let positions = grid(side, patch, step).len();
        let concat = enc.tile(&set, 0, n, step, Mode::Concat);
        let pool = enc.tile(&set, 0, n, step, Mode::Pool);
        prop_assert_eq!(concat.dim(), (n, positions * positions * cw));
        prop_assert_eq!(concat.ncols(), enc.feature_dim(shape, step, Mode::Concat));
        prop_assert_eq!(pool.dim(), (n, cells * cells * cw));
        prop_assert_eq!(pool.ncols(), enc.feature_dim(shape, step, Mode::Pool));
        // The cell of each grid row: `cells` runs of consecutive rows whose lengths
        // differ by at most one, the longer first.
        let bounds: Vec<usize> = (0..=cells)
            .map(|c| (c * positions).div_ceil(cells))
            .collect();
        let cell = |i: usize| (0..cells).find(|&c| i < bounds[c + 1]).unwrap();
        if cells == 2 {
            let half = positions.div_ceil(2);
            prop_assert!((0..positions).all(|i| cell(i) == usize::from(i >= half)));
        }
        for k in 0..n {
            let mut want = vec![0f64; cells * cells * cw];
            for ri in 0..positions {
                for ci in 0..positions {
                    let q = cell(ri) * cells + cell(ci);
                    let at = (ri * positions + ci) * cw;
                    for u in 0..cw {
                        want[q * cw + u] += f64::from(concat[[k, at + u]]);
                    }
                }
            }
            for (j, w) in want.iter().enumerate() {
                let got = f64::from(pool[[k, j]]);
                prop_assert!((got - w).abs() <= 1e-4 * w.abs().max(1.0), "feature {}: {} vs {}", j, got, w);
            }
        }
    }
}
