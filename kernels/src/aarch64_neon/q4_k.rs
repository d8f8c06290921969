//! Q4_K and Q5_K x Q8_K on NEON: one weight row against up to [`COLS`]
//! activation columns. Each block's nibbles (and Q5_K's fifth bits) are
//! unpacked once (8 sub-blocks of 32 bytes) and reused for every column. Per
//! column, the eight sub-block sums are gathered into two vectors of lanes by
//! pairwise adds and multiplied by the 6-bit scales, the mins term stays in
//! lanes too, and both take one float step per block (`d` and `dmin` times
//! the activation scale); the lanes are added once, at the end of the row.

use super::{dot32, f16x4_to_f32, lane_sums4, load32, sdot32};
use crate::formats::q4_k::scales_mins;
use crate::formats::{BlockK4, BlockQ4K, BlockQ5K, BlockQ8K};
use std::arch::aarch64::*;

/// Weight rows per call.
pub const ROWS: usize = 1;
/// Activation columns per call.
pub const COLS: usize = 4;

/// A block's 256 codes as eight sub-blocks of 32 (two vectors each), with
/// Q5_K's fifth bits.
///
/// # Safety
/// NEON must be available.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // p and h address codes, qs and qh alike
pub(crate) unsafe fn unpack<B: BlockK4>(b: &B) -> [[int8x16_t; 2]; 8] {
    // SAFETY: NEON is available (caller); qs has 128 bytes (32p + 16h + 16 <= 128), qh 32.
    unsafe {
        let (low4, bit4) = (vdupq_n_u8(0x0F), vdupq_n_u8(0x10));
        let mut q = [[vdupq_n_s8(0); 2]; 8];
        for p in 0..4 {
            for h in 0..2 {
                let v = vld1q_u8(b.qs().as_ptr().add(32 * p + 16 * h));
                let qh = vld1q_u8(b.qh().as_ptr().add(16 * h));
                let mut lo = vandq_u8(v, low4);
                let mut hi = vshrq_n_u8::<4>(v);
                if B::FIFTH_BIT {
                    // Bits 2p and 2p + 1 of qh to bit 4.
                    let (s0, s1) = (vdupq_n_s8(4 - 2 * p as i8), vdupq_n_s8(3 - 2 * p as i8));
                    lo = vorrq_u8(lo, vandq_u8(vshlq_u8(qh, s0), bit4));
                    hi = vorrq_u8(hi, vandq_u8(vshlq_u8(qh, s1), bit4));
                }
                q[2 * p][h] = vreinterpretq_s8_u8(lo);
                q[2 * p + 1][h] = vreinterpretq_s8_u8(hi);
            }
        }
        q
    }
}

/// The kernel for one feature set (`$feat`) and its 32-byte dot product (`$dot`).
macro_rules! kernels {
    ($feat:literal, $dot:ident) => {
        #[inline]
        #[target_feature(enable = $feat)]
        pub(crate) unsafe fn cols<B: BlockK4, const C: usize, const PF: bool>(
            row: &[B],
            acts: &[&[BlockQ8K]],
            out: &mut [f32],
        ) {
            // Per column: the scaled sub-block sums and the mins term, each
            // block's two added into one float vector with their two scales.
            let mut acc = [vdupq_n_f32(0.0); C];
            for (i, b) in row.iter().enumerate() {
                mca!(begin ["q4_k.cols ", $feat], fifth = B::FIFTH_BIT as u32, c = C, pf = PF as u32, w = 256);
                if PF {
                    crate::aarch64_neon::prefetch_ahead(b);
                }
                // The eight scales as two i32 vectors (sub-blocks 0-3, 4-7),
                // the eight mins as i16 lanes; `d` and `dmin` as lanes 0, 1.
                // (The scales decode in scalar registers: in vector ones the
                // V1's and N1's vector pipes, the bound there, took longer.)
                let sm = scales_mins(b.scales());
                // SAFETY: NEON is enabled here; sm has 16 bytes.
                let (sc, mins, q) = unsafe {
                    let s = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(sm.as_ptr())));
                    let m = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(sm.as_ptr().add(8))));
                    ([vmovl_s16(vget_low_s16(s)), vmovl_high_s16(s)], m, unpack(b))
                };
                let dd = f16x4_to_f32(b.d_dmin_bits() as u64);
                for c in 0..C {
                    // SAFETY: the caller guarantees every acts[c] has row.len() blocks.
                    let a = unsafe { acts.get_unchecked(c).get_unchecked(i) };
                    // SAFETY: a.qs has 256 bytes; 32j + 32 <= 256.
                    let y = |j: usize| unsafe { load32(a.qs.as_ptr().add(32 * j)) };
                    let dot = |j: usize| $dot(vdupq_n_s32(0), q[j], y(j));
                    // Sub-block sums 0-3 and 4-7 as lanes (pairwise adds of
                    // the dot products' lanes), times the scales: the lanes
                    // of `isum` add up to the block's scaled sum.
                    let half = |j: usize| lane_sums4([dot(j), dot(j + 1), dot(j + 2), dot(j + 3)]);
                    let isum = vmlaq_s32(vmulq_s32(half(0), sc[0]), half(4), sc[1]);
                    // Sub-block j's activation sum is bsums[2j] + bsums[2j + 1];
                    // times the mins, as lanes.
                    // SAFETY: bsums has 16 i16.
                    let msum = unsafe {
                        let bs = vpaddq_s16(vld1q_s16(a.bsums.as_ptr()), vld1q_s16(a.bsums.as_ptr().add(8)));
                        vmlal_high_s16(vmull_s16(vget_low_s16(bs), vget_low_s16(mins)), bs, mins)
                    };
                    let dda = vmulq_n_f32(dd, a.d);
                    acc[c] = vfmaq_laneq_f32::<0>(acc[c], vcvtq_f32_s32(isum), dda);
                    acc[c] = vfmsq_laneq_f32::<1>(acc[c], vcvtq_f32_s32(msum), dda);
                }
                mca!(end);
            }
            for c in 0..C {
                out[c] = vaddvq_f32(acc[c]);
            }
        }

        row_kernel!(
            gemv_q4_k_q8_k_1x4,
            $feat,
            BlockQ4K,
            BlockQ8K,
            prefetch cols<BlockQ4K>,
            [1, 2, 3, 4]
        );

        row_kernel!(
            gemv_q5_k_q8_k_1x4,
            $feat,
            BlockQ5K,
            BlockQ8K,
            prefetch cols<BlockQ5K>,
            [1, 2, 3, 4]
        );
    };
}

/// Baseline NEON.
pub mod neon {
    use super::*;
    kernels!("neon", dot32);
}

/// NEON + dotprod (`sdot`).
pub mod dotprod {
    use super::*;
    kernels!("neon,dotprod", sdot32);
}
