//! `llmkernel bench`.

use super::{parse_format, parse_isa, parse_threads, threads_or_all, Failure, Outcome};
use llmkernel::bench;
use llmkernel::kernels::table::Isa;
use llmkernel::kernels::Format;

/// llmkernel's kernels against ggml's on the same matrices and threads.
#[derive(clap::Args)]
pub struct Args {
    /// Weight formats (comma-separated; `llmkernel info` lists them).
    #[arg(long, value_delimiter = ',', default_value = "q4_k", value_parser = parse_format)]
    format: Vec<Format>,
    /// Weight shape MxK (rows x columns); repeat for several. Default: Llama-3-8B's
    /// 4096x4096, 1024x4096, 14336x4096, 4096x14336.
    #[arg(long = "shape", value_parser = bench::parse_shape)]
    shapes: Vec<(usize, usize)>,
    /// Batch sizes (activation rows): 1 is decode, >= 32 prompt processing.
    #[arg(long, value_delimiter = ',', default_value = "1,512")]
    batch: Vec<usize>,
    /// Thread counts, for ggml and llmkernel alike. Default: all hardware threads.
    #[arg(long, value_delimiter = ',', value_parser = parse_threads)]
    threads: Vec<usize>,
    /// Highest ISA for llmkernel's kernels: scalar, avx2, avx512, neon, dotprod, i8mm.
    #[arg(long, value_parser = parse_isa)]
    isa: Option<Isa>,
    /// Interleaved repetitions per case (medians are reported).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// One JSON object per case per line instead of the table.
    #[arg(long)]
    json: bool,
    /// `2:4`: bench the 2:4 sparse kernels (q4_0, q8_0) on weights pruned 2:4,
    /// against our dense kernel and ggml's on the same blocks.
    #[arg(long, value_parser = parse_sparse)]
    sparse: Option<Sparse>,
    /// With --isa: compare against this binary's ggml-cpu even if it was
    /// compiled for another tier (by default an error naming the matching build).
    #[arg(long)]
    mixed_tiers: bool,
}

/// A sparsity pattern; 2:4 is the one llmkernel has kernels for.
#[derive(Clone, Copy, Debug)]
struct Sparse;

fn parse_sparse(s: &str) -> Result<Sparse, String> {
    match s.trim() {
        "2:4" => Ok(Sparse),
        other => Err(format!("sparsity {other:?}: only 2:4 is supported")),
    }
}

impl Args {
    pub fn run(self) -> Outcome {
        let threads = if self.threads.is_empty() {
            vec![threads_or_all(None)]
        } else {
            self.threads
        };
        if self.batch.contains(&0) {
            return Err(Failure::Usage("batch sizes must be positive".into()));
        }
        let opts = bench::Options {
            formats: self.format,
            shapes: if self.shapes.is_empty() {
                bench::LLAMA3_8B_SHAPES.to_vec()
            } else {
                self.shapes
            },
            batches: self.batch,
            threads,
            isa: self.isa,
            reps: self.reps,
            json: self.json,
            sparse: self.sparse.is_some(),
            mixed_tiers: self.mixed_tiers,
        };
        bench::run(&opts)?;
        Ok(())
    }
}
