//! The lookup-table GEMV of the sign-plane layouts
//! ([`crate::formats::planes_x64`]) on NEON + dotprod: per four weights one
//! `tbl` lookup of a 16-entry table per plane, and `udot` to weight the
//! planes, instead of grid loads, sign loads and their shuffles.
//!
//! The layout is the AVX2 kernel's. A 16-byte `tbl` reads one table for all
//! its lanes, and the plane arrays' 16-byte rows are exactly that: one half
//! `h` of a sub-block, one group pair (the low nibbles one group, the high
//! nibbles the next), planes 0 and 1 of 8 rows. Per block and column, one
//! table pair (`TL`, `TH`, as on AVX2: exact, split by the activations'
//! nibbles) per four-value group. Per tile, sub-block and half:
//! - per pair array (`a`, and `b` for four and five planes): two 16-byte
//!   loads, a mask and a shift each, four lookups per table, added in bytes
//!   (at most 4 * 60), then two `udot` per table by `(c0, c1, 0, 0)` and
//!   `(0, 0, c0, c1)`: the even rows' and the odd rows' weighted sums;
//! - a lone plane (three and five planes), zero-extended: two tiles at a
//!   time (8 bytes of each, so the lookups fill 16 lanes), zipped with zero
//!   bytes into each tile's row pairs, `udot` by its coefficient;
//! - `L + 16 (H - bias) + Y_COEF * Y`, `Y` the half's activation sum, times
//!   the rows' scales `2 s + 1` (the ternary tiles, unscaled, do this once
//!   per block).
//!
//! Every coefficient looked up is positive (`Y`'s is added apart), so the
//! products are unsigned (`udot`). Exact integers; one float scaling per
//! row and block, as the scalar reference rounds.

use super::f16x4_to_f32;
use crate::formats::lut::ROWS;
use crate::formats::planes_x64::{
    Plane4Tile, Plane5Tile, PlaneTile, Planes, PlanesX64, TernaryTile, TILE,
};
use crate::formats::{BlockQ8K, QK_K};
use std::arch::aarch64::*;
use std::ops::Range;

/// [`Planes::COEF`] as the kernel weights the planes: pairs `(2i, 2i + 1)`
/// (pair array `i`), then a lone last plane if the count is odd; every
/// coefficient is positive and fits `udot`'s unsigned bytes.
const fn pair_coef(c: &[i32]) -> [[u8; 2]; 2] {
    let mut p = [[0u8; 2]; 2];
    let mut k = 0;
    while k < c.len() {
        assert!(c[k] > 0 && c[k] < 256 && c.len() <= 5);
        k += 1;
    }
    let mut i = 0;
    while i < c.len() / 2 {
        p[i] = [c[2 * i] as u8, c[2 * i + 1] as u8];
        i += 1;
    }
    p
}

/// What the NEON kernel reads of a tile: its plane arrays, and the
/// coefficients [`Planes::COEF`] gives them.
pub(crate) trait TileNeon: Planes {
    /// Pair arrays (`a`'s form): 1 or 2.
    const NPAIRS: usize = Self::COEF.len() / 2;
    /// Their coefficient pairs (planes `2i`, `2i + 1`).
    const PAIR_COEF: [[u8; 2]; 2] = pair_coef(Self::COEF);
    /// The lone plane's coefficient (0: none).
    const LONE_COEF: u8 = if Self::COEF.len() % 2 == 1 {
        Self::COEF[Self::COEF.len() - 1] as u8
    } else {
        0
    };
    /// Pair array `i`.
    fn pairs(&self, i: usize) -> &[[u8; 16]; 32];
    /// The lone plane, zero-extended form (a tile without one: never called).
    fn lone(&self) -> &[[u8; 16]; 16];
}

impl TileNeon for PlaneTile {
    fn pairs(&self, _: usize) -> &[[u8; 16]; 32] {
        &self.a
    }
    fn lone(&self) -> &[[u8; 16]; 16] {
        &self.b
    }
}

impl TileNeon for Plane4Tile {
    fn pairs(&self, i: usize) -> &[[u8; 16]; 32] {
        [&self.a, &self.b][i]
    }
    fn lone(&self) -> &[[u8; 16]; 16] {
        unreachable!("four planes: no lone plane")
    }
}

impl TileNeon for Plane5Tile {
    fn pairs(&self, i: usize) -> &[[u8; 16]; 32] {
        [&self.a, &self.b][i]
    }
    fn lone(&self) -> &[[u8; 16]; 16] {
        &self.c
    }
}

