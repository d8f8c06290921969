//! `llmkernel check`.

use super::{Failure, Outcome};
use llmkernel::check;
use std::path::PathBuf;

/// Scans every tensor of a GGUF model for non-finite (NaN, Inf) block scales
/// and float weights, and absurd scales, and names the tensor, block and
/// value of each: the first question when a model prints garbage. Exit code
/// 0 when nothing is found, 1 otherwise.
#[derive(clap::Args)]
pub struct Args {
    /// The model (GGUF).
    model: PathBuf,
}

impl Args {
    pub fn run(self) -> Outcome {
        let r = check::scan(&self.model, false)?;
        llmkernel::llama::probe(&self.model)?;
        for f in &r.findings {
            println!("{f}");
        }
        let more = (r.non_finite + r.absurd) as usize - r.findings.len();
        if more > 0 {
            println!("... and {more} more");
        }
        let ggml = if r.validated_by_ggml > 0 {
            format!(
                " ({} of a type llmkernel has no kernels for, checked by ggml_validate_row_data for non-finite values only)",
                r.validated_by_ggml
            )
        } else {
            String::new()
        };
        let summary = format!(
            "{}: {} tensors{ggml}, {} blocks and float values: {} non-finite, {} absurd (|scale| > {})",
            self.model.display(),
            r.tensors,
            r.scanned,
            r.non_finite,
            r.absurd,
            check::ABSURD_SCALE
        );
        if r.non_finite + r.absurd == 0 {
            println!("{summary}");
            Ok(())
        } else {
            Err(Failure::Failed(summary))
        }
    }
}
