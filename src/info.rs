//! `llmkernel info`: this machine, the vendored llama.cpp, and which kernel set
//! each format runs on.

use crate::ggml;
use llmkernel_kernels::cpu::CpuFeatures;
use llmkernel_kernels::table::{self, Isa};
use llmkernel_kernels::Format;
use std::fmt::Write;

/// The vendored llama.cpp commit (see vendor/llama.cpp/VENDORED.md).
pub const UPSTREAM_COMMIT: &str = env!("LLMKERNEL_UPSTREAM_COMMIT");
/// The compiler flags ggml-cpu was built with (`LLMKERNEL_GGML_CPU`).
pub const GGML_CPU_FLAGS: &str = env!("LLMKERNEL_GGML_CPU_FLAGS");

/// The compiler flags ggml-cpu was built with, for people: the flags, or the baseline.
pub fn ggml_cpu_flags() -> &'static str {
    if GGML_CPU_FLAGS.is_empty() {
        "(the target's baseline ISA)"
    } else {
        GGML_CPU_FLAGS
    }
}

/// The ISA tier the linked ggml-cpu was compiled for, in llmkernel's names
/// (`avx512`, `avx2+vnni`, `avx2`, `i8mm`, `dotprod`, `neon`, else `scalar`),
/// read from ggml's own `ggml_cpu_has_*`, which report its compile-time
/// features (`LLMKERNEL_GGML_CPU` at build time sets them).
pub fn ggml_tier() -> &'static str {
    crate::ggml::init();
    // SAFETY: ggml-cpu's feature queries, no arguments, no state.
    unsafe {
        use crate::ffi::*;
        if ggml_cpu_has_avx512() != 0 {
            "avx512"
        } else if ggml_cpu_has_avx2() != 0 && ggml_cpu_has_avx_vnni() != 0 {
            "avx2+vnni"
        } else if ggml_cpu_has_avx2() != 0 {
            "avx2"
        } else if ggml_cpu_has_matmul_int8() != 0 {
            "i8mm"
        } else if ggml_cpu_has_dotprod() != 0 {
            "dotprod"
        } else if ggml_cpu_has_neon() != 0 {
            "neon"
        } else {
            "scalar"
        }
    }
}

/// The CPU's marketing name, from /proc/cpuinfo where there is one.
pub fn cpu_name() -> String {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |key: &str| {
        text.lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == key))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    field("model name")
        .or_else(|| field("Model"))
        .or_else(|| field("CPU part").map(|p| format!("ARM CPU part {p}")))
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// The llmkernel commit the binary was built from, with `-dirty` when it was
/// built with local changes.
pub fn llmkernel_commit() -> String {
    llmkernel_backend::BUILD_COMMIT.to_string()
}

/// The text `llmkernel info` prints.
pub fn report() -> String {
    let cpu = CpuFeatures::get();
    let mut s = String::new();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    writeln!(
        s,
        "llmkernel {} (commit {})",
        env!("CARGO_PKG_VERSION"),
        llmkernel_commit()
    )
    .unwrap();
    writeln!(
        s,
        "cpu:       {} ({}, {threads} hardware threads)",
        cpu_name(),
        std::env::consts::ARCH
    )
    .unwrap();
    let feats: Vec<String> = cpu
        .list()
        .iter()
        .map(|(name, on)| format!("{name} {}", if *on { "yes" } else { "no" }))
        .collect();
    writeln!(s, "features:  {}", feats.join(", ")).unwrap();
    writeln!(
        s,
        "llama.cpp: vendored ggml-org/llama.cpp@{UPSTREAM_COMMIT}, ggml {} (commit {})",
        ggml::version(),
        ggml::commit()
    )
    .unwrap();
    let flags = ggml_cpu_flags();
    writeln!(
        s,
        "ggml-cpu:  built with {flags} (tier {}), OpenMP, llamafile sgemm, repack buffer types",
        ggml_tier()
    )
    .unwrap();
    let bindings = match (crate::ffi::BINDINGS_SOURCE, crate::ffi::BINDINGS_MATCH_COMMITTED) {
        ("generated", "true") => "generated from the vendored headers, identical to backend/src/ffi/bindings.rs",
        ("generated", _) => "generated from the vendored headers, DIFFERENT from backend/src/ffi/bindings.rs (run scripts/update-bindings.sh)",
        _ => "committed copy backend/src/ffi/bindings.rs (libclang not found at build time to check it)",
    };
    writeln!(s, "bindings:  {bindings}").unwrap();
    writeln!(
        s,
        "prefetch:  {} (software prefetch in the GEMVs)",
        llmkernel_kernels::cpu::prefetch().why
    )
    .unwrap();
    match Isa::ceiling() {
        Ok(ceiling) => writeln!(
            s,
            "kernels (ISA ceiling {ceiling}{}):",
            if std::env::var_os("LLMKERNEL_ISA").is_some() {
                ", from LLMKERNEL_ISA"
            } else {
                ""
            }
        )
        .unwrap(),
        Err(e) => writeln!(s, "kernels: {e}").unwrap(),
    }
    for f in Format::WEIGHTS {
        writeln!(
            s,
            "  {:<5} ({:.4} bits/weight, {} values per block)",
            f.name(),
            f.bits_per_weight(),
            f.block_len()
        )
        .unwrap();
        match table::pieces(f) {
            Ok(pieces) => {
                for (piece, name, isa) in pieces {
                    writeln!(s, "        {piece:<21} {isa:<8} {name}").unwrap();
                }
            }
            Err(e) => writeln!(s, "        error: {e}").unwrap(),
        }
    }
    s
}
