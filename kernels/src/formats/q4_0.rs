//! Q4_0: 32 values per block, one f16 scale, 4-bit codes offset by 8.

use super::{check_out, magnitude, nearest_code, set_bits, weight_block, BlockQ8_0, Format};
use crate::panel::PanelFormat;
use crate::testdata::{RandomBlock, Rng};
use crate::Result;
use half::f16;

/// ggml's `block_q4_0`: value j is `d * ((qs[j % 16] >> 4*(j / 16)) & 15) - 8)`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_0 {
    pub d: f16,
    pub qs: [u8; 16],
}

// GGML_TYPE_Q4_0; LLAMA_FTYPE_MOSTLY_Q4_0.
weight_block!(
    BlockQ4_0,
    Q4_0,
    "q4_0",
    len 32,
    bytes 2 + 16,
    ggml 2,
    ftype Some(2),
    BlockQ8_0,
    dequantize_row_q4_0,
    block_terms,
    block_magnitude,
    super::quantize_row_q8_0,
    round round_at
);

/// Rounds value `i` to its nearest code under the block's `d` ([`crate::formats::WeightBlock::round_at`]).
fn round_at(b: &mut BlockQ4_0, i: usize, w: f32) -> f32 {
    let d = b.d.to_f32();
    let value = |q: i32| (q - 8) as f32 * d;
    let q = nearest_code(w, d, -8.0 * d, (0, 15), value);
    set_bits(&mut b.qs[i % 16], 4 * (i / 16), 4, q as u8);
    value(q)
}

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

/// One block's `d_x * d_y * sum_j (q_x[j] - 8) * q_y[j]` (no min term), the integer sum exact.
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

impl PanelFormat for BlockQ4_0 {
    const SUB: usize = 32;
    const MIN_SUB: usize = 0;
    const MAX_CODE: u8 = 8; // codes -8..=7
    #[inline(always)]
    fn unpack(&self, codes: &mut [i8], scale: &mut [f32], _: &mut [i16], _: &mut f32) {
        scale[0] = self.d.to_f32();
        let (lo, hi) = codes.split_at_mut(16);
        for ((lo, hi), &b) in lo.iter_mut().zip(hi).zip(&self.qs) {
            (*lo, *hi) = ((b & 0x0F) as i8 - 8, (b >> 4) as i8 - 8);
        }
    }
}

impl RandomBlock for BlockQ4_0 {
    const SCALE_OFFSETS: &'static [usize] = &[0];
    fn random(r: &mut Rng) -> Self {
        BlockQ4_0 {
            d: r.scale(),
            qs: r.bytes(),
        }
    }
    fn filled(fill: u8, d: u16, _: u16) -> Self {
        BlockQ4_0 {
            d: f16::from_bits(d),
            qs: [fill; 16],
        }
    }
}
