//! The grid formats (IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, TQ1_0, TQ2_0)
//! x Q8_K on NEON, dequantize-and-dot: one weight row against up to
//! [`COLS`] activation columns. Each i-quant block is put in its integer
//! form once ([`GridBlock::int_form`]) and reused for every column; per 16
//! values an exact i32 dot (`sdot`, or `smull` + `sadalp`) times the group's
//! scale (`mla`), then one float scaling per block and column.
//!
//! The ternary formats unpack in registers, 16 values per vector in the
//! activations' order: TQ2_0's fields by a shift and a mask; TQ1_0's digits
//! as ggml defines them, digit `n` of byte `q` being `floor(3x / 256)` for
//! `x = q * 3^n mod 256`, that is `[x >= 86] + [x >= 171]` (two compares, whose
//! all-ones lanes add up to minus the digit), the next digit's `x` one byte
//! multiply by 3 away; the four `qh` bytes, repeated four times and
//! multiplied by 1, 3, 9, 27, give the last 16 values at once. The block's
//! exact sum is `±sum(codes * y)` minus the activations' sum (their
//! `bsums`), for the weights `digit - 1` or `field - 1`.

use crate::formats::{
    BlockIq2S, BlockIq2Xs, BlockIq2Xxs, BlockIq3S, BlockIq3Xxs, BlockQ8K, BlockTq1_0, BlockTq2_0,
    GridBlock, QK_K,
};
use std::arch::aarch64::*;

/// Weight rows per call.
pub const ROWS: usize = 1;
/// Activation columns per call.
pub const COLS: usize = 4;

/// The kernels for one feature set (`$feat`) and its 16-byte dot product (`$dot`).
macro_rules! kernels {
    ($feat:literal, $dot:path, $($name:ident: $block:ty),* $(,)?) => {
        #[inline]
        #[target_feature(enable = $feat)]
        pub(crate) unsafe fn cols<B: GridBlock, const C: usize, const PF: bool>(row: &[B], acts: &[&[BlockQ8K]], out: &mut [f32]) {
            let mut acc = [vdupq_n_f32(0.0); C];
            let mut codes = [0i8; QK_K];
            let mut scales = [0i16; 16];
            for (i, b) in row.iter().enumerate() {
                mca!(begin ["grid.cols ", $feat], ggml_type = <B as crate::formats::QuantBlock>::GGML_TYPE, c = C, pf = PF as u32, w = 256);
                if PF {
                    crate::aarch64_neon::prefetch_ahead(b);
                }
                let factor = b.int_form(&mut codes, &mut scales);
                // SAFETY: codes has 256 bytes; 16g + 16 <= 256.
                let w: [int8x16_t; 16] =
                    std::array::from_fn(|g| unsafe { vld1q_s8(codes.as_ptr().add(16 * g)) });
                for c in 0..C {
                    // SAFETY: the caller guarantees every acts[c] has row.len() blocks.
                    let a = unsafe { acts.get_unchecked(c).get_unchecked(i) };
                    let mut isum = vdupq_n_s32(0);
                    for (g, &wg) in w.iter().enumerate() {
                        // SAFETY: a.qs has 256 bytes; 16g + 16 <= 256.
                        let y = unsafe { vld1q_s8(a.qs.as_ptr().add(16 * g)) };
                        isum = vmlaq_n_s32(isum, $dot(vdupq_n_s32(0), wg, y), scales[g] as i32);
                    }
                    acc[c] = vfmaq_n_f32(acc[c], vcvtq_f32_s32(isum), factor * a.d);
                }
                mca!(end);
            }
            for c in 0..C {
                out[c] = vaddvq_f32(acc[c]);
            }
        }
        $(row_kernel!($name, $feat, $block, BlockQ8K, prefetch cols<$block>, [1, 2, 3, 4]);)*

        /// One ternary row against `C` columns: `codes(block)` gives 16
        /// vectors (values 16g..16g + 16) whose dot with `y`, times `sign`,
        /// is the block's sum of `(weight code + 1) * y`.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn cols_ternary<B: GridBlock, const C: usize, const PF: bool>(
            row: &[B],
            acts: &[&[BlockQ8K]],
            out: &mut [f32],
            sign: i32,
            codes: impl Fn(&B) -> ([int8x16_t; 16], f32),
        ) {
            let mut acc = [0f32; C];
            for (i, b) in row.iter().enumerate() {
                mca!(begin ["ternary.cols ", $feat], ggml_type = <B as crate::formats::QuantBlock>::GGML_TYPE, c = C, pf = PF as u32, w = 256);
                if PF {
                    crate::aarch64_neon::prefetch_ahead(b);
                }
                let (w, d) = codes(b);
                for (c, acc) in acc.iter_mut().enumerate() {
                    // SAFETY: the caller guarantees every acts[c] has row.len() blocks.
                    let a = unsafe { acts.get_unchecked(c).get_unchecked(i) };
                    let (mut s0, mut s1) = (vdupq_n_s32(0), vdupq_n_s32(0));
                    for g in 0..8 {
                        // SAFETY: a.qs has 256 bytes; 32g + 32 <= 256.
                        let (y0, y1) = unsafe {
                            (vld1q_s8(a.qs.as_ptr().add(32 * g)), vld1q_s8(a.qs.as_ptr().add(32 * g + 16)))
                        };
                        s0 = $dot(s0, w[2 * g], y0);
                        s1 = $dot(s1, w[2 * g + 1], y1);
                    }
                    // SAFETY: bsums has 16 i16.
                    let sy = unsafe {
                        vaddlvq_s16(vaddq_s16(vld1q_s16(a.bsums.as_ptr()), vld1q_s16(a.bsums.as_ptr().add(8))))
                    };
                    let isum = sign * vaddvq_s32(vaddq_s32(s0, s1)) - sy;
                    *acc += d * a.d * isum as f32;
                }
                mca!(end);
            }
            out[..C].copy_from_slice(&acc);
        }

        /// TQ1_0 (codes: minus the digits).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn cols_tq1_0<const C: usize, const PF: bool>(row: &[BlockTq1_0], acts: &[&[BlockQ8K]], out: &mut [f32]) {
            // SAFETY: forwarded contract.
            unsafe { cols_ternary::<BlockTq1_0, C, PF>(row, acts, out, -1, |b| (super::tq1_0_codes(b), super::super::f16_to_f32(b.d.to_bits()))) }
        }

        /// TQ2_0 (codes: the fields).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn cols_tq2_0<const C: usize, const PF: bool>(row: &[BlockTq2_0], acts: &[&[BlockQ8K]], out: &mut [f32]) {
            // SAFETY: forwarded contract.
            unsafe { cols_ternary::<BlockTq2_0, C, PF>(row, acts, out, 1, |b| (super::tq2_0_codes(b), super::super::f16_to_f32(b.d.to_bits()))) }
        }

        row_kernel!(gemv_tq1_0_q8_k_1x4, $feat, BlockTq1_0, BlockQ8K, prefetch cols_tq1_0, [1, 2, 3, 4]);
        row_kernel!(gemv_tq2_0_q8_k_1x4, $feat, BlockTq2_0, BlockQ8K, prefetch cols_tq2_0, [1, 2, 3, 4]);
    };
}

