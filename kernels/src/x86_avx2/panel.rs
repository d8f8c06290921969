//! The panel GEMM tile ([`crate::panel`]) with AVX2: [`ROWS`] weight rows x
//! 32 activation columns, done in chunks of K small enough that the chunk's
//! interleaved activations (8 KB) stay in L1 while every pass of `R` rows x
//! `V` vectors of 8 columns runs over them. The accumulators live in `out`
//! between chunks (one load and store per block and vector); the float steps
//! are the scalar tile's fused multiply-adds in its order, so every shape
//! equals [`crate::panel::gemm_i8_q8x32_8x32`] bit for bit.
//!
//! Without VNNI the integer products come from `vpmaddubsw` (u8 x i8, pairs
//! added into i16, saturating), in one of three ways chosen by the format:
//!
//! - **Narrow codes** (at most 64, [`crate::panel::PanelFormat::MAX_CODE`]:
//!   Q4_0, Q5_0, Q4_K, Q5_K, Q6_K and the ternary formats): the activations
//!   as stored (`+ 128`, a `u8` up to 255) times the codes: a pair is at
//!   most `2 * 255 * max` in magnitude, so `S` of them add up in i16 without
//!   overflow (32 for TQ1_0 and 16 for TQ2_0, whose one scale per block
//!   lets the sums run across its 32-value runs; 8 for Q4_0, 4 for Q5_0 and
//!   Q4_K, 2 for Q5_K and Q6_K) before one `vpmaddwd` by ones widens them. The sum starts at
//!   the row's correction `-128 * sum(codes)`, which makes it exactly
//!   `sum(code * a)`: per 32 products, one multiply-add and one add where
//!   the wide form needs four ops.
//! - **Factored codes** ([`crate::panel::PanelFormat::factor`]): each value
//!   is a block's float `d` times an integer scale per 16 values times a
//!   factor (Q3_K and Q2_K: at most 4 in magnitude, their codes divided by
//!   the scales they carry; the i-quants: their grid codes, at most 15 for
//!   IQ3_S, 43 for IQ2_*, and IQ3_XXS's all-even codes halved, 31). The
//!   factors are multiplied as narrow codes (`S` steps in i16: 4 for Q3_K,
//!   Q2_K and IQ3_S, 2 for IQ3_XXS, 1 for IQ2_*), and the `vpmaddwd` that widens them multiplies by the 16 values'
//!   scale instead of ones: the whole block's sum exactly in i32 (at most
//!   256 x 255 x 31 x 62 for IQ3_XXS), then one float step per block where
//!   the i-quants' codes would need one per 16 or 32 values.
//! - **Wide codes** (Q8_0, IQ4_NL, IQ4_XS, up to 128): activations taken back to signed
//!   (`^ 0x80`) and multiplied as `|w| x sign(a, w)` (`vpabsb` per row and
//!   four values, `vpsignb` per vector): pairs of at most 128 x 128, widened
//!   at once with `vpmaddwd` by ones.
//!
//! Q3_K and Q2_K unpacked without their factors (a fill for another ISA;
//! the matmul and the tests fill for the tile's) take the scalar tile.

use crate::panel::{Shape, Tile, COLS, FACTOR_SUB, ROWS};
use std::arch::x86_64::*;

/// Columns per vector.
const LANES: usize = 8;

