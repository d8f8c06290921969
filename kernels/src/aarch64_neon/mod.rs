//! aarch64 kernels, each in two builds: baseline NEON (ARMv8-A, every 64-bit
//! ARM board: signed byte products through `smull`/`smull2` into i16, pairwise
//! accumulation into i32 with `sadalp`) and NEON + dotprod (ARMv8.2-A: `sdot`,
//! four products into each i32 lane). Integer sums are exact either way. Entry
//! points are `#[target_feature]` functions reached only through the dispatch table ([`crate::table`]).

pub mod dequant;
pub mod grid;
pub mod grid_mm;
pub mod iq4_xs;
pub mod mm;
pub mod panel;
pub mod plane_lut;
pub mod q2_k;
pub mod q4_k;
pub mod q6_k;
pub mod q8_0;
pub mod q8_0_mm;

use std::arch::aarch64::*;

/// How far ahead of the block it reads a one-column GEMV asks for the
/// weights (`prfm pldl1keep`), when [`crate::cpu::prefetch`] says so: the
/// distance measured best on x86 (docs/BENCHMARKS.md), one DRAM page.
pub(crate) const PREFETCH_AHEAD: usize = 8192;

/// `prfm pldl1keep` of each 64 bytes of `block`'s size, [`PREFETCH_AHEAD`]
/// bytes on (one per block at least).
#[inline(always)]
pub(crate) fn prefetch_ahead<T>(block: &T) {
    let p = (block as *const T)
        .cast::<u8>()
        .wrapping_add(PREFETCH_AHEAD);
    for off in (0..std::mem::size_of::<T>()).step_by(64) {
        // SAFETY: a prefetch is a hint: it never faults and changes nothing
        // the program sees, whatever the address (past the matrix's end it
        // is simply wasted).
        unsafe {
            std::arch::asm!("prfm pldl1keep, [{p}]", p = in(reg) p.wrapping_add(off),
                options(nostack, preserves_flags, readonly))
        };
    }
}

/// Whether this call's one-column GEMV takes its prefetching build.
#[inline(always)]
pub(crate) fn prefetch_on() -> bool {
    crate::cpu::prefetch().on
}

/// The bits of `1.5 * 2^23`: i32 sums started here hold, after the products,
/// the bits of the float `1.5 * 2^23 + sum` (for `|sum| <= 2^22` the exponent
/// stays that of `2^23`, whose unit is 1, or reaches exactly `2^24`), and
/// [`biased_sum_f32`] gives `sum` by one float subtraction, exactly (the
/// conversion through the mantissa): one micro-op where `scvtf` is two on
/// the Neoverse-V1.
pub(crate) const SUM_BIAS: i32 = 0x4B40_0000;

/// The sums of i32 lanes started at [`SUM_BIAS`], as floats, exactly for
/// sums within `2^22` in magnitude.
#[inline]
#[target_feature(enable = "neon")]
fn biased_sum_f32(x: int32x4_t) -> float32x4_t {
    vsubq_f32(vreinterpretq_f32_s32(x), vdupq_n_f32(12_582_912.0))
}

/// An f16 (its bits) as f32, by `fcvtl`: base ARMv8 NEON, exact, NaN and
/// subnormals as ggml's own conversion on ARM treats them. `half::f16::to_f32`
/// checks for the fp16 extension at run time on every call and otherwise
/// converts in software: a load, branches and a dozen integer instructions
/// per block in every GEMV loop (found by `scripts/arm-estimate.sh`).
#[inline]
#[target_feature(enable = "neon")]
fn f16_to_f32(bits: u16) -> f32 {
    vgetq_lane_f32::<0>(f16x4_to_f32(bits as u64))
}

/// Four f16 (bits `16i..16i + 16` of `bits`) as four f32 lanes, by one `fcvtl`.
#[inline]
#[target_feature(enable = "neon")]
fn f16x4_to_f32(bits: u64) -> float32x4_t {
    let h = vcreate_u16(bits);
    let f: float32x4_t;
    // SAFETY: fcvtl reads one vector register and writes another; NEON is enabled.
    unsafe {
        std::arch::asm!("fcvtl {f:v}.4s, {h:v}.4h", f = lateout(vreg) f, h = in(vreg) h,
            options(pure, nomem, nostack, preserves_flags));
    }
    f
}

/// Four vectors' lane sums as the four lanes of one (pairwise adds): from
/// the dot products of four consecutive sub-blocks, their four sums.
#[inline]
#[target_feature(enable = "neon")]
fn lane_sums4(d: [int32x4_t; 4]) -> int32x4_t {
    vpaddq_s32(vpaddq_s32(d[0], d[1]), vpaddq_s32(d[2], d[3]))
}

