//! Dequantization to f32 on NEON, bit-identical with the scalar references:
//! per value the same IEEE operations in the same order (`d_sub * q - m_sub`
//! as a multiply then a subtract, never fused; sub-block scales rounded by
//! scalar f32 multiplies exactly as the reference rounds them).

use crate::formats::q4_k::scales_mins;
use crate::formats::{
    scales_q3_k, Block32, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_0S, BlockQ8_0,
    BlockQ8_0S,
};
use std::arch::aarch64::*;

/// Writes `dl * q - ml` for 16 unsigned byte codes.
///
/// # Safety
/// `out` must have room for 16 floats.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn store16(q: uint8x16_t, dl: f32, ml: f32, out: *mut f32) {
    let (dl, ml) = (vdupq_n_f32(dl), vdupq_n_f32(ml));
    let (lo, hi) = (vmovl_u8(vget_low_u8(q)), vmovl_high_u8(q));
    let quads = [
        vmovl_u16(vget_low_u16(lo)),
        vmovl_high_u16(lo),
        vmovl_u16(vget_low_u16(hi)),
        vmovl_high_u16(hi),
    ];
    for (k, v) in quads.into_iter().enumerate() {
        // SAFETY: the caller guarantees 16 floats of room.
        unsafe {
            vst1q_f32(
                out.add(4 * k),
                vsubq_f32(vmulq_f32(dl, vcvtq_f32_u32(v)), ml),
            )
        };
    }
}

/// Writes `d * q` for 16 signed byte codes.
///
/// # Safety
/// `out` must have room for 16 floats.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn store16_signed(q: int8x16_t, d: f32, out: *mut f32) {
    let d = vdupq_n_f32(d);
    let (lo, hi) = (vmovl_s8(vget_low_s8(q)), vmovl_high_s8(q));
    let quads = [
        vmovl_s16(vget_low_s16(lo)),
        vmovl_high_s16(lo),
        vmovl_s16(vget_low_s16(hi)),
        vmovl_high_s16(hi),
    ];
    for (k, v) in quads.into_iter().enumerate() {
        // SAFETY: the caller guarantees 16 floats of room.
        unsafe { vst1q_f32(out.add(4 * k), vmulq_f32(vcvtq_f32_s32(v), d)) };
    }
}

/// # Safety
/// NEON; `y.len() == x.len() * 32`.
#[target_feature(enable = "neon")]
pub unsafe fn dequantize_q4_0(x: &[BlockQ4_0], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(32)) {
        let d = b.d.to_f32();
        // SAFETY: qs is 16 bytes; out has 32 floats.
        unsafe {
            let v = vld1q_u8(b.qs.as_ptr());
            let eight = vdupq_n_s8(8);
            let lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0F))), eight);
            let hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8::<4>(v)), eight);
            store16_signed(lo, d, out.as_mut_ptr());
            store16_signed(hi, d, out.as_mut_ptr().add(16));
        }
    }
}

/// # Safety
/// NEON; `y.len() == x.len() * 32`.
#[target_feature(enable = "neon")]
pub unsafe fn dequantize_q8_0(x: &[BlockQ8_0], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(32)) {
        let d = b.d.to_f32();
        // SAFETY: qs is 32 bytes; out has 32 floats.
        unsafe {
            store16_signed(vld1q_s8(b.qs.as_ptr()), d, out.as_mut_ptr());
            store16_signed(vld1q_s8(b.qs.as_ptr().add(16)), d, out.as_mut_ptr().add(16));
        }
    }
}

/// A 2:4 block's 32 codes (expanded as the dot-product kernels do) times its scale.
///
/// # Safety
/// NEON; `y.len() == x.len() * 32`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn dequantize_sparse<W: Block32>(x: &[W], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(32)) {
        let d = half::f16::from_bits(b.d_bits()).to_f32();
        // SAFETY: NEON is enabled; out has 32 floats.
        unsafe {
            let [lo, hi] = super::q8_0::codes(b);
            store16_signed(lo, d, out.as_mut_ptr());
            store16_signed(hi, d, out.as_mut_ptr().add(16));
        }
    }
}

