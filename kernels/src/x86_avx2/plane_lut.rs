//! The lookup-table GEMV of the sign-plane layouts
//! ([`crate::formats::planes_x64`]) on AVX2: per four weights one
//! `vpshufb` lookup of a 16-entry table per plane instead of grid loads,
//! sign loads and their shuffles.
//!
//! Per block and column, 32 pairs of tables (`TL`, `TH`; one four-value
//! group of the sub-block's first half in the low 128-bit lane, the
//! matching group of the second half in the high lane), built by
//! `vpshufb` broadcasts of the activations' nibbles and masks. Then per
//! tile of 8 rows and two group pairs, one 32-byte load holds planes 0 and
//! 1 of the 8 rows for both lanes (a mask, or a shift and a mask, picks the
//! pair's nibble); planes 2 and 3 come the same way from a second array
//! (four and five planes), or a lone plane from one `vpmovzxbw` per two
//! group pairs, its zero high bytes reading `Y`. The four group pairs'
//! lookups of one table add up in bytes (at most 4 * 60), then one
//! `vpmaddubsw` by the pair's coefficients per table and sub-block, adds in
//! 16 bits; per sub-block a constant (the `TH` bias, and `Y_FIX * Y` from
//! the activations' nibble sums), then `vpmaddwd` by the scales
//! (interleaved `TL`, `TH` sums against `s`, `16 s`) into 32 bits, or for
//! the ternary tiles, which have no scales, once per block. Exact
//! integers; one float scaling per row and block, as the scalar reference
//! rounds.

use crate::formats::lut::ROWS;
use crate::formats::planes_x64::{
    Plane4Tile, Plane5Tile, PlaneTile, Planes, PlanesX64, TernaryTile, TILE,
};
use crate::formats::{BlockQ8K, QK_K};
use std::arch::x86_64::*;
use std::ops::Range;

/// One block's tables, `[4 sb + p] = [TL, TH]`, and per sub-block what
/// its `TL` and `TH` sums take besides the lookups (`[sb] = [lo, hi]`).
struct Tables {
    t: [[__m256i; 2]; 32],
    fix: [[__m256i; 2]; 8],
}

/// [`Planes::COEF`] as `vpmaddubsw` pairs: planes `(2i, 2i + 1)`, then a
/// lone last plane beside `Y_COEF` (its zero-extended form's zero bytes
/// read `Y`); each fits a signed byte.
const fn coef_pairs(c: &[i32], y: i32) -> [[i8; 2]; 3] {
    assert!(c.len() <= 6 && y >= -128 && y < 128);
    let mut p = [[0i8; 2]; 3];
    let mut k = 0;
    while k < c.len() {
        assert!(c[k] >= -128 && c[k] < 128);
        p[k / 2][k % 2] = c[k] as i8;
        k += 1;
    }
    if c.len() % 2 == 1 {
        p[c.len() / 2][1] = y as i8;
    }
    p
}

/// What the AVX2 kernel reads of a tile: its index vectors, and the
/// coefficients [`Planes::COEF`] and [`Planes::Y_COEF`] give them.
pub(crate) trait TileAvx2: Planes {
    /// Lookups per table, group and row: 1 to 3 (pairs of planes, or a
    /// last plane with `Y`).
    const PAIRS: usize = Self::COEF.len().div_ceil(2);
    /// `vpmaddubsw`'s coefficient pair for each lookup's two bytes.
    const COEF_PAIRS: [[i8; 2]; 3] = coef_pairs(Self::COEF, Self::Y_COEF);
    /// The coefficient of `Y` not looked up (added per sub-block): all of
    /// it where no lone plane carries it.
    const Y_FIX: i16 = if Self::COEF.len() % 2 == 0 {
        Self::Y_COEF as i16
    } else {
        0
    };
    /// Lookup `pair`'s indices for group pairs `p` = 0..4 of sub-block `sb`.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    unsafe fn index(&self, sb: usize, pair: usize) -> [__m256i; 4];
}

