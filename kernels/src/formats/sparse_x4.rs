//! Blocks of four weight rows interleaved ("x4"): the layout the decode
//! (batch 1) kernels of the 2:4 formats, and of dense Q4_0 / Q8_0 in the
//! plugin, read.
//!
//! A [`BlockQ8_0Sx4`] / [`BlockQ4_0Sx4`] holds the 2:4 blocks ([`super::sparse`])
//! at one position along K of four consecutive rows: their four f16 scales
//! together, their four 32-bit masks together, then their kept codes. A matrix
//! is stored group of four rows after group, each group's blocks in K order,
//! so a GEMV reads the weights as one sequential stream (four separate rows
//! would be four streams, slower from DRAM) while one
//! activation block, one scale conversion and one pair of mask loads serve four
//! rows. Same bytes per value as the 2:4 blocks (22 and 14 per 32 values);
//! a last group of fewer than four rows is padded with zero rows.
//!
//! Dense Q4_0 / Q5_0 / Q8_0 / IQ4_NL rows interleave the same way
//! ([`BlockQ4_0x4`], [`BlockQ5_0x4`], [`BlockQ8_0x4`], [`BlockIq4Nlx4`]:
//! four scales, then four rows' codes), as ggml repacks Q4_0 and IQ4_NL for
//! its own GEMV.
//!
//! [`interleave`] and [`deinterleave`] are scalar and exact inverses (tested
//! byte for byte); the kernels name them as the layout they read.

use super::sparse::{pack_q4_0, pack_q8_0};
use super::{
    Block32, BlockIq4Nl, BlockQ4_0, BlockQ4_0S, BlockQ5_0, BlockQ8_0, BlockQ8_0S, Codes, Format,
    WeightBlock,
};
use crate::{Error, Result};
use half::f16;

/// Rows per interleaved group.
pub const GROUP: usize = 4;

/// Four rows' Q8_0S blocks at one position: row r's scale `d[r]`, mask
/// `mask[4r..4r+4]` (little-endian u32), kept codes `qs[16r..16r+16]`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8_0Sx4 {
    pub d: [f16; 4],
    pub mask: [u8; 16],
    pub qs: [i8; 64],
}

/// Four rows' Q4_0S blocks at one position: row r's scale `d[r]`, mask
/// `mask[4r..4r+4]`, code bytes `qs[8 * SLOT[r]..][..8]` with the slots in
/// the order rows 0, 2, 1, 3 (so that one 32-byte load split into nibbles and
/// unpacked by 64-bit halves gives rows 0 and 1 together, then 2 and 3).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_0Sx4 {
    pub d: [f16; 4],
    pub mask: [u8; 16],
    pub qs: [u8; 32],
}

/// Four rows' Q4_0 blocks at one position: row r's scale `d[r]`, its 16
/// code bytes `qs[16r..16r+16]` (low nibbles values 0..16, high 16..32).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_0x4 {
    pub d: [f16; 4],
    pub qs: [u8; 64],
}

/// Four rows' Q8_0 blocks at one position: row r's scale `d[r]`, its codes `qs[32r..32r+32]`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8_0x4 {
    pub d: [f16; 4],
    pub qs: [i8; 128],
}

/// Four rows' IQ4_NL blocks at one position, laid out as [`BlockQ4_0x4`]:
/// row r's scale `d[r]`, its 16 index bytes `qs[16r..16r+16]`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIq4Nlx4 {
    pub d: [f16; 4],
    pub qs: [u8; 64],
}

/// Four rows' Q5_0 blocks at one position: row r's scale `d[r]`, its fifth
/// bits `qh[4r..4r+4]`, its 16 nibble bytes `qs[16r..16r+16]` (Q4_0x4's).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ5_0x4 {
    pub d: [f16; 4],
    pub qh: [u8; 16],
    pub qs: [u8; 64],
}

