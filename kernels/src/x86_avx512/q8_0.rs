//! Q4_0 x Q8_0 and Q8_0 x Q8_0 with AVX-512 VNNI: two 32-value blocks per
//! 512-bit vector, one weight row against up to [`COLS`] activation columns.
//!
//! `vpdpbusd` multiplies unsigned by signed bytes. The activations are made
//! unsigned by adding 128 (`y ^ 0x80`); the excess `128 * sum(w)` depends on
//! the weights only, so it is computed once per block pair (`vpdpbusd` of ones
//! and w) and subtracted from every column's lanes: exact i32 block sums with
//! one `vpdpbusd` per 64 products, and no per-column sign juggling.

use crate::formats::{Block32, BlockQ4_0, BlockQ4_0S, BlockQ8_0, BlockQ8_0S};
use crate::x86_avx2::hsum_ps;
use std::arch::x86_64::*;

/// Activation columns per call.
pub const COLS: usize = 4;

/// The 32 signed codes of a block (zeros where a 2:4 block dropped them).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn weights<W: Block32>(b: &W) -> __m256i {
    // SAFETY: AVX2 is a subset of what is enabled here.
    unsafe { crate::x86_avx2::q8_0::codes256(b) }
}

/// Two f16 scales as 16 f32 lanes: `a` in lanes 0..8, `b` in 8..16.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn scale_pair(a: u16, b: u16) -> __m512 {
    _mm512_cvtph_ps(_mm256_set_m128i(
        _mm_set1_epi16(b as i16),
        _mm_set1_epi16(a as i16),
    ))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn cols<W: Block32, const C: usize>(row: &[W], acts: &[&[BlockQ8_0]], out: &mut [f32]) {
    let mut acc = [_mm512_setzero_ps(); C];
    let ones = _mm512_set1_epi8(1);
    let flip = _mm512_set1_epi8(-128);
    let pairs = row.len() / 2;
    for p in 0..pairs {
        let (b0, b1) = (&row[2 * p], &row[2 * p + 1]);
        // SAFETY: AVX-512 is enabled here.
        let w =
            unsafe { _mm512_inserti64x4::<1>(_mm512_castsi256_si512(weights(b0)), weights(b1)) };
        // 128 * sum(w) per lane: what the +128 on the activations adds.
        let excess = _mm512_slli_epi32::<7>(_mm512_dpbusd_epi32(_mm512_setzero_si512(), ones, w));
        let dw = scale_pair(b0.d_bits(), b1.d_bits());
        for c in 0..C {
            // SAFETY: the caller guarantees every acts[c] has row.len() blocks; qs are 32 bytes.
            let (a0, a1) = unsafe {
                (
                    acts.get_unchecked(c).get_unchecked(2 * p),
                    acts.get_unchecked(c).get_unchecked(2 * p + 1),
                )
            };
            let y = unsafe {
                _mm512_inserti64x4::<1>(
                    _mm512_castsi256_si512(_mm256_loadu_si256(a0.qs.as_ptr().cast())),
                    _mm256_loadu_si256(a1.qs.as_ptr().cast()),
                )
            };
            let dot = _mm512_sub_epi32(
                _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_xor_si512(y, flip), w),
                excess,
            );
            let scale = _mm512_mul_ps(dw, scale_pair(a0.d.to_bits(), a1.d.to_bits()));
            acc[c] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(dot), acc[c]);
        }
    }
    let mut tail = [0f32; C];
    if row.len() % 2 == 1 {
        // The odd last block: the same arithmetic on its 32 values.
        let i = row.len() - 1;
        // SAFETY: AVX-512 is enabled here.
        let w = unsafe { weights(&row[i]) };
        let excess = _mm256_slli_epi32::<7>(_mm256_dpbusd_epi32(
            _mm256_setzero_si256(),
            _mm256_set1_epi8(1),
            w,
        ));
        for (c, t) in tail.iter_mut().enumerate() {
            // SAFETY: as above.
            let a = unsafe { acts.get_unchecked(c).get_unchecked(i) };
            let y = unsafe { _mm256_loadu_si256(a.qs.as_ptr().cast()) };
            let dot = _mm256_sub_epi32(
                _mm256_dpbusd_epi32(
                    _mm256_setzero_si256(),
                    _mm256_xor_si256(y, _mm256_set1_epi8(-128)),
                    w,
                ),
                excess,
            );
            *t = half::f16::from_bits(row[i].d_bits()).to_f32()
                * a.d.to_f32()
                * hsum_ps(_mm256_cvtepi32_ps(dot));
        }
    }
    for c in 0..C {
        out[c] = _mm512_reduce_add_ps(acc[c]) + tail[c];
    }
}

row_kernel!(
    gemv_q8_0_q8_0_x4,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    BlockQ8_0,
    BlockQ8_0,
    cols<BlockQ8_0>,
    [1, 2, 3, 4]
);
row_kernel!(
    gemv_q4_0_q8_0_x4,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    BlockQ4_0,
    BlockQ8_0,
    cols<BlockQ4_0>,
    [1, 2, 3, 4]
);
row_kernel!(
    gemv_q4_0s_q8_0_x4,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    BlockQ4_0S,
    BlockQ8_0,
    cols<BlockQ4_0S>,
    [1, 2, 3, 4]
);
row_kernel!(
    gemv_q8_0s_q8_0_x4,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    BlockQ8_0S,
    BlockQ8_0,
    cols<BlockQ8_0S>,
    [1, 2, 3, 4]
);
