//! The grid formats (IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, TQ1_0, TQ2_0)
//! x Q8_K with AVX-512 VNNI, dequantize-and-dot: one weight row against up
//! to [`COLS`] activation columns. Each block is put in its integer form
//! once ([`GridBlock::int_form`]: codes, a small integer scale per 16
//! values, one float factor) and reused for every column.
//!
//! The codes come straight into vectors, 64 at a time: the grid points by
//! one gather (eight 8-value points, or sixteen 4-value ones) with the
//! indices widened in vector registers, the signs as a 64-bit mask
//! (`vpsubb` under it from zero), the 7-bit sign indices of IQ2_XXS,
//! IQ2_XS and IQ3_XXS completed to 8 bits by their parity in vector lanes
//! (ggml's `ksigns_iq2xs[i]` is `i | parity(i) << 7`). The ternary formats
//! unpack through the scalar integer form.
//!
//! Per 64 values: the codes `+ 128` (`^ 0x80`) as the unsigned operand of
//! `vpdpbusd` against the signed activations, `vpmulld` by the scales of
//! their 16-value groups; the excess `128 * sum(scale * sum16(y))` comes off
//! once per block from the activations' 16-value sums. Exact integer sums,
//! one float scaling per block and column.

use crate::formats::grids::{IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID, IQ3S_GRID, IQ3XXS_GRID};
use crate::formats::{
    BlockIq2S, BlockIq2Xs, BlockIq2Xxs, BlockIq3S, BlockIq3Xxs, BlockQ8K, BlockTq1_0, BlockTq2_0,
    GridBlock, QK_K,
};
use std::arch::x86_64::*;

/// Weight rows per call.
pub const ROWS: usize = 1;
/// Activation columns per call.
pub const COLS: usize = 8;

macro_rules! grid_kernels {
    ($($name:ident: $block:ty),* $(,)?) => {$(
        row_kernel!(
            $name,
            "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
            $block,
            BlockQ8K,
            cols<$block>,
            [1, 2, 3, 4, 5, 6, 7, 8]
        );
    )*};
}
grid_kernels!(
    gemv_iq2_xxs_q8_k_1x8: BlockIq2Xxs,
    gemv_iq2_xs_q8_k_1x8: BlockIq2Xs,
    gemv_iq2_s_q8_k_1x8: BlockIq2S,
    gemv_iq3_xxs_q8_k_1x8: BlockIq3Xxs,
    gemv_iq3_s_q8_k_1x8: BlockIq3S,
    gemv_tq1_0_q8_k_1x8: BlockTq1_0,
    gemv_tq2_0_q8_k_1x8: BlockTq2_0,
);

#[repr(C, align(64))]
struct Codes([i8; QK_K]);

/// A grid format's block straight into four vectors of 64 codes.
trait Unpack: GridBlock {
    /// Writes the codes into `w`; returns the factor and the 16 scales (as
    /// [`GridBlock::int_form`]).
    ///
    /// # Safety
    /// The CPU must have the kernels' features.
    #[inline(always)]
    unsafe fn unpack(&self, w: &mut [__m512i; 4]) -> (f32, __m256i) {
        let mut codes = Codes([0; QK_K]);
        let mut scales = [0i16; 16];
        let factor = self.int_form(&mut codes.0, &mut scales);
        for (p, w) in w.iter_mut().enumerate() {
            // SAFETY: codes is 256 bytes, 64-aligned; 64p + 64 <= 256; the features are the caller's.
            *w = unsafe { _mm512_load_si512(codes.0.as_ptr().add(64 * p).cast()) };
        }
        // SAFETY: scales is 16 i16 = 32 bytes; the features are the caller's.
        (factor, unsafe {
            _mm256_loadu_si256(scales.as_ptr().cast())
        })
    }
}
impl Unpack for BlockTq1_0 {}

