//! The ternary formats' lookup-table layout (`formats::ternary_x64`) and its
//! GEMV kernels.
//!
//! - `interleave` / `deinterleave` are exact inverses, byte for byte; padding
//!   rows have scale 0.
//! - Each table entry is the byte's exact partial sum (checked against the
//!   format's own dequantization for every byte value at every position).
//! - The scalar lookup-table GEMV sums exactly what `vec_dot` sums (bit for
//!   bit); every SIMD one this CPU runs is within the kernels' bound of it
//!   (1e-5 * dot_magnitude per output), over part of the block range too,
//!   on random bytes (TQ2_0's code 3 included), activations at -128 and
//!   127, and non-finite scales.
//! - `matmul_lut_on` on rows that are not a multiple of 64, 1 to 3 threads,
//!   1, 3 and 17 columns (the panel GEMM, its rows unpacked from the
//!   layout), against `vec_dot`.

use llmkernel_kernels::cpu::CpuFeatures;
use llmkernel_kernels::formats::ternary_x64::{
    deinterleave, gemv_ref, groups, interleave, row_slot, slot_row, table, unslot, TernaryRow,
    TernaryX64, ROWS,
};
use llmkernel_kernels::formats::*;
use llmkernel_kernels::matmul::{matmul_lut_on, quantize_activations, LutMatrix, Rayon};
use llmkernel_kernels::table::{Config, LutKernels};
use llmkernel_kernels::testdata::{RandomBlock, Rng};

#[test]
fn slots_are_a_permutation() {
    let mut seen = [false; ROWS];
    for s in 0..ROWS {
        assert!(!seen[slot_row(s)]);
        seen[slot_row(s)] = true;
        assert_eq!(row_slot(slot_row(s)), s);
    }
}

fn round_trip<X: TernaryX64>(seed: u64)
where
    X::Row: RandomBlock,
{
    let mut r = Rng::new(seed);
    for rows in [1usize, 63, 64, 65, 130] {
        for per_row in [1usize, 3] {
            let k = 256 * per_row;
            let blocks = X::Row::random_vec(&mut r, rows * per_row);
            let x: Vec<X> = interleave(&blocks, rows, k).unwrap();
            assert_eq!(x.len(), groups(rows) * per_row);
            let back = deinterleave(&x, rows, k).unwrap();
            for (i, b) in back.iter().enumerate() {
                let (row, pos) = (i / per_row, i % per_row);
                let one = x[pos * groups(rows) + row / ROWS].row_block(row % ROWS);
                assert_eq!(bytemuck::bytes_of(&one), bytemuck::bytes_of(b));
            }
            let (a, b): (&[u8], &[u8]) =
                (bytemuck::cast_slice(&blocks), bytemuck::cast_slice(&back));
            assert_eq!(a, b, "{}: {rows} rows of {k}", X::Row::FORMAT);
            // Padding rows have scale 0.
            for g in x.iter().skip(groups(rows) - 1).step_by(groups(rows)) {
                for s in 0..ROWS {
                    if slot_row(s) >= rows % ROWS && rows % ROWS != 0 {
                        assert_eq!(g.d()[s].to_bits(), 0);
                    }
                }
            }
        }
    }
    assert!(interleave::<X>(&X::Row::random_vec(&mut r, 5), 2, 256).is_err());
    assert!(deinterleave::<X>(&[], 2, 256).is_err());
}

#[test]
fn interleaving_round_trips_byte_for_byte() {
    round_trip::<BlockTq1_0x64>(1);
    round_trip::<BlockTq2_0x64>(2);
}

