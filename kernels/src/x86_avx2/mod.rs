//! x86-64 kernels for AVX2 + FMA + F16C. Entry points are `#[target_feature]`
//! functions reached only through the registry, which checks the CPU first.

pub mod dequant;
pub mod panel;
pub mod q2_k;
pub mod q4_k;
pub mod q8_0;
pub mod quant;

use std::arch::x86_64::*;

/// Horizontal sum of eight f32.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}
