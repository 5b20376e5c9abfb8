//! Patch normalisation, fitted on the training patches and saved with the model so
//! that encoding applies the very same transform.
//!
//! - `ufldl` (the study's): remove each patch's mean, truncate to ±3 standard
//!   deviations (σ over all training values), rescale to [0.1, 0.9].
//! - `zca` (Coates, Lee & Ng 2011): per-patch brightness and contrast normalisation
//!   `(x − mean(x)) / sqrt(var(x) + ε_cn)`, then ZCA whitening
//!   `W = V diag(1/sqrt(d + ε_zca)) Vᵀ` of the covariance. Without the contrast step it
//!   is UFLDL's linear-decoder ZCA.
//!
//! Fitting streams: [`Fitter`] takes raw chunks one at a time and keeps only sums.

use ndarray::{Array1, Array2, ArrayView2, Axis};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which normalisation to fit.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum NormSpec {
    /// The study's scaling.
    Ufldl,
    /// Contrast normalisation (optional) and ZCA whitening.
    Zca {
        /// Apply per-patch contrast normalisation first.
        contrast: bool,
        /// ε of contrast normalisation, in 0..255 pixel units squared (Coates: 10).
        cn_eps: f64,
        /// ε added to the covariance eigenvalues.
        zca_eps: f64,
    },
}

/// A fitted normalisation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Normaliser {
    /// The study's scaling with 3σ.
    Ufldl {
        /// 3σ of the mean-removed training values.
        pstd: f32,
    },
    /// Contrast normalisation and ZCA.
    Zca {
        /// Contrast step on or off.
        contrast: bool,
        /// Contrast ε in 0..1 units.
        cn_eps: f32,
        /// Mean of the (contrast-normalised) training patches.
        mean: Vec<f32>,
        /// Whitening matrix, row-major D x D (symmetric).
        w: Vec<f32>,
    },
}

/// Accumulates what a [`NormSpec`] needs from raw training chunks.
pub struct Fitter {
    spec: NormSpec,
    n: f64,
    sum: f64,
    sumsq: f64,
    vsum: Array1<f64>,
    cross: Array2<f64>,
}

/// Per-patch contrast normalisation in place: mean removed, divided by `sqrt(var + eps)`.
pub(crate) fn contrast_normalise(row: &mut [f32], eps: f32) {
    let d = row.len() as f32;
    let mean = row.iter().sum::<f32>() / d;
    row.iter_mut().for_each(|v| *v -= mean);
    let var = row.iter().map(|v| v * v).sum::<f32>() / (d - 1.0).max(1.0);
    let inv = 1.0 / (var + eps).sqrt();
    row.iter_mut().for_each(|v| *v *= inv);
}

impl Fitter {
    /// A fitter for rows of width `dim`.
    pub fn new(spec: NormSpec, dim: usize) -> Self {
        let zca = matches!(spec, NormSpec::Zca { .. });
        let d = if zca { dim } else { 0 };
        Fitter {
            spec,
            n: 0.0,
            sum: 0.0,
            sumsq: 0.0,
            vsum: Array1::zeros(d),
            cross: Array2::zeros((d, d)),
        }
    }

    /// Adds a chunk of raw patches.
    pub fn add(&mut self, raw: ArrayView2<f32>) {
        match self.spec {
            NormSpec::Ufldl => {
                for row in raw.rows() {
                    let mean = row.sum() as f64 / row.len() as f64;
                    for &v in row {
                        let c = v as f64 - mean;
                        self.sum += c;
                        self.sumsq += c * c;
                    }
                    self.n += row.len() as f64;
                }
            }
            NormSpec::Zca {
                contrast, cn_eps, ..
            } => {
                let mut y = raw.mapv(f64::from);
                if contrast {
                    let eps = (cn_eps / (255.0 * 255.0)) as f32;
                    for mut row in y.rows_mut() {
                        let mut r: Vec<f32> = row.iter().map(|&v| v as f32).collect();
                        contrast_normalise(&mut r, eps);
                        row.iter_mut().zip(r).for_each(|(o, v)| *o = f64::from(v));
                    }
                }
                self.vsum += &y.sum_axis(Axis(0));
                self.cross += &y.t().dot(&y);
                self.n += y.nrows() as f64;
            }
        }
    }

