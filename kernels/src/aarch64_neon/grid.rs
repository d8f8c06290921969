//! The grid formats (IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, TQ1_0, TQ2_0)
//! x Q8_K on NEON, dequantize-and-dot: one weight row against up to
//! [`COLS`] activation columns. Each block is put in its integer form once
//! ([`GridBlock::int_form`]) and reused for every column; per 16 values an
//! exact i32 dot (`sdot`, or `smull` + `sadalp`) times the group's scale
//! (`mla`), then one float scaling per block and column.

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
        unsafe fn cols<B: GridBlock, const C: usize>(row: &[B], acts: &[&[BlockQ8K]], out: &mut [f32]) {
            let mut acc = [vdupq_n_f32(0.0); C];
            let mut codes = [0i8; QK_K];
            let mut scales = [0i16; 16];
            for (i, b) in row.iter().enumerate() {
                mca!(begin ["grid.cols ", $feat], ggml_type = <B as crate::formats::QuantBlock>::GGML_TYPE, c = C, w = 256);
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
        $(row_kernel!($name, $feat, $block, BlockQ8K, cols<$block>, [1, 2, 3, 4]);)*
    };
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
        gemv_tq1_0_q8_k_1x4: BlockTq1_0,
        gemv_tq2_0_q8_k_1x4: BlockTq2_0,
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
        gemv_tq1_0_q8_k_1x4: BlockTq1_0,
        gemv_tq2_0_q8_k_1x4: BlockTq2_0,
    );
}
