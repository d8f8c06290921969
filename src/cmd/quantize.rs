//! `llmkernel quantize`.

use super::{parse_format, parse_threads, threads_or_all, Outcome};
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
    /// or q4_0, q5_0, q8_0, iq4_nl, iq4_xs.
    #[arg(long, value_parser = parse_format)]
    format: Format,
    /// Every matrix in the format (no mixes; token embedding and output included).
    #[arg(long)]
    pure: bool,
    /// An importance matrix (llama.cpp's imatrix GGUF, from `llmkernel imatrix` or llama-imatrix).
    #[arg(long)]
    imatrix: Option<PathBuf>,
    /// Threads (default: all hardware threads).
    #[arg(short = 't', long, value_parser = parse_threads)]
    threads: Option<usize>,
}

impl Args {
    pub fn run(self) -> Outcome {
        llmkernel::check::preflight(&self.input)?;
        let t = threads_or_all(self.threads);
        llmkernel::quantize::quantize(
            &self.input,
            &self.output,
            self.format,
            self.pure,
            t,
            self.imatrix.as_deref(),
        )?;
        println!("{}", self.output.display());
        Ok(())
    }
}
