//! The grid formats (IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, TQ1_0, TQ2_0)
//! x Q8_K on AVX2, dequantize-and-dot: one weight row against up to
//! [`COLS`] activation columns. Each block is put in its integer form once
//! ([`GridBlock::int_form`]) and reused for every column.
//!
//! Per 32 values: `vpmaddubsw` of `|w|` and `sign(y, w)` (codes at most 62,
//! pairs at most 2·62·128, no saturation), `vpmaddwd` by the scales of the
//! two 16-value groups. Exact integer sums, one float scaling per block and
//! column.

use super::hsum_ps;
use crate::formats::{
    BlockIq2S, BlockIq2Xs, BlockIq2Xxs, BlockIq3S, BlockIq3Xxs, BlockQ8K, BlockTq1_0, BlockTq2_0,
    GridBlock, QK_K,
};
use std::arch::x86_64::*;

/// Weight rows per call.
pub const ROWS: usize = 1;
/// Activation columns per call.
pub const COLS: usize = 4;

macro_rules! grid_kernels {
    ($($name:ident: $block:ty),* $(,)?) => {$(
        row_kernel!($name, "avx2,fma,f16c", $block, BlockQ8K, cols<$block>, [1, 2, 3, 4]);
    )*};
}
grid_kernels!(
    gemv_iq2_xxs_q8_k_1x4: BlockIq2Xxs,
    gemv_iq2_xs_q8_k_1x4: BlockIq2Xs,
    gemv_iq2_s_q8_k_1x4: BlockIq2S,
    gemv_iq3_xxs_q8_k_1x4: BlockIq3Xxs,
    gemv_iq3_s_q8_k_1x4: BlockIq3S,
    gemv_tq1_0_q8_k_1x4: BlockTq1_0,
    gemv_tq2_0_q8_k_1x4: BlockTq2_0,
);

#[repr(C, align(32))]
struct Codes([i8; QK_K]);

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn cols<B: GridBlock, const C: usize>(row: &[B], acts: &[&[BlockQ8K]], out: &mut [f32]) {
    const { assert!(B::MAX_CODE <= 127) };
    let mut acc = [_mm256_setzero_ps(); C];
    let mut codes = Codes([0; QK_K]);
    let mut scales = [0i16; 16];
    for (i, blk) in row.iter().enumerate() {
        if C == 1 {
            super::prefetch_ahead(blk);
        }
        // SAFETY: the caller guarantees every acts[c] has row.len() blocks.
        let a: [&BlockQ8K; C] =
            std::array::from_fn(|c| unsafe { acts.get_unchecked(c).get_unchecked(i) });
        let factor = blk.int_form(&mut codes.0, &mut scales);
        let mut isum = [_mm256_setzero_si256(); C];
        for g in 0..QK_K / 32 {
            // SAFETY: codes is 256 bytes, 32-aligned; 32g + 32 <= 256.
            let w = unsafe { _mm256_load_si256(codes.0.as_ptr().add(32 * g).cast()) };
            let aw = _mm256_sign_epi8(w, w);
            let sc = _mm256_set_m128i(
                _mm_set1_epi16(scales[2 * g + 1]),
                _mm_set1_epi16(scales[2 * g]),
            );
            for c in 0..C {
                // SAFETY: a[c].qs has 256 bytes; 32g + 32 <= 256.
                let y = unsafe { _mm256_loadu_si256(a[c].qs.as_ptr().add(32 * g).cast()) };
                let p = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(y, w));
                isum[c] = _mm256_add_epi32(isum[c], _mm256_madd_epi16(p, sc));
            }
        }
        for c in 0..C {
            let dd = factor * a[c].d;
            acc[c] = _mm256_fmadd_ps(_mm256_set1_ps(dd), _mm256_cvtepi32_ps(isum[c]), acc[c]);
        }
    }
    for c in 0..C {
        out[c] = hsum_ps(acc[c]);
    }
}
