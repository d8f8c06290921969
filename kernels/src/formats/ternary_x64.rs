//! Ternary rows (TQ1_0, TQ2_0) in groups of 64 for the lookup-table GEMV
//! (T-MAC's technique, re-derived for these formats: Wei et al., "T-MAC: CPU
//! Renaissance via Table Lookup for Low-Bit LLM Deployment on Edge", 2024).
//!
//! Each byte of a ternary block packs several weights: TQ1_0 five base-3
//! digits (four in its `qh` bytes), TQ2_0 four 2-bit fields. For one
//! activation column, the byte's share of a dot product depends only on the
//! byte and on the activations at its weights' positions, so one 256-entry
//! table per byte position and block, `T[q] = sum_n coef_n(q) * x[pos_n]`
//! (exact, 16 bits), turns the byte into its partial sum by one lookup.
//! The table is built once per column and serves every row; a vector lookup
//! needs the same table in every lane, so the lanes are 64 rows at one byte
//! position: this layout.
//!
//! A [`BlockTq1_0x64`] / [`BlockTq2_0x64`] holds one block position (256
//! values along K) of 64 rows: the rows' scales `d` in the kernels' slot
//! order ([`slot_row`]), then for each byte position `j` of the format's block
//! ([`TernaryRow::byte`]) the 64 rows' bytes in row order. The same bytes as
//! the format (54 and 66 per row and block); a matrix is stored block
//! position after block position, each with its groups of 64 rows in order,
//! so that one block position of every row is one contiguous run. A last
//! group of fewer than 64 rows is padded with zero rows (scale 0).

use super::lut::LutLayout;
use super::{BlockQ8K, BlockTq1_0, BlockTq2_0, WeightBlock, QK_K};
use half::f16;

pub use super::lut::ROWS;

/// The row (0..64) whose result the kernels keep in slot `s`: slot `16v + i`
/// is lane `i` of the kernels' `v`-th 32-bit accumulator. (The lookup gives
/// low and high bytes for the 64 rows in order; interleaving them into
/// 16-bit sums, per 128-bit lane, then splitting even and odd 16-bit lanes
/// into 32-bit ones, puts row `16(i/4) + 8(v/2) + 2(i%4) + v%2` there.)
pub const fn slot_row(s: usize) -> usize {
    let (v, i) = (s / 16, s % 16);
    16 * (i / 4) + 8 * (v / 2) + 2 * (i % 4) + v % 2
}

/// The slot holding row `r`'s result: [`slot_row`]'s inverse.
pub const fn row_slot(r: usize) -> usize {
    let (c, rest) = (r / 16, r % 16);
    let (half, k) = (rest / 8, rest % 8);
    16 * (2 * half + k % 2) + 4 * c + k / 2
}

/// A ternary format as the lookup-table layout reads it.
pub trait TernaryRow: WeightBlock<Act = BlockQ8K> {
    /// Bytes per block: table lookups per block and row.
    const GROUPS: usize;
    /// Weights per byte at most (5 or 4).
    const TERMS: usize;
    /// Byte `j` (< GROUPS) of the block.
    fn byte(&self, j: usize) -> u8;
    fn set_byte(&mut self, j: usize, q: u8);
    fn scale(&self) -> f16;
    fn set_scale(&mut self, d: f16);
    /// The positions in the block of byte `j`'s weights, `count` of them.
    fn positions(j: usize) -> ([usize; 5], usize);
    /// The weight (as a multiple of `d`: -1, 0, 1, or 2 for TQ2_0's code 3)
    /// that byte value `q` holds at its `n`-th position.
    fn coef(q: u8, n: usize) -> i8;
    /// `coef + 1` (0..=3) of every byte value, two positions per 16-bit
    /// entry: `[p][2q + h]` is position `2p + h` of byte value `q` (0 past
    /// the last position). What the SIMD table builders multiply.
    const DIGIT_PAIRS: [[u8; 512]; 3];
}

/// [`TernaryRow::DIGIT_PAIRS`] of TQ1_0 (`tq1 = true`) or TQ2_0.
const fn digit_pairs(tq1: bool, terms: usize) -> [[u8; 512]; 3] {
    let mut t = [[0u8; 512]; 3];
    let mut q = 0;
    while q < 256 {
        let mut n = 0;
        while n < terms {
            t[n / 2][2 * q + n % 2] = if tq1 {
                tq1_0_code(q as u8, n)
            } else {
                tq2_0_code(q as u8, n)
            };
            n += 1;
        }
        q += 1;
    }
    t
}

const fn tq1_0_code(q: u8, n: usize) -> u8 {
    (super::tq1_0::digit(q, n) + 1) as u8
}

const fn tq2_0_code(q: u8, n: usize) -> u8 {
    (q >> (2 * n)) & 3
}

impl TernaryRow for BlockTq1_0 {
    const GROUPS: usize = 52;
    const TERMS: usize = 5;
    fn byte(&self, j: usize) -> u8 {
        if j < 48 {
            self.qs[j]
        } else {
            self.qh[j - 48]
        }
    }
    fn set_byte(&mut self, j: usize, q: u8) {
        if j < 48 {
            self.qs[j] = q
        } else {
            self.qh[j - 48] = q
        }
    }
    fn scale(&self) -> f16 {
        self.d
    }
    fn set_scale(&mut self, d: f16) {
        self.d = d
    }
    /// [`BlockTq1_0`]'s placement: values `32n + m` are digit `n` of
    /// `qs[m]`, `160 + 16n + m` of `qs[32 + m]`, `240 + 4n + j` of `qh[j]`
    /// (whose fifth digit is not read).
    fn positions(j: usize) -> ([usize; 5], usize) {
        match j {
            0..32 => (std::array::from_fn(|n| 32 * n + j), 5),
            32..48 => (std::array::from_fn(|n| 160 + 16 * n + (j - 32)), 5),
            _ => (
                std::array::from_fn(|n| (240 + 4 * n + (j - 48)).min(QK_K - 1)),
                4,
            ),
        }
    }
    fn coef(q: u8, n: usize) -> i8 {
        super::tq1_0::digit(q, n)
    }
    const DIGIT_PAIRS: [[u8; 512]; 3] = digit_pairs(true, 5);
}

