//! The grid formats (IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, TQ1_0, TQ2_0)
//! x Q8_K on AVX2, dequantize-and-dot: one weight row against up to
//! [`COLS`] activation columns. Each block is unpacked once and reused for
//! every column.
//!
//! The 2-bit i-quants unpack in registers, 32 values at a time: four 8-value
//! grid points by scalar loads (`GridGroups::group`) into one vector, the
//! four sign bytes broadcast, each byte spread over its eight values and
//! tested bit by bit into a ±1 vector that `vpsignb` applies to the
//! activations. TQ2_0 hands over its 2-bit fields as they are (`code + 1`,
//! 32 consecutive values a shift of one load) and subtracts the
//! activations' sum once per block. The 3-bit i-quants (two 4-value points a group: the scalar
//! work of the register path cost more than it saved, 0.70-0.72x ggml
//! against 0.78-0.80x, docs/BENCHMARKS.md) and TQ1_0 go through their integer form ([`GridBlock::int_form`]) in memory.
//!
//! Per 32 values: `vpmaddubsw` of `|w|` and `sign(y, w)` (codes at most 62,
//! pairs at most 2·62·128, no saturation), `vpmaddwd` by the scales of the
//! two 16-value groups. Exact integer sums, one float scaling per block and
//! column.

use super::hsum_ps;
use crate::formats::grid::GridGroups;
use crate::formats::{
    BlockIq2S, BlockIq2Xs, BlockIq2Xxs, BlockIq3S, BlockIq3Xxs, BlockQ8K, BlockTq1_0, BlockTq2_0,
    GridBlock, QK_K,
};
use std::arch::x86_64::*;

/// Weight rows per call.
pub const ROWS: usize = 1;
/// Activation columns per call.
pub const COLS: usize = 4;

macro_rules! grid_kernels {
    ($($name:ident: $block:ty, $body:ident),* $(,)?) => {$(
        row_kernel!($name, "avx2,fma,f16c", $block, BlockQ8K, $body<$block>, [1, 2, 3, 4]);
    )*};
}
grid_kernels!(
    gemv_iq2_xxs_q8_k_1x4: BlockIq2Xxs, cols,
    gemv_iq2_xs_q8_k_1x4: BlockIq2Xs, cols,
    gemv_iq2_s_q8_k_1x4: BlockIq2S, cols,
    gemv_iq3_xxs_q8_k_1x4: BlockIq3Xxs, cols,
    gemv_iq3_s_q8_k_1x4: BlockIq3S, cols,
    gemv_tq1_0_q8_k_1x4: BlockTq1_0, cols,
    gemv_tq2_0_q8_k_1x4: BlockTq2_0, tq2_0,
);

/// ±1 bytes from four sign bytes (byte `l` of `signs` for values `8l..8l + 8`):
/// -1 where the value's bit is set.
#[inline]
#[target_feature(enable = "avx2")]
fn sign_vector(signs: u32) -> __m256i {
    _mm256_or_si256(super::bit_bytes(signs), _mm256_set1_epi8(1))
}

#[repr(C, align(32))]
struct Codes([i8; QK_K]);

/// Where a block's 32-value parts come from: their magnitudes and the
/// vector whose signs `vpsignb` gives the activations.
trait Parts: GridBlock {
    /// Readies the block (into `codes` where it goes through memory): the
    /// scales, and the factor.
    fn prepare(&self, codes: &mut Codes, scales: &mut [i16; 16]) -> f32;
    /// Values `32k..32k + 32`: magnitudes, signs.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    unsafe fn part(&self, codes: &Codes, k: usize) -> (__m256i, __m256i);
}

/// The 2-bit i-quants: four grid points by scalar loads, a ±1 vector.
macro_rules! parts_by_groups {
    ($($block:ty),*) => {$(
        impl Parts for $block {
            #[inline(always)]
            fn prepare(&self, _: &mut Codes, scales: &mut [i16; 16]) -> f32 {
                self.scales(scales)
            }
            #[inline(always)]
            unsafe fn part(&self, _: &Codes, k: usize) -> (__m256i, __m256i) {
                let mut g = [(0u64, 0u8); 4];
                for (l, g) in g.iter_mut().enumerate() {
                    *g = self.group(4 * k + l);
                }
                // SAFETY: the caller's features.
                unsafe {
                    (
                        _mm256_set_epi64x(g[3].0 as i64, g[2].0 as i64, g[1].0 as i64, g[0].0 as i64),
                        sign_vector(u32::from_le_bytes([g[0].1, g[1].1, g[2].1, g[3].1])),
                    )
                }
            }
        }
    )*};
}
parts_by_groups!(BlockIq2Xxs, BlockIq2Xs, BlockIq2S);

