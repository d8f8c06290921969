//! Q2_K and Q3_K x Q8_K with i8mm (`smmla`): two weight rows against pairs
//! of activation columns, for the small batches (2-15) below the panel GEMM.
//!
//! Per block: both rows' codes once ([`super::q2_k::q2_codes`], Q3_K's as
//! `q + 4`: [`super::q2_k::q3_codes`]); per column pair and sub-block of 16,
//! two `smmla` on eight-byte pairs give the 2 x 2 exact sums, scaled by the
//! rows' sub-block scales in i32 (`mla` with `[s0, s0, s1, s1]`). Q2_K's
//! mins and Q3_K's `-4` centring come from the activation block sums, in
//! i32 (Q3_K's subtracted there, exactly). One float multiply-add per block
//! for the four dot products (two for Q2_K, with its `dmin`). A single row, a single column, and the odd column
//! of an odd count take the dotprod kernel ([`super::q2_k::dotprod`]).

use super::q2_k::{dotprod, q2_codes, q3_codes};
use super::q8_0_mm::scales4;
use super::smmla;
use crate::formats::{scales_q3_k, BlockQ2K, BlockQ3K, BlockQ8K};
use std::arch::aarch64::*;

/// Weight rows per call.
pub const ROWS: usize = 2;
/// Activation columns per call.
pub const COLS: usize = 4;

/// A K-quant block with 16 sub-blocks of 16, as the 2 x 2 kernel reads it.
trait Block16: Copy {
    /// The codes, `[hs][half]` for sub-block `2 hs + half`.
    ///
    /// # Safety
    /// NEON must be available.
    unsafe fn codes(&self) -> [[int8x16_t; 2]; 8];
    /// The sub-block scales.
    fn scales(&self) -> [i8; 16];
    /// What the block subtracts per sub-block, times the activation's sum of
    /// that sub-block: Q2_K's 4-bit mins, Q3_K's `4 * scale` (its centring).
    fn offsets(&self) -> [i32; 16];
    /// Whether the offsets are in units of the codes (Q3_K: subtracted in
    /// i32 before the one float step), or have a scale of their own (Q2_K's
    /// `dmin`).
    const EXACT_OFFSETS: bool;
    /// `d`, and the offsets' scale (Q2_K: `dmin`; unused for Q3_K).
    fn d_bits(&self) -> (u16, u16);
    /// The dotprod kernel for `C` columns of one row.
    ///
    /// # Safety
    /// As the dotprod row kernel's body.
    unsafe fn one_row<const C: usize>(row: &[Self], acts: &[&[BlockQ8K]], out: &mut [f32]);
}

impl Block16 for BlockQ2K {
    const EXACT_OFFSETS: bool = false;
    #[inline(always)]
    unsafe fn codes(&self) -> [[int8x16_t; 2]; 8] {
        // SAFETY: NEON is available (caller).
        unsafe { q2_codes(self) }
    }
    #[inline(always)]
    fn scales(&self) -> [i8; 16] {
        std::array::from_fn(|s| (self.scales[s] & 0x0F) as i8)
    }
    #[inline(always)]
    fn offsets(&self) -> [i32; 16] {
        std::array::from_fn(|s| (self.scales[s] >> 4) as i32)
    }
    #[inline(always)]
    fn d_bits(&self) -> (u16, u16) {
        (self.d.to_bits(), self.dmin.to_bits())
    }
    #[inline(always)]
    unsafe fn one_row<const C: usize>(row: &[Self], acts: &[&[BlockQ8K]], out: &mut [f32]) {
        // SAFETY: forwarded contract.
        unsafe { dotprod::q2_cols::<C>(row, acts, out) }
    }
}

impl Block16 for BlockQ3K {
    const EXACT_OFFSETS: bool = true;
    #[inline(always)]
    unsafe fn codes(&self) -> [[int8x16_t; 2]; 8] {
        // SAFETY: NEON is available (caller).
        unsafe { q3_codes(self) }
    }
    #[inline(always)]
    fn scales(&self) -> [i8; 16] {
        scales_q3_k(&self.scales)
    }
    #[inline(always)]
    fn offsets(&self) -> [i32; 16] {
        let s = scales_q3_k(&self.scales);
        std::array::from_fn(|j| 4 * s[j] as i32)
    }
    #[inline(always)]
    fn d_bits(&self) -> (u16, u16) {
        (self.d.to_bits(), self.d.to_bits())
    }
    #[inline(always)]
    unsafe fn one_row<const C: usize>(row: &[Self], acts: &[&[BlockQ8K]], out: &mut [f32]) {
        // SAFETY: forwarded contract.
        unsafe { dotprod::q3_cols::<C>(row, acts, out) }
    }
}

