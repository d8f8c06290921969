//! Q6_K x Q8_K with AVX-512: one weight row against up to [`COLS`]
//! activation columns, each unpacked weight block reused for every column.
//!
//! Per 64 values (four sub-blocks of 16): the unsigned 6-bit codes of two
//! 32-value runs (the AVX2 kernel's unpacking) as one 64-byte vector lined up
//! with 64 contiguous activation bytes; `vpmaddubsw` (pairs at most 2·63·128)
//! and `vpdpwssd` by the four sub-blocks' scales, one per 128-bit lane. The
//! `-32` of every code comes off once per block from the activations'
//! 16-value sums. Exact integer sums, one float scaling per block and lane.

use crate::formats::{BlockQ6K, BlockQ8K};
use crate::x86_avx2::q6_k::codes32;
use std::arch::x86_64::*;

/// Weight rows per call.
pub const ROWS: usize = 1;
/// Activation columns per call: the unpacked block (4 vectors), its scales
/// (4) and one accumulator per column leave room for temporaries.
pub const COLS: usize = 8;

row_kernel!(
    gemv_q6_k_q8_k_1x8,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    BlockQ6K,
    BlockQ8K,
    cols,
    [1, 2, 3, 4, 5, 6, 7, 8]
);

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn cols<const C: usize>(row: &[BlockQ6K], acts: &[&[BlockQ8K]], out: &mut [f32]) {
    let mut acc = [_mm512_setzero_ps(); C];
    let mut acc_m = [_mm256_setzero_ps(); C];
    for (i, blk) in row.iter().enumerate() {
        if C == 1 {
            crate::x86_avx2::prefetch_ahead(blk);
        }
        // SAFETY: the caller guarantees every acts[c] has row.len() blocks.
        let a: [&BlockQ8K; C] =
            std::array::from_fn(|c| unsafe { acts.get_unchecked(c).get_unchecked(i) });
        // SAFETY: scales is 16 bytes.
        let sc8 = unsafe { _mm_loadu_si128(blk.scales.as_ptr().cast()) };
        let sc8x2 = _mm256_broadcastsi128_si256(sc8);
        let mut w = [_mm512_setzero_si512(); 4];
        let mut sc = [_mm512_setzero_si512(); 4];
        for p in 0..4 {
            w[p] = _mm512_inserti64x4::<1>(
                _mm512_castsi256_si512(codes32(blk, 2 * p)),
                codes32(blk, 2 * p + 1),
            );
            // Scale 4p + l (l < 4) in the eight i16 of 128-bit lane l.
            let s = 4 * p as i64;
            let pick = _mm256_set_epi64x(
                0x0101_0101_0101_0101 * (s + 3),
                0x0101_0101_0101_0101 * (s + 2),
                0x0101_0101_0101_0101 * (s + 1),
                0x0101_0101_0101_0101 * s,
            );
            sc[p] = _mm512_cvtepi8_epi16(_mm256_shuffle_epi8(sc8x2, pick));
        }
        let scales = _mm256_cvtepi8_epi16(sc8);
        let d = blk.d.to_f32();
        for c in 0..C {
            let mut isum = _mm512_setzero_si512();
            for p in 0..4 {
                // SAFETY: a[c].qs has 256 bytes; 64p + 64 <= 256.
                let y = unsafe { _mm512_loadu_si512(a[c].qs.as_ptr().add(64 * p).cast()) };
                isum = _mm512_dpwssd_epi32(isum, _mm512_maddubs_epi16(w[p], y), sc[p]);
            }
            // SAFETY: bsums is 16 i16 = 32 bytes.
            let bsums = unsafe { _mm256_loadu_si256(a[c].bsums.as_ptr().cast()) };
            let m32 = _mm256_slli_epi32::<5>(_mm256_madd_epi16(bsums, scales));
            let dd = d * a[c].d;
            acc[c] = _mm512_fmadd_ps(_mm512_set1_ps(dd), _mm512_cvtepi32_ps(isum), acc[c]);
            acc_m[c] = _mm256_fmadd_ps(_mm256_set1_ps(dd), _mm256_cvtepi32_ps(m32), acc_m[c]);
        }
    }
    for c in 0..C {
        out[c] = _mm512_reduce_add_ps(acc[c]) - crate::x86_avx2::hsum_ps(acc_m[c]);
    }
}
