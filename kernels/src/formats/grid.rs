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
    /// Values per distinct scale (16 or 32; 256 for the ternary formats,
    /// whose scales are all 1): the panel GEMM's float step.
    const SUB: usize;
    /// Writes the 256 codes and the 16 scales (one per 16 values, repeated
    /// where the format has one per 32); returns the block's factor.
    fn int_form(&self, codes: &mut [i8; QK_K], scales: &mut [i16; 16]) -> f32;
    /// Where ggml's SIMD kernels take the codes offset (the ternary formats:
    /// `sum((code + 1) * y) - sum(y)`), the offset: its products are part of
    /// what such a dot product adds up, so of [`block_magnitude`].
    const OFFSET: i32 = 0;
    /// Whether the panel GEMM's AVX2 tile takes the integer form (the
    /// i-quants: their scales applied in integers, one float step per
    /// block). The ternary formats have no scales to apply.
    const FACTORED: bool = true;
    /// Where every code is a multiple of `1 << FACTOR_SHIFT` (IQ3_XXS: its
    /// grid is all even), the factored form divides the codes by it and
    /// multiplies the scales: narrower factors, more i16 steps on AVX2.
    const FACTOR_SHIFT: u32 = 0;
}

/// The i-quants: value `8g + j` (g < 32) is byte `j` of group `g`'s grid
/// point times the scale, negated where bit `j` of its sign byte is set.
pub trait GridGroups: GridBlock {
    /// Group `g`'s grid bytes (eight magnitudes) and sign byte.
    fn group(&self, g: usize) -> (u64, u8);
    /// The 16 scales (as [`GridBlock::int_form`]).
    fn int_scales(&self, scales: &mut [i16; 16]);
    /// The block's f16 `d`, as bits.
    fn d_bits(&self) -> u16;
    /// The factor over `d`, a power of two (exact).
    const D_FACTOR: f32;
    /// The 16 scales; returns the factor, `d * D_FACTOR`.
    #[inline(always)]
    fn scales(&self, scales: &mut [i16; 16]) -> f32 {
        self.int_scales(scales);
        half::f16::from_bits(self.d_bits()).to_f32() * Self::D_FACTOR
    }
}