    /// The fitted normaliser.
    pub fn finish(self) -> Result<Normaliser> {
        if self.n == 0.0 {
            return Err(Error::Numeric(
                "no patches to fit the normalisation on".into(),
            ));
        }
        match self.spec {
            NormSpec::Ufldl => {
                let mean = self.sum / self.n;
                let std = (self.sumsq / self.n - mean * mean).max(0.0).sqrt();
                if std.is_nan() || std <= 0.0 {
                    return Err(Error::Numeric(
                        "patches have no contrast (all flat): cannot scale".into(),
                    ));
                }
                Ok(Normaliser::Ufldl {
                    pstd: (3.0 * std) as f32,
                })
            }
            NormSpec::Zca {
                contrast,
                cn_eps,
                zca_eps,
            } => {
                let m = self.n;
                let mean = &self.vsum / m;
                let d = mean.len();
                let mut cov = &self.cross / m;
                for i in 0..d {
                    for j in 0..d {
                        cov[[i, j]] -= mean[i] * mean[j];
                    }
                }
                if cov.iter().any(|v| !v.is_finite()) {
                    return Err(Error::Numeric(
                        "covariance is not finite (NaN in data?)".into(),
                    ));
                }
                let (vals, vecs) = symmetric_eigen(cov);
                let scale = vals.mapv(|l| 1.0 / (l.max(0.0) + zca_eps).sqrt());
                let w = (&vecs * &scale.insert_axis(Axis(0))).dot(&vecs.t());
                Ok(Normaliser::Zca {
                    contrast,
                    cn_eps: (cn_eps / (255.0 * 255.0)) as f32,
                    mean: mean.iter().map(|&v| v as f32).collect(),
                    w: w.iter().map(|&v| v as f32).collect(),
                })
            }
        }
    }
}

impl Normaliser {
    /// Normalises raw patches (rows, values in 0..1).
    pub fn apply(&self, mut x: Array2<f32>) -> Array2<f32> {
        match self {
            Normaliser::Ufldl { pstd } => {
                let (p, s) = (*pstd, 0.4 / *pstd);
                for mut row in x.rows_mut() {
                    let mean = row.sum() / row.len() as f32;
                    row.mapv_inplace(|v| (v - mean).clamp(-p, p) * s + 0.5);
                }
                x
            }
            Normaliser::Zca {
                contrast,
                cn_eps,
                mean,
                w,
            } => {
                let d = mean.len();
                assert_eq!(x.ncols(), d, "patch width");
                for mut row in x.rows_mut() {
                    let r = row.as_slice_mut().expect("rows are contiguous");
                    if *contrast {
                        contrast_normalise(r, *cn_eps);
                    }
                    r.iter_mut().zip(mean).for_each(|(v, m)| *v -= m);
                }
                let w = ArrayView2::from_shape((d, d), w).expect("D x D");
                x.dot(&w)
            }
        }
    }

    /// Short description for reports.
    pub fn describe(&self) -> String {
        match self {
            Normaliser::Ufldl { pstd } => format!("ufldl (3σ = {pstd:.4})"),
            Normaliser::Zca { contrast, .. } => {
                format!(
                    "zca{}",
                    if *contrast {
                        " with contrast normalisation"
                    } else {
                        ""
                    }
                )
            }
        }
    }
}

