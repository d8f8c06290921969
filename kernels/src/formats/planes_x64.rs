//! The 2-bit i-quants (IQ2_XXS, IQ2_XS, IQ2_S) as sign planes, in groups of
//! 64 rows, for a lookup-table GEMV with 16-entry tables (T-MAC's bit-serial
//! technique, re-derived for these grids: Wei et al., "T-MAC: CPU Renaissance
//! via Table Lookup for Low-Bit LLM Deployment on Edge", 2024).
//!
//! **Three planes.** Every grid value of these formats is 8, 25 or 43, so a
//! weight is `w = s * v` with `v` one of three magnitudes and `s = ±1`. With
//! `e_k = ±1`, `2w = 18 e_0 + 35 e_1 + 33 e_2` holds for all six weights:
//! `(e_0, e_1, e_2) = s * (1, 1, 1)` for 43, `s * (-1, 1, 1)` for 25 and
//! `s * (1, -1, 1)` for 8 (86, 50 and 16 halved). Writing `e = 2σ - 1`
//! (bit `σ`), a group of four weights against four activations `y` gives
//! `sum(w y) = 18 T(σ_0) + 35 T(σ_1) + 33 T(σ_2) - 43 Y`, where `T(S)` sums
//! the activations whose bit is set and `Y = T(all)`: three lookups of a
//! 16-entry table per four weights, all integers.
//!
//! **Exact byte tables.** `T` needs 11 bits, `vpshufb` returns bytes, so each
//! table is split by the activations' nibbles: with `u = y ^ 0x80`,
//! `y = 16 (u >> 4 - 8) + (y & 15)`, `TL(S) = sum (y & 15)` (0..=60) and
//! `TH(S) = 32 + sum (u >> 4 - 8)` (0..=60, biased so that both are unsigned
//! for `vpmaddubsw`). `T = TL + 16 (TH - 32)`, exactly.
//!
//! **Stored complemented.** Tables are indexed by `15 ^ σ` (entry `i` is
//! `T(15 ^ i)`), so index 0 reads `Y`: a zero byte beside each third-plane
//! index supplies the `-43 Y` term through the same lookup.
//!
//! A [`PlaneTile`] is 8 rows at one block position; a layout block
//! ([`BlockIq2Xxsx64`] and the others) is 8 tiles, 64 rows, kept in row
//! order (slot `s` is row `s`). Within a 32-value sub-block `sb`, group pair
//! `p` (0..4) is the four-value groups `8 sb + p` (first half, the
//! kernels' low 128-bit lane) and `8 sb + 4 + p` (second half, high lane),
//! matching IQ2_XS/IQ2_S's scale per 16 values:
//! - `a[4 sb + p][2 r + k]`: planes `k` = 0, 1 of row `r`, the low nibble
//!   for the first half's group, the high nibble for the second's;
//! - `b[2 sb + q][8 h + r]`: plane 2 of row `r`, half `h`, groups `2q`
//!   (low nibble) and `2q + 1` (high nibble) of that half's four;
//! - `sc[sb][r]`: the scales (0..=15) of the sub-block's halves, low nibble
//!   first (IQ2_XS/IQ2_S's own byte; IQ2_XXS's one scale twice);
//! - `d[r]`: the row's `d`.
//!
//! 848 bytes per 8 rows and 256 values (3.3 bits a weight, against 2.06,
//! 2.31 and 2.56 for the formats); [`LutLayout::row_block`] gives the
//! format's block back bit for bit.

use super::grid::{GridCode, GridGroups, Points};
use super::lut::{LutLayout, ROWS};
use super::{BlockIq2S, BlockIq2Xs, BlockIq2Xxs, BlockQ8K, QK_K};
use half::f16;

/// Rows per tile.
pub const TILE: usize = 8;

/// 8 rows at one block position (see the module).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct PlaneTile {
    pub a: [[u8; 16]; 32],
    pub b: [[u8; 16]; 16],
    pub sc: [[u8; 8]; 8],
    pub d: [f16; TILE],
}

/// A 2-bit i-quant as the plane layout reads it.
pub(crate) trait PlaneRow: GridGroups + GridCode + bytemuck::Pod {
    /// Sub-block `sb`'s scale byte: the first 16 values' scale in the low
    /// nibble, the second 16's in the high one.
    fn scale_byte(&self, sb: usize) -> u8;
    fn set_scale_byte(&mut self, sb: usize, s: u8);
    fn d(&self) -> f16;
    fn set_d(&mut self, d: f16);
}

