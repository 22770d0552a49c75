//! Deterministic randomness: every stream is a ChaCha8 generator seeded from the config
//! seed and a tag, so one part of the world does not shift when another changes.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// SplitMix64 finaliser of `a` combined with `b`: a cheap, well-mixed hash.
pub fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform number in [0, 1) from a hash (for stateless decisions such as faults).
pub fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// A generator for the stream named by `parts` under `seed`.
pub fn stream(seed: u64, parts: &[u64]) -> ChaCha8Rng {
    let s = parts.iter().fold(mix(seed, 0x5eed), |acc, p| mix(acc, *p));
    ChaCha8Rng::seed_from_u64(s)
}

/// A standard normal sample (Box–Muller).
pub fn normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(1e-12);
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}