/// TQ1_0's 256 values as 16 vectors of minus their digits (0, -1, -2), in
/// the activations' order (see the module).
#[inline]
#[target_feature(enable = "neon")]
fn tq1_0_codes(b: &BlockTq1_0) -> [int8x16_t; 16] {
    const POW: [u8; 16] = [1, 1, 1, 1, 3, 3, 3, 3, 9, 9, 9, 9, 27, 27, 27, 27];
    let (t1, t2, three) = (vdupq_n_u8(86), vdupq_n_u8(171), vdupq_n_u8(3));
    let neg = |x: uint8x16_t| vreinterpretq_s8_u8(vaddq_u8(vcgeq_u8(x, t1), vcgeq_u8(x, t2)));
    // SAFETY: qs has 48 bytes (three loads of 16), POW 16.
    let (mut lo, mut hi, mut mid, pow) = unsafe {
        (
            vld1q_u8(b.qs.as_ptr()),
            vld1q_u8(b.qs.as_ptr().add(16)),
            vld1q_u8(b.qs.as_ptr().add(32)),
            vld1q_u8(POW.as_ptr()),
        )
    };
    let qh = vmulq_u8(
        vreinterpretq_u8_u32(vdupq_n_u32(u32::from_le_bytes(b.qh))),
        pow,
    );
    let mut w = [vdupq_n_s8(0); 16];
    for n in 0..5 {
        w[2 * n] = neg(lo);
        w[2 * n + 1] = neg(hi);
        w[10 + n] = neg(mid);
        lo = vmulq_u8(lo, three);
        hi = vmulq_u8(hi, three);
        mid = vmulq_u8(mid, three);
    }
    w[15] = neg(qh);
    w
}

/// TQ2_0's 256 values as 16 vectors of their 2-bit fields, in the activations' order.
#[inline]
#[target_feature(enable = "neon")]
fn tq2_0_codes(b: &BlockTq2_0) -> [int8x16_t; 16] {
    let mask = vdupq_n_u8(3);
    let mut w = [vdupq_n_s8(0); 16];
    for h in 0..2 {
        for half in 0..2 {
            // SAFETY: qs has 64 bytes; 32h + 16half + 16 <= 64.
            let q = unsafe { vld1q_u8(b.qs.as_ptr().add(32 * h + 16 * half)) };
            w[8 * h + half] = vreinterpretq_s8_u8(vandq_u8(q, mask));
            w[8 * h + 2 + half] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8::<2>(q), mask));
            w[8 * h + 4 + half] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8::<4>(q), mask));
            w[8 * h + 6 + half] = vreinterpretq_s8_u8(vshrq_n_u8::<6>(q));
        }
    }
    w
}

/// Baseline NEON.
pub mod neon {
    use super::*;
    kernels!("neon", crate::aarch64_neon::dot16,
        gemv_iq2_xxs_q8_k_1x4: BlockIq2Xxs,
        gemv_iq2_xs_q8_k_1x4: BlockIq2Xs,
        gemv_iq2_s_q8_k_1x4: BlockIq2S,
        gemv_iq3_xxs_q8_k_1x4: BlockIq3Xxs,
        gemv_iq3_s_q8_k_1x4: BlockIq3S,
    );
}

/// NEON + dotprod (`sdot`).
pub mod dotprod {
    use super::*;
    kernels!("neon,dotprod", crate::aarch64_neon::sdot16,
        gemv_iq2_xxs_q8_k_1x4: BlockIq2Xxs,
        gemv_iq2_xs_q8_k_1x4: BlockIq2Xs,
        gemv_iq2_s_q8_k_1x4: BlockIq2S,
        gemv_iq3_xxs_q8_k_1x4: BlockIq3Xxs,
        gemv_iq3_s_q8_k_1x4: BlockIq3S,
    );
}
