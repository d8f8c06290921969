//! Deterministic random blocks and activations for tests and benchmarks
//! (shared so that every harness draws the same kind of data).

use half::f16;

/// A small deterministic generator (splitmix64): no dependency, same data on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
    }
    pub fn fill(&mut self, b: &mut [u8]) {
        for chunk in b.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
    pub(crate) fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut b = [0u8; N];
        self.fill(&mut b);
        b
    }
    /// A finite f16 scale of random sign and magnitude between 2^-14 and 2^4.
    pub fn scale(&mut self) -> f16 {
        let mag = 2f32.powf(self.uniform(-14.0, 4.0));
        f16::from_f32(if self.next_u64() & 1 == 0 { mag } else { -mag })
    }
    /// A random 2:4 kept-position mask: two of each four positions.
    pub fn mask_2_4(&mut self) -> [u8; 4] {
        const PAIRS: [u32; 6] = [0b0011, 0b0101, 0b0110, 0b1001, 0b1010, 0b1100];
        let mut m = 0u32;
        for g in 0..8 {
            m |= PAIRS[(self.next_u64() % 6) as usize] << (4 * g);
        }
        m.to_le_bytes()
    }
    /// `n` activations in [-1, 1).
    pub fn activations(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.uniform(-1.0, 1.0)).collect()
    }
}

/// The test blocks of a format (each format's file implements it): random
/// codes with random finite scales, and blocks at the edges.
pub trait RandomBlock: Sized {
    /// Byte offsets of the block's f16 scales (`d`, and `dmin` where there
    /// is one), where tests write non-finite and extreme values.
    const SCALE_OFFSETS: &'static [usize];
    fn random(r: &mut Rng) -> Self;
    /// Every byte of codes (and packed sub-block scales) set to `fill`, with
    /// the f16 scales `d` and `dmin` (where the format has one) given as bits.
    fn filled(fill: u8, d: u16, dmin: u16) -> Self;
    fn random_vec(r: &mut Rng, n: usize) -> Vec<Self> {
        (0..n).map(|_| Self::random(r)).collect()
    }
}
