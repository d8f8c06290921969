//! Q4_K and Q5_K x Q8_K on AVX2: one weight row against up to [`COLS`]
//! activation columns. Each weight block is unpacked once (nibbles to bytes,
//! Q5_K's fifth bits or'ed in, scales and mins to i16) and reused for every
//! column, the idea behind ik_llama.cpp's multi-column kernels, so a GEMM
//! reads and unpacks each weight 1/COLS times.
//!
//! Layout: GGUF's, as is (no repacking). Integer sums are exact (maddubs of
//! u5 x i8 pairs fits i16; per-block lane sums fit i32); the float scaling is
//! done per SIMD lane, so results differ from the scalar reference only in
//! float summation order (bounded by `dot_magnitude`).

use super::hsum_ps;
use crate::formats::q4_k::scales_mins;
use crate::formats::{BlockK4, BlockQ4K, BlockQ5K, BlockQ8K};
use std::arch::x86_64::*;

/// Weight rows per call.
pub const ROWS: usize = 1;
/// Activation columns per call.
pub const COLS: usize = 4;

row_kernel!(
    gemv_q4_k_q8_k_1x4,
    "avx2,fma,f16c",
    BlockQ4K,
    BlockQ8K,
    cols<BlockQ4K>,
    [1, 2, 3, 4]
);

row_kernel!(
    gemv_q5_k_q8_k_1x4,
    "avx2,fma,f16c",
    BlockQ5K,
    BlockQ8K,
    cols<BlockQ5K>,
    [1, 2, 3, 4]
);

/// The codes of sub-block `j` (values `32j ..`) of a Q4_K-layout block, from
/// its 32 bytes of nibbles `v` and, where the format has them, its fifth bits
/// `qh` (bit j of each byte, moved to bit 4: the 16-bit shifts keep only bits
/// that came from the same byte under the mask).
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn codes32<B: BlockK4>(v: __m256i, qh: __m256i, j: usize) -> __m256i {
    let low4 = _mm256_set1_epi8(0x0F);
    let q = if j % 2 == 0 {
        _mm256_and_si256(v, low4)
    } else {
        _mm256_and_si256(_mm256_srli_epi16::<4>(v), low4)
    };
    if !B::FIFTH_BIT {
        return q;
    }
    let high = if j <= 4 {
        _mm256_sll_epi16(qh, _mm_cvtsi32_si128(4 - j as i32))
    } else {
        _mm256_srl_epi16(qh, _mm_cvtsi32_si128(j as i32 - 4))
    };
    _mm256_or_si256(q, _mm256_and_si256(high, _mm256_set1_epi8(0x10)))
}

/// The kernel for exactly `C` columns: per-column state in fixed-size arrays the
/// compiler keeps in registers. Sub-blocks are the outer loop so that only one
/// unpacked 32-byte weight vector and its scale are live at a time.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn cols<B: BlockK4, const C: usize>(row: &[B], acts: &[&[BlockQ8K]], out: &mut [f32]) {
    let mut acc = [_mm256_setzero_ps(); C];
    // Duplicates each min so that it lines up with the two 16-value bsums of its sub-block.
    let dup = _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    for (i, b) in row.iter().enumerate() {
        if C == 1 {
            super::prefetch_ahead(b);
        }
        // SAFETY: the caller guarantees every acts[c] has row.len() blocks.
        let a: [&BlockQ8K; C] =
            std::array::from_fn(|c| unsafe { acts.get_unchecked(c).get_unchecked(i) });
        let sm = scales_mins(b.scales());
        // SAFETY: qh is 32 bytes.
        let qh = unsafe { _mm256_loadu_si256(b.qh().as_ptr().cast()) };
        // SAFETY: sm has 16 bytes: scales in 0..8, mins in 8..16.
        let sm128 = unsafe { _mm_loadu_si128(sm.as_ptr().cast()) };
        let scales16 = _mm_cvtepu8_epi16(sm128);
        let scales = _mm256_set_m128i(scales16, scales16);
        let mins = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(_mm_unpackhi_epi64(sm128, sm128), dup));
        let mut isum = [_mm256_setzero_si256(); C];
        for p in 0..4 {
            // SAFETY: qs has 128 bytes; p*32 + 32 <= 128.
            let v = unsafe { _mm256_loadu_si256(b.qs().as_ptr().add(32 * p).cast()) };
            for h in 0..2 {
                let j = 2 * p + h;
                let q = codes32::<B>(v, qh, j);
                // Broadcast i16 scale j to every i16 of both lanes.
                let sc = _mm256_shuffle_epi8(
                    scales,
                    _mm256_set1_epi16((2 * j as i16) | ((2 * j as i16 + 1) << 8)),
                );
                for c in 0..C {
                    // SAFETY: a[c].qs has 256 bytes; j*32 + 32 <= 256.
                    let y = unsafe { _mm256_loadu_si256(a[c].qs.as_ptr().add(32 * j).cast()) };
                    isum[c] = _mm256_add_epi32(
                        isum[c],
                        _mm256_madd_epi16(_mm256_maddubs_epi16(q, y), sc),
                    );
                }
            }
        }
        // d and dmin are adjacent f16s: one conversion of both, broadcast to all
        // lanes (a single-lane conversion lands on the accumulator's dependency chain).
        let dd = _mm256_cvtph_ps(_mm_set1_epi32(b.d_dmin_bits() as i32));
        let (d, dmin) = (_mm256_moveldup_ps(dd), _mm256_movehdup_ps(dd));
        for c in 0..C {
            // SAFETY: bsums is 16 i16 = 32 bytes.
            let bsums = unsafe { _mm256_loadu_si256(a[c].bsums.as_ptr().cast()) };
            let msum = _mm256_cvtepi32_ps(_mm256_madd_epi16(bsums, mins));
            let dy = _mm256_set1_ps(a[c].d);
            // Lanes hold exact integer sums; scale and min terms go into one float lane sum.
            acc[c] = _mm256_fmadd_ps(_mm256_mul_ps(d, dy), _mm256_cvtepi32_ps(isum[c]), acc[c]);
            acc[c] = _mm256_fnmadd_ps(_mm256_mul_ps(dmin, dy), msum, acc[c]);
        }
    }
    for c in 0..C {
        out[c] = hsum_ps(acc[c]);
    }
}
