//! IQ2_XS (2.31 bits per weight): per 8 values a 9-bit index into the
//! 512-entry grid (`grids::IQ2XS_GRID`) and a 7-bit sign index
//! (`KSIGNS_IQ2XS`), a 4-bit scale per 16 values, one f16 `d` per 256.

use super::grid::{GridBlock, GridCode, Points};
use super::grids::{IQ2XS_GRID, KSIGNS_IQ2XS};
use super::QK_K;
use half::f16;

/// ggml's `block_iq2_xs`: `qs[4ib + l]` is grid index (low 9 bits) and sign
/// index (high 7) of values `32ib + 8l ..`; `scales[ib]` holds the scales of
/// values `32ib ..` (low nibble) and `32ib + 16 ..` (high); value
/// `d * (0.5 + scale) * 0.25 * grid * sign`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIq2Xs {
    pub d: f16,
    pub qs: [u16; QK_K / 8],
    pub scales: [u8; QK_K / 32],
}

// GGML_TYPE_IQ2_XS; LLAMA_FTYPE_MOSTLY_IQ2_XS.
super::grid::grid_block!(BlockIq2Xs, IQ2_XS, "iq2_xs", bytes 2 + 64 + 8, ggml 17, ftype Some(20), d_at 0,
    group super::grid::round_group);

impl GridCode for BlockIq2Xs {
    const POINTS: Points = Points::Eight(&IQ2XS_GRID);
    const PARITY: bool = true;
    fn set_group(&mut self, g: usize, [i, _]: [usize; 2], signs: u8) {
        self.qs[g] = (i & 511) as u16 | ((signs & 127) as u16) << 9;
    }
}

impl GridBlock for BlockIq2Xs {
    const MAX_CODE: u8 = 43;
    const SUB: usize = 16;
    #[inline(always)]
    fn int_form(&self, codes: &mut [i8; QK_K], scales: &mut [i16; 16]) -> f32 {
        super::grid::int_form_of(self, codes, scales)
    }
}

impl super::grid::GridGroups for BlockIq2Xs {
    #[inline(always)]
    fn group(&self, g: usize) -> (u64, u8) {
        let q = self.qs[g];
        (
            IQ2XS_GRID[(q & 511) as usize],
            KSIGNS_IQ2XS[(q >> 9) as usize],
        )
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
