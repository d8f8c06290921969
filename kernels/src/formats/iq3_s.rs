//! IQ3_S (3.44 bits per weight): per 4 values a 9-bit index into the
//! 512-entry grid (`grids::IQ3S_GRID`), 8 explicit sign bits per 8 values,
//! a 4-bit scale per 32 values, one f16 `d` per 256.

use super::grid::{GridBlock, GridCode, Points};
use super::grids::IQ3S_GRID;
use super::QK_K;
use half::f16;

/// ggml's `block_iq3_s`: values `32ib + 8l ..` take grid indices
/// `qs[8ib + 2l] | (qh[ib] >> 2l & 1) << 8` and `qs[8ib + 2l + 1] |
/// (qh[ib] >> (2l + 1) & 1) << 8` (four values each) and signs
/// `signs[4ib + l]`; scale nibble `ib % 2` of `scales[ib / 2]`; value
/// `d * (1 + 2 * scale) * grid * sign`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIq3S {
    pub d: f16,
    pub qs: [u8; QK_K / 4],
    pub qh: [u8; QK_K / 32],
    pub signs: [u8; QK_K / 8],
    pub scales: [u8; QK_K / 64],
}

// GGML_TYPE_IQ3_S; LLAMA_FTYPE_MOSTLY_IQ3_S.
super::grid::grid_block!(BlockIq3S, IQ3_S, "iq3_s", bytes 2 + 64 + 8 + 32 + 4, ggml 21, ftype Some(26), d_at 0,
    group super::grid::round_group);

impl GridCode for BlockIq3S {
    const POINTS: Points = Points::Four(&IQ3S_GRID);
    const PARITY: bool = false;
    fn set_group(&mut self, g: usize, [i1, i2]: [usize; 2], signs: u8) {
        let (ib, l) = (g / 4, g % 4);
        self.qs[8 * ib + 2 * l] = i1 as u8;
        self.qs[8 * ib + 2 * l + 1] = i2 as u8;
        super::set_bits(&mut self.qh[ib], 2 * l, 1, (i1 >> 8) as u8);
        super::set_bits(&mut self.qh[ib], 2 * l + 1, 1, (i2 >> 8) as u8);
        self.signs[g] = signs;
    }
}

impl GridBlock for BlockIq3S {
    const MAX_CODE: u8 = 15;
    const SUB: usize = 32;
    #[inline(always)]
    fn int_form(&self, codes: &mut [i8; QK_K], scales: &mut [i16; 16]) -> f32 {
        super::grid::int_form_of(self, codes, scales)
    }
}

impl super::grid::GridGroups for BlockIq3S {
    #[inline(always)]
    fn group(&self, g: usize) -> (u64, u8) {
        let (ib, l) = (g / 4, g % 4);
        let h = self.qh[ib] as usize;
        let i1 = self.qs[2 * g] as usize | ((h >> (2 * l)) & 1) << 8;
        let i2 = self.qs[2 * g + 1] as usize | ((h >> (2 * l + 1)) & 1) << 8;
        (
            IQ3S_GRID[i1] as u64 | (IQ3S_GRID[i2] as u64) << 32,
            self.signs[g],
        )
    }
    /// Scales `1 + 2 * scale`.
    #[inline(always)]
    fn int_scales(&self, scales: &mut [i16; 16]) {
        for ib in 0..QK_K / 32 {
            let s = 1 + 2 * ((self.scales[ib / 2] >> (4 * (ib % 2))) & 0x0F) as i16;
            scales[2 * ib..2 * ib + 2].fill(s);
        }
    }
    #[inline(always)]
    fn d_bits(&self) -> u16 {
        self.d.to_bits()
    }
    /// The factor `d`.
    const D_FACTOR: f32 = 1.0;
}
