//! IQ2_S (2.56 bits per weight): per 8 values a 10-bit index into the
//! 1024-entry grid (`grids::IQ2S_GRID`) and 8 explicit sign bits, a 4-bit
//! scale per 16 values, one f16 `d` per 256.

use super::grid::{GridBlock, GridCode, Points};
use super::grids::IQ2S_GRID;
use super::QK_K;
use half::f16;

/// ggml's `block_iq2_s`: values `32ib + 8l ..` take grid index
/// `qs[4ib + l] | ((qh[ib] >> 2l) & 3) << 8` and signs `qs[32 + 4ib + l]`;
/// scales as IQ2_XS's; value `d * (0.5 + scale) * 0.25 * grid * sign`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIq2S {
    pub d: f16,
    pub qs: [u8; QK_K / 4],
    pub qh: [u8; QK_K / 32],
    pub scales: [u8; QK_K / 32],
}

// GGML_TYPE_IQ2_S; LLAMA_FTYPE_MOSTLY_IQ2_S.
super::grid::grid_block!(BlockIq2S, IQ2_S, "iq2_s", bytes 2 + 64 + 8 + 8, ggml 22, ftype Some(28), d_at 0,
    group super::grid::round_group);

impl GridCode for BlockIq2S {
    const POINTS: Points = Points::Eight(&IQ2S_GRID);
    const PARITY: bool = false;
    fn set_group(&mut self, g: usize, [i, _]: [usize; 2], signs: u8) {
        let (ib, l) = (g / 4, g % 4);
        self.qs[g] = i as u8;
        self.qs[QK_K / 8 + g] = signs;
        super::set_bits(&mut self.qh[ib], 2 * l, 2, (i >> 8) as u8);
    }
}

impl GridBlock for BlockIq2S {
    const MAX_CODE: u8 = 43;
    const SUB: usize = 16;
    #[inline(always)]
    fn int_form(&self, codes: &mut [i8; QK_K], scales: &mut [i16; 16]) -> f32 {
        super::grid::int_form_of(self, codes, scales)
    }
}

impl super::grid::GridGroups for BlockIq2S {
    #[inline(always)]
    fn group(&self, g: usize) -> (u64, u8) {
        let (ib, l) = (g / 4, g % 4);
        let i = self.qs[g] as usize | ((self.qh[ib] as usize >> (2 * l)) & 3) << 8;
        (IQ2S_GRID[i], self.qs[QK_K / 8 + g])
    }
    /// Scales `2 * scale + 1`.
    #[inline(always)]
    fn int_scales(&self, scales: &mut [i16; 16]) {
        for (ib, &s) in self.scales.iter().enumerate() {
            scales[2 * ib] = 2 * (s & 0x0F) as i16 + 1;
            scales[2 * ib + 1] = 2 * (s >> 4) as i16 + 1;
        }
    }
    #[inline(always)]
    fn d_bits(&self) -> u16 {
        self.d.to_bits()
    }
    /// The factor `d/8`.
    const D_FACTOR: f32 = 0.125;
}