const _: () = assert!(std::mem::size_of::<BlockIq4Nlx4>() == 4 * 18);
const _: () = assert!(std::mem::size_of::<BlockQ5_0x4>() == 4 * 22);
const _: () = assert!(std::mem::size_of::<BlockQ4_0x4>() == 4 * 18);
const _: () = assert!(std::mem::size_of::<BlockQ8_0x4>() == 4 * 34);
const _: () = assert!(std::mem::size_of::<BlockQ8_0Sx4>() == 4 * 22);
const _: () = assert!(std::mem::size_of::<BlockQ4_0Sx4>() == 4 * 14);

/// Where row r's code bytes sit in a [`BlockQ4_0Sx4`].
pub const Q4_SLOT: [usize; 4] = [0, 2, 1, 3];

/// An interleaved block: four rows' blocks of type `Row`.
pub trait X4Block: bytemuck::Pod + Send + Sync + 'static {
    /// The block of one row.
    type Row: WeightBlock<Act = BlockQ8_0> + Copy;
    /// The format of the rows (`q4_0_2:4`, `q8_0_2:4`, `q4_0`, `q8_0`).
    const FORMAT: Format;
    /// Row `r`'s block.
    fn row(&self, r: usize) -> Self::Row;
    /// The block of four rows' blocks.
    fn from_rows(rows: [Self::Row; 4]) -> Self;
    /// A zero row (scale 0, codes of value 0, a valid mask if 2:4), for padding.
    fn zero_row() -> Self::Row;
    /// Whether every row's 2:4 mask is valid (dense layouts have none).
    fn masks_valid(&self) -> bool {
        true
    }
}

/// Whether four rows' masks, four bytes each, are all valid 2:4 masks.
fn masks_valid(mask: &[u8; 16]) -> bool {
    mask.chunks_exact(4)
        .all(|m| crate::formats::sparse::valid_mask(u32::from_le_bytes(m.try_into().unwrap())))
}

/// The dense block a row block packs (itself, for a dense block).
pub trait DenseOf {
    type Dense: bytemuck::Pod;
    fn pack(dense: &[Self::Dense]) -> Result<Vec<Self>>
    where
        Self: Sized;
}
impl DenseOf for BlockQ4_0S {
    type Dense = BlockQ4_0;
    fn pack(dense: &[BlockQ4_0]) -> Result<Vec<Self>> {
        pack_q4_0(dense)
    }
}
impl DenseOf for BlockQ8_0S {
    type Dense = BlockQ8_0;
    fn pack(dense: &[BlockQ8_0]) -> Result<Vec<Self>> {
        pack_q8_0(dense)
    }
}

impl DenseOf for BlockQ4_0 {
    type Dense = BlockQ4_0;
    fn pack(dense: &[BlockQ4_0]) -> Result<Vec<Self>> {
        Ok(dense.to_vec())
    }
}
impl DenseOf for BlockIq4Nl {
    type Dense = BlockIq4Nl;
    fn pack(dense: &[BlockIq4Nl]) -> Result<Vec<Self>> {
        Ok(dense.to_vec())
    }
}
impl DenseOf for BlockQ5_0 {
    type Dense = BlockQ5_0;
    fn pack(dense: &[BlockQ5_0]) -> Result<Vec<Self>> {
        Ok(dense.to_vec())
    }
}
impl DenseOf for BlockQ8_0 {
    type Dense = BlockQ8_0;
    fn pack(dense: &[BlockQ8_0]) -> Result<Vec<Self>> {
        Ok(dense.to_vec())
    }
}