/// Every byte value at every byte position: the table entry against the
/// block's own dequantization (scale 1) of that byte, dotted with the activations.
fn tables_are_exact<X: TernaryX64>(seed: u64) {
    let mut r = Rng::new(seed);
    let act = random_act(&mut r, 0);
    for j in 0..X::Row::GROUPS {
        let t = table::<X::Row>(&act, j);
        for q in 0..=255u8 {
            let mut b = <X::Row as bytemuck::Zeroable>::zeroed();
            // Every other byte holds zero weights: digit/field 1.
            for i in 0..X::Row::GROUPS {
                b.set_byte(i, zero_byte::<X::Row>());
            }
            b.set_byte(j, q);
            b.set_scale(half::f16::ONE);
            let mut v = [0f32; 256];
            X::Row::dequantize_row(&[b], &mut v).unwrap();
            let want: i32 = v
                .iter()
                .zip(&act.qs)
                .map(|(&w, &x)| w as i32 * x as i32)
                .sum();
            assert_eq!(
                t[q as usize] as i32,
                want,
                "{} byte {j} value {q}",
                X::Row::FORMAT
            );
        }
    }
}

/// The byte whose weights are all zero.
fn zero_byte<R: TernaryRow>() -> u8 {
    (0..=255u8)
        .find(|&q| (0..5).all(|n| R::coef(q, n) == 0))
        .unwrap()
}

#[test]
fn tables_hold_exact_partial_sums() {
    tables_are_exact::<BlockTq1_0x64>(3);
    tables_are_exact::<BlockTq2_0x64>(4);
}

/// Activations: random (`kind` 0), all -128 (1), all 127 (2), random scale.
fn random_act(r: &mut Rng, kind: u32) -> BlockQ8K {
    let mut a = <BlockQ8K as bytemuck::Zeroable>::zeroed();
    for q in a.qs.iter_mut() {
        *q = match kind {
            1 => -128,
            2 => 127,
            _ => r.next_u64() as i8,
        };
    }
    a.d = r.uniform(0.001, 0.1);
    a
}

/// Random blocks, some with a non-finite or extreme scale.
fn blocks_with_edges<R: TernaryRow + RandomBlock>(r: &mut Rng, n: usize) -> Vec<R> {
    let mut v = R::random_vec(r, n);
    for (i, b) in v.iter_mut().enumerate() {
        match i % 11 {
            3 => b.set_scale(half::f16::NAN),
            5 => b.set_scale(half::f16::INFINITY),
            7 => b.set_scale(half::f16::MAX),
            8 => (0..R::GROUPS).for_each(|j| b.set_byte(j, 0xff)),
            _ => {}
        }
    }
    v
}

fn close(got: f32, want: f32, bound: f32) -> bool {
    if want.is_nan() {
        got.is_nan()
    } else if want.is_infinite() {
        got == want
    } else {
        (got - want).abs() <= bound
    }
}

