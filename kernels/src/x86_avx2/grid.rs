//! The grid formats (IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, TQ1_0, TQ2_0)
//! x Q8_K on AVX2, dequantize-and-dot: one weight row against up to
//! [`COLS`] activation columns. Each block is unpacked once and reused for
//! every column.
//!
//! The 2-bit i-quants unpack in registers, 32 values at a time: four 8-value
//! grid points by scalar loads (`GridGroups::group`) into one vector, and
//! the ±1 bytes of their four sign bytes (a 2 KB table, [`SIGNS`]) into
//! another, which `vpsignb` applies to the activations. The 3-bit i-quants (two 4-value points a group: the scalar
//! work of the register path cost more than it saved, 0.70-0.72x ggml
//! against 0.78-0.80x, docs/BENCHMARKS.md) go through their integer form
//! ([`GridBlock::int_form`]) in memory.
//!
//! The ternary formats hand over their fields as they are (`code + 1`,
//! 0..=2, [`Fields`]) and subtract the activations' sum once per block:
//! TQ2_0's are a shift and a mask of one load per 32 values, TQ1_0's base-3
//! digits two compares each, the next digit's byte three times the last.
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
    gemv_tq1_0_q8_k_1x4: BlockTq1_0, ternary,
    gemv_tq2_0_q8_k_1x4: BlockTq2_0, ternary,
);

