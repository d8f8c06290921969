//! Kernel micro-benchmarks, driven by the registry: for each format, every
//! dequantization and dot-product kernel this CPU supports, the latter as
//! GEMV (batch 1) and GEMM (batch 64; row kernels alone, and the panel GEMM
//! where the ISA has one), single-threaded; beside GEMV, ggml-cpu's `vec_dot`
//! kernel for the same format on the same data; and every panel tile kernel
//! (`*/gemm_tile`: 8 rows x 32 columns of K = 4096, in L1/L2); the
//! interleaved 2:4 GEMVs (`*/gemv_x4`); and the ternary formats'
//! lookup-table GEMVs (`*/gemv_lut`).
//!
//! Units: weight bytes per second for dequant and GEMV; for GEMM, "elements"
//! are the 2*M*N*K operations (so criterion's elem/s reads as FLOP/s).
//! The 4096 x 4096 weights (up to 17 MB) may sit in the last-level cache: these
//! numbers compare kernels with each other; `llmkernel bench` measures against
//! ggml from DRAM.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use llmkernel::kernels::cpu::CpuFeatures;
use llmkernel::kernels::formats::*;
use llmkernel::kernels::formats::{lut, sparse_x4};
use llmkernel::kernels::matmul::{matmul_quantized, quantize_activations, quantize_row, QMatrix};
use llmkernel::kernels::panel::{pack_columns_by, Shape, Tile, Unpacked, COLS, ROWS};
use llmkernel::kernels::table::{panel_kernels, Config, Kernels, LutKernels, X4Kernels};
use llmkernel::kernels::testdata::{RandomBlock, Rng};
use std::time::Duration;

const M: usize = 4096;
const K: usize = 4096;

fn bench_format<B: Kernels + RandomBlock>(c: &mut Criterion) {
    let name = B::FORMAT.name();
    let mut r = Rng::new(1);
    let w = B::random_vec(&mut r, M * K / B::FORMAT.block_len());
    let bytes = (w.len() * B::FORMAT.block_bytes()) as u64;
    let qm = QMatrix::new(&w, M, K).unwrap();

    let mut g = c.benchmark_group(format!("{name}/dequant"));
    g.throughput(Throughput::Bytes(bytes));
    let mut out = vec![0f32; M * K];
    let cpu = CpuFeatures::get();
    for kernel in B::dequant_kernels()
        .into_iter()
        .filter(|k| k.isa().supported(&cpu))
    {
        g.bench_function(BenchmarkId::new(kernel.name(), kernel.isa()), |b| {
            b.iter(|| kernel.run(&w, &mut out).unwrap())
        });
    }
    g.finish();

    for (op, n) in [("gemv", 1usize), ("gemm", 64)] {
        let x = r.activations(n * K);
        let acts = quantize_activations::<B>(&x, n, K, 1).unwrap();
        let mut y = vec![0f32; n * M];
        let mut g = c.benchmark_group(format!("{name}/{op}"));
        g.throughput(if n == 1 {
            Throughput::Bytes(bytes)
        } else {
            Throughput::Elements((2 * M * n * K) as u64)
        });
        if n == 1 {
            // ggml-cpu's own vec_dot kernel on the same rows and activations, one
            // row at a time (not ggml's repacked GEMV: `llmkernel bench` compares
            // against ggml's best path, a MUL_MAT graph).
            // (2:4 formats: ggml's kernel on the dense blocks they pack.)
            let dense = unpack_dense::<B>(&w);
            let wb: &[u8] = &dense;
            let ab: &[u8] = bytemuck::cast_slice(&acts);
            let row_bytes = wb.len() / M;
            g.bench_function("ggml_vec_dot", |b| {
                b.iter(|| {
                    for (o, row) in y.iter_mut().zip(wb.chunks(row_bytes)) {
                        *o = llmkernel::ggml::vec_dot(B::FORMAT.dense(), K, row, ab).unwrap();
                    }
                })
            });
        }
        for kernel in B::row_kernels()
            .into_iter()
            .filter(|k| k.isa().supported(&cpu))
        {
            // The row kernel alone (its GEMM without the panel path), then, where
            // its ISA has one, the panel GEMM the driver runs for this batch.
            let config = Config::<B>::at(kernel.isa());
            let row_only = config.without_panel();
            g.bench_function(BenchmarkId::new(kernel.name(), kernel.isa()), |b| {
                b.iter(|| matmul_quantized(&qm, &acts, n, &mut y, &row_only, 1).unwrap())
            });
            if let Some(p) = config.panel_for(n) {
                g.bench_function(BenchmarkId::new(p.name(), p.isa()), |b| {
                    b.iter(|| matmul_quantized(&qm, &acts, n, &mut y, &config, 1).unwrap())
                });
            }
        }
        g.finish();
    }

    // The panel tile alone: ROWS unpacked rows against COLS interleaved columns.
    let shape = Shape::of::<B>();
    let x = r.activations(COLS * K);
    let acts = quantize_activations::<B>(&x, COLS, K, 1).unwrap();
    let mut g = c.benchmark_group(format!("{name}/gemm_tile"));
    g.throughput(Throughput::Elements((2 * ROWS * COLS * K) as u64));
    let mut out = [0f32; ROWS * COLS];
    for p in panel_kernels()
        .into_iter()
        .filter(|p| p.isa().supported(&cpu))
    {
        // Unpacked as the matmul unpacks for this tile (the AVX2 fill adds
        // Q3_K's and Q2_K's factored codes).
        let mut u = Unpacked::new(ROWS, K, shape);
        u.fill(&w[..ROWS * K / B::FORMAT.block_len()], ROWS, p.isa());
        let cols = pack_columns_by(&acts, COLS, K, 0, shape, p.layout());
        let tile = Tile::new(&u, 0, &cols);
        let f = p.function();
        g.bench_function(BenchmarkId::new(p.name(), p.isa()), |b| {
            // SAFETY: the ISA is checked above; the tile checked its lengths.
            b.iter(|| unsafe { f(&tile, &mut out) })
        });
    }
    g.finish();
}

