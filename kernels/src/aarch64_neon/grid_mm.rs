//! The grid formats (IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, TQ1_0, TQ2_0)
//! x Q8_K with i8mm, for the small batches (2-15): two weight rows against
//! pairs of activation columns, as [`super::mm`]'s tile, but each block
//! pair is decoded once for all the column pairs (a grid decode costs more
//! than the products it feeds, so [`super::mm::tile`]'s per-pair step would
//! repeat it).
//!
//! Per 16 values: the two rows' codes (the i-quants from their grid points
//! and sign masks in registers, `(g ^ m) - m`; the ternary formats from
//! their integer form in memory, [`GridBlock::int_form`]) zipped into `smmla`'s
//! row pairs once, then per column pair two loads, two zips and two `smmla`.
//! Per scale sub-block ([`GridBlock::SUB`] values) one `mla` by the rows'
//! scales `[s0, s0, s1, s1]`; per block one float step for the four dot
//! products (lanes `[r0·c0, r0·c1, r1·c0, r1·c1]`). Exact integer sums, one
//! float scaling per block, as the dotprod kernel ([`super::grid`]), which
//! takes a single row, a single column and an odd count's last column.

use super::grid::dotprod;
use super::smmla;
use crate::formats::grid::{GridGroups, SIGN_MASKS};
use crate::formats::{
    BlockIq2S, BlockIq2Xs, BlockIq2Xxs, BlockIq3S, BlockIq3Xxs, BlockQ8K, BlockTq1_0, BlockTq2_0,
    GridBlock, QK_K,
};
use std::arch::aarch64::*;

/// Weight rows per call.
pub const ROWS: usize = 2;
/// Activation columns per call.
pub const COLS: usize = 4;

#[repr(C, align(16))]
struct Codes([i8; QK_K]);

/// Where a block's 16-value parts come from.
trait Parts: GridBlock {
    /// The sign of the parts' sums in the dot product.
    const SIGN: i32 = 1;
    /// Whether the dot product subtracts the activations' sum (codes stored `+ 1`).
    const MINUS_SUM: bool = false;
    /// Readies the block (into `codes` where its parts come from memory):
    /// the scales, and the factor.
    ///
    /// # Safety
    /// The CPU must have NEON.
    unsafe fn prepare(&self, codes: &mut Codes, scales: &mut [i16; 16]) -> f32;
    /// Values `16k..16k + 16`, as `i8` codes.
    ///
    /// # Safety
    /// The CPU must have NEON; `codes` as [`Parts::prepare`] left it.
    unsafe fn part(&self, codes: &Codes, k: usize) -> int8x16_t;
    /// The dotprod kernel's body: one row against `C` columns.
    ///
    /// # Safety
    /// NEON and dotprod; every `acts[c]` as long as `row`, `out.len() == C`.
    unsafe fn one_row<const C: usize>(row: &[Self], acts: &[&[BlockQ8K]], out: &mut [f32]);
}

/// The i-quants: two groups' grid points by scalar loads into one vector,
/// their sign masks into another.
macro_rules! parts_by_groups {
    ($($block:ty),*) => {$(
        impl Parts for $block {
            #[inline(always)]
            unsafe fn prepare(&self, _: &mut Codes, scales: &mut [i16; 16]) -> f32 {
                self.int_scales(scales);
                // The NEON conversion (`half`'s checks the CPU at run time).
                // SAFETY: the caller's features.
                unsafe { super::f16_to_f32(self.d_bits()) * Self::D_FACTOR }
            }
            #[inline(always)]
            unsafe fn part(&self, _: &Codes, k: usize) -> int8x16_t {
                let ((m0, s0), (m1, s1)) = (self.group(2 * k), self.group(2 * k + 1));
                // SAFETY: the caller's features.
                unsafe {
                    let mag = vreinterpretq_s8_u64(vcombine_u64(vcreate_u64(m0), vcreate_u64(m1)));
                    let neg = vreinterpretq_s8_u64(vcombine_u64(
                        vcreate_u64(SIGN_MASKS[s0 as usize]),
                        vcreate_u64(SIGN_MASKS[s1 as usize]),
                    ));
                    vsubq_s8(veorq_s8(mag, neg), neg)
                }
            }
            #[inline(always)]
            unsafe fn one_row<const C: usize>(row: &[Self], acts: &[&[BlockQ8K]], out: &mut [f32]) {
                // SAFETY: forwarded contract.
                unsafe { dotprod::cols::<Self, C>(row, acts, out) }
            }
        }
    )*};
}
parts_by_groups!(BlockIq2Xxs, BlockIq2Xs, BlockIq2S, BlockIq3Xxs, BlockIq3S);

