//! The i8mm (`smmla`) row kernels' shared tile: two weight rows against
//! pairs of activation columns, for the small batches (2-15) below the panel
//! GEMM, of the formats of 32-value blocks (Q4_0, Q5_0, Q8_0, IQ4_NL and the
//! 2:4 forms). (The K-quants and IQ4_XS run their dotprod row kernels at
//! those batches: their steps here, the unpack and float steps counted,
//! priced 1.3-2.1x the dotprod kernel's cycles; docs/BENCHMARKS.md.) Each
//! format supplies one block position's step ([`PairBlock`]); a
//! single row, a single column, and the odd column of an odd count take the
//! format's dotprod kernel, since one column gives `smmla` nothing to pair.
//!
//! `smmla` multiplies two rows of eight `i8` by two rows of eight: pairing
//! the two weight rows' eight bytes (`zip1`/`zip2` of 64-bit lanes) with the
//! two columns' gives the 2 x 2 exact sums of a block position in lanes
//! `[r0·c0, r0·c1, r1·c0, r1·c1]`, so the scales, conversions and
//! multiply-adds are one vector operation for four dot products.

use super::smmla;
use std::arch::aarch64::*;

/// Two f16 bit patterns as `[a, a, b, b]` (`pairs`) or `[a, b, a, b]`, in f32.
#[inline]
#[target_feature(enable = "neon")]
pub(crate) fn scales4(a: u16, b: u16, pairs: bool) -> float32x4_t {
    let (a, b) = (a as u64, b as u64);
    super::f16x4_to_f32(if pairs {
        a | a << 16 | b << 32 | b << 48
    } else {
        a | b << 16 | a << 32 | b << 48
    })
}

/// `acc` plus the 2 x 2 sums of 16 values, rows `w0`, `w1` against columns
/// `y0`, `y1` (two `smmla`), exact.
#[inline]
#[target_feature(enable = "neon,i8mm")]
pub(crate) fn smmla16(
    acc: int32x4_t,
    w0: int8x16_t,
    w1: int8x16_t,
    y0: int8x16_t,
    y1: int8x16_t,
) -> int32x4_t {
    let (wa, wb) = (vreinterpretq_s64_s8(w0), vreinterpretq_s64_s8(w1));
    let (ya, yb) = (vreinterpretq_s64_s8(y0), vreinterpretq_s64_s8(y1));
    let lo = |a, b| vreinterpretq_s8_s64(vzip1q_s64(a, b));
    let hi = |a, b| vreinterpretq_s8_s64(vzip2q_s64(a, b));
    smmla(smmla(acc, lo(wa, wb), lo(ya, yb)), hi(wa, wb), hi(ya, yb))
}

/// [`smmla16`] over 32 values (two vectors each).
#[inline]
#[target_feature(enable = "neon,i8mm")]
pub(crate) fn smmla32(
    acc: int32x4_t,
    w0: [int8x16_t; 2],
    w1: [int8x16_t; 2],
    y0: [int8x16_t; 2],
    y1: [int8x16_t; 2],
) -> int32x4_t {
    smmla16(
        smmla16(acc, w0[0], w1[0], y0[0], y1[0]),
        w0[1],
        w1[1],
        y0[1],
        y1[1],
    )
}

/// A weight block as the 2 x 2 tile reads it.
pub(crate) trait PairBlock: Copy {
    type Act;
    /// Adds the four dot products of one block position, rows `b0`, `b1`
    /// against columns `a0`, `a1`, to `acc` (lanes as [`mm`](self)), and
    /// what the result subtracts (a format's mins) to `sub`.
    ///
    /// # Safety
    /// NEON, dotprod and i8mm (it is inlined into [`tile`]).
    unsafe fn step(
        b0: &Self,
        b1: &Self,
        a0: &Self::Act,
        a1: &Self::Act,
        acc: &mut float32x4_t,
        sub: &mut float32x4_t,
    );
    /// The dotprod row kernel's body for one row and `C` columns.
    ///
    /// # Safety
    /// As that body: NEON and dotprod, every `acts[c]` as long as `row`,
    /// `out.len() == C`.
    unsafe fn one_row<const C: usize>(row: &[Self], acts: &[&[Self::Act]], out: &mut [f32]);
}

/// `R` rows (consecutive in `row`) against `C` columns.
///
/// # Safety
/// NEON, dotprod and i8mm; `row.len() == R * n`, every `acts[c]` has `n`
/// blocks, `acts.len() == C`, `out.len() == R * C`.
#[inline]
#[target_feature(enable = "neon,dotprod,i8mm")]
pub(crate) unsafe fn tile<B: PairBlock, const R: usize, const C: usize>(
    row: &[B],
    acts: &[&[B::Act]],
    out: &mut [f32],
) {
    let n = row.len() / R;
    if R == 1 || C == 1 {
        for r in 0..R {
            // SAFETY: forwarded contract; row r and its C outputs.
            unsafe {
                B::one_row::<C>(&row[r * n..(r + 1) * n], acts, &mut out[r * C..(r + 1) * C])
            };
        }
        return;
    }
    let (r0, r1) = row.split_at(n);
    for p in 0..C / 2 {
        let (c0, c1) = (2 * p, 2 * p + 1);
        let (mut acc, mut sub) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
        for (i, (b0, b1)) in r0.iter().zip(r1).enumerate() {
            // SAFETY: the caller guarantees every acts[c] has n blocks; the
            // features are this function's.
            unsafe {
                let (a0, a1) = (
                    acts.get_unchecked(c0).get_unchecked(i),
                    acts.get_unchecked(c1).get_unchecked(i),
                );
                B::step(b0, b1, a0, a1, &mut acc, &mut sub);
            }
        }
        let r = vsubq_f32(acc, sub);
        out[c0] = vgetq_lane_f32::<0>(r);
        out[c1] = vgetq_lane_f32::<1>(r);
        out[C + c0] = vgetq_lane_f32::<2>(r);
        out[C + c1] = vgetq_lane_f32::<3>(r);
    }
    if C % 2 == 1 {
        let c = C - 1;
        for r in 0..R {
            let mut o = [0f32];
            // SAFETY: forwarded contract; row r against the last column.
            unsafe { B::one_row::<1>(&row[r * n..(r + 1) * n], &acts[c..], &mut o) };
            out[r * C + c] = o[0];
        }
    }
}
