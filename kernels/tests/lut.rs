//! The lookup-table layouts (`formats::lut`): the ternary formats' bytes by
//! 64 rows (`formats::ternary_x64`), the 2-bit i-quants' and IQ3_S's sign
//! planes (`formats::planes_x64`), and their GEMV kernels.
//!
//! - `interleave` / `deinterleave` are exact inverses, byte for byte; padding
//!   rows read back as zero blocks.
//! - Ternary: each table entry is the byte's exact partial sum (checked
//!   against the format's own dequantization for every byte value at every
//!   position). Planes: `2w = 18 e0 + 35 e1 + 33 e2` for all six 2-bit
//!   weights, `w = e0 + 2 e1 + 4 e2 + 8 e3` for IQ3_S's 30, and the planes'
//!   integer sums equal the dequantized integer dot product.
//! - The scalar lookup-table GEMV sums exactly what `vec_dot` sums (bit for
//!   bit: ternary) or within the kernels' bound (planes, which round per
//!   block); every SIMD one this CPU runs is within the bound of `vec_dot`
//!   (2e-5 * dot_magnitude per output) and, for the planes, bit for bit the
//!   reference; over part of the block range too, on random bytes (TQ2_0's
//!   code 3 included), activations at -128 and 127, and non-finite scales.
//! - `matmul_lut_on` on rows that are not a multiple of 64, 1 to 3 threads,
//!   1, 3 and 17 columns (the panel GEMM, its rows unpacked from the
//!   layout), against `vec_dot`.

use llmkernel_kernels::cpu::{set_prefetch, CpuFeatures};
use llmkernel_kernels::formats::lut::{deinterleave, groups, interleave, unslot, LutLayout, ROWS};
use llmkernel_kernels::formats::planes_x64::{
    plane_bits, plane_weight, Plane4Tile, Plane5Tile, Planes, TernaryTile,
};
use llmkernel_kernels::formats::ternary_x64::{row_slot, slot_row, table, TernaryRow, TernaryX64};
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

fn round_trip<X: LutLayout>(seed: u64)
where
    X::Row: RandomBlock,
{
    round_trip_as::<X>(seed, |b| b)
}

