//! 2:4 sparse blocks: Q4_0 and Q8_0 blocks of which at most two of every four
//! consecutive values (along K) are non-zero, stored without the zeros.
//!
//! A sparse block keeps the dense block's f16 scale and the codes of the kept
//! values exactly as the GGUF stores them, plus a 32-bit mask of the kept
//! positions (bit i: value i is kept; exactly two bits in each nibble). So
//! packing is lossless: [`unpack_q4_0`] / [`unpack_q8_0`] give back the dense
//! blocks byte for byte, and a dot product over a sparse block sums exactly the
//! same integers as over the dense one.
//!
//! | format | dense bytes / 32 values | 2:4 bytes / 32 values |
//! |---|---|---|
//! | Q4_0 | 18 | 14 (d 2, mask 4, 16 codes x 4 bits 8) |
//! | Q8_0 | 34 | 22 (d 2, mask 4, 16 codes x 8 bits 16) |
//!
//! Kept values are stored in ascending position order. Kernels expand a block
//! back to 32 codes with one byte shuffle driven by [`EXPAND_LUT`]; the
//! invariant of two kept values per nibble of the mask (four per mask byte)
//! is what lets them place the second mask byte's values at kept index 4, the
//! third's at 8 and so on. [`check_row`] verifies it for foreign data.

use super::{check_out, magnitude, weight_block, BlockQ4_0, BlockQ8_0, Format};
use crate::panel::PanelFormat;
use crate::testdata::{RandomBlock, Rng};
use crate::{Error, Result};
use half::f16;

/// A 2:4 sparse Q4_0 block: kept value k (0..16) is code
/// `(qs[k % 8] >> 4 * (k / 8)) & 15`, offset by 8 (low nibbles hold kept
/// values 0..8, high nibbles 8..16, as Q4_0 splits its values), at the
/// position of the k-th set bit of `mask` (little-endian u32).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_0S {
    pub d: f16,
    pub mask: [u8; 4],
    pub qs: [u8; 8],
}

/// A 2:4 sparse Q8_0 block: kept value k (0..16) is `qs[k]` at the position
/// of the k-th set bit of `mask` (little-endian u32).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8_0S {
    pub d: f16,
    pub mask: [u8; 4],
    pub qs: [i8; 16],
}

// stored as GGML_TYPE_Q4_0.
weight_block!(
    BlockQ4_0S,
    Q4_0S,
    "q4_0_2:4",
    len 32,
    bytes 2 + 4 + 8,
    ggml 2,
    ftype None,
    BlockQ8_0,
    dequantize_row_q4_0s,
    block_terms_q4_0s,
    block_magnitude_q4_0s,
    super::quantize_row_q8_0
);
// stored as GGML_TYPE_Q8_0.
weight_block!(
    BlockQ8_0S,
    Q8_0S,
    "q8_0_2:4",
    len 32,
    bytes 2 + 4 + 16,
    ggml 8,
    ftype None,
    BlockQ8_0,
    dequantize_row_q8_0s,
    block_terms_q8_0s,
    block_magnitude_q8_0s,
    super::quantize_row_q8_0
);

/// Byte shuffle indices that expand kept values into positions, per mask byte:
/// byte j of `EXPAND_LUT[m]` is the index among the byte's kept values of
/// position j if bit j of `m` is set, else 0x80 (a zero from `pshufb`, and out
/// of range, so zero, for NEON's `tbl`). Kernels add 4 per earlier mask byte.
pub static EXPAND_LUT: [u64; 256] = expand_lut();

const fn expand_lut() -> [u64; 256] {
    let mut lut = [0u64; 256];
    let mut m = 0;
    while m < 256 {
        let (mut v, mut kept, mut j) = (0u64, 0u64, 0);
        while j < 8 {
            let b = if m >> j & 1 == 1 {
                kept += 1;
                kept - 1
            } else {
                0x80
            };
            v |= b << (8 * j);
            j += 1;
        }
        lut[m] = v;
        m += 1;
    }
    lut
}

/// Whether every nibble of `mask` has exactly two bits set.
pub fn valid_mask(mask: u32) -> bool {
    (0..8).all(|g| (mask >> (4 * g) & 0xF).count_ones() == 2)
}

/// A sparse block: its scale bits and mask, for the kernels.
pub trait SparseBlock {
    fn mask(&self) -> u32;
}
impl SparseBlock for BlockQ4_0S {
    fn mask(&self) -> u32 {
        u32::from_le_bytes(self.mask)
    }
}
impl SparseBlock for BlockQ8_0S {
    fn mask(&self) -> u32 {
        u32::from_le_bytes(self.mask)
    }
}

/// Checks that foreign sparse blocks keep the mask invariant the kernels rely on.
pub fn check_row<B: SparseBlock>(blocks: &[B]) -> Result<()> {
    match blocks.iter().position(|b| !valid_mask(b.mask())) {
        Some(block) => Err(Error::NotSparse24 { block, group: 0 }),
        None => Ok(()),
    }
}

