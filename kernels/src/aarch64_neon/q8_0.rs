//! Q4_0 x Q8_0 and Q8_0 x Q8_0 on NEON: one weight row against up to
//! [`COLS`] activation columns, each weight block loaded once for all of them.

use super::{dot32, load32, sdot32};
use crate::formats::{Block32, BlockQ4_0, BlockQ8_0};
use std::arch::aarch64::*;

/// Activation columns per call.
pub const COLS: usize = 4;

/// The 32 signed codes of a block.
///
/// # Safety
/// NEON must be available.
#[inline(always)]
unsafe fn codes<W: Block32>(b: &W) -> [int8x16_t; 2] {
    // SAFETY: Q8_0 has 32 code bytes, Q4_0 16 (low nibbles are values 0..16,
    // high nibbles 16..32, both offset by 8); NEON is available (caller).
    unsafe {
        if W::NIBBLES {
            let v = vld1q_u8(b.codes());
            let eight = vdupq_n_s8(8);
            [
                vsubq_s8(vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0F))), eight),
                vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8::<4>(v)), eight),
            ]
        } else {
            load32(b.codes().cast())
        }
    }
}

/// The kernels for one feature set (`$feat`) and its 32-byte dot product (`$dot`).
macro_rules! kernels {
    ($feat:literal, $dot:ident) => {
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn cols<W: Block32, const C: usize>(
            row: &[W],
            acts: &[&[BlockQ8_0]],
            out: &mut [f32],
        ) {
            let mut acc = [vdupq_n_f32(0.0); C];
            for (i, b) in row.iter().enumerate() {
                // SAFETY: NEON is enabled here.
                let w = unsafe { codes(b) };
                let dw = half::f16::from_bits(b.d_bits()).to_f32();
                for c in 0..C {
                    // SAFETY: the caller guarantees every acts[c] has row.len() blocks; qs is 32 bytes.
                    let a = unsafe { acts.get_unchecked(c).get_unchecked(i) };
                    let y = unsafe { load32(a.qs.as_ptr()) };
                    let dot = $dot(vdupq_n_s32(0), w, y);
                    acc[c] = vfmaq_n_f32(acc[c], vcvtq_f32_s32(dot), dw * a.d.to_f32());
                }
            }
            for c in 0..C {
                out[c] = vaddvq_f32(acc[c]);
            }
        }

        row_kernel!(
            gemv_q8_0_q8_0_x4,
            $feat,
            BlockQ8_0,
            BlockQ8_0,
            cols<BlockQ8_0>,
            [1, 2, 3, 4]
        );
        row_kernel!(
            gemv_q4_0_q8_0_x4,
            $feat,
            BlockQ4_0,
            BlockQ8_0,
            cols<BlockQ4_0>,
            [1, 2, 3, 4]
        );
    };
}

/// Baseline NEON.
pub mod neon {
    use super::*;
    kernels!("neon", dot32);
}

/// NEON + dotprod (`sdot`).
pub mod dotprod {
    use super::*;
    kernels!("neon,dotprod", sdot32);
}
