//! One harness for every kernel in the registry: each kernel this CPU can run
//! is checked against the scalar reference on awkward shapes and thread
//! counts; kernels it cannot run are reported as skipped, never as passed.
//!
//! Bound: |kernel - reference| <= 1e-5 * dot_magnitude + 1e-30 per output,
//! where dot_magnitude is the sum over blocks of |scale term| + |min term|:
//! integer block sums are exact, only float scaling and summation order may differ.

use bytemuck::Zeroable;
use llmkernel_kernels::cpu::{set_prefetch, CpuFeatures};
use llmkernel_kernels::formats::*;
use llmkernel_kernels::matmul::{matmul, quantize_activations, QMatrix};
use llmkernel_kernels::table::{Config, Isa, Kernels};
use llmkernel_kernels::testdata::{RandomBlock, Rng};
use llmkernel_kernels::{each_format, Error, Format};

/// (rows, blocks per row, batch): one block, odd block counts, rows not a
/// multiple of any tile, batch 1, 2, 3, 7, 16, 33, 512, and empty.
const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (3, 1, 2),
    (17, 3, 1),
    (5, 7, 3),
    (33, 2, 7),
    (8, 16, 16),
    (9, 5, 33),
    (4, 2, 512),
    (64, 16, 1),
    (0, 4, 3),
    (6, 4, 0),
    (5, 0, 2),
];

/// Runs every registered kernel of `B` that this CPU supports; returns (ran, skipped) names.
fn check_format<B: Kernels + RandomBlock>(seed: u64) -> (Vec<String>, Vec<String>) {
    let cpu = CpuFeatures::get();
    let (mut ran, mut skipped) = (vec![], vec![]);
    for kernel in B::row_kernels() {
        if !kernel.isa().supported(&cpu) {
            skipped.push(format!(
                "{} ({}: not on this CPU)",
                kernel.name(),
                kernel.isa()
            ));
            continue;
        }
        // The table's configuration at this kernel's ISA runs exactly this kernel.
        let config = Config::<B>::at(kernel.isa());
        assert_eq!(config.row().name(), kernel.name());
        let mut r = Rng::new(seed);
        for &(rows, nblk, batch) in SHAPES {
            let k = nblk * B::FORMAT.block_len();
            let w = B::random_vec(&mut r, rows * nblk);
            let x = r.activations(batch * k);
            let qm = QMatrix::new(&w, rows, k).unwrap();
            let acts = quantize_activations::<B>(&x, batch, k, 1).unwrap();
            // The aarch64 GEMVs with and without software prefetch.
            for (threads, prefetch) in [(1, true), (2, false), (3, true)] {
                set_prefetch(prefetch);
                let mut y = vec![f32::NAN; batch * rows];
                matmul(&qm, &x, batch, &mut y, &config, threads).unwrap();
                for n in 0..batch {
                    let a = &acts[n * nblk..(n + 1) * nblk];
                    for m in 0..rows {
                        let row = &w[m * nblk..(m + 1) * nblk];
                        let want = B::vec_dot(row, a).unwrap();
                        let bound = 1e-5 * B::dot_magnitude(row, a).unwrap() + 1e-30;
                        let got = y[n * rows + m];
                        assert!(
                            (got - want).abs() <= bound,
                            "{} ({}): rows {rows}, k {k}, batch {batch}, threads {threads}, prefetch {prefetch}: y[{n}][{m}] = {got:e}, reference {want:e}",
                            kernel.name(),
                            kernel.isa()
                        );
                    }
                }
            }
        }
        match config.panel_for(512) {
            // Batches 16, 33 and 512 above ran through the panel GEMM.
            Some(p) => ran.push(format!(
                "{} ({}) + panel {} ({})",
                kernel.name(),
                kernel.isa(),
                p.name(),
                p.isa()
            )),
            None => ran.push(format!("{} ({})", kernel.name(), kernel.isa())),
        }
    }
    (ran, skipped)
}

#[test]
fn every_kernel_matches_the_scalar_reference() {
    let mut ran = vec![];
    let mut skipped = vec![];
    for (r, s) in
        each_format!(
            Format::WITH_KERNELS,
            |B, f, i| -> (Vec<String>, Vec<String>) { check_format::<B>(i as u64 + 1) }
        )
    {
        ran.extend(r);
        skipped.extend(s);
    }
    eprintln!("kernels checked: {}", ran.join(", "));
    eprintln!(
        "kernels skipped: {}",
        if skipped.is_empty() {
            "none".into()
        } else {
            skipped.join(", ")
        }
    );
    assert_eq!(ran.len() + skipped.len(), registered_kernels());
    // Where this architecture has SIMD kernels and the CPU runs them, they must have run.
    let simd_here = ran.iter().chain(&skipped).any(|k| !k.contains("(scalar)"));
    if simd_here {
        assert!(
            ran.iter().any(|k| !k.contains("(scalar)")),
            "this CPU has SIMD kernels registered: at least one must have run"
        );
    } else {
        eprintln!(
            "no SIMD kernels are registered for {} yet: only the scalar references ran",
            std::env::consts::ARCH
        );
    }
    let cpu = CpuFeatures::get();
    if cfg!(target_arch = "x86_64") && Isa::Avx2.supported(&cpu) {
        assert!(
            ran.iter().any(|k| k.contains("(avx2)")),
            "an AVX2 CPU must run the AVX2 kernels"
        );
    }
    if cfg!(target_arch = "aarch64") && Isa::Neon.supported(&cpu) {
        assert!(
            ran.iter().any(|k| k.contains("(neon)")),
            "a NEON CPU must run the NEON kernels"
        );
    }
}