impl TileNeon for TernaryTile {
    fn pairs(&self, _: usize) -> &[[u8; 16]; 32] {
        &self.a
    }
    fn lone(&self) -> &[[u8; 16]; 16] {
        unreachable!("two planes: no lone plane")
    }
}

/// `udot` (ARMv8.2 dotprod), through inline assembly: `acc` plus, per i32
/// lane, the four products of `a`'s and `b`'s unsigned bytes.
#[inline]
#[target_feature(enable = "neon,dotprod")]
fn udot16(acc: uint32x4_t, a: uint8x16_t, b: uint8x16_t) -> uint32x4_t {
    let mut r = acc;
    // SAFETY: udot only reads a and b and accumulates into r; dotprod is enabled.
    unsafe {
        std::arch::asm!(
            "udot {r:v}.4s, {a:v}.16b, {b:v}.16b",
            r = inout(vreg) r,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        )
    };
    r
}

/// One block's tables, `[2 sb + h][p] = [TL, TH]`, and per half the terms
/// not looked up: `Y_COEF * Y`, less the `TH` bias (`16 * 32` per group and
/// looked-up coefficient).
struct Tables {
    t: [[[uint8x16_t; 2]; 4]; 16],
    fix: [i32; 16],
}

#[inline(always)]
unsafe fn build_tables<T: TileNeon>(act: &BlockQ8K) -> Tables {
    // SAFETY: the caller's features; act.qs has 256 bytes, 16 i + 16 <= 256.
    unsafe {
        // Byte i of mask j is 0xff where bit j of 15 ^ i is set.
        let masks: [uint8x16_t; 4] = std::array::from_fn(|j| {
            let m: [u8; 16] =
                std::array::from_fn(|i| if ((15 ^ i) >> j) & 1 == 1 { 0xff } else { 0 });
            vld1q_u8(m.as_ptr())
        });
        // Per half, each looked-up TH carries 32 per group and coefficient.
        let mut coef_sum = T::LONE_COEF as i32;
        for c in &T::PAIR_COEF[..T::NPAIRS] {
            coef_sum += c[0] as i32 + c[1] as i32;
        }
        let bias = 16 * 32 * 4 * coef_sum;
        let mut t = Tables {
            t: [[[vdupq_n_u8(0); 2]; 4]; 16],
            fix: [0; 16],
        };
        for i in 0..QK_K / 16 {
            let y = vld1q_s8(act.qs.as_ptr().add(16 * i));
            t.fix[i] = T::Y_COEF * vaddlvq_s8(y) as i32 - bias;
            let lo = vandq_u8(vreinterpretq_u8_s8(y), vdupq_n_u8(15));
            let u = veorq_u8(vreinterpretq_u8_s8(y), vdupq_n_u8(0x80));
            let hi = vsubq_u8(vshrq_n_u8::<4>(u), vdupq_n_u8(8));
            for p in 0..4 {
                let mut tl = vdupq_n_u8(0);
                let mut th = vdupq_n_u8(32);
                for (j, &mask) in masks.iter().enumerate() {
                    let at = vdupq_n_u8((4 * p + j) as u8);
                    tl = vaddq_u8(tl, vandq_u8(vqtbl1q_u8(lo, at), mask));
                    th = vaddq_u8(th, vandq_u8(vqtbl1q_u8(hi, at), mask));
                }
                t.t[i][p] = [tl, th];
            }
        }
        t
    }
}

/// The scale factors `2 s + 1` of one sub-block's eight rows (`sc`, a
/// nibble per half), both halves in one vector: bytes `8 h + r`.
#[inline(always)]
unsafe fn scale_bytes(sc: &[u8; 8]) -> uint8x16_t {
    // SAFETY: the caller's features; an 8-byte load of 8 bytes.
    unsafe {
        let v = vld1_u8(sc.as_ptr());
        let n = vcombine_u8(vand_u8(v, vdup_n_u8(15)), vshr_n_u8::<4>(v));
        vaddq_u8(vaddq_u8(n, n), vdupq_n_u8(1))
    }
}

/// [`scale_bytes`] of two tiles' sub-block `sb`.
#[inline(always)]
unsafe fn tiles_scale_bytes<T: TileNeon>(tiles: [&T; 2], sb: usize) -> [uint8x16_t; 2] {
    // SAFETY: the caller's features.
    unsafe {
        [
            scale_bytes(&tiles[0].sc()[sb]),
            scale_bytes(&tiles[1].sc()[sb]),
        ]
    }
}