impl Unpack for BlockTq2_0 {
    #[inline(always)]
    unsafe fn unpack(&self, w: &mut [__m512i; 4]) -> (f32, __m256i) {
        // SAFETY (the block): the features are the caller's; qs has 64 bytes.
        unsafe {
            let three = _mm256_set1_epi8(3);
            for h in 0..2 {
                let x = _mm256_loadu_si256(self.qs.as_ptr().add(32 * h).cast());
                // Values 128h + 32l + m: bits 2l of byte m.
                let l = [
                    _mm256_and_si256(x, three),
                    _mm256_and_si256(_mm256_srli_epi16::<2>(x), three),
                    _mm256_and_si256(_mm256_srli_epi16::<4>(x), three),
                    _mm256_and_si256(_mm256_srli_epi16::<6>(x), three),
                ];
                for j in 0..2 {
                    let v = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(l[2 * j]), l[2 * j + 1]);
                    w[2 * h + j] = _mm512_sub_epi8(v, _mm512_set1_epi8(1));
                }
            }
            (self.d.to_f32(), _mm256_set1_epi16(1))
        }
    }
}

/// `2 * s + 1` for 16 nibbles `s` in u8 lanes, as i16 lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
fn odd(s: __m128i) -> __m256i {
    _mm256_or_si256(
        _mm256_slli_epi16::<1>(_mm256_cvtepu8_epi16(s)),
        _mm256_set1_epi16(1),
    )
}

/// The 16 scales from 8 bytes of two 4-bit scales (`2 * s + 1`), low nibble first.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
fn nibble_scales(b: &[u8; 8]) -> __m256i {
    // SAFETY: b is 8 bytes.
    let v = unsafe { _mm_loadl_epi64(b.as_ptr().cast()) };
    let m = _mm_set1_epi8(0x0F);
    odd(_mm_unpacklo_epi8(
        _mm_and_si128(v, m),
        _mm_and_si128(_mm_srli_epi16::<4>(v), m),
    ))
}

/// The 16 scales from one 4-bit scale per 32 values (`2 * s + 1`, each twice).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
fn scales32(s: [u8; 8]) -> __m256i {
    let v = _mm_cvtsi64_si128(i64::from_le_bytes(s));
    odd(_mm_unpacklo_epi8(v, v))
}

/// Eight 7-bit sign indices (u16 lanes) completed to ggml's sign bytes
/// (`i | parity(i) << 7`), as a 64-bit mask: bit `8l + j` negates value `j`
/// of group `l`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
fn sign_mask7(s: __m128i) -> u64 {
    let mut p = _mm_xor_si128(s, _mm_srli_epi16::<4>(s));
    p = _mm_xor_si128(p, _mm_srli_epi16::<2>(p));
    p = _mm_xor_si128(p, _mm_srli_epi16::<1>(p));
    let bytes = _mm_or_si128(s, _mm_slli_epi16::<7>(_mm_and_si128(p, _mm_set1_epi16(1))));
    _mm_cvtsi128_si64(_mm_packus_epi16(bytes, bytes)) as u64
}

/// `g` with the values whose bit is set in `signs` negated.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn negate(g: __m512i, signs: u64) -> __m512i {
    _mm512_mask_sub_epi8(g, signs, _mm512_setzero_si512(), g)
}

/// The seven-bit sign indices of the four groups of a u32 `aux`
/// (IQ2_XXS, IQ3_XXS: bits `7l..7l + 7`) for two sub-blocks, as u16 lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
fn signs_of_aux(a0: u32, a1: u32) -> __m128i {
    let a = _mm_set_epi32(a1 as i32, a0 as i32, a1 as i32, a0 as i32);
    let lo = _mm_srlv_epi32(a, _mm_set_epi32(7, 7, 0, 0));
    let hi = _mm_srlv_epi32(a, _mm_set_epi32(21, 21, 14, 14));
    // lo = [a0 >> 0, a1 >> 0, a0 >> 7, a1 >> 7], hi = [a0 >> 14, a1 >> 14, a0 >> 21, a1 >> 21]
    let m = _mm_set1_epi32(127);
    let packed = _mm_packus_epi32(_mm_and_si128(lo, m), _mm_and_si128(hi, m));
    // u16 lanes [a0.0, a1.0, a0.1, a1.1, a0.2, a1.2, a0.3, a1.3] -> [a0.0..a0.3, a1.0..a1.3]
    _mm_shuffle_epi8(
        packed,
        _mm_set_epi8(15, 14, 11, 10, 7, 6, 3, 2, 13, 12, 9, 8, 5, 4, 1, 0),
    )
}