/// The dense GGUF bytes of `w` (2:4 blocks unpacked; dense blocks as they are).
fn unpack_dense<B: Kernels>(w: &[B]) -> Vec<u8> {
    let b: &[u8] = bytemuck::cast_slice(w);
    match B::FORMAT {
        Format::Q4_0S => {
            bytemuck::cast_slice(&sparse::unpack_q4_0(bytemuck::cast_slice(b))).to_vec()
        }
        Format::Q8_0S => {
            bytemuck::cast_slice(&sparse::unpack_q8_0(bytemuck::cast_slice(b))).to_vec()
        }
        _ => b.to_vec(),
    }
}

/// Activation quantization of 64 rows of K: the scalar references and what
/// the driver runs (`quantize_row`: AVX2 where there is AVX2). Bytes: the f32 input.
fn bench_quantize(c: &mut Criterion) {
    let n = 64;
    let x = Rng::new(3).activations(n * K);
    let mut g = c.benchmark_group("activations/quantize");
    g.throughput(Throughput::Bytes((x.len() * 4) as u64));
    let mut q8k = vec![
        BlockQ8K {
            d: 0.0,
            qs: [0; QK_K],
            bsums: [0; 16]
        };
        n * K / QK_K
    ];
    let mut q80 = vec![
        BlockQ8_0 {
            d: half::f16::ZERO,
            qs: [0; 32]
        };
        n * K / 32
    ];
    g.bench_function("quantize_row_q8_k/scalar", |b| {
        b.iter(|| quantize_row_q8_k(&x, &mut q8k).unwrap())
    });
    g.bench_function("quantize_row_q8_k/driver", |b| {
        b.iter(|| quantize_row::<BlockQ4K>(&x, &mut q8k).unwrap())
    });
    g.bench_function("quantize_row_q8_0/scalar", |b| {
        b.iter(|| quantize_row_q8_0(&x, &mut q80).unwrap())
    });
    g.bench_function("quantize_row_q8_0/driver", |b| {
        b.iter(|| quantize_row::<BlockQ8_0>(&x, &mut q80).unwrap())
    });
    g.finish();
}