/// The ternary formats: their fields (TQ2_0) or minus their digits (TQ1_0)
/// as the dotprod kernel unpacks them in registers ([`super::grid`]),
/// stored for the parts' loads; `SIGN` times their sums less the
/// activations' sum (`MINUS_SUM`) is the dot product of `code - 1`.
macro_rules! parts_ternary {
    ($($block:ty => $codes:path, $sign:expr, $one_row:expr),* $(,)?) => {$(
        impl Parts for $block {
            const SIGN: i32 = $sign;
            const MINUS_SUM: bool = true;
            #[inline(always)]
            unsafe fn prepare(&self, codes: &mut Codes, scales: &mut [i16; 16]) -> f32 {
                scales.fill(1);
                // SAFETY: the caller's features; codes has 16 x 16 bytes.
                unsafe {
                    for (k, &v) in $codes(self).iter().enumerate() {
                        vst1q_s8(codes.0.as_mut_ptr().add(16 * k), v);
                    }
                    super::f16_to_f32(self.d.to_bits())
                }
            }
            #[inline(always)]
            unsafe fn part(&self, codes: &Codes, k: usize) -> int8x16_t {
                // SAFETY: codes has 256 bytes, 16k + 16 <= 256 (k < 16); the caller's features.
                unsafe { vld1q_s8(codes.0.as_ptr().add(16 * k)) }
            }
            #[inline(always)]
            unsafe fn one_row<const C: usize>(row: &[Self], acts: &[&[BlockQ8K]], out: &mut [f32]) {
                // SAFETY: forwarded contract.
                unsafe { $one_row(row, acts, out) }
            }
        }
    )*};
}
parts_ternary!(
    BlockTq1_0 => super::grid::tq1_0_codes, -1, dotprod::cols_tq1_0::<C>,
    BlockTq2_0 => super::grid::tq2_0_codes, 1, dotprod::cols_tq2_0::<C>,
);

