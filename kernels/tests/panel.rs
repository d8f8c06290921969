//! The panel GEMM (`llmkernel_kernels::panel`): its two layout transforms and
//! its tile kernels, each against a reference.
//!
//! - Unpacking weights: every value the unpacked form gives (`scale * code +
//!   min_scale * min`) equals the format's scalar dequantization bit for bit
//!   (every product involved is exact in f32), on random and extreme blocks;
//!   rows past the filled ones are zero.
//! - Interleaving activations: every code, scale and pair of code sums reads
//!   back exactly; padding columns are zero.
//! - Tile kernels: every SIMD tile this CPU runs equals the scalar tile bit
//!   for bit (same integer sums, same fused multiply-adds in the same order).
//! - The whole GEMM against the scalar dot products is in `harness.rs`, which
//!   runs batches of 16, 33 and 512 (the panel path) and checks that it ran.

use llmkernel_kernels::cpu::CpuFeatures;
use llmkernel_kernels::formats::*;
use llmkernel_kernels::matmul::quantize_activations;
use llmkernel_kernels::panel::{
    self, pack_columns, pack_columns_by, ColLayout, PanelAct, Shape, Tile, Unpacked, COLS, ROWS,
};
use llmkernel_kernels::table::{panel_kernels, Config, Isa, Kernels};
use llmkernel_kernels::testdata::{RandomBlock, Rng};
use llmkernel_kernels::{each_format, Format};

fn same(a: f32, b: f32) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

/// Blocks with every code at its extreme: all bytes 0x00, all 0xFF, and the
/// given random block's scale bytes kept (so scales stay finite and varied).
fn extremes<B: QuantBlock + RandomBlock>(r: &mut Rng) -> Vec<B> {
    let mut v = vec![];
    for fill in [0x00u8, 0xFF, 0x88, 0x11] {
        let mut b = B::random(r);
        let bytes: &mut [u8] = bytemuck::bytes_of_mut(&mut b);
        // Keep the bytes of the f16 scales; fill the rest.
        let keep = |i: usize| B::SCALE_OFFSETS.iter().any(|&o| (o..o + 2).contains(&i));
        for (i, x) in bytes.iter_mut().enumerate() {
            if !keep(i) {
                *x = fill;
            }
        }
        v.push(b);
    }
    v
}

fn check_unpack<B: Kernels + RandomBlock>(seed: u64) {
    let mut r = Rng::new(seed);
    let shape = Shape::of::<B>();
    let per_row = 3;
    let k = per_row * shape.block;
    for rows in [1usize, 4, 7] {
        let mut blocks = B::random_vec(&mut r, rows * per_row);
        // Extreme blocks first (the 2:4 formats' random blocks are valid 2:4 already).
        if !matches!(B::FORMAT, Format::Q4_0S | Format::Q8_0S) {
            for (b, e) in blocks.iter_mut().zip(extremes::<B>(&mut r)) {
                *b = e;
            }
        }
        // Every fill this CPU runs (scalar, AVX2, AVX-512 builds of the unpacking).
        for isa in Isa::ALL
            .into_iter()
            .filter(|i| i.supported(&CpuFeatures::get()))
        {
            let mut u = Unpacked::new(8, k, shape);
            // Dirty it first: fill must reset rows it does not fill.
            u.fill(&B::random_vec(&mut r, 8 * per_row), 8, isa);
            u.fill(&blocks, rows, isa);
            let factored = (0..8).all(|row| u.factored(row, 0).is_some());
            assert_eq!(
                factored,
                shape.factored && isa == Isa::Avx2,
                "{} ({isa} fill): factored form filled",
                B::FORMAT
            );
            let mut want = vec![0f32; k];
            for row in 0..8 {
                if row < rows {
                    B::dequantize_row(&blocks[row * per_row..][..per_row], &mut want).unwrap();
                } else {
                    want.fill(0.0);
                }
                for (i, &w) in want.iter().enumerate() {
                    // The factored form (AVX2 fills of Q3_K, Q2_K and the
                    // i-quants) multiplies back to the code where the codes
                    // carry the scales, and to the dequantized value where
                    // there are no mins.
                    if let Some((f, s, d)) = u.factored(row, i) {
                        assert!(
                            f.unsigned_abs() <= shape.max_factor,
                            "{}: factor {f}",
                            B::FORMAT
                        );
                        if shape.sub == shape.block {
                            assert_eq!(
                                f as i32 * s as i32,
                                u.code(row, i) as i32,
                                "{} ({isa} fill): row {row}, value {i}: factor {f} x scale {s}",
                                B::FORMAT
                            );
                        }
                        let v = (d * s as f32) * f as f32;
                        assert!(
                            shape.min_sub > 0 || same(v, w),
                            "{} ({isa} fill): row {row}, value {i}: factored {v:e}, dequantized {w:e}",
                            B::FORMAT
                        );
                    }
                    let got = u.value(row, i);
                    assert!(
                    same(got, w),
                    "{} ({isa} fill): {rows} rows, row {row}, value {i}: unpacked {got:e}, dequantized {w:e}",
                    B::FORMAT
                );
                }
            }
        }
    }
}

