//! The i-quants, whose grid values are sums of a few `±c` (IQ2_XXS, IQ2_XS,
//! IQ2_S with three planes, IQ3_S with four, IQ3_XXS with five), and the
//! ternary formats (TQ1_0, TQ2_0, two), as sign planes, in groups of 64 rows, for a lookup-table GEMV with 16-entry tables (T-MAC's
//! bit-serial technique, re-derived for these grids: Wei et al., "T-MAC:
//! CPU Renaissance via Table Lookup for Low-Bit LLM Deployment on Edge",
//! 2024).
//!
//! **Planes.** With `e_k = ±1` and `e = 2σ - 1` (bit `σ`), a weight
//! `w = sum_k c_k e_k / m` gives, for a group of four weights against four
//! activations `y`, `sum(w y) = sum_k (2 c_k / m) T(σ_k) - (sum_k c_k / m) Y`,
//! where `T(S)` sums the activations whose bit is set and `Y = T(all)`: one
//! lookup of a 16-entry table per plane and four weights, all integers.
//! - The 2-bit i-quants ([`PlaneTile`]): every grid value is 8, 25 or 43,
//!   and `2w = 18 e_0 + 35 e_1 + 33 e_2` for all six signed weights:
//!   `(e_0, e_1, e_2) = s * (1, 1, 1)` for 43, `s * (-1, 1, 1)` for 25 and
//!   `s * (1, -1, 1)` for 8 (86, 50 and 16 halved). So
//!   `sum(w y) = 18 T(σ_0) + 35 T(σ_1) + 33 T(σ_2) - 43 Y`.
//! - IQ3_S ([`Plane4Tile`]): every grid value is odd, 1..=15, so a signed
//!   weight is `e_0 + 2 e_1 + 4 e_2 + 8 e_3` (`σ` the bits of
//!   `(w + 15) / 2`), and `sum(w y) = 2 T(σ_0) + 4 T(σ_1) + 8 T(σ_2) +
//!   16 T(σ_3) - 15 Y`.
//! - IQ3_XXS ([`Plane5Tile`]): its values 4..52 by 8, and 62, are no sum of
//!   four `±c` (62 breaks the progression), but all are one of five:
//!   `w = e_0 + 4 e_1 + 8 e_2 + 16 e_3 + 33 e_4`, so
//!   `sum(w y) = 2 T(σ_0) + 8 T(σ_1) + 16 T(σ_2) + 32 T(σ_3) + 66 T(σ_4) - 62 Y`.
//! - The ternary formats ([`TernaryTile`]): a weight `q` (-1, 0, 1, and 2
//!   for TQ2_0's code 3) is `σ_0 + 2 σ_1 - 1`, the bits of TQ2_0's code
//!   `q + 1` (TQ1_0's digit), so `sum(q y) = T(σ_0) + 2 T(σ_1) - Y`. No
//!   scales: the tile is 2 bits a weight and `d`, TQ2_0's size.
//!
//! **Exact byte tables.** `T` needs 11 bits, `vpshufb` returns bytes, so each
//! table is split by the activations' nibbles: with `u = y ^ 0x80`,
//! `y = 16 (u >> 4 - 8) + (y & 15)`, `TL(S) = sum (y & 15)` (0..=60) and
//! `TH(S) = 32 + sum (u >> 4 - 8)` (0..=60, biased so that both are unsigned
//! for `vpmaddubsw`). `T = TL + 16 (TH - 32)`, exactly.
//!
//! **Stored complemented.** Tables are indexed by `15 ^ σ` (entry `i` is
//! `T(15 ^ i)`), so index 0 reads `Y`: in the three- and five-plane tiles a
//! zero byte beside each last-plane index supplies the `Y` term through the
//! same lookup; the four-plane kernels add `-15 Y` per sub-block from the
//! activations' own sums.
//!
//! A tile is 8 rows at one block position; a layout block
//! ([`BlockIq2Xxsx64`] and the others) is 8 tiles, 64 rows, kept in row
//! order (slot `s` is row `s`). Within a 32-value sub-block `sb`, group pair
//! `p` (0..4) is the four-value groups `8 sb + p` (first half, the
//! kernels' low 128-bit lane) and `8 sb + 4 + p` (second half, high lane),
//! matching IQ2_XS/IQ2_S's scale per 16 values:
//! - `a[4 sb + 2 (p / 2) + h][2 r + k]`: planes `k` = 0, 1 of row `r`,
//!   half `h`'s group of pair `p`, the low nibble for even `p`, the high
//!   nibble for odd (so that one 32-byte load holds two group pairs, both
//!   halves, in the kernels' lanes);
//! - [`PlaneTile`]: `b[2 sb + q][8 h + r]`: plane 2 of row `r`, half `h`,
//!   groups `2q` (low nibble) and `2q + 1` (high nibble) of that half's four;
//! - [`Plane4Tile`], [`Plane5Tile`]: `b`: planes `k` = 2, 3 as `a`;
//!   [`Plane5Tile`]: `c`, plane 4 as `PlaneTile`'s `b`;
//! - `sc[sb][r]`: the scales (0..=15) of the sub-block's halves, low nibble
//!   first (IQ2_XS/IQ2_S's own byte; the others' one scale twice; none in
//!   [`TernaryTile`]);
//! - `d[r]`: the row's `d`.
//!
//! 848 bytes per 8 rows and 256 values in three planes (3.3 bits a weight,
//! against 2.06, 2.31 and 2.56 for the formats), 1104 in four (4.3, against
//! IQ3_S's 3.44), 1360 in five (5.3, against IQ3_XXS's 3.06), 528 in two
//! (2.06, against TQ1_0's 1.69 and TQ2_0's 2.06);
//! [`LutLayout::row_block`] gives the format's block back bit for bit (a
//! TQ1_0 byte as ggml's quantizer writes the byte of its digits).

