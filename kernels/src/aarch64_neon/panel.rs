//! The panel GEMM tile ([`crate::panel`]) with NEON dotprod (`sdot`):
//! [`ROWS`] weight rows x 32 activation columns, done as passes of 2 rows x
//! 16 columns so that the 8 integer accumulators, 4 activation vectors and
//! the per-sub-block float sums fit the 32 vector registers.
//!
//! Per four values of K: four 16-byte loads of the interleaved activations
//! (`[column][4]`, stored `+128` as u8, taken back to signed with one `eor`
//! each, shared by the two rows), then per row one `ld1r`-style broadcast of
//! its four `i8` codes and four `sdot`: exactly `sum(code * a)`, which the
//! scalar tile reaches from its correction instead. Mins: the columns' i16
//! code-sum pairs times the row's i16 min pair (`smull`/`smull2`, pairwise
//! add), exact. The float steps are [`crate::panel::gemm_i8_q8x32_8x32`]'s,
//! fused multiply-adds in its order, so the two agree bit for bit.
//!
//! Checked here under qemu for correctness only; its speed against the
//! dotprod row kernels is for an ARM board to measure.

use super::sdot16;
use crate::panel::{Shape, Tile, COLS, ROWS};
use std::arch::aarch64::*;

/// Vectors of 4 columns per pass.
const V: usize = 4;

/// # Safety
/// The CPU must have NEON and dotprod; `t` built by [`Tile::new`].
#[target_feature(enable = "neon,dotprod")]
pub unsafe fn gemm_i8_q8x32_8x32(t: &Tile, out: &mut [f32; ROWS * COLS]) {
    // SAFETY: forwarded contract; each arm is for the tile's shape.
    unsafe { panel_tile_by_shape!(tile, t, out) }
}

/// `Q` groups of four values per scale sub-block, `G` sub-blocks per block,
/// `P` pairs of mins per block.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn tile<const Q: usize, const G: usize, const P: usize>(
    t: &Tile,
    out: &mut [f32; ROWS * COLS],
) {
    for r0 in (0..ROWS).step_by(2) {
        for c0 in (0..COLS / 4).step_by(V) {
            // SAFETY: forwarded contract; rows r0, r0 + 1 < ROWS; vectors c0 + V <= COLS / 4.
            unsafe { pass::<Q, G, P>(t, out, r0, c0) };
        }
    }
}

/// Rows `r0`, `r0 + 1` against the column vectors `c0 .. c0 + V` (4 columns each).
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn pass<const Q: usize, const G: usize, const P: usize>(
    t: &Tile,
    out: &mut [f32; ROWS * COLS],
    r0: usize,
    c0: usize,
) {
    let Shape { sub, block, .. } = t.shape;
    let (k, nsub, nblk) = (t.k, t.k / sub, t.k / block);
    let codes = t.codes.as_ptr();
    let acodes = t.acodes().as_ptr();
    let (asums, ascales) = (t.asums().as_ptr(), t.ascales().as_ptr());
    let flip = vdupq_n_u8(0x80);
    let mut acc = [[vdupq_n_f32(0.0); V]; 2];
    // SAFETY (every pointer read below): Tile::new checked codes (ROWS * k),
    // scale (ROWS * nsub), mins (ROWS * nblk * P), min_scale (ROWS * nblk when
    // P > 0), acodes (k * COLS bytes: kq * 128 + (c0 + v) * 16 + 16 <= k * COLS),
    // asums (nblk * P * COLS i32) and ascales (nblk * COLS); r0 + 1 < ROWS.
    unsafe {
        for b in 0..nblk {
            let mut sb = [[vdupq_n_f32(0.0); V]; 2];
            for g in b * G..(b + 1) * G {
                let mut is = [[vdupq_n_s32(0); V]; 2];
                for kq in g * Q..(g + 1) * Q {
                    let a: [int8x16_t; V] = std::array::from_fn(|v| {
                        let p = acodes.add(kq * 4 * COLS + (c0 + v) * 16);
                        vreinterpretq_s8_u8(veorq_u8(vld1q_u8(p), flip))
                    });
                    for (r, is) in is.iter_mut().enumerate() {
                        let w = codes
                            .add((r0 + r) * k + 4 * kq)
                            .cast::<i32>()
                            .read_unaligned();
                        let w = vreinterpretq_s8_s32(vdupq_n_s32(w));
                        for v in 0..V {
                            is[v] = sdot16(is[v], a[v], w);
                        }
                    }
                }
                for (r, sb) in sb.iter_mut().enumerate() {
                    let scale = vdupq_n_f32(*t.scale.get_unchecked((r0 + r) * nsub + g));
                    for v in 0..V {
                        sb[v] = vfmaq_f32(sb[v], vcvtq_f32_s32(is[r][v]), scale);
                    }
                }
            }
            if P > 0 {
                let mut im = [[vdupq_n_s32(0); V]; 2];
                for p in b * P..(b + 1) * P {
                    let s: [int16x8_t; V] = std::array::from_fn(|v| {
                        vld1q_s16(asums.add(p * COLS + (c0 + v) * 4).cast())
                    });
                    for (r, im) in im.iter_mut().enumerate() {
                        let m = *t.mins.get_unchecked((r0 + r) * nblk * P + p);
                        let m = vreinterpretq_s16_s32(vdupq_n_s32(m));
                        for v in 0..V {
                            let lo = vmull_s16(vget_low_s16(s[v]), vget_low_s16(m));
                            let hi = vmull_high_s16(s[v], m);
                            im[v] = vaddq_s32(im[v], vpaddq_s32(lo, hi));
                        }
                    }
                }
                for (r, sb) in sb.iter_mut().enumerate() {
                    let ms = vdupq_n_f32(*t.min_scale.get_unchecked((r0 + r) * nblk + b));
                    for v in 0..V {
                        sb[v] = vfmaq_f32(sb[v], vcvtq_f32_s32(im[r][v]), ms);
                    }
                }
            }
            for v in 0..V {
                let ad = vld1q_f32(ascales.add(b * COLS + (c0 + v) * 4));
                for r in 0..2 {
                    acc[r][v] = vfmaq_f32(acc[r][v], sb[r][v], ad);
                }
            }
        }
        for r in 0..2 {
            for v in 0..V {
                vst1q_f32(
                    out.as_mut_ptr().add((r0 + r) * COLS + (c0 + v) * 4),
                    acc[r][v],
                );
            }
        }
    }
}
