//! Q4_0: 32 values per block, one f16 scale, 4-bit codes offset by 8.

use super::{check_out, magnitude, weight_block, BlockQ8_0, Format, WeightBlock};
use crate::Result;
use half::f16;

/// ggml's `block_q4_0`: value j is `d * ((qs[j % 16] >> 4*(j / 16)) & 15) - 8)`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_0 {
    pub d: f16,
    pub qs: [u8; 16],
}

weight_block!(
    BlockQ4_0,
    Format::Q4_0,
    BlockQ8_0,
    dequantize_row_q4_0,
    block_terms,
    block_magnitude,
    super::quantize_row_q8_0
);

/// Mirrors ggml's `dequantize_row_q4_0`.
pub fn dequantize_row_q4_0(x: &[BlockQ4_0], y: &mut [f32]) -> Result<()> {
    check_out(Format::Q4_0, x.len(), y.len())?;
    for (b, out) in x.iter().zip(y.chunks_exact_mut(32)) {
        let d = b.d.to_f32();
        for j in 0..16 {
            out[j] = ((b.qs[j] & 0x0F) as i32 - 8) as f32 * d;
            out[j + 16] = ((b.qs[j] >> 4) as i32 - 8) as f32 * d;
        }
    }
    Ok(())
}

/// Sum over blocks of `d_x * d_y * sum_j (q_x[j] - 8) * q_y[j]`, the integer sums exact.
pub fn vec_dot_q4_0_q8_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> Result<f32> {
    BlockQ4_0::vec_dot(x, y)
}

fn block_terms(a: &BlockQ4_0, b: &BlockQ8_0) -> (f32, f32) {
    let mut isum = 0i32;
    for j in 0..16 {
        isum += ((a.qs[j] & 0x0F) as i32 - 8) * b.qs[j] as i32;
        isum += ((a.qs[j] >> 4) as i32 - 8) * b.qs[j + 16] as i32;
    }
    (isum as f32 * (a.d.to_f32() * b.d.to_f32()), 0.0)
}

fn block_magnitude(a: &BlockQ4_0, b: &BlockQ8_0) -> f32 {
    let mut iabs = 0i32;
    for j in 0..16 {
        iabs += (((a.qs[j] & 0x0F) as i32 - 8) * b.qs[j] as i32).abs();
        iabs += (((a.qs[j] >> 4) as i32 - 8) * b.qs[j + 16] as i32).abs();
    }
    magnitude(a.d.to_f32() * b.d.to_f32(), iabs, 0.0, 0)
}
