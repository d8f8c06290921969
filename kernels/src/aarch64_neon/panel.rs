//! The panel GEMM tile ([`crate::panel`]) with NEON dotprod (`sdot`):
//! [`ROWS`] weight rows x 32 activation columns, done as passes of 2 rows x
//! 16 columns so that the 8 integer accumulators, 4 activation vectors and
//! the per-sub-block float sums fit the 32 vector registers.
//!
//! Per four values of K: four 16-byte loads of the interleaved activations
//! (`[column][4]`, stored signed for this tile: `ColLayout { group: 4,
//! biased: false }`; shared by the two rows), then per row one `ld1r`-style broadcast of
//! its four `i8` codes and four `sdot`: exactly `sum(code * a)`, which the
//! scalar tile reaches from its correction instead. Mins: the columns' i16
//! code-sum pairs times the row's i16 min pair (`smull`/`smull2`, pairwise
//! add), exact. The float steps are [`crate::panel::gemm_i8_q8x32_8x32`]'s,
//! fused multiply-adds in its order, so the two agree bit for bit.
//!
//! With i8mm, [`gemm_i8_q8x32_8x32_i8mm`] takes eight values of K at a time
//! from columns packed eight values together
//! ([`crate::panel::pack_columns_by`], group 8): the two rows' eight codes
//! make one operand, two columns' sixteen stored bytes the other, as they
//! lie, and `usmmla` (unsigned activations as stored, `+128`, by signed
//! codes) adds a 2 x 2 block of sums, started at the rows' corrections as
//! the AVX-512 tile starts its (`TilePrims::BIASED`), so they are exact.
//! The sums go in and come back by `zip`/`uzp` of 32-bit lanes, once per
//! sub-block. Half the multiply instructions of the dotprod tile and no
//! per-load conversion or shuffle.
//!
//! Checked here under qemu for correctness only; its speed against the
//! dotprod row kernels is for an ARM board to measure.

use super::{sdot16, usmmla};
use crate::panel::{ColLayout, Tile, COLS, ROWS};

/// The columns [`gemm_i8_q8x32_8x32`] reads: four values together, signed (`sdot`).
pub(crate) const DOTPROD_LAYOUT: ColLayout = ColLayout {
    group: 4,
    biased: false,
};
/// The columns [`gemm_i8_q8x32_8x32_i8mm`] reads: eight values together,
/// stored `+ 128` (`usmmla`'s unsigned operand).
pub(crate) const I8MM_LAYOUT: ColLayout = ColLayout {
    group: 8,
    biased: true,
};
use super::{biased_sum_f32, SUM_BIAS};
use crate::panel::Shape;
use crate::tile_pass::TilePrims;
use std::arch::aarch64::*;

/// Whether every scale sub-block's sum of a shape is within `2^22` in
/// magnitude (`sub` codes of at most `max_code` times activations of at most
/// 128), which [`SUM_BIAS`] needs; every format's shape is (Q3_K's, the
/// largest, is exactly `2^22`), and the i8mm tile runs any other by the
/// scalar tile.
fn sums_fit(s: &Shape) -> bool {
    s.sub * s.max_code as usize * 128 <= 1 << 22
}

/// # Safety
/// The CPU must have NEON and dotprod; `t` built by [`Tile::new`].
#[target_feature(enable = "neon,dotprod")]
pub unsafe fn gemm_i8_q8x32_8x32(t: &Tile, out: &mut [f32; ROWS * COLS]) {
    // SAFETY: forwarded contract; each arm is for the tile's shape.
    unsafe { panel_tile_by_shape!(tile, t, out) }
}

/// The tile with i8mm (`smmla`, eight values of K at a time).
///
/// # Safety
/// The CPU must have NEON, dotprod and i8mm; `t` built by [`Tile::new`].
#[target_feature(enable = "neon,dotprod,i8mm")]
pub unsafe fn gemm_i8_q8x32_8x32_i8mm(t: &Tile, out: &mut [f32; ROWS * COLS]) {
    if !sums_fit(&t.shape) {
        // SAFETY: forwarded contract (the scalar tile needs no features).
        return unsafe { crate::panel::gemm_i8_q8x32_8x32(t, out) };
    }
    // SAFETY: forwarded contract; each arm is for the tile's shape.
    unsafe { panel_tile_by_shape!(tile_mm, t, out) }
}

