//! The i-quants (IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S) x Q8_K with
//! i8mm, for the small batches (2-15): two weight rows against
//! pairs of activation columns, as [`super::mm`]'s tile, but each block
//! pair is decoded once for all the column pairs (a grid decode costs more
//! than the products it feeds, so [`super::mm::tile`]'s per-pair step would
//! repeat it).
//!
//! Per 16 values: the two rows' codes, from their grid points and sign
//! masks in registers (`(g ^ m) - m`), zipped into `smmla`'s row pairs
//! once, then per column pair two loads, two zips and two `smmla`. Per
//! scale sub-block ([`crate::formats::GridBlock::SUB`] values) one `mla` by
//! the rows' scales `[s0, s0, s1, s1]`; per block one float step for the
//! four dot products (lanes `[r0·c0, r0·c1, r1·c0, r1·c1]`). Exact integer
//! sums, one float scaling per block, as the dotprod kernel
//! ([`super::grid`]), which takes a single row, a single column and an odd
//! count's last column.
//!
//! The ternary formats have none: their dotprod kernel unpacks in a few
//! vector operations and already shares them across columns, and the zips
//! cost more than the halved multiplies save (docs/BENCHMARKS.md).

use super::grid::dotprod;
use super::smmla;
use crate::formats::grid::{GridGroups, SIGN_MASKS};
use crate::formats::{BlockIq2S, BlockIq2Xs, BlockIq2Xxs, BlockIq3S, BlockIq3Xxs, BlockQ8K};
use std::arch::aarch64::*;

/// Weight rows per call.
pub const ROWS: usize = 2;
/// Activation columns per call.
pub const COLS: usize = 4;

/// Values `16k..16k + 16` of `b` (`k < 16`): two groups' grid points by
/// scalar loads into one vector, their sign masks into another.
#[inline(always)]
unsafe fn codes16<B: GridGroups>(b: &B, k: usize) -> int8x16_t {
    let ((m0, s0), (m1, s1)) = (b.group(2 * k), b.group(2 * k + 1));
    // SAFETY: the caller's features (NEON).
    unsafe {
        let mag = vreinterpretq_s8_u64(vcombine_u64(vcreate_u64(m0), vcreate_u64(m1)));
        let neg = vreinterpretq_s8_u64(vcombine_u64(
            vcreate_u64(SIGN_MASKS[s0 as usize]),
            vcreate_u64(SIGN_MASKS[s1 as usize]),
        ));
        vsubq_s8(veorq_s8(mag, neg), neg)
    }
}

/// The block's scales, and its factor `d * D_FACTOR` converted by NEON
/// (`half`'s conversion checks the CPU at run time).
#[inline(always)]
unsafe fn prepare<B: GridGroups>(b: &B, scales: &mut [i16; 16]) -> f32 {
    b.int_scales(scales);
    // SAFETY: the caller's features (NEON).
    unsafe { super::f16_to_f32(b.d_bits()) * B::D_FACTOR }
}

/// `R` rows (consecutive in `row`) against `C` columns.
///
/// # Safety
/// NEON, dotprod and i8mm; `row.len() == R * n`, every `acts[c]` has `n`
/// blocks, `acts.len() == C <= 4`, `out.len() == R * C`.
#[inline]
#[target_feature(enable = "neon,dotprod,i8mm")]
unsafe fn tile<B: GridGroups, const R: usize, const C: usize>(
    row: &[B],
    acts: &[&[BlockQ8K]],
    out: &mut [f32],
) {
    let n = row.len() / R;
    if R == 1 || C == 1 {
        for r in 0..R {
            // SAFETY: forwarded contract; row r and its C outputs.
            unsafe {
                let (row, out) = (&row[r * n..(r + 1) * n], &mut out[r * C..(r + 1) * C]);
                if C == 1 && super::prefetch_on() {
                    dotprod::cols::<B, 1, true>(row, acts, out)
                } else {
                    dotprod::cols::<B, C, false>(row, acts, out)
                }
            };
        }
        return;
    }
    let (r0, r1) = row.split_at(n);
    // Values per scale, in 16-value parts.
    let step = B::SUB / 16;
    let mut acc = [vdupq_n_f32(0.0); COLS / 2];
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
        let (f0, f1) = unsafe { (prepare(b0, &mut s0), prepare(b1, &mut s1)) };
        // SAFETY: the caller guarantees every acts[c] has n blocks.
        let a: [&BlockQ8K; C] =
            std::array::from_fn(|c| unsafe { acts.get_unchecked(c).get_unchecked(i) });
        let mut isum = [vdupq_n_s32(0); COLS / 2];
        for sb in 0..16 / step {
            let mut part = [vdupq_n_s32(0); COLS / 2];
            for k in sb * step..(sb + 1) * step {
                // SAFETY: the features are this function's; k < 16.
                let (w0, w1) = unsafe { (codes16(b0, k), codes16(b1, k)) };
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
            unsafe { dotprod::cols::<B, 1, false>(&row[r * n..(r + 1) * n], &acts[c..], &mut o) };
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
}