/// [`GridBlock::int_form`] of an i-quant, from its groups.
#[inline(always)]
pub(crate) fn int_form_of<B: GridGroups>(
    b: &B,
    codes: &mut [i8; QK_K],
    scales: &mut [i16; 16],
) -> f32 {
    for g in 0..QK_K / 8 {
        let (m, s) = b.group(g);
        put8(codes, 8 * g, signed8(m, s));
    }
    b.scales(scales)
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

/// The grid an i-quant's 8-value groups take their points from.
pub(crate) enum Points {
    /// One point of eight values per group (the IQ2 formats).
    Eight(&'static [u64]),
    /// Two points of four values per group (the IQ3 formats).
    Four(&'static [u32]),
}

/// How an i-quant writes a group's code (error-compensated quantization).
pub(crate) trait GridCode: GridBlock {
    const POINTS: Points;
    /// Whether a group's signs keep an even count of negatives (7 bits
    /// stored, the eighth their parity: `KSIGNS_IQ2XS`).
    const PARITY: bool;
    /// Writes group `g`'s point indices (the second only for
    /// [`Points::Four`]) and sign bits (bit `j` negates value `j`; with
    /// [`GridCode::PARITY`] their count is even).
    fn set_group(&mut self, g: usize, idx: [usize; 2], signs: u8);
}

/// `aux` with its sign index `l` (bits `7l..7l + 7`, as IQ2_XXS and
/// IQ3_XXS store them) set to the low seven bits of `signs`.
pub(crate) fn with_sign7(aux: u32, l: usize, signs: u8) -> u32 {
    (aux & !(127 << (7 * l))) | ((signs & 127) as u32) << (7 * l)
}

/// The best point of one segment (8 or 4 values): the lowest weighted
/// squared error with the values' own signs (`keep`: cost, point), and
/// with one sign changed (`flip`: cost, point, the value flipped).
struct Segment {
    keep: (f32, usize),
    flip: (f32, usize, usize),
}

/// Searches every point of a grid of `n` points for the `len` magnitudes
/// `a` at step `db >= 0` (value `db * grid byte`), weights `wt`.
fn segment(
    n: usize,
    point: impl Fn(usize) -> u64,
    len: usize,
    a: &[f32],
    wt: &[f32],
    db: f32,
) -> Segment {
    let mut best = Segment {
        keep: (f32::INFINITY, 0),
        flip: (f32::INFINITY, 0, 0),
    };
    for p in 0..n {
        let g = point(p).to_le_bytes();
        let (mut cost, mut flip, mut at) = (0f32, f32::INFINITY, 0);
        for j in 0..len {
            let v = db * g[j] as f32;
            let e = a[j] - v;
            cost += wt[j] * e * e;
            // (a + v)² - (a - v)²: what negating value j's sign costs.
            let f = 4.0 * wt[j] * a[j] * v;
            if f < flip {
                (flip, at) = (f, j);
            }
        }
        if cost < best.keep.0 {
            best.keep = (cost, p);
        }
        if cost + flip < best.flip.0 {
            best.flip = (cost + flip, p, at);
        }
    }
    best
}

/// [`crate::formats::WeightBlock::round_group`] of an i-quant: the group's
/// scale as it is, every grid point searched (with the signs of `w`, and,
/// where the format keeps their parity, the cheapest single sign change
/// that makes it even), then the values read back as dequantization gives them.
pub(crate) fn round_group<B: GridCode>(
    b: &mut B,
    i: usize,
    w: &[f32],
    wt: &[f32],
    out: &mut [f32],
) {
    assert!(i % 8 == 0 && i < QK_K && w.len() == 8 && wt.len() == 8 && out.len() == 8);
    let (mut codes, mut scales) = ([0i8; QK_K], [0i16; 16]);
    let db = b.int_form(&mut codes, &mut scales) * scales[i / 16] as f32;
    // With a negative step a code's sign is the value's opposite.
    let negative = db < 0.0;
    let a: [f32; 8] = std::array::from_fn(|j| w[j].abs());
    let mut signs = w
        .iter()
        .enumerate()
        .filter(|(_, &v)| (v < 0.0) != negative && v != 0.0)
        .fold(0u8, |s, (j, _)| s | 1 << j);
    let odd = B::PARITY && signs.count_ones() % 2 == 1;
    let db = db.abs();
    let idx = match B::POINTS {
        Points::Eight(grid) => {
            let s = segment(grid.len(), |p| grid[p], 8, &a, wt, db);
            if odd {
                signs ^= 1 << s.flip.2;
                [s.flip.1, 0]
            } else {
                [s.keep.1, 0]
            }
        }
        Points::Four(grid) => {
            let h: [Segment; 2] = std::array::from_fn(|k| {
                let r = 4 * k..4 * k + 4;
                segment(grid.len(), |p| grid[p] as u64, 4, &a[r.clone()], &wt[r], db)
            });
            if !odd {
                [h[0].keep.1, h[1].keep.1]
            } else if h[0].flip.0 + h[1].keep.0 <= h[0].keep.0 + h[1].flip.0 {
                signs ^= 1 << h[0].flip.2;
                [h[0].flip.1, h[1].keep.1]
            } else {
                signs ^= 1 << (4 + h[1].flip.2);
                [h[0].keep.1, h[1].flip.1]
            }
        }
    };
    b.set_group(i / 8, idx, signs);
    let factor = b.int_form(&mut codes, &mut scales);
    let db = factor * scales[i / 16] as f32;
    for (o, &q) in out.iter_mut().zip(&codes[i..i + 8]) {
        *o = db * q as f32;
    }
}

/// A grid format's block: `weight_block!` with the shared reference, the
/// panel unpack (scale per [`GridBlock::SUB`] values, no mins) and test
/// blocks (random bytes; the f16 `d` at byte `$d_at` a random finite scale).
macro_rules! grid_block {
    ($block:ty, $format:ident, $name:literal, bytes $bytes:expr, ggml $ggml:expr, ftype $ftype:expr, d_at $d_at:expr
     $(, round $round:path)? $(, group $group:path)?) => {
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
            $(, round $round)? $(, group $group)?
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
            const FACTORED: bool = <$block as crate::formats::grid::GridBlock>::FACTORED;
            const MAX_FACTOR: u8 = <$block as crate::formats::grid::GridBlock>::MAX_CODE
                >> <$block as crate::formats::grid::GridBlock>::FACTOR_SHIFT;
            /// The integer form: codes (divided by `1 << FACTOR_SHIFT`),
            /// scales per 16 values (multiplied by it), the block's factor.
            #[inline(always)]
            fn factor(&self, factors: &mut [i8], scales: &mut [i16]) -> f32 {
                use crate::formats::grid::GridBlock;
                let d = self.int_form(
                    factors.try_into().expect("a block's factors"),
                    scales.try_into().expect("a block's scales"),
                );
                let shift = <Self as GridBlock>::FACTOR_SHIFT;
                if shift > 0 {
                    factors.iter_mut().for_each(|f| *f >>= shift);
                    scales.iter_mut().for_each(|s| *s <<= shift);
                }
                d
            }
            /// One decode for both forms: the codes are the factors times
            /// `1 << FACTOR_SHIFT`, the float scales `d` times the integer ones.
            #[inline(always)]
            fn unpack_factored(
                &self,
                (codes, scale, _, _): (&mut [i8], &mut [f32], &mut [i16], &mut f32),
                factors: &mut [i8],
                scales: &mut [i16],
            ) -> f32 {
                use crate::formats::grid::GridBlock;
                let d = self.factor(factors, scales);
                let shift = <Self as GridBlock>::FACTOR_SHIFT;
                for (c, &f) in codes.iter_mut().zip(factors.iter()) {
                    *c = f << shift;
                }
                let step = <Self as GridBlock>::SUB / 16;
                for (s, &sc) in scale.iter_mut().zip(scales.iter().step_by(step)) {
                    *s = d * (sc >> shift) as f32;
                }
                d
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::{BlockIq2S, BlockIq2Xs, BlockIq2Xxs, BlockIq3S, BlockIq3Xxs, WeightBlock};
    use crate::testdata::{RandomBlock, Rng};

    fn dequant<B: WeightBlock>(b: &B) -> Vec<f32> {
        let mut y = vec![0f32; QK_K];
        B::dequantize_row(std::slice::from_ref(b), &mut y).unwrap();
        y
    }

    fn cost(v: &[f32], w: &[f32], wt: &[f32]) -> f32 {
        v.iter()
            .zip(w)
            .zip(wt)
            .map(|((v, w), t)| t * (v - w) * (v - w))
            .sum()
    }

    /// `round_group` writes only its group, returns what dequantization
    /// gives, keeps the sign parity the format stores, and no code the
    /// group can hold is nearer (every sign byte with every point for the
    /// 8-value grids; each of the two 4-value points over its grid, the
    /// other kept, for the IQ3 formats). Zero and non-finite scales give
    /// some code and no panic.
    fn nearest_code_of<B: GridCode + RandomBlock>() {
        let mut r = Rng::new(17);
        for trial in 0..3 {
            let mut b = B::random(&mut r);
            let amax = dequant(&b)
                .iter()
                .filter(|v| v.is_finite())
                .fold(0f32, |m, v| m.max(v.abs()))
                .max(1e-3);
            let i = 8 * ((trial * 13 + 5) % 32);
            let w: Vec<f32> = (0..8).map(|_| r.uniform(-amax, amax)).collect();
            let wt: Vec<f32> = (0..8).map(|_| r.uniform(0.1, 2.0)).collect();
            let before = dequant(&b);
            let mut out = [0f32; 8];
            round_group(&mut b, i, &w, &wt, &mut out);
            let now = dequant(&b);
            for j in 0..QK_K {
                if (i..i + 8).contains(&j) {
                    assert_eq!(now[j].to_bits(), out[j - i].to_bits(), "{}", B::NAME);
                } else {
                    assert_eq!(now[j].to_bits(), before[j].to_bits(), "{}: {j}", B::NAME);
                }
            }
            let got = cost(&out, &w, &wt);
            let mut probe = b;
            let mut check = |idx: [usize; 2], s: u8| {
                if B::PARITY && s.count_ones() % 2 == 1 {
                    return;
                }
                probe.set_group(i / 8, idx, s);
                let v = dequant(&probe);
                let c = cost(&v[i..i + 8], &w, &wt);
                assert!(
                    got <= c * (1.0 + 1e-5) + 1e-12,
                    "{}: {got} chosen, {c} at {idx:?} signs {s:#x}",
                    B::NAME
                );
            };
            let (mut codes, mut scales) = ([0i8; QK_K], [0i16; 16]);
            b.int_form(&mut codes, &mut scales);
            match B::POINTS {
                Points::Eight(grid) => {
                    for p in 0..grid.len() {
                        for s in 0..=255u8 {
                            check([p, 0], s);
                        }
                    }
                }
                Points::Four(grid) => {
                    // The chosen points, found back from the codes.
                    let find = |k: usize| {
                        (0..grid.len())
                            .find(|&p| {
                                grid[p]
                                    .to_le_bytes()
                                    .iter()
                                    .zip(&codes[i + 4 * k..])
                                    .all(|(&g, &c)| g as i32 == (c as i32).abs())
                            })
                            .unwrap()
                    };
                    let chosen = [find(0), find(1)];
                    for p in 0..grid.len() {
                        for s in 0..=255u8 {
                            check([p, chosen[1]], s);
                            check([chosen[0], p], s);
                        }
                    }
                }
            }
        }
        for d in [0x0000u16, 0x7e00, 0x7c00, 0xfc00, 0x0001] {
            let mut b = B::filled(0x5a, d, d);
            let mut out = [0f32; 8];
            for i in (0..QK_K).step_by(8) {
                let w: Vec<f32> = (0..8).map(|j| 0.37 * (i + j) as f32 - 20.0).collect();
                round_group(&mut b, i, &w, &[1.0; 8], &mut out);
                let now = dequant(&b);
                for j in 0..8 {
                    let (a, c) = (now[i + j], out[j]);
                    assert!(a.to_bits() == c.to_bits() || (a.is_nan() && c.is_nan()));
                }
            }
        }
    }

    #[test]
    fn round_group_writes_the_nearest_code_of_every_i_quant() {
        nearest_code_of::<BlockIq2Xxs>();
        nearest_code_of::<BlockIq2Xs>();
        nearest_code_of::<BlockIq2S>();
        nearest_code_of::<BlockIq3Xxs>();
        nearest_code_of::<BlockIq3S>();
    }
}
