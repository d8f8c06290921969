//! Four-row interleaved layouts (`formats::sparse_x4`: 2:4 and dense Q4_0 /
//! Q8_0) and their GEMV kernels.
//!
//! - `interleave` / `deinterleave` are exact inverses, byte for byte, with the
//!   padding rows of a last partial group zero (scale 0, valid mask).
//! - The scalar interleaved GEMV sums exactly what `vec_dot` sums over each
//!   row's 2:4 blocks (bit for bit); every SIMD interleaved GEMV this CPU runs
//!   is within the kernels' bound of it: 1e-5 * dot_magnitude per output.
//! - `matmul_x4_on` with every 2:4 row kernel this CPU runs (the interleaved
//!   GEMV of its ISA, or its row kernel on the groups taken apart, or the panel
//!   GEMM from 16 columns) against the scalar dot products, on rows that are
//!   not a multiple of four, batches 1 to 33 and 1 to 3 threads.

use llmkernel_kernels::cpu::{set_prefetch, CpuFeatures};
use llmkernel_kernels::formats::sparse_x4::{deinterleave, gemv_x4_ref, interleave, X4Block};
use llmkernel_kernels::formats::*;
use llmkernel_kernels::matmul::{matmul_x4_on, quantize_activations, Rayon, X4Matrix};
use llmkernel_kernels::table::{Config, Kernels, X4Kernels};
use llmkernel_kernels::testdata::{RandomBlock, Rng};

/// `pad_ok`: what else a padding row must satisfy (a valid mask, for 2:4 rows).
fn round_trip<X: X4Block>(seed: u64, pad_ok: impl Fn(&X::Row))
where
    X::Row: RandomBlock + PartialEq + std::fmt::Debug,
{
    let mut r = Rng::new(seed);
    for rows in [1usize, 3, 4, 5, 8, 11] {
        for per_row in [1usize, 3] {
            let k = 32 * per_row;
            let blocks = X::Row::random_vec(&mut r, rows * per_row);
            let x4: Vec<X> = interleave(&blocks, rows, k).unwrap();
            assert_eq!(x4.len(), rows.div_ceil(4) * per_row);
            let back = deinterleave(&x4, rows, k).unwrap();
            let (a, b): (&[u8], &[u8]) =
                (bytemuck::cast_slice(&blocks), bytemuck::cast_slice(&back));
            assert_eq!(a, b, "{}: {rows} rows of {k}", X::FORMAT);
            // Padding rows: zero scale, a valid mask, and so zero values.
            for g in x4.iter().skip((rows / 4) * per_row) {
                for pad in rows % 4..4 {
                    if rows % 4 == 0 {
                        break;
                    }
                    let row = g.row(pad);
                    let mut v = vec![1f32; 32];
                    X::Row::dequantize_row(&[row], &mut v).unwrap();
                    assert!(
                        v.iter().all(|&x| x == 0.0),
                        "{}: padding row {pad}",
                        X::FORMAT
                    );
                    pad_ok(&row);
                }
            }
        }
    }
    assert!(interleave::<X>(&X::Row::random_vec(&mut r, 5), 2, 64).is_err());
    assert!(deinterleave::<X>(&[], 2, 64).is_err());
}

#[test]
fn interleaving_round_trips_byte_for_byte() {
    round_trip::<BlockQ8_0Sx4>(1, |r| sparse::check_row(&[*r]).unwrap());
    round_trip::<BlockQ4_0Sx4>(2, |r| sparse::check_row(&[*r]).unwrap());
    round_trip::<BlockQ8_0x4>(7, |_| ());
    round_trip::<BlockQ4_0x4>(8, |_| ());
    round_trip::<BlockIq4Nlx4>(13, |_| ());
    round_trip::<BlockQ5_0x4>(16, |_| ());
}

