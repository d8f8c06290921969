//! What the i-quants (IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S) and the
//! ternary formats (TQ1_0, TQ2_0) share: every one of their values is
//! `factor * scale * code`, with one float `factor` per 256-value block, a
//! small odd integer `scale` per 16 or 32 values and an integer `code`
//! (a signed grid byte, or -1..=2). Each format's file says only how its
//! bits give that integer form ([`GridBlock::int_form`]); dequantization,
//! the reference dot product and the panel unpack follow from it here.
//!
//! Why this is bit-exact with ggml: ggml's dequantization computes a
//! sub-block's `db` as, e.g., `d * (0.5f + s) * 0.25f` and each value as
//! `db * grid[j] * (±1)`. Multiplying by a power of two is exact for every
//! f16 `d` widened to f32, so `(d * 0.125) * (2s + 1)` rounds to the same
//! float as `d * (0.5 + s) * 0.25`, and a product by ±1 is exact, so
//! `db * code` equals `db * grid * (±1)` bit for bit. The harness checks it
//! against ggml's own `dequantize_row_*` on random and edge-case blocks.

use super::{check_out, magnitude, BlockQ8K, QK_K};
use crate::Result;

/// Per sign byte, its eight byte masks: byte `j` is 0xFF where bit `j` is set.
pub(crate) const SIGN_MASKS: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut j = 0;
        while j < 8 {
            if (i >> j) & 1 == 1 {
                t[i] |= 0xFF << (8 * j);
            }
            j += 1;
        }
        i += 1;
    }
    t
};

/// Eight grid values (the bytes of `grid`, each 1..=127, as every i-quant
/// grid holds) with bit `j` of `signs` negating value `j`: eight `i8` codes
/// as the bytes of a `u64`. Per byte, `(g ^ 0xFF) + 1 = -g`, and with
/// `g >= 1` no byte carries into the next.
#[inline(always)]
pub(crate) fn signed8(grid: u64, signs: u8) -> u64 {
    let m = SIGN_MASKS[signs as usize];
    (grid ^ m).wrapping_add(m & 0x0101_0101_0101_0101)
}

/// Writes eight codes (the bytes of `v`) at `codes[at..at + 8]`.
#[inline(always)]
pub(crate) fn put8(codes: &mut [i8; QK_K], at: usize, v: u64) {
    codes[at..at + 8].copy_from_slice(&bytemuck::cast::<[u8; 8], [i8; 8]>(v.to_le_bytes()));
}

/// A block in integer form: value `i` is `factor * scales[i / 16] * codes[i]`.
pub trait GridBlock: super::WeightBlock<Act = BlockQ8K> {
    /// The largest magnitude of a code, for any block bytes.
    const MAX_CODE: u8;
    /// Values per distinct scale (16 or 32; the panel GEMM's float step).
    const SUB: usize;
    /// Writes the 256 codes and the 16 scales (one per 16 values, repeated
    /// where the format has one per 32); returns the block's factor.
    fn int_form(&self, codes: &mut [i8; QK_K], scales: &mut [i16; 16]) -> f32;
    /// Where ggml's SIMD kernels take the codes offset (the ternary formats:
    /// `sum((code + 1) * y) - sum(y)`), the offset: its products are part of
    /// what such a dot product adds up, so of [`block_magnitude`].
    const OFFSET: i32 = 0;
}

/// ggml's `dequantize_row_*` for a grid format: `(factor * scale) * code`.
pub(crate) fn dequantize<B: GridBlock>(x: &[B], y: &mut [f32]) -> Result<()> {
    check_out(B::FORMAT, x.len(), y.len())?;
    let (mut codes, mut scales) = ([0i8; QK_K], [0i16; 16]);
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let factor = b.int_form(&mut codes, &mut scales);
        for ((out, codes), &s) in out
            .chunks_exact_mut(16)
            .zip(codes.chunks_exact(16))
            .zip(&scales)
        {
            let db = factor * s as f32;
            for (o, &q) in out.iter_mut().zip(codes) {
                *o = db * q as f32;
            }
        }
    }
    Ok(())
}