use super::grid::GridBlock;
use super::grid::{GridCode, GridGroups, Points};
use super::lut::{LutLayout, ROWS};
use super::{
    BlockIq2S, BlockIq2Xs, BlockIq2Xxs, BlockIq3S, BlockIq3Xxs, BlockQ8K, BlockTq1_0, BlockTq2_0,
    QK_K,
};
use half::f16;

/// Rows per tile.
pub const TILE: usize = 8;

/// 8 rows of a 2-bit i-quant at one block position, three planes (see the module).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct PlaneTile {
    pub a: [[u8; 16]; 32],
    pub b: [[u8; 16]; 16],
    pub sc: [[u8; 8]; 8],
    pub d: [f16; TILE],
}

/// 8 rows of IQ3_S at one block position, four planes (see the module).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Plane4Tile {
    pub a: [[u8; 16]; 32],
    pub b: [[u8; 16]; 32],
    pub sc: [[u8; 8]; 8],
    pub d: [f16; TILE],
}

/// 8 rows of IQ3_XXS at one block position, five planes (see the module).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Plane5Tile {
    pub a: [[u8; 16]; 32],
    pub b: [[u8; 16]; 32],
    pub c: [[u8; 16]; 16],
    pub sc: [[u8; 8]; 8],
    pub d: [f16; TILE],
}

/// A tile of sign planes: how a weight maps to plane bits and where a
/// plane's nibble is stored.
pub trait Planes: bytemuck::Pod + Send + Sync {
    /// `c`: a group of four gives `sum(w y) = sum_k COEF[k] T(σ_k) + Y_COEF Y`.
    const COEF: &'static [i32];
    const Y_COEF: i32;
    /// A value is `d * FACTOR * (2 scale + 1) * w`.
    const FACTOR: f32;
    /// Whether the tile has scales; without them (every factor 1) the
    /// kernels' sums run over the whole block.
    const SCALED: bool = true;
    /// The plane bits (bit `k`: `σ_k`, `COEF.len()` of them) of the weight
    /// of magnitude `v` and sign `neg`.
    fn encode(v: u8, neg: bool) -> u8;
    /// [`Planes::encode`]'s inverse: `w = sum_k COEF[k] e_k / 2` as
    /// magnitude and sign. (Bits that no weight has may give a magnitude no
    /// grid holds; the caller then finds no grid point.)
    fn decode(s: u8) -> (u8, bool) {
        let w: i32 = (Self::COEF.iter().enumerate())
            .map(|(k, &c)| if (s >> k) & 1 == 1 { c } else { -c })
            .sum::<i32>()
            / 2;
        (w.unsigned_abs() as u8, w < 0)
    }
    /// The stored (complemented) nibble of plane `k`, row `r`, values `4g..4g + 4`.
    fn nibble(&self, r: usize, g: usize, k: usize) -> u8;
    /// Sets that nibble (its bits must be clear).
    fn or_nibble(&mut self, r: usize, g: usize, k: usize, n: u8);
    /// `[sb][r]`: the scales of sub-block `sb`'s halves, row `r`, low nibble first.
    fn sc(&self) -> &[[u8; 8]; 8];
    fn d(&self) -> &[f16; TILE];
    fn d_mut(&mut self) -> &mut [f16; TILE];

