//! Q2_K and Q3_K x Q8_K on NEON (and NEON + dotprod): one weight row against
//! up to [`COLS`] activation columns. As on x86 (see `x86_avx2::q2_k`): one
//! shift-and-mask of 32 `qs` bytes gives the codes of 32 contiguous values,
//! 16 of one sub-block and 16 of the next; Q3_K's codes are taken as
//! `q + 4` (0..8) and centred afterwards with the activation block sums.

use super::{bsums_dot, dot16, f16_to_f32, f16x4_to_f32, lane_sums4, sdot16, widen_scales};
use crate::formats::{scale_words_q3_k, BlockQ2K, BlockQ3K, BlockQ8K};
use std::arch::aarch64::*;

/// Weight rows per call.
pub const ROWS: usize = 1;
/// Activation columns per call.
pub const COLS: usize = 4;

/// The 2-bit codes of a block, per (half, quarter): `[hs][half]` holds the
/// 16 values `32 hs + 16 half ..` (sub-block `2 hs + half`).
#[inline]
#[target_feature(enable = "neon")]
#[allow(clippy::needless_range_loop)] // h and half address qs and out alike
fn low_codes(qs: &[u8; 64]) -> [[uint8x16_t; 2]; 8] {
    let m3 = vdupq_n_u8(3);
    let mut out = [[vdupq_n_u8(0); 2]; 8];
    for h in 0..2 {
        for half in 0..2 {
            // SAFETY: qs has 64 bytes; 32h + 16 half + 16 <= 64.
            let v = unsafe { vld1q_u8(qs.as_ptr().add(32 * h + 16 * half)) };
            out[4 * h][half] = vandq_u8(v, m3);
            out[4 * h + 1][half] = vandq_u8(vshrq_n_u8::<2>(v), m3);
            out[4 * h + 2][half] = vandq_u8(vshrq_n_u8::<4>(v), m3);
            out[4 * h + 3][half] = vshrq_n_u8::<6>(v);
        }
    }
    out
}

/// A Q2_K block's codes (0..4), laid out as [`low_codes`].
#[inline]
#[target_feature(enable = "neon")]
pub(crate) fn q2_codes(b: &BlockQ2K) -> [[int8x16_t; 2]; 8] {
    low_codes(&b.qs).map(|q| q.map(|v| vreinterpretq_s8_u8(v)))
}

/// A Q2_K block's codes times their sub-block's 4-bit scale (at most
/// `3 * 15 = 45`: the product fits a byte), laid out as [`low_codes`]. The
/// 16 sub-blocks' dot products then add up in one accumulator: no sums per
/// sub-block to start at zero, gather and scale.
#[inline]
#[target_feature(enable = "neon")]
pub(crate) fn q2_scaled_codes(b: &BlockQ2K) -> [[int8x16_t; 2]; 8] {
    // SAFETY: scales has 16 bytes.
    let sc = vandq_u8(unsafe { vld1q_u8(b.scales.as_ptr()) }, vdupq_n_u8(0x0F));
    scale_codes(q2_codes(b), vreinterpretq_s8_u8(sc))
}

/// `codes` (laid out as [`low_codes`]) times their sub-block's byte of `sc`,
/// which the caller guarantees fits an `i8`.
#[inline]
#[target_feature(enable = "neon")]
fn scale_codes(codes: [[int8x16_t; 2]; 8], sc: int8x16_t) -> [[int8x16_t; 2]; 8] {
    let mut out = codes;
    // Sub-block 2 hs + half's scale by `dup` of its byte (a const lane).
    macro_rules! scale {
        ($($hs:literal $half:literal $lane:literal),*) => {$(
            out[$hs][$half] = vmulq_s8(codes[$hs][$half], vdupq_laneq_s8::<$lane>(sc));
        )*};
    }
    scale!(0 0 0, 0 1 1, 1 0 2, 1 1 3, 2 0 4, 2 1 5, 3 0 6, 3 1 7,
           4 0 8, 4 1 9, 5 0 10, 5 1 11, 6 0 12, 6 1 13, 7 0 14, 7 1 15);
    out
}

