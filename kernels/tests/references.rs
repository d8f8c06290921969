//! The scalar references against each other, without ggml (so these also run
//! on aarch64 under qemu): every dot product equals the f64 dot product of the
//! two dequantized rows within the rounding of its final float scaling, and
//! activation quantization stays within half a step.

use bytemuck::Zeroable;
use llmkernel_kernels::formats::*;
use llmkernel_kernels::testdata::{RandomBlock, Rng};
use llmkernel_kernels::{Error, Format, QuantBlock, WeightBlock, QK_K};

fn quantize_acts<A: QuantBlock>(x: &[f32]) -> Vec<A> {
    let mut y = vec![A::zeroed(); A::FORMAT.blocks_in(x.len()).unwrap()];
    match A::FORMAT {
        Format::Q8K => quantize_row_q8_k(x, bytemuck::cast_slice_mut(&mut y)).unwrap(),
        Format::Q8_0 => quantize_row_q8_0(x, bytemuck::cast_slice_mut(&mut y)).unwrap(),
        f => panic!("{f} is not an activation format"),
    }
    y
}

fn dequantize_acts<A: QuantBlock>(y: &[A]) -> Vec<f32> {
    let mut out = vec![0f32; y.len() * A::FORMAT.block_len()];
    match A::FORMAT {
        Format::Q8K => dequantize_row_q8_k(bytemuck::cast_slice(y), &mut out).unwrap(),
        Format::Q8_0 => dequantize_row_q8_0(bytemuck::cast_slice(y), &mut out).unwrap(),
        f => panic!("{f} is not an activation format"),
    }
    out
}

/// `vec_dot(x, y)` against `sum deq(x) * deq(y)` in f64. Each block's integer sum is
/// exact in both; the f32 products and sums differ by a few ulps of each block's
/// terms, so the bound is 1e-5 of the sum of |terms|.
fn dot_matches_dequantized<B: WeightBlock + RandomBlock>(seed: u64) {
    let mut r = Rng::new(seed);
    for nblocks in [1usize, 2, 5, 16] {
        for _ in 0..50 {
            let x = B::random_vec(&mut r, nblocks);
            let n = nblocks * B::FORMAT.block_len();
            let acts = r.activations(n);
            let y: Vec<B::Act> = quantize_acts(&acts);
            let mut wx = vec![0f32; n];
            B::dequantize_row(&x, &mut wx).unwrap();
            let wy = dequantize_acts(&y);
            let exact: f64 = wx.iter().zip(&wy).map(|(&a, &b)| a as f64 * b as f64).sum();
            let magnitude: f64 = wx
                .iter()
                .zip(&wy)
                .map(|(&a, &b)| (a as f64 * b as f64).abs())
                .sum();
            let got = B::vec_dot(&x, &y).unwrap() as f64;
            assert!(
                (got - exact).abs() <= 1e-5 * magnitude + 1e-30,
                "{}: {nblocks} blocks: vec_dot {got:e}, dequantized dot {exact:e}",
                B::FORMAT
            );
        }
    }
}

#[test]
fn dot_products_match_dequantized_rows() {
    let checked = llmkernel_kernels::each_format!(Format::WEIGHTS, |B, f, i| -> () {
        dot_matches_dequantized::<B>(i as u64 + 1)
    });
    assert_eq!(checked.len(), Format::WEIGHTS.len());
}

#[test]
fn activation_quantization_within_half_a_step() {
    let mut r = Rng::new(9);
    let x: Vec<f32> = (0..64 * QK_K).map(|_| r.uniform(-3.0, 3.0)).collect();
    for (format, back) in [
        (Format::Q8K, dequantize_acts(&quantize_acts::<BlockQ8K>(&x))),
        (
            Format::Q8_0,
            dequantize_acts(&quantize_acts::<BlockQ8_0>(&x)),
        ),
    ] {
        for (blk, (xs, ys)) in x
            .chunks(format.block_len())
            .zip(back.chunks(format.block_len()))
            .enumerate()
        {
            let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
            // Half a step, plus the f16 rounding of Q8_0's scale (2^-11 relative, times 127 steps).
            let step = amax / 127.0;
            let bound = step * 0.5 + amax * 2f32.powi(-11) + 1e-6;
            for (a, b) in xs.iter().zip(ys) {
                assert!(
                    (a - b).abs() <= bound,
                    "{format} block {blk}: {a} became {b} (bound {bound})"
                );
            }
        }
    }
}

#[test]
fn q8_k_block_sums_are_sums_of_codes() {
    let mut r = Rng::new(10);
    let x = r.activations(8 * QK_K);
    for b in quantize_acts::<BlockQ8K>(&x) {
        for (i, s) in b.bsums.iter().enumerate() {
            assert_eq!(
                *s as i32,
                b.qs[16 * i..16 * i + 16]
                    .iter()
                    .map(|&q| q as i32)
                    .sum::<i32>()
            );
        }
    }
}

#[test]
fn lengths_that_are_not_whole_blocks_are_errors() {
    for f in Format::WEIGHTS {
        let len = f.block_len() + 1;
        assert_eq!(
            f.blocks_in(len),
            Err(Error::NotBlockMultiple { format: f, len })
        );
        assert!(f.blocks_in(0).is_ok());
    }
    let mut y = vec![BlockQ8K::zeroed(); 1];
    assert!(matches!(
        quantize_row_q8_k(&[0.5; 255], &mut y),
        Err(Error::NotBlockMultiple { .. })
    ));
    assert!(matches!(
        quantize_row_q8_k(&[0.5; 512], &mut y),
        Err(Error::LengthMismatch { .. })
    ));
    let x = vec![BlockQ4K::zeroed(); 2];
    assert!(matches!(
        dequantize_row_q4_k(&x, &mut [0.0; 256]),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        BlockQ4K::vec_dot(&x, &y),
        Err(Error::LengthMismatch { .. })
    ));
    // Raw bytes: wrong length, wrong alignment.
    let words = vec![0u32; 2 * 292 / 4 + 1];
    let bytes: &[u8] = bytemuck::cast_slice(&words);
    assert!(matches!(
        BlockQ8K::row_from_bytes(&bytes[..584], 513),
        Err(Error::NotBlockMultiple { .. })
    ));
    assert!(matches!(
        BlockQ8K::row_from_bytes(&bytes[..583], 512),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        BlockQ8K::row_from_bytes(&bytes[1..585], 512),
        Err(Error::Misaligned { .. })
    ));
    assert_eq!(
        BlockQ8K::row_from_bytes(&bytes[..584], 512).unwrap().len(),
        2
    );
    // Empty rows are fine.
    assert_eq!(BlockQ4K::vec_dot(&[], &[]), Ok(0.0));
}