/// The interleaved 2:4 GEMVs (four rows per call) over M x K random 2:4
/// blocks, one column; weight bytes per second.
fn bench_x4<X: X4Kernels>(c: &mut Criterion)
where
    X::Row: RandomBlock,
{
    let cpu = CpuFeatures::get();
    let mut r = Rng::new(5);
    let per_row = K / 32;
    let rows = X::Row::random_vec(&mut r, M * per_row);
    let x4: Vec<X> = sparse_x4::interleave(&rows, M, K).unwrap();
    let act = quantize_activations::<X::Row>(&r.activations(K), 1, K, 1).unwrap();
    let mut g = c.benchmark_group(format!("{}/gemv_x4", X::FORMAT.name()));
    g.throughput(Throughput::Bytes(
        std::mem::size_of_val(x4.as_slice()) as u64
    ));
    let mut out = [0f32; 4];
    for kernel in X::x4_kernels()
        .into_iter()
        .filter(|k| k.isa().supported(&cpu))
    {
        let f = kernel.function();
        g.bench_function(BenchmarkId::new(kernel.name(), kernel.isa()), |b| {
            b.iter(|| {
                for group in x4.chunks(per_row) {
                    // SAFETY: the ISA is checked above; lengths match; masks are valid.
                    unsafe { f(group, &act, &mut out) };
                }
            })
        });
    }
    g.finish();
}

/// The lookup-table GEMVs (ternary bytes, 2-bit i-quant sign planes) over
/// M x K random blocks in their 64-row layouts, one column (`*/gemv_lut`),
/// beside the format's best row kernel on the same blocks in GGUF's layout;
/// the format's weight bytes per second.
/// `group`: the group's name after the format's (`gemv_lut`, or the
/// layout's where a format has two).
fn bench_lut<X: LutKernels>(c: &mut Criterion, group: &str)
where
    X::Row: RandomBlock,
{
    let cpu = CpuFeatures::get();
    let mut r = Rng::new(6);
    let rows = X::Row::random_vec(&mut r, M * K / QK_K);
    let lut: Vec<X> = lut::interleave(&rows, M, K).unwrap();
    let acts = quantize_activations::<X::Row>(&r.activations(K), 1, K, 1).unwrap();
    let mut g = c.benchmark_group(format!("{}/{group}", X::Row::FORMAT.name()));
    g.throughput(Throughput::Bytes(
        std::mem::size_of_val(rows.as_slice()) as u64
    ));
    let ngroups = lut::groups(M);
    let mut out = vec![0f32; ngroups * lut::ROWS];
    for kernel in X::lut_kernels()
        .into_iter()
        .filter(|k| k.isa().supported(&cpu))
    {
        g.bench_function(BenchmarkId::new(kernel.name(), kernel.isa()), |b| {
            b.iter(|| {
                kernel
                    .run(&lut, ngroups, 0..K / QK_K, &acts, &mut out)
                    .unwrap()
            })
        });
    }
    let config = Config::<X::Row>::best().unwrap().without_panel();
    let qm = QMatrix::new(&rows, M, K).unwrap();
    let mut y = vec![0f32; M];
    let row = config.row();
    g.bench_function(BenchmarkId::new(row.name(), row.isa()), |b| {
        b.iter(|| matmul_quantized(&qm, &acts, 1, &mut y, &config, 1).unwrap())
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    bench_quantize(c);
    bench_lut::<BlockTq1_0x64>(c, "gemv_lut");
    bench_lut::<BlockTq2_0x64>(c, "gemv_lut");
    bench_lut::<BlockTq1_0Px64>(c, "gemv_lut_planes");
    bench_lut::<BlockTq2_0Px64>(c, "gemv_lut_planes");
    bench_lut::<BlockIq2Xxsx64>(c, "gemv_lut");
    bench_lut::<BlockIq2Xsx64>(c, "gemv_lut");
    bench_lut::<BlockIq2Sx64>(c, "gemv_lut");
    bench_lut::<BlockIq3Sx64>(c, "gemv_lut");
    bench_lut::<BlockIq3Xxsx64>(c, "gemv_lut");
    bench_x4::<BlockQ8_0Sx4>(c);
    bench_x4::<BlockQ4_0Sx4>(c);
    struct Bench<'a>(&'a mut Criterion);
    impl WithFormat for Bench<'_> {
        type Out = ();
        fn run<B: Kernels>(self) {
            bench_format::<B>(self.0)
        }
    }
    for f in Format::WITH_KERNELS {
        f.with(Bench(c));
    }
}

criterion_group! {
    name = kernels;
    config = Criterion::default().sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = benches
}
criterion_main!(kernels);