/// A Q3_K block's codes `q` (-4..4) times minus their sub-block's 6-bit
/// scale `s` (-32..32): `-q * s` is within -128..=124 (`q * s` would reach
/// 128), laid out as [`low_codes`].
#[inline]
#[target_feature(enable = "neon")]
pub(crate) fn q3_scaled_codes(b: &BlockQ3K, sc: int8x16_t) -> [[int8x16_t; 2]; 8] {
    scale_codes(q3_codes_as::<true>(b), vnegq_s8(sc))
}

/// A Q3_K block's codes as `q + 4` (0..8), laid out as [`low_codes`].
#[inline]
#[target_feature(enable = "neon")]
pub(crate) fn q3_codes(b: &BlockQ3K) -> [[int8x16_t; 2]; 8] {
    q3_codes_as::<false>(b)
}

/// A Q3_K block's codes, laid out as [`low_codes`]: `q` (-4..4) where
/// `SIGNED`, else `q + 4` (0..8).
#[inline]
#[target_feature(enable = "neon")]
fn q3_codes_as<const SIGNED: bool>(b: &BlockQ3K) -> [[int8x16_t; 2]; 8] {
    // SAFETY: hmask has 32 bytes.
    let hm = unsafe {
        [
            vld1q_u8(b.hmask.as_ptr()),
            vld1q_u8(b.hmask.as_ptr().add(16)),
        ]
    };
    let four = vdupq_n_u8(4);
    let mut codes = [[vdupq_n_s8(0); 2]; 8];
    for (hs, low) in low_codes(&b.qs).into_iter().enumerate() {
        // For value 32 hs + l, bit hs of hmask[l] set: q = low, else
        // q = low - 4.
        let bit = vdupq_n_u8(1 << hs);
        for half in 0..2 {
            let set = vtstq_u8(hm[half], bit);
            let code = if SIGNED {
                vsubq_u8(low[half], vbicq_u8(four, set))
            } else {
                vaddq_u8(low[half], vandq_u8(set, four))
            };
            codes[hs][half] = vreinterpretq_s8_u8(code);
        }
    }
    codes
}