/// Planes `2 k`, `2 k + 1` of sub-block `sb` from a pair array (`a`'s
/// form) as indices per group pair: one 32-byte load per two pairs, the
/// even pair's nibbles low, the odd pair's high.
#[inline(always)]
unsafe fn pair_indices(planes: &[[u8; 16]; 32], sb: usize) -> [__m256i; 4] {
    // SAFETY: the caller's features; planes[4 sb .. 4 sb + 4] are 64
    // contiguous bytes (sb < 8).
    unsafe {
        let m4 = _mm256_set1_epi8(15);
        let at = planes[4 * sb..4 * sb + 4].as_ptr().cast::<__m256i>();
        let v01 = _mm256_loadu_si256(at);
        let v23 = _mm256_loadu_si256(at.add(1));
        [
            _mm256_and_si256(v01, m4),
            _mm256_and_si256(_mm256_srli_epi16::<4>(v01), m4),
            _mm256_and_si256(v23, m4),
            _mm256_and_si256(_mm256_srli_epi16::<4>(v23), m4),
        ]
    }
}

/// A lone plane of sub-block `sb` in the zero-extended form ([`PlaneTile`]'s
/// `b`) as indices per group pair, each beside a zero byte (reading `Y`).
#[inline(always)]
unsafe fn lone_indices(plane: &[[u8; 16]; 16], sb: usize) -> [__m256i; 4] {
    // SAFETY: the caller's features; 16-byte loads of 16-byte arrays.
    unsafe {
        let low_nibble_words = _mm256_set1_epi16(15);
        let z0 = _mm256_cvtepu8_epi16(_mm_loadu_si128(plane[2 * sb].as_ptr().cast()));
        let z1 = _mm256_cvtepu8_epi16(_mm_loadu_si128(plane[2 * sb + 1].as_ptr().cast()));
        [
            _mm256_and_si256(z0, low_nibble_words),
            _mm256_srli_epi16::<4>(z0),
            _mm256_and_si256(z1, low_nibble_words),
            _mm256_srli_epi16::<4>(z1),
        ]
    }
}

impl TileAvx2 for PlaneTile {
    #[inline(always)]
    unsafe fn index(&self, sb: usize, pair: usize) -> [__m256i; 4] {
        // SAFETY: the caller's features.
        unsafe {
            if pair == 0 {
                pair_indices(&self.a, sb)
            } else {
                lone_indices(&self.b, sb)
            }
        }
    }
}

impl TileAvx2 for Plane4Tile {
    #[inline(always)]
    unsafe fn index(&self, sb: usize, pair: usize) -> [__m256i; 4] {
        // SAFETY: the caller's features.
        unsafe { pair_indices(if pair == 0 { &self.a } else { &self.b }, sb) }
    }
}

impl TileAvx2 for Plane5Tile {
    #[inline(always)]
    unsafe fn index(&self, sb: usize, pair: usize) -> [__m256i; 4] {
        // SAFETY: the caller's features.
        unsafe {
            match pair {
                0 => pair_indices(&self.a, sb),
                1 => pair_indices(&self.b, sb),
                _ => lone_indices(&self.c, sb),
            }
        }
    }
}

impl TileAvx2 for TernaryTile {
    #[inline(always)]
    unsafe fn index(&self, sb: usize, _: usize) -> [__m256i; 4] {
        // SAFETY: the caller's features.
        unsafe { pair_indices(&self.a, sb) }
    }
}

/// Byte `i` of each lane is -1 where bit `j` of `15 ^ i` is set.
#[inline(always)]
unsafe fn subset_mask(j: u32) -> __m256i {
    // SAFETY: the caller's features.
    unsafe {
        let i = _mm256_setr_epi8(
            0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,
            11, 12, 13, 14, 15,
        );
        let bit = _mm256_set1_epi8(1 << j);
        let c = _mm256_andnot_si256(i, bit);
        _mm256_cmpeq_epi8(c, bit)
    }
}

/// Each lane's byte sum, in every 16-bit word of the lane.
#[inline(always)]
unsafe fn lane_sums(v: __m256i) -> __m256i {
    // SAFETY: the caller's features.
    unsafe {
        let s = _mm256_sad_epu8(v, _mm256_setzero_si256());
        let s = _mm256_add_epi64(s, _mm256_shuffle_epi32::<0x4E>(s));
        _mm256_shuffle_epi32::<0>(_mm256_shufflelo_epi16::<0>(s))
    }
}

