//! IQ4_XS x Q8_K with AVX-512 VNNI: one weight row against up to [`COLS`]
//! activation columns, each unpacked weight block reused for every column.
//!
//! Per 64 values (two sub-blocks): the table values + 128 (a `vpshufb` of
//! the table `^ 0x80`) as the unsigned operand of `vpdpbusd` against the
//! signed activations, then `vpmulld` by the two sub-blocks' scales. The
//! excess `128 * sum(y)` comes off once per block from the activations'
//! 16-value sums times the scales. Exact integer sums, one float scaling
//! per block and lane.

use crate::formats::grids::KVALUES_IQ4NL;
use crate::formats::{scales_iq4_xs, BlockIq4Xs, BlockQ8K};
use std::arch::x86_64::*;

/// Weight rows per call.
pub const ROWS: usize = 1;
/// Activation columns per call.
pub const COLS: usize = 8;

row_kernel!(
    gemv_iq4_xs_q8_k_1x8,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    BlockIq4Xs,
    BlockQ8K,
    cols,
    [1, 2, 3, 4, 5, 6, 7, 8]
);

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn cols<const C: usize>(row: &[BlockIq4Xs], acts: &[&[BlockQ8K]], out: &mut [f32]) {
    let mut acc = [_mm512_setzero_ps(); C];
    let mut acc_x = [_mm256_setzero_ps(); C];
    // SAFETY: the table has 16 bytes.
    let table = unsafe { _mm_loadu_si128(KVALUES_IQ4NL.as_ptr().cast()) };
    let table = _mm512_broadcast_i32x4(_mm_xor_si128(table, _mm_set1_epi8(-128)));
    for (i, blk) in row.iter().enumerate() {
        if C == 1 {
            crate::x86_avx2::prefetch_ahead(blk);
        }
        // SAFETY: the caller guarantees every acts[c] has row.len() blocks.
        let a: [&BlockQ8K; C] =
            std::array::from_fn(|c| unsafe { acts.get_unchecked(c).get_unchecked(i) });
        let s = scales_iq4_xs(blk);
        let mut w = [_mm512_setzero_si512(); 4];
        let mut sc = [_mm512_setzero_si512(); 4];
        for p in 0..4 {
            // SAFETY: qs has 128 bytes; 32p + 32 <= 128.
            let v = unsafe { _mm256_loadu_si256(blk.qs.as_ptr().add(32 * p).cast()) };
            let z = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(v), _mm256_srli_epi16::<4>(v));
            // 128-bit lanes [2p lo, 2p+1 lo, 2p hi, 2p+1 hi] -> [2p lo, 2p hi, 2p+1 lo, 2p+1 hi].
            let z = _mm512_and_si512(
                _mm512_shuffle_i64x2::<0b11_01_10_00>(z, z),
                _mm512_set1_epi8(0x0F),
            );
            w[p] = _mm512_shuffle_epi8(table, z);
            sc[p] = _mm512_inserti64x4::<1>(
                _mm512_castsi256_si512(_mm256_set1_epi32(s[2 * p] as i32)),
                _mm256_set1_epi32(s[2 * p + 1] as i32),
            );
        }
        // Each scale twice, against the two 16-value sums of its sub-block.
        let s16 = _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(
            _mm_loadl_epi64(s.as_ptr().cast()),
            _mm_loadl_epi64(s.as_ptr().cast()),
        ));
        let d = blk.d.to_f32();
        for c in 0..C {
            let mut isum = _mm512_setzero_si512();
            for p in 0..4 {
                // SAFETY: a[c].qs has 256 bytes; 64p + 64 <= 256.
                let y = unsafe { _mm512_loadu_si512(a[c].qs.as_ptr().add(64 * p).cast()) };
                let dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[p], y);
                isum = _mm512_add_epi32(isum, _mm512_mullo_epi32(dot, sc[p]));
            }
            // SAFETY: bsums is 16 i16 = 32 bytes.
            let bsums = unsafe { _mm256_loadu_si256(a[c].bsums.as_ptr().cast()) };
            let excess = _mm256_slli_epi32::<7>(_mm256_madd_epi16(bsums, s16));
            let dd = d * a[c].d;
            acc[c] = _mm512_fmadd_ps(_mm512_set1_ps(dd), _mm512_cvtepi32_ps(isum), acc[c]);
            acc_x[c] = _mm256_fmadd_ps(_mm256_set1_ps(dd), _mm256_cvtepi32_ps(excess), acc_x[c]);
        }
    }
    for c in 0..C {
        out[c] = _mm512_reduce_add_ps(acc[c]) - crate::x86_avx2::hsum_ps(acc_x[c]);
    }
}
