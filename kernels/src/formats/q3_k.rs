//! Q3_K: 256 values in 16 sub-blocks of 16; each sub-block has a signed 6-bit
//! scale (stored +32), scaled by the block's f16 `d`; 3-bit codes split into
//! 2 low bits (`qs`) and a high bit (`hmask`), centred by subtracting 4.

use super::{check_out, magnitude, nearest_code, set_bits, weight_block, BlockQ8K, Format, QK_K};
use crate::panel::{quarters, PanelFormat};
use crate::testdata::{RandomBlock, Rng};
use crate::Result;
use half::f16;

/// ggml's `block_q3_K`. Value i (0..256) has low bits laid out as in Q2_K and
/// its high bit in `hmask[i % 32]` at bit `i / 32`; a clear high bit means -4.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ3K {
    pub hmask: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 4],
    /// Sixteen 6-bit scales, packed as [`scales_q3_k`] unpacks them.
    pub scales: [u8; 12],
    pub d: f16,
}

// GGML_TYPE_Q3_K; LLAMA_FTYPE_MOSTLY_Q3_K_M.
weight_block!(
    BlockQ3K,
    Q3K,
    "q3_k",
    len QK_K,
    bytes 32 + 64 + 12 + 2,
    ggml 11,
    ftype Some(12),
    BlockQ8K,
    dequantize_row_q3_k,
    block_terms,
    block_magnitude,
    super::quantize_row_q8_k,
    round round_at
);

/// The sixteen signed scales (stored value - 32): the low 4 bits of scale i are
/// nibble i/8 of byte i%8; the high 2 bits are bit pair i/4 of byte 8 + i%4.
#[inline]
pub fn scales_q3_k(s: &[u8; 12]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (i, word) in scale_words_q3_k(s).iter().enumerate() {
        for (j, byte) in word.to_le_bytes().iter().enumerate() {
            out[4 * i + j] = *byte as i8 - 32;
        }
    }
    out
}

/// [`scales_q3_k`] before the `- 32`: scales `4i .. 4i + 4` (0..=63) as the
/// bytes of word `i`.
#[inline(always)]
pub fn scale_words_q3_k(s: &[u8; 12]) -> [u32; 4] {
    // Four scales per 32-bit word (the form ggml's kernels use): low nibbles
    // from words 0/1, high nibbles shifted down, the 2-bit tops from word 2.
    const LOW4: u32 = 0x0f0f_0f0f;
    const LOW2: u32 = 0x0303_0303;
    let w = |i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
    let (a, b, top) = (w(0), w(4), w(8));
    [
        (a & LOW4) | ((top & LOW2) << 4),
        (b & LOW4) | (((top >> 2) & LOW2) << 4),
        ((a >> 4) & LOW4) | (((top >> 4) & LOW2) << 4),
        ((b >> 4) & LOW4) | (((top >> 6) & LOW2) << 4),
    ]
}

/// The signed 3-bit code (-4..=3) of value `i` of a block, and its sub-block.
#[inline]
fn code(b: &BlockQ3K, i: usize) -> (i8, usize) {
    let (h, s, l) = (i / 128, (i % 128) / 32, i % 32);
    let low = ((b.qs[32 * h + l] >> (2 * s)) & 3) as i8;
    let high = b.hmask[l] & (1 << (i / 32)) != 0;
    (low - if high { 0 } else { 4 }, i / 16)
}

/// Rounds value `i` to its nearest code (-4..=3) under its sub-block's scale
/// ([`crate::formats::WeightBlock::round_at`]).
fn round_at(b: &mut BlockQ3K, i: usize, w: f32) -> f32 {
    let dl = b.d.to_f32() * scales_q3_k(&b.scales)[i / 16] as f32;
    let value = |c: i32| dl * c as f32;
    let c = nearest_code(w, dl, 0.0, (-4, 3), value);
    let (h, s, l) = (i / 128, (i % 128) / 32, i % 32);
    set_bits(&mut b.qs[32 * h + l], 2 * s, 2, ((c + 4) & 3) as u8);
    set_bits(&mut b.hmask[l], i / 32, 1, (c >= 0) as u8);
    value(c)
}

/// Mirrors ggml's `dequantize_row_q3_K`.
pub fn dequantize_row_q3_k(x: &[BlockQ3K], y: &mut [f32]) -> Result<()> {
    check_out(Format::Q3K, x.len(), y.len())?;
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d_all = b.d.to_f32();
        let scales = scales_q3_k(&b.scales);
        for (sub, out) in out.chunks_exact_mut(16).enumerate() {
            let dl = d_all * scales[sub] as f32;
            for (l, o) in out.iter_mut().enumerate() {
                *o = dl * code(b, 16 * sub + l).0 as f32;
            }
        }
    }
    Ok(())
}

