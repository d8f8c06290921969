//! Dequantization on AVX2: the primitives of [`crate::dequant`]'s bodies.

use crate::dequant::{dequant_entries, Prims};
use crate::formats::Block32;
use std::arch::x86_64::*;

/// AVX2 + FMA + F16C.
pub(crate) enum Avx2 {}

impl Prims for Avx2 {
    type V = __m128i;
    #[inline(always)]
    unsafe fn load16(p: *const u8) -> __m128i {
        // SAFETY: the caller guarantees 16 readable bytes and the features.
        unsafe { _mm_loadu_si128(p.cast()) }
    }
    #[inline(always)]
    unsafe fn low_nibbles(v: __m128i) -> __m128i {
        // SAFETY: the caller's features.
        unsafe { _mm_and_si128(v, _mm_set1_epi8(0x0F)) }
    }
    #[inline(always)]
    unsafe fn high_nibbles(v: __m128i) -> __m128i {
        // SAFETY: the caller's features.
        unsafe { _mm_and_si128(_mm_srli_epi16::<4>(v), _mm_set1_epi8(0x0F)) }
    }
    #[inline(always)]
    unsafe fn bits2(v: __m128i, s: usize) -> __m128i {
        // SAFETY: the caller's features.
        unsafe {
            _mm_and_si128(
                _mm_srl_epi16(v, _mm_cvtsi32_si128(2 * s as i32)),
                _mm_set1_epi8(3),
            )
        }
    }
    #[inline(always)]
    unsafe fn four_where_clear(hm: __m128i, bit: u8) -> __m128i {
        // SAFETY: the caller's features.
        unsafe {
            let bit = _mm_set1_epi8(bit as i8);
            _mm_andnot_si128(
                _mm_cmpeq_epi8(_mm_and_si128(hm, bit), bit),
                _mm_set1_epi8(4),
            )
        }
    }
    #[inline(always)]
    unsafe fn sub(a: __m128i, b: __m128i) -> __m128i {
        // SAFETY: the caller's features.
        unsafe { _mm_sub_epi8(a, b) }
    }
    #[inline(always)]
    unsafe fn splat(c: u8) -> __m128i {
        // SAFETY: the caller's features.
        unsafe { _mm_set1_epi8(c as i8) }
    }
    #[inline(always)]
    unsafe fn store16(q: __m128i, dl: f32, ml: f32, out: *mut f32) {
        // SAFETY: the caller guarantees 16 floats of room and the features.
        unsafe {
            let (dl, ml) = (_mm256_set1_ps(dl), _mm256_set1_ps(ml));
            let lo = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(q));
            let hi = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_unpackhi_epi64(q, q)));
            _mm256_storeu_ps(out, _mm256_sub_ps(_mm256_mul_ps(dl, lo), ml));
            _mm256_storeu_ps(out.add(8), _mm256_sub_ps(_mm256_mul_ps(dl, hi), ml));
        }
    }
    #[inline(always)]
    unsafe fn store16_signed(q: __m128i, d: f32, out: *mut f32) {
        // SAFETY: the caller guarantees 16 floats of room and the features.
        unsafe {
            let d = _mm256_set1_ps(d);
            let lo = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
            let hi = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(q, q)));
            _mm256_storeu_ps(out, _mm256_mul_ps(lo, d));
            _mm256_storeu_ps(out.add(8), _mm256_mul_ps(hi, d));
        }
    }
    #[inline(always)]
    unsafe fn codes32<W: Block32>(b: &W) -> [__m128i; 2] {
        // SAFETY: the caller's features (AVX2).
        unsafe {
            let w = super::q8_0::codes256(b);
            [_mm256_castsi256_si128(w), _mm256_extracti128_si256::<1>(w)]
        }
    }
}

dequant_entries!(Avx2, "avx2,fma,f16c");
