//! Seeded random streams. Every random choice in `sae` comes from a stream named by
//! (seed, purpose, index), so that any piece of work can be redone on its own (one
//! chunk of patches, one image) and gives the same numbers whatever the thread count.

use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64;

/// The generator used everywhere.
pub type Rng = Pcg64;

/// Purposes of random streams, so that two uses of one seed never share numbers.
#[derive(Clone, Copy, Debug)]
#[repr(u64)]
pub enum Stream {
    /// Synthetic images.
    Synth = 1,
    /// Patch positions.
    Patches = 2,
    /// Initial weights.
    Init = 3,
    /// Classifier seeds.
    Classify = 4,
    /// Mini-batch order.
    Shuffle = 5,
    /// Training images held out for validation.
    Holdout = 6,
}

fn mix(mut z: u64) -> u64 {
    // splitmix64 finaliser: spreads nearby (seed, index) pairs over the state space.
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The stream for (seed, purpose, index).
pub fn stream(seed: u64, purpose: Stream, index: u64) -> Rng {
    let s = mix(mix(seed ^ mix(purpose as u64)) ^ index);
    Pcg64::seed_from_u64(s)
}

/// A standard normal draw (Box-Muller).
pub fn normal(rng: &mut Rng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A uniform draw from [lo, hi).
pub fn uniform(rng: &mut Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}