/// Half `h`'s factors of the even rows (0, 2, 4, 6) and the odd ones as i32
/// lanes, from [`scale_bytes`]' `f`: one `tbl` each, whose out-of-range
/// indices give the zero bytes.
#[inline(always)]
unsafe fn scales(f: uint8x16_t, h: usize) -> [int32x4_t; 2] {
    const fn idx(first: u8) -> [u8; 16] {
        let mut t = [0xFF; 16];
        let mut i = 0;
        while i < 4 {
            t[4 * i] = first + 2 * i as u8;
            i += 1;
        }
        t
    }
    const IDX: [[[u8; 16]; 2]; 2] = [[idx(0), idx(1)], [idx(8), idx(9)]];
    // SAFETY: the caller's features; IDX rows are 16 bytes.
    unsafe {
        let [e, o] = IDX[h];
        [
            vreinterpretq_s32_u8(vqtbl1q_u8(f, vld1q_u8(e.as_ptr()))),
            vreinterpretq_s32_u8(vqtbl1q_u8(f, vld1q_u8(o.as_ptr()))),
        ]
    }
}

/// `(c0, c1, 0, 0)` and `(0, 0, c0, c1)` in every i32 lane: `udot` by them
/// weights a row's two plane bytes, the even rows' or the odd rows'.
#[inline(always)]
unsafe fn row_coefs(c: [u8; 2]) -> [uint8x16_t; 2] {
    // SAFETY: the caller's features.
    unsafe {
        let pair = c[0] as u32 | (c[1] as u32) << 8;
        [
            vreinterpretq_u8_u32(vdupq_n_u32(pair)),
            vreinterpretq_u8_u32(vdupq_n_u32(pair << 16)),
        ]
    }
}

/// The four group pairs' lookups of half `i` in one table each (`TL`,
/// `TH`), added in bytes (at most 4 * 60): pairs 0 and 1 indexed by the low
/// and high nibbles of `v01`, pairs 2 and 3 by those of `v23`.
#[inline(always)]
unsafe fn lookup4(t: &Tables, i: usize, v01: uint8x16_t, v23: uint8x16_t) -> [uint8x16_t; 2] {
    // SAFETY: the caller's features.
    unsafe {
        let m4 = vdupq_n_u8(15);
        let idx = [
            vandq_u8(v01, m4),
            vshrq_n_u8::<4>(v01),
            vandq_u8(v23, m4),
            vshrq_n_u8::<4>(v23),
        ];
        let [t0, t1, t2, t3] = t.t[i];
        let l = vaddq_u8(
            vaddq_u8(vqtbl1q_u8(t0[0], idx[0]), vqtbl1q_u8(t1[0], idx[1])),
            vaddq_u8(vqtbl1q_u8(t2[0], idx[2]), vqtbl1q_u8(t3[0], idx[3])),
        );
        let h = vaddq_u8(
            vaddq_u8(vqtbl1q_u8(t0[1], idx[0]), vqtbl1q_u8(t1[1], idx[1])),
            vaddq_u8(vqtbl1q_u8(t2[1], idx[2]), vqtbl1q_u8(t3[1], idx[3])),
        );
        [l, h]
    }
}

/// `L` and `H` sums of even and odd rows (`[le, lo, he, ho]`).
type Sums = [uint32x4_t; 4];

/// Adds pair array `arr`'s share of sub-block `sb`, half `h` to `s`,
/// weighted by `coef` ([`row_coefs`]).
#[inline(always)]
unsafe fn add_pairs(
    s: &mut Sums,
    arr: &[[u8; 16]; 32],
    t: &Tables,
    sb: usize,
    h: usize,
    [ce, co]: [uint8x16_t; 2],
) {
    // SAFETY: the caller's features; 4 sb + 2 + h < 32.
    unsafe {
        let v01 = vld1q_u8(arr[4 * sb + h].as_ptr());
        let v23 = vld1q_u8(arr[4 * sb + 2 + h].as_ptr());
        let [l, hh] = lookup4(t, 2 * sb + h, v01, v23);
        s[0] = udot16(s[0], l, ce);
        s[1] = udot16(s[1], l, co);
        s[2] = udot16(s[2], hh, ce);
        s[3] = udot16(s[3], hh, co);
    }
}