impl Unpack for BlockIq2Xxs {
    #[inline(always)]
    unsafe fn unpack(&self, w: &mut [__m512i; 4]) -> (f32, __m256i) {
        let q = |i: usize| self.qs[2 * i] as u32 | (self.qs[2 * i + 1] as u32) << 16;
        let mut s = [0u8; 8];
        for p in 0..4 {
            let (i0, a0, i1, a1) = (q(4 * p), q(4 * p + 1), q(4 * p + 2), q(4 * p + 3));
            // SAFETY: the features are the caller's; every index is a byte (< 256 entries).
            unsafe {
                let idx = _mm256_cvtepu8_epi32(_mm_set_epi32(0, 0, i1 as i32, i0 as i32));
                let g = _mm512_i32gather_epi64::<8>(idx, IQ2XXS_GRID.as_ptr().cast());
                w[p] = negate(g, sign_mask7(signs_of_aux(a0, a1)));
            }
            (s[2 * p], s[2 * p + 1]) = ((a0 >> 28) as u8, (a1 >> 28) as u8);
        }
        // SAFETY: the features are the caller's.
        (self.d.to_f32() * 0.125, unsafe { scales32(s) })
    }
}

impl Unpack for BlockIq2Xs {
    #[inline(always)]
    unsafe fn unpack(&self, w: &mut [__m512i; 4]) -> (f32, __m256i) {
        for p in 0..4 {
            // SAFETY: qs has 32 u16; 8p + 8 <= 32; the features are the caller's;
            // every index is 9 bits (< 512 entries).
            unsafe {
                let q = _mm_loadu_si128(self.qs.as_ptr().add(8 * p).cast());
                let idx = _mm256_cvtepu16_epi32(_mm_and_si128(q, _mm_set1_epi16(511)));
                let g = _mm512_i32gather_epi64::<8>(idx, IQ2XS_GRID.as_ptr().cast());
                w[p] = negate(g, sign_mask7(_mm_srli_epi16::<9>(q)));
            }
        }
        // SAFETY: the features are the caller's.
        (self.d.to_f32() * 0.125, unsafe {
            nibble_scales(&self.scales)
        })
    }
}

impl Unpack for BlockIq2S {
    #[inline(always)]
    unsafe fn unpack(&self, w: &mut [__m512i; 4]) -> (f32, __m256i) {
        let signs = |p: usize| u64::from_le_bytes(self.qs[32 + 8 * p..][..8].try_into().unwrap());
        for p in 0..4 {
            let (h0, h1) = (self.qh[2 * p] as i32, self.qh[2 * p + 1] as i32);
            // SAFETY: qs has 64 bytes; 8p + 8 <= 32; the features are the
            // caller's; every index is 10 bits (< 1024 entries).
            unsafe {
                let lo = _mm256_cvtepu8_epi32(_mm_loadl_epi64(self.qs.as_ptr().add(8 * p).cast()));
                let h = _mm256_set_epi32(h1, h1, h1, h1, h0, h0, h0, h0);
                let h = _mm256_srlv_epi32(h, _mm256_set_epi32(6, 4, 2, 0, 6, 4, 2, 0));
                let idx = _mm256_or_si256(
                    lo,
                    _mm256_slli_epi32::<8>(_mm256_and_si256(h, _mm256_set1_epi32(3))),
                );
                let g = _mm512_i32gather_epi64::<8>(idx, IQ2S_GRID.as_ptr().cast());
                w[p] = negate(g, signs(p));
            }
        }
        // SAFETY: the features are the caller's.
        (self.d.to_f32() * 0.125, unsafe {
            nibble_scales(&self.scales)
        })
    }
}

impl Unpack for BlockIq3Xxs {
    #[inline(always)]
    unsafe fn unpack(&self, w: &mut [__m512i; 4]) -> (f32, __m256i) {
        let aux = |i: usize| u32::from_le_bytes(self.qs[64 + 4 * i..][..4].try_into().unwrap());
        let mut s = [0u8; 8];
        for p in 0..4 {
            let (a0, a1) = (aux(2 * p), aux(2 * p + 1));
            // SAFETY: qs has 96 bytes; 16p + 16 <= 64; the features are the
            // caller's; every index is a byte (< 256 entries).
            unsafe {
                let idx =
                    _mm512_cvtepu8_epi32(_mm_loadu_si128(self.qs.as_ptr().add(16 * p).cast()));
                let g = _mm512_i32gather_epi32::<4>(idx, IQ3XXS_GRID.as_ptr().cast());
                w[p] = negate(g, sign_mask7(signs_of_aux(a0, a1)));
            }
            (s[2 * p], s[2 * p + 1]) = ((a0 >> 28) as u8, (a1 >> 28) as u8);
        }
        // SAFETY: the features are the caller's.
        (self.d.to_f32() * 0.25, unsafe { scales32(s) })
    }
}