/// `R` rows (consecutive in `row`) against `C` columns.
///
/// # Safety
/// NEON, dotprod and i8mm; `row.len() == R * n`, every `acts[c]` has `n`
/// blocks, `acts.len() == C <= 4`, `out.len() == R * C`.
#[inline]
#[target_feature(enable = "neon,dotprod,i8mm")]
unsafe fn tile<B: Parts, const R: usize, const C: usize>(
    row: &[B],
    acts: &[&[BlockQ8K]],
    out: &mut [f32],
) {
    let n = row.len() / R;
    if R == 1 || C == 1 {
        for r in 0..R {
            // SAFETY: forwarded contract; row r and its C outputs.
            unsafe {
                B::one_row::<C>(&row[r * n..(r + 1) * n], acts, &mut out[r * C..(r + 1) * C])
            };
        }
        return;
    }
    let (r0, r1) = row.split_at(n);
    // Values per scale, in 16-value parts.
    let step = B::SUB.min(QK_K) / 16;
    let mut acc = [vdupq_n_f32(0.0); COLS / 2];
    let (mut c0, mut c1) = (Codes([0; QK_K]), Codes([0; QK_K]));
    let (mut s0, mut s1) = ([0i16; 16], [0i16; 16]);
    for (i, (b0, b1)) in r0.iter().zip(r1).enumerate() {
        mca!(
            begin["grid_mm.pair i8mm"],
            ggml_type = <B as crate::formats::QuantBlock>::GGML_TYPE,
            c = C - C % 2,
            n = C,
            w = 512
        );
        // SAFETY: the features are this function's.
        let (f0, f1) = unsafe { (b0.prepare(&mut c0, &mut s0), b1.prepare(&mut c1, &mut s1)) };
        // SAFETY: the caller guarantees every acts[c] has n blocks.
        let a: [&BlockQ8K; C] =
            std::array::from_fn(|c| unsafe { acts.get_unchecked(c).get_unchecked(i) });
        let mut isum = [vdupq_n_s32(0); COLS / 2];
        for sb in 0..16 / step {
            let mut part = [vdupq_n_s32(0); COLS / 2];
            for k in sb * step..(sb + 1) * step {
                // SAFETY: the features are this function's; k < 16; c0, c1 prepared above.
                let (w0, w1) = unsafe { (b0.part(&c0, k), b1.part(&c1, k)) };
                let (w0, w1) = (vreinterpretq_s64_s8(w0), vreinterpretq_s64_s8(w1));
                let wl = vreinterpretq_s8_s64(vzip1q_s64(w0, w1));
                let wh = vreinterpretq_s8_s64(vzip2q_s64(w0, w1));
                for p in 0..C / 2 {
                    // SAFETY: qs has 256 bytes; 16k + 16 <= 256.
                    let (y0, y1) = unsafe {
                        (
                            vreinterpretq_s64_s8(vld1q_s8(a[2 * p].qs.as_ptr().add(16 * k))),
                            vreinterpretq_s64_s8(vld1q_s8(a[2 * p + 1].qs.as_ptr().add(16 * k))),
                        )
                    };
                    let yl = vreinterpretq_s8_s64(vzip1q_s64(y0, y1));
                    let yh = vreinterpretq_s8_s64(vzip2q_s64(y0, y1));
                    part[p] = smmla(smmla(part[p], wl, yl), wh, yh);
                }
            }
            let sc = vcombine_s32(
                vdup_n_s32(s0[sb * step] as i32),
                vdup_n_s32(s1[sb * step] as i32),
            );
            for p in 0..C / 2 {
                isum[p] = vmlaq_s32(isum[p], part[p], sc);
            }
        }
        if B::MINUS_SUM {
            for p in 0..C / 2 {
                // SAFETY: bsums has 16 i16.
                let sy = |c: usize| unsafe {
                    let b = a[c].bsums.as_ptr();
                    vaddlvq_s16(vaddq_s16(vld1q_s16(b), vld1q_s16(b.add(8))))
                };
                let y = vset_lane_s32::<1>(sy(2 * p + 1), vdup_n_s32(sy(2 * p)));
                let v = if B::SIGN < 0 {
                    vnegq_s32(isum[p])
                } else {
                    isum[p]
                };
                isum[p] = vsubq_s32(v, vcombine_s32(y, y));
            }
        }
        let f = vcombine_f32(vdup_n_f32(f0), vdup_n_f32(f1));
        for p in 0..C / 2 {
            let d = vset_lane_f32::<1>(a[2 * p + 1].d, vdup_n_f32(a[2 * p].d));
            acc[p] = vfmaq_f32(
                acc[p],
                vcvtq_f32_s32(isum[p]),
                vmulq_f32(f, vcombine_f32(d, d)),
            );
        }
        mca!(end);
    }
    for p in 0..C / 2 {
        let (c0, c1) = (2 * p, 2 * p + 1);
        out[c0] = vgetq_lane_f32::<0>(acc[p]);
        out[c1] = vgetq_lane_f32::<1>(acc[p]);
        out[C + c0] = vgetq_lane_f32::<2>(acc[p]);
        out[C + c1] = vgetq_lane_f32::<3>(acc[p]);
    }
    if C % 2 == 1 {
        let c = C - 1;
        for r in 0..R {
            let mut o = [0f32];
            // SAFETY: forwarded contract; row r against the last column.
            unsafe { B::one_row::<1>(&row[r * n..(r + 1) * n], &acts[c..], &mut o) };
            out[r * C + c] = o[0];
        }
    }
}

/// The entry points (`crate::table`).
pub mod i8mm {
    use super::*;
    row_kernel!(gemv_iq2_xxs_q8_k_2x4_i8mm, "neon,dotprod,i8mm", BlockIq2Xxs, BlockQ8K, tile<BlockIq2Xxs>, rows [1, 2], cols [1, 2, 3, 4]);
    row_kernel!(gemv_iq2_xs_q8_k_2x4_i8mm, "neon,dotprod,i8mm", BlockIq2Xs, BlockQ8K, tile<BlockIq2Xs>, rows [1, 2], cols [1, 2, 3, 4]);
    row_kernel!(gemv_iq2_s_q8_k_2x4_i8mm, "neon,dotprod,i8mm", BlockIq2S, BlockQ8K, tile<BlockIq2S>, rows [1, 2], cols [1, 2, 3, 4]);
    row_kernel!(gemv_iq3_xxs_q8_k_2x4_i8mm, "neon,dotprod,i8mm", BlockIq3Xxs, BlockQ8K, tile<BlockIq3Xxs>, rows [1, 2], cols [1, 2, 3, 4]);
    row_kernel!(gemv_iq3_s_q8_k_2x4_i8mm, "neon,dotprod,i8mm", BlockIq3S, BlockQ8K, tile<BlockIq3S>, rows [1, 2], cols [1, 2, 3, 4]);
    row_kernel!(gemv_tq1_0_q8_k_2x4_i8mm, "neon,dotprod,i8mm", BlockTq1_0, BlockQ8K, tile<BlockTq1_0>, rows [1, 2], cols [1, 2, 3, 4]);
    row_kernel!(gemv_tq2_0_q8_k_2x4_i8mm, "neon,dotprod,i8mm", BlockTq2_0, BlockQ8K, tile<BlockTq2_0>, rows [1, 2], cols [1, 2, 3, 4]);
}