/// Sixteen signed byte scales widened: as two i16 vectors and as four i32
/// vectors (scales `4t .. 4t + 4` in vector `t`).
#[inline]
#[target_feature(enable = "neon")]
fn widen_scales(s: int8x16_t) -> ([int16x8_t; 2], [int32x4_t; 4]) {
    let s16 = [vmovl_s8(vget_low_s8(s)), vmovl_high_s8(s)];
    let s32 = [
        vmovl_s16(vget_low_s16(s16[0])),
        vmovl_high_s16(s16[0]),
        vmovl_s16(vget_low_s16(s16[1])),
        vmovl_high_s16(s16[1]),
    ];
    (s16, s32)
}

/// `sum(w[s] * bsums[s])` over a Q8_K block's 16 sixteen-value sums, as the
/// four lanes of an i32 vector (exact: `|w| <= 255`, `|bsum| <= 2048`).
#[inline]
#[target_feature(enable = "neon")]
fn bsums_dot(bsums: &[i16; 16], w: [int16x8_t; 2]) -> int32x4_t {
    // SAFETY: bsums has 16 i16 (8 + 8); NEON is enabled.
    let (b0, b1) = unsafe { (vld1q_s16(bsums.as_ptr()), vld1q_s16(bsums.as_ptr().add(8))) };
    let o = vmull_s16(vget_low_s16(b0), vget_low_s16(w[0]));
    let o = vmlal_high_s16(o, b0, w[0]);
    let o = vmlal_s16(o, vget_low_s16(b1), vget_low_s16(w[1]));
    vmlal_high_s16(o, b1, w[1])
}

/// Adds the 32 products of `a` and `b` (two 16-byte halves each) to four i32 lanes.
#[inline]
#[target_feature(enable = "neon")]
fn dot32(acc: int32x4_t, a: [int8x16_t; 2], b: [int8x16_t; 2]) -> int32x4_t {
    dot16(dot16(acc, a[0], b[0]), a[1], b[1])
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

/// [`dot32`] with `sdot` (ARMv8.2 dotprod).
#[inline]
#[target_feature(enable = "neon,dotprod")]
fn sdot32(acc: int32x4_t, a: [int8x16_t; 2], b: [int8x16_t; 2]) -> int32x4_t {
    sdot16(sdot16(acc, a[0], b[0]), a[1], b[1])
}

/// Adds the 16 products of `a` and `b` to four i32 lanes (baseline NEON).
#[inline]
#[target_feature(enable = "neon")]
fn dot16(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(a), vget_low_s8(b)));
    vpadalq_s16(acc, vmull_high_s8(a, b))
}

/// `usmmla` (ARMv8.6 i8mm), through inline assembly as [`smmla`]: `acc`
/// plus the 2 x 2 products of `a`'s two rows of eight `u8` with `b`'s two
/// rows of eight `i8`, as `[a0·b0, a0·b1, a1·b0, a1·b1]`, exact.
#[inline]
#[target_feature(enable = "neon,i8mm")]
fn usmmla(acc: int32x4_t, a: uint8x16_t, b: int8x16_t) -> int32x4_t {
    let mut r = acc;
    // SAFETY: usmmla only reads a and b and accumulates into r; i8mm is enabled.
    unsafe {
        std::arch::asm!(
            "usmmla {r:v}.4s, {a:v}.16b, {b:v}.16b",
            r = inout(vreg) r,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        )
    };
    r
}

/// `smmla` (ARMv8.6 i8mm), through inline assembly (`std::arch`'s
/// `vmmlaq_s32` is unstable): `acc` plus the 2 x 2 products of `a`'s two rows
/// of eight `i8` with `b`'s two rows of eight, as
/// `[a0·b0, a0·b1, a1·b0, a1·b1]`, exact.
#[inline]
#[target_feature(enable = "neon,i8mm")]
fn smmla(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut r = acc;
    // SAFETY: smmla only reads a and b and accumulates into r; i8mm is enabled.
    unsafe {
        std::arch::asm!(
            "smmla {r:v}.4s, {a:v}.16b, {b:v}.16b",
            r = inout(vreg) r,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        )
    };
    r
}

/// [`dot16`] with `sdot` (ARMv8.2 dotprod), through inline assembly.
#[inline]
#[target_feature(enable = "neon,dotprod")]
fn sdot16(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut r = acc;
    // SAFETY: sdot only reads a and b and accumulates into r; dotprod is enabled.
    unsafe {
        std::arch::asm!(
            "sdot {r:v}.4s, {a:v}.16b, {b:v}.16b",
            r = inout(vreg) r,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        )
    };
    r
}
