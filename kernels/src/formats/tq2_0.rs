//! TQ2_0 (2.06 bits per weight): ternary weights as 2-bit codes `q - 1`
//! (-1, 0, 1; the code 3 gives 2), one f16 `d` per 256.

use super::grid::GridBlock;
use super::QK_K;
use half::f16;

/// ggml's `block_tq2_0`: value `128h + 32l + m` is
/// `d * (((qs[32h + m] >> 2l) & 3) - 1)`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockTq2_0 {
    pub qs: [u8; QK_K / 4],
    pub d: f16,
}

// GGML_TYPE_TQ2_0; LLAMA_FTYPE_MOSTLY_TQ2_0.
super::grid::grid_block!(BlockTq2_0, TQ2_0, "tq2_0", bytes 64 + 2, ggml 35, ftype Some(37), d_at 64,
    round round_at);

/// Rounds value `i` to the nearest of `-d, 0, d`
/// ([`crate::formats::WeightBlock::round_at`]). The format can also hold
/// `2d` (code 3); the step keeps the weights ternary, as ggml writes them.
fn round_at(b: &mut BlockTq2_0, i: usize, w: f32) -> f32 {
    let d = b.d.to_f32();
    let value = |q: i32| d * (q - 1) as f32;
    let q = super::nearest_code(w, d, -d, (0, 2), value);
    let (h, l, m) = (i / 128, (i % 128) / 32, i % 32);
    super::set_bits(&mut b.qs[32 * h + m], 2 * l, 2, q as u8);
    value(q)
}

impl GridBlock for BlockTq2_0 {
    const MAX_CODE: u8 = 2;
    const SUB: usize = 256;
    const OFFSET: i32 = 1;
    const FACTORED: bool = false;
    /// `d`, scales 1.
    #[inline(always)]
    fn int_form(&self, codes: &mut [i8; QK_K], scales: &mut [i16; 16]) -> f32 {
        // Value i from byte 32 * (i / 128) + i % 32, bits 2 * ((i / 32) % 4):
        // one indexed loop, which the compiler vectorizes (zipped runs of
        // slices it did not).
        for i in 0..QK_K {
            let q = self.qs[32 * (i / 128) + i % 32];
            codes[i] = ((q >> (2 * ((i / 32) % 4))) & 3) as i8 - 1;
        }
        scales.fill(1);
        self.d.to_f32()
    }
}

/// The block of scale `d` and weights `q` (value order, -1..=2: code `q + 1`).
pub(crate) fn from_weights(d: f16, q: &[i8; QK_K]) -> BlockTq2_0 {
    let mut b = BlockTq2_0 {
        qs: [0; QK_K / 4],
        d,
    };
    for (i, &q) in q.iter().enumerate() {
        let (h, l, m) = (i / 128, (i % 128) / 32, i % 32);
        b.qs[32 * h + m] |= ((q + 1).clamp(0, 3) as u8) << (2 * l);
    }
    b
}