    /// Plane `k`'s bits (not complemented) of row `r`, values `4g..4g + 4`.
    fn bits(&self, r: usize, g: usize, k: usize) -> u8 {
        15 ^ (self.nibble(r, g, k) & 15)
    }

    /// Row `r`'s exact integer sum over one block against `act`:
    /// `sum_sb sum_h (2 scale + 1) * sum_groups (sum_k COEF[k] T(σ_k) + Y_COEF Y)`,
    /// from the planes (what the SIMD kernels compute by lookups).
    fn isum(&self, r: usize, act: &BlockQ8K) -> i32 {
        let mut isum = 0i32;
        for sb in 0..QK_K / 32 {
            for h in 0..2 {
                let s = 2 * ((self.sc()[sb][r] >> (4 * h)) & 15) as i32 + 1;
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
                    sum += Self::COEF
                        .iter()
                        .enumerate()
                        .map(|(k, &c)| c * t(self.bits(r, g, k)))
                        .sum::<i32>()
                        + Self::Y_COEF * t(15);
                }
                isum += s * sum;
            }
        }
        isum
    }
}

/// A tile with scales of its own (the i-quants').
trait Scaled: Planes {
    fn sc_mut(&mut self) -> &mut [[u8; 8]; 8];
}

macro_rules! tile_fields {
    ($tile:ty) => {
        impl Scaled for $tile {
            fn sc_mut(&mut self) -> &mut [[u8; 8]; 8] {
                &mut self.sc
            }
        }
    };
    () => {
        fn sc(&self) -> &[[u8; 8]; 8] {
            &self.sc
        }
        fn d(&self) -> &[f16; TILE] {
            &self.d
        }
        fn d_mut(&mut self) -> &mut [f16; TILE] {
            &mut self.d
        }
    };
}

/// Where planes 0 and 1 of group `g` sit in `a` (every tile): index, byte, shift.
fn a_at(r: usize, g: usize, k: usize) -> (usize, usize, u32) {
    let (sb, rest) = (g / 8, g % 8);
    let (h, p) = (rest / 4, rest % 4);
    (4 * sb + 2 * (p / 2) + h, 2 * r + k, 4 * (p % 2) as u32)
}

/// Where a lone plane of group `g` sits in the zero-extended form
/// ([`PlaneTile`]'s `b`, [`Plane5Tile`]'s `c`): index, byte, shift.
fn lone_at(r: usize, g: usize) -> (usize, usize, u32) {
    let (sb, rest) = (g / 8, g % 8);
    let (h, p) = (rest / 4, rest % 4);
    (2 * sb + p / 2, 8 * h + r, 4 * (p % 2) as u32)
}

impl Planes for PlaneTile {
    const COEF: &'static [i32] = &[18, 35, 33];
    const Y_COEF: i32 = -43;
    const FACTOR: f32 = 0.125;
    fn encode(v: u8, neg: bool) -> u8 {
        let [a, b, c] = plane_bits(v, neg);
        a as u8 | (b as u8) << 1 | (c as u8) << 2
    }
    fn nibble(&self, r: usize, g: usize, k: usize) -> u8 {
        let ((i, j, sh), planes) = if k < 2 {
            (a_at(r, g, k), &self.a[..])
        } else {
            (lone_at(r, g), &self.b[..])
        };
        planes[i][j] >> sh
    }
    fn or_nibble(&mut self, r: usize, g: usize, k: usize, n: u8) {
        let ((i, j, sh), planes) = if k < 2 {
            (a_at(r, g, k), &mut self.a[..])
        } else {
            (lone_at(r, g), &mut self.b[..])
        };
        planes[i][j] |= n << sh;
    }
    tile_fields!();
}

impl Planes for Plane4Tile {
    const COEF: &'static [i32] = &[2, 4, 8, 16];
    const Y_COEF: i32 = -15;
    const FACTOR: f32 = 1.0;
    /// The bits of `(w + 15) / 2`.
    fn encode(v: u8, neg: bool) -> u8 {
        let w = if neg { -(v as i32) } else { v as i32 };
        ((w + 15) / 2) as u8
    }
    fn nibble(&self, r: usize, g: usize, k: usize) -> u8 {
        let (i, j, sh) = a_at(r, g, k % 2);
        [&self.a, &self.b][k / 2][i][j] >> sh
    }
    fn or_nibble(&mut self, r: usize, g: usize, k: usize, n: u8) {
        let (i, j, sh) = a_at(r, g, k % 2);
        let planes = if k < 2 { &mut self.a } else { &mut self.b };
        planes[i][j] |= n << sh;
    }
    tile_fields!();
}