fn check_kernels<X: LutKernels>(seed: u64) -> Vec<String>
where
    X::Row: RandomBlock,
{
    let cpu = CpuFeatures::get();
    let mut ran = vec![];
    let mut r = Rng::new(seed);
    for kernel in X::lut_kernels() {
        if !kernel.isa().supported(&cpu) {
            eprintln!(
                "skipped: {} ({}): not on this CPU",
                kernel.name(),
                kernel.isa()
            );
            continue;
        }
        for (rows, per_row, kind) in [(64, 1, 0), (70, 3, 0), (1, 2, 1), (130, 5, 2), (64, 16, 0)] {
            let k = 256 * per_row;
            let blocks = blocks_with_edges::<X::Row>(&mut r, rows * per_row);
            let x: Vec<X> = interleave(&blocks, rows, k).unwrap();
            let act: Vec<BlockQ8K> = (0..per_row).map(|_| random_act(&mut r, kind)).collect();
            let ng = groups(rows);
            // The whole range, and a split of it added up.
            let mut want = vec![0f32; ROWS * ng];
            gemv_ref(&x, ng, 0..per_row, &act, &mut want);
            let mut got = vec![0f32; ROWS * ng];
            kernel.run(&x, ng, 0..per_row, &act, &mut got).unwrap();
            let mut split = vec![0f32; ROWS * ng];
            kernel
                .run(&x, ng, 0..per_row / 2, &act, &mut split)
                .unwrap();
            kernel
                .run(&x, ng, per_row / 2..per_row, &act, &mut split)
                .unwrap();
            let (mut want_rows, mut got_rows, mut split_rows) =
                (vec![0f32; rows], vec![0f32; rows], vec![0f32; rows]);
            unslot(&want, &mut want_rows);
            unslot(&got, &mut got_rows);
            unslot(&split, &mut split_rows);
            for row in 0..rows {
                let rb = &blocks[row * per_row..(row + 1) * per_row];
                let exact = X::Row::vec_dot(rb, &act).unwrap();
                // Bit for bit (any NaN for a NaN).
                assert!(
                    want_rows[row].to_bits() == exact.to_bits()
                        || (exact.is_nan() && want_rows[row].is_nan()),
                    "{}: reference {:e} vs vec_dot {exact:e}, row {row}",
                    X::Row::FORMAT,
                    want_rows[row]
                );
                let bound = 2e-5 * X::Row::dot_magnitude(rb, &act).unwrap() + 1e-30;
                for (what, g) in [("whole", got_rows[row]), ("split", split_rows[row])] {
                    assert!(
                        close(g, exact, bound),
                        "{} ({}), {what}, k {k}, row {row}: {g:e}, reference {exact:e}",
                        kernel.name(),
                        kernel.isa()
                    );
                }
            }
        }
        // Lengths are checked.
        let x: Vec<X> = interleave(&X::Row::random_vec(&mut r, 64), 64, 256).unwrap();
        let act = [random_act(&mut r, 0)];
        assert!(kernel.run(&x, 1, 0..2, &act, &mut [0f32; 64]).is_err());
        assert!(kernel.run(&x, 1, 0..1, &act, &mut [0f32; 63]).is_err());
        assert!(kernel.run(&x, 2, 0..1, &act, &mut [0f32; 128]).is_err());
        ran.push(format!("{} ({})", kernel.name(), kernel.isa()));
    }
    ran
}

#[test]
fn lookup_table_kernels_match_the_reference() {
    let mut ran = check_kernels::<BlockTq1_0x64>(5);
    ran.extend(check_kernels::<BlockTq2_0x64>(6));
    eprintln!("ran: {ran:?}");
    assert!(ran.len() >= 2, "the scalar references always run");
}

fn check_matmul<X: LutKernels>(seed: u64)
where
    X::Row: RandomBlock,
{
    let mut r = Rng::new(seed);
    let config = Config::<X::Row>::best().unwrap();
    for (rows, per_row) in [(1usize, 1usize), (65, 3), (200, 4)] {
        let k = 256 * per_row;
        let blocks = X::Row::random_vec(&mut r, rows * per_row);
        let x: Vec<X> = interleave(&blocks, rows, k).unwrap();
        let w = LutMatrix::new(&x, rows, k).unwrap();
        for n in [1usize, 3, 17] {
            let xs = r.activations(n * k);
            let acts = quantize_activations::<X::Row>(&xs, n, k, 1).unwrap();
            for threads in [1, 2, 3] {
                let mut y = vec![f32::NAN; n * rows];
                matmul_lut_on(&w, &xs, n, &mut y, &config, &Rayon(threads)).unwrap();
                for c in 0..n {
                    let a = &acts[c * per_row..(c + 1) * per_row];
                    for m in 0..rows {
                        let rb = &blocks[m * per_row..(m + 1) * per_row];
                        let want = X::Row::vec_dot(rb, a).unwrap();
                        let bound = 2e-5 * X::Row::dot_magnitude(rb, a).unwrap() + 1e-30;
                        assert!(
                            close(y[c * rows + m], want, bound),
                            "{} ({}): rows {rows}, k {k}, n {n}, threads {threads}, y[{c}][{m}] = {:e}, reference {want:e}",
                            config.lut::<X>().name(),
                            config.lut::<X>().isa(),
                            y[c * rows + m]
                        );
                    }
                }
            }
        }
    }
    assert!(LutMatrix::new(&[] as &[X], 3, 256).is_err());
}

#[test]
fn matmul_through_the_lookup_table_matches_vec_dot() {
    check_matmul::<BlockTq1_0x64>(7);
    check_matmul::<BlockTq2_0x64>(8);
}
