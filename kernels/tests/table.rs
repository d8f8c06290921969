//! The dispatch table: a capped ISA selects no piece above the cap, and
//! kernel names carry their tile and ISA.

use llmkernel_kernels::cpu::CpuFeatures;
use llmkernel_kernels::formats::*;
use llmkernel_kernels::table::{panel_kernels, Config, Isa, Kernels};
use llmkernel_kernels::{each_format, Format};

/// Every piece of `B`'s configuration under `cap` is at or below it and
/// runs on this CPU; returns the pieces, for the report.
fn check_cap<B: Kernels>(cap: Isa) -> Vec<String> {
    let c = Config::<B>::at(cap);
    assert_eq!(c.ceiling(), cap);
    let pieces = c.pieces();
    for &(piece, name, isa) in &pieces {
        assert!(
            isa <= cap && (isa == Isa::Scalar || (isa >= Isa::Neon) == (cap >= Isa::Neon)),
            "{} under {cap}: {piece} {name} is {isa}",
            B::FORMAT
        );
        assert!(
            isa.supported(&CpuFeatures::get()),
            "{piece} {name}: {isa} not on this CPU"
        );
        assert!(
            name.ends_with(&format!("_{isa}")),
            "{piece} {name} does not name its ISA {isa}"
        );
    }
    pieces
        .iter()
        .map(|(p, n, i)| format!("{} {p}: {n} ({i})", B::FORMAT))
        .collect()
}

fn check_all(cap: Isa) -> Vec<String> {
    let v = each_format!(Format::WITH_KERNELS, cap, |B,
                                                     f,
                                                     i,
                                                     cap: Isa|
     -> Vec<String> {
        check_cap::<B>(cap)
    });
    assert_eq!(v.len(), Format::WITH_KERNELS.len());
    v.concat()
}

#[test]
fn scalar_cap_selects_only_scalar_pieces() {
    let pieces = check_all(Isa::Scalar);
    // The four-row formats list their interleaved GEMV too.
    assert!(
        pieces
            .iter()
            .any(|p| p.contains("four-row gemv: gemv_q4_0x4_q8_0_4x1_scalar")),
        "{pieces:#?}"
    );
    assert!(
        pieces.iter().all(|p| p.ends_with("(scalar)")),
        "{pieces:#?}"
    );
    // No panel tile under the scalar cap (the scalar row kernel is as fast).
    assert!(Config::<BlockQ4K>::at(Isa::Scalar).panel().is_none());
}

#[test]
fn avx2_cap_selects_nothing_above_avx2() {
    let pieces = check_all(Isa::Avx2);
    eprintln!("{}", pieces.join("\n"));
    if Isa::Avx2.supported(&CpuFeatures::get()) {
        // On an AVX2 CPU the cap picks the AVX2 pieces, not the scalar ones.
        let c = Config::<BlockQ4K>::at(Isa::Avx2);
        for (piece, name, isa) in c.pieces() {
            assert_eq!(isa, Isa::Avx2, "{piece} {name}");
        }
        assert_eq!(c.panel().map(|p| p.isa()), Some(Isa::Avx2));
    }
}

#[test]
fn neon_cap_selects_nothing_above_neon() {
    let pieces = check_all(Isa::Neon);
    eprintln!("{}", pieces.join("\n"));
    if Isa::Neon.supported(&CpuFeatures::get()) {
        let c = Config::<BlockQ4K>::at(Isa::Neon);
        assert_eq!(c.row().isa(), Isa::Neon);
        assert_eq!(c.dequant().isa(), Isa::Neon);
    }
}

#[test]
fn every_cap_is_honoured() {
    for cap in Isa::ALL {
        check_all(cap);
    }
}

/// Names follow `op_weights_acts_RxC_isa` with the kernel's own tile.
#[test]
fn row_kernel_names_carry_tile_and_isa() {
    let n: usize = each_format!(Format::WITH_KERNELS, |B, f, i| -> usize {
        let kernels = B::row_kernels();
        for k in &kernels {
            let tail = format!("_{}x{}_{}", k.rows(), k.cols(), k.isa());
            assert!(k.name().ends_with(&tail), "{} should end {tail}", k.name());
        }
        kernels.len()
    })
    .iter()
    .sum();
    assert!(n >= Format::WITH_KERNELS.len());
    for p in panel_kernels() {
        assert!(p.name().ends_with(&format!("_{}", p.isa())), "{}", p.name());
    }
}

/// Under every ceiling, every format's panel tile is the best one the table
/// has at or below it, whatever ISA the format's row kernel is (a format whose
/// row kernel stops at dotprod still gets the i8mm tile).
#[test]
fn every_format_gets_the_ceilings_best_panel_tile() {
    for cap in Isa::ALL {
        let best = panel_kernels()
            .into_iter()
            .filter(|p| p.isa() != Isa::Scalar && p.isa().admitted_under(cap))
            .map(|p| p.isa())
            .max();
        let tiles = each_format!(
            Format::WITH_KERNELS,
            cap,
            |B, f, i, cap: Isa| -> (Format, Option<Isa>) {
                (f, Config::<B>::at(cap).panel().map(|p| p.isa()))
            }
        );
        for (f, isa) in tiles {
            assert_eq!(isa, best, "{f} under {cap}: panel tile");
        }
    }
}
