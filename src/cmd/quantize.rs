//! `llmkernel quantize`.

use super::{parse_format, parse_threads, threads_or_all, Failure, Outcome};
use llmkernel::gptq;
use llmkernel::kernels::Format;
use std::path::PathBuf;

/// Quantizes a GGUF model through the vendored llama_model_quantize.
#[derive(clap::Args)]
pub struct Args {
    /// The model to quantize (F32/F16/BF16, or quantized: then it is requantized).
    input: PathBuf,
    /// Where to write the quantized model.
    output: PathBuf,
    /// A weight format: the k-quants as llama.cpp's mixes (q2_k; q3_k, q4_k, q5_k as _M; q6_k),
    /// q4_0, q5_0, q8_0, iq4_nl, iq4_xs, the i-quants iq2_xxs, iq2_xs, iq2_s, iq3_xxs, iq3_s
    /// (llama.cpp's mixes of that name; all but iq3_s need --imatrix), or the ternary tq1_0, tq2_0.
    #[arg(long, value_parser = parse_format)]
    format: Format,
    /// Every matrix in the format (no mixes; token embedding and output included).
    #[arg(long)]
    pure: bool,
    /// An importance matrix (llama.cpp's imatrix GGUF, from `llmkernel imatrix` or llama-imatrix).
    #[arg(long)]
    imatrix: Option<PathBuf>,
    /// Error-compensated quantization (GPTQ's solver): quantize the layer matrices again,
    /// block by block with ggml's scales, spreading each value's rounding error over the
    /// columns not yet quantized, by the inverse Hessian of their inputs on --calib text.
    /// The file stays llama-quantize's, byte for byte but for the values.
    #[arg(long, requires = "calib")]
    reconstruct: bool,
    /// Calibration text for --reconstruct (keep it apart from the evaluation text).
    #[arg(long)]
    calib: Option<PathBuf>,
    /// Tokens per calibration chunk.
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Calibration chunks.
    #[arg(long, default_value_t = 8)]
    chunks: usize,
    /// Memory for the calibration Hessians in MiB (default: half the memory available).
    /// Layers whose Hessians do not fit together are calibrated in separate passes over
    /// the text, each stopping after its last layer; 0 gives one layer per pass.
    #[arg(long, requires = "reconstruct")]
    calib_mem: Option<u64>,
    /// Threads (default: all hardware threads).
    #[arg(short = 't', long, value_parser = parse_threads)]
    threads: Option<usize>,
}

impl Args {
    pub fn run(self) -> Outcome {
        llmkernel::check::preflight(&self.input)?;
        let t = threads_or_all(self.threads);
        if self.reconstruct {
            let calib = self.calib.expect("clap requires --calib");
            let o = gptq::Options {
                input: self.input,
                outputs: vec![(self.format, self.output.clone())],
                pure: self.pure,
                threads: t,
                imatrix: self.imatrix,
                calib,
                ctx: self.ctx,
                chunks: self.chunks,
                calib_mem: self.calib_mem.map(|m| m.saturating_mul(1 << 20)),
            };
            let r = gptq::quantize(&o)?.remove(0);
            let (g, c): (f64, f64) = r.tensors.iter().fold((0.0, 0.0), |(g, c), t| {
                (g + t.err_ggml, c + t.err_rec.min(t.err_ggml))
            });
            let same = r.tensors.iter().filter(|t| !t.compensated()).count();
            for (name, why) in &r.kept {
                eprintln!("reconstruct: {name} kept as llama-quantize wrote it: {why}");
            }
            println!(
                "{}: {} matrices error-compensated ({} kept as llama-quantize wrote them, their error no higher; {} calibration tokens), calibration output error {:.4e} -> {:.4e} ({:.3}x); time: quantize {:.1} s, calibration {:.1} s in {} {}, solve {:.1} s ({:.2} s per layer); peak memory {}",
                self.output.display(),
                r.tensors.len() - same,
                same,
                r.tokens,
                g,
                c,
                c / g,
                r.quantize_secs,
                r.calib_secs,
                r.passes,
                if r.passes == 1 { "pass" } else { "passes" },
                r.solve_secs,
                r.solve_secs / layers(&r).max(1) as f64,
                peak()
            );
            return Ok(());
        }
        if self.calib.is_some() {
            return Err(Failure::Usage("--calib is for --reconstruct".into()));
        }
        let start = std::time::Instant::now();
        llmkernel::quantize::quantize(
            &self.input,
            &self.output,
            self.format,
            self.pure,
            t,
            self.imatrix.as_deref(),
        )?;
        println!(
            "{}: time {:.1} s; peak memory {}",
            self.output.display(),
            start.elapsed().as_secs_f64(),
            peak()
        );
        Ok(())
    }
}

fn layers(r: &gptq::Report) -> usize {
    let mut l: Vec<&str> = r
        .tensors
        .iter()
        .filter_map(|t| t.name.split('.').nth(1))
        .collect();
    l.dedup();
    l.len()
}

fn peak() -> String {
    gptq::peak_rss_mib().map_or("unknown".into(), |m| format!("{m:.0} MiB"))
}
