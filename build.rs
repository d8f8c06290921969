//! Builds the vendored llama.cpp (ggml-base, ggml-cpu, ggml, llama) with `cc`,
//! the way upstream's CMake builds it by default, and makes the Rust bindings.
//!
//! Cross-compile safe: everything about the target comes from `CARGO_CFG_*`,
//! `TARGET` and `HOST`, never from `cfg!()` (which describes the build host).
//!
//! Environment:
//! - `LLMKERNEL_GGML_CPU`: `native` (default when host == target: `-march=native`,
//!   as upstream's GGML_NATIVE), `portable` (the target's baseline ISA; default
//!   when cross-compiling), a tier of llmkernel's (`avx2`, `avx2+vnni`, `avx512`:
//!   this CPU's `-march=native` with the ISA extensions above the tier turned
//!   off, so the tuning stays native; `neon`, `dotprod`, `i8mm`: the Armv8
//!   architecture level that has them), or literal compiler flags, e.g.
//!   `-mcpu=cortex-a76`. `llmkernel bench --isa <tier>` compares against a
//!   ggml-cpu built at the same tier this way.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

const LLAMA: &str = "vendor/llama.cpp";
/// From vendor/llama.cpp/ggml/CMakeLists.txt (GGML_VERSION_*) and VENDORED.md.
const GGML_VERSION: &str = "0.26.0";
/// From vendor/llama.cpp/CMakeLists.txt (LLAMA_VERSION_*; LLAMA_BUILD_IS_DEV on).
const LLAMA_VERSION: &str = "0.6.0-dev";
const UPSTREAM_COMMIT: &str = "b11434";

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap();
    let cross = env::var("TARGET").unwrap() != env::var("HOST").unwrap();

    for dir in ["ggml/include", "ggml/src", "include", "src"] {
        println!("cargo:rerun-if-changed={LLAMA}/{dir}");
    }
    println!("cargo:rerun-if-changed=backend/src/ffi/wrapper.h");
    println!("cargo:rerun-if-changed=backend/src/ffi/bindings.rs");
    println!("cargo:rerun-if-env-changed=LLMKERNEL_GGML_CPU");
    println!("cargo:rustc-env=LLMKERNEL_UPSTREAM_COMMIT={UPSTREAM_COMMIT}");
    println!("cargo:rustc-env=LLMKERNEL_GGML_VERSION={GGML_VERSION}");

    let gen = out.join("generated-include");
    fs::create_dir_all(&gen).unwrap();
    // cmake's configure_file() outputs, which a plain compiler build must supply.
    write_if_changed(
        &gen.join("ggml-version.h"),
        &format!("#pragma once\n#define GGML_VERSION \"{GGML_VERSION}\"\n#define GGML_COMMIT \"{UPSTREAM_COMMIT}\"\n"),
    );
    write_if_changed(
        &gen.join("llama-version.h"),
        &format!("#pragma once\n#define LLAMA_VERSION \"{LLAMA_VERSION}\"\n#define LLAMA_COMMIT \"{UPSTREAM_COMMIT}\"\n"),
    );

    let cpu_flags = ggml_cpu_flags(&arch, cross);
    println!(
        "cargo:rustc-env=LLMKERNEL_GGML_CPU_FLAGS={}",
        cpu_flags.join(" ")
    );

    let ggml_src = format!("{LLAMA}/ggml/src");
    let mut objects = Vec::new();

    // ggml-base: no ISA flags upstream either, so its dequantize_row_* are
    // plain mul/sub (no FMA contraction) and our references can match them bit for bit.
    objects.extend(compile(
        &base(&gen).flag("-std=gnu11"),
        &files(&ggml_src, &["ggml.c", "ggml-alloc.c", "ggml-quants.c"]),
    ));
    objects.extend(compile(
        base(&gen).cpp(true).flag("-std=gnu++17"),
        &files(
            &ggml_src,
            &[
                "ggml.cpp",
                "ggml-backend.cpp",
                "ggml-backend-meta.cpp",
                "ggml-opt.cpp",
                "ggml-threading.cpp",
                "gguf.cpp",
            ],
        ),
    ));
    // ggml: the backend registry, with the CPU backend compiled in (GGML_USE_CPU).
    objects.extend(compile(
        base(&gen)
            .cpp(true)
            .flag("-std=gnu++17")
            .define("GGML_USE_CPU", None),
        &files(&ggml_src, &["ggml-backend-reg.cpp", "ggml-backend-dl.cpp"]),
    ));

    // ggml-cpu, as upstream's default: native ISA, OpenMP, llamafile sgemm, repack buffer types.
    let cpu = |b: &mut cc::Build| {
        b.include(format!("{ggml_src}/ggml-cpu"))
            .define("GGML_USE_OPENMP", None)
            .define("GGML_USE_LLAMAFILE", None)
            .define("GGML_USE_CPU_REPACK", None)
            .flag("-fopenmp");
        for f in &cpu_flags {
            b.flag(f);
        }
    };
    let cpu_dir = format!("{ggml_src}/ggml-cpu");
    let arch_dir = match arch.as_str() {
        "x86_64" | "x86" => "x86",
        "aarch64" | "arm" => "arm",
        other => panic!("llmkernel builds the vendored ggml-cpu for x86 and arm only, not {other}"),
    };
    let mut c = base(&gen);
    cpu(c.flag("-std=gnu11"));
    objects.extend(compile(
        &c,
        &files(
            &cpu_dir,
            &[
                "ggml-cpu.c",
                "quants.c",
                &format!("arch/{arch_dir}/quants.c"),
            ],
        ),
    ));
    let mut cxx = base(&gen);
    cpu(cxx.cpp(true).flag("-std=gnu++17"));
    objects.extend(compile(
        &cxx,
        &files(
            &cpu_dir,
            &[
                "ggml-cpu.cpp",
                "repack.cpp",
                "hbm.cpp",
                "traits.cpp",
                "amx/amx.cpp",
                "amx/mmq.cpp",
                "tiled/tiled.cpp",
                "tiled/tiled-kernel.cpp",
                "binary-ops.cpp",
                "unary-ops.cpp",
                "vec.cpp",
                "ops.cpp",
                "llamafile/sgemm.cpp",
                &format!("arch/{arch_dir}/repack.cpp"),
            ],
        ),
    ));

    // llama; the per-model graph builders in unity batches of 16, as upstream does.
    let mut llama = base(&gen);
    llama
        .cpp(true)
        .flag("-std=gnu++17")
        .include(format!("{LLAMA}/src"))
        .include(format!("{LLAMA}/include"));
    let mut llama_files = sorted_sources(Path::new(&format!("{LLAMA}/src")));
    llama_files.extend(unity_batches(
        &sorted_sources(Path::new(&format!("{LLAMA}/src/models"))),
        16,
        &out,
    ));
    objects.extend(compile(&llama, &llama_files));

    let mut archive = cc::Build::new();
    archive.cpp(true).cargo_warnings(false);
    for o in &objects {
        archive.object(o);
    }
    // One archive: ggml-base, ggml-cpu, ggml and llama reference each other in
    // both directions, and within one archive the linker resolves that by itself.
    archive.compile("llmkernel_llama_cpp");
    for lib in ["gomp", "pthread", "dl", "m"] {
        println!("cargo:rustc-link-lib={lib}");
    }
    // Executables export ggml's functions, so a libllmkernel.so loaded into them
    // (the plugin tests, `llmkernel --plugin`) finds its host as it would in llama.cpp.
    println!("cargo:rustc-link-arg=-Wl,--export-dynamic");

    bindings(&out);
}