#[inline(always)]
unsafe fn build_tables<T: TileAvx2>(act: &BlockQ8K) -> Tables {
    // SAFETY: the caller's features; act.qs has 256 bytes, 32 sb + 32 <= 256.
    unsafe {
        let m4 = _mm256_set1_epi8(15);
        let masks = [
            subset_mask(0),
            subset_mask(1),
            subset_mask(2),
            subset_mask(3),
        ];
        // Four groups of TH's bias: 32 * 4 * (the looked-up coefficients).
        let mut bias = 0i16;
        for c in &T::COEF_PAIRS[..T::PAIRS] {
            bias += 128 * (c[0] as i16 + c[1] as i16);
        }
        let mut t = Tables {
            t: [[_mm256_setzero_si256(); 2]; 32],
            fix: [[_mm256_setzero_si256(), _mm256_set1_epi16(-bias)]; 8],
        };
        for sb in 0..QK_K / 32 {
            let y = _mm256_loadu_si256(act.qs.as_ptr().add(32 * sb).cast());
            let lo = _mm256_and_si256(y, m4);
            let u = _mm256_xor_si256(y, _mm256_set1_epi8(-128));
            let hi_u = _mm256_and_si256(_mm256_srli_epi16::<4>(u), m4);
            let hi = _mm256_sub_epi8(hi_u, _mm256_set1_epi8(8));
            if T::Y_FIX != 0 {
                // Y = YL + 16 YH per half: YL = sum (y & 15), YH = sum (u >> 4) - 128.
                let c = _mm256_set1_epi16(T::Y_FIX);
                let yl = lane_sums(lo);
                let yh = _mm256_sub_epi16(lane_sums(hi_u), _mm256_set1_epi16(128));
                t.fix[sb] = [
                    _mm256_mullo_epi16(yl, c),
                    _mm256_add_epi16(_mm256_mullo_epi16(yh, c), t.fix[sb][1]),
                ];
            }
            for p in 0..4 {
                let mut tl = _mm256_setzero_si256();
                let mut th = _mm256_set1_epi8(32);
                for (j, mask) in masks.iter().enumerate() {
                    let at = _mm256_set1_epi8((4 * p + j) as i8);
                    tl = _mm256_add_epi8(tl, _mm256_and_si256(_mm256_shuffle_epi8(lo, at), *mask));
                    th = _mm256_add_epi8(th, _mm256_and_si256(_mm256_shuffle_epi8(hi, at), *mask));
                }
                t.t[4 * sb + p] = [tl, th];
            }
        }
        t
    }
}

