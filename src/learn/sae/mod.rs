//! The sparse autoencoder: architecture, parameters, and the trained network.
//!
//! Parameters live in one flat vector `theta = [W1, ..., WL, b1, ..., bL]`, each `W`
//! row-major with shape (n_out, n_in): the layout of UFLDL and of the numpy peer, so
//! parameter vectors can be compared across implementations.

pub mod gradcheck;
pub mod objective;
pub mod simd;

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ScalarOperand};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::rng::{stream, uniform, Stream};

/// Output activation of the decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Decoder {
    /// Sigmoid output: inputs must lie in (0, 1), as after the study's scaling.
    Sigmoid,
    /// Linear output: for whitened inputs of any range.
    Linear,
}

/// Layer sizes and where the sparsity penalty (and the code) sits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Architecture {
    /// `[visible, hidden..., visible]`.
    pub sizes: Vec<usize>,
    /// Index into `sizes` of the sparse (code) layer, `1..sizes.len()-1`.
    pub sparse: usize,
    /// Output activation.
    pub decoder: Decoder,
}

impl Architecture {
    /// A symmetric autoencoder `visible -> hidden... -> visible`, sparse on `sparse`
    /// (1-based hidden index) or, by default, the middle hidden layer.
    pub fn new(
        visible: usize,
        hidden: &[usize],
        sparse: Option<usize>,
        decoder: Decoder,
    ) -> Result<Self> {
        if hidden.is_empty() || hidden.contains(&0) || visible == 0 {
            return Err(Error::config(
                "model.hidden",
                "needs at least one hidden layer, each with at least one unit",
            ));
        }
        let sparse = sparse.unwrap_or(hidden.len().div_ceil(2));
        if sparse == 0 || sparse > hidden.len() {
            return Err(Error::config(
                "model.sparse_layer",
                format!("must be 1..{} (a hidden layer)", hidden.len()),
            ));
        }
        let mut sizes = vec![visible];
        sizes.extend_from_slice(hidden);
        sizes.push(visible);
        Ok(Architecture {
            sizes,
            sparse,
            decoder,
        })
    }

    /// Number of weight layers.
    pub fn layers(&self) -> usize {
        self.sizes.len() - 1
    }

    /// Input width.
    pub fn visible(&self) -> usize {
        self.sizes[0]
    }

    /// Width of the code layer.
    pub fn code_size(&self) -> usize {
        self.sizes[self.sparse]
    }

    /// (rows, cols) of weight matrix `l`.
    pub fn weight_shape(&self, l: usize) -> (usize, usize) {
        (self.sizes[l + 1], self.sizes[l])
    }

    /// Offsets of each W and each b in theta.
    pub fn offsets(&self) -> (Vec<usize>, Vec<usize>) {
        let mut w = Vec::new();
        let mut k = 0;
        for l in 0..self.layers() {
            w.push(k);
            let (o, i) = self.weight_shape(l);
            k += o * i;
        }
        let mut b = Vec::new();
        for l in 0..self.layers() {
            b.push(k);
            k += self.sizes[l + 1];
        }
        (w, b)
    }

    /// Length of theta.
    pub fn n_params(&self) -> usize {
        let (_, b) = self.offsets();
        b[self.layers() - 1] + self.sizes[self.layers()]
    }

    /// Number of weights (the decayed part of theta, which comes first).
    pub fn n_weights(&self) -> usize {
        self.offsets().1[0]
    }

    /// Initial theta: `W ~ U[±sqrt(6/(n_in+n_out+1))]`, `b = 0`, from `seed`.
    pub fn init(&self, seed: u64) -> Vec<f64> {
        let mut rng = stream(seed, Stream::Init, 0);
        let mut theta = vec![0.0; self.n_params()];
        let mut k = 0;
        for l in 0..self.layers() {
            let (o, i) = self.weight_shape(l);
            let r = (6.0 / (o + i + 1) as f64).sqrt();
            for t in &mut theta[k..k + o * i] {
                *t = uniform(&mut rng, -r, r);
            }
            k += o * i;
        }
        theta
    }

