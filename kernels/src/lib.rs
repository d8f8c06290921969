//! llmkernel's kernels: the GGUF block formats, their scalar references (the
//! spec, the fallback and the test oracle), CPU feature detection and kernel
//! selection. Pure Rust: no C, no FFI.

/// Defines a kernel entry point: a `#[target_feature]` function that checks
/// its shape contract and dispatches on the number of weight rows and
/// activation columns to the body instantiated for exactly that many
/// (`$body::<..., C>` for one-row kernels, `$body::<..., R, C>` for tiles), so
/// that per-row and per-column state lives in fixed-size arrays the compiler
/// keeps in registers.
macro_rules! row_kernel {
    // One row; the one-column call takes the body's prefetching build
    // (`PF = true`) where `crate::cpu::prefetch` says so (aarch64 only).
    ($name:ident, $feat:literal, $w:ty, $act:ty, prefetch $body:ident, [$($c:literal),*]) => {
        row_kernel!(@doc $name, $feat, $w, $act, |row, nrows, acts, out| {
            debug_assert_eq!(nrows, 1);
            match acts.len() {
                1 if crate::aarch64_neon::prefetch_on() => $body::<1, true>(row, acts, out),
                $($c => $body::<$c, false>(row, acts, out),)*
                _ => {}
            }
        });
    };
    ($name:ident, $feat:literal, $w:ty, $act:ty, prefetch $body:ident<$t:ty>, [$($c:literal),*]) => {
        row_kernel!(@doc $name, $feat, $w, $act, |row, nrows, acts, out| {
            debug_assert_eq!(nrows, 1);
            match acts.len() {
                1 if crate::aarch64_neon::prefetch_on() => $body::<$t, 1, true>(row, acts, out),
                $($c => $body::<$t, $c, false>(row, acts, out),)*
                _ => {}
            }
        });
    };
    ($name:ident, $feat:literal, $w:ty, $act:ty, $body:ident, [$($c:literal),*]) => {
        row_kernel!(@doc $name, $feat, $w, $act, |row, nrows, acts, out| {
            debug_assert_eq!(nrows, 1);
            match acts.len() {
                $($c => $body::<$c>(row, acts, out),)*
                _ => {}
            }
        });
    };
    ($name:ident, $feat:literal, $w:ty, $act:ty, $body:ident<$t:ty>, [$($c:literal),*]) => {
        row_kernel!(@doc $name, $feat, $w, $act, |row, nrows, acts, out| {
            debug_assert_eq!(nrows, 1);
            match acts.len() {
                $($c => $body::<$t, $c>(row, acts, out),)*
                _ => {}
            }
        });
    };
    ($name:ident, $feat:literal, $w:ty, $act:ty, $body:ident, rows [$($r:literal),*], cols [$($c:literal),*]) => {
        row_kernel!(@doc $name, $feat, $w, $act, |row, nrows, acts, out| {
            /// The column dispatch for `R` rows.
            #[inline(always)]
            unsafe fn cols<const R: usize>(row: &[$w], acts: &[&[$act]], out: &mut [f32]) {
                match acts.len() {
                    // SAFETY: forwarded contract; exactly R rows and C columns.
                    $($c => unsafe { $body::<R, $c>(row, acts, out) },)*
                    _ => {}
                }
            }
            match nrows {
                $($r => cols::<$r>(row, acts, out),)*
                _ => {}
            }
        });
    };
    ($name:ident, $feat:literal, $w:ty, $act:ty, $body:ident<$t:ty>, rows [$($r:literal),*], cols [$($c:literal),*]) => {
        row_kernel!(@doc $name, $feat, $w, $act, |row, nrows, acts, out| {
            /// The column dispatch for `R` rows.
            #[inline(always)]
            unsafe fn cols<const R: usize>(row: &[$w], acts: &[&[$act]], out: &mut [f32]) {
                match acts.len() {
                    // SAFETY: forwarded contract; exactly R rows and C columns.
                    $($c => unsafe { $body::<$t, R, $c>(row, acts, out) },)*
                    _ => {}
                }
            }
            match nrows {
                $($r => cols::<$r>(row, acts, out),)*
                _ => {}
            }
        });
    };
    (@doc $name:ident, $feat:literal, $w:ty, $act:ty, |$row:ident, $nrows:ident, $a:ident, $out:ident| $dispatch:expr) => {
        /// `out[r * acts.len() + c] = dot(row r, acts[c])` for `r < nrows <= ROWS`, `c < acts.len() <= COLS`.
        ///
        /// # Safety
        #[doc = concat!("The CPU must have `", $feat, "`; `out.len() == nrows * acts.len()`,")]
        /// and every `acts[c]` has `row.len() / nrows` blocks.
        #[target_feature(enable = $feat)]
        pub unsafe fn $name($row: &[$w], $nrows: usize, $a: &[&[$act]], $out: &mut [f32]) {
            debug_assert!($a.len() <= COLS && $nrows <= ROWS && $out.len() == $nrows * $a.len());
            // SAFETY: forwarded contract; each arm passes exactly its rows and columns.
            unsafe { $dispatch }
        }
    };
}