/// One tile's exact block sums, rows 0..8 in order.
#[inline(always)]
unsafe fn tile_isum<T: TileAvx2>(tile: &T, t: &Tables) -> __m256i {
    // SAFETY: the caller's features; every load is of an array of the tile.
    unsafe {
        let lane_shift = _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4);
        let nibble_words = _mm256_set1_epi32(0x000F_000F);
        let spread = _mm256_setr_epi8(
            0, -1, 1, -1, 2, -1, 3, -1, 4, -1, 5, -1, 6, -1, 7, -1, 0, -1, 1, -1, 2, -1, 3, -1, 4,
            -1, 5, -1, 6, -1, 7, -1,
        );
        let pair =
            |j: usize| i16::from_le_bytes([T::COEF_PAIRS[j][0] as u8, T::COEF_PAIRS[j][1] as u8]);
        let coef = [
            _mm256_set1_epi16(pair(0)),
            _mm256_set1_epi16(pair(1)),
            _mm256_set1_epi16(pair(2)),
        ];
        let mut lo = _mm256_setzero_si256();
        let mut hi = _mm256_setzero_si256();
        // Unscaled: the block's sums in 16 bits (-4000..7000 a half: per
        // sub-block four lookups of at most 180, the bias -384 and -Y).
        let [mut bl, mut bh] = [_mm256_setzero_si256(); 2];
        for sb in 0..QK_K / 32 {
            let [mut al, mut ah] = if T::SCALED { t.fix[sb] } else { [bl, bh] };
            if !T::SCALED {
                al = _mm256_add_epi16(al, t.fix[sb][0]);
                ah = _mm256_add_epi16(ah, t.fix[sb][1]);
            }
            for (pair, &coef) in coef.iter().enumerate().take(T::PAIRS) {
                // The four group pairs' lookups add up in bytes (at most
                // 4 * 60), then one `vpmaddubsw` by the pair's coefficients.
                let idx = tile.index(sb, pair);
                let [mut sl, mut sh] = [_mm256_setzero_si256(); 2];
                for (p, idx) in idx.into_iter().enumerate() {
                    let [tl, th] = t.t[4 * sb + p];
                    sl = _mm256_add_epi8(sl, _mm256_shuffle_epi8(tl, idx));
                    sh = _mm256_add_epi8(sh, _mm256_shuffle_epi8(th, idx));
                }
                al = _mm256_add_epi16(al, _mm256_maddubs_epi16(sl, coef));
                ah = _mm256_add_epi16(ah, _mm256_maddubs_epi16(sh, coef));
            }
            if !T::SCALED {
                [bl, bh] = [al, ah];
                continue;
            }
            // The scale bytes as words (both lanes), the high lane's nibble
            // shifted down, then 2 s + 1.
            let s = _mm256_shuffle_epi8(
                _mm256_set1_epi64x(i64::from_le_bytes(tile.sc()[sb])),
                spread,
            );
            let s = _mm256_and_si256(_mm256_srlv_epi32(s, lane_shift), nibble_words);
            let s = _mm256_add_epi16(_mm256_slli_epi16::<1>(s), _mm256_set1_epi16(1));
            let s16 = _mm256_slli_epi16::<4>(s);
            lo = _mm256_add_epi32(
                lo,
                _mm256_madd_epi16(_mm256_unpacklo_epi16(al, ah), _mm256_unpacklo_epi16(s, s16)),
            );
            hi = _mm256_add_epi32(
                hi,
                _mm256_madd_epi16(_mm256_unpackhi_epi16(al, ah), _mm256_unpackhi_epi16(s, s16)),
            );
        }
        if !T::SCALED {
            let s = _mm256_set1_epi32(16 << 16 | 1);
            lo = _mm256_madd_epi16(_mm256_unpacklo_epi16(bl, bh), s);
            hi = _mm256_madd_epi16(_mm256_unpackhi_epi16(bl, bh), s);
        }
        // lo: rows 0..4 of each half, hi: rows 4..8; add the halves.
        _mm256_add_epi32(
            _mm256_permute2x128_si256::<0x20>(lo, hi),
            _mm256_permute2x128_si256::<0x31>(lo, hi),
        )
    }
}

/// The plane layout's lookup-table GEMV ([`crate::table::LutGemvFn`]):
/// block positions `blocks` of `ngroups` groups against `act`, added to `out`
/// (64 per group, row order), bit for bit as
/// [`crate::formats::lut::LutLayout::gemv_ref`].
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C. (Lengths are checked: a short
/// slice panics.)
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemv_planes_x64<X>(
    x: &[X],
    ngroups: usize,
    blocks: Range<usize>,
    act: &[BlockQ8K],
    out: &mut [f32],
) where
    X: PlanesX64<Tile: TileAvx2>,
{
    let out = &mut out[..ROWS * ngroups];
    for b in blocks {
        let act = &act[b];
        // SAFETY: the kernel's features are enabled.
        let tables = unsafe { build_tables::<X::Tile>(act) };
        let yd = _mm256_set1_ps(act.d);
        for (xg, out) in x[b * ngroups..(b + 1) * ngroups]
            .iter()
            .zip(out.chunks_exact_mut(ROWS))
        {
            for (tile, out) in xg.tiles().iter().zip(out.chunks_exact_mut(TILE)) {
                super::prefetch_ahead(tile);
                // SAFETY: the kernel's features; tile.d() is 8 f16, out 8 f32.
                unsafe {
                    let isum = tile_isum(tile, &tables);
                    let d = _mm256_cvtph_ps(_mm_loadu_si128(tile.d().as_ptr().cast()));
                    let dd = _mm256_mul_ps(_mm256_mul_ps(d, _mm256_set1_ps(X::Tile::FACTOR)), yd);
                    let o = _mm256_loadu_ps(out.as_ptr());
                    let o = _mm256_add_ps(o, _mm256_mul_ps(dd, _mm256_cvtepi32_ps(isum)));
                    _mm256_storeu_ps(out.as_mut_ptr(), o);
                }
            }
        }
    }
}
