//! IQ4_XS x Q8_K on NEON: one weight row against up to [`COLS`] activation
//! columns. Each block's table values are looked up once (`tbl`, 8
//! sub-blocks of 32) and reused for every column; sub-block sums are exact
//! i32 lanes scaled by the sub-block scale (`mla`), then one float scaling per block.

use super::{f16_to_f32, load32};
use crate::formats::grids::KVALUES_IQ4NL;
use crate::formats::{scales_iq4_xs, BlockIq4Xs, BlockQ8K};
use std::arch::aarch64::*;

/// Weight rows per call.
pub const ROWS: usize = 1;
/// Activation columns per call.
pub const COLS: usize = 4;

/// A block's 256 values as eight sub-blocks of 32 (two vectors each),
/// looked up in the non-linear table.
///
/// # Safety
/// NEON must be available.
#[inline(always)]
pub(crate) unsafe fn unpack(b: &BlockIq4Xs) -> [[int8x16_t; 2]; 8] {
    // SAFETY: NEON is available (caller); the table has 16 bytes, qs 128 (16ib + 16 <= 128).
    unsafe {
        let table = vld1q_s8(KVALUES_IQ4NL.as_ptr());
        std::array::from_fn(|ib| {
            let v = vld1q_u8(b.qs.as_ptr().add(16 * ib));
            [
                vqtbl1q_s8(table, vandq_u8(v, vdupq_n_u8(0x0F))),
                vqtbl1q_s8(table, vshrq_n_u8::<4>(v)),
            ]
        })
    }
}

/// The kernel for one feature set (`$feat`) and its 32-byte dot product (`$dot`).
macro_rules! kernels {
    ($feat:literal, $dot:path) => {
        #[inline]
        #[target_feature(enable = $feat)]
        pub(crate) unsafe fn cols<const C: usize, const PF: bool>(row: &[BlockIq4Xs], acts: &[&[BlockQ8K]], out: &mut [f32]) {
            let mut acc = [vdupq_n_f32(0.0); C];
            for (i, b) in row.iter().enumerate() {
                mca!(begin ["iq4_xs.cols ", $feat], c = C, pf = PF as u32, w = 256);
                if PF {
                    crate::aarch64_neon::prefetch_ahead(b);
                }
                let s = scales_iq4_xs(b);
                // SAFETY: NEON is enabled here.
                let q = unsafe { unpack(b) };
                let d = f16_to_f32(b.d.to_bits());
                for c in 0..C {
                    // SAFETY: the caller guarantees every acts[c] has row.len() blocks.
                    let a = unsafe { acts.get_unchecked(c).get_unchecked(i) };
                    let mut isum = vdupq_n_s32(0);
                    for (ib, qb) in q.iter().enumerate() {
                        // SAFETY: a.qs has 256 bytes; 32ib + 32 <= 256.
                        let y = unsafe { load32(a.qs.as_ptr().add(32 * ib)) };
                        isum = vmlaq_n_s32(isum, $dot(vdupq_n_s32(0), *qb, y), s[ib] as i32);
                    }
                    acc[c] = vfmaq_n_f32(acc[c], vcvtq_f32_s32(isum), d * a.d);
                }
                mca!(end);
            }
            for c in 0..C {
                out[c] = vaddvq_f32(acc[c]);
            }
        }

        row_kernel!(
            gemv_iq4_xs_q8_k_1x4,
            $feat,
            BlockIq4Xs,
            BlockQ8K,
            prefetch cols,
            [1, 2, 3, 4]
        );
    };
}

/// Baseline NEON.
pub mod neon {
    use super::*;
    kernels!("neon", crate::aarch64_neon::dot32);
}

/// NEON + dotprod (`sdot`).
pub mod dotprod {
    use super::*;
    kernels!("neon,dotprod", crate::aarch64_neon::sdot32);
}