/// Marks a loop body for `llvm-mca` (`scripts/arm-estimate.sh`): `mca!(begin
/// ["name", ...], key = value, ...)` at the top of the body, `mca!(end)` at its
/// bottom. Built with the `mca` feature for aarch64, each is an empty inline
/// assembly statement whose text is an `LLVM-MCA-BEGIN`/`END` comment, with
/// the keys' const values in it (the columns, the weights per iteration);
/// otherwise nothing. Never part of a normal build: the statements keep
/// their place in the instruction order, which can change the schedule a
/// little, so the estimate is of a build that differs only by them.
#[cfg(all(feature = "mca", target_arch = "aarch64"))]
macro_rules! mca {
    (begin [$($name:expr),+] $(, $k:ident = $v:expr)* $(,)?) => {
        // SAFETY: an assembler comment: no instruction, no operand.
        #[allow(unused_unsafe)]
        let () = unsafe {
            ::core::arch::asm!(
                concat!("// LLVM-MCA-BEGIN ", $($name,)+ $(" ", stringify!($k), "={", stringify!($k), "}",)*),
                $($k = const $v,)*
                options(nomem, nostack, preserves_flags)
            )
        };
    };
    (end) => {
        // SAFETY: as above.
        #[allow(unused_unsafe)]
        let () = unsafe { ::core::arch::asm!("// LLVM-MCA-END", options(nomem, nostack, preserves_flags)) };
    };
}
#[cfg(not(all(feature = "mca", target_arch = "aarch64")))]
#[allow(unused_macros)] // used by the aarch64 kernels
macro_rules! mca {
    ($($t:tt)*) => {};
}

/// A panel tile kernel's body for the tile's shape: `$tile::<Q, G, P>(t, out)`
/// with `Q` groups of four values per scale sub-block, `G` sub-blocks per
/// block and `P` pairs of mins per block, one arm per weight format's shape
/// ([`crate::panel::Shape`]); any other shape (no format has one) runs the
/// scalar tile, which computes the same. Expands to an unsafe call: use it
/// inside an `unsafe` block whose contract is the tile kernel's.
macro_rules! panel_tile_by_shape {
    ($tile:ident, $t:expr, $out:expr) => {
        match ($t.shape.block, $t.shape.sub, $t.shape.pairs()) {
            (256, 32, 4) => $tile::<8, 8, 4>($t, $out),   // Q4_K
            (256, 16, 0) => $tile::<4, 16, 0>($t, $out),  // 16-value scales (Q6_K)
            (256, 32, 0) => $tile::<8, 8, 0>($t, $out),   // IQ4_XS
            (256, 256, 8) => $tile::<64, 1, 8>($t, $out), // Q2_K
            (256, 256, 0) => $tile::<64, 1, 0>($t, $out), // Q3_K
            (32, 32, 0) => $tile::<8, 1, 0>($t, $out),    // Q4_0, Q8_0 (and 2:4)
            _ => $crate::panel::gemm_i8_q8x32_8x32($t, $out),
        }
    };
}

#[cfg(target_arch = "aarch64")]
pub mod aarch64_neon;
pub mod cpu;
mod dequant;
pub mod error;
pub mod formats;
pub mod isa;
pub mod matmul;
pub mod panel;
pub mod scalar;
pub mod table;
pub mod testdata;
#[cfg(target_arch = "aarch64")]
mod tile_pass;
#[cfg(target_arch = "x86_64")]
pub mod x86_avx2;
#[cfg(target_arch = "x86_64")]
pub mod x86_avx512;

pub use error::{Error, Result};
pub use formats::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ8K, BlockQ8_0, Format, QuantBlock, WeightBlock,
    QK_K,
};
