//! Fuzz targets: each takes arbitrary bytes and either returns or panics on a
//! defect. Two drivers run them:
//! - `tests/fuzz/` (cargo-fuzz, nightly): libFuzzer, coverage-guided, with
//!   the committed corpus `tests/fuzz/corpus/<target>/` as the seed;
//! - `tests/fuzz_smoke.rs` (stable, `cargo test`): every corpus file, then
//!   random mutations of them for a time budget (`LLMKERNEL_FUZZ_SECONDS`).
//!
//! A panic is a finding; so is a signal, which ends the process.

use llmkernel_kernels::cpu::CpuFeatures;
use llmkernel_kernels::formats::{Format, WithFormat};
use llmkernel_kernels::matmul::{matmul_quantized, quantize_activations, QMatrix};
use llmkernel_kernels::table::{Config, Isa, Kernels};
use llmkernel_kernels::testdata::Rng;
use std::path::PathBuf;

/// The targets by name, as the drivers list them.
pub const TARGETS: [(&str, fn(&[u8])); 4] = [
    ("kernels", kernels),
    ("gguf", gguf),
    ("logits_file", logits_file),
    ("backend_ops", backend_ops),
];

/// FNV-1a: a seed drawn from the input, so a target is a function of its bytes.
pub(crate) fn seed_of(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Every kernel this CPU runs, at every ISA, against the scalar reference on
/// arbitrary weight bytes: NaN, Inf, subnormal and huge scales included.
///
/// Bytes: format, rows, batch, then the weight blocks. Activations come from
/// a generator seeded with the input, finite, at a scale the input picks.
/// A reference that is finite must be met within the harness's bound
/// (`1e-5 × dot_magnitude`); a non-finite one by a non-finite result. The
/// dequantizers must equal the reference bit for bit (any NaN for a NaN).
pub fn kernels(data: &[u8]) {
    if data.len() < 4 {
        return;
    }
    let format = Format::WEIGHTS[data[0] as usize % Format::WEIGHTS.len()];
    let rows = 1 + data[1] as usize % 5;
    let batch = [1, 2, 3, 16, 17, 33][data[2] as usize % 6];
    let scale = 10f32.powi(data[3] as i32 % 9 - 4);
    format.with(KernelCase {
        rows,
        batch,
        scale,
        seed: seed_of(data),
        bytes: &data[4..],
    });
}

struct KernelCase<'a> {
    rows: usize,
    batch: usize,
    scale: f32,
    seed: u64,
    bytes: &'a [u8],
}

impl WithFormat for KernelCase<'_> {
    type Out = ();
    fn run<B: Kernels>(self) {
        let size = std::mem::size_of::<B>();
        let per_row = (self.bytes.len() / size / self.rows).min(8);
        if per_row == 0 {
            return;
        }
        let (rows, batch, k) = (self.rows, self.batch, per_row * B::FORMAT.block_len());
        let w: Vec<B> = self.bytes[..rows * per_row * size]
            .chunks_exact(size)
            .map(bytemuck::pod_read_unaligned)
            .collect();
        let mut r = Rng::new(self.seed);
        let x: Vec<f32> = r
            .activations(batch * k)
            .into_iter()
            .map(|v| v * self.scale)
            .collect();
        let acts = quantize_activations::<B>(&x, batch, k, 1).unwrap();
        let qm = QMatrix::new(&w, rows, k).unwrap();
        let mut want = vec![0f32; rows * k];
        for (m, out) in want.chunks_exact_mut(k).enumerate() {
            B::dequantize_row(&w[m * per_row..(m + 1) * per_row], out).unwrap();
        }
        let cpu = CpuFeatures::get();
        for isa in Isa::ALL.into_iter().filter(|i| i.supported(&cpu)) {
            let config = Config::<B>::at(isa);
            let mut got = vec![0f32; rows * k];
            config.dequant().run(&w, &mut got).unwrap();
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                    "{} {}: dequantized value {i} is {a:e}, reference {b:e}",
                    B::NAME,
                    config.dequant().name()
                );
            }
            let mut y = vec![0f32; batch * rows];
            matmul_quantized(&qm, &acts, batch, &mut y, &config, 1).unwrap();
            for n in 0..batch {
                let a = &acts[n * per_row..(n + 1) * per_row];
                for m in 0..rows {
                    let row = &w[m * per_row..(m + 1) * per_row];
                    let reference = B::vec_dot(row, a).unwrap();
                    let got = y[n * rows + m];
                    let (kernel, _) = config.kernel_used(batch);
                    if reference.is_finite() {
                        let bound = 1e-5 * B::dot_magnitude(row, a).unwrap() + 1e-30;
                        assert!(
                            (got - reference).abs() <= bound,
                            "{} {kernel}: y[{n}][{m}] = {got:e}, reference {reference:e} (bound {bound:e})",
                            B::NAME
                        );
                    } else {
                        assert!(
                            !got.is_finite(),
                            "{} {kernel}: y[{n}][{m}] = {got:e}, reference {reference:e}",
                            B::NAME
                        );
                    }
                }
            }
        }
    }
}