impl PlaneRow for BlockIq2Xxs {
    fn scale_byte(&self, sb: usize) -> u8 {
        let s = (self.qs[4 * sb + 3] >> 12) as u8;
        s | s << 4
    }
    /// The format has one scale per 32 values: the low nibble's.
    fn set_scale_byte(&mut self, sb: usize, s: u8) {
        self.qs[4 * sb + 3] = (self.qs[4 * sb + 3] & 0x0FFF) | ((s & 15) as u16) << 12;
    }
    fn d(&self) -> f16 {
        self.d
    }
    fn set_d(&mut self, d: f16) {
        self.d = d
    }
}

macro_rules! plane_row_scales {
    ($($block:ty),*) => {$(
        impl PlaneRow for $block {
            fn scale_byte(&self, sb: usize) -> u8 {
                self.scales[sb]
            }
            fn set_scale_byte(&mut self, sb: usize, s: u8) {
                self.scales[sb] = s
            }
            fn d(&self) -> f16 {
                self.d
            }
            fn set_d(&mut self, d: f16) {
                self.d = d
            }
        }
    )*};
}
plane_row_scales!(BlockIq2Xs, BlockIq2S);

/// The three plane bits of a weight of magnitude `v` (8, 25 or 43) and sign
/// `neg`: `σ_k = (e_k + 1) / 2` (see the module).
pub const fn plane_bits(v: u8, neg: bool) -> [bool; 3] {
    [(v != 25) ^ neg, (v != 8) ^ neg, !neg]
}

/// [`plane_bits`]'s inverse: magnitude and sign. (Bits that no weight has,
/// `σ_0 = σ_1 != σ_2`, read as 8.)
pub const fn plane_weight(s: [bool; 3]) -> (u8, bool) {
    let neg = !s[2];
    let v = match (s[0] ^ neg, s[1] ^ neg) {
        (true, true) => 43,
        (false, true) => 25,
        _ => 8,
    };
    (v, neg)
}

/// A row's weights, magnitude and sign, in value order.
fn weights<R: PlaneRow>(b: &R) -> [(u8, bool); QK_K] {
    let mut w = [(0u8, false); QK_K];
    for g in 0..QK_K / 8 {
        let (m, s) = b.group(g);
        for j in 0..8 {
            w[8 * g + j] = ((m >> (8 * j)) as u8, (s >> j) & 1 == 1);
        }
    }
    w
}

/// The stored (complemented) nibble of plane `k` over values `4g..4g + 4`.
fn nibble(w: &[(u8, bool); QK_K], g: usize, k: usize) -> u8 {
    let mut n = 0;
    for j in 0..4 {
        let (v, neg) = w[4 * g + j];
        n |= (plane_bits(v, neg)[k] as u8) << j;
    }
    15 ^ n
}

impl PlaneTile {
    /// Lays out up to 8 rows (`None`: a padding row, zero).
    pub(crate) fn pack<R: PlaneRow>(rows: &[Option<R>; TILE]) -> Self {
        let mut t = <Self as bytemuck::Zeroable>::zeroed();
        for (r, row) in rows.iter().enumerate() {
            // A padding row: every weight +8 (index 0 of the grid) at d = 0.
            let row = row.unwrap_or_else(<R as bytemuck::Zeroable>::zeroed);
            let w = weights(&row);
            t.d[r] = row.d();
            for sb in 0..QK_K / 32 {
                t.sc[sb][r] = row.scale_byte(sb);
                for p in 0..4 {
                    for k in 0..2 {
                        t.a[4 * sb + p][2 * r + k] =
                            nibble(&w, 8 * sb + p, k) | nibble(&w, 8 * sb + 4 + p, k) << 4;
                    }
                }
                for h in 0..2 {
                    for q in 0..2 {
                        let g = 8 * sb + 4 * h + 2 * q;
                        t.b[2 * sb + q][8 * h + r] = nibble(&w, g, 2) | nibble(&w, g + 1, 2) << 4;
                    }
                }
            }
        }
        t
    }

    /// Plane `k`'s bits (not complemented) of row `r`, values `4g..4g + 4`.
    fn bits(&self, r: usize, g: usize, k: usize) -> u8 {
        let (sb, rest) = (g / 8, g % 8);
        let (h, p) = (rest / 4, rest % 4);
        let byte = if k < 2 {
            self.a[4 * sb + p][2 * r + k] >> (4 * h)
        } else {
            self.b[2 * sb + p / 2][8 * h + r] >> (4 * (p % 2))
        };
        15 ^ (byte & 15)
    }