/// ±1 bytes for every sign byte: byte `l` of entry `b` is -1 where bit `l`
/// of `b` is set, else 1 (values `8l..8l + 8` of a group take bit `l`).
static SIGNS: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut b = 0;
    while b < 256 {
        let mut l = 0;
        while l < 8 {
            let byte: u64 = if (b >> l) & 1 == 1 { 0xFF } else { 0x01 };
            t[b] |= byte << (8 * l);
            l += 1;
        }
        b += 1;
    }
    t
};

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
                        _mm256_set_epi64x(
                            SIGNS[g[3].1 as usize] as i64,
                            SIGNS[g[2].1 as usize] as i64,
                            SIGNS[g[1].1 as usize] as i64,
                            SIGNS[g[0].1 as usize] as i64,
                        ),
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
parts_by_int_form!(BlockIq3Xxs, BlockIq3S);

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn cols<B: Parts, const C: usize>(row: &[B], acts: &[&[BlockQ8K]], out: &mut [f32]) {
    const { assert!(B::MAX_CODE <= 127) };
    let mut acc = [_mm256_setzero_ps(); C];
    let mut codes = Codes([0; QK_K]);
    let mut scales = [0i16; 16];
    let spread = _mm256_set_epi64x(
        0x0302_0302_0302_0302,
        0x0302_0302_0302_0302,
        0x0100_0100_0100_0100,
        0x0100_0100_0100_0100,
    );
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
            // Scales 2k and 2k + 1 over the lower and the upper 16 values.
            let pair =
                (scales[2 * k] as u16 as u32 | (scales[2 * k + 1] as u16 as u32) << 16) as i32;
            let sc = _mm256_shuffle_epi8(_mm256_set1_epi32(pair), spread);
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

/// The ternary formats' fields (`code + 1`, 0..=2) in the values' order:
/// vector `k` holds values `32k..32k + 32`.
trait Fields {
    /// The block's `d` and its fields.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    unsafe fn fields(&self) -> (f32, [__m256i; 8]);
}

impl Fields for BlockTq2_0 {
    /// Values `128h + 32l + m`: bits `2l` of byte `32h + m`, a shift and a mask.
    #[inline(always)]
    unsafe fn fields(&self) -> (f32, [__m256i; 8]) {
        // SAFETY: qs has 64 bytes; the caller's features.
        unsafe {
            let three = _mm256_set1_epi8(3);
            let x0 = _mm256_loadu_si256(self.qs.as_ptr().cast());
            let x1 = _mm256_loadu_si256(self.qs.as_ptr().add(32).cast());
            let f = [
                _mm256_and_si256(x0, three),
                _mm256_and_si256(_mm256_srli_epi16::<2>(x0), three),
                _mm256_and_si256(_mm256_srli_epi16::<4>(x0), three),
                _mm256_and_si256(_mm256_srli_epi16::<6>(x0), three),
                _mm256_and_si256(x1, three),
                _mm256_and_si256(_mm256_srli_epi16::<2>(x1), three),
                _mm256_and_si256(_mm256_srli_epi16::<4>(x1), three),
                _mm256_and_si256(_mm256_srli_epi16::<6>(x1), three),
            ];
            (self.d.to_f32(), f)
        }
    }
}

/// Three times each byte (mod 256).
#[inline(always)]
unsafe fn times3(s: __m256i) -> __m256i {
    // SAFETY: the caller's features.
    unsafe { _mm256_add_epi8(s, _mm256_add_epi8(s, s)) }
}

/// TQ1_0's digit from a byte's `s` ([`Fields::fields`] for TQ1_0): how many
/// of `s > -43`, `s > 42` hold.
#[inline(always)]
unsafe fn tq1_digit(s: __m256i) -> __m256i {
    // SAFETY: the caller's features.
    unsafe {
        let lo = _mm256_cmpgt_epi8(s, _mm256_set1_epi8(-43));
        let hi = _mm256_cmpgt_epi8(s, _mm256_set1_epi8(42));
        _mm256_abs_epi8(_mm256_add_epi8(lo, hi))
    }
}

impl Fields for BlockTq1_0 {
    /// Digit `n` of a byte `q` is 0, 1 or 2 as `x = q * 3^n mod 256` is below
    /// 86, below 171, or not ([`crate::formats::tq1_0`]'s rule, `(3x) >> 8`).
    /// Kept as `s = x ^ 0x80`, the tests are signed compares (`s > -43`,
    /// `s > 42`), and the next digit's `s` is `3s` (`3 * 128 = 128 mod 256`:
    /// any odd multiplier keeps the bias), two byte adds.
    #[inline(always)]
    unsafe fn fields(&self) -> (f32, [__m256i; 8]) {
        // SAFETY: qs has 48 bytes, qh 4; the caller's features.
        unsafe {
            let bias = _mm256_set1_epi8(-128);
            // Values 32n + m: digit n of qs[m].
            let mut s = _mm256_xor_si256(_mm256_loadu_si256(self.qs.as_ptr().cast()), bias);
            let mut f = [_mm256_setzero_si256(); 8];
            f[0] = tq1_digit(s);
            for f in &mut f[1..5] {
                s = times3(s);
                *f = tq1_digit(s);
            }
            // Values 160 + 16n + m: digit n of qs[32 + m], two digits a
            // vector: the lanes times 1 and 3, then 9 and 27, then 81.
            let q = _mm256_broadcastsi128_si256(_mm_loadu_si128(self.qs.as_ptr().add(32).cast()));
            let t = _mm256_xor_si256(q, bias);
            let t = _mm256_blend_epi32::<0xF0>(t, times3(t));
            f[5] = tq1_digit(t);
            let t = times3(times3(t));
            f[6] = tq1_digit(t);
            let t = times3(times3(t));
            // Values 240 + 4n + j: digit n of qh[j] (n < 4), dword n times 3^n,
            // in the upper lane beside digit 4 of qs[32..48].
            let h = _mm256_xor_si256(_mm256_set1_epi32(i32::from_le_bytes(self.qh)), bias);
            let h3 = times3(h);
            let h9 = times3(h3);
            let h = _mm256_blend_epi32::<0b0010>(h, h3);
            let h = _mm256_blend_epi32::<0b0100>(h, h9);
            let h = _mm256_blend_epi32::<0b1000>(h, times3(h9));
            f[7] = tq1_digit(_mm256_permute2x128_si256::<0x20>(t, h));
            (self.d.to_f32(), f)
        }
    }
}

/// The ternary formats: `sum(field * y) - sum(y)` per block, fields `0..=2`
/// as the unsigned operand; the eight `vpmaddubsw` results of a block add up
/// in i16 lanes (each pair at most 2·2·127, eight of them at most 4064).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn ternary<B: Fields, const C: usize>(row: &[B], acts: &[&[BlockQ8K]], out: &mut [f32]) {
    let mut acc = [_mm256_setzero_ps(); C];
    let ones = _mm256_set1_epi16(1);
    for (i, blk) in row.iter().enumerate() {
        if C == 1 {
            super::prefetch_ahead(blk);
        }
        // SAFETY: the caller guarantees every acts[c] has row.len() blocks.
        let a: [&BlockQ8K; C] =
            std::array::from_fn(|c| unsafe { acts.get_unchecked(c).get_unchecked(i) });
        let mut sum16 = [_mm256_setzero_si256(); C];
        // SAFETY: the kernel's features are enabled.
        let (d, fields) = unsafe { blk.fields() };
        for (k, &w) in fields.iter().enumerate() {
            for c in 0..C {
                // SAFETY: a[c].qs has 256 bytes; 32k + 32 <= 256.
                let y = unsafe { _mm256_loadu_si256(a[c].qs.as_ptr().add(32 * k).cast()) };
                sum16[c] = _mm256_add_epi16(sum16[c], _mm256_maddubs_epi16(w, y));
            }
        }
        for c in 0..C {
            // SAFETY: bsums is 16 i16 = 32 bytes.
            let bsums = unsafe { _mm256_loadu_si256(a[c].bsums.as_ptr().cast()) };
            let isum = _mm256_sub_epi32(
                _mm256_madd_epi16(sum16[c], ones),
                _mm256_madd_epi16(bsums, ones),
            );
            let dd = d * a[c].d;
            acc[c] = _mm256_fmadd_ps(_mm256_set1_ps(dd), _mm256_cvtepi32_ps(isum), acc[c]);
        }
    }
    for c in 0..C {
        out[c] = hsum_ps(acc[c]);
    }
}