/// The seed inputs of a target, made here (the drivers start from these
/// and from the committed corpus).
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let mut r = Rng::new(0x5eed);
    match target {
        "kernels" => (0..Format::WEIGHTS.len() as u8)
            .flat_map(|f| [(f, 1u8, 0u8), (f, 2, 3)])
            .map(|(f, rows, batch)| {
                let mut v = vec![f, rows, batch, 4];
                let mut blocks = vec![0u8; 2 * 2 * 210];
                r.fill(&mut blocks);
                v.extend(blocks);
                v
            })
            .collect(),
        "gguf" => [Format::Q4_0, Format::Q8_0]
            .iter()
            .map(|&f| {
                let path = scratch("seed.gguf");
                crate::synthetic::write_tiny(&path, f, 1).unwrap();
                std::fs::read(&path).unwrap()
            })
            .collect(),
        "logits_file" => {
            let path = scratch("seed.logits");
            let (n_ctx, n_vocab) = (8, 5);
            let tokens: Vec<i32> = (0..2 * n_ctx as i32).collect();
            let mut w = crate::logits_file::Writer::create(&path, n_ctx, n_vocab, &tokens).unwrap();
            for _ in 0..2 {
                w.rows(&r.activations((n_ctx - 1 - n_ctx / 2) * n_vocab))
                    .unwrap();
            }
            w.finish().unwrap();
            vec![std::fs::read(&path).unwrap()]
        }
        "backend_ops" => (0..8)
            .map(|_| {
                let mut v = vec![0u8; 16];
                r.fill(&mut v);
                v
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// A scratch file of this thread's for targets that read paths.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("llmkernel-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let t = format!("{:?}", std::thread::current().id());
    let t: String = t.chars().filter(char::is_ascii_digit).collect();
    dir.join(format!("{t}-{name}"))
}

/// A GGUF file as the subcommands meet it: `check`'s scan (the preflight of
/// every subcommand), then, if the scan passes, `prune` and `quantize`. Each
/// may refuse the file with an error; none may panic or crash.
pub fn gguf(data: &[u8]) {
    let path = scratch("in.gguf");
    std::fs::write(&path, data).unwrap();
    if crate::check::preflight(&path).is_err() {
        return;
    }
    let out = scratch("out.gguf");
    let _ = crate::prune::prune(&crate::prune::Options {
        input: path.clone(),
        output: out.clone(),
        method: crate::prune::Method::Magnitude,
        format: crate::prune::OutFormat::Q8_0,
        calibration: None,
        skip: None,
        threads: 1,
        reconstruct: None,
    });
    let _ = crate::quantize::quantize(&path, &out, Format::Q4_0, false, 1, None);
}

/// The reader of llama-perplexity's `--kl-divergence-base` files.
pub fn logits_file(data: &[u8]) {
    let path = scratch("logits.bin");
    std::fs::write(&path, data).unwrap();
    if let Ok(mut r) = crate::logits_file::Reader::open(&path) {
        // A bounded number of chunks: a header may promise many.
        for _ in 0..4 {
            if r.chunk().is_err() {
                break;
            }
        }
    }
}

/// The LLMK backend's `supports_op` and compute on MUL_MAT nodes of random
/// types, shapes, strides and views (always inside their buffer, as ggml's
/// own tensors are): what it accepts it must compute as the CPU backend does.
pub fn backend_ops(data: &[u8]) {
    crate::fuzz_ops::run(data)
}

#[cfg(test)]
mod tests {
    /// The targets return on inputs too short to mean anything.
    #[test]
    fn short_inputs_return() {
        for (_, t) in super::TARGETS {
            t(&[]);
            t(&[0]);
        }
    }
}