/// Passes of 2 rows x 4 vectors of 4 columns: `Q` groups of four values per
/// scale sub-block, `G` sub-blocks per block, `P` pairs of mins per block.
///
/// # Safety
/// As [`gemm_i8_q8x32_8x32`], whose features it is compiled with.
#[inline(always)]
unsafe fn tile<const Q: usize, const G: usize, const P: usize>(
    t: &Tile,
    out: &mut [f32; ROWS * COLS],
) {
    // SAFETY: forwarded contract.
    unsafe { crate::tile_pass::tile::<Neon<false>, Q, G, P, 4, false>(t, out) }
}

/// [`tile`] with `smmla` (every shape's `Q` is even).
///
/// # Safety
/// As [`gemm_i8_q8x32_8x32_i8mm`], whose features it is compiled with.
#[inline(always)]
unsafe fn tile_mm<const Q: usize, const G: usize, const P: usize>(
    t: &Tile,
    out: &mut [f32; ROWS * COLS],
) {
    const { assert!(Q % 2 == 0) };
    // SAFETY: forwarded contract.
    unsafe { crate::tile_pass::tile::<Neon<true>, Q, G, P, 4, false>(t, out) }
}

/// NEON + dotprod, and with `MM` i8mm.
enum Neon<const MM: bool> {}

