//! Dequantization to f32 on AVX2, bit-identical with the scalar references
//! (and so with ggml's `dequantize_row_*`): the same IEEE operations in the
//! same order per value, `d_sub * q - m_sub` as a multiply then a subtract,
//! never fused, with the sub-block scales `d * sc` rounded exactly as the
//! reference rounds them (scalar f32 multiplies).

use crate::formats::q4_k::scales_mins;
use crate::formats::{
    scales_q3_k, Block32, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_0S, BlockQ8_0,
    BlockQ8_0S,
};
use std::arch::x86_64::*;

/// Writes `dl * q - ml` for 16 unsigned byte codes `q` (the low 16 bytes of `codes`).
///
/// # Safety
/// `out` must have room for 16 floats.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn store16(codes: __m128i, dl: f32, ml: f32, out: *mut f32) {
    let (dl, ml) = (_mm256_set1_ps(dl), _mm256_set1_ps(ml));
    let lo = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(codes));
    let hi = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_unpackhi_epi64(codes, codes)));
    // SAFETY: the caller guarantees 16 floats of room.
    unsafe {
        _mm256_storeu_ps(out, _mm256_sub_ps(_mm256_mul_ps(dl, lo), ml));
        _mm256_storeu_ps(out.add(8), _mm256_sub_ps(_mm256_mul_ps(dl, hi), ml));
    }
}

/// Writes `d * q` for 16 signed byte codes.
///
/// # Safety
/// `out` must have room for 16 floats.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn store16_signed(codes: __m128i, d: f32, out: *mut f32) {
    let d = _mm256_set1_ps(d);
    let lo = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(codes));
    let hi = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(codes, codes)));
    // SAFETY: the caller guarantees 16 floats of room.
    unsafe {
        _mm256_storeu_ps(out, _mm256_mul_ps(lo, d));
        _mm256_storeu_ps(out.add(8), _mm256_mul_ps(hi, d));
    }
}

/// # Safety
/// AVX2, FMA and F16C; `y.len() == x.len() * 32`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_q4_0(x: &[BlockQ4_0], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(32)) {
        // SAFETY: qs is 16 bytes; out has 32 floats.
        unsafe {
            let v = _mm_loadu_si128(b.qs.as_ptr().cast());
            let m4 = _mm_set1_epi8(0x0F);
            let eight = _mm_set1_epi8(8);
            let lo = _mm_sub_epi8(_mm_and_si128(v, m4), eight);
            let hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16::<4>(v), m4), eight);
            let d = b.d.to_f32();
            store16_signed(lo, d, out.as_mut_ptr());
            store16_signed(hi, d, out.as_mut_ptr().add(16));
        }
    }
}

/// # Safety
/// AVX2, FMA and F16C; `y.len() == x.len() * 32`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_q8_0(x: &[BlockQ8_0], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(32)) {
        let d = b.d.to_f32();
        // SAFETY: qs is 32 bytes; out has 32 floats.
        unsafe {
            let lo = _mm_loadu_si128(b.qs.as_ptr().cast());
            let hi = _mm_loadu_si128(b.qs.as_ptr().add(16).cast());
            store16_signed(lo, d, out.as_mut_ptr());
            store16_signed(hi, d, out.as_mut_ptr().add(16));
        }
    }
}

/// A 2:4 block's 32 codes (expanded as the dot-product kernels do) times its scale.
///
/// # Safety
/// AVX2, FMA and F16C; `y.len() == x.len() * 32`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dequantize_sparse<W: Block32>(x: &[W], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(32)) {
        let d = half::f16::from_bits(b.d_bits()).to_f32();
        // SAFETY: AVX2 is enabled; out has 32 floats.
        unsafe {
            let w = super::q8_0::codes256(b);
            store16_signed(_mm256_castsi256_si128(w), d, out.as_mut_ptr());
            store16_signed(
                _mm256_extracti128_si256::<1>(w),
                d,
                out.as_mut_ptr().add(16),
            );
        }
    }
}