#[test]
fn unpacked_weights_equal_the_dequantization() {
    let checked = each_format!(Format::WITH_KERNELS, |B, f, i| -> () {
        check_unpack::<B>(i as u64 + 1)
    });
    assert_eq!(checked.len(), Format::WITH_KERNELS.len());
}

fn check_columns<B: Kernels + RandomBlock>(seed: u64) {
    let mut r = Rng::new(seed);
    let shape = Shape::of::<B>();
    let k = 2 * shape.block;
    let per_col = k / <B::Act as QuantBlock>::LEN;
    for n in [1usize, 31, 45] {
        let x = r.activations(n * k);
        let acts = quantize_activations::<B>(&x, n, k, 1).unwrap();
        let layouts = [4, 8]
            .into_iter()
            .flat_map(|group| [true, false].map(|biased| ColLayout { group, biased }));
        for (c0, layout) in (0..n)
            .step_by(COLS)
            .flat_map(|c0| layouts.clone().map(move |l| (c0, l)))
        {
            let cb = pack_columns_by(&acts, n, k, c0, shape, layout);
            for c in 0..COLS {
                let col = (c0 + c < n).then(|| &acts[(c0 + c) * per_col..][..per_col]);
                for i in 0..k {
                    let want = col.map_or(0, |a| {
                        a[i / <B::Act as QuantBlock>::LEN].codes()[i % <B::Act as QuantBlock>::LEN]
                    });
                    assert_eq!(
                        cb.code(c, i),
                        want,
                        "{}: n {n}, {layout:?}, column {}, value {i}",
                        B::FORMAT,
                        c0 + c
                    );
                }
                for b in 0..per_col {
                    let want = col.map_or(0.0, |a| a[b].scale());
                    assert!(
                        same(cb.scale(c, b), want),
                        "{}: column {}, block {b}",
                        B::FORMAT,
                        c0 + c
                    );
                }
                if shape.min_sub > 0 {
                    for p in 0..k / shape.min_sub / 2 {
                        let sum = |s: usize| -> i16 {
                            col.map_or(0, |a| {
                                (s * shape.min_sub..(s + 1) * shape.min_sub)
                                    .map(|i| {
                                        a[i / <B::Act as QuantBlock>::LEN].codes()
                                            [i % <B::Act as QuantBlock>::LEN]
                                            as i16
                                    })
                                    .sum()
                            })
                        };
                        assert_eq!(
                            cb.sums(c, p),
                            (sum(2 * p), sum(2 * p + 1)),
                            "{}: column {}",
                            B::FORMAT,
                            c0 + c
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn interleaved_columns_read_back_exactly() {
    check_columns::<BlockQ4K>(11);
    check_columns::<BlockQ3K>(12);
    check_columns::<BlockQ2K>(13);
    check_columns::<BlockQ4_0>(14);
    check_columns::<BlockQ8_0>(15);
}

/// Every SIMD tile kernel of this CPU against the scalar tile, for format `B`.
fn check_tiles<B: Kernels + RandomBlock>(
    seed: u64,
    ran: &mut Vec<String>,
    skipped: &mut Vec<String>,
) {
    let cpu = CpuFeatures::get();
    let mut r = Rng::new(seed);
    let shape = Shape::of::<B>();
    for kernel in panel_kernels()
        .into_iter()
        .filter(|p| p.isa() != Isa::Scalar)
    {
        if !kernel.isa().supported(&cpu) {
            skipped.push(format!(
                "{} ({}): not on this CPU",
                kernel.name(),
                kernel.isa()
            ));
            continue;
        }
        // (blocks along K, columns, rows, extreme weights and activations);
        // 19 and 40 blocks run past the AVX2 tile's chunks of K.
        let cases = [
            (1usize, 32usize, 4usize, false),
            (3, 7, 3, false),
            (5, 32, 2, false),
            (2, 45, 4, false),
            (19, 32, 8, false),
            (40, 9, 8, true),
            (3, 32, 8, true),
        ];
        for (nblk, n, rows, extreme) in cases {
            let k = nblk * shape.block;
            let mut w = B::random_vec(&mut r, rows * nblk);
            let x = if extreme {
                // Codes at their extremes in every block, against activations
                // that quantize to +127 and -127 (the largest products, where
                // the i16 sums of an AVX2 tile would overflow first): Q8_0
                // gives +127 for +1; Q8_K gives -127 to the first largest
                // value of a block, so +127 to the rest where that one is +1.
                let e = extremes::<B>(&mut r);
                if !matches!(B::FORMAT, Format::Q4_0S | Format::Q8_0S) {
                    for (i, b) in w.iter_mut().enumerate() {
                        *b = e[(i / nblk) % e.len()];
                    }
                }
                (0..n * k)
                    .map(|i| match (i / k) % 3 {
                        0 => 1.0,
                        1 => -1.0,
                        _ if i % 256 == 0 => 1.0,
                        _ => -1.0,
                    })
                    .collect()
            } else {
                r.activations(n * k)
            };
            let mut u = Unpacked::new(ROWS, k, shape);
            u.fill(&w, rows, kernel.isa());
            let acts = quantize_activations::<B>(&x, n, k, 1).unwrap();
            for c0 in (0..n).step_by(COLS) {
                // The columns as this kernel reads them (the scalar tile reads any layout).
                let cb = pack_columns_by(&acts, n, k, c0, shape, kernel.layout());
                let tile = Tile::new(&u, 0, &cb);
                let (mut want, mut got) = ([0f32; ROWS * COLS], [f32::NAN; ROWS * COLS]);
                // SAFETY: the scalar tile has no requirement.
                unsafe { panel::gemm_i8_q8x32_8x32(&tile, &mut want) };
                kernel.run(&tile, &mut got).unwrap();
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                        "{} ({}), {}: k {k}, n {n}, extreme {extreme}, output {i}: {g:e}, scalar tile {w:e}",
                        kernel.name(),
                        kernel.isa(),
                        B::FORMAT
                    );
                }
            }
        }
        ran.push(format!(
            "{} ({}) on {}",
            kernel.name(),
            kernel.isa(),
            B::FORMAT
        ));
    }
}

#[test]
fn tile_kernels_equal_the_scalar_tile() {
    let (mut ran, mut skipped) = (vec![], vec![]);
    for (r, s) in each_format!(Format::WITH_KERNELS, |B,
                                                      f,
                                                      i|
     -> (Vec<String>, Vec<String>) {
        let (mut ran, mut skipped) = (vec![], vec![]);
        check_tiles::<B>(i as u64 + 21, &mut ran, &mut skipped);
        (ran, skipped)
    }) {
        ran.extend(r);
        skipped.extend(s);
    }
    for s in &skipped {
        eprintln!("skipped: {s}");
    }
    for s in &ran {
        eprintln!("ran: {s}");
    }
    // Every SIMD tile this CPU runs must have run: the i8mm tile wherever the CPU
    // (qemu's `-cpu max` included) has i8mm.
    for k in panel_kernels() {
        if k.isa() != Isa::Scalar && k.isa().supported(&CpuFeatures::get()) {
            assert!(
                ran.iter().any(|r| r.starts_with(&format!("{} ", k.name()))),
                "{} runs here but was not run",
                k.name()
            );
        }
    }
    // Where the best kernels have a panel tile, it must have run.
    let best_has_panel = Config::<BlockQ4K>::at(Isa::best()).panel().is_some();
    assert!(
        !best_has_panel || !ran.is_empty(),
        "this CPU's kernels have a panel tile, but none ran"
    );
    assert_eq!(
        ran.len() + skipped.len(),
        Format::WITH_KERNELS.len() * (panel_kernels().len() - 1)
    );
}

/// Unpacking interleaved 2:4 groups (`fill_x4`, AVX-512 VBMI2 where the CPU
/// has it) gives what unpacking the same rows' 2:4 blocks gives.
fn check_fill_x4<X: llmkernel_kernels::formats::sparse_x4::X4Block>(seed: u64)
where
    X::Row: Kernels + RandomBlock,
{
    use llmkernel_kernels::formats::sparse_x4::interleave;
    let mut r = Rng::new(seed);
    let shape = Shape::of::<X::Row>();
    for (rows, per_row) in [(1usize, 1usize), (4, 3), (7, 2), (16, 5)] {
        let k = 32 * per_row;
        let blocks = X::Row::random_vec(&mut r, rows * per_row);
        let x4: Vec<X> = interleave(&blocks, rows, k).unwrap();
        let (mut a, mut b) = (Unpacked::new(16, k, shape), Unpacked::new(16, k, shape));
        a.fill(&blocks, rows, Isa::Scalar);
        // Every fill this CPU runs (the AVX-512 one unpacks groups with VBMI2).
        for isa in Isa::ALL
            .into_iter()
            .filter(|i| i.supported(&CpuFeatures::get()))
        {
            b.fill(&X::Row::random_vec(&mut r, 16 * per_row), 16, isa);
            b.fill_x4(&x4, rows, isa);
            for row in 0..16 {
                for i in 0..k {
                    assert!(
                        same(a.value(row, i), b.value(row, i)),
                        "{} ({isa} fill): {rows} rows, row {row}, value {i}",
                        X::FORMAT
                    );
                }
            }
        }
        // The corrections too: the tiles must agree.
        let x = r.activations(COLS * k);
        let acts = quantize_activations::<X::Row>(&x, COLS, k, 1).unwrap();
        let cb = pack_columns(&acts, COLS, k, 0, shape);
        for r0 in (0..16).step_by(ROWS) {
            let (mut oa, mut ob) = ([0f32; ROWS * COLS], [0f32; ROWS * COLS]);
            // SAFETY: the scalar tile has no requirement.
            unsafe {
                panel::gemm_i8_q8x32_8x32(&Tile::new(&a, r0, &cb), &mut oa);
                panel::gemm_i8_q8x32_8x32(&Tile::new(&b, r0, &cb), &mut ob);
            }
            assert_eq!(
                oa.map(f32::to_bits),
                ob.map(f32::to_bits),
                "{}: rows {r0}..",
                X::FORMAT
            );
        }
    }
}

#[test]
fn interleaved_groups_unpack_as_their_rows() {
    check_fill_x4::<BlockQ8_0Sx4>(31);
    check_fill_x4::<BlockQ4_0Sx4>(32);
    check_fill_x4::<BlockQ8_0x4>(33);
    check_fill_x4::<BlockQ4_0x4>(34);
    check_fill_x4::<BlockIq4Nlx4>(35);
    check_fill_x4::<BlockQ5_0x4>(36);
}

#[test]
fn a_tile_kernel_refuses_columns_in_another_layout() {
    let mut r = Rng::new(77);
    let shape = Shape::of::<BlockQ4K>();
    let k = shape.block;
    let mut u = Unpacked::new(ROWS, k, shape);
    u.fill(&BlockQ4K::random_vec(&mut r, ROWS), ROWS, Isa::Scalar);
    let acts = quantize_activations::<BlockQ4K>(&r.activations(COLS * k), COLS, k, 1).unwrap();
    let mut out = [0f32; ROWS * COLS];
    let mut checked = 0;
    for kernel in panel_kernels()
        .into_iter()
        .filter(|p| p.isa().supported(&CpuFeatures::get()))
    {
        let own = kernel.layout();
        let others = [
            ColLayout {
                group: 12 - own.group,
                ..own
            },
            ColLayout {
                biased: !own.biased,
                ..own
            },
        ];
        for other in others {
            let cb = pack_columns_by(&acts, COLS, k, 0, shape, other);
            let err = kernel.run(&Tile::new(&u, 0, &cb), &mut out).unwrap_err();
            assert!(
                err.to_string().contains("reads activation columns"),
                "{}: {err}",
                kernel.name()
            );
        }
        let cb = pack_columns_by(&acts, COLS, k, 0, shape, own);
        kernel.run(&Tile::new(&u, 0, &cb), &mut out).unwrap();
        checked += 1;
    }
    assert!(checked >= 1);
}