impl TernaryRow for BlockTq2_0 {
    const GROUPS: usize = 64;
    const TERMS: usize = 4;
    fn byte(&self, j: usize) -> u8 {
        self.qs[j]
    }
    fn set_byte(&mut self, j: usize, q: u8) {
        self.qs[j] = q
    }
    fn scale(&self) -> f16 {
        self.d
    }
    fn set_scale(&mut self, d: f16) {
        self.d = d
    }
    /// Values `128h + 32n + m` are field `n` of `qs[32h + m]`.
    fn positions(j: usize) -> ([usize; 5], usize) {
        (
            std::array::from_fn(|n| (128 * (j / 32) + 32 * n + j % 32).min(QK_K - 1)),
            4,
        )
    }
    fn coef(q: u8, n: usize) -> i8 {
        tq2_0_code(q, n) as i8 - 1
    }
    const DIGIT_PAIRS: [[u8; 512]; 3] = digit_pairs(false, 4);
}

/// One block position of 64 rows in the lookup-table layout.
pub trait TernaryX64: LutLayout<Row: TernaryRow> {
    /// The 64 rows' scales in slot order ([`slot_row`]).
    fn d(&self) -> &[f16; ROWS];
    /// Per byte position, the 64 rows' bytes in row order.
    fn q(&self) -> &[[u8; ROWS]];
}

macro_rules! x64_block {
    ($name:ident, $row:ty, $groups:literal) => {
        #[doc = concat!("64 rows of [`", stringify!($row), "`] at one block position (see the module).")]
        #[repr(C)]
        #[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
        pub struct $name {
            pub d: [f16; ROWS],
            pub q: [[u8; ROWS]; $groups],
        }
        impl TernaryX64 for $name {
            fn d(&self) -> &[f16; ROWS] {
                &self.d
            }
            fn q(&self) -> &[[u8; ROWS]] {
                &self.q
            }
        }
        impl LutLayout for $name {
            type Row = $row;
            fn slot_row(s: usize) -> usize {
                slot_row(s)
            }
            fn pack(row: &dyn Fn(usize) -> Option<$row>) -> Self {
                let rows: [Option<$row>; ROWS] = std::array::from_fn(row);
                let mut x = <Self as bytemuck::Zeroable>::zeroed();
                for (s, d) in x.d.iter_mut().enumerate() {
                    if let Some(r) = &rows[slot_row(s)] {
                        *d = r.scale();
                    }
                }
                for (j, q) in x.q.iter_mut().enumerate() {
                    for (q, r) in q.iter_mut().zip(&rows) {
                        if let Some(r) = r {
                            *q = r.byte(j);
                        }
                    }
                }
                x
            }
            fn row_block(&self, r: usize) -> $row {
                let mut b = <$row as bytemuck::Zeroable>::zeroed();
                b.set_scale(self.d[row_slot(r)]);
                for (j, q) in self.q.iter().enumerate() {
                    b.set_byte(j, q[r]);
                }
                b
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
        const _: () = assert!(<$row as TernaryRow>::GROUPS == $groups);
    };
}
x64_block!(BlockTq1_0x64, BlockTq1_0, 52);
x64_block!(BlockTq2_0x64, BlockTq2_0, 64);

/// Block `b`'s table for byte position `j`: `T[q] = sum_n coef_n(q) * x[pos_n]`.
pub fn table<R: TernaryRow>(act: &BlockQ8K, j: usize) -> [i16; 256] {
    let (pos, count) = R::positions(j);
    std::array::from_fn(|q| {
        (0..count)
            .map(|n| R::coef(q as u8, n) as i16 * act.qs[pos[n]] as i16)
            .sum()
    })
}

/// The scalar reference of the lookup-table GEMV: block positions
/// `blocks` (a range of `0..k / 256`) of every group against one column
/// `act` (all `k / 256` blocks), added to `out` (64 per group, in slot
/// order). Per row and block: the exact integer sum of the table entries,
/// times `d * act.d`, added in block order as `vec_dot` adds.
pub fn gemv_ref<X: TernaryX64>(
    x: &[X],
    ngroups: usize,
    blocks: std::ops::Range<usize>,
    act: &[BlockQ8K],
    out: &mut [f32],
) {
    for b in blocks {
        let tables: Vec<[i16; 256]> = (0..X::Row::GROUPS)
            .map(|j| table::<X::Row>(&act[b], j))
            .collect();
        for (g, x) in x[b * ngroups..(b + 1) * ngroups].iter().enumerate() {
            for s in 0..ROWS {
                let lane = slot_row(s);
                let isum: i32 = tables
                    .iter()
                    .zip(x.q())
                    .map(|(t, q)| t[q[lane] as usize] as i32)
                    .sum();
                out[ROWS * g + s] += x.d()[s].to_f32() * act[b].d * isum as f32;
            }
        }
    }
}
