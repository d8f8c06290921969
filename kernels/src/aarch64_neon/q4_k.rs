//! Q4_K and Q5_K x Q8_K on NEON: one weight row against up to [`COLS`]
//! activation columns. Each block's nibbles (and Q5_K's fifth bits) are
//! unpacked once (8 sub-blocks of 32 bytes) and reused for every column; sub-block sums are exact i32 lanes scaled by
//! the 6-bit scale (`mla`), then one float scaling per block.

use super::{dot32, f16_to_f32, load32, sdot32};
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
        pub(crate) unsafe fn cols<B: BlockK4, const C: usize>(
            row: &[B],
            acts: &[&[BlockQ8K]],
            out: &mut [f32],
        ) {
            let mut acc = [vdupq_n_f32(0.0); C];
            let mut acc_min = [0f32; C];
            for (i, b) in row.iter().enumerate() {
                mca!(begin ["q4_k.cols ", $feat], fifth = B::FIFTH_BIT as u32, c = C, w = 256);
                let sm = scales_mins(b.scales());
                // The eight scales as i32 lanes (multipliers by lane), the
                // eight mins as i16 lanes.
                // SAFETY: sm has 16 bytes.
                let (sc, mins) = unsafe {
                    let s = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(sm.as_ptr())));
                    let m = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(sm.as_ptr().add(8))));
                    ([vmovl_s16(vget_low_s16(s)), vmovl_high_s16(s)], m)
                };
                // SAFETY: NEON is enabled here.
                let q = unsafe { unpack(b) };
                let dd = b.d_dmin_bits();
                let (d, dmin) = (
                    f16_to_f32(dd as u16),
                    f16_to_f32((dd >> 16) as u16),
                );
                for c in 0..C {
                    // SAFETY: the caller guarantees every acts[c] has row.len() blocks.
                    let a = unsafe { acts.get_unchecked(c).get_unchecked(i) };
                    // SAFETY: a.qs has 256 bytes; 32j + 32 <= 256.
                    let y = |j: usize| unsafe { load32(a.qs.as_ptr().add(32 * j)) };
                    let dot = |j: usize| $dot(vdupq_n_s32(0), q[j], y(j));
                    let mut isum = vmulq_laneq_s32::<0>(dot(0), sc[0]);
                    isum = vmlaq_laneq_s32::<1>(isum, dot(1), sc[0]);
                    isum = vmlaq_laneq_s32::<2>(isum, dot(2), sc[0]);
                    isum = vmlaq_laneq_s32::<3>(isum, dot(3), sc[0]);
                    isum = vmlaq_laneq_s32::<0>(isum, dot(4), sc[1]);
                    isum = vmlaq_laneq_s32::<1>(isum, dot(5), sc[1]);
                    isum = vmlaq_laneq_s32::<2>(isum, dot(6), sc[1]);
                    isum = vmlaq_laneq_s32::<3>(isum, dot(7), sc[1]);
                    // Sub-block j's activation sum is bsums[2j] + bsums[2j + 1].
                    // SAFETY: bsums has 16 i16.
                    let msum = unsafe {
                        let bs = vpaddq_s16(vld1q_s16(a.bsums.as_ptr()), vld1q_s16(a.bsums.as_ptr().add(8)));
                        vaddvq_s32(vmlal_high_s16(vmull_s16(vget_low_s16(bs), vget_low_s16(mins)), bs, mins))
                    };
                    acc[c] = vfmaq_n_f32(acc[c], vcvtq_f32_s32(isum), d * a.d);
                    acc_min[c] += dmin * a.d * msum as f32;
                }
                mca!(end);
            }
            for c in 0..C {
                out[c] = vaddvq_f32(acc[c]) - acc_min[c];
            }
        }

        row_kernel!(
            gemv_q4_k_q8_k_1x4,
            $feat,
            BlockQ4K,
            BlockQ8K,
            cols<BlockQ4K>,
            [1, 2, 3, 4]
        );

        row_kernel!(
            gemv_q5_k_q8_k_1x4,
            $feat,
            BlockQ5K,
            BlockQ8K,
            cols<BlockQ5K>,
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
