//! Q6_K x Q8_K on AVX2: one weight row against up to [`COLS`] activation
//! columns, each weight block unpacked once and reused for every column.
//!
//! Per 32 values the 6-bit codes are put together unsigned (0..=63: four low
//! bits from `ql`, two high bits from `qh`, one shift, two masks and an or)
//! and multiplied with `vpmaddubsw` (pairs at most 2·63·128, no saturation);
//! `vpmaddwd` by the two 16-value sub-blocks' scales widens them. The `-32`
//! of every code comes off once per block as `32 * sum(scale * bsum)`, from
//! the activation block's 16-value sums. Integer sums are exact; the float
//! scaling is per SIMD lane, so results differ from the scalar reference only
//! in float summation order (bounded by `dot_magnitude`).

use super::hsum_ps;
use crate::formats::{BlockQ6K, BlockQ8K};
use std::arch::x86_64::*;

/// Weight rows per call.
pub const ROWS: usize = 1;
/// Activation columns per call.
pub const COLS: usize = 4;

row_kernel!(
    gemv_q6_k_q8_k_1x4,
    "avx2,fma,f16c",
    BlockQ6K,
    BlockQ8K,
    cols,
    [1, 2, 3, 4]
);

/// The unsigned codes of values `32g ..` (g < 8) of a block.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn codes32(b: &BlockQ6K, g: usize) -> __m256i {
    let (n, j) = (g / 4, g % 4);
    // SAFETY: ql has 128 bytes (64n + 32(j % 2) + 32 <= 128), qh 64 (32n + 32 <= 64).
    let (ql, qh) = unsafe {
        (
            _mm256_loadu_si256(b.ql.as_ptr().add(64 * n + 32 * (j % 2)).cast()),
            _mm256_loadu_si256(b.qh.as_ptr().add(32 * n).cast()),
        )
    };
    let low = if j < 2 {
        ql
    } else {
        _mm256_srli_epi16::<4>(ql)
    };
    // Bits 2j, 2j+1 of each qh byte to bits 4, 5 (16-bit shifts: the mask
    // keeps only bits that came from the same byte).
    let high = match j {
        0 => _mm256_slli_epi16::<4>(qh),
        1 => _mm256_slli_epi16::<2>(qh),
        2 => qh,
        _ => _mm256_srli_epi16::<2>(qh),
    };
    _mm256_or_si256(
        _mm256_and_si256(low, _mm256_set1_epi8(0x0F)),
        _mm256_and_si256(high, _mm256_set1_epi8(0x30)),
    )
}

/// The kernel for exactly `C` columns (per-column state in registers).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn cols<const C: usize>(row: &[BlockQ6K], acts: &[&[BlockQ8K]], out: &mut [f32]) {
    let mut acc = [_mm256_setzero_ps(); C];
    for (i, b) in row.iter().enumerate() {
        if C == 1 {
            super::prefetch_ahead(b);
        }
        // SAFETY: the caller guarantees every acts[c] has row.len() blocks.
        let a: [&BlockQ8K; C] =
            std::array::from_fn(|c| unsafe { acts.get_unchecked(c).get_unchecked(i) });
        // SAFETY: scales is 16 bytes.
        let sc8 = unsafe { _mm_loadu_si128(b.scales.as_ptr().cast()) };
        let mut isum = [_mm256_setzero_si256(); C];
        for g in 0..8 {
            let q = codes32(b, g);
            // Scale 2g in the low lane's eight i16, 2g + 1 in the high lane's.
            let pick = _mm_set_epi64x(
                0x0101_0101_0101_0101 * (2 * g as i64 + 1),
                0x0101_0101_0101_0101 * (2 * g as i64),
            );
            let sc = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc8, pick));
            for c in 0..C {
                // SAFETY: a[c].qs has 256 bytes; 32g + 32 <= 256.
                let y = unsafe { _mm256_loadu_si256(a[c].qs.as_ptr().add(32 * g).cast()) };
                isum[c] =
                    _mm256_add_epi32(isum[c], _mm256_madd_epi16(_mm256_maddubs_epi16(q, y), sc));
            }
        }
        let scales = _mm256_cvtepi8_epi16(sc8);
        let d = _mm256_set1_ps(b.d.to_f32());
        for c in 0..C {
            // SAFETY: bsums is 16 i16 = 32 bytes.
            let bsums = unsafe { _mm256_loadu_si256(a[c].bsums.as_ptr().cast()) };
            let m32 = _mm256_slli_epi32::<5>(_mm256_madd_epi16(bsums, scales));
            let total = _mm256_sub_epi32(isum[c], m32);
            let dy = _mm256_set1_ps(a[c].d);
            acc[c] = _mm256_fmadd_ps(_mm256_mul_ps(d, dy), _mm256_cvtepi32_ps(total), acc[c]);
        }
    }
    for c in 0..C {
        out[c] = hsum_ps(acc[c]);
    }
}
