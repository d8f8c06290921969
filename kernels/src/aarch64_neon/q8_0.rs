//! Q4_0 x Q8_0 and Q8_0 x Q8_0 on NEON: one weight row against up to
//! [`COLS`] activation columns, each weight block loaded once for all of them.

use super::{dot32, load32, sdot32};
use crate::formats::{BlockQ4_0, BlockQ8_0};
use std::arch::aarch64::*;

/// Activation columns per call.
pub const COLS: usize = 4;

/// A 32-value block with an f16 scale: its codes as signed bytes.
trait Block32 {
    /// # Safety
    /// NEON must be available.
    unsafe fn codes(&self) -> [int8x16_t; 2];
    fn d(&self) -> f32;
}

impl Block32 for BlockQ8_0 {
    #[inline(always)]
    unsafe fn codes(&self) -> [int8x16_t; 2] {
        // SAFETY: qs is 32 bytes; NEON is available (caller).
        unsafe { load32(self.qs.as_ptr()) }
    }
    fn d(&self) -> f32 {
        self.d.to_f32()
    }
}

impl Block32 for BlockQ4_0 {
    #[inline(always)]
    unsafe fn codes(&self) -> [int8x16_t; 2] {
        // SAFETY: qs is 16 bytes; NEON is available (caller). Low nibbles are
        // values 0..16, high nibbles 16..32, both offset by 8.
        unsafe {
            let v = vld1q_u8(self.qs.as_ptr());
            let eight = vdupq_n_s8(8);
            [
                vsubq_s8(vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0F))), eight),
                vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8::<4>(v)), eight),
            ]
        }
    }
    fn d(&self) -> f32 {
        self.d.to_f32()
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
                let w = unsafe { b.codes() };
                let dw = b.d();
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

        macro_rules! entry {
            ($name:ident, $w:ty) => {
                /// `out[c] = dot(row, acts[c])` for `c < acts.len() <= COLS`.
                ///
                /// # Safety
                /// The CPU must have $feat; `out.len() == acts.len() <= COLS`, and every
                /// `acts[c]` has `row.len()` blocks.
                #[target_feature(enable = $feat)]
                pub unsafe fn $name(row: &[$w], acts: &[&[BlockQ8_0]], out: &mut [f32]) {
                    debug_assert!(acts.len() <= COLS && out.len() == acts.len());
                    // SAFETY: forwarded contract; each arm passes exactly C columns.
                    unsafe {
                        match acts.len() {
                            1 => cols::<$w, 1>(row, acts, out),
                            2 => cols::<$w, 2>(row, acts, out),
                            3 => cols::<$w, 3>(row, acts, out),
                            4 => cols::<$w, 4>(row, acts, out),
                            _ => {}
                        }
                    }
                }
            };
        }

        entry!(gemv_q8_0_q8_0_x4, BlockQ8_0);
        entry!(gemv_q4_0_q8_0_x4, BlockQ4_0);
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
