//! The panel GEMM tile ([`crate::panel`]) with AVX2: [`ROWS`] weight rows x 32
//! activation columns, done as passes of 2 rows x 16 columns (8 for Q4_K,
//! whose per-sub-block sums need more registers) to fit 16 vector registers.
//!
//! Without VNNI there is no u8 x i8 multiply-add into i32, and `vpmaddubsw`
//! saturates its i16 pair sums, which codes up to +-128 times activations up
//! to 255 (stored + 128) would overflow. So the activations are taken back to
//! signed (`^ 0x80`, once per load, shared by the rows) and multiplied as
//! `|w| x sign(a, w)` (`vpabsb` once per row and four values, `vpsignb` per
//! vector): pairs of at most 128 x 127, no saturation. `vpmaddwd` by ones
//! widens to i32. These sums are exactly `sum(code * a)`, which the scalar
//! tile reaches from the correction instead, so the float steps, done in its
//! order, give its results bit for bit.

use crate::panel::{Shape, Tile, COLS, ROWS};
use std::arch::x86_64::*;

/// # Safety
/// The CPU must have AVX2 and FMA; `t` built by [`Tile::new`].
#[target_feature(enable = "avx2,fma")]
pub unsafe fn gemm_i8_q8x32_8x32(t: &Tile, out: &mut [f32; ROWS * COLS]) {
    // SAFETY: forwarded contract; each arm is the tile's shape.
    unsafe {
        match (t.shape.block, t.shape.sub, t.shape.pairs()) {
            (256, 32, 4) => tile::<8, 8, 4, 1, true>(t, out), // Q4_K: codes 0..=15
            (256, 256, 8) => tile::<64, 1, 8, 2, true>(t, out), // Q2_K: codes 0..=45
            (256, 256, 0) => tile::<64, 1, 0, 2, false>(t, out), // Q3_K
            (32, 32, 0) => tile::<8, 1, 0, 2, false>(t, out), // Q4_0, Q8_0 (and 2:4)
            _ => crate::panel::gemm_i8_q8x32_8x32(t, out),
        }
    }
}

/// `Q` groups of four values per scale sub-block, `G` sub-blocks per block,
/// `P` pairs of mins per block, `V` vectors of 8 columns per pass; `U`: the
/// codes are never negative (and at most 45), so they multiply the signed
/// activations directly (pairs of at most 2 x 45 x 127 in i16), without the
/// `vpabsb` / `vpsignb`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile<const Q: usize, const G: usize, const P: usize, const V: usize, const U: bool>(
    t: &Tile,
    out: &mut [f32; ROWS * COLS],
) {
    for r0 in (0..ROWS).step_by(2) {
        for c0 in (0..COLS / 8).step_by(V) {
            // SAFETY: forwarded contract; rows r0, r0 + 1 < ROWS; vectors c0 + V <= COLS / 8.
            unsafe { pass::<Q, G, P, V, U>(t, out, r0, c0) };
        }
    }
}

/// Rows `r0`, `r0 + 1` against the column vectors `c0 .. c0 + V` (8 columns each).
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn pass<const Q: usize, const G: usize, const P: usize, const V: usize, const U: bool>(
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
    let (flip, ones) = (_mm256_set1_epi8(-128), _mm256_set1_epi16(1));
    let mut acc = [[_mm256_setzero_ps(); V]; 2];
    // SAFETY (every pointer read below): Tile::new checked codes (ROWS * k),
    // scale (ROWS * nsub), mins (ROWS * nblk * P), min_scale (ROWS * nblk when
    // P > 0), acodes (k * COLS bytes: kq * 128 + (c0 + v) * 32 + 32 <= k * COLS),
    // asums (nblk * P * COLS i32) and ascales (nblk * COLS); r0 + 1 < ROWS.
    unsafe {
        for b in 0..nblk {
            let mut sb = [[_mm256_setzero_ps(); V]; 2];
            for g in b * G..(b + 1) * G {
                let mut is = [[_mm256_setzero_si256(); V]; 2];
                for kq in g * Q..(g + 1) * Q {
                    let a: [__m256i; V] = std::array::from_fn(|v| {
                        let p = acodes.add(kq * 4 * COLS + (c0 + v) * 32);
                        _mm256_xor_si256(_mm256_loadu_si256(p.cast()), flip)
                    });
                    for (r, is) in is.iter_mut().enumerate() {
                        let w = _mm256_set1_epi32(
                            codes
                                .add((r0 + r) * k + 4 * kq)
                                .cast::<i32>()
                                .read_unaligned(),
                        );
                        let wa = if U { w } else { _mm256_abs_epi8(w) };
                        for v in 0..V {
                            let av = if U { a[v] } else { _mm256_sign_epi8(a[v], w) };
                            let p = _mm256_maddubs_epi16(wa, av);
                            is[v] = _mm256_add_epi32(is[v], _mm256_madd_epi16(p, ones));
                        }
                    }
                }
                for (r, sb) in sb.iter_mut().enumerate() {
                    let scale = _mm256_set1_ps(*t.scale.get_unchecked((r0 + r) * nsub + g));
                    for v in 0..V {
                        sb[v] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is[r][v]), scale, sb[v]);
                    }
                }
            }
            if P > 0 {
                let mut im = [[_mm256_setzero_si256(); V]; 2];
                for p in b * P..(b + 1) * P {
                    let s: [__m256i; V] = std::array::from_fn(|v| {
                        _mm256_loadu_si256(asums.add(p * COLS + (c0 + v) * 8).cast())
                    });
                    for (r, im) in im.iter_mut().enumerate() {
                        let m = _mm256_set1_epi32(*t.mins.get_unchecked((r0 + r) * nblk * P + p));
                        for v in 0..V {
                            im[v] = _mm256_add_epi32(im[v], _mm256_madd_epi16(s[v], m));
                        }
                    }
                }
                for (r, sb) in sb.iter_mut().enumerate() {
                    let ms = _mm256_set1_ps(*t.min_scale.get_unchecked((r0 + r) * nblk + b));
                    for v in 0..V {
                        sb[v] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(im[r][v]), ms, sb[v]);
                    }
                }
            }
            for v in 0..V {
                let ad = _mm256_loadu_ps(ascales.add(b * COLS + (c0 + v) * 8));
                for r in 0..2 {
                    acc[r][v] = _mm256_fmadd_ps(sb[r][v], ad, acc[r][v]);
                }
            }
        }
        for r in 0..2 {
            for v in 0..V {
                _mm256_storeu_ps(
                    out.as_mut_ptr().add((r0 + r) * COLS + (c0 + v) * 8),
                    acc[r][v],
                );
            }
        }
    }
}
