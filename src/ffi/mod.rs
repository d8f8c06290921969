//! Raw bindings to the vendored llama.cpp (ggml, gguf, llama, and the backend
//! implementation interface): the one copy in `llmkernel-backend`
//! (`backend/src/ffi/bindings.rs`), which this crate links against the
//! vendored library that build.rs compiles.

pub use llmkernel_backend::ffi::*;

/// Whether build.rs could regenerate the bindings to check them: `generated`
/// (libclang found) or `committed`.
pub const BINDINGS_SOURCE: &str = env!("LLMKERNEL_BINDINGS");
/// Whether freshly generated bindings equal the committed file (`true`/`false`),
/// or `unknown` when libclang was not available to generate them.
pub const BINDINGS_MATCH_COMMITTED: &str = env!("LLMKERNEL_BINDINGS_MATCH_COMMITTED");
