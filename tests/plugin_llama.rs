//! libllmkernel.so inside libllama, end to end: a small llama model with random
//! weights in each supported format (on aarch64, one per kernel family: see
//! [`formats`]) runs once on llama.cpp's own CPU backend,
//! then again after the built plugin is loaded with ggml's loader (as
//! `GGML_BACKEND_PATH` does). The plugin must have computed the matmuls (its
//! counters, read through its registry), and the logits must agree:
//! NMSE <= 5e-4 and the same top-1 token at >= 99 % of positions.
//!
//! The same for models pruned 2:4 by `llmkernel prune` (Q4_0 and Q8_0): the
//! plugin must recognise every pruned matrix, keep it packed and multiply it
//! with the sparse kernels (counters again), with the same agreement.
//!
//! One test function: loading a backend is process-wide, so the stock runs
//! must all happen before it.

mod common;

use llmkernel::kernels::Format;
use llmkernel::prune::{self, Method, OutFormat};
use llmkernel::{backend, llama, synthetic};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The formats whose models run: every weight format the kernels take; on
/// aarch64 (CI runs it under qemu, where each model's i-quant quantization
/// and two evaluations take seconds) one per kernel family, as
/// `bench_smoke` and the kernels' own tests there cover every format.
fn formats() -> Vec<Format> {
    if cfg!(target_arch = "aarch64") {
        vec![
            Format::Q4K,
            Format::Q6K,
            Format::Q4_0,
            Format::IQ4_NL,
            Format::IQ2_XS,
            Format::TQ1_0,
        ]
    } else {
        Format::WEIGHTS.to_vec()
    }
}
/// A prompt evaluated as one batch (GEMM), then tokens one at a time (GEMV).
const PROMPT: usize = 96;
const DECODE: usize = 8;
/// Dummy tokens, no tokenizer: the embedding and output matrices stay small
/// (quantizing 32000 rows with ggml's i-quant search took most of this test's
/// time under qemu).
const N_VOCAB: usize = 4096;

/// Whether the plugin takes `f`'s matmuls of `batch` columns on this CPU
/// (under `LLMKERNEL_ISA`).
fn takes(f: Format, batch: usize) -> bool {
    let isa = llmkernel::kernels::table::Isa::ceiling().expect("an ISA with kernels");
    common::table_policy(f, isa).takes(batch)
}

/// Builds libllmkernel.so for the profile and target this test was built for
/// and returns its path.
fn build_plugin() -> PathBuf {
    // target/[<triple>/]<profile>/deps/<this test>
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    let profile = profile_dir
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let above = profile_dir.parent().unwrap();
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "-p", "llmkernel-plugin", "--profile"])
        .arg(if profile == "debug" { "dev" } else { &profile });
    if above.file_name().is_some_and(|n| n != "target") {
        // a cross build: target/<triple>/<profile>
        cmd.arg("--target").arg(above.file_name().unwrap());
    }
    let status = cmd.status().expect("run cargo");
    assert!(status.success(), "building libllmkernel.so failed");
    let so = profile_dir.join("libllmkernel.so");
    assert!(so.exists(), "{} missing after the build", so.display());
    so
}

fn logits(path: &Path, tokens: &[i32]) -> Vec<f32> {
    let model = llama::Model::load(path).unwrap();
    let mut ctx = model.context(128, 128, 2).unwrap();
    let mut all = ctx.eval(&tokens[..PROMPT]).unwrap();
    for &t in &tokens[PROMPT..] {
        all.extend(ctx.eval(&[t]).unwrap());
    }
    all
}

fn compare(stock: &[f32], ours: &[f32], n_vocab: usize) -> (f64, f64) {
    let (mut err, mut sig) = (0f64, 0f64);
    for (a, b) in stock.iter().zip(ours) {
        err += (*a as f64 - *b as f64).powi(2);
        sig += (*a as f64).powi(2);
    }
    let argmax = |r: &[f32]| {
        r.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0
    };
    let rows = stock.len() / n_vocab;
    let same = (0..rows)
        .filter(|&i| {
            let s = i * n_vocab..(i + 1) * n_vocab;
            argmax(&stock[s.clone()]) == argmax(&ours[s])
        })
        .count();
    (err / sig, same as f64 / rows as f64)
}