/// # Safety
/// The CPU must have AVX2 and FMA; `t` built by [`Tile::new`].
#[target_feature(enable = "avx2,fma")]
pub unsafe fn gemm_i8_q8x32_8x32(t: &Tile, out: &mut [f32; ROWS * COLS]) {
    // Arms: <Q groups of four values per scale sub-block, G sub-blocks per
    // block, P min pairs per block, R rows x V vectors per pass, S i16 steps
    // (0: wide), CH blocks per chunk, F factored>. A narrow arm's S times the
    // largest pair, 2 * 255 * max_code (max factor when factored), stays
    // within i16 (matched on max_code; asserted in `tile`).
    // SAFETY: forwarded contract; each arm is the tile's shape.
    let factored = !t.factors.is_empty();
    unsafe {
        match (
            t.shape.block,
            t.shape.sub,
            t.shape.pairs(),
            t.shape.max_code,
            factored,
        ) {
            (256, 32, 4, 15, _) => tile::<8, 8, 4, 2, 2, 4, 1, false>(t, out), // Q4_K: 4 x 7650
            (256, 32, 4, 31, _) => tile::<8, 8, 4, 2, 2, 2, 1, false>(t, out), // Q5_K: 2 x 15810
            (32, 32, 0, 8, _) => tile::<8, 1, 0, 2, 2, 8, 8, false>(t, out),   // Q4_0: 8 x 4080
            (32, 32, 0, 16, _) => tile::<8, 1, 0, 2, 2, 4, 8, false>(t, out),  // Q5_0: 4 x 8160
            (256, 16, 0, 32, _) => tile::<4, 16, 0, 2, 2, 2, 1, false>(t, out), // Q6_K: 2 x 16320
            (256, 256, 8, _, true) => tile::<64, 1, 8, 2, 2, 4, 1, true>(t, out), // Q2_K: 4 x 2040
            (256, 256, 0, _, true) => tile::<64, 1, 0, 2, 2, 4, 1, true>(t, out), // Q3_K: 4 x 2040
            (256, 32, 0, 15, true) => tile::<64, 1, 0, 2, 2, 4, 1, true>(t, out), // IQ3_S: 4 x 7650
            (256, _, 0, 43, true) => tile::<64, 1, 0, 2, 2, 1, 1, true>(t, out), // IQ2_*: 21930
            (256, _, 0, 62, true) => tile::<64, 1, 0, 2, 2, 2, 1, true>(t, out), // IQ3_XXS: 2 x 15810 (halved codes)
            (256, 256, 0, 1, false) => tile::<64, 1, 0, 2, 2, 32, 1, false>(t, out), // TQ1_0: 32 x 510
            (256, 256, 0, 2, false) => tile::<64, 1, 0, 2, 2, 16, 1, false>(t, out), // TQ2_0: 16 x 1020
            (256, 32, 0, 15, _) => tile::<8, 8, 0, 2, 2, 4, 1, false>(t, out), // IQ3_S: 4 x 7650
            (256, 32, 0, 43, _) => tile::<8, 8, 0, 2, 2, 1, 1, false>(t, out), // IQ2_XXS: 21930
            (256, 32, 0, 62, _) => tile::<8, 8, 0, 2, 2, 1, 1, false>(t, out), // IQ3_XXS: 31620
            (256, 16, 0, 43, _) => tile::<4, 16, 0, 2, 2, 1, 1, false>(t, out), // IQ2_XS, IQ2_S: 21930
            (32, 32, 0, _, _) => tile::<8, 1, 0, 2, 2, 0, 8, false>(t, out),    // Q8_0, IQ4_NL
            (256, 32, 0, _, _) => tile::<8, 8, 0, 2, 2, 0, 1, false>(t, out),   // IQ4_XS
            // Q3_K / Q2_K unpacked without factors (a fill for another ISA).
            _ => crate::panel::gemm_i8_q8x32_8x32(t, out),
        }
    }
}

/// The tile as chunks of `CH` blocks, each run as passes of `R` rows x `V`
/// vectors. `F`: the factors (and their scales per 16 values, `S` steps)
/// take the codes' place.
///
/// # Safety
/// AVX2 and FMA; `t` built by [`Tile::new`] for a shape with these `Q`, `G`,
/// `P`, with factors where `F`; `R` divides `ROWS`, `V` divides `COLS / 8`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile<
    const Q: usize,
    const G: usize,
    const P: usize,
    const R: usize,
    const V: usize,
    const S: usize,
    const CH: usize,
    const F: bool,
