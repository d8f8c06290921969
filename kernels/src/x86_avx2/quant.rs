//! Activation quantization on AVX2, byte for byte what the scalar references
//! write (`quantize_row_q8_k`, and ggml-cpu's x86 `quantize_row_q8_0`): the
//! same IEEE multiply and add per value, never fused, the same choice of the
//! block's maximum, the same integer tricks. Edge cases follow the scalar
//! code too: NaN values are skipped when looking for the maximum, and their
//! codes are what the scalar bit tricks (Q8_K) or casts (Q8_0) make of them.

use crate::formats::{BlockQ8K, BlockQ8_0, QK_K};
use half::f16;
use std::arch::x86_64::*;

/// The largest lane of eight (NaN-free) floats.
#[inline]
#[target_feature(enable = "avx2")]
fn hmax_ps(v: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)))
}

/// The low byte of each i32 lane of `v[0..4]`, in lane order: 32 bytes.
#[inline]
#[target_feature(enable = "avx2")]
fn low_bytes(v: [__m256i; 4]) -> __m256i {
    let byte = _mm256_set1_epi32(0xFF);
    let [a, b, c, d] = v.map(|x| _mm256_and_si256(x, byte));
    // 0..255 in every lane: the unsigned saturating packs are exact.
    let ab = _mm256_packus_epi32(a, b);
    let cd = _mm256_packus_epi32(c, d);
    let abcd = _mm256_packus_epi16(ab, cd);
    // The packs interleave 128-bit halves: a0 b0 c0 d0 | a1 b1 c1 d1 (4 bytes each).
    _mm256_permutevar8x32_epi32(abcd, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// [`crate::formats::quantize_row_q8_k`] on AVX2.
///
/// # Safety
/// The CPU must have AVX2; `x.len() == y.len() * 256`.
#[target_feature(enable = "avx2")]
pub unsafe fn quantize_q8_k(x: &[f32], y: &mut [BlockQ8K]) {
    debug_assert_eq!(x.len(), y.len() * QK_K);
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF));
    for (xb, b) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
        let p = xb.as_ptr();
        // SAFETY (every load from p): xb has 256 floats; i * 8 + 8 <= 256.
        let load = |i: usize| unsafe { _mm256_loadu_ps(p.add(8 * i)) };
        // `amax = max |v|` skipping NaN: maxps(a, m) keeps m unless a > m.
        let mut m = _mm256_setzero_ps();
        for i in 0..32 {
            m = _mm256_max_ps(_mm256_and_ps(load(i), abs), m);
        }
        let amax = hmax_ps(m);
        if amax == 0.0 {
            b.d = 0.0;
            b.qs = [0; QK_K];
            b.bsums = [0; QK_K / 16];
            continue;
        }
        // The first value whose magnitude is amax (the scalar loop keeps the first).
        let target = _mm256_set1_ps(amax);
        let first = (0..32)
            .find_map(|i| {
                let eq = _mm256_cmp_ps::<_CMP_EQ_OQ>(_mm256_and_ps(load(i), abs), target);
                let bits = _mm256_movemask_ps(eq);
                (bits != 0).then(|| 8 * i + bits.trailing_zeros() as usize)
            })
            .expect("amax is one of the magnitudes");
        let iscale = -127.0f32 / xb[first];
        let (vs, magic) = (_mm256_set1_ps(iscale), _mm256_set1_ps(12582912.0));
        let (mant, half) = (
            _mm256_set1_epi32(0x007f_ffff),
            _mm256_set1_epi32(0x0040_0000),
        );
        let max127 = _mm256_set1_epi32(127);
        // nearest_int: (bits of v * iscale + 1.5 * 2^23) & mantissa - 2^22, then min 127.
        let code = |i: usize| {
            let t = _mm256_add_ps(_mm256_mul_ps(load(i), vs), magic);
            let q = _mm256_sub_epi32(_mm256_and_si256(_mm256_castps_si256(t), mant), half);
            _mm256_min_epi32(q, max127)
        };
        let qs = b.qs.as_mut_ptr();
        for j in 0..8 {
            let bytes = low_bytes([
                code(4 * j),
                code(4 * j + 1),
                code(4 * j + 2),
                code(4 * j + 3),
            ]);
            // SAFETY: qs has 256 bytes; 32 * j + 32 <= 256.
            unsafe { _mm256_storeu_si256(qs.add(32 * j).cast(), bytes) };
            // Sums of 8 codes + 128 each (psadbw against zero): two per 16 codes.
            let s = _mm256_sad_epu8(
                _mm256_xor_si256(bytes, _mm256_set1_epi8(-128)),
                _mm256_setzero_si256(),
            );
            let mut sums = [0u64; 4];
            // SAFETY: sums has 4 u64 = 32 bytes.
            unsafe { _mm256_storeu_si256(sums.as_mut_ptr().cast(), s) };
            b.bsums[2 * j] = (sums[0] + sums[1]) as i16 - 16 * 128;
            b.bsums[2 * j + 1] = (sums[2] + sums[3]) as i16 - 16 * 128;
        }
        b.d = 1.0 / iscale;
    }
}

/// [`crate::formats::quantize_row_q8_0`] (x86: `id = 127 / amax`, ties to even) on AVX2 + F16C.
///
/// # Safety
/// The CPU must have AVX2 and F16C; `x.len() == y.len() * 32`.
#[target_feature(enable = "avx2,f16c")]
pub unsafe fn quantize_q8_0(x: &[f32], y: &mut [BlockQ8_0]) {
    debug_assert_eq!(x.len(), y.len() * 32);
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF));
    for (xb, b) in x.chunks_exact(32).zip(y.iter_mut()) {
        // SAFETY: xb has 32 floats.
        let v: [__m256; 4] =
            std::array::from_fn(|i| unsafe { _mm256_loadu_ps(xb.as_ptr().add(8 * i)) });
        // f32::max skips NaN; so does maxps(|v|, m) (it keeps m unless |v| > m).
        let m = v.iter().fold(_mm256_setzero_ps(), |m, &v| {
            _mm256_max_ps(_mm256_and_ps(v, abs), m)
        });
        let amax = hmax_ps(m);
        let d = amax / 127.0;
        let id = _mm256_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
        let q = v.map(|v| {
            let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm256_mul_ps(v, id),
            );
            // `as i8` saturates and sends NaN to 0; within +-127.5 only NaN needs help.
            let nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(r, r);
            let r = _mm256_min_ps(
                _mm256_max_ps(r, _mm256_set1_ps(-128.0)),
                _mm256_set1_ps(127.0),
            );
            _mm256_cvtps_epi32(_mm256_andnot_ps(nan, r))
        });
        // SAFETY: qs has 32 bytes.
        unsafe { _mm256_storeu_si256(b.qs.as_mut_ptr().cast(), low_bytes(q)) };
        b.d = f16::from_bits(
            _mm_extract_epi16::<0>(_mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set_ss(d))) as u16,
        );
    }
}