/// The integer form in memory: `|w|`, and `w` itself as the signs.
macro_rules! parts_by_int_form {
    ($($block:ty),*) => {$(
        impl Parts for $block {
            #[inline(always)]
            fn prepare(&self, codes: &mut Codes, scales: &mut [i16; 16]) -> f32 {
                self.int_form(&mut codes.0, scales)
            }
            #[inline(always)]
            unsafe fn part(&self, codes: &Codes, k: usize) -> (__m256i, __m256i) {
                // SAFETY: codes is 256 bytes, 32-aligned; 32k + 32 <= 256; the caller's features.
                unsafe {
                    let w = _mm256_load_si256(codes.0.as_ptr().add(32 * k).cast());
                    (_mm256_sign_epi8(w, w), w)
                }
            }
        }
    )*};
}
parts_by_int_form!(BlockIq3Xxs, BlockIq3S, BlockTq1_0);

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn cols<B: Parts, const C: usize>(row: &[B], acts: &[&[BlockQ8K]], out: &mut [f32]) {
    const { assert!(B::MAX_CODE <= 127) };
    let mut acc = [_mm256_setzero_ps(); C];
    let mut codes = Codes([0; QK_K]);
    let mut scales = [0i16; 16];
    for (i, blk) in row.iter().enumerate() {
        if C == 1 {
            super::prefetch_ahead(blk);
        }
        // SAFETY: the caller guarantees every acts[c] has row.len() blocks.
        let a: [&BlockQ8K; C] =
            std::array::from_fn(|c| unsafe { acts.get_unchecked(c).get_unchecked(i) });
        let factor = blk.prepare(&mut codes, &mut scales);
        let mut isum = [_mm256_setzero_si256(); C];
        for k in 0..QK_K / 32 {
            // SAFETY: the kernel's features are enabled.
            let (w, s) = unsafe { blk.part(&codes, k) };
            let sc = _mm256_set_m128i(
                _mm_set1_epi16(scales[2 * k + 1]),
                _mm_set1_epi16(scales[2 * k]),
            );
            for c in 0..C {
                // SAFETY: a[c].qs has 256 bytes; 32k + 32 <= 256.
                let y = unsafe { _mm256_loadu_si256(a[c].qs.as_ptr().add(32 * k).cast()) };
                let p = _mm256_maddubs_epi16(w, _mm256_sign_epi8(y, s));
                isum[c] = _mm256_add_epi32(isum[c], _mm256_madd_epi16(p, sc));
            }
        }
        for c in 0..C {
            let dd = factor * a[c].d;
            acc[c] = _mm256_fmadd_ps(_mm256_set1_ps(dd), _mm256_cvtepi32_ps(isum[c]), acc[c]);
        }
    }
    for c in 0..C {
        out[c] = hsum_ps(acc[c]);
    }
}

/// TQ2_0: `sum(field * y) - sum(y)` per block, fields `0..=2` as the
/// unsigned operand; the eight `vpmaddubsw` results of a block add up in
/// i16 lanes (each pair at most 2·2·127, eight of them at most 4064).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tq2_0<B: std::borrow::Borrow<BlockTq2_0>, const C: usize>(
    row: &[B],
    acts: &[&[BlockQ8K]],
    out: &mut [f32],
) {
    let mut acc = [_mm256_setzero_ps(); C];
    let (three, ones) = (_mm256_set1_epi8(3), _mm256_set1_epi16(1));
    for (i, blk) in row.iter().enumerate() {
        let blk: &BlockTq2_0 = blk.borrow();
        if C == 1 {
            super::prefetch_ahead(blk);
        }
        // SAFETY: the caller guarantees every acts[c] has row.len() blocks.
        let a: [&BlockQ8K; C] =
            std::array::from_fn(|c| unsafe { acts.get_unchecked(c).get_unchecked(i) });
        let mut sum16 = [_mm256_setzero_si256(); C];
        for h in 0..2 {
            // SAFETY: qs has 64 bytes; 32h + 32 <= 64.
            let x = unsafe { _mm256_loadu_si256(blk.qs.as_ptr().add(32 * h).cast()) };
            // Values 128h + 32l + m: bits 2l of byte 32h + m.
            let fields = [
                _mm256_and_si256(x, three),
                _mm256_and_si256(_mm256_srli_epi16::<2>(x), three),
                _mm256_and_si256(_mm256_srli_epi16::<4>(x), three),
                _mm256_and_si256(_mm256_srli_epi16::<6>(x), three),
            ];
            for (l, &w) in fields.iter().enumerate() {
                for c in 0..C {
                    // SAFETY: a[c].qs has 256 bytes; 128h + 32l + 32 <= 256.
                    let y = unsafe {
                        _mm256_loadu_si256(a[c].qs.as_ptr().add(128 * h + 32 * l).cast())
                    };
                    sum16[c] = _mm256_add_epi16(sum16[c], _mm256_maddubs_epi16(w, y));
                }
            }
        }
        for c in 0..C {
            // SAFETY: bsums is 16 i16 = 32 bytes.
            let bsums = unsafe { _mm256_loadu_si256(a[c].bsums.as_ptr().cast()) };
            let isum = _mm256_sub_epi32(
                _mm256_madd_epi16(sum16[c], ones),
                _mm256_madd_epi16(bsums, ones),
            );
            let dd = blk.d.to_f32() * a[c].d;
            acc[c] = _mm256_fmadd_ps(_mm256_set1_ps(dd), _mm256_cvtepi32_ps(isum), acc[c]);
        }
    }
    for c in 0..C {
        out[c] = hsum_ps(acc[c]);
    }
}
