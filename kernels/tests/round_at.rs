//! `WeightBlock::round_at`, the step of error-compensated quantization: on
//! random blocks of every weight format, the value it returns is bit for bit
//! what the scalar reference dequantizes (which `references.rs` holds to
//! ggml) at that position, no other position changes, and no code of the
//! position (every value a sweep reaches) is nearer the target. Non-finite
//! and zero scales give some code and no panic. The i-quants (whose eight
//! values share grid points and signs) choose eight codes at a time
//! (`round_group`, tested in `formats/grid.rs`); the 2:4 forms have no step.

use llmkernel_kernels::each_format;
use llmkernel_kernels::formats::*;
use llmkernel_kernels::testdata::Rng;

fn dequant<B: WeightBlock>(b: &B) -> Vec<f32> {
    let mut y = vec![0f32; B::LEN];
    B::dequantize_row(std::slice::from_ref(b), &mut y).unwrap();
    y
}

fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

#[test]
fn round_at_writes_the_nearest_code_of_every_weight_format() {
    let done = each_format!(Format::WEIGHTS, |B, f, _i| -> Format {
        let mut r = Rng::new(11);
        if GRID.contains(&f) {
            assert!(
                B::random(&mut r).round_at(0, 1.0).is_none() && B::GROUP == 8,
                "{f} has a one-value step"
            );
            return f;
        }
        assert_eq!(B::GROUP, 1, "{f}");
        for trial in 0..6 {
            let mut b = B::random(&mut r);
            let before = dequant(&b);
            let amax = before
                .iter()
                .filter(|v| v.is_finite())
                .fold(0f32, |m, v| m.max(v.abs()))
                .max(1e-3);
            for i in (0..B::LEN).step_by(if trial == 0 { 1 } else { 7 }) {
                // Every value position i can take: a sweep past both ends.
                let mut reach: Vec<f32> = Vec::new();
                let mut probe = b;
                for t in -400..=400 {
                    let v = probe.round_at(i, t as f32 / 200.0 * amax).unwrap();
                    if !reach.iter().any(|r| same(*r, v)) {
                        reach.push(v);
                    }
                }
                for w in [
                    r.uniform(-amax, amax),
                    r.uniform(-2.0 * amax, 2.0 * amax),
                    0.0,
                ] {
                    let old = dequant(&b);
                    let v = b.round_at(i, w).unwrap();
                    let now = dequant(&b);
                    assert!(
                        same(now[i], v),
                        "{f}: position {i}: returned {v}, dequantizes to {}",
                        now[i]
                    );
                    for (j, (a, c)) in old.iter().zip(&now).enumerate() {
                        assert!(j == i || same(*a, *c), "{f}: writing {i} changed {j}");
                    }
                    let best = reach
                        .iter()
                        .map(|s| (s - w).abs())
                        .fold(f32::INFINITY, f32::min);
                    assert!(
                        (v - w).abs() <= best,
                        "{f}: position {i}: {v} for {w}, {best} reachable"
                    );
                }
            }
        }
        // Scales zero, NaN, infinite: some code, what dequantization says, no panic.
        for d in [0x0000u16, 0x7e00, 0x7c00, 0xfc00, 0x0001] {
            let mut b = B::filled(0x5a, d, d);
            for i in 0..B::LEN {
                let v = b.round_at(i, 0.37 * i as f32 - 20.0).unwrap();
                assert!(
                    same(dequant(&b)[i], v),
                    "{f}: scale bits {d:#x}, position {i}"
                );
            }
        }
        f
    });
    assert_eq!(done, Format::WEIGHTS.to_vec());
}

/// The formats whose values come in 8-value groups of grid points and signs.
const GRID: [Format; 5] = [
    Format::IQ2_XXS,
    Format::IQ2_XS,
    Format::IQ2_S,
    Format::IQ3_XXS,
    Format::IQ3_S,
];

#[test]
fn the_2_4_forms_have_no_step() {
    let none = each_format!(Format::SPARSE, |B, f, _i| -> bool {
        B::random(&mut Rng::new(1)).round_at(0, 1.0).is_none()
    });
    assert!(none.iter().all(|n| *n) && !none.is_empty());
}
