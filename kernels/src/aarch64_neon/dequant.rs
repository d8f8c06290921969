//! Dequantization on NEON: the primitives of [`crate::dequant`]'s bodies.

use crate::dequant::{dequant_entries, Prims};
use crate::formats::Block32;
use std::arch::aarch64::*;

/// Baseline NEON.
pub(crate) enum Neon {}

impl Prims for Neon {
    type V = uint8x16_t;
    #[inline(always)]
    unsafe fn load16(p: *const u8) -> uint8x16_t {
        // SAFETY: the caller guarantees 16 readable bytes and NEON.
        unsafe { vld1q_u8(p) }
    }
    #[inline(always)]
    unsafe fn low_nibbles(v: uint8x16_t) -> uint8x16_t {
        // SAFETY: the caller's features.
        unsafe { vandq_u8(v, vdupq_n_u8(0x0F)) }
    }
    #[inline(always)]
    unsafe fn high_nibbles(v: uint8x16_t) -> uint8x16_t {
        // SAFETY: the caller's features.
        unsafe { vshrq_n_u8::<4>(v) }
    }
    #[inline(always)]
    unsafe fn bits2(v: uint8x16_t, s: usize) -> uint8x16_t {
        // SAFETY: the caller's features.
        unsafe { vandq_u8(vshlq_u8(v, vdupq_n_s8(-(2 * s as i8))), vdupq_n_u8(3)) }
    }
    #[inline(always)]
    unsafe fn four_where_clear(hm: uint8x16_t, bit: u8) -> uint8x16_t {
        // SAFETY: the caller's features.
        unsafe {
            let clear = vceqq_u8(vandq_u8(hm, vdupq_n_u8(bit)), vdupq_n_u8(0));
            vandq_u8(clear, vdupq_n_u8(4))
        }
    }
    #[inline(always)]
    unsafe fn sub(a: uint8x16_t, b: uint8x16_t) -> uint8x16_t {
        // SAFETY: the caller's features.
        unsafe { vsubq_u8(a, b) }
    }
    #[inline(always)]
    unsafe fn splat(c: u8) -> uint8x16_t {
        // SAFETY: the caller's features.
        unsafe { vdupq_n_u8(c) }
    }
    #[inline(always)]
    unsafe fn store16(q: uint8x16_t, dl: f32, ml: f32, out: *mut f32) {
        // SAFETY: the caller guarantees 16 floats of room and NEON.
        unsafe {
            let (dl, ml) = (vdupq_n_f32(dl), vdupq_n_f32(ml));
            let (lo, hi) = (vmovl_u8(vget_low_u8(q)), vmovl_high_u8(q));
            let quads = [
                vmovl_u16(vget_low_u16(lo)),
                vmovl_high_u16(lo),
                vmovl_u16(vget_low_u16(hi)),
                vmovl_high_u16(hi),
            ];
            for (k, v) in quads.into_iter().enumerate() {
                vst1q_f32(
                    out.add(4 * k),
                    vsubq_f32(vmulq_f32(dl, vcvtq_f32_u32(v)), ml),
                );
            }
        }
    }
    #[inline(always)]
    unsafe fn store16_signed(q: uint8x16_t, d: f32, out: *mut f32) {
        // SAFETY: the caller guarantees 16 floats of room and NEON.
        unsafe {
            let q = vreinterpretq_s8_u8(q);
            let d = vdupq_n_f32(d);
            let (lo, hi) = (vmovl_s8(vget_low_s8(q)), vmovl_high_s8(q));
            let quads = [
                vmovl_s16(vget_low_s16(lo)),
                vmovl_high_s16(lo),
                vmovl_s16(vget_low_s16(hi)),
                vmovl_high_s16(hi),
            ];
            for (k, v) in quads.into_iter().enumerate() {
                vst1q_f32(out.add(4 * k), vmulq_f32(vcvtq_f32_s32(v), d));
            }
        }
    }
    #[inline(always)]
    unsafe fn codes32<W: Block32>(b: &W) -> [uint8x16_t; 2] {
        // SAFETY: the caller's features (NEON).
        unsafe { super::q8_0::codes(b).map(|v| vreinterpretq_u8_s8(v)) }
    }
}

dequant_entries!(Neon, "neon");
