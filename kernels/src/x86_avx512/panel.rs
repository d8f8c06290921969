//! The panel GEMM tile ([`crate::panel`]) with AVX-512 VNNI: [`ROWS`] (8)
//! weight rows x 32 activation columns, two 16-lane vectors per row.
//!
//! Per four values of K: two 64-byte loads of the interleaved activations
//! (`[column][4]` as u8), then per row one broadcast of its four `i8` codes
//! (the memory operand of `vpdpbusd`) and two `vpdpbusd`: 16 multiply-adds of
//! 64 products each per 2 loads + 8 broadcasts, in 16 independent chains (8,
//! with 4 rows, left the unit idle part of the time). Per scale sub-block and row
//! one conversion and one FMA per vector; per block the mins as `vpdpwssd` of
//! i16 pairs (weights' mins x columns' code sums), one conversion, one FMA,
//! and one FMA by the activation scale. The float steps are
//! [`crate::panel::gemm_i8_q8x32_8x32`]'s, in its order, so the two agree bit
//! for bit.

use crate::panel::{Shape, Tile, COLS, ROWS};
use std::arch::x86_64::*;

/// # Safety
/// The CPU must have AVX-512 F/BW/VL and VNNI; `t` built by [`Tile::new`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
pub unsafe fn gemm_i8_q8x32_8x32(t: &Tile, out: &mut [f32; ROWS * COLS]) {
    // SAFETY: forwarded contract; each arm is for the tile's shape.
    unsafe { panel_tile_by_shape!(tile, t, out) }
}

/// `Q` groups of four values per scale sub-block, `G` sub-blocks per block,
/// `P` pairs of mins per block.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn tile<const Q: usize, const G: usize, const P: usize>(
    t: &Tile,
    out: &mut [f32; ROWS * COLS],
) {
    let Shape { sub, block, .. } = t.shape;
    let (k, nsub, nblk) = (t.k, t.k / sub, t.k / block);
    let codes = t.codes.as_ptr();
    let acodes = t.acodes().as_ptr();
    let (asums, ascales) = (t.asums().as_ptr(), t.ascales().as_ptr());
    let mut acc = [[_mm512_setzero_ps(); 2]; ROWS];
    // SAFETY (every pointer read below): Tile::new checked codes (ROWS * k),
    // scale/corr (ROWS * nsub), mins (ROWS * nblk * P), min_scale (ROWS * nblk
    // when P > 0), acodes (k * COLS bytes), asums (nblk * P * COLS) and
    // ascales (nblk * COLS); kq < k / 4, g < nsub, b < nblk.
    unsafe {
        for b in 0..nblk {
            let mut sb = [[_mm512_setzero_ps(); 2]; ROWS];
            for g in b * G..(b + 1) * G {
                let mut is: [[__m512i; 2]; ROWS] = std::array::from_fn(|r| {
                    let c = _mm512_set1_epi32(*t.corr.get_unchecked(r * nsub + g));
                    [c, c]
                });
                for kq in g * Q..(g + 1) * Q {
                    let a0 = _mm512_loadu_si512(acodes.add(kq * 4 * COLS).cast());
                    let a1 = _mm512_loadu_si512(acodes.add(kq * 4 * COLS + 64).cast());
                    for (r, is) in is.iter_mut().enumerate() {
                        let w = _mm512_set1_epi32(
                            codes.add(r * k + 4 * kq).cast::<i32>().read_unaligned(),
                        );
                        is[0] = _mm512_dpbusd_epi32(is[0], a0, w);
                        is[1] = _mm512_dpbusd_epi32(is[1], a1, w);
                    }
                }
                for r in 0..ROWS {
                    let scale = _mm512_set1_ps(*t.scale.get_unchecked(r * nsub + g));
                    for h in 0..2 {
                        sb[r][h] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is[r][h]), scale, sb[r][h]);
                    }
                }
            }
            if P > 0 {
                let mut im = [[_mm512_setzero_si512(); 2]; ROWS];
                for p in b * P..(b + 1) * P {
                    let s0 = _mm512_loadu_si512(asums.add(p * COLS).cast());
                    let s1 = _mm512_loadu_si512(asums.add(p * COLS + 16).cast());
                    for (r, im) in im.iter_mut().enumerate() {
                        let m = _mm512_set1_epi32(*t.mins.get_unchecked(r * nblk * P + p));
                        im[0] = _mm512_dpwssd_epi32(im[0], s0, m);
                        im[1] = _mm512_dpwssd_epi32(im[1], s1, m);
                    }
                }
                for r in 0..ROWS {
                    let ms = _mm512_set1_ps(*t.min_scale.get_unchecked(r * nblk + b));
                    for h in 0..2 {
                        sb[r][h] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(im[r][h]), ms, sb[r][h]);
                    }
                }
            }
            let ad = [
                _mm512_loadu_ps(ascales.add(b * COLS)),
                _mm512_loadu_ps(ascales.add(b * COLS + 16)),
            ];
            for r in 0..ROWS {
                for h in 0..2 {
                    acc[r][h] = _mm512_fmadd_ps(sb[r][h], ad[h], acc[r][h]);
                }
            }
        }
        for r in 0..ROWS {
            for h in 0..2 {
                _mm512_storeu_ps(out.as_mut_ptr().add(r * COLS + 16 * h), acc[r][h]);
            }
        }
    }
}
