//! `llmkernel perplexity`.

use super::{parse_threads, progress, threads_or_all, Failure, Outcome};
use llmkernel::perplexity::{self, Kernels};
use std::path::PathBuf;

/// Perplexity of a model on a text, computed as llama-perplexity computes it, with
/// ggml's kernels, llmkernel's, or both in one run (plus the KL-divergence between them).
#[derive(clap::Args)]
pub struct Args {
    /// The model (GGUF).
    #[arg(short = 'm', long)]
    model: PathBuf,
    /// The text file to score.
    #[arg(short = 'f', long)]
    file: PathBuf,
    /// Tokens per chunk: the first half is context, the second half is scored.
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// At most this many chunks (default: all the text holds).
    #[arg(long)]
    chunks: Option<usize>,
    /// Whose kernels compute the weight matmuls: ggml, llmkernel, or both.
    #[arg(long, default_value = "llmkernel", value_parser = Kernels::parse)]
    kernels: Kernels,
    /// Threads (default: all hardware threads).
    #[arg(short = 't', long, value_parser = parse_threads)]
    threads: Option<usize>,
    /// A teacher model (e.g. the uncompressed one), run alongside with ggml's kernels:
    /// KL-divergence of each run's token distribution from the teacher's.
    #[arg(long)]
    teacher: Option<PathBuf>,
    /// `exact`: the teacher is this model's exact reference, every weight
    /// dequantized to F32 and multiplied in F32 with no activation quantized
    /// (made once into $LLMKERNEL_CACHE/exact, default ~/.cache/llmkernel/exact). Each
    /// kernel set's KL-divergence from it is its own rounding error.
    #[arg(long, value_parser = ["exact"])]
    reference: Option<String>,
    /// Also time this many single-token evaluations per kernel set (text generation speed).
    #[arg(long, default_value_t = 0)]
    decode: usize,
    /// Save the scored logits (of ggml's run with --kernels both) for later --kl-base
    /// runs, in llama-perplexity's --kl-divergence-base format.
    #[arg(long)]
    save_logits: Option<PathBuf>,
    /// KL-divergence against logits saved by --save-logits or by
    /// llama-perplexity --kl-divergence-base (same text, ctx and vocabulary).
    #[arg(long)]
    kl_base: Option<PathBuf>,
    /// One JSON object on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

impl Args {
    pub fn run(self) -> Outcome {
        for m in std::iter::once(&self.model).chain(&self.teacher) {
            llmkernel::check::preflight(m)?;
        }
        let threads = threads_or_all(self.threads);
        let teacher_is_exact = self.reference.is_some();
        let teacher = match (self.reference, self.teacher) {
            (Some(_), Some(_)) => {
                return Err(Failure::Usage(
                    "give --reference exact or --teacher, not both".into(),
                ))
            }
            (Some(_), None) => {
                let cache = std::env::var_os("LLMKERNEL_CACHE")
                    .map(PathBuf::from)
                    .or_else(|| {
                        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/llmkernel"))
                    })
                    .ok_or_else(|| {
                        "no LLMKERNEL_CACHE or HOME for the exact reference".to_string()
                    })?;
                Some(llmkernel::quantize::exact_reference(
                    &self.model,
                    &cache.join("exact"),
                    threads,
                )?)
            }
            (None, t) => t,
        };
        let opts = perplexity::Options {
            model: self.model,
            text: self.file,
            ctx: self.ctx,
            chunks: self.chunks,
            threads,
            kernels: self.kernels,
            teacher,
            progress: progress(),
            decode: self.decode,
            save_logits: self.save_logits,
            kl_base: self.kl_base,
            teacher_is_exact,
        };
        let r = perplexity::run(&opts)?;
        if self.json {
            println!("{}", r.json());
        } else {
            print!("{}", r.text());
        }
        Ok(())
    }
}