impl<const MM: bool> TilePrims for Neon<MM> {
    const LANES: usize = 4;
    const MATRIX: bool = MM;
    const BIASED: bool = if MM {
        I8MM_LAYOUT.biased
    } else {
        DOTPROD_LAYOUT.biased
    };
    const GROUP: usize = if MM {
        I8MM_LAYOUT.group
    } else {
        DOTPROD_LAYOUT.group
    };
    type I = int32x4_t;
    type F = float32x4_t;
    type A = int8x16_t;
    type W = int8x16_t;
    type S = int16x4x2_t;
    type M = int16x4_t;
    #[inline(always)]
    unsafe fn zero_i() -> int32x4_t {
        // SAFETY: the caller's features.
        unsafe { vdupq_n_s32(0) }
    }
    #[inline(always)]
    unsafe fn splat_i(x: i32) -> int32x4_t {
        // SAFETY: the caller's features.
        unsafe { vdupq_n_s32(x) }
    }
    #[inline(always)]
    unsafe fn zero_f() -> float32x4_t {
        // SAFETY: the caller's features.
        unsafe { vdupq_n_f32(0.0) }
    }
    #[inline(always)]
    unsafe fn load_a(p: *const u8) -> int8x16_t {
        // (The dotprod tile's columns are stored signed: its layout.)
        // SAFETY: the caller guarantees 16 readable bytes and the features.
        unsafe { vld1q_s8(p.cast()) }
    }
    #[inline(always)]
    unsafe fn splat_w<const U: bool>(w: i32) -> int8x16_t {
        // SAFETY: the caller's features.
        unsafe { vreinterpretq_s8_s32(vdupq_n_s32(w)) }
    }
    #[inline(always)]
    unsafe fn dot<const U: bool>(acc: int32x4_t, a: int8x16_t, w: int8x16_t) -> int32x4_t {
        // SAFETY: the caller's features (dotprod).
        unsafe { sdot16(acc, a, w) }
    }
    #[inline(always)]
    unsafe fn sub_dots<const Q: usize, const V: usize, const U: bool>(
        is: &mut [[int32x4_t; V]; 2],
        w: [*const u8; 2],
        a: *const u8,
    ) {
        if !MM {
            // SAFETY: forwarded contract.
            return unsafe { crate::tile_pass::dots_by_four::<Self, Q, V, U>(is, w, a) };
        }
        // SAFETY: the caller's features include i8mm (MM is only
        // instantiated by gemm_i8_q8x32_8x32_i8mm); reads as the contract says.
        unsafe {
            // Per column vector, the 2 x 2 sums of columns (0, 1) and (2, 3)
            // by the two rows, as `[c0·r0, c0·r1, c1·r0, c1·r1]`: the
            // activations as stored (+ 128, unsigned), the sums started at
            // the rows' corrections (BIASED). `is` goes in by zips and comes
            // back by the inverse unzips, so no zeroing and no adds.
            let mut mm: [[int32x4_t; 2]; V] = std::array::from_fn(|v| {
                [
                    vzip1q_s32(is[0][v], is[1][v]),
                    vzip2q_s32(is[0][v], is[1][v]),
                ]
            });
            for q in (0..Q).step_by(2) {
                let wv = vcombine_s8(
                    vld1_s8(w[0].add(4 * q).cast()),
                    vld1_s8(w[1].add(4 * q).cast()),
                );
                for (v, mm) in mm.iter_mut().enumerate() {
                    // Columns 4v, 4v + 1 and 4v + 2, 4v + 3: each pair's
                    // eight values of K, one operand each (GROUP 8).
                    let p = a.add(q * 4 * COLS + v * 32);
                    mm[0] = usmmla(mm[0], vld1q_u8(p), wv);
                    mm[1] = usmmla(mm[1], vld1q_u8(p.add(16)), wv);
                }
            }
            for (v, mm) in mm.iter().enumerate() {
                is[0][v] = vuzp1q_s32(mm[0], mm[1]);
                is[1][v] = vuzp2q_s32(mm[0], mm[1]);
            }
        }
    }
    /// The four columns' sum pairs, split by `ld2` into the pairs' first
    /// sums and their second sums (a column per lane).
    #[inline(always)]
    unsafe fn load_s(p: *const i32) -> int16x4x2_t {
        // SAFETY: the caller guarantees 4 readable i32 and the features.
        unsafe { vld2_s16(p.cast()) }
    }
    /// The row's min pair as lanes 0 and 1.
    #[inline(always)]
    unsafe fn splat_m(m: i32) -> int16x4_t {
        // SAFETY: the caller's features.
        unsafe { vreinterpret_s16_s32(vdup_n_s32(m)) }
    }
    /// Two `smlal` by lane: each column's first sum times the first min,
    /// its second sum times the second.
    #[inline(always)]
    unsafe fn dot_mins(acc: int32x4_t, s: int16x4x2_t, m: int16x4_t) -> int32x4_t {
        // SAFETY: the caller's features.
        unsafe { vmlal_lane_s16::<1>(vmlal_lane_s16::<0>(acc, s.0, m), s.1, m) }
    }
    #[inline(always)]
    unsafe fn fma_i(acc: float32x4_t, x: int32x4_t, s: f32) -> float32x4_t {
        // SAFETY: the caller's features.
        unsafe { vfmaq_f32(acc, vcvtq_f32_s32(x), vdupq_n_f32(s)) }
    }
    /// With i8mm, the sums carried as the bits of `1.5 * 2^23 + sum`
    /// ([`SUM_BIAS`]); with dotprod, plain.
    #[inline(always)]
    unsafe fn sum_start(corr: i32) -> int32x4_t {
        // SAFETY: the caller's features.
        unsafe {
            vdupq_n_s32(if MM {
                corr.wrapping_add(SUM_BIAS)
            } else {
                corr
            })
        }
    }
    /// With i8mm, the sum as a float by one subtraction: exact for
    /// `|sum| <= 2^22` (checked per shape by [`sums_fit`]), as `scvtf` is,
    /// which is two micro-ops on the Neoverse-V1 to the subtraction's one.
    /// (The dotprod tile keeps `scvtf`: llvm-mca priced the subtraction 6-12 %
    /// faster on the Neoverse-N1/V1 but up to 5 % slower on the Cortex-A55/A76.)
    #[inline(always)]
    unsafe fn fma_sum(acc: float32x4_t, x: int32x4_t, s: f32) -> float32x4_t {
        // SAFETY: the caller's features.
        unsafe {
            if !MM {
                return Self::fma_i(acc, x, s);
            }
            vfmaq_f32(acc, biased_sum_f32(x), vdupq_n_f32(s))
        }
    }
    #[inline(always)]
    unsafe fn load_f(p: *const f32) -> float32x4_t {
        // SAFETY: the caller guarantees 4 readable floats and the features.
        unsafe { vld1q_f32(p) }
    }
    #[inline(always)]
    unsafe fn fma(acc: float32x4_t, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // SAFETY: the caller's features.
        unsafe { vfmaq_f32(acc, a, b) }
    }
    #[inline(always)]
    unsafe fn store_f(p: *mut f32, v: float32x4_t) {
        // SAFETY: the caller guarantees 4 writable floats and the features.
        unsafe { vst1q_f32(p, v) }
    }
}

#[cfg(test)]
mod tests {
    use crate::formats::Format;
    use crate::panel::Shape;

    /// Every format's sub-block sums fit the i8mm tile's biased float form,
    /// so none falls back to the scalar tile.
    #[test]
    fn every_format_sums_fit_the_bias() {
        let fits = crate::each_format!(Format::WITH_KERNELS, |B, f, i| -> (Format, bool) {
            (f, super::sums_fit(&Shape::of::<B>()))
        });
        assert_eq!(fits.len(), Format::WITH_KERNELS.len());
        for (f, fit) in fits {
            assert!(fit, "{f}: a sub-block's sum can pass 2^22");
        }
    }
}
