//! Q4_K x Q8_K on NEON: one weight row against up to [`COLS`] activation
//! columns. Each block's nibbles are unpacked once (8 sub-blocks of 32 bytes)
//! and reused for every column; sub-block sums are exact i32 lanes scaled by
//! the 6-bit scale (`mla`), then one float scaling per block.

use super::{dot32, load32, sdot32};
use crate::formats::q4_k::scales_mins;
use crate::formats::{BlockQ4K, BlockQ8K};
use std::arch::aarch64::*;

/// Weight rows per call.
pub const ROWS: usize = 1;
/// Activation columns per call.
pub const COLS: usize = 4;

/// The kernel for one feature set (`$feat`) and its 32-byte dot product (`$dot`).
macro_rules! kernels {
    ($feat:literal, $dot:ident) => {
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn cols<const C: usize>(row: &[BlockQ4K], acts: &[&[BlockQ8K]], out: &mut [f32]) {
            let mut acc = [vdupq_n_f32(0.0); C];
            let mut acc_min = [0f32; C];
            let low4 = vdupq_n_u8(0x0F);
            for (i, b) in row.iter().enumerate() {
                let sm = scales_mins(&b.scales);
                let mut q = [[vdupq_n_s8(0); 2]; 8];
                for p in 0..4 {
                    for h in 0..2 {
                        // SAFETY: qs has 128 bytes; 32p + 16h + 16 <= 128.
                        let v = unsafe { vld1q_u8(b.qs.as_ptr().add(32 * p + 16 * h)) };
                        q[2 * p][h] = vreinterpretq_s8_u8(vandq_u8(v, low4));
                        q[2 * p + 1][h] = vreinterpretq_s8_u8(vshrq_n_u8::<4>(v));
                    }
                }
                let (d, dmin) = (b.d.to_f32(), b.dmin.to_f32());
                for c in 0..C {
                    // SAFETY: the caller guarantees every acts[c] has row.len() blocks.
                    let a = unsafe { acts.get_unchecked(c).get_unchecked(i) };
                    let mut isum = vdupq_n_s32(0);
                    for (j, qj) in q.iter().enumerate() {
                        // SAFETY: a.qs has 256 bytes; 32j + 32 <= 256.
                        let y = unsafe { load32(a.qs.as_ptr().add(32 * j)) };
                        isum = vmlaq_n_s32(isum, $dot(vdupq_n_s32(0), *qj, y), sm[j] as i32);
                    }
                    let msum: i32 = (0..8)
                        .map(|j| {
                            sm[8 + j] as i32 * (a.bsums[2 * j] as i32 + a.bsums[2 * j + 1] as i32)
                        })
                        .sum();
                    acc[c] = vfmaq_n_f32(acc[c], vcvtq_f32_s32(isum), d * a.d);
                    acc_min[c] += dmin * a.d * msum as f32;
                }
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
            cols,
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