/// # Safety
/// AVX2, FMA and F16C; `y.len() == x.len() * 32`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_q4_0s(x: &[BlockQ4_0S], y: &mut [f32]) {
    // SAFETY: forwarded contract.
    unsafe { dequantize_sparse(x, y) }
}

/// # Safety
/// AVX2, FMA and F16C; `y.len() == x.len() * 32`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_q8_0s(x: &[BlockQ8_0S], y: &mut [f32]) {
    // SAFETY: forwarded contract.
    unsafe { dequantize_sparse(x, y) }
}

/// # Safety
/// AVX2, FMA and F16C; `y.len() == x.len() * 256`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_q4_k(x: &[BlockQ4K], y: &mut [f32]) {
    let m4 = _mm_set1_epi8(0x0F);
    for (b, out) in x.iter().zip(y.chunks_exact_mut(256)) {
        let sm = scales_mins(&b.scales);
        let (d, dmin) = (b.d.to_f32(), b.dmin.to_f32());
        for j in 0..8 {
            let (dl, ml) = (d * sm[j] as f32, dmin * sm[8 + j] as f32);
            for h in 0..2 {
                // SAFETY: qs has 128 bytes: sub-block j is nibble j%2 of bytes 32(j/2)..+32;
                // out has 256 floats.
                unsafe {
                    let v = _mm_loadu_si128(b.qs.as_ptr().add(32 * (j / 2) + 16 * h).cast());
                    let q = if j % 2 == 0 {
                        _mm_and_si128(v, m4)
                    } else {
                        _mm_and_si128(_mm_srli_epi16::<4>(v), m4)
                    };
                    store16(q, dl, ml, out.as_mut_ptr().add(32 * j + 16 * h));
                }
            }
        }
    }
}

/// The 2-bit codes of values `32 hs + 16 half ..` of a Q2_K/Q3_K block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn low2(qs: &[u8; 64], hs: usize, half: usize) -> __m128i {
    let (h, s) = (hs / 4, hs % 4);
    // SAFETY: 32h + 16 half + 16 <= 64.
    let v = unsafe { _mm_loadu_si128(qs.as_ptr().add(32 * h + 16 * half).cast()) };
    _mm_and_si128(
        _mm_srl_epi16(v, _mm_cvtsi32_si128(2 * s as i32)),
        _mm_set1_epi8(3),
    )
}

/// # Safety
/// AVX2, FMA and F16C; `y.len() == x.len() * 256`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_q2_k(x: &[BlockQ2K], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(256)) {
        let (d, dmin) = (b.d.to_f32(), b.dmin.to_f32());
        for sub in 0..16 {
            let sc = b.scales[sub];
            let (dl, ml) = (d * (sc & 0x0F) as f32, dmin * (sc >> 4) as f32);
            // SAFETY: out has 256 floats; sub-block `sub` is values 16 sub ..
            unsafe {
                store16(
                    low2(&b.qs, sub / 2, sub % 2),
                    dl,
                    ml,
                    out.as_mut_ptr().add(16 * sub),
                )
            };
        }
    }
}

/// # Safety
/// AVX2, FMA and F16C; `y.len() == x.len() * 256`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_q3_k(x: &[BlockQ3K], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(256)) {
        let d_all = b.d.to_f32();
        let scales = scales_q3_k(&b.scales);
        for sub in 0..16 {
            let (hs, half) = (sub / 2, sub % 2);
            // SAFETY: hmask is 32 bytes; 16 half + 16 <= 32.
            let hm = unsafe { _mm_loadu_si128(b.hmask.as_ptr().add(16 * half).cast()) };
            let bit = _mm_set1_epi8(1 << hs);
            // q - 4 where the high bit is clear: low2 - 4 + 4 * bit.
            let minus4 = _mm_andnot_si128(
                _mm_cmpeq_epi8(_mm_and_si128(hm, bit), bit),
                _mm_set1_epi8(4),
            );
            let q = _mm_sub_epi8(low2(&b.qs, hs, half), minus4);
            let dl = d_all * scales[sub] as f32;
            // SAFETY: out has 256 floats.
            unsafe { store16_signed(q, dl, out.as_mut_ptr().add(16 * sub)) };
        }
    }
}