/// Adds two tiles' lone planes' share of sub-block `sb`, half `h` to their
/// sums `s`: one 16-lane lookup per group and table serves both tiles' 8 rows.
#[inline(always)]
unsafe fn add_lone2(
    s: &mut [Sums; 2],
    lone: [&[[u8; 16]; 16]; 2],
    t: &Tables,
    sb: usize,
    h: usize,
    [ce, co]: [uint8x16_t; 2],
) {
    // SAFETY: the caller's features; 2 sb + 1 < 16, 8 h + 8 <= 16.
    unsafe {
        let both = |q: usize| {
            vcombine_u8(
                vld1_u8(lone[0][2 * sb + q].as_ptr().add(8 * h)),
                vld1_u8(lone[1][2 * sb + q].as_ptr().add(8 * h)),
            )
        };
        let [l, hh] = lookup4(t, 2 * sb + h, both(0), both(1));
        // Row r's byte at 2 r, beside a zero: the pair arrays' row order
        // (the first tile's rows are the low 8 lanes).
        let z = vdupq_n_u8(0);
        for (i, (zl, zh)) in [
            (vzip1q_u8(l, z), vzip1q_u8(hh, z)),
            (vzip2q_u8(l, z), vzip2q_u8(hh, z)),
        ]
        .into_iter()
        .enumerate()
        {
            s[i][0] = udot16(s[i][0], zl, ce);
            s[i][1] = udot16(s[i][1], zl, co);
            s[i][2] = udot16(s[i][2], zh, ce);
            s[i][3] = udot16(s[i][3], zh, co);
        }
    }
}

/// `L + 16 H + fix` of even and odd rows, as i32.
#[inline(always)]
unsafe fn combine(s: &Sums, fix: i32) -> [int32x4_t; 2] {
    // SAFETY: the caller's features.
    unsafe {
        let fix = vdupq_n_s32(fix);
        let w = |l: uint32x4_t, h: uint32x4_t| {
            vaddq_s32(
                vreinterpretq_s32_u32(vaddq_u32(l, vshlq_n_u32::<4>(h))),
                fix,
            )
        };
        [w(s[0], s[2]), w(s[1], s[3])]
    }
}

/// Sub-block `sb`, half `h` of two tiles: into `s`, and for scaled tiles
/// (`s` reset first) into `acc` (per tile, even and odd rows) times the
/// factors `sc` ([`scale_bytes`], read here if not given).
#[inline(always)]
unsafe fn add_half<X: PlanesX64<Tile: TileNeon>>(
    tiles: [&X::Tile; 2],
    t: &Tables,
    sb: usize,
    h: usize,
    s: &mut [Sums; 2],
    acc: &mut [[int32x4_t; 2]; 2],
    sc: Option<[uint8x16_t; 2]>,
) {
    // SAFETY: the caller's features.
    unsafe {
        let scaled = <X::Tile as Planes>::SCALED;
        let coef = <X::Tile as TileNeon>::PAIR_COEF;
        for (s, tile) in s.iter_mut().zip(tiles) {
            if scaled {
                *s = [vdupq_n_u32(0); 4];
            }
            add_pairs(s, tile.pairs(0), t, sb, h, row_coefs(coef[0]));
            if <X::Tile as TileNeon>::NPAIRS == 2 {
                add_pairs(s, tile.pairs(1), t, sb, h, row_coefs(coef[1]));
            }
        }
        if <X::Tile as TileNeon>::LONE_COEF != 0 {
            let c = row_coefs([<X::Tile as TileNeon>::LONE_COEF, 0]);
            add_lone2(s, [tiles[0].lone(), tiles[1].lone()], t, sb, h, c);
        }
        if scaled {
            let sc = match sc {
                Some(sc) => sc,
                None => tiles_scale_bytes(tiles, sb),
            };
            for ((s, sc), acc) in s.iter().zip(sc).zip(acc.iter_mut()) {
                let [te, to] = combine(s, t.fix[2 * sb + h]);
                let [se, so] = scales(sc, h);
                acc[0] = vmlaq_s32(acc[0], te, se);
                acc[1] = vmlaq_s32(acc[1], to, so);
            }
        }
    }
}