    /// Weights and biases of theta as arrays of `F`.
    pub fn unpack<F: Real>(&self, theta: &[f64]) -> (Vec<Array2<F>>, Vec<Array1<F>>) {
        assert_eq!(theta.len(), self.n_params(), "theta length");
        let (wo, bo) = self.offsets();
        let ws = (0..self.layers())
            .map(|l| {
                let (o, i) = self.weight_shape(l);
                Array2::from_shape_fn((o, i), |(r, c)| F::from_f64(theta[wo[l] + r * i + c]))
            })
            .collect();
        let bs = (0..self.layers())
            .map(|l| Array1::from_shape_fn(self.sizes[l + 1], |j| F::from_f64(theta[bo[l] + j])))
            .collect();
        (ws, bs)
    }
}

/// Floating-point types the objective and encoder run in: f32 for speed, f64 for checks.
pub trait Real:
    ndarray::LinalgScalar
    + num_traits::Float
    + ScalarOperand
    + Send
    + Sync
    + std::fmt::Debug
    + std::ops::AddAssign
    + std::ops::MulAssign
    + std::ops::SubAssign
    + 'static
{
    /// From f64 (rounding).
    fn from_f64(x: f64) -> Self;
    /// To f64.
    fn as_f64(self) -> f64;
    /// From f32 (exact).
    fn from_f32(x: f32) -> Self;
    /// The rows of an f32 view in this type: borrowed for f32, converted for f64.
    fn cast_rows(x: ArrayView2<'_, f32>) -> ndarray::CowArray<'_, Self, ndarray::Ix2>;
    /// The logistic function over a slice, in place.
    fn sigmoid_slice(x: &mut [Self]);
}

impl Real for f32 {
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    fn as_f64(self) -> f64 {
        self as f64
    }
    fn from_f32(x: f32) -> Self {
        x
    }
    fn cast_rows(x: ArrayView2<'_, f32>) -> ndarray::CowArray<'_, f32, ndarray::Ix2> {
        x.into()
    }
    fn sigmoid_slice(x: &mut [f32]) {
        sigmoid_f32(x)
    }
}

crate::avx2_or_plain! {
    fn sigmoid_f32(x: &mut [f32]) {
        for v in x {
            *v = 1.0 / (1.0 + fast_exp(-*v));
        }
    }
}

/// `exp` for f32 to within a few ulp, written so the compiler vectorises it: range
/// reduction to `2^n · e^r` with |r| ≤ ln2/2, a degree-6 polynomial for `e^r`, and the
/// power of two built from bits. libm's scalar `expf` made the sigmoid cost as much as
/// the matrix products at small hidden sizes.
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5·2^23 rounds to the nearest integer without a branch.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (0.166_666_67
                    + r * (0.041_666_668 + r * (0.008_333_334 + r * 0.001_388_889)))));
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

impl Real for f64 {
    fn from_f64(x: f64) -> Self {
        x
    }
    fn as_f64(self) -> f64 {
        self
    }
    fn from_f32(x: f32) -> Self {
        x as f64
    }
    fn cast_rows(x: ArrayView2<'_, f32>) -> ndarray::CowArray<'_, f64, ndarray::Ix2> {
        x.mapv(f64::from).into()
    }
    fn sigmoid_slice(x: &mut [f64]) {
        for v in x {
            *v = 1.0 / (1.0 + (-*v).exp());
        }
    }
}

/// The logistic function, applied in place.
pub fn sigmoid_inplace<F: Real>(z: &mut Array2<F>) {
    match z.as_slice_mut() {
        Some(s) => F::sigmoid_slice(s),
        None => z.mapv_inplace(|v| F::one() / (F::one() + (-v).exp())),
    }
}

/// `a · Wᵀ + b`.
pub fn affine<F: Real>(a: &ArrayView2<F>, w: &Array2<F>, b: &Array1<F>) -> Array2<F> {
    let mut z = a.dot(&w.t());
    z += &b.view().insert_axis(ndarray::Axis(0));
    z
}

/// A trained autoencoder: architecture plus parameters (f32, the encoding precision).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Network {
    /// The architecture.
    pub arch: Architecture,
    /// Parameters in the flat theta layout.
    pub theta: Vec<f32>,
}

