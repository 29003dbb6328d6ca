//! The seeded randomness of a roast: ChaCha8, whose output for a given key and stream is
//! specified by the algorithm and tested against reference vectors, so it is the same on every
//! platform and in every version of `rand_chacha` (unlike `rand`'s `StdRng`).

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

/// Independent streams of one seed: what is drawn from one never shifts the other.
pub(super) const VARIATION_STREAM: u64 = 0;
pub(super) const NOISE_STREAM: u64 = 1;
/// The empty drum logged before charge: its swing and its sensor noise.
pub(super) const PRE_CHARGE_STREAM: u64 = 2;

#[derive(Debug, Clone)]
pub(super) struct Rng(ChaCha8Rng);

impl Rng {
    /// The key is the seed's little-endian bytes, zero-padded — spelled out rather than
    /// `seed_from_u64`, so the stream does not rest on how a library expands a `u64`.
    pub(super) fn new(seed: u64, stream: u64) -> Self {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        let mut rng = ChaCha8Rng::from_seed(key);
        rng.set_stream(stream);
        Rng(rng)
    }

    /// Uniform in [0, 1): the top 53 bits, exactly representable.
    fn uniform(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [-1, 1).
    pub(super) fn symmetric(&mut self) -> f64 {
        2.0 * self.uniform() - 1.0
    }

    /// Sensor noise with standard deviation `sd`: the sum of four uniforms (Irwin–Hall), close
    /// to normal, bounded at ±3.5 `sd`, and free of `ln`/`cos`, whose last bits vary by platform.
    pub(super) fn sensor(&mut self, sd: f64) -> f64 {
        const SQRT_3: f64 = 1.732_050_807_568_877_2;
        let sum = self.uniform() + self.uniform() + self.uniform() + self.uniform();
        (sum - 2.0) * SQRT_3 * sd
    }
}
