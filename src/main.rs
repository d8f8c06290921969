//! The `llmkernel` command line.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "llmkernel",
    version,
    about = "Fast CPU kernels for llama.cpp's compressed models, measured against ggml"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// CPU features, the vendored llama.cpp, and the kernel set each format uses here.
    Info,
}

fn main() {
    match Cli::parse().command {
        Command::Info => print!("{}", llmkernel::info::report()),
    }
}