impl Network {
    /// Builds a network from an f64 theta.
    pub fn from_theta(arch: Architecture, theta: &[f64]) -> Self {
        assert_eq!(theta.len(), arch.n_params());
        Network {
            arch,
            theta: theta.iter().map(|&t| t as f32).collect(),
        }
    }

    /// Weight matrix `l` as a view.
    pub fn weight(&self, l: usize) -> ArrayView2<'_, f32> {
        let (wo, _) = self.arch.offsets();
        let (o, i) = self.arch.weight_shape(l);
        ArrayView2::from_shape((o, i), &self.theta[wo[l]..wo[l] + o * i]).expect("shape")
    }

    /// Bias vector `l` as a view.
    pub fn bias(&self, l: usize) -> ArrayView1<'_, f32> {
        let (_, bo) = self.arch.offsets();
        ArrayView1::from(&self.theta[bo[l]..bo[l] + self.arch.sizes[l + 1]])
    }

    /// The encoder's layers (up to the code layer) as owned arrays.
    pub fn encoder_layers(&self) -> Vec<(Array2<f32>, Array1<f32>)> {
        (0..self.arch.sparse)
            .map(|l| (self.weight(l).to_owned(), self.bias(l).to_owned()))
            .collect()
    }
}

/// Codes of `x` (rows are normalised patches): activations of the sparse layer.
pub fn encode(layers: &[(Array2<f32>, Array1<f32>)], x: ArrayView2<f32>) -> Array2<f32> {
    let mut a = affine(&x, &layers[0].0, &layers[0].1);
    sigmoid_inplace(&mut a);
    for (w, b) in &layers[1..] {
        a = affine(&a.view(), w, b);
        sigmoid_inplace(&mut a);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_ufldl_order() {
        let a = Architecture::new(192, &[25], None, Decoder::Sigmoid).unwrap();
        let (w, b) = a.offsets();
        assert_eq!(w, vec![0, 25 * 192]);
        assert_eq!(b, vec![2 * 25 * 192, 2 * 25 * 192 + 25]);
        assert_eq!(a.n_params(), 2 * 25 * 192 + 25 + 192);
        let a3 = Architecture::new(192, &[75, 48, 75], None, Decoder::Linear).unwrap();
        assert_eq!(a3.sparse, 2);
        assert_eq!(a3.code_size(), 48);
    }

    #[test]
    fn init_is_bounded_and_biases_zero() {
        let a = Architecture::new(12, &[5], None, Decoder::Sigmoid).unwrap();
        let t = a.init(7);
        let r = (6.0f64 / 18.0).sqrt();
        assert!(t[..a.n_weights()].iter().all(|v| v.abs() <= r));
        assert!(t[a.n_weights()..].iter().all(|&v| v == 0.0));
        assert_eq!(t, a.init(7));
        assert_ne!(t, a.init(8));
    }

    #[test]
    fn fast_exp_is_accurate() {
        let mut worst: f64 = 0.0;
        let mut x = -87.0f32;
        while x < 88.0 {
            let e = (x as f64).exp();
            worst = worst.max(((fast_exp(x) as f64) - e).abs() / e);
            x += 0.0137;
        }
        assert!(worst < 5e-7, "max relative error {worst}");
        let mut s = [-100.0f32, -5.0, 0.0, 3.0, 100.0];
        f32::sigmoid_slice(&mut s);
        assert!(s[0] >= 0.0 && s[0] < 1e-30 && s[2] == 0.5 && s[4] == 1.0);
    }

    #[test]
    fn rejects_bad_shapes() {
        assert!(Architecture::new(12, &[], None, Decoder::Sigmoid).is_err());
        assert!(Architecture::new(12, &[4, 0, 4], None, Decoder::Sigmoid).is_err());
        assert!(Architecture::new(12, &[4], Some(2), Decoder::Sigmoid).is_err());
    }
}