/// Eigen-decomposition of a symmetric matrix by cyclic Jacobi rotations: eigenvalues
/// and eigenvectors (columns). Accurate to machine precision for the covariance sizes
/// used here (D ≤ a few hundred), without a LAPACK dependency.
pub fn symmetric_eigen(mut a: Array2<f64>) -> (Array1<f64>, Array2<f64>) {
    let n = a.nrows();
    assert_eq!(n, a.ncols());
    let mut v = Array2::<f64>::eye(n);
    let total: f64 = a.iter().map(|x| x * x).sum();
    for _sweep in 0..100 {
        let mut off = 0.0;
        for p in 0..n {
            for q in p + 1..n {
                off += a[[p, q]] * a[[p, q]];
            }
        }
        if off <= 1e-30 * total || off == 0.0 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[[p, q]];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[[q, q]] - a[[p, p]]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let akp = a[[k, p]];
                    let akq = a[[k, q]];
                    a[[k, p]] = c * akp - s * akq;
                    a[[k, q]] = s * akp + c * akq;
                }
                for k in 0..n {
                    let apk = a[[p, k]];
                    let aqk = a[[q, k]];
                    a[[p, k]] = c * apk - s * aqk;
                    a[[q, k]] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let vkp = v[[k, p]];
                    let vkq = v[[k, q]];
                    v[[k, p]] = c * vkp - s * vkq;
                    v[[k, q]] = s * vkp + c * vkq;
                }
            }
        }
    }
    (a.diag().to_owned(), v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{stream, uniform, Stream};

    fn raw(n: usize, d: usize) -> Array2<f32> {
        let mut r = stream(3, Stream::Patches, 0);
        // Correlated columns, like neighbouring pixels.
        Array2::from_shape_fn((n, d), |(_, j)| {
            (0.3 + 0.1 * (j as f64).sin() + uniform(&mut r, 0.0, 0.4)) as f32
        })
    }

    #[test]
    fn ufldl_range_and_centre() {
        let x = raw(2000, 12);
        let mut f = Fitter::new(NormSpec::Ufldl, 12);
        f.add(x.view());
        let n = f.finish().unwrap();
        let y = n.apply(x);
        assert!(y.iter().all(|&v| (0.1 - 1e-6..=0.9 + 1e-6).contains(&v)));
        let mean = y.mean().unwrap();
        assert!((mean - 0.5).abs() < 1e-3, "{mean}");
    }

    #[test]
    fn zca_whitens_to_near_identity_covariance() {
        let x = raw(20_000, 6);
        let spec = NormSpec::Zca {
            contrast: false,
            cn_eps: 10.0,
            zca_eps: 1e-8,
        };
        let mut f = Fitter::new(spec, 6);
        for c in x.axis_chunks_iter(Axis(0), 3000) {
            f.add(c);
        }
        let y = f.finish().unwrap().apply(x);
        let m = y.mean_axis(Axis(0)).unwrap();
        assert!(m.iter().all(|v| v.abs() < 1e-3));
        let cov = y.t().dot(&y) / y.nrows() as f32;
        for i in 0..6 {
            for j in 0..6 {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!(
                    (cov[[i, j]] - want).abs() < 1e-2,
                    "cov[{i},{j}] = {}",
                    cov[[i, j]]
                );
            }
        }
    }

    #[test]
    fn contrast_normalised_rows_have_zero_mean_unit_variance() {
        let mut r = vec![0.1, 0.5, 0.9, 0.3];
        contrast_normalise(&mut r, 0.0);
        let m: f32 = r.iter().sum::<f32>() / 4.0;
        let v: f32 = r.iter().map(|x| x * x).sum::<f32>() / 3.0;
        assert!(m.abs() < 1e-6 && (v - 1.0).abs() < 1e-5);
    }

    #[test]
    fn jacobi_reconstructs() {
        let a = Array2::from_shape_fn((5, 5), |(i, j)| 1.0 / (1 + i + j) as f64);
        let (l, v) = symmetric_eigen(a.clone());
        let back = (&v * &l.insert_axis(Axis(0))).dot(&v.t());
        for (x, y) in a.iter().zip(back.iter()) {
            assert!((x - y).abs() < 1e-12);
        }
    }

    #[test]
    fn flat_patches_are_an_error() {
        let x = Array2::<f32>::from_elem((10, 4), 0.5);
        let mut f = Fitter::new(NormSpec::Ufldl, 4);
        f.add(x.view());
        assert!(f.finish().is_err());
    }
}
