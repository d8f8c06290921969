//! Q5_0: 32 values per block, one f16 scale, 5-bit codes offset by 16 (four
//! low bits in `qs` as Q4_0 packs them, the fifth in the 32-bit `qh`).

use super::{
    check_out, magnitude, nearest_code, set_bits, weight_block, Block32, BlockQ8_0, Codes, Format,
};
use crate::panel::PanelFormat;
use crate::testdata::{RandomBlock, Rng};
use crate::Result;
use half::f16;

/// ggml's `block_q5_0`: value j's low 4 bits are nibble `j / 16` of
/// `qs[j % 16]`, its fifth bit is bit j of `qh` (little-endian u32).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ5_0 {
    pub d: f16,
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}

// GGML_TYPE_Q5_0; LLAMA_FTYPE_MOSTLY_Q5_0.
weight_block!(
    BlockQ5_0,
    Q5_0,
    "q5_0",
    len 32,
    bytes 2 + 4 + 16,
    ggml 6,
    ftype Some(8),
    BlockQ8_0,
    dequantize_row_q5_0,
    block_terms,
    block_magnitude,
    super::quantize_row_q8_0,
    round round_at
);

/// The signed code (-16..=15) of value `j`.
#[inline(always)]
fn code(b: &BlockQ5_0, j: usize) -> i32 {
    let low = (b.qs[j % 16] >> (4 * (j / 16))) & 0x0F;
    let high = (u32::from_le_bytes(b.qh) >> j) & 1;
    (low as u32 | high << 4) as i32 - 16
}

/// Rounds value `i` to its nearest code under the block's `d` ([`crate::formats::WeightBlock::round_at`]).
fn round_at(b: &mut BlockQ5_0, i: usize, w: f32) -> f32 {
    let d = b.d.to_f32();
    let value = |c: i32| c as f32 * d;
    let c = nearest_code(w, d, 0.0, (-16, 15), value);
    let u = (c + 16) as u8;
    set_bits(&mut b.qs[i % 16], 4 * (i / 16), 4, u & 0x0F);
    set_bits(&mut b.qh[i / 8], i % 8, 1, u >> 4);
    value(c)
}

/// Mirrors ggml's `dequantize_row_q5_0`: `(q - 16) * d`.
pub fn dequantize_row_q5_0(x: &[BlockQ5_0], y: &mut [f32]) -> Result<()> {
    check_out(Format::Q5_0, x.len(), y.len())?;
    for (b, out) in x.iter().zip(y.chunks_exact_mut(32)) {
        let d = b.d.to_f32();
        for (j, o) in out.iter_mut().enumerate() {
            *o = code(b, j) as f32 * d;
        }
    }
    Ok(())
}

/// One block's `d_x * d_y * sum_j (q_x[j] - 16) * q_y[j]`, the integer sum exact.
fn block_terms(a: &BlockQ5_0, b: &BlockQ8_0) -> (f32, f32) {
    let isum: i32 = (0..32).map(|j| code(a, j) * b.qs[j] as i32).sum();
    (isum as f32 * (a.d.to_f32() * b.d.to_f32()), 0.0)
}

fn block_magnitude(a: &BlockQ5_0, b: &BlockQ8_0) -> f32 {
    let iabs: i32 = (0..32).map(|j| (code(a, j) * b.qs[j] as i32).abs()).sum();
    magnitude(a.d.to_f32() * b.d.to_f32(), iabs, 0.0, 0)
}

impl PanelFormat for BlockQ5_0 {
    const SUB: usize = 32;
    const MIN_SUB: usize = 0;
    const MAX_CODE: u8 = 16; // codes -16..=15
    #[inline(always)]
    fn unpack(&self, codes: &mut [i8], scale: &mut [f32], _: &mut [i16], _: &mut f32) {
        scale[0] = self.d.to_f32();
        let qh = u32::from_le_bytes(self.qh);
        for (j, c) in codes.iter_mut().enumerate() {
            let low = (self.qs[j % 16] >> (4 * (j / 16))) & 0x0F;
            *c = (low | (((qh >> j) & 1) << 4) as u8) as i8 - 16;
        }
    }
}

impl Block32 for BlockQ5_0 {
    const CODES: Codes = Codes::Nibbles5;
    fn codes(&self) -> *const u8 {
        self.qs.as_ptr()
    }
    fn d_bits(&self) -> u16 {
        self.d.to_bits()
    }
    fn high_bits(&self) -> u32 {
        u32::from_le_bytes(self.qh)
    }
}

impl RandomBlock for BlockQ5_0 {
    const SCALE_OFFSETS: &'static [usize] = &[0];
    fn random(r: &mut Rng) -> Self {
        BlockQ5_0 {
            d: r.scale(),
            qh: r.bytes(),
            qs: r.bytes(),
        }
    }
    fn filled(fill: u8, d: u16, _: u16) -> Self {
        BlockQ5_0 {
            d: f16::from_bits(d),
            qh: [fill; 4],
            qs: [fill; 16],
        }
    }
}