tile_fields!(PlaneTile);
tile_fields!(Plane4Tile);
tile_fields!(Plane5Tile);

/// Row `r` of tile `t` (its bits clear): the planes of weights `w`
/// (magnitude and sign, value order).
fn put_weights<T: Planes>(t: &mut T, r: usize, w: &[(u8, bool); QK_K]) {
    for g in 0..QK_K / 4 {
        let bits: [u8; 4] = std::array::from_fn(|j| T::encode(w[4 * g + j].0, w[4 * g + j].1));
        for k in 0..T::COEF.len() {
            let n = (0..4).map(|j| ((bits[j] >> k) & 1) << j).sum::<u8>();
            t.or_nibble(r, g, k, 15 ^ n);
        }
    }
}

/// A tile of up to 8 rows (`None`: a padding row, zero).
fn pack_tile<R: PlaneRow, T: Scaled>(rows: &[Option<R>; TILE]) -> T {
    let mut t = <T as bytemuck::Zeroable>::zeroed();
    for (r, row) in rows.iter().enumerate() {
        // A padding row: every weight index 0 of the grid, d = 0.
        let row = row.unwrap_or_else(<R as bytemuck::Zeroable>::zeroed);
        t.d_mut()[r] = row.d();
        for sb in 0..QK_K / 32 {
            t.sc_mut()[sb][r] = row.scale_byte(sb);
        }
        put_weights(&mut t, r, &weights(&row));
    }
    t
}

/// Row `r` of tile `t` as the format stores it.
fn tile_row<T: Planes, R: PlaneRow>(t: &T, r: usize) -> R {
    let mut b = <R as bytemuck::Zeroable>::zeroed();
    b.set_d(t.d()[r]);
    for sb in 0..QK_K / 32 {
        b.set_scale_byte(sb, t.sc()[sb][r]);
    }
    for g8 in 0..QK_K / 8 {
        let (mut m, mut s) = (0u64, 0u8);
        for j in 0..8 {
            let (g, jj) = ((8 * g8 + j) / 4, j % 4);
            let sigma = (0..T::COEF.len())
                .map(|k| ((t.bits(r, g, k) >> jj) & 1) << k)
                .sum::<u8>();
            let (v, neg) = T::decode(sigma);
            m |= (v as u64) << (8 * j);
            s |= (neg as u8) << j;
        }
        // Every pattern of a packed block is a grid point (the grids are
        // sorted); one that is not (layout bytes made otherwise) takes point 0.
        let idx = match R::POINTS {
            Points::Eight(grid) => [grid.binary_search(&m).unwrap_or(0), 0],
            Points::Four(grid) => {
                [m as u32, (m >> 32) as u32].map(|p| grid.binary_search(&p).unwrap_or(0))
            }
        };
        b.set_group(g8, idx, s);
    }
    b
}

/// IQ3_XXS's plane coefficients halved: `w = e0 + 4 e1 + 8 e2 + 16 e3 + 33 e4`
/// reaches every grid value (4..52 by 8, and 62) and never 0.
const IQ3XXS_C: [i32; 5] = [1, 4, 8, 16, 33];

/// Per positive IQ3_XXS magnitude (`0..64`), the plane bits of one `e`
/// with `sum c e` equal to it (0 where there is none).
const IQ3XXS_BITS: [u8; 64] = {
    let mut t = [0u8; 64];
    let mut s = 0;
    while s < 32 {
        let (mut w, mut k) = (0i32, 0);
        while k < 5 {
            w += if (s >> k) & 1 == 1 {
                IQ3XXS_C[k]
            } else {
                -IQ3XXS_C[k]
            };
            k += 1;
        }
        if w > 0 && w < 64 && t[w as usize] == 0 {
            t[w as usize] = s as u8;
        }
        s += 1;
    }
    t
};

