//! The data layer's random numbers: SplitMix64, written out here so that shuffles, splits and
//! augmentation draws are the same on every machine and survive upgrades of the `rand` crate
//! (bit-exact resume and a held-out set that never moves depend on it).

/// SplitMix64 (Steele, Lea and Flood, 2014): one 64-bit word of state, good enough statistics
/// for shuffling and augmentation, and trivially seedable from several words.
#[derive(Clone, Debug)]
pub(crate) struct Rng {
    state: u64,
}

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Rng {
    /// A stream keyed by several words (seed, epoch, batch, ...): each word is mixed in turn, so
    /// (1, 2) and (2, 1) give unrelated streams.
    pub(crate) fn from_parts(parts: &[u64]) -> Rng {
        let mut h = 0x243f_6a88_85a3_08d3u64;
        for &p in parts {
            h = mix(h.wrapping_add(GOLDEN) ^ p);
        }
        Rng { state: h }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix(self.state)
    }

    /// Uniform in 0..n by the widening multiply; the bias (n / 2^64) is far below anything a
    /// shuffle of a data set could show.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        debug_assert!(n > 0);
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    pub(crate) fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    pub(crate) fn coin(&mut self) -> bool {
        self.next_u64() >> 63 == 1
    }

    /// Roughly standard normal (sum of four uniforms, unit variance, tails cut at +-3.46): one
    /// draw and no transcendental, for pixel noise where the exact shape does not matter.
    pub(crate) fn noise(&mut self) -> f64 {
        let r = self.next_u64();
        let sum: u64 = (0..4).map(|i| (r >> (16 * i)) & 0xffff).sum();
        // Each 16-bit part has mean 32767.5 and variance (65536^2 - 1) / 12.
        (sum as f64 - 4.0 * 32767.5) * (3.0f64.sqrt() / 65536.0)
    }

    /// Fisher-Yates.
    pub(crate) fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}
