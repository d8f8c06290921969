//! aarch64 kernels for baseline NEON (ARMv8-A: every 64-bit ARM board).
//! Signed byte products through `smull`/`smull2` into i16 and pairwise
//! accumulation into i32 (`sadalp`): exact integer sums. Entry points are
//! `#[target_feature]` functions reached only through the registry.

pub mod q4_k;
pub mod q8_0;

use std::arch::aarch64::*;

/// Adds the 32 products of `a` and `b` (two 16-byte halves each) to four i32 lanes.
#[inline]
#[target_feature(enable = "neon")]
fn dot32(acc: int32x4_t, a: [int8x16_t; 2], b: [int8x16_t; 2]) -> int32x4_t {
    let mut acc = acc;
    for h in 0..2 {
        acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(a[h]), vget_low_s8(b[h])));
        acc = vpadalq_s16(acc, vmull_high_s8(a[h], b[h]));
    }
    acc
}

/// Loads 32 signed bytes.
///
/// # Safety
/// `p` must point to 32 readable bytes.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn load32(p: *const i8) -> [int8x16_t; 2] {
    // SAFETY: the caller guarantees 32 readable bytes.
    unsafe { [vld1q_s8(p), vld1q_s8(p.add(16))] }
}
