//! llmkernel's kernels: the GGUF block formats, their scalar references (the
//! spec, the fallback and the test oracle), CPU feature detection and kernel
//! selection. Pure Rust: no C, no FFI.

#[cfg(target_arch = "aarch64")]
pub mod aarch64_neon;
pub mod cpu;
pub mod error;
pub mod formats;
pub mod matmul;
pub mod registry;
pub mod scalar;
pub mod testdata;
#[cfg(target_arch = "x86_64")]
pub mod x86_avx2;
#[cfg(target_arch = "x86_64")]
pub mod x86_avx512;

pub use error::{Error, Result};
pub use formats::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ8K, BlockQ8_0, Format, QuantBlock, WeightBlock,
    QK_K,
};
