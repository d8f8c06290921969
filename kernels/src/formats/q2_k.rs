//! Q2_K: 256 values in 16 sub-blocks of 16; each sub-block has a 4-bit scale
//! and a 4-bit min, scaled by the block's f16 `d` and `dmin`; 2-bit codes.

use super::{check_out, magnitude, nearest_code, set_bits, weight_block, BlockQ8K, Format, QK_K};
use crate::panel::{quarters, PanelFormat};
use crate::testdata::{RandomBlock, Rng};
use crate::Result;
use half::f16;

/// ggml's `block_q2_K`. Codes: the 128-value half `h` of the block takes byte
/// `qs[32*h + l]` (l < 32) at bit shift `2*s` for its 32-value quarter s.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ2K {
    /// Low nibble: scale, high nibble: min, of each sub-block of 16.
    pub scales: [u8; QK_K / 16],
    pub qs: [u8; QK_K / 4],
    pub d: f16,
    pub dmin: f16,
}

// GGML_TYPE_Q2_K; LLAMA_FTYPE_MOSTLY_Q2_K.
weight_block!(
    BlockQ2K,
    Q2K,
    "q2_k",
    len QK_K,
    bytes 16 + 64 + 2 + 2,
    ggml 10,
    ftype Some(10),
    BlockQ8K,
    dequantize_row_q2_k,
    block_terms,
    block_magnitude,
    super::quantize_row_q8_k,
    round round_at
);

/// The 2-bit code of value `i` of a block (0..256) and its sub-block (0..16).
#[inline]
fn code(qs: &[u8; 64], i: usize) -> (u8, usize) {
    let (h, s, l) = (i / 128, (i % 128) / 32, i % 32);
    ((qs[32 * h + l] >> (2 * s)) & 3, i / 16)
}

/// Rounds value `i` to its nearest code under its sub-block's scale and min
/// ([`crate::formats::WeightBlock::round_at`]).
fn round_at(b: &mut BlockQ2K, i: usize, w: f32) -> f32 {
    let sc = b.scales[i / 16];
    let dl = b.d.to_f32() * (sc & 0x0F) as f32;
    let ml = b.dmin.to_f32() * (sc >> 4) as f32;
    let value = |q: i32| dl * q as f32 - ml;
    let q = nearest_code(w, dl, -ml, (0, 3), value);
    let (h, s, l) = (i / 128, (i % 128) / 32, i % 32);
    set_bits(&mut b.qs[32 * h + l], 2 * s, 2, q as u8);
    value(q)
}

/// Mirrors ggml's `dequantize_row_q2_K`.
pub fn dequantize_row_q2_k(x: &[BlockQ2K], y: &mut [f32]) -> Result<()> {
    check_out(Format::Q2K, x.len(), y.len())?;
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = b.d.to_f32();
        let min = b.dmin.to_f32();
        for (sub, out) in out.chunks_exact_mut(16).enumerate() {
            let sc = b.scales[sub];
            let dl = d * (sc & 0x0F) as f32;
            let ml = min * (sc >> 4) as f32;
            for (l, o) in out.iter_mut().enumerate() {
                *o = dl * code(&b.qs, 16 * sub + l).0 as f32 - ml;
            }
        }
    }
    Ok(())
}

/// Per block: `d*dy * sum_i sc[i] * (q . q8)_i  -  dmin*dy * sum_i m[i] * bsums[i]`.
fn block_terms(a: &BlockQ2K, b: &BlockQ8K) -> (f32, f32) {
    let mut dots = [0i32; 16];
    for (i, &q8) in b.qs.iter().enumerate() {
        let (q, sub) = code(&a.qs, i);
        dots[sub] += q as i32 * q8 as i32;
    }
    let isum: i32 = (0..16).map(|s| (a.scales[s] & 0x0F) as i32 * dots[s]).sum();
    let summs: i32 = (0..16)
        .map(|s| (a.scales[s] >> 4) as i32 * b.bsums[s] as i32)
        .sum();
    (
        b.d * a.d.to_f32() * isum as f32,
        b.d * a.dmin.to_f32() * summs as f32,
    )
}

fn block_magnitude(a: &BlockQ2K, b: &BlockQ8K) -> f32 {
    let mut abs = [0i32; 16];
    for (i, &q8) in b.qs.iter().enumerate() {
        let (q, sub) = code(&a.qs, i);
        abs[sub] += (q as i32 * q8 as i32).abs();
    }
    let iabs = (0..16).map(|s| (a.scales[s] & 0x0F) as i32 * abs[s]).sum();
    let mabs = (0..16)
        .map(|s| (a.scales[s] >> 4) as i32 * (b.bsums[s] as i32).abs())
        .sum();
    magnitude(b.d * a.d.to_f32(), iabs, b.d * a.dmin.to_f32(), mabs)
}

impl PanelFormat for BlockQ2K {
    const SUB: usize = 256;
    const MIN_SUB: usize = 16;
    const MAX_CODE: u8 = 45; // codes 0..=45
    /// Codes are `q * sc` (0..=45).
    #[inline(always)]
    fn unpack(&self, codes: &mut [i8], scale: &mut [f32], mins: &mut [i16], min_scale: &mut f32) {
        scale[0] = self.d.to_f32();
        *min_scale = -self.dmin.to_f32();
        for (m, &sc) in mins.iter_mut().zip(&self.scales) {
            *m = (sc >> 4) as i16;
        }
        for (h, s, codes, qs) in quarters(codes, &self.qs) {
            let s0 = self.scales[8 * h + 2 * s] & 0x0F;
            let s1 = self.scales[8 * h + 2 * s + 1] & 0x0F;
            for (l, (c, &q)) in codes.iter_mut().zip(qs).enumerate() {
                *c = (((q >> (2 * s)) & 3) * if l < 16 { s0 } else { s1 }) as i8;
            }
        }
    }
    const FACTORED: bool = true;
    const MAX_FACTOR: u8 = 4;
    /// Factors `q` (0..=3), scales the 4-bit `sc` of each 16 values, `d` the scale's.
    #[inline(always)]
    fn factor(&self, factors: &mut [i8], scales: &mut [i16]) -> f32 {
        for (s, &sc) in scales.iter_mut().zip(&self.scales) {
            *s = (sc & 0x0F) as i16;
        }
        for (_, s, f, qs) in quarters(factors, &self.qs) {
            for (f, &q) in f.iter_mut().zip(qs) {
                *f = ((q >> (2 * s)) & 3) as i8;
            }
        }
        self.d.to_f32()
    }
}

impl RandomBlock for BlockQ2K {
    const SCALE_OFFSETS: &'static [usize] = &[80, 82];
    fn random(r: &mut Rng) -> Self {
        BlockQ2K {
            scales: r.bytes(),
            qs: r.bytes(),
            d: r.scale(),
            dmin: r.scale(),
        }
    }
    fn filled(fill: u8, d: u16, dmin: u16) -> Self {
        BlockQ2K {
            scales: [fill; 16],
            qs: [fill; 64],
            d: f16::from_bits(d),
            dmin: f16::from_bits(dmin),
        }
    }
}