impl X4Block for BlockQ4_0x4 {
    type Row = BlockQ4_0;
    const FORMAT: Format = Format::Q4_0;
    fn row(&self, r: usize) -> BlockQ4_0 {
        BlockQ4_0 {
            d: self.d[r],
            qs: self.qs[16 * r..16 * r + 16].try_into().unwrap(),
        }
    }
    fn from_rows(rows: [BlockQ4_0; 4]) -> Self {
        let mut b = BlockQ4_0x4 {
            d: [f16::ZERO; 4],
            qs: [0; 64],
        };
        for (r, row) in rows.iter().enumerate() {
            b.d[r] = row.d;
            b.qs[16 * r..16 * r + 16].copy_from_slice(&row.qs);
        }
        b
    }
    fn zero_row() -> BlockQ4_0 {
        BlockQ4_0 {
            d: f16::ZERO,
            qs: [0x88; 16],
        }
    }
}

impl X4Block for BlockIq4Nlx4 {
    type Row = BlockIq4Nl;
    const FORMAT: Format = Format::IQ4_NL;
    fn row(&self, r: usize) -> BlockIq4Nl {
        BlockIq4Nl {
            d: self.d[r],
            qs: self.qs[16 * r..16 * r + 16].try_into().unwrap(),
        }
    }
    fn from_rows(rows: [BlockIq4Nl; 4]) -> Self {
        let mut b = BlockIq4Nlx4 {
            d: [f16::ZERO; 4],
            qs: [0; 64],
        };
        for (r, row) in rows.iter().enumerate() {
            b.d[r] = row.d;
            b.qs[16 * r..16 * r + 16].copy_from_slice(&row.qs);
        }
        b
    }
    fn zero_row() -> BlockIq4Nl {
        BlockIq4Nl {
            d: f16::ZERO,
            qs: [0; 16],
        }
    }
}

impl X4Block for BlockQ5_0x4 {
    type Row = BlockQ5_0;
    const FORMAT: Format = Format::Q5_0;
    fn row(&self, r: usize) -> BlockQ5_0 {
        BlockQ5_0 {
            d: self.d[r],
            qh: self.qh[4 * r..4 * r + 4].try_into().unwrap(),
            qs: self.qs[16 * r..16 * r + 16].try_into().unwrap(),
        }
    }
    fn from_rows(rows: [BlockQ5_0; 4]) -> Self {
        let mut b = BlockQ5_0x4 {
            d: [f16::ZERO; 4],
            qh: [0; 16],
            qs: [0; 64],
        };
        for (r, row) in rows.iter().enumerate() {
            b.d[r] = row.d;
            b.qh[4 * r..4 * r + 4].copy_from_slice(&row.qh);
            b.qs[16 * r..16 * r + 16].copy_from_slice(&row.qs);
        }
        b
    }
    fn zero_row() -> BlockQ5_0 {
        BlockQ5_0 {
            d: f16::ZERO,
            qh: [0; 4],
            qs: [0; 16],
        }
    }
}

impl X4Block for BlockQ8_0x4 {
    type Row = BlockQ8_0;
    const FORMAT: Format = Format::Q8_0;
    fn row(&self, r: usize) -> BlockQ8_0 {
        BlockQ8_0 {
            d: self.d[r],
            qs: self.qs[32 * r..32 * r + 32].try_into().unwrap(),
        }
    }
    fn from_rows(rows: [BlockQ8_0; 4]) -> Self {
        let mut b = BlockQ8_0x4 {
            d: [f16::ZERO; 4],
            qs: [0; 128],
        };
        for (r, row) in rows.iter().enumerate() {
            b.d[r] = row.d;
            b.qs[32 * r..32 * r + 32].copy_from_slice(&row.qs);
        }
        b
    }
    fn zero_row() -> BlockQ8_0 {
        BlockQ8_0 {
            d: f16::ZERO,
            qs: [0; 32],
        }
    }
}

/// Bits 0 and 1 of every nibble: a valid 2:4 mask.
const PAD_MASK: [u8; 4] = [0x33; 4];

