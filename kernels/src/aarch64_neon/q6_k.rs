//! Q6_K x Q8_K on NEON: one weight row against up to [`COLS`] activation
//! columns. Each block's six-bit codes are unpacked once (0..=63, 16
//! sub-blocks of 16) and reused for every column. Per column, the 16
//! sub-block sums are gathered into four vectors of lanes by pairwise adds
//! and multiplied by the 8-bit scales; the codes' offset of 32 is taken off
//! once per block, as 32 times the scaled sums of the activations' 16-value
//! sums (`bsums`); then one float scaling per block.

use super::{bsums_dot, f16_to_f32, lane_sums4, widen_scales};
use crate::formats::{BlockQ6K, BlockQ8K};
use std::arch::aarch64::*;

/// Weight rows per call.
pub const ROWS: usize = 1;
/// Activation columns per call.
pub const COLS: usize = 4;

/// A block's 256 six-bit codes (0..=63), 16 sub-blocks of 16: sub-block
/// `8n + 2j + h` holds values `128n + 32j + 16h ..`.
///
/// # Safety
/// NEON must be available.
#[inline(always)]
pub(crate) unsafe fn unpack6(b: &BlockQ6K) -> [int8x16_t; 16] {
    // SAFETY: NEON is available (caller); ql has 128 bytes (64n + 32 + 16h + 16 <= 128), qh 64.
    unsafe {
        let (low4, high2) = (vdupq_n_u8(0x0F), vdupq_n_u8(0x30));
        let mut q = [vdupq_n_s8(0); 16];
        for n in 0..2 {
            for h in 0..2 {
                let l0 = vld1q_u8(b.ql.as_ptr().add(64 * n + 16 * h));
                let l1 = vld1q_u8(b.ql.as_ptr().add(64 * n + 32 + 16 * h));
                let hb = vld1q_u8(b.qh.as_ptr().add(32 * n + 16 * h));
                let six = [
                    vorrq_u8(vandq_u8(l0, low4), vandq_u8(vshlq_n_u8::<4>(hb), high2)),
                    vorrq_u8(vandq_u8(l1, low4), vandq_u8(vshlq_n_u8::<2>(hb), high2)),
                    vorrq_u8(vshrq_n_u8::<4>(l0), vandq_u8(hb, high2)),
                    vorrq_u8(vshrq_n_u8::<4>(l1), vandq_u8(vshrq_n_u8::<2>(hb), high2)),
                ];
                for (j, v) in six.into_iter().enumerate() {
                    q[8 * n + 2 * j + h] = vreinterpretq_s8_u8(v);
                }
            }
        }
        q
    }
}

/// The kernel for one feature set (`$feat`) and its 16-byte dot product (`$dot`).
macro_rules! kernels {
    ($feat:literal, $dot:path) => {
        #[inline]
        #[target_feature(enable = $feat)]
        pub(crate) unsafe fn cols<const C: usize, const PF: bool>(row: &[BlockQ6K], acts: &[&[BlockQ8K]], out: &mut [f32]) {
            let mut acc = [vdupq_n_f32(0.0); C];
            for (i, b) in row.iter().enumerate() {
                mca!(begin ["q6_k.cols ", $feat], c = C, pf = PF as u32, w = 256);
                if PF {
                    crate::aarch64_neon::prefetch_ahead(b);
                }
                // SAFETY: NEON is enabled here; scales has 16 bytes.
                let (q, (sc16, sc)) = unsafe { (unpack6(b), widen_scales(vld1q_s8(b.scales.as_ptr()))) };
                let d = f16_to_f32(b.d.to_bits());
                for c in 0..C {
                    // SAFETY: the caller guarantees every acts[c] has row.len() blocks.
                    let a = unsafe { acts.get_unchecked(c).get_unchecked(i) };
                    // SAFETY: a.qs has 256 bytes; 16s + 16 <= 256.
                    let dot = |s: usize| $dot(vdupq_n_s32(0), q[s], unsafe { vld1q_s8(a.qs.as_ptr().add(16 * s)) });
                    // Sub-block sums 4t..4t + 4 as lanes (pairwise adds of the
                    // dot products' lanes), times their scales.
                    let four = |t: usize| lane_sums4([dot(4 * t), dot(4 * t + 1), dot(4 * t + 2), dot(4 * t + 3)]);
                    let mut isum = vmulq_s32(four(0), sc[0]);
                    for t in 1..4 {
                        isum = vmlaq_s32(isum, four(t), sc[t]);
                    }
                    // The codes' offset: 32 * sum(scale * sum(y)) per sub-block,
                    // from the activations' 16-value sums.
                    let offset = bsums_dot(&a.bsums, sc16);
                    isum = vsubq_s32(isum, vshlq_n_s32::<5>(offset));
                    acc[c] = vfmaq_n_f32(acc[c], vcvtq_f32_s32(isum), d * a.d);
                }
                mca!(end);
            }
            for c in 0..C {
                out[c] = vaddvq_f32(acc[c]);
            }
        }

        row_kernel!(
            gemv_q6_k_q8_k_1x4,
            $feat,
            BlockQ6K,
            BlockQ8K,
            prefetch cols,
            [1, 2, 3, 4]
        );
    };
}

/// Baseline NEON.
pub mod neon {
    use super::*;
    kernels!("neon", crate::aarch64_neon::dot16);
}

/// NEON + dotprod (`sdot`).
pub mod dotprod {
    use super::*;
    kernels!("neon,dotprod", crate::aarch64_neon::sdot16);
}