    /// Row `r`'s block as the format stores it.
    pub(crate) fn row<R: PlaneRow>(&self, r: usize) -> R {
        let Points::Eight(grid) = R::POINTS else {
            unreachable!("the plane layout takes the 8-value grids only")
        };
        let mut b = <R as bytemuck::Zeroable>::zeroed();
        b.set_d(self.d[r]);
        for sb in 0..QK_K / 32 {
            b.set_scale_byte(sb, self.sc[sb][r]);
        }
        for g8 in 0..QK_K / 8 {
            let (mut m, mut s) = (0u64, 0u8);
            for j in 0..8 {
                let (g, jj) = ((8 * g8 + j) / 4, j % 4);
                let bit = |k| (self.bits(r, g, k) >> jj) & 1 == 1;
                let (v, neg) = plane_weight([bit(0), bit(1), bit(2)]);
                m |= (v as u64) << (8 * j);
                s |= (neg as u8) << j;
            }
            // Every 8-value pattern of a packed block is a grid point; one
            // that is not (layout bytes made otherwise) takes point 0.
            let i = grid.binary_search(&m).unwrap_or(0);
            b.set_group(g8, [i, 0], s);
        }
        b
    }

    /// Row `r`'s exact integer sum over one block against `act`:
    /// `sum_sb sum_h (2 scale + 1) * sum_groups (18 T0 + 35 T1 + 33 T2 - 43 Y)`,
    /// from the planes (what the SIMD kernels compute by lookups).
    pub fn isum(&self, r: usize, act: &BlockQ8K) -> i32 {
        let mut isum = 0i32;
        for sb in 0..QK_K / 32 {
            for h in 0..2 {
                let s = 2 * ((self.sc[sb][r] >> (4 * h)) & 15) as i32 + 1;
                let mut sum = 0i32;
                for p in 0..4 {
                    let g = 8 * sb + 4 * h + p;
                    let y = &act.qs[4 * g..4 * g + 4];
                    let t = |bits: u8| -> i32 {
                        (0..4)
                            .filter(|j| (bits >> j) & 1 == 1)
                            .map(|j| y[j] as i32)
                            .sum()
                    };
                    sum += 18 * t(self.bits(r, g, 0))
                        + 35 * t(self.bits(r, g, 1))
                        + 33 * t(self.bits(r, g, 2))
                        - 43 * t(15);
                }
                isum += s * sum;
            }
        }
        isum
    }
}

/// One block position of 64 rows of a 2-bit i-quant in the plane layout.
pub(crate) trait PlanesX64: LutLayout<Row: PlaneRow> {
    fn tiles(&self) -> &[PlaneTile; ROWS / TILE];
}

macro_rules! planes_block {
    ($name:ident, $row:ty) => {
        #[doc = concat!("64 rows of [`", stringify!($row), "`] at one block position as sign planes (see the module).")]
        #[repr(C)]
        #[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
        pub struct $name {
            pub tiles: [PlaneTile; ROWS / TILE],
        }
        impl PlanesX64 for $name {
            fn tiles(&self) -> &[PlaneTile; ROWS / TILE] {
                &self.tiles
            }
        }
        impl LutLayout for $name {
            type Row = $row;
            fn slot_row(s: usize) -> usize {
                s
            }
            fn pack(row: &dyn Fn(usize) -> Option<$row>) -> Self {
                $name {
                    tiles: std::array::from_fn(|t| {
                        PlaneTile::pack::<$row>(&std::array::from_fn(|r| row(TILE * t + r)))
                    }),
                }
            }
            fn row_block(&self, r: usize) -> $row {
                self.tiles[r / TILE].row(r % TILE)
            }
            fn gemv_ref(
                x: &[Self],
                ngroups: usize,
                blocks: std::ops::Range<usize>,
                act: &[BlockQ8K],
                out: &mut [f32],
            ) {
                gemv_ref(x, ngroups, blocks, act, out)
            }
        }
    };
}
planes_block!(BlockIq2Xxsx64, BlockIq2Xxs);
planes_block!(BlockIq2Xsx64, BlockIq2Xs);
planes_block!(BlockIq2Sx64, BlockIq2S);

/// The scalar reference of the plane lookup-table GEMV (see
/// [`LutLayout::gemv_ref`]): per row and block the exact integer
/// ([`PlaneTile::isum`]), then `out += ((d * 0.125) * act.d) * isum`, block
/// after block, as the SIMD kernels round.
pub(crate) fn gemv_ref<X: PlanesX64>(
    x: &[X],
    ngroups: usize,
    blocks: std::ops::Range<usize>,
    act: &[BlockQ8K],
    out: &mut [f32],
) {
    for b in blocks {
        for (g, x) in x[b * ngroups..(b + 1) * ngroups].iter().enumerate() {
            for (t, tile) in x.tiles().iter().enumerate() {
                for r in 0..TILE {
                    let dd = (tile.d[r].to_f32() * 0.125) * act[b].d;
                    out[ROWS * g + TILE * t + r] += dd * tile.isum(r, &act[b]) as f32;
                }
            }
        }
    }
}
