//! Dequantization to f32, written once over a primitive set per ISA
//! ([`Prims`]: 16-byte loads, byte operations, and two 16-value stores), and
//! bit-identical with the scalar references (and so with ggml's
//! `dequantize_row_*`): the same IEEE operations in the same order per
//! value, `d_sub * q - m_sub` as a multiply then a subtract, never fused,
//! with the sub-block scales `d * sc` rounded exactly as the reference
//! rounds them (scalar f32 multiplies).
//!
//! An ISA implements [`Prims`] and instantiates the entry points with
//! [`dequant_entries!`]; the bodies here are `#[inline(always)]`, so they are
//! compiled inside each entry point's `#[target_feature]` function.

use crate::formats::q4_k::scales_mins;
use crate::formats::{scales_q3_k, Block32, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0};

/// What the dequantization bodies need of an ISA: 16 one-byte codes in a
/// register (`V`) and the operations on them.
///
/// Every function is `unsafe`: it uses the ISA's instructions, so it may
/// only run inside a function compiled for them (the entry points of
/// [`dequant_entries!`]), and the pointer functions state their bounds.
pub(crate) trait Prims {
    type V: Copy;
    /// # Safety
    /// The ISA's features; 16 readable bytes at `p`.
    unsafe fn load16(p: *const u8) -> Self::V;
    /// # Safety
    /// The ISA's features.
    unsafe fn low_nibbles(v: Self::V) -> Self::V;
    /// # Safety
    /// The ISA's features.
    unsafe fn high_nibbles(v: Self::V) -> Self::V;
    /// Bits `2s, 2s + 1` of each byte.
    ///
    /// # Safety
    /// The ISA's features.
    unsafe fn bits2(v: Self::V, s: usize) -> Self::V;
    /// 4 in the bytes of `hm` where bit `bit` is clear, 0 elsewhere.
    ///
    /// # Safety
    /// The ISA's features.
    unsafe fn four_where_clear(hm: Self::V, bit: u8) -> Self::V;
    /// `a - b` per byte, wrapping.
    ///
    /// # Safety
    /// The ISA's features.
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    /// `c` in every byte.
    ///
    /// # Safety
    /// The ISA's features.
    unsafe fn splat(c: u8) -> Self::V;
    /// Writes `dl * q - ml` for 16 unsigned codes.
    ///
    /// # Safety
    /// The ISA's features; 16 writable floats at `out`.
    unsafe fn store16(q: Self::V, dl: f32, ml: f32, out: *mut f32);
    /// Writes `d * q` for 16 signed codes.
    ///
    /// # Safety
    /// The ISA's features; 16 writable floats at `out`.
    unsafe fn store16_signed(q: Self::V, d: f32, out: *mut f32);
    /// A 32-value block's codes as signed bytes, 2:4 blocks expanded as the
    /// dot-product kernels expand them.
    ///
    /// # Safety
    /// The ISA's features.
    unsafe fn codes32<W: Block32>(b: &W) -> [Self::V; 2];
}

/// # Safety
/// `P`'s features; `y.len() == x.len() * 32`.
#[inline(always)]
pub(crate) unsafe fn q4_0<P: Prims>(x: &[BlockQ4_0], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(32)) {
        let d = b.d.to_f32();
        // SAFETY: qs is 16 bytes; out has 32 floats; the caller's features.
        unsafe {
            let v = P::load16(b.qs.as_ptr());
            let lo = P::sub(P::low_nibbles(v), P::splat(8));
            let hi = P::sub(P::high_nibbles(v), P::splat(8));
            P::store16_signed(lo, d, out.as_mut_ptr());
            P::store16_signed(hi, d, out.as_mut_ptr().add(16));
        }
    }
}

/// Q8_0 and the 2:4 blocks: 32 signed codes (expanded where sparse) times the scale.
///
/// # Safety
/// `P`'s features; `y.len() == x.len() * 32`.
#[inline(always)]
pub(crate) unsafe fn block32<P: Prims, W: Block32>(x: &[W], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(32)) {
        let d = half::f16::from_bits(b.d_bits()).to_f32();
        // SAFETY: out has 32 floats; the caller's features.
        unsafe {
            let [lo, hi] = P::codes32(b);
            P::store16_signed(lo, d, out.as_mut_ptr());
            P::store16_signed(hi, d, out.as_mut_ptr().add(16));
        }
    }
}

