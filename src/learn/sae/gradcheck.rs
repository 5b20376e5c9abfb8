//! Numerical gradient check: central differences against the analytic gradient of
//! [`super::objective::Objective`], in f64, on small networks.

use ndarray::Array2;

use super::objective::{Objective, Penalty};
use super::{Architecture, Decoder};
use crate::data::store::MemoryRows;
use crate::error::Result;
use crate::rng::{stream, uniform, Stream};

/// One network's check.
#[derive(Clone, Debug)]
pub struct CheckResult {
    /// Which network.
    pub name: String,
    /// ‖num − ana‖ / ‖num + ana‖.
    pub relative_error: f64,
}

/// Relative error of the analytic gradient of `arch` on `x` at a random theta.
pub fn check(arch: &Architecture, penalty: Penalty, x: &Array2<f32>, chunk: usize) -> Result<f64> {
    let rows = MemoryRows {
        data: x.view(),
        chunk,
    };
    let obj = Objective::new(arch, penalty, &rows);
    let mut theta = arch.init(11);
    // Non-zero biases so their gradients are exercised away from the symmetric point.
    let mut r = stream(12, Stream::Init, 1);
    for t in &mut theta[arch.n_weights()..] {
        *t = uniform(&mut r, -0.1, 0.1);
    }
    let (_, ana) = obj.eval::<f64>(&theta)?;
    let eps = 1e-4;
    let mut num = vec![0.0; theta.len()];
    for i in 0..theta.len() {
        let t0 = theta[i];
        theta[i] = t0 + eps;
        let (lp, _) = obj.eval::<f64>(&theta)?;
        theta[i] = t0 - eps;
        let (lm, _) = obj.eval::<f64>(&theta)?;
        theta[i] = t0;
        num[i] = (lp.total - lm.total) / (2.0 * eps);
    }
    let diff: f64 = num.iter().zip(&ana).map(|(n, a)| (n - a).powi(2)).sum();
    let sum: f64 = num.iter().zip(&ana).map(|(n, a)| (n + a).powi(2)).sum();
    Ok((diff / sum).sqrt())
}

/// The standard battery: one and three hidden layers, sigmoid and linear decoders,
/// each evaluated over several chunks so the chunked sum is checked too.
pub fn standard() -> Result<Vec<CheckResult>> {
    let visible = 12;
    let m = 20;
    let mut r = stream(10, Stream::Patches, 0);
    let x = Array2::from_shape_fn((m, visible), |_| uniform(&mut r, 0.1, 0.9) as f32);
    let penalty = Penalty {
        lambda: 1e-3,
        beta: 3.0,
        rho: 0.1,
    };
    let mut out = Vec::new();
    for (hidden, decoder) in [
        (vec![5], Decoder::Sigmoid),
        (vec![5], Decoder::Linear),
        (vec![6, 4, 6], Decoder::Sigmoid),
        (vec![6, 4, 6], Decoder::Linear),
    ] {
        let arch = Architecture::new(visible, &hidden, None, decoder)?;
        let e = check(&arch, penalty, &x, 7)?;
        let name = format!(
            "{} ({:?} decoder, sparse layer {})",
            arch.sizes
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join("-"),
            decoder,
            arch.sparse
        );
        out.push(CheckResult {
            name,
            relative_error: e,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn analytic_gradient_matches_central_differences() {
        for r in super::standard().unwrap() {
            assert!(r.relative_error < 1e-7, "{}: {}", r.name, r.relative_error);
        }
    }
}
