//! llmkernel: fast CPU kernels for llama.cpp's low-bit formats, checked
//! against the vendored ggml; a ggml backend plugin; and the CLI.

pub mod backend;
pub mod bench;
pub mod check;
pub mod compare;
pub mod ffi;
pub mod fuzz;
mod fuzz_ops;
pub mod ggml;
pub mod ggml_mm;
pub mod gptq;
pub mod imatrix;
pub mod info;
pub mod llama;
pub mod logits_file;
pub mod perplexity;
pub mod profile;
pub mod prune;
pub mod quantize;
pub mod reconstruct;
pub mod synthetic;

pub use llmkernel_kernels as kernels;