/// The positions (ascending) of the 16 kept values of a valid mask.
fn positions(mask: u32) -> impl Iterator<Item = usize> {
    (0..32).filter(move |i| mask >> i & 1 == 1).take(16)
}

/// The signed value (code - 8) of each of the 32 positions of a Q4_0S block.
pub(crate) fn values_q4_0s(b: &BlockQ4_0S) -> [i32; 32] {
    let mut v = [0i32; 32];
    for (k, p) in positions(b.mask()).enumerate() {
        v[p] = ((b.qs[k % 8] >> (4 * (k / 8))) & 15) as i32 - 8;
    }
    v
}

pub(crate) fn values_q8_0s(b: &BlockQ8_0S) -> [i32; 32] {
    let mut v = [0i32; 32];
    for (k, p) in positions(b.mask()).enumerate() {
        v[p] = b.qs[k] as i32;
    }
    v
}

/// Chooses the kept positions of a dense block from its zero flags: the
/// non-zeros, padded with the first zeros of each group to two per group.
fn choose_mask(block: usize, zero: impl Fn(usize) -> bool) -> Result<u32> {
    let mut mask = 0u32;
    for g in 0..8 {
        let nz: Vec<usize> = (4 * g..4 * g + 4).filter(|&i| !zero(i)).collect();
        if nz.len() > 2 {
            return Err(Error::NotSparse24 { block, group: g });
        }
        let mut keep = nz;
        for i in 4 * g..4 * g + 4 {
            if keep.len() < 2 && !keep.contains(&i) {
                keep.push(i);
            }
        }
        for i in keep {
            mask |= 1 << i;
        }
    }
    Ok(mask)
}

/// Packs dense Q4_0 blocks whose every group of four values has at most two
/// non-zero codes (code 8 is zero) into 2:4 blocks; an error names the first
/// block and group that has more.
pub fn pack_q4_0(dense: &[BlockQ4_0]) -> Result<Vec<BlockQ4_0S>> {
    dense
        .iter()
        .enumerate()
        .map(|(n, b)| {
            let code = |i: usize| (b.qs[i % 16] >> (4 * (i / 16))) & 15;
            let mask = choose_mask(n, |i| code(i) == 8)?;
            let mut qs = [0u8; 8];
            for (k, p) in positions(mask).enumerate() {
                qs[k % 8] |= code(p) << (4 * (k / 8));
            }
            Ok(BlockQ4_0S {
                d: b.d,
                mask: mask.to_le_bytes(),
                qs,
            })
        })
        .collect()
}

/// The dense Q4_0 blocks of 2:4 blocks (pruned positions get code 8).
pub fn unpack_q4_0(sparse: &[BlockQ4_0S]) -> Vec<BlockQ4_0> {
    sparse
        .iter()
        .map(|b| {
            let mut qs = [0x88u8; 16];
            for (i, v) in values_q4_0s(b).into_iter().enumerate() {
                let shift = 4 * (i / 16);
                qs[i % 16] = (qs[i % 16] & !(15 << shift)) | (((v + 8) as u8) << shift);
            }
            BlockQ4_0 { d: b.d, qs }
        })
        .collect()
}

/// Packs dense Q8_0 blocks with at most two non-zero codes per group of four.
pub fn pack_q8_0(dense: &[BlockQ8_0]) -> Result<Vec<BlockQ8_0S>> {
    dense
        .iter()
        .enumerate()
        .map(|(n, b)| {
            let mask = choose_mask(n, |i| b.qs[i] == 0)?;
            let mut qs = [0i8; 16];
            for (k, p) in positions(mask).enumerate() {
                qs[k] = b.qs[p];
            }
            Ok(BlockQ8_0S {
                d: b.d,
                mask: mask.to_le_bytes(),
                qs,
            })
        })
        .collect()
}

/// The dense Q8_0 blocks of 2:4 blocks (pruned positions get code 0).
pub fn unpack_q8_0(sparse: &[BlockQ8_0S]) -> Vec<BlockQ8_0> {
    sparse
        .iter()
        .map(|b| BlockQ8_0 {
            d: b.d,
            qs: values_q8_0s(b).map(|v| v as i8),
        })
        .collect()
}

/// Whether a row of f32 values is 2:4 sparse (at most two non-zeros in each
/// group of four consecutive values).
pub fn is_2_4(row: &[f32]) -> bool {
    row.len() % 4 == 0
        && row
            .chunks_exact(4)
            .all(|g| g.iter().filter(|v| **v != 0.0).count() <= 2)
}

/// Dequantizes like the dense format (bit-identical with dequantizing the unpacked blocks).
pub fn dequantize_row_q4_0s(x: &[BlockQ4_0S], y: &mut [f32]) -> Result<()> {
    check_out(Format::Q4_0S, x.len(), y.len())?;
    for (b, out) in x.iter().zip(y.chunks_exact_mut(32)) {
        let d = b.d.to_f32();
        for (o, v) in out.iter_mut().zip(values_q4_0s(b)) {
            *o = v as f32 * d;
        }
    }
    Ok(())
}