/// Per block: `d*dy * sum_i scale[i] * (q . q8)_i`, the sums exact.
fn block_terms(a: &BlockQ3K, b: &BlockQ8K) -> (f32, f32) {
    let scales = scales_q3_k(&a.scales);
    let mut dots = [0i32; 16];
    for (i, &q8) in b.qs.iter().enumerate() {
        let (q, sub) = code(a, i);
        dots[sub] += q as i32 * q8 as i32;
    }
    let isum: i32 = (0..16).map(|s| scales[s] as i32 * dots[s]).sum();
    (a.d.to_f32() * b.d * isum as f32, 0.0)
}

fn block_magnitude(a: &BlockQ3K, b: &BlockQ8K) -> f32 {
    let scales = scales_q3_k(&a.scales);
    let mut abs = [0i32; 16];
    for (i, &q8) in b.qs.iter().enumerate() {
        let (q, sub) = code(a, i);
        abs[sub] += (q as i32 * q8 as i32).abs();
    }
    let iabs = (0..16).map(|s| (scales[s] as i32).abs() * abs[s]).sum();
    magnitude(a.d.to_f32() * b.d, iabs, 0.0, 0)
}

impl PanelFormat for BlockQ3K {
    const SUB: usize = 256;
    const MIN_SUB: usize = 0;
    const MAX_CODE: u8 = 128; // codes -128..=124
    /// Codes are `-q * sc` (q in -4..=3, sc in -32..=31: -128..=124, an i8;
    /// `q * sc` would reach +128), the scale `-d`.
    #[inline(always)]
    fn unpack(&self, codes: &mut [i8], scale: &mut [f32], _: &mut [i16], _: &mut f32) {
        scale[0] = -self.d.to_f32();
        let sc = scales_q3_k(&self.scales);
        // Value 128h + 32s + l: high bit (clear means -4) at bit 4h + s of hmask[l].
        for (h, s, codes, qs) in quarters(codes, &self.qs) {
            let (s0, s1) = (sc[8 * h + 2 * s] as i32, sc[8 * h + 2 * s + 1] as i32);
            for (l, ((c, &q), &hm)) in codes.iter_mut().zip(qs).zip(&self.hmask).enumerate() {
                let (low, high) = ((q >> (2 * s)) & 3, (hm >> (4 * h + s)) & 1);
                let code = (low | high << 2) as i32 - 4;
                *c = (-code * if l < 16 { s0 } else { s1 }) as i8;
            }
        }
    }
    const FACTORED: bool = true;
    const MAX_FACTOR: u8 = 4;
    /// Factors `-q` (-3..=4), scales the 6-bit signed `sc` of each 16 values, `d` the scale's.
    #[inline(always)]
    fn factor(&self, factors: &mut [i8], scales: &mut [i16]) -> f32 {
        for (s, sc) in scales.iter_mut().zip(scales_q3_k(&self.scales)) {
            *s = sc as i16;
        }
        for (h, s, f, qs) in quarters(factors, &self.qs) {
            for ((f, &q), &hm) in f.iter_mut().zip(qs).zip(&self.hmask) {
                let (low, high) = ((q >> (2 * s)) & 3, (hm >> (4 * h + s)) & 1);
                *f = 4 - (low | high << 2) as i8;
            }
        }
        -self.d.to_f32()
    }
}

impl RandomBlock for BlockQ3K {
    const SCALE_OFFSETS: &'static [usize] = &[108];
    fn random(r: &mut Rng) -> Self {
        BlockQ3K {
            hmask: r.bytes(),
            qs: r.bytes(),
            scales: r.bytes(),
            d: r.scale(),
        }
    }
    fn filled(fill: u8, d: u16, _: u16) -> Self {
        BlockQ3K {
            hmask: [fill; 32],
            qs: [fill; 64],
            scales: [fill; 12],
            d: f16::from_bits(d),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The packing, one scale at a time: low 4 bits are nibble i/8 of byte i%8,
    /// high 2 bits are bit pair i/4 of byte 8 + i%4.
    fn scale(s: &[u8; 12], i: usize) -> i8 {
        let low = (s[i % 8] >> (4 * (i / 8))) & 0x0F;
        let high = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
        (low | (high << 4)) as i8 - 32
    }

    #[test]
    fn scales_q3_k_matches_the_packing() {
        let mut s = [0u8; 12];
        for seed in 0u32..3000 {
            for (i, b) in s.iter_mut().enumerate() {
                *b = (seed.wrapping_mul(2654435761).rotate_left(3 * i as u32) >> 11) as u8
                    ^ (i as u8).wrapping_mul(97);
            }
            let got = scales_q3_k(&s);
            for i in 0..16 {
                assert_eq!(got[i], scale(&s, i), "bytes {s:?}, scale {i}");
            }
        }
    }
}