fn registered_kernels() -> usize {
    each_format!(Format::WITH_KERNELS, |B, f, i| -> usize {
        B::row_kernels().len()
    })
    .iter()
    .sum()
}

#[test]
fn bad_shapes_are_errors() {
    let w = vec![BlockQ4K::zeroed(); 4];
    assert!(matches!(
        QMatrix::new(&w, 2, 300),
        Err(Error::NotBlockMultiple { .. })
    ));
    assert!(matches!(
        QMatrix::new(&w, 3, 512),
        Err(Error::LengthMismatch { .. })
    ));
    let qm = QMatrix::new(&w, 2, 512).unwrap();
    let kernel = Config::<BlockQ4K>::best().unwrap();
    let mut y = vec![0f32; 2];
    assert!(matches!(
        matmul(&qm, &[0.0; 511], 1, &mut y, &kernel, 1),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        matmul(&qm, &[0.0; 512], 1, &mut y[..1], &kernel, 1),
        Err(Error::LengthMismatch { .. })
    ));
    matmul(&qm, &[0.5; 512], 1, &mut y, &kernel, 1).unwrap();
    assert_eq!(y, [0.0, 0.0]);
}

#[test]
fn isa_names_round_trip() {
    for isa in Isa::ALL {
        assert_eq!(Isa::from_name(isa.name()), Some(isa));
    }
    assert_eq!(Isa::from_name("AVX2"), Some(Isa::Avx2));
    assert_eq!(Isa::from_name("sse9"), None);
}

/// Every dequantization kernel this CPU runs against the scalar reference,
/// bit for bit (NaN where the reference gives NaN), on random blocks and on
/// blocks whose scales are zero, subnormal, huge, negative, Inf or NaN.
fn check_dequant<B: Kernels + RandomBlock>(seed: u64) -> usize {
    let cpu = CpuFeatures::get();
    let mut r = Rng::new(seed);
    let mut blocks = B::random_vec(&mut r, 2000);
    let size = std::mem::size_of::<B>();
    let specials: [u16; 9] = [
        0x0000, 0x8000, 0x0001, 0x03FF, 0x7BFF, 0xFBFF, 0x7C00, 0xFC00, 0x7E00,
    ];
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut blocks);
    for i in 0..specials.len() {
        for (j, &off) in B::SCALE_OFFSETS.iter().enumerate() {
            let at = (i * 7 + j) * size + off;
            bytes[at..at + 2].copy_from_slice(&specials[(i + j) % specials.len()].to_le_bytes());
        }
    }
    let n = blocks.len() * B::FORMAT.block_len();
    let mut want = vec![0f32; n];
    B::dequantize_row(&blocks, &mut want).unwrap();
    let mut ran = 0;
    for k in B::dequant_kernels()
        .into_iter()
        .filter(|k| k.isa().supported(&cpu))
    {
        for len in [0, 1, 3, blocks.len()] {
            let mut got = vec![f32::NAN; len * B::FORMAT.block_len()];
            k.run(&blocks[..len], &mut got).unwrap();
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                if w.is_nan() {
                    assert!(
                        g.is_nan(),
                        "{} ({}): value {i}: {g} where the reference gives NaN",
                        k.name(),
                        k.isa()
                    );
                } else {
                    assert_eq!(
                        g.to_bits(),
                        w.to_bits(),
                        "{} ({}): value {i}: {g:e} vs {w:e}",
                        k.name(),
                        k.isa()
                    );
                }
            }
        }
        assert!(matches!(
            k.run(&blocks[..2], &mut [0.0; 3]),
            Err(Error::LengthMismatch { .. })
        ));
        ran += 1;
    }
    ran
}

#[test]
fn every_dequant_kernel_is_bit_identical_with_the_reference() {
    let ran: usize = each_format!(Format::WITH_KERNELS, |B, f, i| -> usize {
        check_dequant::<B>(i as u64 + 11)
    })
    .iter()
    .sum();
    let registered: usize = each_format!(Format::WITH_KERNELS, |B, f, i| -> usize {
        B::dequant_kernels().len()
    })
    .iter()
    .sum();
    eprintln!("dequant kernels checked: {ran} of {registered} registered");
    let cpu = CpuFeatures::get();
    if Isa::Avx2.supported(&cpu) || Isa::Neon.supported(&cpu) {
        assert_eq!(
            ran, registered,
            "a SIMD CPU runs every registered dequant kernel"
        );
    }
    assert!(ran >= 5);
}