/// # Safety
/// NEON; `y.len() == x.len() * 32`.
#[target_feature(enable = "neon")]
pub unsafe fn dequantize_q4_0s(x: &[BlockQ4_0S], y: &mut [f32]) {
    // SAFETY: forwarded contract.
    unsafe { dequantize_sparse(x, y) }
}

/// # Safety
/// NEON; `y.len() == x.len() * 32`.
#[target_feature(enable = "neon")]
pub unsafe fn dequantize_q8_0s(x: &[BlockQ8_0S], y: &mut [f32]) {
    // SAFETY: forwarded contract.
    unsafe { dequantize_sparse(x, y) }
}

/// # Safety
/// NEON; `y.len() == x.len() * 256`.
#[target_feature(enable = "neon")]
pub unsafe fn dequantize_q4_k(x: &[BlockQ4K], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(256)) {
        let sm = scales_mins(&b.scales);
        let (d, dmin) = (b.d.to_f32(), b.dmin.to_f32());
        for j in 0..8 {
            let (dl, ml) = (d * sm[j] as f32, dmin * sm[8 + j] as f32);
            for h in 0..2 {
                // SAFETY: sub-block j is nibble j%2 of qs[32(j/2)..+32]; out has 256 floats.
                unsafe {
                    let v = vld1q_u8(b.qs.as_ptr().add(32 * (j / 2) + 16 * h));
                    let q = if j % 2 == 0 {
                        vandq_u8(v, vdupq_n_u8(0x0F))
                    } else {
                        vshrq_n_u8::<4>(v)
                    };
                    store16(q, dl, ml, out.as_mut_ptr().add(32 * j + 16 * h));
                }
            }
        }
    }
}

/// The 2-bit codes of values `32 hs + 16 half ..` of a Q2_K/Q3_K block.
#[inline]
#[target_feature(enable = "neon")]
fn low2(qs: &[u8; 64], hs: usize, half: usize) -> uint8x16_t {
    let (h, s) = (hs / 4, hs % 4);
    // SAFETY: 32h + 16 half + 16 <= 64.
    let v = unsafe { vld1q_u8(qs.as_ptr().add(32 * h + 16 * half)) };
    vandq_u8(vshlq_u8(v, vdupq_n_s8(-(2 * s as i8))), vdupq_n_u8(3))
}

/// # Safety
/// NEON; `y.len() == x.len() * 256`.
#[target_feature(enable = "neon")]
pub unsafe fn dequantize_q2_k(x: &[BlockQ2K], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(256)) {
        let (d, dmin) = (b.d.to_f32(), b.dmin.to_f32());
        for sub in 0..16 {
            let sc = b.scales[sub];
            let (dl, ml) = (d * (sc & 0x0F) as f32, dmin * (sc >> 4) as f32);
            // SAFETY: out has 256 floats.
            unsafe {
                store16(
                    low2(&b.qs, sub / 2, sub % 2),
                    dl,
                    ml,
                    out.as_mut_ptr().add(16 * sub),
                )
            };
        }
    }
}

/// # Safety
/// NEON; `y.len() == x.len() * 256`.
#[target_feature(enable = "neon")]
pub unsafe fn dequantize_q3_k(x: &[BlockQ3K], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(256)) {
        let d_all = b.d.to_f32();
        let scales = scales_q3_k(&b.scales);
        for sub in 0..16 {
            let (hs, half) = (sub / 2, sub % 2);
            // SAFETY: hmask is 32 bytes; 16 half + 16 <= 32.
            let hm = unsafe { vld1q_u8(b.hmask.as_ptr().add(16 * half)) };
            // q - 4 where the high bit is clear.
            let clear = vceqq_u8(vandq_u8(hm, vdupq_n_u8(1 << hs)), vdupq_n_u8(0));
            let q = vsubq_s8(
                vreinterpretq_s8_u8(low2(&b.qs, hs, half)),
                vreinterpretq_s8_u8(vandq_u8(clear, vdupq_n_u8(4))),
            );
            // SAFETY: out has 256 floats.
            unsafe {
                store16_signed(
                    q,
                    d_all * scales[sub] as f32,
                    out.as_mut_ptr().add(16 * sub),
                )
            };
        }
    }
}
