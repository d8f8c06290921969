//! IQ4_XS: 256 values in 8 sub-blocks of 32, each with a 6-bit scale (stored
//! +32: 4 low bits in `scales_l`, 2 high bits in `scales_h`) times the
//! block's f16 `d`; 4-bit indices into IQ4_NL's non-linear table.

use super::grids::KVALUES_IQ4NL;
use super::{check_out, magnitude, nearest_entry, set_bits, weight_block, BlockQ8K, Format, QK_K};
use crate::panel::PanelFormat;
use crate::testdata::{RandomBlock, Rng};
use crate::Result;
use half::f16;

/// ggml's `block_iq4_xs`: value `32ib + j` (j < 16) is
/// `d * (ls(ib) - 32) * KVALUES_IQ4NL[qs[16ib + j] & 15]`, value `32ib + 16 + j`
/// takes the high nibble.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIq4Xs {
    pub d: f16,
    pub scales_h: u16,
    pub scales_l: [u8; QK_K / 64],
    pub qs: [u8; QK_K / 2],
}

// GGML_TYPE_IQ4_XS; LLAMA_FTYPE_MOSTLY_IQ4_XS.
weight_block!(
    BlockIq4Xs,
    IQ4_XS,
    "iq4_xs",
    len QK_K,
    bytes 2 + 2 + 4 + 128,
    ggml 23,
    ftype Some(30),
    BlockQ8K,
    dequantize_row_iq4_xs,
    block_terms,
    block_magnitude,
    super::quantize_row_q8_k,
    round round_at
);

/// The eight signed sub-block scales (`ls - 32`, -32..=31).
#[inline(always)]
pub fn scales_iq4_xs(b: &BlockIq4Xs) -> [i8; 8] {
    std::array::from_fn(|ib| {
        let low = (b.scales_l[ib / 2] >> (4 * (ib % 2))) & 0x0F;
        let high = ((b.scales_h >> (2 * ib)) & 3) as u8;
        (low | high << 4) as i8 - 32
    })
}

/// The table value of value `i` of a block.
#[inline(always)]
fn code(b: &BlockIq4Xs, i: usize) -> i32 {
    let (ib, j) = (i / 32, i % 32);
    let nibble = (b.qs[16 * ib + j % 16] >> (4 * (j / 16))) & 0x0F;
    KVALUES_IQ4NL[nibble as usize] as i32
}

/// Rounds value `i` to the nearest of the table's values under its
/// sub-block's scale ([`crate::formats::WeightBlock::round_at`]).
fn round_at(b: &mut BlockIq4Xs, i: usize, w: f32) -> f32 {
    let (ib, j) = (i / 32, i % 32);
    let dl = b.d.to_f32() * scales_iq4_xs(b)[ib] as f32;
    let value = |q: usize| dl * KVALUES_IQ4NL[q] as i32 as f32;
    let q = nearest_entry(w, 16, value);
    set_bits(&mut b.qs[16 * ib + j % 16], 4 * (j / 16), 4, q as u8);
    value(q)
}

/// Mirrors ggml's `dequantize_row_iq4_xs`: `(d * (ls - 32)) * value`.
pub fn dequantize_row_iq4_xs(x: &[BlockIq4Xs], y: &mut [f32]) -> Result<()> {
    check_out(Format::IQ4_XS, x.len(), y.len())?;
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = b.d.to_f32();
        for (ib, (out, sc)) in out.chunks_exact_mut(32).zip(scales_iq4_xs(b)).enumerate() {
            let dl = d * sc as f32;
            for (j, o) in out.iter_mut().enumerate() {
                *o = dl * code(b, 32 * ib + j) as f32;
            }
        }
    }
    Ok(())
}

/// Per block: `d*dy * sum_ib scale[ib] * (value . q8)_ib`, the sums exact.
fn block_terms(a: &BlockIq4Xs, b: &BlockQ8K) -> (f32, f32) {
    let mut isum = 0i32;
    for (ib, (q8, sc)) in b.qs.chunks_exact(32).zip(scales_iq4_xs(a)).enumerate() {
        let dot: i32 = (0..32).map(|j| code(a, 32 * ib + j) * q8[j] as i32).sum();
        isum += sc as i32 * dot;
    }
    (a.d.to_f32() * b.d * isum as f32, 0.0)
}

fn block_magnitude(a: &BlockIq4Xs, b: &BlockQ8K) -> f32 {
    let mut iabs = 0i32;
    for (ib, (q8, sc)) in b.qs.chunks_exact(32).zip(scales_iq4_xs(a)).enumerate() {
        let abs: i32 = (0..32)
            .map(|j| (code(a, 32 * ib + j) * q8[j] as i32).abs())
            .sum();
        iabs += (sc as i32).abs() * abs;
    }
    magnitude(a.d.to_f32() * b.d, iabs, 0.0, 0)
}

impl PanelFormat for BlockIq4Xs {
    const SUB: usize = 32;
    const MIN_SUB: usize = 0;
    const MAX_CODE: u8 = 127; // table values -127..=113
    /// Codes the table values, scales `d * (ls - 32)` per 32 values.
    #[inline(always)]
    fn unpack(&self, codes: &mut [i8], scale: &mut [f32], _: &mut [i16], _: &mut f32) {
        let d = self.d.to_f32();
        for (s, sc) in scale.iter_mut().zip(scales_iq4_xs(self)) {
            *s = d * sc as f32;
        }
        // Values 32 j + i and 32 j + 16 + i from byte 16 j + i.
        for (codes, qs) in codes.chunks_exact_mut(32).zip(self.qs.chunks_exact(16)) {
            super::iq4_nl::table_codes(
                qs.try_into().expect("16 bytes"),
                codes.try_into().expect("32 codes"),
            );
        }
    }
}

impl RandomBlock for BlockIq4Xs {
    const SCALE_OFFSETS: &'static [usize] = &[0];
    fn random(r: &mut Rng) -> Self {
        let h: [u8; 2] = r.bytes();
        BlockIq4Xs {
            d: r.scale(),
            scales_h: u16::from_le_bytes(h),
            scales_l: r.bytes(),
            qs: r.bytes(),
        }
    }
    fn filled(fill: u8, d: u16, _: u16) -> Self {
        BlockIq4Xs {
            d: f16::from_bits(d),
            scales_h: u16::from_le_bytes([fill; 2]),
            scales_l: [fill; 4],
            qs: [fill; 128],
        }
    }
}
