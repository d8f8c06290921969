//! IQ2_XXS (2.06 bits per weight): per 32 values, four 8-value points of
//! the 256-entry E8-lattice grid (`grids::IQ2XXS_GRID`), 7 sign bits per 8
//! values (the eighth is their parity, `KSIGNS_IQ2XS`), and a 4-bit scale;
//! one f16 `d` per 256.

use super::grid::{with_sign7, GridBlock, GridCode, Points};
use super::grids::{IQ2XXS_GRID, KSIGNS_IQ2XS};
use super::QK_K;
use half::f16;

/// ggml's `block_iq2_xxs`: per 32 values `ib`, `qs[4ib..4ib+2]` hold four
/// grid indices (a byte each), `qs[4ib+2..4ib+4]` (a u32 `aux`) four 7-bit
/// sign indices (bits `7l..7l+7`) and the scale `aux >> 28`; value
/// `d * (0.5 + scale) * 0.25 * grid * sign`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIq2Xxs {
    pub d: f16,
    pub qs: [u16; QK_K / 8],
}

// GGML_TYPE_IQ2_XXS; LLAMA_FTYPE_MOSTLY_IQ2_XXS.
super::grid::grid_block!(BlockIq2Xxs, IQ2_XXS, "iq2_xxs", bytes 2 + 64, ggml 16, ftype Some(19), d_at 0,
    group super::grid::round_group);

impl GridCode for BlockIq2Xxs {
    const POINTS: Points = Points::Eight(&IQ2XXS_GRID);
    const PARITY: bool = true;
    fn set_group(&mut self, g: usize, [i, _]: [usize; 2], signs: u8) {
        let (ib, l) = (g / 4, g % 4);
        let q = &mut self.qs[4 * ib..4 * ib + 4];
        let mut idx = (q[0] as u32 | (q[1] as u32) << 16).to_le_bytes();
        idx[l] = i as u8;
        let idx = u32::from_le_bytes(idx);
        let mut aux = q[2] as u32 | (q[3] as u32) << 16;
        aux = with_sign7(aux, l, signs);
        q.copy_from_slice(&[
            idx as u16,
            (idx >> 16) as u16,
            aux as u16,
            (aux >> 16) as u16,
        ]);
    }
}

impl GridBlock for BlockIq2Xxs {
    const MAX_CODE: u8 = 43;
    const SUB: usize = 32;
    #[inline(always)]
    fn int_form(&self, codes: &mut [i8; QK_K], scales: &mut [i16; 16]) -> f32 {
        super::grid::int_form_of(self, codes, scales)
    }
}

impl super::grid::GridGroups for BlockIq2Xxs {
    #[inline(always)]
    fn group(&self, g: usize) -> (u64, u8) {
        let (ib, l) = (g / 4, g % 4);
        let q = &self.qs[4 * ib..4 * ib + 4];
        let i = (q[l / 2] >> (8 * (l % 2))) as u8;
        let aux = q[2] as u32 | (q[3] as u32) << 16;
        (
            IQ2XXS_GRID[i as usize],
            KSIGNS_IQ2XS[((aux >> (7 * l)) & 127) as usize],
        )
    }
    /// Scales `2 * scale + 1`.
    #[inline(always)]
    fn int_scales(&self, scales: &mut [i16; 16]) {
        for ib in 0..QK_K / 32 {
            let s = 2 * (self.qs[4 * ib + 3] >> 12) as i16 + 1;
            scales[2 * ib..2 * ib + 2].fill(s);
        }
    }
    #[inline(always)]
    fn d_bits(&self) -> u16 {
        self.d.to_bits()
    }
    /// The factor `d/8`.
    const D_FACTOR: f32 = 0.125;
}
