//! IQ3_XXS (3.06 bits per weight): per 4 values a byte index into the
//! 256-entry grid (`grids::IQ3XXS_GRID`), 7 sign bits per 8 values
//! (`KSIGNS_IQ2XS`), a 4-bit scale per 32 values, one f16 `d` per 256.

use super::grid::{with_sign7, GridBlock, GridCode, Points};
use super::grids::{IQ3XXS_GRID, KSIGNS_IQ2XS};
use super::QK_K;
use half::f16;

/// ggml's `block_iq3_xxs`: `qs[..64]` are grid indices, four values each;
/// `qs[64 + 4ib..][..4]` (a u32 `aux`) holds the four 7-bit sign indices
/// of values `32ib ..` (bits `7l..`) and their scale `aux >> 28`; value
/// `d * (0.5 + scale) * 0.5 * grid * sign`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIq3Xxs {
    pub d: f16,
    pub qs: [u8; 3 * QK_K / 8],
}

// GGML_TYPE_IQ3_XXS; LLAMA_FTYPE_MOSTLY_IQ3_XXS.
super::grid::grid_block!(BlockIq3Xxs, IQ3_XXS, "iq3_xxs", bytes 2 + 96, ggml 18, ftype Some(23), d_at 0,
    group super::grid::round_group);

// Every grid byte is even ([`GridBlock::FACTOR_SHIFT`]).
const _: () = {
    let mut i = 0;
    while i < IQ3XXS_GRID.len() {
        assert!(IQ3XXS_GRID[i] & 0x0101_0101 == 0);
        i += 1;
    }
};

impl GridCode for BlockIq3Xxs {
    const POINTS: Points = Points::Four(&IQ3XXS_GRID);
    const PARITY: bool = true;
    fn set_group(&mut self, g: usize, [i1, i2]: [usize; 2], signs: u8) {
        let (ib, l) = (g / 4, g % 4);
        self.qs[8 * ib + 2 * l] = i1 as u8;
        self.qs[8 * ib + 2 * l + 1] = i2 as u8;
        let at = QK_K / 4 + 4 * ib;
        let mut aux = u32::from_le_bytes(self.qs[at..at + 4].try_into().unwrap());
        aux = with_sign7(aux, l, signs);
        self.qs[at..at + 4].copy_from_slice(&aux.to_le_bytes());
    }
}

impl GridBlock for BlockIq3Xxs {
    const MAX_CODE: u8 = 62;
    const SUB: usize = 32;
    const FACTOR_SHIFT: u32 = 1;
    #[inline(always)]
    fn int_form(&self, codes: &mut [i8; QK_K], scales: &mut [i16; 16]) -> f32 {
        super::grid::int_form_of(self, codes, scales)
    }
}

impl super::grid::GridGroups for BlockIq3Xxs {
    #[inline(always)]
    fn group(&self, g: usize) -> (u64, u8) {
        let (ib, l) = (g / 4, g % 4);
        let aux = u32::from_le_bytes(self.qs[QK_K / 4 + 4 * ib..][..4].try_into().unwrap());
        let g1 = IQ3XXS_GRID[self.qs[2 * g] as usize] as u64;
        let g2 = IQ3XXS_GRID[self.qs[2 * g + 1] as usize] as u64;
        (
            g1 | g2 << 32,
            KSIGNS_IQ2XS[((aux >> (7 * l)) & 127) as usize],
        )
    }
    /// Scales `2 * scale + 1`.
    #[inline(always)]
    fn int_scales(&self, scales: &mut [i16; 16]) {
        for ib in 0..QK_K / 32 {
            let s = 2 * (self.qs[QK_K / 4 + 4 * ib + 3] >> 4) as i16 + 1;
            scales[2 * ib..2 * ib + 2].fill(s);
        }
    }
    #[inline(always)]
    fn d_bits(&self) -> u16 {
        self.d.to_bits()
    }
    /// The factor `d/4`.
    const D_FACTOR: f32 = 0.25;
}
