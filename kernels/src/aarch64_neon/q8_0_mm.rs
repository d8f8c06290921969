//! Q4_0, Q5_0, IQ4_NL and Q8_0 x Q8_0 (and the 2:4 forms) with i8mm
//! (`smmla`): two weight rows against pairs of activation columns, for the
//! small batches (2-15) below the panel GEMM.
//!
//! Per block and column pair: the two rows' 32 codes and the two columns'
//! 32 activations are paired eight bytes at a time (`zip1`/`zip2` of 64-bit
//! lanes), and four `smmla` give the 2 x 2 exact block sums, lanes
//! `[r0·c0, r0·c1, r1·c0, r1·c1]`; one `fcvtl` per operand makes the four
//! scale products, and one multiply-add accumulates the four. Half the
//! multiply instructions of `sdot` for the same sums, and one float step
//! for four dot products. A single row, a single column, and the odd column
//! of an odd count take the dotprod kernel ([`super::q8_0::dotprod`]).

use super::q8_0::{codes, dotprod};
use super::{f16x4_to_f32, load32, smmla};
use crate::formats::{
    Block32, BlockIq4Nl, BlockQ4_0, BlockQ4_0S, BlockQ5_0, BlockQ8_0, BlockQ8_0S,
};
use std::arch::aarch64::*;

/// Weight rows per call.
pub const ROWS: usize = 2;
/// Activation columns per call.
pub const COLS: usize = 4;

/// Two f16 bit patterns as `[a, a, b, b]` (`pairs`) or `[a, b, a, b]`, in f32.
#[inline]
#[target_feature(enable = "neon")]
pub(crate) fn scales4(a: u16, b: u16, pairs: bool) -> float32x4_t {
    let (a, b) = (a as u64, b as u64);
    f16x4_to_f32(if pairs {
        a | a << 16 | b << 32 | b << 48
    } else {
        a | b << 16 | a << 32 | b << 48
    })
}

/// `acc` plus the 2 x 2 sums of 32 values, rows `w0`, `w1` against columns
/// `y0`, `y1`: lanes `[w0·y0, w0·y1, w1·y0, w1·y1]`, exact (four `smmla` on
/// eight-byte pairs).
#[inline]
#[target_feature(enable = "neon,i8mm")]
pub(crate) fn smmla32(
    mut acc: int32x4_t,
    w0: [int8x16_t; 2],
    w1: [int8x16_t; 2],
    y0: [int8x16_t; 2],
    y1: [int8x16_t; 2],
) -> int32x4_t {
    for h in 0..2 {
        let (wa, wb) = (vreinterpretq_s64_s8(w0[h]), vreinterpretq_s64_s8(w1[h]));
        let (ya, yb) = (vreinterpretq_s64_s8(y0[h]), vreinterpretq_s64_s8(y1[h]));
        let lo = |a, b| vreinterpretq_s8_s64(vzip1q_s64(a, b));
        let hi = |a, b| vreinterpretq_s8_s64(vzip2q_s64(a, b));
        acc = smmla(acc, lo(wa, wb), lo(ya, yb));
        acc = smmla(acc, hi(wa, wb), hi(ya, yb));
    }
    acc
}

/// `R` rows (consecutive in `row`) against `C` columns.
///
/// # Safety
/// NEON, dotprod and i8mm; `row.len() == R * n`, every `acts[c]` has `n`
/// blocks, `acts.len() == C`, `out.len() == R * C`.
#[inline]
#[target_feature(enable = "neon,dotprod,i8mm")]
unsafe fn tile<W: Block32, const R: usize, const C: usize>(
    row: &[W],
    acts: &[&[BlockQ8_0]],
    out: &mut [f32],
) {
    let n = row.len() / R;
    if R == 1 || C == 1 {
        for r in 0..R {
            // SAFETY: forwarded contract; row r and its C outputs.
            unsafe {
                dotprod::cols::<W, C>(&row[r * n..(r + 1) * n], acts, &mut out[r * C..(r + 1) * C])
            };
        }
        return;
    }
    let (r0, r1) = row.split_at(n);
    for p in 0..C / 2 {
        let (c0, c1) = (2 * p, 2 * p + 1);
        let mut acc = vdupq_n_f32(0.0);
        for (i, (b0, b1)) in r0.iter().zip(r1).enumerate() {
            mca!(
                begin["q8_0_mm.pair i8mm"],
                codes = W::CODES as u32,
                c = 2,
                w = 64
            );
            // SAFETY: the caller guarantees every acts[c] has n blocks.
            let (a0, a1) = unsafe {
                (
                    acts.get_unchecked(c0).get_unchecked(i),
                    acts.get_unchecked(c1).get_unchecked(i),
                )
            };
            // SAFETY: NEON is enabled; qs are 32 bytes; each row's codes lie inside its block.
            let (w0, w1, y0, y1) = unsafe {
                (
                    codes(b0),
                    codes(b1),
                    load32(a0.qs.as_ptr()),
                    load32(a1.qs.as_ptr()),
                )
            };
            let isum = smmla32(vdupq_n_s32(0), w0, w1, y0, y1);
            let dw = scales4(b0.d_bits(), b1.d_bits(), true);
            let da = scales4(a0.d.to_bits(), a1.d.to_bits(), false);
            acc = vfmaq_f32(acc, vcvtq_f32_s32(isum), vmulq_f32(dw, da));
            mca!(end);
        }
        out[c0] = vgetq_lane_f32::<0>(acc);
        out[c1] = vgetq_lane_f32::<1>(acc);
        out[C + c0] = vgetq_lane_f32::<2>(acc);
        out[C + c1] = vgetq_lane_f32::<3>(acc);
    }
    if C % 2 == 1 {
        let c = C - 1;
        for r in 0..R {
            let mut o = [0f32];
            // SAFETY: forwarded contract; row r against the last column.
            unsafe { dotprod::cols::<W, 1>(&row[r * n..(r + 1) * n], &acts[c..], &mut o) };
            out[r * C + c] = o[0];
        }
    }
}

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
