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
super::grid::grid_block!(BlockTq1_0, TQ1_0, "tq1_0", bytes 48 + 4 + 2, ggml 34, ftype Some(36), d_at 52,
    round round_at);

/// The byte holding value `i` and the digit's place in it.
fn place(i: usize) -> (usize, usize) {
    match i {
        0..160 => (i % 32, i / 32),
        160..240 => (32 + (i - 160) % 16, (i - 160) / 16),
        _ => (48 + (i - 240) % 4, (i - 240) / 4),
    }
}

/// Rounds value `i` to the nearest of `-d, 0, d`
/// ([`crate::formats::WeightBlock::round_at`]): the byte's five digits read
/// as dequantization reads them, one replaced, and the byte written as
/// ggml's quantizer writes one (base 3, scaled to 256 rounding up), which
/// reads back as those digits.
fn round_at(b: &mut BlockTq1_0, i: usize, w: f32) -> f32 {
    let d = b.d.to_f32();
    let value = |q: i32| d * (q - 1) as f32;
    let q = super::nearest_code(w, d, -d, (0, 2), value);
    let (at, n) = place(i);
    let byte = if at < 48 {
        &mut b.qs[at]
    } else {
        &mut b.qh[at - 48]
    };
    let mut digits: [u16; 5] = std::array::from_fn(|k| (digit(*byte, k) + 1) as u16);
    digits[n] = q as u16;
    if at >= 48 {
        // The fifth digit of a qh byte is not read: ggml writes it 0.
        digits[4] = 0;
    }
    let v = digits.iter().fold(0u16, |v, &t| 3 * v + t);
    *byte = ((v * 256).div_ceil(243)) as u8;
    value(q)
}

const POW3: [u8; 5] = [1, 3, 9, 27, 81];

/// Digit `n` of a packed byte, minus one.
#[inline(always)]
pub(crate) const fn digit(q: u8, n: usize) -> i8 {
    ((q.wrapping_mul(POW3[n]) as u16 * 3) >> 8) as i8 - 1
}

impl GridBlock for BlockTq1_0 {
    const MAX_CODE: u8 = 1;
    const SUB: usize = 256;
    const OFFSET: i32 = 1;
    const FACTORED: bool = false;
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

/// The block of scale `d` and weights `q` (value order, -1..=1; 2 reads as
/// 1), each byte written as ggml's quantizer writes it: its digits in base
/// 3, the first the most significant, scaled to 256 rounding up (a `qh`
/// byte's fifth digit 0).
pub(crate) fn from_weights(d: f16, q: &[i8; QK_K]) -> BlockTq1_0 {
    let mut b = BlockTq1_0 {
        qs: [0; 48],
        qh: [0; 4],
        d,
    };
    let mut digits = [[0u16; 5]; 52];
    for (i, &q) in q.iter().enumerate() {
        let (at, n) = place(i);
        digits[at][n] = (q + 1).clamp(0, 2) as u16;
    }
    for (at, digits) in digits.iter().enumerate() {
        let v = digits.iter().fold(0u16, |v, &t| 3 * v + t);
        let byte = ((v * 256).div_ceil(243)) as u8;
        if at < 48 {
            b.qs[at] = byte;
        } else {
            b.qh[at - 48] = byte;
        }
    }
    b
}
