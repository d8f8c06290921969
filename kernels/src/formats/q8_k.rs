//! Q8_K: the activation format of k-quant dot products. 256 values, an f32
//! scale, 8-bit codes and the sums of each 16 codes (used for the min terms).

use super::{check_out, Format, QuantBlock, QK_K};
use crate::Result;

/// ggml's `block_q8_K`: value j is `d * qs[j]`; `bsums[i]` is the sum of `qs[16i..16i+16]`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; QK_K],
    pub bsums: [i16; QK_K / 16],
}

impl QuantBlock for BlockQ8K {
    const FORMAT: Format = Format::Q8K;
    const NAME: &'static str = "q8_k";
    const LEN: usize = QK_K;
    // ggml's GGML_TYPE_Q8_K.
    const GGML_TYPE: u32 = 15;
}
// ggml's `sizeof(block_q8_K)`, written out so the layout is checked at compile time.
const _: () = assert!(std::mem::size_of::<BlockQ8K>() == 4 + 256 + 2 * 16);

/// ggml's `nearest_int`: round half to even through the 1.5 * 2^23 trick (|x| < 2^22).
#[inline]
fn nearest_int(x: f32) -> i32 {
    let v = x + 12582912.0;
    (v.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// Mirrors ggml's `quantize_row_q8_K_ref`, which ggml-cpu also uses for
/// activations on x86 and ARM: the code of the largest-magnitude value is -127
/// or 127 (`iscale = -127 / max`), codes round half to even.
#[inline(always)]
pub fn quantize_row_q8_k(x: &[f32], y: &mut [BlockQ8K]) -> Result<()> {
    Format::Q8K.check_row_blocks(x.len(), y.len())?;
    for (xb, b) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
        let (mut max, mut amax) = (0.0f32, 0.0f32);
        for &v in xb {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            b.d = 0.0;
            b.qs = [0; QK_K];
            b.bsums = [0; QK_K / 16];
            continue;
        }
        let iscale = -127.0f32 / max;
        for (q, &v) in b.qs.iter_mut().zip(xb) {
            *q = nearest_int(iscale * v).min(127) as i8;
        }
        for (s, qs) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
            *s = qs.iter().map(|&q| q as i16).sum();
        }
        b.d = 1.0 / iscale;
    }
    Ok(())
}

/// Mirrors ggml's `dequantize_row_q8_K`.
pub fn dequantize_row_q8_k(x: &[BlockQ8K], y: &mut [f32]) -> Result<()> {
    check_out(Format::Q8K, x.len(), y.len())?;
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        for (o, &q) in out.iter_mut().zip(&b.qs) {
            *o = b.d * q as f32;
        }
    }
    Ok(())
}