impl Planes for Plane5Tile {
    const COEF: &'static [i32] = &[2, 8, 16, 32, 66];
    const Y_COEF: i32 = -62;
    const FACTOR: f32 = 0.25;
    /// A weight's bits from the table (flipped all for a negative one).
    fn encode(v: u8, neg: bool) -> u8 {
        let s = IQ3XXS_BITS[(v & 63) as usize];
        if neg {
            s ^ 31
        } else {
            s
        }
    }
    fn nibble(&self, r: usize, g: usize, k: usize) -> u8 {
        let ((i, j, sh), planes) = match k {
            0 | 1 => (a_at(r, g, k), &self.a[..]),
            2 | 3 => (a_at(r, g, k - 2), &self.b[..]),
            _ => (lone_at(r, g), &self.c[..]),
        };
        planes[i][j] >> sh
    }
    fn or_nibble(&mut self, r: usize, g: usize, k: usize, n: u8) {
        let ((i, j, sh), planes) = match k {
            0 | 1 => (a_at(r, g, k), &mut self.a[..]),
            2 | 3 => (a_at(r, g, k - 2), &mut self.b[..]),
            _ => (lone_at(r, g), &mut self.c[..]),
        };
        planes[i][j] |= n << sh;
    }
    tile_fields!();
}

/// 8 rows of a ternary format (TQ1_0, TQ2_0) at one block position, two
/// planes (see the module): `a` as the i-quants' tiles, no scales.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct TernaryTile {
    pub a: [[u8; 16]; 32],
    pub d: [f16; TILE],
}

/// A ternary tile's scale bytes: all 0, so every `2 scale + 1` is 1.
static NO_SCALES: [[u8; 8]; 8] = [[0; 8]; 8];

impl Planes for TernaryTile {
    const COEF: &'static [i32] = &[1, 2];
    const Y_COEF: i32 = -1;
    const FACTOR: f32 = 1.0;
    const SCALED: bool = false;
    /// The bits of `q + 1` for the weight `q` (-1..=2).
    fn encode(v: u8, neg: bool) -> u8 {
        let q = if neg { -(v as i32) } else { v as i32 };
        (q + 1).clamp(0, 3) as u8
    }
    /// `q = σ_0 + 2 σ_1 - 1`.
    fn decode(s: u8) -> (u8, bool) {
        let q = (s & 3) as i32 - 1;
        (q.unsigned_abs() as u8, q < 0)
    }
    fn nibble(&self, r: usize, g: usize, k: usize) -> u8 {
        let (i, j, sh) = a_at(r, g, k);
        self.a[i][j] >> sh
    }
    fn or_nibble(&mut self, r: usize, g: usize, k: usize, n: u8) {
        let (i, j, sh) = a_at(r, g, k);
        self.a[i][j] |= n << sh;
    }
    fn sc(&self) -> &[[u8; 8]; 8] {
        &NO_SCALES
    }
    fn d(&self) -> &[f16; TILE] {
        &self.d
    }
    fn d_mut(&mut self) -> &mut [f16; TILE] {
        &mut self.d
    }
}

/// A ternary format as the plane layout reads it.
pub(crate) trait TernaryPlaneRow: GridBlock + bytemuck::Pod {
    fn d(&self) -> f16;
    /// The block of scale `d` and weights `q` (value order; -1..=1, and 2
    /// where the format has it: TQ2_0's code 3), written as ggml writes one.
    fn from_weights(d: f16, q: &[i8; QK_K]) -> Self;
}

impl TernaryPlaneRow for BlockTq1_0 {
    fn d(&self) -> f16 {
        self.d
    }
    fn from_weights(d: f16, q: &[i8; QK_K]) -> Self {
        super::tq1_0::from_weights(d, q)
    }
}

impl TernaryPlaneRow for BlockTq2_0 {
    fn d(&self) -> f16 {
        self.d
    }
    fn from_weights(d: f16, q: &[i8; QK_K]) -> Self {
        super::tq2_0::from_weights(d, q)
    }
}

/// A ternary tile of up to 8 rows (`None`: a padding row, the zero block).
fn pack_ternary<R: TernaryPlaneRow>(rows: &[Option<R>; TILE]) -> TernaryTile {
    let mut t = <TernaryTile as bytemuck::Zeroable>::zeroed();
    for (r, row) in rows.iter().enumerate() {
        let row = row.unwrap_or_else(<R as bytemuck::Zeroable>::zeroed);
        t.d[r] = row.d();
        let (mut q, mut scales) = ([0i8; QK_K], [0i16; 16]);
        row.int_form(&mut q, &mut scales);
        put_weights(&mut t, r, &q.map(|q| (q.unsigned_abs(), q < 0)));
    }
    t
}

