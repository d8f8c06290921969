//! IQ4_XS x Q8_K on AVX2: one weight row against up to [`COLS`] activation
//! columns, each weight block unpacked once and reused for every column.
//!
//! Per 32 values: the table values by one `vpshufb` of the 16-byte table
//! with the nibbles; signed x signed through `vpmaddubsw` as
//! `|w| x sign(y, w)` (pairs at most 2·127·128, no saturation), and
//! `vpmaddwd` by the sub-block's scale. Exact integer sums, one float
//! scaling per block and lane.

use super::hsum_ps;
use crate::formats::grids::KVALUES_IQ4NL;
use crate::formats::{scales_iq4_xs, BlockIq4Xs, BlockQ8K};
use std::arch::x86_64::*;

/// Weight rows per call.
pub const ROWS: usize = 1;
/// Activation columns per call.
pub const COLS: usize = 4;

row_kernel!(
    gemv_iq4_xs_q8_k_1x4,
    "avx2,fma,f16c",
    BlockIq4Xs,
    BlockQ8K,
    cols,
    [1, 2, 3, 4]
);

/// The nibbles of sub-block `ib` (values `32ib ..`): low nibbles in the low
/// lane, high in the high lane.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn nibbles32(b: &BlockIq4Xs, ib: usize) -> __m256i {
    // SAFETY: qs has 128 bytes; 16ib + 16 <= 128.
    let v = unsafe { _mm_loadu_si128(b.qs.as_ptr().add(16 * ib).cast()) };
    _mm256_and_si256(
        _mm256_set_m128i(_mm_srli_epi16::<4>(v), v),
        _mm256_set1_epi8(0x0F),
    )
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn cols<const C: usize>(row: &[BlockIq4Xs], acts: &[&[BlockQ8K]], out: &mut [f32]) {
    let mut acc = [_mm256_setzero_ps(); C];
    // SAFETY: the table has 16 bytes.
    let table =
        _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(KVALUES_IQ4NL.as_ptr().cast()) });
    for (i, b) in row.iter().enumerate() {
        if C == 1 {
            super::prefetch_ahead(b);
        }
        // SAFETY: the caller guarantees every acts[c] has row.len() blocks.
        let a: [&BlockQ8K; C] =
            std::array::from_fn(|c| unsafe { acts.get_unchecked(c).get_unchecked(i) });
        let scales = scales_iq4_xs(b);
        let mut isum = [_mm256_setzero_si256(); C];
        for (ib, &sc) in scales.iter().enumerate() {
            let w = _mm256_shuffle_epi8(table, nibbles32(b, ib));
            let aw = _mm256_sign_epi8(w, w);
            let sc = _mm256_set1_epi16(sc as i16);
            for c in 0..C {
                // SAFETY: a[c].qs has 256 bytes; 32ib + 32 <= 256.
                let y = unsafe { _mm256_loadu_si256(a[c].qs.as_ptr().add(32 * ib).cast()) };
                let p = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(y, w));
                isum[c] = _mm256_add_epi32(isum[c], _mm256_madd_epi16(p, sc));
            }
        }
        let d = _mm256_set1_ps(b.d.to_f32());
        for c in 0..C {
            let dy = _mm256_set1_ps(a[c].d);
            acc[c] = _mm256_fmadd_ps(_mm256_mul_ps(d, dy), _mm256_cvtepi32_ps(isum[c]), acc[c]);
        }
    }
    for c in 0..C {
        out[c] = hsum_ps(acc[c]);
    }
}
