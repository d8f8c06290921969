//! TQ1_0 (1.69 bits per weight): ternary weights, five base-3 digits per
//! byte (3^5 = 243 < 256), one f16 `d` per 256.

use super::grid::GridBlock;
use super::QK_K;
use half::f16;

/// ggml's `block_tq1_0`. Digit `n` of a byte `q` is `((q * 3^n mod 256) * 3) >> 8`
/// (the byte holds the digits as a fixed-point fraction), the value `d * (digit - 1)`.
/// Values `32n + m` (n < 5, m < 32) are digit `n` of `qs[m]`; values
/// `160 + 16n + m` (m < 16) digit `n` of `qs[32 + m]`; values `240 + 4n + j`
/// digit `n` of `qh[j]`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockTq1_0 {
    pub qs: [u8; (QK_K - 4 * QK_K / 64) / 5],
    pub qh: [u8; QK_K / 64],
    pub d: f16,
}

// GGML_TYPE_TQ1_0; LLAMA_FTYPE_MOSTLY_TQ1_0.
super::grid::grid_block!(BlockTq1_0, TQ1_0, "tq1_0", bytes 48 + 4 + 2, ggml 34, ftype Some(36), d_at 52);

const POW3: [u8; 5] = [1, 3, 9, 27, 81];

/// Digit `n` of a packed byte, minus one.
#[inline(always)]
fn digit(q: u8, n: usize) -> i8 {
    ((q.wrapping_mul(POW3[n]) as u16 * 3) >> 8) as i8 - 1
}

impl GridBlock for BlockTq1_0 {
    const MAX_CODE: u8 = 1;
    const SUB: usize = 32;
    const OFFSET: i32 = 1;
    /// `d`, scales 1.
    #[inline(always)]
    fn int_form(&self, codes: &mut [i8; QK_K], scales: &mut [i16; 16]) -> f32 {
        let (wide, narrow) = self.qs.split_at(32);
        for n in 0..5 {
            for (m, &q) in wide.iter().enumerate() {
                codes[32 * n + m] = digit(q, n);
            }
            for (m, &q) in narrow.iter().enumerate() {
                codes[160 + 16 * n + m] = digit(q, n);
            }
        }
        for n in 0..4 {
            for (j, &q) in self.qh.iter().enumerate() {
                codes[240 + 4 * n + j] = digit(q, n);
            }
        }
        scales.fill(1);
        self.d.to_f32()
    }
}