/// Row `r` of a ternary tile as ggml writes the format: the same values
/// as the block packed (a TQ1_0 byte that ggml's quantizer would not write,
/// one of several bytes of the same digits, comes back as the one it writes).
fn ternary_row<R: TernaryPlaneRow>(t: &TernaryTile, r: usize) -> R {
    let q: [i8; QK_K] = std::array::from_fn(|i| {
        let (g, j) = (i / 4, i % 4);
        let s = (0..2)
            .map(|k| ((t.bits(r, g, k) >> j) & 1) << k)
            .sum::<u8>();
        s as i8 - 1
    });
    R::from_weights(t.d[r], &q)
}

/// An i-quant as the plane layout reads it.
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

impl PlaneRow for BlockIq3Xxs {
    fn scale_byte(&self, sb: usize) -> u8 {
        let s = self.qs[QK_K / 4 + 4 * sb + 3] >> 4;
        s | s << 4
    }
    /// The format has one scale per 32 values: the low nibble's.
    fn set_scale_byte(&mut self, sb: usize, s: u8) {
        super::set_bits(&mut self.qs[QK_K / 4 + 4 * sb + 3], 4, 4, s & 15);
    }
    fn d(&self) -> f16 {
        self.d
    }
    fn set_d(&mut self, d: f16) {
        self.d = d
    }
}

impl PlaneRow for BlockIq3S {
    fn scale_byte(&self, sb: usize) -> u8 {
        let s = (self.scales[sb / 2] >> (4 * (sb % 2))) & 15;
        s | s << 4
    }
    /// The format has one scale per 32 values: the low nibble's.
    fn set_scale_byte(&mut self, sb: usize, s: u8) {
        super::set_bits(&mut self.scales[sb / 2], 4 * (sb % 2), 4, s & 15);
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

/// The three plane bits of a 2-bit i-quant's weight of magnitude `v` (8,
/// 25 or 43) and sign `neg`: `σ_k = (e_k + 1) / 2` (see the module).
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

/// One block position of 64 rows of an i-quant in a plane layout.
pub(crate) trait PlanesX64: LutLayout {
    type Tile: Planes;
    fn tiles(&self) -> &[Self::Tile; ROWS / TILE];
}

macro_rules! planes_block {
    ($name:ident, $row:ty, $tile:ty, $pack:ident, $unpack:ident) => {
        #[doc = concat!("64 rows of [`", stringify!($row), "`] at one block position as sign planes (see the module).")]
        #[repr(C)]
        #[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
        pub struct $name {
            pub tiles: [$tile; ROWS / TILE],
        }
        impl PlanesX64 for $name {
            type Tile = $tile;
            fn tiles(&self) -> &[$tile; ROWS / TILE] {
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
                        $pack(&std::array::from_fn(|r| row(TILE * t + r)))
                    }),
                }
            }
            fn row_block(&self, r: usize) -> $row {
                $unpack(&self.tiles[r / TILE], r % TILE)
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
planes_block!(BlockIq2Xxsx64, BlockIq2Xxs, PlaneTile, pack_tile, tile_row);
planes_block!(BlockIq2Xsx64, BlockIq2Xs, PlaneTile, pack_tile, tile_row);
planes_block!(BlockIq2Sx64, BlockIq2S, PlaneTile, pack_tile, tile_row);
planes_block!(BlockIq3Sx64, BlockIq3S, Plane4Tile, pack_tile, tile_row);
planes_block!(BlockIq3Xxsx64, BlockIq3Xxs, Plane5Tile, pack_tile, tile_row);
planes_block!(
    BlockTq1_0Px64,
    BlockTq1_0,
    TernaryTile,
    pack_ternary,
    ternary_row
);
planes_block!(
    BlockTq2_0Px64,
    BlockTq2_0,
    TernaryTile,
    pack_ternary,
    ternary_row
);

/// The scalar reference of the plane lookup-table GEMV (see
/// [`LutLayout::gemv_ref`]): per row and block the exact integer
/// ([`Planes::isum`]), then `out += ((d * FACTOR) * act.d) * isum`, block
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
                    let dd = (tile.d()[r].to_f32() * X::Tile::FACTOR) * act[b].d;
                    out[ROWS * g + TILE * t + r] += dd * tile.isum(r, &act[b]) as f32;
                }
            }
        }
    }
}
