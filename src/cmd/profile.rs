//! `llmkernel profile`.

use super::{parse_threads, progress, threads_or_all, Failure, Outcome};
use llmkernel::perplexity::Kernels;
use llmkernel::profile;
use std::path::{Path, PathBuf};

/// Where a model's time goes on this CPU: prompt processing and decode through
/// libllama (as llama-bench runs them), every graph node timed, grouped by op
/// class, weight tensor and layer, for ggml's kernels, llmkernel's, or both
#[derive(clap::Args)]
pub struct Args {
    /// The model (GGUF).
    #[arg(short = 'm', long, required_unless_present = "compare")]
    model: Option<PathBuf>,
    /// Prompt tokens, evaluated as one batch (0: no prompt phase).
    #[arg(short = 'p', long, default_value_t = 512)]
    prompt: usize,
    /// Tokens decoded one at a time after the prompt (0: no decode phase).
    #[arg(short = 'n', long, default_value_t = 128)]
    gen: usize,
    /// Whose kernels compute the weight matmuls: ggml, llmkernel, or both.
    #[arg(long, default_value = "both", value_parser = Kernels::parse)]
    kernels: Kernels,
    /// Threads (default: all hardware threads).
    #[arg(short = 't', long, value_parser = parse_threads)]
    threads: Option<usize>,
    /// Repetitions, each plain and profiled, after one warm-up.
    #[arg(short = 'r', long, default_value_t = 3)]
    reps: usize,
    /// 1: memory-map the model (llama.cpp's default); 0: read it into
    /// allocated buffers (llama-bench's -mmp 0).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    mmap: u8,
    /// The JSON report on stdout instead of the markdown.
    #[arg(long)]
    json: bool,
    /// Also write profile.json, profile.md, profile.svg and profile.png into
    /// this directory (made if missing).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Two JSON reports (of two machines, commits or kernel sets) side by side.
    #[arg(long, num_args = 2, value_names = ["A.json", "B.json"], conflicts_with = "model")]
    compare: Option<Vec<PathBuf>>,
}

fn read_report(p: &Path) -> Result<serde_json::Value, String> {
    let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not a profile report ({e})", p.display()))?;
    if !v["sets"].is_array() {
        return Err(format!(
            "{}: not a profile report (no \"sets\")",
            p.display()
        ));
    }
    Ok(v)
}

/// Writes `bytes` to `path` through a temporary file, so an interrupted run
/// leaves no half-written report.
fn write_whole(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

impl Args {
    pub fn run(self) -> Outcome {
        if let Some(files) = &self.compare {
            let (a, b) = (read_report(&files[0])?, read_report(&files[1])?);
            let name = |p: &PathBuf| p.display().to_string();
            print!(
                "{}",
                profile::compare(&a, &b, (&name(&files[0]), &name(&files[1])))
            );
            return Ok(());
        }
        let model = self.model.expect("clap requires it");
        if self.reps == 0 {
            return Err(Failure::Usage("-r must be at least 1".into()));
        }
        if self.prompt == 0 && self.gen == 0 {
            return Err(Failure::Usage(
                "-p and -n are both 0: nothing to profile".into(),
            ));
        }
        llmkernel::check::preflight(&model)?;
        let opts = profile::Options {
            model,
            prompt: self.prompt,
            gen: self.gen,
            kernels: self.kernels,
            threads: threads_or_all(self.threads),
            reps: self.reps,
            mmap: self.mmap == 1,
            progress: progress(),
        };
        let report = profile::run(&opts)?;
        let md = profile::markdown(&report);
        let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        if let Some(dir) = &self.out {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let (svg, png) = (dir.join("profile.svg"), dir.join("profile.png"));
            let (svg_tmp, png_tmp) = (
                dir.join("profile.partial.svg"),
                dir.join("profile.partial.png"),
            );
            profile::plot(&report, &svg_tmp, &png_tmp)?;
            std::fs::rename(&svg_tmp, &svg).map_err(|e| e.to_string())?;
            std::fs::rename(&png_tmp, &png).map_err(|e| e.to_string())?;
            write_whole(&dir.join("profile.md"), md.as_bytes())?;
            write_whole(&dir.join("profile.json"), json.as_bytes())?;
            eprintln!("wrote {}/profile.{{json,md,svg,png}}", dir.display());
        }
        if self.json {
            println!("{json}");
        } else {
            print!("{md}");
        }
        Ok(())
    }
}