>(
    t: &Tile,
    out: &mut [f32; ROWS * COLS],
) {
    // The i16 sums of S steps cannot overflow (the arms match on max_code; this keeps them honest).
    let max = if F {
        t.shape.max_factor
    } else {
        t.shape.max_code
    };
    assert!(S == 0 || S * 2 * 255 * max as usize <= i16::MAX as usize);
    assert!(
        !F || (t.factors.len() == t.codes.len()
            && S > 0
            && FACTOR_SUB.is_multiple_of(4 * S)
            && G == 1
            && Q * 4 == t.shape.block)
    );
    // The passes add into out, chunk after chunk.
    out.fill(0.0);
    let nblk = t.k / t.shape.block;
    for b0 in (0..nblk).step_by(CH) {
        let blocks = b0..(b0 + CH).min(nblk);
        for r0 in (0..ROWS).step_by(R) {
            for c0 in (0..COLS / LANES).step_by(V) {
                // SAFETY: forwarded contract; r0 + R <= ROWS, (c0 + V) * 8 <= COLS, blocks < nblk.
                unsafe { pass::<Q, G, P, R, V, S, F>(t, out, blocks.clone(), r0, c0) };
            }
        }
    }
}

/// Rows `r0 .. r0 + R` against column vectors `c0 .. c0 + V` over `blocks`,
/// adding into the accumulators in `out`.
///
/// # Safety
/// As [`tile`]; `r0 + R <= ROWS`, `(c0 + V) * 8 <= COLS`, `blocks.end <= k / block`.
/// (Compiled for the features, so that its closures are too.)
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn pass<
    const Q: usize,
    const G: usize,
    const P: usize,
    const R: usize,
    const V: usize,
    const S: usize,
    const F: bool,