/// Flags shared by every vendored translation unit (upstream's Release build on Linux).
fn base(gen: &Path) -> cc::Build {
    let mut b = cc::Build::new();
    b.include(gen)
        .include(format!("{LLAMA}/ggml/include"))
        .include(format!("{LLAMA}/ggml/src"))
        .define("NDEBUG", None)
        .define("_GNU_SOURCE", None)
        .define("_XOPEN_SOURCE", "600")
        .define("GGML_SCHED_MAX_COPIES", "4")
        .opt_level(3)
        .debug(false)
        .warnings(false)
        .extra_warnings(false)
        .cargo_warnings(false)
        .flag_if_supported("-w")
        .flag("-pthread");
    b
}

/// Appended to every `-march=native` build of ggml-cpu: no AMX. The vendored
/// AMX matmul (`ggml-cpu/amx/mmq.cpp`) builds its tile configuration on the
/// stack, GCC 12 drops those stores as dead, and the first tile instruction
/// then faults (SIGILL) on every AMX CPU (upstream's open fix:
/// ggml-org/llama.cpp#26954). llmkernel's tiers have no AMX either, so ggml
/// built without it is the same-tier comparison.
const NO_AMX: [&str; 3] = ["-mno-amx-tile", "-mno-amx-int8", "-mno-amx-bf16"];

fn ggml_cpu_flags(arch: &str, cross: bool) -> Vec<String> {
    let mode = env::var("LLMKERNEL_GGML_CPU")
        .unwrap_or_else(|_| if cross { "portable" } else { "native" }.into());
    let mut flags = native_flags(&mode, arch);
    if arch == "x86_64" && flags.iter().any(|f| f == "-march=native") {
        flags.extend(NO_AMX.map(String::from));
    }
    flags
}

