//! The `llmkernel` command line: parses it and dispatches to the subcommand
//! (`src/cmd/<name>.rs` each hold one subcommand's arguments and `run`).

mod cmd;

use clap::{Parser, Subcommand};
use cmd::Failure;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "llmkernel",
    version,
    about = "Fast CPU kernels for llama.cpp's compressed models, measured against ggml"
)]
struct Cli {
    /// At the end of each run on the LLMK backend, print what it computed
    /// (as LLMKERNEL_STATS=1 does for any llama.cpp program with the plugin).
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Info(cmd::info::Args),
    Bench(cmd::bench::Args),
    Check(cmd::check::Args),
    Perplexity(cmd::perplexity::Args),
    Compare(cmd::compare::Args),
    Imatrix(cmd::imatrix::Args),
    Profile(cmd::profile::Args),
    Prune(cmd::prune::Args),
    Quantize(cmd::quantize::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.verbose {
        // Read by the backend when it first reports; no thread has started yet.
        std::env::set_var("LLMKERNEL_STATS", "1");
    }
    let outcome = match cli.command {
        Command::Info(a) => a.run(),
        Command::Bench(a) => a.run(),
        Command::Check(a) => a.run(),
        Command::Perplexity(a) => a.run(),
        Command::Compare(a) => a.run(),
        Command::Imatrix(a) => a.run(),
        Command::Profile(a) => a.run(),
        Command::Prune(a) => a.run(),
        Command::Quantize(a) => a.run(),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Failed(e)) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