pub fn dequantize_row_q8_0s(x: &[BlockQ8_0S], y: &mut [f32]) -> Result<()> {
    check_out(Format::Q8_0S, x.len(), y.len())?;
    for (b, out) in x.iter().zip(y.chunks_exact_mut(32)) {
        let d = b.d.to_f32();
        for (o, v) in out.iter_mut().zip(values_q8_0s(b)) {
            *o = v as f32 * d;
        }
    }
    Ok(())
}

fn terms(v: [i32; 32], d: f16, b: &BlockQ8_0) -> (f32, f32) {
    let isum: i32 = v.iter().zip(&b.qs).map(|(&w, &y)| w * y as i32).sum();
    (isum as f32 * (d.to_f32() * b.d.to_f32()), 0.0)
}

fn mag(v: [i32; 32], d: f16, b: &BlockQ8_0) -> f32 {
    let iabs: i32 = v
        .iter()
        .zip(&b.qs)
        .map(|(&w, &y)| (w * y as i32).abs())
        .sum();
    magnitude(d.to_f32() * b.d.to_f32(), iabs, 0.0, 0)
}

fn block_terms_q4_0s(a: &BlockQ4_0S, b: &BlockQ8_0) -> (f32, f32) {
    terms(values_q4_0s(a), a.d, b)
}
fn block_magnitude_q4_0s(a: &BlockQ4_0S, b: &BlockQ8_0) -> f32 {
    mag(values_q4_0s(a), a.d, b)
}
fn block_terms_q8_0s(a: &BlockQ8_0S, b: &BlockQ8_0) -> (f32, f32) {
    terms(values_q8_0s(a), a.d, b)
}
fn block_magnitude_q8_0s(a: &BlockQ8_0S, b: &BlockQ8_0) -> f32 {
    mag(values_q8_0s(a), a.d, b)
}

impl PanelFormat for BlockQ4_0S {
    const SUB: usize = 32;
    const MIN_SUB: usize = 0;
    const MAX_CODE: u8 = 8; // Q4_0's codes and zeros
    #[inline(always)]
    fn unpack(&self, codes: &mut [i8], scale: &mut [f32], _: &mut [i16], _: &mut f32) {
        scale[0] = self.d.to_f32();
        expand_kept(self.mask, codes, |k| {
            ((self.qs[k % 8] >> (4 * (k / 8))) & 15) as i8 - 8
        });
    }
}

impl PanelFormat for BlockQ8_0S {
    const SUB: usize = 32;
    const MIN_SUB: usize = 0;
    const MAX_CODE: u8 = 128; // Q8_0's codes and zeros
    #[inline(always)]
    fn unpack(&self, codes: &mut [i8], scale: &mut [f32], _: &mut [i16], _: &mut f32) {
        scale[0] = self.d.to_f32();
        expand_kept(self.mask, codes, |k| self.qs[k]);
    }
}

/// Places kept value k (`kept(k)`, k < 16) of a 2:4 block at its position
/// and zeros elsewhere, one mask byte (four kept values) at a time through
/// [`EXPAND_LUT`]; a malformed mask (not two bits per nibble) gives zeros
/// where its kept index would run past 16, never a read out of range.
#[inline(always)]
fn expand_kept(mask: [u8; 4], codes: &mut [i8], kept: impl Fn(usize) -> i8) {
    for (j, (&m, out)) in mask.iter().zip(codes.chunks_exact_mut(8)).enumerate() {
        let lut = EXPAND_LUT[m as usize].to_le_bytes();
        for (o, &idx) in out.iter_mut().zip(&lut) {
            let k = 4 * j + idx as usize;
            *o = if idx & 0x80 == 0 && k < 16 {
                kept(k)
            } else {
                0
            };
        }
    }
}

impl RandomBlock for BlockQ4_0S {
    const SCALE_OFFSETS: &'static [usize] = &[0];
    fn random(r: &mut Rng) -> Self {
        BlockQ4_0S {
            d: r.scale(),
            mask: r.mask_2_4(),
            qs: r.bytes(),
        }
    }
    /// The mask keeps the first two of every four values (a valid 2:4 mask).
    fn filled(fill: u8, d: u16, _: u16) -> Self {
        BlockQ4_0S {
            d: f16::from_bits(d),
            mask: [0x33; 4],
            qs: [fill; 8],
        }
    }
}

impl RandomBlock for BlockQ8_0S {
    const SCALE_OFFSETS: &'static [usize] = &[0];
    fn random(r: &mut Rng) -> Self {
        BlockQ8_0S {
            d: r.scale(),
            mask: r.mask_2_4(),
            qs: bytemuck::cast(r.bytes::<16>()),
        }
    }
    /// The mask keeps the first two of every four values (a valid 2:4 mask).
    fn filled(fill: u8, d: u16, _: u16) -> Self {
        BlockQ8_0S {
            d: f16::from_bits(d),
            mask: [0x33; 4],
            qs: [fill as i8; 16],
        }
    }
}