/// `(factor * dy * sum_j scale_j * sum(code * q8)_j, 0)`: exact integer sums, one float scaling.
pub(crate) fn block_terms<B: GridBlock>(a: &B, b: &BlockQ8K) -> (f32, f32) {
    let (mut codes, mut scales) = ([0i8; QK_K], [0i16; 16]);
    let factor = a.int_form(&mut codes, &mut scales);
    let isum: i32 = codes
        .chunks_exact(16)
        .zip(b.qs.chunks_exact(16))
        .zip(scales)
        .map(|((w, y), s)| {
            s as i32
                * w.iter()
                    .zip(y)
                    .map(|(&w, &y)| w as i32 * y as i32)
                    .sum::<i32>()
        })
        .sum();
    (factor * b.d * isum as f32, 0.0)
}

pub(crate) fn block_magnitude<B: GridBlock>(a: &B, b: &BlockQ8K) -> f32 {
    let (mut codes, mut scales) = ([0i8; QK_K], [0i16; 16]);
    let factor = a.int_form(&mut codes, &mut scales);
    let iabs: i32 = codes
        .chunks_exact(16)
        .zip(b.qs.chunks_exact(16))
        .zip(scales)
        .map(|((w, y), s)| {
            let products: i32 = w
                .iter()
                .zip(y)
                .map(|(&w, &y)| (w as i32 * y as i32).abs())
                .sum();
            let offset: i32 = y.iter().map(|&y| (B::OFFSET * y as i32).abs()).sum();
            (s as i32).abs() * (products + offset)
        })
        .sum();
    magnitude(factor * b.d, iabs, 0.0, 0)
}

/// A grid format's block: `weight_block!` with the shared reference, the
/// panel unpack (scale per [`GridBlock::SUB`] values, no mins) and test
/// blocks (random bytes; the f16 `d` at byte `$d_at` a random finite scale).
macro_rules! grid_block {
    ($block:ty, $format:ident, $name:literal, bytes $bytes:expr, ggml $ggml:expr, ftype $ftype:expr, d_at $d_at:expr) => {
        crate::formats::weight_block!(
            $block,
            $format,
            $name,
            len crate::formats::QK_K,
            bytes $bytes,
            ggml $ggml,
            ftype $ftype,
            crate::formats::BlockQ8K,
            crate::formats::grid::dequantize::<$block>,
            crate::formats::grid::block_terms::<$block>,
            crate::formats::grid::block_magnitude::<$block>,
            crate::formats::quantize_row_q8_k
        );

        impl crate::panel::PanelFormat for $block {
            const SUB: usize = <$block as crate::formats::grid::GridBlock>::SUB;
            const MIN_SUB: usize = 0;
            const MAX_CODE: u8 = <$block as crate::formats::grid::GridBlock>::MAX_CODE;
            #[inline(always)]
            fn unpack(&self, codes: &mut [i8], scale: &mut [f32], _: &mut [i16], _: &mut f32) {
                use crate::formats::grid::GridBlock;
                let codes: &mut [i8; crate::formats::QK_K] = codes.try_into().expect("a block's codes");
                let mut scales = [0i16; 16];
                let factor = self.int_form(codes, &mut scales);
                let step = <Self as GridBlock>::SUB / 16;
                for (s, &sc) in scale.iter_mut().zip(scales.iter().step_by(step)) {
                    *s = factor * sc as f32;
                }
            }
        }

        impl crate::testdata::RandomBlock for $block {
            const SCALE_OFFSETS: &'static [usize] = &[$d_at];
            fn random(r: &mut crate::testdata::Rng) -> Self {
                let mut b: $block = bytemuck::Zeroable::zeroed();
                r.fill(bytemuck::bytes_of_mut(&mut b));
                b.d = r.scale();
                b
            }
            fn filled(fill: u8, d: u16, _: u16) -> Self {
                let mut b: $block = bytemuck::Zeroable::zeroed();
                bytemuck::bytes_of_mut(&mut b).fill(fill);
                b.d = half::f16::from_bits(d);
                b
            }
        }
        const _: () = assert!(std::mem::offset_of!($block, d) == $d_at);
    };
}
pub(crate) use grid_block;
