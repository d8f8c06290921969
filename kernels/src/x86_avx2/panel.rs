//! The panel GEMM tile ([`crate::panel`]) with AVX2: [`ROWS`] weight rows x 32
//! activation columns, done as passes of 2 rows x 16 columns (8 for Q4_K,
//! whose per-sub-block sums need more registers) to fit 16 vector registers.
//!
//! Without VNNI there is no u8 x i8 multiply-add into i32, and `vpmaddubsw`
//! saturates its i16 pair sums, which codes up to +-128 times activations up
//! to 255 (stored + 128) would overflow. So the activations are taken back to
//! signed (`^ 0x80`, once per load, shared by the rows) and multiplied as
//! `|w| x sign(a, w)` (`vpabsb` once per row and four values, `vpsignb` per
//! vector): pairs of at most 128 x 127, no saturation. `vpmaddwd` by ones
//! widens to i32. These sums are exactly `sum(code * a)`, which the scalar
//! tile reaches from the correction instead, so the float steps, done in its
//! order, give its results bit for bit.

use crate::panel::{Tile, COLS, ROWS};
use crate::tile_pass::{tile, TilePrims};
use std::arch::x86_64::*;

/// # Safety
/// The CPU must have AVX2 and FMA; `t` built by [`Tile::new`].
#[target_feature(enable = "avx2,fma")]
pub unsafe fn gemm_i8_q8x32_8x32(t: &Tile, out: &mut [f32; ROWS * COLS]) {
    // Passes of 2 vectors of 8 columns (1 for Q4_K, whose per-sub-block sums
    // need more registers); `U`: the codes are never negative (and at most
    // 45), so they multiply the signed activations directly (pairs of at most
    // 2 x 45 x 127 in i16), without the `vpabsb` / `vpsignb`.
    // SAFETY: forwarded contract; each arm is the tile's shape.
    unsafe {
        match (t.shape.block, t.shape.sub, t.shape.pairs()) {
            (256, 32, 4) => tile::<Avx2, 8, 8, 4, 1, true>(t, out), // Q4_K: codes 0..=15
            (256, 256, 8) => tile::<Avx2, 64, 1, 8, 2, true>(t, out), // Q2_K: codes 0..=45
            (256, 256, 0) => tile::<Avx2, 64, 1, 0, 2, false>(t, out), // Q3_K
            (32, 32, 0) => tile::<Avx2, 8, 1, 0, 2, false>(t, out), // Q4_0, Q8_0 (and 2:4)
            _ => crate::panel::gemm_i8_q8x32_8x32(t, out),
        }
    }
}

/// AVX2 + FMA.
enum Avx2 {}

impl TilePrims for Avx2 {
    const LANES: usize = 8;
    type I = __m256i;
    type F = __m256;
    type A = __m256i;
    /// The codes, and the magnitudes `vpmaddubsw` multiplies.
    type W = (__m256i, __m256i);
    type S = __m256i;
    type M = __m256i;
    #[inline(always)]
    unsafe fn zero_i() -> __m256i {
        // SAFETY: the caller's features.
        unsafe { _mm256_setzero_si256() }
    }
    #[inline(always)]
    unsafe fn zero_f() -> __m256 {
        // SAFETY: the caller's features.
        unsafe { _mm256_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn load_a(p: *const u8) -> __m256i {
        // SAFETY: the caller guarantees 32 readable bytes and the features.
        unsafe { _mm256_xor_si256(_mm256_loadu_si256(p.cast()), _mm256_set1_epi8(-128)) }
    }
    #[inline(always)]
    unsafe fn splat_w<const U: bool>(w: i32) -> (__m256i, __m256i) {
        // SAFETY: the caller's features.
        unsafe {
            let w = _mm256_set1_epi32(w);
            (w, if U { w } else { _mm256_abs_epi8(w) })
        }
    }
    #[inline(always)]
    unsafe fn dot<const U: bool>(acc: __m256i, a: __m256i, (w, wa): (__m256i, __m256i)) -> __m256i {
        // SAFETY: the caller's features.
        unsafe {
            let av = if U { a } else { _mm256_sign_epi8(a, w) };
            let p = _mm256_maddubs_epi16(wa, av);
            _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)))
        }
    }
    #[inline(always)]
    unsafe fn load_s(p: *const i32) -> __m256i {
        // SAFETY: the caller guarantees 8 readable i32 and the features.
        unsafe { _mm256_loadu_si256(p.cast()) }
    }
    #[inline(always)]
    unsafe fn splat_m(m: i32) -> __m256i {
        // SAFETY: the caller's features.
        unsafe { _mm256_set1_epi32(m) }
    }
    #[inline(always)]
    unsafe fn dot_mins(acc: __m256i, s: __m256i, m: __m256i) -> __m256i {
        // SAFETY: the caller's features.
        unsafe { _mm256_add_epi32(acc, _mm256_madd_epi16(s, m)) }
    }
    #[inline(always)]
    unsafe fn fma_i(acc: __m256, x: __m256i, s: f32) -> __m256 {
        // SAFETY: the caller's features.
        unsafe { _mm256_fmadd_ps(_mm256_cvtepi32_ps(x), _mm256_set1_ps(s), acc) }
    }
    #[inline(always)]
    unsafe fn load_f(p: *const f32) -> __m256 {
        // SAFETY: the caller guarantees 8 readable floats and the features.
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn fma(acc: __m256, a: __m256, b: __m256) -> __m256 {
        // SAFETY: the caller's features.
        unsafe { _mm256_fmadd_ps(a, b, acc) }
    }
    #[inline(always)]
    unsafe fn store_f(p: *mut f32, v: __m256) {
        // SAFETY: the caller guarantees 8 writable floats and the features.
        unsafe { _mm256_storeu_ps(p, v) }
    }
}
