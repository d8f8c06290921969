//! x86-64 kernels for AVX2 + FMA + F16C. Entry points are `#[target_feature]`
//! functions reached only through the registry, which checks the CPU first.

pub mod q4_k;

use std::arch::x86_64::*;

/// Exact horizontal sums of two vectors of eight i32: `(sum a, sum b)`.
#[inline]
#[target_feature(enable = "avx2")]
fn hsum2_epi32(a: __m256i, b: __m256i) -> (i32, i32) {
    let t = _mm256_hadd_epi32(a, b); // a01 a23 b01 b23 | a45 a67 b45 b67
    let t = _mm256_hadd_epi32(t, t); // a0123 b0123 .. | a4567 b4567 ..
    let s = _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256::<1>(t));
    (_mm_cvtsi128_si32(s), _mm_extract_epi32::<1>(s))
}
