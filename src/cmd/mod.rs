//! The `llmkernel` subcommands: each file holds one subcommand's clap
//! arguments (`Args`) and its `run`; `main.rs` only dispatches.

pub mod bench;
pub mod check;
pub mod compare;
pub mod imatrix;
pub mod info;
pub mod perplexity;
pub mod profile;
pub mod prune;
pub mod quantize;

use llmkernel::kernels::table::Isa;
use llmkernel::kernels::Format;

/// Why a subcommand failed: its one-line message, and whether the command
/// line was at fault (exit 2) or the work (exit 1).
pub enum Failure {
    Usage(String),
    Failed(String),
}

impl From<String> for Failure {
    fn from(e: String) -> Failure {
        Failure::Failed(e)
    }
}

pub type Outcome = Result<(), Failure>;

/// A weight format's name (`q4_k`).
pub fn parse_format(s: &str) -> Result<Format, String> {
    Format::from_name(s)
        .filter(|f| Format::WEIGHTS.contains(f))
        .ok_or_else(|| {
            let names: Vec<&str> = Format::WEIGHTS.iter().map(|f| f.name()).collect();
            format!(
                "unknown weight format {s:?}: expected one of {}",
                names.join(", ")
            )
        })
}

pub fn parse_isa(s: &str) -> Result<Isa, String> {
    Isa::from_name(s).ok_or_else(|| {
        format!("unknown ISA {s:?}: expected scalar, avx2, avx512, neon, dotprod or i8mm")
    })
}

/// A thread count: a whole number of at least 1.
pub fn parse_threads(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("a thread count must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a thread count")),
    }
}

/// `threads`, or every hardware thread.
pub fn threads_or_all(threads: Option<usize>) -> usize {
    threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    })
}

/// Whether progress bars go to a terminal.
pub fn progress() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stderr())
}
