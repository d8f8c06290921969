//! Q2_K: 256 values in 16 sub-blocks of 16; each sub-block has a 4-bit scale
//! and a 4-bit min, scaled by the block's f16 `d` and `dmin`; 2-bit codes.

use super::{check_out, magnitude, weight_block, BlockQ8K, Format, WeightBlock, QK_K};
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

weight_block!(
    BlockQ2K,
    Format::Q2K,
    BlockQ8K,
    dequantize_row_q2_k,
    block_terms,
    block_magnitude,
    super::quantize_row_q8_k
);

/// The 2-bit code of value `i` of a block (0..256) and its sub-block (0..16).
#[inline]
fn code(qs: &[u8; 64], i: usize) -> (u8, usize) {
    let (h, s, l) = (i / 128, (i % 128) / 32, i % 32);
    ((qs[32 * h + l] >> (2 * s)) & 3, i / 16)
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
pub fn vec_dot_q2_k_q8_k(x: &[BlockQ2K], y: &[BlockQ8K]) -> Result<f32> {
    BlockQ2K::vec_dot(x, y)
}

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