>(
    t: &Tile,
    out: &mut [f32; ROWS * COLS],
    blocks: std::ops::Range<usize>,
    r0: usize,
    c0: usize,
) {
    let Shape { sub, block, .. } = t.shape;
    let (k, nsub, nblk) = (t.k, t.k / sub, t.k / block);
    // Factored: the factors, scaled per 16 values by factor_scales.
    let codes = if F {
        t.factors.as_ptr()
    } else {
        t.codes.as_ptr()
    };
    let fscales = t.factor_scales.as_ptr();
    let acodes = t.acodes().as_ptr();
    let (asums, ascales) = (t.asums().as_ptr(), t.ascales().as_ptr());
    let o = |r: usize, v: usize| (r0 + r) * COLS + (c0 + v) * LANES;
    // SAFETY (every pointer read below): Tile::new checked codes and, where
    // F, factors (ROWS * k), factor_scales (ROWS * k / 16: kr and kq0 are
    // multiples of S steps, which S divides, so 4 * kq / 16 indexes their
    // 16 values), factor_d and factor_corr (ROWS * nblk), scale and corr (ROWS * nsub), mins (ROWS * nblk * P), min_scale
    // (ROWS * nblk when P > 0), acodes (k * COLS bytes: kq * 4 * COLS +
    // (c0 + v) * 32 + 32 <= k * COLS), asums (nblk * P * COLS i32) and ascales
    // (nblk * COLS); r0 + R <= ROWS; out holds ROWS * COLS. The features are the caller's.
    unsafe {
        let ones = _mm256_set1_epi16(1);
        let mut acc: [[__m256; V]; R] = std::array::from_fn(|r| {
            std::array::from_fn(|v| _mm256_loadu_ps(out.as_ptr().add(o(r, v))))
        });
        for b in blocks {
            let mut sb = [[_mm256_setzero_ps(); V]; R];
            for g in b * G..(b + 1) * G {
                let mut is: [[__m256i; V]; R] = std::array::from_fn(|r| {
                    [if S > 0 {
                        _mm256_set1_epi32(if F {
                            *t.factor_corr.get_unchecked((r0 + r) * nblk + b)
                        } else {
                            *t.corr.get_unchecked((r0 + r) * nsub + g)
                        })
                    } else {
                        _mm256_setzero_si256()
                    }; V]
                });
                let load_a = |kq: usize, v: usize| {
                    let a =
                        _mm256_loadu_si256(acodes.add(kq * 4 * COLS + (c0 + v) * 4 * LANES).cast());
                    if S > 0 {
                        a
                    } else {
                        _mm256_xor_si256(a, _mm256_set1_epi8(-128))
                    }
                };
                let w_at = |r: usize, kq: usize| {
                    _mm256_set1_epi32(
                        codes
                            .add((r0 + r) * k + 4 * kq)
                            .cast::<i32>()
                            .read_unaligned(),
                    )
                };
                let fscale = |r: usize, kq: usize| {
                    _mm256_set1_epi16(*fscales.add(((r0 + r) * k + 4 * kq) / FACTOR_SUB))
                };
                if F && S == 1 {
                    // One step per i16 sum: each product widened at once by
                    // its row's scale, loaded once per 16 values.
                    for kr in (g * Q..(g + 1) * Q).step_by(FACTOR_SUB / 4) {
                        let m: [__m256i; R] = std::array::from_fn(|r| fscale(r, kr));
                        for kq in kr..kr + FACTOR_SUB / 4 {
                            let a: [__m256i; V] = std::array::from_fn(|v| load_a(kq, v));
                            for (r, is) in is.iter_mut().enumerate() {
                                let w = w_at(r, kq);
                                for v in 0..V {
                                    let p = _mm256_maddubs_epi16(a[v], w);
                                    is[v] = _mm256_add_epi32(is[v], _mm256_madd_epi16(p, m[r]));
                                }
                            }
                        }
                    }
                } else if S > 0 {
                    for kq0 in (g * Q..(g + 1) * Q).step_by(S) {
                        let mut p = [[_mm256_setzero_si256(); V]; R];
                        for kq in kq0..kq0 + S {
                            let a: [__m256i; V] = std::array::from_fn(|v| load_a(kq, v));
                            for (r, p) in p.iter_mut().enumerate() {
                                let w = w_at(r, kq);
                                for v in 0..V {
                                    p[v] = _mm256_add_epi16(p[v], _mm256_maddubs_epi16(a[v], w));
                                }
                            }
                        }
                        for r in 0..R {
                            // Factored: S steps stay within one scale's 16 values.
                            let m = if F { fscale(r, kq0) } else { ones };
                            for v in 0..V {
                                is[r][v] =
                                    _mm256_add_epi32(is[r][v], _mm256_madd_epi16(p[r][v], m));
                            }
                        }
                    }
                } else {
                    for kq in g * Q..(g + 1) * Q {
                        let a: [__m256i; V] = std::array::from_fn(|v| load_a(kq, v));
                        for (r, is) in is.iter_mut().enumerate() {
                            let w = w_at(r, kq);
                            let wa = _mm256_abs_epi8(w);
                            for v in 0..V {
                                let p = _mm256_maddubs_epi16(wa, _mm256_sign_epi8(a[v], w));
                                is[v] = _mm256_add_epi32(is[v], _mm256_madd_epi16(p, ones));
                            }
                        }
                    }
                }
                for r in 0..R {
                    let scale = _mm256_set1_ps(if F {
                        *t.factor_d.get_unchecked((r0 + r) * nblk + b)
                    } else {
                        *t.scale.get_unchecked((r0 + r) * nsub + g)
                    });
                    for v in 0..V {
                        sb[r][v] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is[r][v]), scale, sb[r][v]);
                    }
                }
            }
            if P > 0 {
                let mut im = [[_mm256_setzero_si256(); V]; R];
                for p in b * P..(b + 1) * P {
                    let s: [__m256i; V] = std::array::from_fn(|v| {
                        _mm256_loadu_si256(asums.add(p * COLS + (c0 + v) * LANES).cast())
                    });
                    for (r, im) in im.iter_mut().enumerate() {
                        let m = _mm256_set1_epi32(*t.mins.get_unchecked((r0 + r) * nblk * P + p));
                        for v in 0..V {
                            im[v] = _mm256_add_epi32(im[v], _mm256_madd_epi16(s[v], m));
                        }
                    }
                }
                for r in 0..R {
                    let ms = _mm256_set1_ps(*t.min_scale.get_unchecked((r0 + r) * nblk + b));
                    for v in 0..V {
                        sb[r][v] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(im[r][v]), ms, sb[r][v]);
                    }
                }
            }
            for v in 0..V {
                let ad = _mm256_loadu_ps(ascales.add(b * COLS + (c0 + v) * LANES));
                for r in 0..R {
                    acc[r][v] = _mm256_fmadd_ps(sb[r][v], ad, acc[r][v]);
                }
            }
        }
        for r in 0..R {
            for v in 0..V {
                _mm256_storeu_ps(out.as_mut_ptr().add(o(r, v)), acc[r][v]);
            }
        }
    }
}