impl X4Block for BlockQ8_0Sx4 {
    fn masks_valid(&self) -> bool {
        masks_valid(&self.mask)
    }
    type Row = BlockQ8_0S;
    const FORMAT: Format = Format::Q8_0S;
    fn row(&self, r: usize) -> BlockQ8_0S {
        BlockQ8_0S {
            d: self.d[r],
            mask: self.mask[4 * r..4 * r + 4].try_into().unwrap(),
            qs: self.qs[16 * r..16 * r + 16].try_into().unwrap(),
        }
    }
    fn from_rows(rows: [BlockQ8_0S; 4]) -> Self {
        let mut b = BlockQ8_0Sx4 {
            d: [f16::ZERO; 4],
            mask: [0; 16],
            qs: [0; 64],
        };
        for (r, row) in rows.iter().enumerate() {
            b.d[r] = row.d;
            b.mask[4 * r..4 * r + 4].copy_from_slice(&row.mask);
            b.qs[16 * r..16 * r + 16].copy_from_slice(&row.qs);
        }
        b
    }
    fn zero_row() -> BlockQ8_0S {
        BlockQ8_0S {
            d: f16::ZERO,
            mask: PAD_MASK,
            qs: [0; 16],
        }
    }
}

impl X4Block for BlockQ4_0Sx4 {
    fn masks_valid(&self) -> bool {
        masks_valid(&self.mask)
    }
    type Row = BlockQ4_0S;
    const FORMAT: Format = Format::Q4_0S;
    fn row(&self, r: usize) -> BlockQ4_0S {
        let s = Q4_SLOT[r];
        BlockQ4_0S {
            d: self.d[r],
            mask: self.mask[4 * r..4 * r + 4].try_into().unwrap(),
            qs: self.qs[8 * s..8 * s + 8].try_into().unwrap(),
        }
    }
    fn from_rows(rows: [BlockQ4_0S; 4]) -> Self {
        let mut b = BlockQ4_0Sx4 {
            d: [f16::ZERO; 4],
            mask: [0; 16],
            qs: [0; 32],
        };
        for (r, row) in rows.iter().enumerate() {
            let s = Q4_SLOT[r];
            b.d[r] = row.d;
            b.mask[4 * r..4 * r + 4].copy_from_slice(&row.mask);
            b.qs[8 * s..8 * s + 8].copy_from_slice(&row.qs);
        }
        b
    }
    fn zero_row() -> BlockQ4_0S {
        BlockQ4_0S {
            d: f16::ZERO,
            mask: PAD_MASK,
            qs: [0x88; 8],
        }
    }
}

/// Row `r` (< 4) of an interleaved block, read in place: what the AVX2 and
/// NEON interleaved GEMVs hand to their 2:4 block expansion.
#[derive(Clone, Copy)]
#[allow(dead_code)] // not every architecture has kernels that use it
pub(crate) struct X4Row<'a, X> {
    pub b: &'a X,
    pub r: usize,
}

impl Block32 for X4Row<'_, BlockQ8_0Sx4> {
    const CODES: Codes = Codes::SparseBytes;
    fn codes(&self) -> *const u8 {
        self.b.qs[16 * self.r..].as_ptr().cast()
    }
    fn d_bits(&self) -> u16 {
        self.b.d[self.r].to_bits()
    }
    fn mask(&self) -> u32 {
        u32::from_le_bytes(self.b.mask[4 * self.r..4 * self.r + 4].try_into().unwrap())
    }
}

impl Block32 for X4Row<'_, BlockQ4_0Sx4> {
    const CODES: Codes = Codes::SparseNibbles;
    fn codes(&self) -> *const u8 {
        self.b.qs[8 * Q4_SLOT[self.r]..].as_ptr()
    }
    fn d_bits(&self) -> u16 {
        self.b.d[self.r].to_bits()
    }
    fn mask(&self) -> u32 {
        u32::from_le_bytes(self.b.mask[4 * self.r..4 * self.r + 4].try_into().unwrap())
    }
}