#[test]
fn plugin_matches_the_cpu_backend_inside_libllama() {
    if llmkernel_backend::usable_isa().is_err() {
        // LLMKERNEL_ISA=scalar: the plugin must decline to load, and llama.cpp runs stock.
        let so = build_plugin();
        assert!(
            backend::load_plugin(&so).is_err(),
            "the plugin loaded without usable kernels"
        );
        eprintln!("plugin_llama: no SIMD kernels under this ISA ceiling; checked that the plugin declines");
        return;
    }
    let so = build_plugin();
    let dir = std::env::temp_dir().join(format!("llmkernel-plugin-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tokens: Vec<i32> = (0..(PROMPT + DECODE) as i32)
        .map(|i| 1 + (i * 7919) % (N_VOCAB as i32 - 1))
        .collect();

    let mut models = Vec::new();
    let formats = formats();
    eprintln!("plugin_llama: models in {formats:?}");
    for (i, &f) in formats.iter().enumerate() {
        let path = dir.join(format!("synthetic-{}.gguf", f.name()));
        synthetic::write_llama_untokenized(
            &path,
            f,
            synthetic::Shape::default(),
            N_VOCAB,
            42 + i as u64,
        )
        .unwrap();
        let stock = logits(&path, &tokens);
        models.push((f, path, stock, false));
    }
    let dense = dir.join("synthetic-for-pruning.gguf");
    synthetic::write_llama_untokenized(
        &dense,
        Format::Q8_0,
        synthetic::Shape::default(),
        N_VOCAB,
        77,
    )
    .unwrap();
    for (f, out) in [
        (Format::Q4_0, OutFormat::Q4_0),
        (Format::Q8_0, OutFormat::Q8_0),
    ] {
        let path = dir.join(format!("synthetic-{}-2_4.gguf", f.name()));
        prune::prune(&prune::Options {
            input: dense.clone(),
            output: path.clone(),
            method: Method::Magnitude,
            format: out,
            calibration: None,
            skip: None,
            threads: 2,
            reconstruct: None,
        })
        .unwrap();
        let stock = logits(&path, &tokens);
        models.push((f, path, stock, true));
    }
    assert!(
        backend::device().is_none(),
        "LLMK registered before the plugin was loaded"
    );

    let reg = backend::load_plugin(&so).expect("load libllmkernel.so");
    assert!(
        backend::device().is_some(),
        "no LLMK device after loading the plugin"
    );
    let n_vocab = llama::Model::load(&models[0].1).unwrap().n_vocab();
    assert_eq!(n_vocab, N_VOCAB, "the model's vocabulary");
    let shape = synthetic::Shape::default();
    // Per model evaluation: every layer's 7 matmuls and the output matrix, per eval call.
    let matmuls_per_eval = (7 * shape.n_layer + 1) as u64;
    for (f, path, stock, pruned) in &models {
        // SAFETY: reg is the registry load_plugin returned; it lives for the process.
        let before = unsafe { backend::stats(reg) }.expect("the plugin's stats");
        let ours = logits(path, &tokens);
        // SAFETY: as above.
        let after = unsafe { backend::stats(reg) }.unwrap();
        // The prompt and each decoded token, where the table's policy takes
        // their batches. A format it declines at batch 512 (llama.cpp's
        // probe when it places weights: IQ4_XS at tier avx2, whose panel
        // GEMM measured slower than ggml's) keeps its weights in the CPU
        // backend's buffers, so the plugin takes none of its matmuls.
        let evals = if takes(*f, 512) {
            takes(*f, PROMPT) as u64 + DECODE as u64 * takes(*f, 1) as u64
        } else {
            0
        };
        assert_eq!(after.failed, before.failed, "{f:?}: plugin nodes failed");
        assert!(
            after.mul_mat - before.mul_mat >= matmuls_per_eval * evals,
            "{f:?}: the plugin computed {} matmuls, expected at least {} (a silent fallback?)",
            after.mul_mat - before.mul_mat,
            matmuls_per_eval * evals
        );
        let sparse = after.sparse_mul_mat - before.sparse_mul_mat;
        if *pruned {
            // Every layer matrix is 2:4: all of them run sparse, each packed once.
            let layer = (7 * shape.n_layer) as u64;
            assert!(
                sparse >= layer * evals,
                "{f:?} 2:4: {sparse} sparse matmuls, expected at least {}",
                layer * evals
            );
            assert_eq!(
                after.sparse_packed - before.sparse_packed,
                layer,
                "{f:?} 2:4: packed weights"
            );
        } else {
            assert_eq!(sparse, 0, "{f:?}: a dense model ran sparse");
        }
        // Freeing the model dropped the packed copies with it.
        assert_eq!(
            after.sparse_tensors, 0,
            "{f:?}: packed weights outlived their model"
        );
        let (nmse, top1) = compare(stock, &ours, n_vocab);
        eprintln!(
            "{f:?}{}: {} matmuls on LLMK ({sparse} sparse), logits NMSE {nmse:.2e}, same top-1 {:.1} %",
            if *pruned { " 2:4" } else { "" },
            after.mul_mat - before.mul_mat,
            top1 * 100.0
        );
        assert!(nmse <= 5e-4, "{f:?}: logits NMSE {nmse:.3e} > 5e-4");
        assert!(
            top1 >= 0.99,
            "{f:?}: same top-1 at only {:.1} % of positions",
            top1 * 100.0
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
