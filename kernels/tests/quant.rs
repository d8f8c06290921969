//! Activation quantization: what the matmul driver runs (`quantize_row`:
//! AVX2 where the CPU has it) writes the same bytes as the scalar references
//! (which `ggml_parity` and `references.rs` hold to ggml), on random rows and
//! on the blocks that take the edge paths: all zero, NaN and infinity among
//! the values, the largest magnitude twice with both signs, ties at .5.

use llmkernel_kernels::cpu::CpuFeatures;
use llmkernel_kernels::formats::*;
use llmkernel_kernels::matmul::quantize_row;
use llmkernel_kernels::table::Isa;
use llmkernel_kernels::testdata::Rng;

/// Rows of `blocks * len` values: random, then each edge case in its own block.
fn rows(len: usize) -> Vec<Vec<f32>> {
    let mut r = Rng::new(7);
    let mut out = vec![r.activations(8 * len)];
    let mut edge = |f: &dyn Fn(usize) -> f32| out.push((0..len).map(f).collect());
    edge(&|_| 0.0);
    edge(&|i| if i == 3 { f32::NAN } else { i as f32 - 7.0 });
    edge(&|i| if i == 5 { f32::INFINITY } else { i as f32 });
    edge(&|i| if i == 0 { f32::NAN } else { 0.0 });
    edge(&|i| match i {
        2 => -9.0,
        9 => 9.0,
        _ => (i % 5) as f32,
    });
    edge(&|i| match i {
        2 => 9.0,
        9 => -9.0,
        _ => -((i % 5) as f32),
    });
    // amax = 127: Q8_K's iscale is -1 and Q8_0's id is 1, so halves are ties.
    edge(&|i| if i == 1 { 127.0 } else { (i % 9) as f32 - 4.5 });
    edge(&|i| if i == 1 { -127.0 } else { (i % 7) as f32 + 0.5 });
    edge(&|i| (i as f32 - 10.0) * 1e-40);
    edge(&|i| (i as f32 - 10.0) * 3e37);
    out
}

#[test]
fn quantize_row_writes_the_scalar_bytes() {
    let simd = cfg!(target_arch = "x86_64") && Isa::Avx2.supported(&CpuFeatures::get());
    if !simd {
        eprintln!("skipped: no AVX2 here, quantize_row runs the scalar references themselves");
    }
    for x in rows(QK_K) {
        let n = x.len() / QK_K;
        let (mut want, mut got) = (
            vec![
                BlockQ8K {
                    d: 0.0,
                    qs: [0; QK_K],
                    bsums: [0; 16]
                };
                n
            ],
            vec![],
        );
        got.resize(n, want[0]);
        quantize_row_q8_k(&x, &mut want).unwrap();
        quantize_row::<BlockQ4K>(&x, &mut got).unwrap();
        for (i, (w, g)) in want.iter().zip(&got).enumerate() {
            assert_eq!(
                bytemuck::bytes_of(w),
                bytemuck::bytes_of(g),
                "q8_k block {i} of {:?}",
                &x[i * QK_K..][..12]
            );
        }
    }
    for x in rows(32) {
        let n = x.len() / 32;
        let zero = BlockQ8_0 {
            d: half::f16::ZERO,
            qs: [0; 32],
        };
        let (mut want, mut got) = (vec![zero; n], vec![zero; n]);
        quantize_row_q8_0(&x, &mut want).unwrap();
        quantize_row::<BlockQ8_0>(&x, &mut got).unwrap();
        for (i, (w, g)) in want.iter().zip(&got).enumerate() {
            assert_eq!(
                bytemuck::bytes_of(w),
                bytemuck::bytes_of(g),
                "q8_0 block {i} of {:?}",
                &x[i * 32..][..12]
            );
        }
    }
}

#[test]
fn quantize_row_rejects_partial_blocks() {
    let x = vec![1.0f32; 300];
    let mut q = vec![
        BlockQ8K {
            d: 0.0,
            qs: [0; QK_K],
            bsums: [0; 16]
        };
        1
    ];
    assert!(quantize_row::<BlockQ4K>(&x, &mut q).is_err());
}