/// Two tiles' exact block sums: per tile rows 0..4 and 4..8.
#[inline(always)]
unsafe fn tile_isum2<X: PlanesX64<Tile: TileNeon>>(
    tiles: [&X::Tile; 2],
    t: &Tables,
) -> [[int32x4_t; 2]; 2] {
    // SAFETY: the caller's features.
    unsafe {
        let mut acc = [[vdupq_n_s32(0); 2]; 2];
        // Per half (scaled tiles) or per block (unscaled).
        let mut s = [[vdupq_n_u32(0); 4]; 2];
        for sb in 0..QK_K / 32 {
            mca!(begin ["planes.lut ", "dotprod"], ggml_type = <X::Row as crate::formats::QuantBlock>::GGML_TYPE, c = 1, w = 512);
            // Both tiles' factors for both halves, read once here, except
            // for five planes, which need the registers (llvm-mca: IQ3_XXS
            // 0.4-4 % slower on the four models with them held across the halves).
            let five = <X::Tile as TileNeon>::NPAIRS == 2 && <X::Tile as TileNeon>::LONE_COEF != 0;
            let hoist = <X::Tile as Planes>::SCALED && !five;
            let sc = if hoist {
                Some(tiles_scale_bytes(tiles, sb))
            } else {
                None
            };
            add_half::<X>(tiles, t, sb, 0, &mut s, &mut acc, sc);
            add_half::<X>(tiles, t, sb, 1, &mut s, &mut acc, sc);
            mca!(end);
        }
        if !<X::Tile as Planes>::SCALED {
            let fix = t.fix.iter().sum();
            acc = [combine(&s[0], fix), combine(&s[1], fix)];
        }
        acc.map(|[e, o]| [vzip1q_s32(e, o), vzip2q_s32(e, o)])
    }
}

/// The plane layout's lookup-table GEMV ([`crate::table::LutGemvFn`]):
/// block positions `blocks` of `ngroups` groups against `act`, added to `out`
/// (64 per group, row order), bit for bit as
/// [`crate::formats::lut::LutLayout::gemv_ref`].
///
/// # Safety
/// The CPU must have NEON and dotprod. (Lengths are checked: a short slice
/// panics.)
#[target_feature(enable = "neon,dotprod")]
pub(crate) unsafe fn gemv_planes_x64<X>(
    x: &[X],
    ngroups: usize,
    blocks: Range<usize>,
    act: &[BlockQ8K],
    out: &mut [f32],
) where
    X: PlanesX64<Tile: TileNeon>,
{
    // SAFETY: forwarded contract.
    unsafe {
        if super::prefetch_on() {
            planes_x64::<X, true>(x, ngroups, blocks, act, out)
        } else {
            planes_x64::<X, false>(x, ngroups, blocks, act, out)
        }
    }
}

/// [`gemv_planes_x64`], with or without software prefetch (`PF`).
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn planes_x64<X, const PF: bool>(
    x: &[X],
    ngroups: usize,
    blocks: Range<usize>,
    act: &[BlockQ8K],
    out: &mut [f32],
) where
    X: PlanesX64<Tile: TileNeon>,
{
    let out = &mut out[..ROWS * ngroups];
    for b in blocks {
        let act = &act[b];
        // SAFETY: the kernel's features are enabled.
        let tables = unsafe { build_tables::<X::Tile>(act) };
        for (xg, out) in x[b * ngroups..(b + 1) * ngroups]
            .iter()
            .zip(out.chunks_exact_mut(ROWS))
        {
            for (pair, out) in xg
                .tiles()
                .chunks_exact(2)
                .zip(out.chunks_exact_mut(2 * TILE))
            {
                if PF {
                    super::prefetch_ahead(&pair[0]);
                    super::prefetch_ahead(&pair[1]);
                }
                // SAFETY: the kernel's features; tile.d() is 8 f16, out 16 f32.
                unsafe {
                    let sums = tile_isum2::<X>([&pair[0], &pair[1]], &tables);
                    for (i, tile) in pair.iter().enumerate() {
                        let d: &[u64; 2] = bytemuck::cast_ref(tile.d());
                        for (j, r) in sums[i].into_iter().enumerate() {
                            // (d * FACTOR) * act.d, then times the sum and added:
                            // the reference's roundings.
                            let dd = vmulq_n_f32(
                                vmulq_n_f32(f16x4_to_f32(d[j]), X::Tile::FACTOR),
                                act.d,
                            );
                            let at = TILE * i + 4 * j;
                            let o = vld1q_f32(out.as_ptr().add(at));
                            let o = vaddq_f32(o, vmulq_f32(dd, vcvtq_f32_s32(r)));
                            vst1q_f32(out.as_mut_ptr().add(at), o);
                        }
                    }
                }
            }
        }
    }
}
