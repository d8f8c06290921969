//! llmkernel's kernels: the GGUF block formats, their scalar references (the
//! spec, the fallback and the test oracle), CPU feature detection and kernel
//! selection. Pure Rust: no C, no FFI.

/// Defines a kernel entry point: a `#[target_feature]` function that checks
/// its shape contract and dispatches on the number of activation columns to
/// the body instantiated for exactly that many (`$body::<..., C>`), so that
/// per-column state lives in fixed-size arrays the compiler keeps in registers.
macro_rules! row_kernel {
    ($name:ident, $feat:literal, $w:ty, $act:ty, $body:ident, [$($c:literal),*]) => {
        row_kernel!(@doc $name, $feat, $w, $act, |row, acts, out| match acts.len() {
            $($c => $body::<$c>(row, acts, out),)*
            _ => {}
        });
    };
    ($name:ident, $feat:literal, $w:ty, $act:ty, $body:ident<$t:ty>, [$($c:literal),*]) => {
        row_kernel!(@doc $name, $feat, $w, $act, |row, acts, out| match acts.len() {
            $($c => $body::<$t, $c>(row, acts, out),)*
            _ => {}
        });
    };
    (@doc $name:ident, $feat:literal, $w:ty, $act:ty, |$row:ident, $a:ident, $out:ident| $dispatch:expr) => {
        /// `out[c] = dot(row, acts[c])` for `c < acts.len() <= COLS`.
        ///
        /// # Safety
        #[doc = concat!("The CPU must have `", $feat, "`; `out.len() == acts.len() <= COLS`,")]
        /// and every `acts[c]` has `row.len()` blocks.
        #[target_feature(enable = $feat)]
        pub unsafe fn $name($row: &[$w], $a: &[&[$act]], $out: &mut [f32]) {
            debug_assert!($a.len() <= COLS && $out.len() == $a.len());
            // SAFETY: forwarded contract; each arm passes exactly C columns.
            unsafe { $dispatch }
        }
    };
}

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