/// # Safety
/// `P`'s features; `y.len() == x.len() * 256`.
#[inline(always)]
pub(crate) unsafe fn q4_k<P: Prims>(x: &[BlockQ4K], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(256)) {
        let sm = scales_mins(&b.scales);
        let (d, dmin) = (b.d.to_f32(), b.dmin.to_f32());
        for j in 0..8 {
            let (dl, ml) = (d * sm[j] as f32, dmin * sm[8 + j] as f32);
            for h in 0..2 {
                // SAFETY: sub-block j is nibble j%2 of qs[32(j/2)..+32]; out has
                // 256 floats; the caller's features.
                unsafe {
                    let v = P::load16(b.qs.as_ptr().add(32 * (j / 2) + 16 * h));
                    let q = if j % 2 == 0 {
                        P::low_nibbles(v)
                    } else {
                        P::high_nibbles(v)
                    };
                    P::store16(q, dl, ml, out.as_mut_ptr().add(32 * j + 16 * h));
                }
            }
        }
    }
}

/// The 2-bit codes of values `32 hs + 16 half ..` of a Q2_K/Q3_K block.
///
/// # Safety
/// `P`'s features.
#[inline(always)]
unsafe fn low2<P: Prims>(qs: &[u8; 64], hs: usize, half: usize) -> P::V {
    let (h, s) = (hs / 4, hs % 4);
    // SAFETY: 32h + 16 half + 16 <= 64; the caller's features.
    unsafe { P::bits2(P::load16(qs.as_ptr().add(32 * h + 16 * half)), s) }
}

/// # Safety
/// `P`'s features; `y.len() == x.len() * 256`.
#[inline(always)]
pub(crate) unsafe fn q2_k<P: Prims>(x: &[BlockQ2K], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(256)) {
        let (d, dmin) = (b.d.to_f32(), b.dmin.to_f32());
        for sub in 0..16 {
            let sc = b.scales[sub];
            let (dl, ml) = (d * (sc & 0x0F) as f32, dmin * (sc >> 4) as f32);
            // SAFETY: out has 256 floats; sub-block `sub` is values 16 sub ..;
            // the caller's features.
            unsafe {
                let q = low2::<P>(&b.qs, sub / 2, sub % 2);
                P::store16(q, dl, ml, out.as_mut_ptr().add(16 * sub))
            };
        }
    }
}

/// # Safety
/// `P`'s features; `y.len() == x.len() * 256`.
#[inline(always)]
pub(crate) unsafe fn q3_k<P: Prims>(x: &[BlockQ3K], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(256)) {
        let d_all = b.d.to_f32();
        let scales = scales_q3_k(&b.scales);
        for sub in 0..16 {
            let (hs, half) = (sub / 2, sub % 2);
            let dl = d_all * scales[sub] as f32;
            // SAFETY: hmask is 32 bytes and 16 half + 16 <= 32; out has 256
            // floats; the caller's features.
            unsafe {
                let hm = P::load16(b.hmask.as_ptr().add(16 * half));
                // q - 4 where the high bit is clear.
                let q = P::sub(low2::<P>(&b.qs, hs, half), P::four_where_clear(hm, 1 << hs));
                P::store16_signed(q, dl, out.as_mut_ptr().add(16 * sub));
            }
        }
    }
}

/// The dequantization entry points of an ISA whose [`Prims`] are `$p`,
/// compiled for the target features `$feat` (what the dispatch table names).
macro_rules! dequant_entries {
    ($p:ty, $feat:literal) => {
        dequant_entries!(@one $p, $feat, dequantize_q4_0, BlockQ4_0, 32, crate::dequant::q4_0::<$p>);
        dequant_entries!(@one $p, $feat, dequantize_q8_0, BlockQ8_0, 32, crate::dequant::block32::<$p, _>);
        dequant_entries!(@one $p, $feat, dequantize_q4_0s, BlockQ4_0S, 32, crate::dequant::block32::<$p, _>);
        dequant_entries!(@one $p, $feat, dequantize_q8_0s, BlockQ8_0S, 32, crate::dequant::block32::<$p, _>);
        dequant_entries!(@one $p, $feat, dequantize_q4_k, BlockQ4K, 256, crate::dequant::q4_k::<$p>);
        dequant_entries!(@one $p, $feat, dequantize_q2_k, BlockQ2K, 256, crate::dequant::q2_k::<$p>);
        dequant_entries!(@one $p, $feat, dequantize_q3_k, BlockQ3K, 256, crate::dequant::q3_k::<$p>);
    };
    (@one $p:ty, $feat:literal, $name:ident, $block:ident, $len:literal, $body:expr) => {
        /// # Safety
        #[doc = concat!("The CPU must have `", $feat, "`; `y.len() == x.len() * ", $len, "`.")]
        #[target_feature(enable = $feat)]
        pub unsafe fn $name(x: &[crate::formats::$block], y: &mut [f32]) {
            // SAFETY: forwarded contract; this function has the features.
            unsafe { $body(x, y) }
        }
    };
}
pub(crate) use dequant_entries;