fn native_flags(mode: &str, arch: &str) -> Vec<String> {
    match (mode, arch) {
        ("native", "aarch64") => vec!["-mcpu=native".into()],
        ("native", _) => vec!["-march=native".into()],
        ("portable", _) => vec![],
        ("avx512", "x86_64") => vec!["-march=native".into()],
        ("avx2+vnni", "x86_64") => ["-march=native", "-mno-avx512f", "-mavxvnni"]
            .map(String::from)
            .to_vec(),
        ("avx2", "x86_64") => ["-march=native", "-mno-avx512f", "-mno-avxvnni"]
            .map(String::from)
            .to_vec(),
        ("neon", "aarch64") => vec!["-march=armv8-a".into()],
        ("dotprod", "aarch64") => vec!["-march=armv8.2-a+dotprod".into()],
        ("i8mm", "aarch64") => vec!["-march=armv8.6-a+dotprod+i8mm".into()],
        (flags, _) => flags.split_whitespace().map(String::from).collect(),
    }
}

fn files(dir: &str, names: &[&str]) -> Vec<PathBuf> {
    names.iter().map(|n| Path::new(dir).join(n)).collect()
}

fn sorted_sources(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "cpp"))
        .collect();
    v.sort();
    v
}

/// Writes `unity-N.cpp` files that each `#include` up to `batch` sources.
fn unity_batches(sources: &[PathBuf], batch: usize, out: &Path) -> Vec<PathBuf> {
    let root = env::var("CARGO_MANIFEST_DIR").unwrap();
    sources
        .chunks(batch)
        .enumerate()
        .map(|(i, chunk)| {
            let text: String = chunk
                .iter()
                .map(|p| format!("#include \"{root}/{}\"\n", p.display()))
                .collect();
            let path = out.join(format!("llama-models-unity-{i}.cpp"));
            write_if_changed(&path, &text);
            path
        })
        .collect()
}

fn compile(build: &cc::Build, sources: &[PathBuf]) -> Vec<PathBuf> {
    let mut b = build.clone();
    b.files(sources);
    b.compile_intermediates()
}

fn write_if_changed(path: &Path, text: &str) {
    if fs::read_to_string(path).ok().as_deref() != Some(text) {
        fs::write(path, text).unwrap();
    }
}

/// Regenerates the bindings with libclang when it can be loaded and compares
/// them with the committed copy (the one every crate compiles); the outcome
/// is exported to the crate (`LLMKERNEL_BINDINGS*`) so that CI can insist
/// they are equal. The fresh copy is left in OUT_DIR for
/// `scripts/update-bindings.sh`.
fn bindings(out: &Path) {
    let committed = Path::new(COMMITTED_BINDINGS);
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {})); // bindgen panics when libclang is missing
    let generated = std::panic::catch_unwind(generate_bindings).ok().flatten();
    std::panic::set_hook(previous_hook);
    match generated {
        Some(text) => {
            let same = fs::read_to_string(committed).is_ok_and(|c| c == text);
            if !same {
                println!("cargo:warning=bindings generated from the vendored headers differ from {COMMITTED_BINDINGS}: run scripts/update-bindings.sh");
            }
            write_if_changed(&out.join("bindings.rs"), &text);
            println!("cargo:rustc-env=LLMKERNEL_BINDINGS=generated");
            println!("cargo:rustc-env=LLMKERNEL_BINDINGS_MATCH_COMMITTED={same}");
        }
        None => {
            println!("cargo:rustc-env=LLMKERNEL_BINDINGS=committed");
            println!("cargo:rustc-env=LLMKERNEL_BINDINGS_MATCH_COMMITTED=unknown");
        }
    }
}

/// The committed bindings, which every crate compiles.
const COMMITTED_BINDINGS: &str = "backend/src/ffi/bindings.rs";

fn generate_bindings() -> Option<String> {
    let b = bindgen::Builder::default()
        .header("backend/src/ffi/wrapper.h")
        .clang_arg(format!("-I{LLAMA}/ggml/include"))
        .clang_arg(format!("-I{LLAMA}/ggml/src"))
        .clang_arg(format!("-I{LLAMA}/include"))
        .allowlist_function("(ggml|gguf|llama)_.*|(de)?quantize_row_.*")
        .allowlist_type("(ggml|gguf|llama)_.*|block_.*")
        .allowlist_var("(GGML|GGUF|LLAMA)_.*")
        // va_list differs between x86_64 and aarch64; the committed file serves both.
        .blocklist_function(".*_v?printf|ggml_log_.*_v")
        .prepend_enum_name(false)
        .generate_comments(false)
        .formatter(bindgen::Formatter::Prettyplease);
    let bindings = b.generate().ok()?;
    Some(format!(
        "// Generated by bindgen from backend/src/ffi/wrapper.h (vendored llama.cpp {UPSTREAM_COMMIT}).\n\
         // Do not edit: run scripts/update-bindings.sh.\n{}",
        bindings
    ))
}
