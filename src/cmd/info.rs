//! `llmkernel info`.

use super::Outcome;

/// CPU features, the vendored llama.cpp, and the kernel set each format uses here.
#[derive(clap::Args)]
pub struct Args {}

impl Args {
    pub fn run(self) -> Outcome {
        print!("{}", llmkernel::info::report());
        Ok(())
    }
}
