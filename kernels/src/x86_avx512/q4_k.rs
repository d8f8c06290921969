//! Q4_K and Q5_K x Q8_K with AVX-512 VNNI: one weight row against up to
//! [`COLS`] activation columns, each unpacked weight block reused for every
//! column (Q5_K's fifth bits or'ed into the codes as the AVX2 kernel does).
//!
//! Per 64 values (two sub-blocks of 32): the nibbles of 32 bytes of `qs`
//! become one 64-byte vector (low nibbles = sub-block 2p, high = 2p+1) that
//! lines up with 64 contiguous activation bytes. `vpmaddubsw` multiplies and
//! adds neighbouring pairs into i16 (at most 2·15·128, no saturation), and
//! `vpdpwssd` multiplies those by the sub-block's scale and adds pairs into
//! the i32 accumulator: two instructions per 64 values, the scales applied
//! without a `vpmulld`, and each block still reduces to exact integers before
//! its one float scaling.

use crate::formats::q4_k::scales_mins;
use crate::formats::{BlockK4, BlockQ4K, BlockQ5K, BlockQ8K};
use crate::x86_avx2::hsum_ps;
use crate::x86_avx2::q4_k::codes32;
use std::arch::x86_64::*;

/// Weight rows per call.
pub const ROWS: usize = 1;
/// Activation columns per call: 32 vector registers hold the unpacked block
/// (8) and two accumulators per column (16) with room for temporaries.
pub const COLS: usize = 8;

row_kernel!(
    gemv_q4_k_q8_k_1x8,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    BlockQ4K,
    BlockQ8K,
    cols<BlockQ4K>,
    [1, 2, 3, 4, 5, 6, 7, 8]
);

row_kernel!(
    gemv_q5_k_q8_k_1x8,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    BlockQ5K,
    BlockQ8K,
    cols<BlockQ5K>,
    [1, 2, 3, 4, 5, 6, 7, 8]
);

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn cols<B: BlockK4, const C: usize>(row: &[B], acts: &[&[BlockQ8K]], out: &mut [f32]) {
    let mut acc = [_mm512_setzero_ps(); C];
    let mut acc_min = [_mm256_setzero_ps(); C];
    let dup = _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    for (i, blk) in row.iter().enumerate() {
        if C == 1 {
            crate::x86_avx2::prefetch_ahead(blk);
        }
        // SAFETY: the caller guarantees every acts[c] has row.len() blocks.
        let a: [&BlockQ8K; C] =
            std::array::from_fn(|c| unsafe { acts.get_unchecked(c).get_unchecked(i) });
        let sm = scales_mins(blk.scales());
        // SAFETY: qh is 32 bytes.
        let qh = unsafe { _mm256_loadu_si256(blk.qh().as_ptr().cast()) };
        // SAFETY: sm has 16 bytes: scales in 0..8, mins in 8..16.
        let sm128 = unsafe { _mm_loadu_si128(sm.as_ptr().cast()) };
        let mins = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(_mm_unpackhi_epi64(sm128, sm128), dup));
        let mut w = [_mm512_setzero_si512(); 4];
        let mut sc = [_mm512_setzero_si512(); 4];
        for p in 0..4 {
            // SAFETY: qs has 128 bytes; p*32 + 32 <= 128.
            let v = unsafe { _mm256_loadu_si256(blk.qs().as_ptr().add(32 * p).cast()) };
            let (lo, hi) = (codes32::<B>(v, qh, 2 * p), codes32::<B>(v, qh, 2 * p + 1));
            w[p] = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
            // i16 scale of sub-block 2p in the low half, of 2p+1 in the high half.
            sc[p] = _mm512_inserti64x4::<1>(
                _mm512_castsi256_si512(_mm256_set1_epi16(sm[2 * p] as i16)),
                _mm256_set1_epi16(sm[2 * p + 1] as i16),
            );
        }
        // d and dmin, converted together and broadcast (see the AVX2 kernel).
        let dd = _mm256_cvtph_ps(_mm_set1_epi32(blk.d_dmin_bits() as i32));
        let (d8, dmin) = (_mm256_moveldup_ps(dd), _mm256_movehdup_ps(dd));
        let d = _mm512_castps256_ps512(d8);
        let d = _mm512_shuffle_f32x4::<0b01_00_01_00>(d, d);
        for c in 0..C {
            let mut isum = _mm512_setzero_si512();
            for p in 0..4 {
                // SAFETY: a[c].qs has 256 bytes; p*64 + 64 <= 256.
                let y = unsafe { _mm512_loadu_si512(a[c].qs.as_ptr().add(64 * p).cast()) };
                isum = _mm512_dpwssd_epi32(isum, _mm512_maddubs_epi16(w[p], y), sc[p]);
            }
            // SAFETY: bsums is 16 i16 = 32 bytes.
            let bsums = unsafe { _mm256_loadu_si256(a[c].bsums.as_ptr().cast()) };
            let msum = _mm256_cvtepi32_ps(_mm256_madd_epi16(bsums, mins));
            acc[c] = _mm512_fmadd_ps(
                _mm512_mul_ps(d, _mm512_set1_ps(a[c].d)),
                _mm512_cvtepi32_ps(isum),
                acc[c],
            );
            acc_min[c] = _mm256_fmadd_ps(
                _mm256_mul_ps(dmin, _mm256_set1_ps(a[c].d)),
                msum,
                acc_min[c],
            );
        }
    }
    for c in 0..C {
        out[c] = _mm512_reduce_add_ps(acc[c]) - hsum_ps(acc_min[c]);
    }
}