/// `R` rows (consecutive in `row`) against `C` columns.
///
/// # Safety
/// NEON, dotprod and i8mm; `row.len() == R * n`, every `acts[c]` has `n`
/// blocks, `acts.len() == C`, `out.len() == R * C`.
#[inline]
#[target_feature(enable = "neon,dotprod,i8mm")]
unsafe fn tile<B: Block16, const R: usize, const C: usize>(
    row: &[B],
    acts: &[&[BlockQ8K]],
    out: &mut [f32],
) {
    let n = row.len() / R;
    if R == 1 || C == 1 {
        for r in 0..R {
            // SAFETY: forwarded contract; row r and its C outputs.
            unsafe {
                B::one_row::<C>(&row[r * n..(r + 1) * n], acts, &mut out[r * C..(r + 1) * C])
            };
        }
        return;
    }
    let (r0, r1) = row.split_at(n);
    let lo = |a: int8x16_t, b: int8x16_t| {
        vreinterpretq_s8_s64(vzip1q_s64(vreinterpretq_s64_s8(a), vreinterpretq_s64_s8(b)))
    };
    let hi = |a: int8x16_t, b: int8x16_t| {
        vreinterpretq_s8_s64(vzip2q_s64(vreinterpretq_s64_s8(a), vreinterpretq_s64_s8(b)))
    };
    for p in 0..C / 2 {
        let (c0, c1) = (2 * p, 2 * p + 1);
        let (mut acc, mut acc_off) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
        for (i, (b0, b1)) in r0.iter().zip(r1).enumerate() {
            // SAFETY: the caller guarantees every acts[c] has n blocks.
            let (a0, a1) = unsafe {
                (
                    acts.get_unchecked(c0).get_unchecked(i),
                    acts.get_unchecked(c1).get_unchecked(i),
                )
            };
            // SAFETY: NEON is enabled here.
            let (q0, q1) = unsafe { (b0.codes(), b1.codes()) };
            let (s0, s1) = (b0.scales(), b1.scales());
            let mut isum = vdupq_n_s32(0);
            for s in 0..16 {
                mca!(begin["q2_k_mm.sub i8mm"], c = 2, w = 32);
                let (w0, w1) = (q0[s / 2][s % 2], q1[s / 2][s % 2]);
                // SAFETY: a.qs has 256 bytes; 16s + 16 <= 256.
                let (y0, y1) = unsafe {
                    (
                        vld1q_s8(a0.qs.as_ptr().add(16 * s)),
                        vld1q_s8(a1.qs.as_ptr().add(16 * s)),
                    )
                };
                let mut sums = smmla(vdupq_n_s32(0), lo(w0, w1), lo(y0, y1));
                sums = smmla(sums, hi(w0, w1), hi(y0, y1));
                let sc = [s0[s] as i32, s0[s] as i32, s1[s] as i32, s1[s] as i32];
                // SAFETY: sc has four i32.
                isum = vmlaq_s32(isum, sums, unsafe { vld1q_s32(sc.as_ptr()) });
                mca!(end);
            }
            let (o0, o1) = (b0.offsets(), b1.offsets());
            let off = |o: &[i32; 16], a: &BlockQ8K| -> i32 {
                (0..16).map(|s| o[s] * a.bsums[s] as i32).sum()
            };
            let offs = [off(&o0, a0), off(&o0, a1), off(&o1, a0), off(&o1, a1)];
            let ((d0, m0), (d1, m1)) = (b0.d_bits(), b1.d_bits());
            let da = [a0.d, a1.d, a0.d, a1.d];
            // SAFETY: da and offs have four lanes.
            let (da, offs) = unsafe { (vld1q_f32(da.as_ptr()), vld1q_s32(offs.as_ptr())) };
            let d = vmulq_f32(scales4(d0, d1, true), da);
            if B::EXACT_OFFSETS {
                acc = vfmaq_f32(acc, vcvtq_f32_s32(vsubq_s32(isum, offs)), d);
            } else {
                acc = vfmaq_f32(acc, vcvtq_f32_s32(isum), d);
                let dmin = vmulq_f32(scales4(m0, m1, true), da);
                acc_off = vfmaq_f32(acc_off, vcvtq_f32_s32(offs), dmin);
            }
        }
        let r = vsubq_f32(acc, acc_off);
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
            unsafe { B::one_row::<1>(&row[r * n..(r + 1) * n], &acts[c..], &mut o) };
            out[r * C + c] = o[0];
        }
    }
}

/// The entry points (`crate::table`).
pub mod i8mm {
    use super::*;
    row_kernel!(gemv_q2_k_q8_k_2x4_i8mm, "neon,dotprod,i8mm", BlockQ2K, BlockQ8K, tile<BlockQ2K>, rows [1, 2], cols [1, 2, 3, 4]);
    row_kernel!(gemv_q3_k_q8_k_2x4_i8mm, "neon,dotprod,i8mm", BlockQ3K, BlockQ8K, tile<BlockQ3K>, rows [1, 2], cols [1, 2, 3, 4]);
}