impl Block32 for X4Row<'_, BlockQ4_0x4> {
    const CODES: Codes = Codes::Nibbles;
    fn codes(&self) -> *const u8 {
        self.b.qs[16 * self.r..].as_ptr()
    }
    fn d_bits(&self) -> u16 {
        self.b.d[self.r].to_bits()
    }
}

impl Block32 for X4Row<'_, BlockIq4Nlx4> {
    const CODES: Codes = Codes::NonLinear;
    fn codes(&self) -> *const u8 {
        self.b.qs[16 * self.r..].as_ptr()
    }
    fn d_bits(&self) -> u16 {
        self.b.d[self.r].to_bits()
    }
}

impl Block32 for X4Row<'_, BlockQ5_0x4> {
    const CODES: Codes = Codes::Nibbles5;
    fn codes(&self) -> *const u8 {
        self.b.qs[16 * self.r..].as_ptr()
    }
    fn d_bits(&self) -> u16 {
        self.b.d[self.r].to_bits()
    }
    fn high_bits(&self) -> u32 {
        u32::from_le_bytes(self.b.qh[4 * self.r..4 * self.r + 4].try_into().unwrap())
    }
}

impl Block32 for X4Row<'_, BlockQ8_0x4> {
    const CODES: Codes = Codes::Bytes;
    fn codes(&self) -> *const u8 {
        self.b.qs[32 * self.r..].as_ptr().cast()
    }
    fn d_bits(&self) -> u16 {
        self.b.d[self.r].to_bits()
    }
}

/// Interleaves `rows` rows of `k` values of 2:4 blocks (row after row) into
/// groups of four rows; a last partial group is padded with zero rows.
pub fn interleave<X: X4Block>(blocks: &[X::Row], rows: usize, k: usize) -> Result<Vec<X>> {
    let per_row = X::FORMAT.blocks_in(k)?;
    if blocks.len() != rows * per_row {
        return Err(Error::LengthMismatch {
            what: "row blocks (rows * k / 32)",
            expected: rows * per_row,
            got: blocks.len(),
        });
    }
    let mut out = Vec::with_capacity(rows.div_ceil(GROUP) * per_row);
    for g in 0..rows.div_ceil(GROUP) {
        for i in 0..per_row {
            out.push(X::from_rows(std::array::from_fn(|r| {
                let row = GROUP * g + r;
                if row < rows {
                    blocks[row * per_row + i]
                } else {
                    X::zero_row()
                }
            })));
        }
    }
    Ok(out)
}

/// The 2:4 blocks of `rows` rows (row after row) from their interleaved groups: [`interleave`]'s inverse.
pub fn deinterleave<X: X4Block>(x4: &[X], rows: usize, k: usize) -> Result<Vec<X::Row>> {
    let per_row = X::FORMAT.blocks_in(k)?;
    if x4.len() != rows.div_ceil(GROUP) * per_row {
        return Err(Error::LengthMismatch {
            what: "interleaved blocks (ceil(rows / 4) * k / 32)",
            expected: rows.div_ceil(GROUP) * per_row,
            got: x4.len(),
        });
    }
    let mut out = Vec::with_capacity(rows * per_row);
    for row in 0..rows {
        let (g, r) = (row / GROUP, row % GROUP);
        out.extend(x4[g * per_row..(g + 1) * per_row].iter().map(|b| b.row(r)));
    }
    Ok(out)
}

/// The scalar reference of the interleaved GEMV: `out[r]` is the dot product
/// of row r of `group` (one group's blocks along K) with `act`, summed block
/// by block exactly as [`WeightBlock::vec_dot`] sums the row's 2:4 blocks.
pub fn gemv_x4_ref<X: X4Block>(group: &[X], act: &[BlockQ8_0], out: &mut [f32; 4]) {
    for (r, o) in out.iter_mut().enumerate() {
        *o = group.iter().zip(act).fold(0.0f32, |sum, (b, a)| {
            let (s, m) = X::Row::block_terms(&b.row(r), a);
            sum + (s - m)
        });
    }
}