/// The kernels for one feature set (`$feat`) and its 16-byte dot product (`$dot`).
macro_rules! kernels {
    ($feat:literal, $dot:ident, scaled_codes: $scaled:literal) => {
        /// `isum[c]` = the four lanes whose sum is `sum(scale[s] * sum(code * y))`
        /// over the 16 sub-blocks of column `c`: each sub-block's dot product,
        /// four sub-blocks' sums gathered into the lanes of one vector by
        /// pairwise adds, times their four scales (`sc[t]`: sub-blocks `4t ..`).
        ///
        /// # Safety
        /// The features of `$feat`: it is inlined into the kernels that have
        /// them (as a `#[target_feature]` function it was called, not
        /// inlined, in the baseline build and for two or more columns).
        #[inline(always)]
        unsafe fn block_dot<const C: usize>(
            codes: &[[int8x16_t; 2]; 8],
            sc: &[int32x4_t; 4],
            a: &[&BlockQ8K; C],
        ) -> [int32x4_t; C] {
            // (A loop, not `array::from_fn`: its closure was not inlined.)
            // SAFETY (the vector operations): the caller's features.
            let mut out = unsafe { [vdupq_n_s32(0); C] };
            for (c, isum) in out.iter_mut().enumerate() {
                // SAFETY: a[c].qs has 256 bytes; 16s + 16 <= 256.
                let y = |s: usize| unsafe { vld1q_s8(a[c].qs.as_ptr().add(16 * s)) };
                // SAFETY: the caller's features.
                let dot = |s: usize| unsafe { $dot(vdupq_n_s32(0), codes[s / 2][s % 2], y(s)) };
                let four = |t: usize| lane_sums4([dot(4 * t), dot(4 * t + 1), dot(4 * t + 2), dot(4 * t + 3)]);
                *isum = vmulq_s32(four(0), sc[0]);
                for t in 1..4 {
                    *isum = vmlaq_s32(*isum, four(t), sc[t]);
                }
            }
            out
        }

        /// `isum[c]` = the four lanes whose sum is `sum(code * y)` over the
        /// block of column `c`, for codes that carry their scales
        /// ([`q2_scaled_codes`]): four accumulators, one dot product per 16
        /// values.
        ///
        /// # Safety
        /// As [`block_dot`].
        #[inline(always)]
        unsafe fn scaled_dot<const C: usize>(codes: &[[int8x16_t; 2]; 8], a: &[&BlockQ8K; C]) -> [int32x4_t; C] {
            // SAFETY (the vector operations): the caller's features.
            let mut out = unsafe { [vdupq_n_s32(0); C] };
            for (c, isum) in out.iter_mut().enumerate() {
                // Four accumulators (sub-blocks 4t + u into u), so that no
                // chain of dependent multiply-adds is longer than four.
                // SAFETY: as above.
                let mut s = unsafe { [vdupq_n_s32(0); 4] };
                for (hs, pair) in codes.iter().enumerate() {
                    for (half, w) in pair.iter().enumerate() {
                        let u = (2 * hs + half) % 4;
                        // SAFETY: a[c].qs has 256 bytes; 32hs + 16half + 16 <= 256; the caller's features.
                        s[u] = unsafe { $dot(s[u], *w, vld1q_s8(a[c].qs.as_ptr().add(32 * hs + 16 * half))) };
                    }
                }
                // SAFETY: the caller's features.
                *isum = unsafe { vaddq_s32(vaddq_s32(s[0], s[1]), vaddq_s32(s[2], s[3])) };
            }
            out
        }

        /// Q2_K: value `d * scale * q - dmin * min` (4-bit scale and min per
        /// sub-block of 16); the mins term from the activations' 16-value
        /// sums, in lanes, and both float steps per block. With dotprod the
        /// codes carry their scales ([`q2_scaled_codes`]); the baseline
        /// build keeps a sum per sub-block, gathered and scaled in lanes
        /// (llvm-mca priced the scaled codes there 1.3-2x slower: its
        /// `smull`/`sadalp` pairs then form long chains on one pipe).
        #[inline]
        #[target_feature(enable = $feat)]
        pub(crate) unsafe fn q2_cols<const C: usize, const PF: bool>(row: &[BlockQ2K], acts: &[&[BlockQ8K]], out: &mut [f32]) {
            let mut acc = [vdupq_n_f32(0.0); C];
            for (i, b) in row.iter().enumerate() {
                mca!(begin ["q2_k.cols ", $feat], c = C, pf = PF as u32, w = 256);
                if PF {
                    crate::aarch64_neon::prefetch_ahead(b);
                }
                // SAFETY: the caller guarantees every acts[c] has row.len() blocks.
                let a: [&BlockQ8K; C] =
                    std::array::from_fn(|c| unsafe { acts.get_unchecked(c).get_unchecked(i) });
                // SAFETY: scales has 16 bytes.
                let packed = unsafe { vld1q_u8(b.scales.as_ptr()) };
                let (mins, _) = widen_scales(vreinterpretq_s8_u8(vshrq_n_u8::<4>(packed)));
                // SAFETY: the features of $feat are enabled here.
                let isum = unsafe {
                    if $scaled {
                        scaled_dot(&q2_scaled_codes(b), &a)
                    } else {
                        let (_, sc) = widen_scales(vreinterpretq_s8_u8(vandq_u8(packed, vdupq_n_u8(0x0F))));
                        block_dot(&q2_codes(b), &sc, &a)
                    }
                };
                let dd = f16x4_to_f32(b.d.to_bits() as u64 | (b.dmin.to_bits() as u64) << 16);
                for c in 0..C {
                    let msum = bsums_dot(&a[c].bsums, mins);
                    let dda = vmulq_n_f32(dd, a[c].d);
                    acc[c] = vfmaq_laneq_f32::<0>(acc[c], vcvtq_f32_s32(isum[c]), dda);
                    acc[c] = vfmsq_laneq_f32::<1>(acc[c], vcvtq_f32_s32(msum), dda);
                }
                mca!(end);
            }
            for c in 0..C {
                out[c] = vaddvq_f32(acc[c]);
            }
        }

        /// Q3_K: codes `q + 4` (0..8) and 6-bit signed scales; the offset
        /// of 4 taken off with the activations' 16-value sums.
        #[inline]
        #[target_feature(enable = $feat)]
        pub(crate) unsafe fn q3_cols<const C: usize, const PF: bool>(row: &[BlockQ3K], acts: &[&[BlockQ8K]], out: &mut [f32]) {
            let mut acc = [vdupq_n_f32(0.0); C];
            for (i, b) in row.iter().enumerate() {
                mca!(begin ["q3_k.cols ", $feat], c = C, pf = PF as u32, w = 256);
                if PF {
                    crate::aarch64_neon::prefetch_ahead(b);
                }
                // SAFETY: the caller guarantees every acts[c] has row.len() blocks.
                let a: [&BlockQ8K; C] =
                    std::array::from_fn(|c| unsafe { acts.get_unchecked(c).get_unchecked(i) });
                // The scales decode in scalar registers (the integer pipes),
                // whole words moved into one vector, then centred.
                let w = scale_words_q3_k(&b.scales);
                let words = vcombine_u32(
                    vcreate_u32(w[0] as u64 | (w[1] as u64) << 32),
                    vcreate_u32(w[2] as u64 | (w[3] as u64) << 32),
                );
                let sc8 = vsubq_s8(vreinterpretq_s8_u32(words), vdupq_n_s8(32));
                let d = f16_to_f32(b.d.to_bits());
                if $scaled {
                    // Minus the exact sums ([`q3_scaled_codes`]), taken off.
                    // SAFETY: the features of $feat are enabled here.
                    let nsum = unsafe { scaled_dot(&q3_scaled_codes(b, sc8), &a) };
                    for c in 0..C {
                        acc[c] = vfmsq_n_f32(acc[c], vcvtq_f32_s32(nsum[c]), d * a[c].d);
                    }
                } else {
                    let (sc16, sc) = widen_scales(sc8);
                    // SAFETY: the features of $feat are enabled here.
                    let isum = unsafe { block_dot(&q3_codes(b), &sc, &a) };
                    for c in 0..C {
                        let corr = bsums_dot(&a[c].bsums, sc16);
                        let exact = vsubq_s32(isum[c], vshlq_n_s32::<2>(corr));
                        acc[c] = vfmaq_n_f32(acc[c], vcvtq_f32_s32(exact), d * a[c].d);
                    }
                }
                mca!(end);
            }
            for c in 0..C {
                out[c] = vaddvq_f32(acc[c]);
            }
        }

        row_kernel!(
            gemv_q2_k_q8_k_1x4,
            $feat,
            BlockQ2K,
            BlockQ8K,
            prefetch q2_cols,
            [1, 2, 3, 4]
        );
        row_kernel!(
            gemv_q3_k_q8_k_1x4,
            $feat,
            BlockQ3K,
            BlockQ8K,
            prefetch q3_cols,
            [1, 2, 3, 4]
        );
    };
}

/// Baseline NEON.
pub mod neon {
    use super::*;
    kernels!("neon", dot16, scaled_codes: false);
}

/// NEON + dotprod (`sdot`).
pub mod dotprod {
    use super::*;
    kernels!("neon,dotprod", sdot16, scaled_codes: true);
}