/// [`round_trip`], where the layout gives back `canon(block)`.
fn round_trip_as<X: LutLayout>(seed: u64, canon: fn(X::Row) -> X::Row)
where
    X::Row: RandomBlock,
{
    let mut r = Rng::new(seed);
    for rows in [1usize, 63, 64, 65, 130] {
        for per_row in [1usize, 3] {
            let k = 256 * per_row;
            let blocks = X::Row::random_vec(&mut r, rows * per_row);
            let x: Vec<X> = interleave(&blocks, rows, k).unwrap();
            let blocks: Vec<X::Row> = blocks.into_iter().map(canon).collect();
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
            // Padding rows read back as zero blocks.
            for g in x.iter().skip(groups(rows) - 1).step_by(groups(rows)) {
                for row in (rows % ROWS..ROWS).filter(|_| rows % ROWS != 0) {
                    let b = g.row_block(row);
                    assert!(bytemuck::bytes_of(&b).iter().all(|&v| v == 0));
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
    round_trip::<BlockIq2Xxsx64>(11);
    round_trip::<BlockIq2Xsx64>(12);
    round_trip::<BlockIq2Sx64>(13);
    round_trip::<BlockIq3Sx64>(14);
    round_trip::<BlockIq3Xxsx64>(27);
    round_trip::<BlockTq2_0Px64>(31);
    // TQ1_0's planes hold its digits: a byte ggml's quantizer writes comes
    // back byte for byte, any other as the byte it writes for those digits.
    round_trip_as::<BlockTq1_0Px64>(32, |mut b| {
        let canon = |q: u8, digits: usize| {
            let v = (0..5).fold(0u32, |v, n| {
                let d = (q.wrapping_mul(3u8.pow(n as u32)) as u32 * 3) >> 8;
                3 * v + if n < digits { d } else { 0 }
            });
            (v * 256).div_ceil(243) as u8
        };
        b.qs = b.qs.map(|q| canon(q, 5));
        b.qh = b.qh.map(|q| canon(q, 4));
        b
    });
    let mut r = Rng::new(39);
    let b = BlockTq1_0::random_vec(&mut r, 64);
    let mut v = vec![0f32; 256];
    let mut w = vec![0f32; 256];
    for (row, b) in b.iter().enumerate() {
        let x: Vec<BlockTq1_0Px64> = interleave(std::slice::from_ref(b), 1, 256).unwrap();
        BlockTq1_0::dequantize_row(std::slice::from_ref(b), &mut v).unwrap();
        BlockTq1_0::dequantize_row(&[x[0].row_block(0)], &mut w).unwrap();
        assert!(
            v.iter().zip(&w).all(|(a, b)| a.to_bits() == b.to_bits()),
            "row {row}"
        );
    }
}

/// The plane identity, weight by weight.
#[test]
fn planes_hold_every_weight() {
    for v in [8u8, 25, 43] {
        for neg in [false, true] {
            let s = plane_bits(v, neg);
            let e = |b: bool| if b { 1 } else { -1 };
            let w = if neg { -(v as i32) } else { v as i32 };
            assert_eq!(18 * e(s[0]) + 35 * e(s[1]) + 33 * e(s[2]), 2 * w);
            assert_eq!(plane_weight(s), (v, neg));
        }
    }
    // IQ3_S: w = e0 + 2 e1 + 4 e2 + 8 e3; IQ3_XXS: w = e0 + 4 e1 + 8 e2 + 16 e3 + 33 e4.
    fn check<T: Planes>(values: &[u8], c: &[i32]) {
        for &v in values {
            for neg in [false, true] {
                let s = T::encode(v, neg);
                let e = |k: usize| if (s >> k) & 1 == 1 { 1 } else { -1 };
                let w = if neg { -(v as i32) } else { v as i32 };
                assert_eq!(
                    (0..c.len()).map(|k| c[k] * e(k)).sum::<i32>(),
                    w,
                    "{v} {neg}"
                );
                assert_eq!(T::decode(s), (v, neg));
            }
        }
    }
    check::<Plane4Tile>(&[1, 3, 5, 7, 9, 11, 13, 15], &[1, 2, 4, 8]);
    check::<Plane5Tile>(&[4, 12, 20, 28, 36, 44, 52, 62], &[1, 4, 8, 16, 33]);
    // Ternary: q + 1 = σ0 + 2 σ1, so sum(q y) = T0 + 2 T1 - Y.
    for q in -1i32..=2 {
        let s = TernaryTile::encode(q.unsigned_abs() as u8, q < 0);
        assert_eq!((s & 1) as i32 + 2 * (s >> 1) as i32 - 1, q);
        assert_eq!(TernaryTile::decode(s), (q.unsigned_abs() as u8, q < 0));
    }
}

/// Per row and block, the planes' integer sum (what the kernels look up)
/// against the format's integer form dotted with the activations.
fn plane_sums_are_exact<X: LutLayout + PlaneTiles>(seed: u64)
where
    X::Row: RandomBlock + GridBlock,
{
    let mut r = Rng::new(seed);
    let blocks = blocks_with_edges::<X::Row>(&mut r, 64);
    let x: Vec<X> = interleave(&blocks, 64, 256).unwrap();
    for kind in 0..3 {
        let act = random_act(&mut r, kind);
        for (row, b) in blocks.iter().enumerate() {
            let (mut codes, mut scales) = ([0i8; 256], [0i16; 16]);
            b.int_form(&mut codes, &mut scales);
            let want: i32 = (0..256)
                .map(|i| scales[i / 16] as i32 * codes[i] as i32 * act.qs[i] as i32)
                .sum();
            let got = x[0].tile(row / 8).isum(row % 8, &act);
            assert_eq!(
                got,
                want,
                "{} row {row}, activations {kind}",
                X::Row::FORMAT
            );
        }
    }
}

trait PlaneTiles {
    fn tile(&self, t: usize) -> &impl Planes;
}
macro_rules! plane_tiles {
    ($($x:ty),*) => {$(
        impl PlaneTiles for $x {
            fn tile(&self, t: usize) -> &impl Planes {
                &self.tiles[t]
            }
        }
    )*};
}
plane_tiles!(
    BlockIq2Xxsx64,
    BlockIq2Xsx64,
    BlockIq2Sx64,
    BlockIq3Sx64,
    BlockIq3Xxsx64,
    BlockTq1_0Px64,
    BlockTq2_0Px64
);

#[test]
fn plane_sums_equal_the_integer_dot() {
    plane_sums_are_exact::<BlockIq2Xxsx64>(21);
    plane_sums_are_exact::<BlockIq2Xsx64>(22);
    plane_sums_are_exact::<BlockIq2Sx64>(23);
    plane_sums_are_exact::<BlockIq3Sx64>(24);
    plane_sums_are_exact::<BlockIq3Xxsx64>(28);
    plane_sums_are_exact::<BlockTq1_0Px64>(33);
    plane_sums_are_exact::<BlockTq2_0Px64>(34);
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

/// Random blocks, some with a non-finite or extreme scale, some with every
/// code byte 0xff.
fn blocks_with_edges<R: RandomBlock + bytemuck::Pod>(r: &mut Rng, n: usize) -> Vec<R> {
    let mut v = R::random_vec(r, n);
    for (i, b) in v.iter_mut().enumerate() {
        let d = match i % 11 {
            3 => half::f16::NAN,
            5 => half::f16::INFINITY,
            7 => half::f16::MAX,
            8 => {
                let d = bytemuck::bytes_of(b)[R::SCALE_OFFSETS[0]..][..2].to_vec();
                *b = R::filled(0xff, u16::from_le_bytes([d[0], d[1]]), 0);
                continue;
            }
            _ => continue,
        };
        let at = R::SCALE_OFFSETS[0];
        bytemuck::bytes_of_mut(b)[at..at + 2].copy_from_slice(&d.to_le_bytes());
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

/// `exact_ref`: the scalar reference is `vec_dot` bit for bit (ternary);
/// `exact_simd`: the SIMD kernels are the reference bit for bit (planes).
fn check_kernels<X: LutKernels>(seed: u64, exact_ref: bool, exact_simd: bool) -> Vec<String>
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
            X::gemv_ref(&x, ng, 0..per_row, &act, &mut want);
            let mut got = vec![0f32; ROWS * ng];
            // The whole with software prefetch, the split without (aarch64).
            set_prefetch(true);
            kernel.run(&x, ng, 0..per_row, &act, &mut got).unwrap();
            set_prefetch(false);
            let mut split = vec![0f32; ROWS * ng];
            kernel
                .run(&x, ng, 0..per_row / 2, &act, &mut split)
                .unwrap();
            kernel
                .run(&x, ng, per_row / 2..per_row, &act, &mut split)
                .unwrap();
            let (mut want_rows, mut got_rows, mut split_rows) =
                (vec![0f32; rows], vec![0f32; rows], vec![0f32; rows]);
            unslot::<X>(&want, &mut want_rows);
            unslot::<X>(&got, &mut got_rows);
            unslot::<X>(&split, &mut split_rows);
            for row in 0..rows {
                let rb = &blocks[row * per_row..(row + 1) * per_row];
                let exact = X::Row::vec_dot(rb, &act).unwrap();
                let bound = 2e-5 * X::Row::dot_magnitude(rb, &act).unwrap() + 1e-30;
                // Bit for bit (any NaN for a NaN), or within the bound.
                let same =
                    |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
                assert!(
                    if exact_ref {
                        same(want_rows[row], exact)
                    } else {
                        close(want_rows[row], exact, bound)
                    },
                    "{}: reference {:e} vs vec_dot {exact:e}, row {row}",
                    X::Row::FORMAT,
                    want_rows[row]
                );
                if exact_simd {
                    for (what, g) in [("whole", got_rows[row]), ("split", split_rows[row])] {
                        assert!(
                            same(g, want_rows[row]),
                            "{} ({}), {what}, k {k}, row {row}: {g:e}, reference {:e}",
                            kernel.name(),
                            kernel.isa(),
                            want_rows[row]
                        );
                    }
                }
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
    let mut ran = check_kernels::<BlockTq1_0x64>(5, true, false);
    ran.extend(check_kernels::<BlockTq2_0x64>(6, true, false));
    ran.extend(check_kernels::<BlockIq2Xxsx64>(15, false, true));
    ran.extend(check_kernels::<BlockIq2Xsx64>(16, false, true));
    ran.extend(check_kernels::<BlockIq2Sx64>(17, false, true));
    ran.extend(check_kernels::<BlockIq3Sx64>(26, false, true));
    ran.extend(check_kernels::<BlockIq3Xxsx64>(29, false, true));
    ran.extend(check_kernels::<BlockTq1_0Px64>(35, false, true));
    ran.extend(check_kernels::<BlockTq2_0Px64>(36, false, true));
    eprintln!("ran: {ran:?}");
    assert!(ran.len() >= 9, "the scalar references always run");
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
    check_matmul::<BlockIq2Xxsx64>(18);
    check_matmul::<BlockIq2Xsx64>(19);
    check_matmul::<BlockIq2Sx64>(20);
    check_matmul::<BlockIq3Sx64>(25);
    check_matmul::<BlockIq3Xxsx64>(30);
    check_matmul::<BlockTq1_0Px64>(37);
    check_matmul::<BlockTq2_0Px64>(38);
}
