//! `llmkernel prune`.

use super::{parse_threads, threads_or_all, Failure, Outcome};
use llmkernel::prune::{self, Method, OutFormat};
use std::path::PathBuf;

/// Prunes a model's layer matrices to 2:4 sparsity (two of every four weights along K
/// zero) and writes them in a format with exact zeros; stock llama.cpp runs the result.
#[derive(clap::Args)]
pub struct Args {
    /// The model to prune (any type ggml can dequantize).
    input: PathBuf,
    /// Where to write the pruned model.
    output: PathBuf,
    /// The sparsity pattern; 2:4 is the one there is.
    #[arg(long, default_value = "2:4")]
    pattern: String,
    /// magnitude (|w|) or wanda (|w| times the input channel's activation norm).
    #[arg(long, default_value = "magnitude", value_parser = Method::parse)]
    method: Method,
    /// Calibration text for wanda's activation norms (run through the model).
    #[arg(long)]
    calib: Option<PathBuf>,
    /// ...or an imatrix file (llmkernel imatrix / llama-imatrix) for wanda's norms
    /// (with --calib too, the norms come from this file and --calib feeds --reconstruct).
    #[arg(long)]
    imatrix: Option<PathBuf>,
    /// Layer-wise reconstruction: update the kept weights by least squares so each
    /// pruned layer's outputs on the --calib text match the dense layer's (SparseGPT's
    /// solver, with the chosen mask).
    #[arg(long, requires = "calib")]
    reconstruct: bool,
    /// Tokens per calibration chunk.
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// At most this many calibration chunks.
    #[arg(long)]
    chunks: Option<usize>,
    /// Storage of every matrix: f16, q8_0 or q4_0 (zeros stay exact).
    #[arg(long, default_value = "q8_0", value_parser = OutFormat::parse)]
    format: OutFormat,
    /// Matrices whose names match this regex stay dense (default: prune every
    /// attn_q/k/v/output and ffn_gate/up/down of the blocks).
    #[arg(long)]
    skip: Option<String>,
    /// Threads (default: all hardware threads).
    #[arg(short = 't', long, value_parser = parse_threads)]
    threads: Option<usize>,
}

impl Args {
    pub fn run(self) -> Outcome {
        if self.pattern != "2:4" {
            return Err(Failure::Usage(format!(
                "pattern {:?}: only 2:4 is supported",
                self.pattern
            )));
        }
        llmkernel::check::preflight(&self.input)?;
        let skip = self
            .skip
            .as_deref()
            .map(regex::Regex::new)
            .transpose()
            .map_err(|e| Failure::Usage(format!("--skip: {e}")))?;
        let (ctx, chunks) = (self.ctx, self.chunks);
        let reconstruct = match (&self.calib, self.reconstruct) {
            (Some(text), true) => Some(prune::Reconstruct {
                text: text.clone(),
                ctx,
                chunks: chunks.unwrap_or(8),
            }),
            _ => None,
        };
        let calibration = match (self.calib, self.imatrix) {
            (_, Some(p)) => Some(prune::Calibration::Imatrix(p)),
            (Some(path), None) => Some(prune::Calibration::Text { path, ctx, chunks }),
            (None, None) => None,
        };
        let o = prune::Options {
            input: self.input,
            output: self.output,
            method: self.method,
            format: self.format,
            calibration,
            skip,
            threads: threads_or_all(self.threads),
            reconstruct,
        };
        let r = prune::prune(&o)?;
        println!(
            "{}: {} matrices pruned 2:4 ({}), {} dense",
            o.output.display(),
            r.pruned.len(),
            self.method.name(),
            r.dense.len()
        );
        Ok(())
    }
}
