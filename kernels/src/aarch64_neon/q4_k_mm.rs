//! Q4_K and Q5_K x Q8_K with i8mm (`smmla`): two weight rows against pairs
//! of activation columns, for the small batches (2-15) below the panel GEMM.
//!
//! Per block: both rows unpacked once ([`super::q4_k::unpack`]); per column
//! pair and sub-block of 32, four `smmla` ([`super::q8_0_mm::smmla32`]) give
//! the 2 x 2 exact sums, scaled by the rows' 6-bit sub-block scales in i32
//! (`mla` with `[s0, s0, s1, s1]`); the mins' sums (`bsums` pairs times the
//! rows' 6-bit mins) are exact i32 too. Two float multiply-adds per block
//! for the four dot products. A single row, a single column, and the odd
//! column of an odd count take the dotprod kernel ([`super::q4_k::dotprod`]).

use super::load32;
use super::q4_k::{dotprod, unpack};
use super::q8_0_mm::{scales4, smmla32};
use crate::formats::q4_k::scales_mins;
use crate::formats::{BlockK4, BlockQ4K, BlockQ5K, BlockQ8K};
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
unsafe fn tile<B: BlockK4, const R: usize, const C: usize>(
    row: &[B],
    acts: &[&[BlockQ8K]],
    out: &mut [f32],
) {
    let n = row.len() / R;
    if R == 1 || C == 1 {
        for r in 0..R {
            // SAFETY: forwarded contract; row r and its C outputs.
            unsafe {
                dotprod::cols::<B, C>(&row[r * n..(r + 1) * n], acts, &mut out[r * C..(r + 1) * C])
            };
        }
        return;
    }
    let (r0, r1) = row.split_at(n);
    for p in 0..C / 2 {
        let (c0, c1) = (2 * p, 2 * p + 1);
        let (mut acc, mut acc_min) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
        for (i, (b0, b1)) in r0.iter().zip(r1).enumerate() {
            mca!(
                begin["q4_k_mm.pair i8mm"],
                fifth = B::FIFTH_BIT as u32,
                c = 2,
                w = 512
            );
            // SAFETY: the caller guarantees every acts[c] has n blocks.
            let (a0, a1) = unsafe {
                (
                    acts.get_unchecked(c0).get_unchecked(i),
                    acts.get_unchecked(c1).get_unchecked(i),
                )
            };
            let (s0, s1) = (scales_mins(b0.scales()), scales_mins(b1.scales()));
            // SAFETY: NEON is enabled here.
            let (q0, q1) = unsafe { (unpack(b0), unpack(b1)) };
            let mut isum = vdupq_n_s32(0);
            for j in 0..8 {
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
            }
            // The mins: per row the 6-bit mins, per column the bsums of each
            // sub-block of 32 (two of 16 added), in i32.
            let pairs = |a: &BlockQ8K| -> [i32; 8] {
                std::array::from_fn(|j| a.bsums[2 * j] as i32 + a.bsums[2 * j + 1] as i32)
            };
            let (p0, p1) = (pairs(a0), pairs(a1));
            let m = |s: &[u8; 16], pc: &[i32; 8]| -> i32 {
                (0..8).map(|j| s[8 + j] as i32 * pc[j]).sum()
            };
            let mins = [m(&s0, &p0), m(&s0, &p1), m(&s1, &p0), m(&s1, &p1)];
            let (dd0, dd1) = (b0.d_dmin_bits(), b1.d_dmin_bits());
            let d = scales4(dd0 as u16, dd1 as u16, true);
            let dmin = scales4((dd0 >> 16) as u16, (dd1 >> 16) as u16, true);
            let da = [a0.d, a1.d, a0.d, a1.d];
            // SAFETY: da and mins have four lanes.
            let (da, mins) = unsafe { (vld1q_f32(da.as_ptr()), vld1q_s32(mins.as_ptr())) };
            acc = vfmaq_f32(acc, vcvtq_f32_s32(isum), vmulq_f32(d, da));
            acc_min = vfmaq_f32(acc_min, vcvtq_f32_s32(mins), vmulq_f32(dmin, da));
            mca!(end);
        }
        let r = vsubq_f32(acc, acc_min);
        out[c0] = vgetq_lane_f32::<0>(r);
        out[c1] = vgetq_lane_f32::<1>(r);
        out[C + c0] = vgetq_lane_f32::<2>(r);
        out[C + c1] = vgetq_lane_f32::<3>(r);
    }
    if C % 2 == 1 {
        let c = C - 1;
        for r in 0..R {
            let mut o = [0f32];
            // SAFETY: forwarded contract; row r against the last column.
            unsafe { dotprod::cols::<B, 1>(&row[r * n..(r + 1) * n], &acts[c..], &mut o) };
            out[r * C + c] = o[0];
        }
    }
}

/// The entry points (`crate::table`).
pub mod i8mm {
    use super::*;
    row_kernel!(gemv_q4_k_q8_k_2x4_i8mm, "neon,dotprod,i8mm", BlockQ4K, BlockQ8K, tile<BlockQ4K>, rows [1, 2], cols [1, 2, 3, 4]);
    row_kernel!(gemv_q5_k_q8_k_2x4_i8mm, "neon,dotprod,i8mm", BlockQ5K, BlockQ8K, tile<BlockQ5K>, rows [1, 2], cols [1, 2, 3, 4]);
}
