//! Q8_0: 32 values per block, one f16 scale, 8-bit codes. Both a weight format
//! and the activation format of Q4_0 / Q8_0 dot products.

use super::{check_out, magnitude, nearest_code, weight_block, Format};
use crate::panel::PanelFormat;
use crate::testdata::{RandomBlock, Rng};
use crate::Result;
use half::f16;

/// ggml's `block_q8_0`: value j is `d * qs[j]`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; 32],
}

// GGML_TYPE_Q8_0; LLAMA_FTYPE_MOSTLY_Q8_0.
weight_block!(
    BlockQ8_0,
    Q8_0,
    "q8_0",
    len 32,
    bytes 2 + 32,
    ggml 8,
    ftype Some(7),
    BlockQ8_0,
    dequantize_row_q8_0,
    block_terms,
    block_magnitude,
    quantize_row_q8_0,
    round round_at
);

/// Rounds value `i` to its nearest code in ggml's range (±127) under the
/// block's `d` ([`crate::formats::WeightBlock::round_at`]).
fn round_at(b: &mut BlockQ8_0, i: usize, w: f32) -> f32 {
    let d = b.d.to_f32();
    let value = |c: i32| c as f32 * d;
    let c = nearest_code(w, d, 0.0, (-127, 127), value);
    b.qs[i] = c as i8;
    value(c)
}

/// Mirrors ggml's `dequantize_row_q8_0`.
pub fn dequantize_row_q8_0(x: &[BlockQ8_0], y: &mut [f32]) -> Result<()> {
    check_out(Format::Q8_0, x.len(), y.len())?;
    for (b, out) in x.iter().zip(y.chunks_exact_mut(32)) {
        let d = b.d.to_f32();
        for (o, &q) in out.iter_mut().zip(&b.qs) {
            *o = q as f32 * d;
        }
    }
    Ok(())
}

/// ggml's `MAX(a, b)` macro, whose NaN behaviour (`a > b ? a : b`) we keep.
#[inline]
fn c_max(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

/// Mirrors ggml's `quantize_row_q8_0_ref` (how model files are made):
/// `d = amax / 127`, codes `roundf(x / d)` (ties away from zero).
pub fn quantize_row_q8_0_ref(x: &[f32], y: &mut [BlockQ8_0]) -> Result<()> {
    Format::Q8_0.check_row_blocks(x.len(), y.len())?;
    for (xb, b) in x.chunks_exact(32).zip(y.iter_mut()) {
        let amax = xb.iter().fold(0.0f32, |m, v| c_max(m, v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f16::from_f32(d);
        for (q, &v) in b.qs.iter_mut().zip(xb) {
            *q = (v * id).round() as i8;
        }
    }
    Ok(())
}

/// Mirrors ggml-cpu's `quantize_row_q8_0` for the target architecture, the
/// function that quantizes activations in ggml's matmuls. It differs from the
/// reference only in the reciprocal and in rounding ties to even:
/// x86 computes `127 / amax` (AVX2 path), ARM `1 / (amax / 127)` (NEON path).
#[inline(always)]
pub fn quantize_row_q8_0(x: &[f32], y: &mut [BlockQ8_0]) -> Result<()> {
    if !cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
        return quantize_row_q8_0_ref(x, y);
    }
    Format::Q8_0.check_row_blocks(x.len(), y.len())?;
    for (xb, b) in x.chunks_exact(32).zip(y.iter_mut()) {
        let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if cfg!(target_arch = "x86_64") {
            if amax != 0.0 {
                127.0 / amax
            } else {
                0.0
            }
        } else if d != 0.0 {
            1.0 / d
        } else {
            0.0
        };
        b.d = f16::from_f32(d);
        for (q, &v) in b.qs.iter_mut().zip(xb) {
            *q = (v * id).round_ties_even() as i8;
        }
    }
    Ok(())
}

/// One block's `d_x * d_y * sum_j q_x[j] * q_y[j]` (no min term), the integer sum exact.
fn block_terms(a: &BlockQ8_0, b: &BlockQ8_0) -> (f32, f32) {
    let isum: i32 =
        a.qs.iter()
            .zip(&b.qs)
            .map(|(&p, &q)| p as i32 * q as i32)
            .sum();
    (isum as f32 * (a.d.to_f32() * b.d.to_f32()), 0.0)
}

fn block_magnitude(a: &BlockQ8_0, b: &BlockQ8_0) -> f32 {
    let iabs: i32 =
        a.qs.iter()
            .zip(&b.qs)
            .map(|(&p, &q)| (p as i32 * q as i32).abs())
            .sum();
    magnitude(a.d.to_f32() * b.d.to_f32(), iabs, 0.0, 0)
}

impl PanelFormat for BlockQ8_0 {
    const SUB: usize = 32;
    const MIN_SUB: usize = 0;
    const MAX_CODE: u8 = 128; // codes -128..=127
    #[inline(always)]
    fn unpack(&self, codes: &mut [i8], scale: &mut [f32], _: &mut [i16], _: &mut f32) {
        scale[0] = self.d.to_f32();
        codes[..32].copy_from_slice(&self.qs);
    }
}

impl RandomBlock for BlockQ8_0 {
    const SCALE_OFFSETS: &'static [usize] = &[0];
    fn random(r: &mut Rng) -> Self {
        BlockQ8_0 {
            d: r.scale(),
            qs: bytemuck::cast(r.bytes::<32>()),
        }
    }
    fn filled(fill: u8, d: u16, _: u16) -> Self {
        BlockQ8_0 {
            d: f16::from_bits(d),
            qs: [fill as i8; 32],
        }
    }
}
