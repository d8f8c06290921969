//! Q4_0, Q5_0, IQ4_NL and Q8_0 x Q8_0 (and the 2:4 forms) with i8mm: the
//! 2 x 2 tile ([`super::mm`]). Per block position, both rows' 32 codes
//! ([`super::q8_0::codes`]) against both columns' 32 activations by four
//! `smmla`; one `fcvtl` per operand makes the four scale products, one
//! multiply-add accumulates the four dot products.

use super::mm::{scales4, smmla32, tile, PairBlock};
use super::q8_0::{codes, dotprod};
use super::{biased_sum_f32, load32, SUM_BIAS};
use crate::formats::{
    Block32, BlockIq4Nl, BlockQ4_0, BlockQ4_0S, BlockQ5_0, BlockQ8_0, BlockQ8_0S,
};
use std::arch::aarch64::*;

/// Weight rows per call.
pub const ROWS: usize = 2;
/// Activation columns per call.
pub const COLS: usize = 4;

macro_rules! pair32 {
    ($($block:ty),*) => {$(
        impl PairBlock for $block {
            type Act = BlockQ8_0;
            #[inline(always)]
            unsafe fn step(
                b0: &Self,
                b1: &Self,
                a0: &BlockQ8_0,
                a1: &BlockQ8_0,
                acc: &mut float32x4_t,
                _sub: &mut float32x4_t,
            ) {
                mca!(begin ["q8_0_mm.pair i8mm"], codes = <$block as Block32>::CODES as u32, c = 2, w = 64);
                // SAFETY: the caller's features; qs are 32 bytes; each row's
                // codes lie inside its block.
                unsafe {
                    let (w0, w1) = (codes(b0), codes(b1));
                    let (y0, y1) = (load32(a0.qs.as_ptr()), load32(a1.qs.as_ptr()));
                    // The sums (at most 32 * 128 * 128 = 2^19) biased, for
                    // one subtraction in place of `scvtf`.
                    let isum = smmla32(vdupq_n_s32(SUM_BIAS), w0, w1, y0, y1);
                    let dw = scales4(b0.d_bits(), b1.d_bits(), true);
                    let da = scales4(a0.d.to_bits(), a1.d.to_bits(), false);
                    *acc = vfmaq_f32(*acc, biased_sum_f32(isum), vmulq_f32(dw, da));
                }
                mca!(end);
            }
            #[inline(always)]
            unsafe fn one_row<const C: usize>(row: &[Self], acts: &[&[BlockQ8_0]], out: &mut [f32]) {
                // SAFETY: forwarded contract.
                unsafe {
            if C == 1 && super::prefetch_on() {
                dotprod::cols::<$block, 1, true>(row, acts, out)
            } else {
                dotprod::cols::<$block, C, false>(row, acts, out)
            }
        }
            }
        }
    )*};
}
pair32!(BlockQ8_0, BlockQ4_0, BlockQ5_0, BlockIq4Nl, BlockQ4_0S, BlockQ8_0S);

/// The entry points (`crate::table`).
pub mod i8mm {
    use super::*;
    row_kernel!(gemv_q8_0_q8_0_2x4_i8mm, "neon,dotprod,i8mm", BlockQ8_0, BlockQ8_0, tile<BlockQ8_0>, rows [1, 2], cols [1, 2, 3, 4]);
    row_kernel!(gemv_q4_0_q8_0_2x4_i8mm, "neon,dotprod,i8mm", BlockQ4_0, BlockQ8_0, tile<BlockQ4_0>, rows [1, 2], cols [1, 2, 3, 4]);
    row_kernel!(gemv_q5_0_q8_0_2x4_i8mm, "neon,dotprod,i8mm", BlockQ5_0, BlockQ8_0, tile<BlockQ5_0>, rows [1, 2], cols [1, 2, 3, 4]);
    row_kernel!(gemv_iq4_nl_q8_0_2x4_i8mm, "neon,dotprod,i8mm", BlockIq4Nl, BlockQ8_0, tile<BlockIq4Nl>, rows [1, 2], cols [1, 2, 3, 4]);
    row_kernel!(gemv_q4_0s_q8_0_2x4_i8mm, "neon,dotprod,i8mm", BlockQ4_0S, BlockQ8_0, tile<BlockQ4_0S>, rows [1, 2], cols [1, 2, 3, 4]);
    row_kernel!(gemv_q8_0s_q8_0_2x4_i8mm, "neon,dotprod,i8mm", BlockQ8_0S, BlockQ8_0, tile<BlockQ8_0S>, rows [1, 2], cols [1, 2, 3, 4]);
}