fn check_gemv<X: X4Kernels>(seed: u64) -> Vec<String>
where
    X::Row: RandomBlock,
{
    let cpu = CpuFeatures::get();
    let mut ran = vec![];
    let mut r = Rng::new(seed);
    for kernel in X::x4_kernels() {
        if !kernel.isa().supported(&cpu) {
            eprintln!(
                "skipped: {} ({}): not on this CPU",
                kernel.name(),
                kernel.isa()
            );
            continue;
        }
        // 130 blocks: more than one run of the NEON kernels' activation sums.
        for per_row in [1usize, 2, 7, 64, 130] {
            let k = 32 * per_row;
            let blocks = X::Row::random_vec(&mut r, 4 * per_row);
            let x4: Vec<X> = interleave(&blocks, 4, k).unwrap();
            let act = quantize_activations::<X::Row>(&r.activations(k), 1, k, 1).unwrap();
            let (mut want, mut got) = ([0f32; 4], [f32::NAN; 4]);
            gemv_x4_ref(&x4, &act, &mut want);
            // With software prefetch here and without below (aarch64): the
            // same bits either way.
            set_prefetch(true);
            kernel.run(&x4, &act, &mut got).unwrap();
            set_prefetch(false);
            // Several groups in one call give each group's result.
            let two: Vec<X> = x4.iter().chain(&x4).copied().collect();
            let mut got2 = [f32::NAN; 8];
            kernel.run(&two, &act, &mut got2).unwrap();
            assert_eq!(
                got.map(f32::to_bits),
                got2[..4].iter().map(|v| v.to_bits()).collect::<Vec<_>>()[..]
            );
            assert_eq!(
                got.map(f32::to_bits),
                got2[4..].iter().map(|v| v.to_bits()).collect::<Vec<_>>()[..]
            );
            for row in 0..4 {
                let rb = &blocks[row * per_row..(row + 1) * per_row];
                let exact = X::Row::vec_dot(rb, &act).unwrap();
                assert_eq!(
                    want[row].to_bits(),
                    exact.to_bits(),
                    "reference vs vec_dot, row {row}"
                );
                let bound = 1e-5 * X::Row::dot_magnitude(rb, &act).unwrap() + 1e-30;
                assert!(
                    (got[row] - want[row]).abs() <= bound,
                    "{} ({}), k {k}, row {row}: {:e}, reference {:e}",
                    kernel.name(),
                    kernel.isa(),
                    got[row],
                    want[row]
                );
            }
        }
        ran.push(format!("{} ({})", kernel.name(), kernel.isa()));
    }
    ran
}

#[test]
fn interleaved_gemv_kernels_match_the_reference() {
    let mut ran = check_gemv::<BlockQ8_0Sx4>(3);
    ran.extend(check_gemv::<BlockQ4_0Sx4>(4));
    ran.extend(check_gemv::<BlockQ8_0x4>(9));
    ran.extend(check_gemv::<BlockQ4_0x4>(10));
    ran.extend(check_gemv::<BlockIq4Nlx4>(14));
    ran.extend(check_gemv::<BlockQ5_0x4>(17));
    eprintln!("ran: {ran:?}");
    assert!(ran.len() >= 4, "the scalar references always run");
}

fn check_matmul<X: X4Kernels>(seed: u64)
where
    X::Row: RandomBlock,
{
    let cpu = CpuFeatures::get();
    let mut r = Rng::new(seed);
    for kernel in X::Row::row_kernels()
        .into_iter()
        .filter(|k| k.isa().supported(&cpu))
    {
        let config = Config::<X::Row>::at(kernel.isa());
        for &(rows, per_row, batch) in &[
            (1usize, 1usize, 1usize),
            (5, 3, 1),
            (7, 2, 3),
            (13, 4, 17),
            (6, 5, 33),
            (0, 2, 1),
            (4, 0, 2),
        ] {
            let k = 32 * per_row;
            let blocks = X::Row::random_vec(&mut r, rows * per_row);
            let x4: Vec<X> = interleave(&blocks, rows, k).unwrap();
            let w = X4Matrix::new(&x4, rows, k).unwrap();
            let x = r.activations(batch * k);
            let acts = quantize_activations::<X::Row>(&x, batch, k, 1).unwrap();
            for threads in [1, 2, 3] {
                let mut y = vec![f32::NAN; batch * rows];
                matmul_x4_on(&w, &x, batch, &mut y, &config, &Rayon(threads)).unwrap();
                for n in 0..batch {
                    for m in 0..rows {
                        let rb = &blocks[m * per_row..(m + 1) * per_row];
                        let a = &acts[n * per_row..(n + 1) * per_row];
                        let want = X::Row::vec_dot(rb, a).unwrap();
                        let bound = 1e-5 * X::Row::dot_magnitude(rb, a).unwrap() + 1e-30;
                        let got = y[n * rows + m];
                        assert!(
                            (got - want).abs() <= bound,
                            "{} ({}): rows {rows}, k {k}, batch {batch}, threads {threads}: y[{n}][{m}] = {got:e}, reference {want:e}",
                            kernel.name(),
                            kernel.isa()
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn interleaved_matmul_matches_the_reference() {
    check_matmul::<BlockQ8_0Sx4>(5);
    check_matmul::<BlockQ4_0Sx4>(6);
    check_matmul::<BlockQ8_0x4>(11);
    check_matmul::<BlockQ4_0x4>(12);
    check_matmul::<BlockIq4Nlx4>(15);
    check_matmul::<BlockQ5_0x4>(18);
}
