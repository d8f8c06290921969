//! `llmkernel imatrix`.

use super::{parse_threads, threads_or_all, Outcome};
use std::path::PathBuf;

/// Collects an importance matrix (llama.cpp's imatrix GGUF format) over calibration text.
#[derive(clap::Args)]
pub struct Args {
    /// The model (GGUF), ideally the one the variants are made from.
    #[arg(short = 'm', long)]
    model: PathBuf,
    /// Calibration text.
    #[arg(short = 'f', long)]
    file: PathBuf,
    /// Output file.
    #[arg(short = 'o', long)]
    output: PathBuf,
    /// Tokens per chunk.
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// At most this many chunks.
    #[arg(long)]
    chunks: Option<usize>,
    /// Threads (default: all hardware threads).
    #[arg(short = 't', long, value_parser = parse_threads)]
    threads: Option<usize>,
}

impl Args {
    pub fn run(self) -> Outcome {
        llmkernel::check::preflight(&self.model)?;
        let t = threads_or_all(self.threads);
        let n = llmkernel::imatrix::collect_to_file(
            &self.model,
            &self.file,
            &self.output,
            self.ctx,
            self.chunks,
            t,
        )?;
        println!("{}: {n} weight matrices", self.output.display());
        Ok(())
    }
}
