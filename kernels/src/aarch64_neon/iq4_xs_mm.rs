//! IQ4_XS x Q8_K with i8mm (`smmla`): two weight rows against pairs of
//! activation columns, for the small batches (2-15) below the panel GEMM.
//!
//! Per block: both rows looked up once ([`super::iq4_xs::unpack`]); per
//! column pair and sub-block of 32, four `smmla`
//! ([`super::q8_0_mm::smmla32`]) give the 2 x 2 exact sums, scaled by the
//! rows' 6-bit sub-block scales in i32 (`mla` with `[s0, s0, s1, s1]`); one
//! float multiply-add per block for the four dot products. A single row, a
//! single column, and the odd column of an odd count take the dotprod
//! kernel ([`super::iq4_xs::dotprod`]).

use super::iq4_xs::{dotprod, unpack};
use super::load32;
use super::q8_0_mm::{scales4, smmla32};
use crate::formats::{scales_iq4_xs, BlockIq4Xs, BlockQ8K};
use std::arch::aarch64::*;

/// Weight rows per call.
pub const ROWS: usize = 2;
/// Activation columns per call.
pub const COLS: usize = 4;

/// `R` rows (consecutive in `row`) against `C` columns.
///
/// # Safety
/// NEON, dotprod and i8mm; `row.len() == R * n`, every `acts[c]` has `n`
/// blocks, `acts.len() == C`, `out.len() == R * C`.
#[inline]
#[target_feature(enable = "neon,dotprod,i8mm")]
unsafe fn tile<const R: usize, const C: usize>(
    row: &[BlockIq4Xs],
    acts: &[&[BlockQ8K]],
    out: &mut [f32],
) {
    let n = row.len() / R;
    if R == 1 || C == 1 {
        for r in 0..R {
            // SAFETY: forwarded contract; row r and its C outputs.
            unsafe {
                dotprod::cols::<C>(&row[r * n..(r + 1) * n], acts, &mut out[r * C..(r + 1) * C])
            };
        }
        return;
    }
    let (r0, r1) = row.split_at(n);
    for p in 0..C / 2 {
        let (c0, c1) = (2 * p, 2 * p + 1);
        let mut acc = vdupq_n_f32(0.0);
        for (i, (b0, b1)) in r0.iter().zip(r1).enumerate() {
            // SAFETY: the caller guarantees every acts[c] has n blocks.
            let (a0, a1) = unsafe {
                (
                    acts.get_unchecked(c0).get_unchecked(i),
                    acts.get_unchecked(c1).get_unchecked(i),
                )
            };
            let (s0, s1) = (scales_iq4_xs(b0), scales_iq4_xs(b1));
            // SAFETY: NEON is enabled here.
            let (q0, q1) = unsafe { (unpack(b0), unpack(b1)) };
            let mut isum = vdupq_n_s32(0);
            for j in 0..8 {
                mca!(begin["iq4_xs_mm.sub i8mm"], c = 2, w = 64);
                // SAFETY: a.qs has 256 bytes; 32j + 32 <= 256.
                let (y0, y1) = unsafe {
                    (
                        load32(a0.qs.as_ptr().add(32 * j)),
                        load32(a1.qs.as_ptr().add(32 * j)),
                    )
                };
                let sums = smmla32(vdupq_n_s32(0), q0[j], q1[j], y0, y1);
                let sc = [s0[j] as i32, s0[j] as i32, s1[j] as i32, s1[j] as i32];
                // SAFETY: sc has four i32.
                isum = vmlaq_s32(isum, sums, unsafe { vld1q_s32(sc.as_ptr()) });
                mca!(end);
            }
            let d = scales4(b0.d.to_bits(), b1.d.to_bits(), true);
            let da = [a0.d, a1.d, a0.d, a1.d];
            // SAFETY: da has four lanes.
            let da = unsafe { vld1q_f32(da.as_ptr()) };
            acc = vfmaq_f32(acc, vcvtq_f32_s32(isum), vmulq_f32(d, da));
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
            unsafe { dotprod::cols::<1>(&row[r * n..(r + 1) * n], &acts[c..], &mut o) };
            out[r * C + c] = o[0];
        }
    }
}

/// The entry point (`crate::table`).
pub mod i8mm {
    use super::*;
    row_kernel!(gemv_iq4_xs_q8_k_2x4_i8mm, "neon,dotprod,i8mm", BlockIq4Xs, BlockQ8K, tile, rows [1, 2], cols [1, 2, 3, 4]);
}