impl Unpack for BlockIq3S {
    #[inline(always)]
    unsafe fn unpack(&self, w: &mut [__m512i; 4]) -> (f32, __m256i) {
        let signs = |p: usize| u64::from_le_bytes(self.signs[8 * p..][..8].try_into().unwrap());
        for p in 0..4 {
            let h = self.qh[2 * p] as i32 | (self.qh[2 * p + 1] as i32) << 8;
            // SAFETY: qs has 64 bytes; 16p + 16 <= 64; the features are the
            // caller's; every index is 9 bits (< 512 entries).
            unsafe {
                let lo = _mm512_cvtepu8_epi32(_mm_loadu_si128(self.qs.as_ptr().add(16 * p).cast()));
                let hb = _mm512_srlv_epi32(
                    _mm512_set1_epi32(h),
                    _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                );
                let idx = _mm512_or_si512(
                    lo,
                    _mm512_slli_epi32::<8>(_mm512_and_si512(hb, _mm512_set1_epi32(1))),
                );
                let g = _mm512_i32gather_epi32::<4>(idx, IQ3S_GRID.as_ptr().cast());
                w[p] = negate(g, signs(p));
            }
        }
        let s: [u8; 8] = std::array::from_fn(|ib| (self.scales[ib / 2] >> (4 * (ib % 2))) & 0x0F);
        // SAFETY: the features are the caller's.
        (self.d.to_f32(), unsafe { scales32(s) })
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn cols<B: Unpack, const C: usize>(row: &[B], acts: &[&[BlockQ8K]], out: &mut [f32]) {
    let mut acc = [_mm512_setzero_ps(); C];
    for (i, blk) in row.iter().enumerate() {
        if C == 1 {
            crate::x86_avx2::prefetch_ahead(blk);
        }
        // SAFETY: the caller guarantees every acts[c] has row.len() blocks.
        let a: [&BlockQ8K; C] =
            std::array::from_fn(|c| unsafe { acts.get_unchecked(c).get_unchecked(i) });
        let mut w = [_mm512_setzero_si512(); 4];
        // SAFETY: the kernel's features are enabled.
        let (factor, s16) = unsafe { blk.unpack(&mut w) };
        let s32 = _mm512_cvtepi16_epi32(s16);
        let mut sc = [_mm512_setzero_si512(); 4];
        for p in 0..4 {
            w[p] = _mm512_xor_si512(w[p], _mm512_set1_epi8(-128));
            // Lane l (values 64p + 4l ..) takes the scale of 16-value group 4p + l/4.
            let idx = _mm512_add_epi32(
                _mm512_set1_epi32(4 * p as i32),
                _mm512_srli_epi32::<2>(_mm512_set_epi32(
                    15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0,
                )),
            );
            sc[p] = _mm512_permutexvar_epi32(idx, s32);
        }
        for c in 0..C {
            let mut isum = _mm512_setzero_si512();
            for p in 0..4 {
                // SAFETY: a[c].qs has 256 bytes; 64p + 64 <= 256.
                let y = unsafe { _mm512_loadu_si512(a[c].qs.as_ptr().add(64 * p).cast()) };
                let dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[p], y);
                isum = _mm512_add_epi32(isum, _mm512_mullo_epi32(dot, sc[p]));
            }
            // SAFETY: bsums is 16 i16 = 32 bytes.
            let bsums = unsafe { _mm256_loadu_si256(a[c].bsums.as_ptr().cast()) };
            let excess = _mm256_slli_epi32::<7>(_mm256_madd_epi16(bsums, s16));
            let isum = _mm512_sub_epi32(isum, _mm512_zextsi256_si512(excess));
            let dd = factor * a[c].d;
            acc[c] = _mm512_fmadd_ps(_mm512_set1_ps(dd), _mm512_cvtepi32_ps(isum), acc[c]);
        }
    }
    for c in 0..C {
        out[c] = _mm512_reduce_add_ps(acc[c]);
    }
}
