//! The dispatch table. One row per (weight format, ISA) names every piece a
//! matmul of that format runs on that ISA: the row kernel and its tile, the
//! panel GEMM tile and the ISA its panel fill is compiled for, the
//! dequantizer, the activation quantizer, the four-row interleaved GEMV
//! and whether the plugin takes the op. [`Config::at`] is the one function
//! that chooses them, and it honours the ISA ceiling (`LLMKERNEL_ISA`,
//! `bench --isa`) for every piece. Dispatch, the test harness, the benches,
//! `llmkernel bench` / `info` and the plugin all read this table, so no
//! kernel exists untested or unbenchmarked.
//!
//! Kernel names follow KleidiAI's grammar: op, weight and activation types,
//! tile (rows x columns per call) and ISA, e.g. `gemv_q4_0_q8_0_4x2_avx2`.
//!
//! Descriptors have private fields: only this module pairs a function with
//! the ISA and tile it was written for, so the safe matmul API can trust
//! them.

use crate::formats::lut::{LutLayout, ROWS as ROWS_X64};
use crate::formats::sparse_x4::X4Block;
use crate::formats::{
    BlockIq2S, BlockIq2Sx64, BlockIq2Xs, BlockIq2Xsx64, BlockIq2Xxs, BlockIq2Xxsx64, BlockIq3S,
    BlockIq3Sx64, BlockIq3Xxs, BlockIq3Xxsx64, BlockIq4Nl, BlockIq4Nlx4, BlockIq4Xs, BlockQ2K,
    BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_0S, BlockQ4_0Sx4, BlockQ4_0x4, BlockQ5K, BlockQ5_0,
    BlockQ5_0x4, BlockQ6K, BlockQ8K, BlockQ8_0, BlockQ8_0S, BlockQ8_0Sx4, BlockQ8_0x4, BlockTq1_0,
    BlockTq1_0Px64, BlockTq1_0x64, BlockTq2_0, BlockTq2_0Px64, BlockTq2_0x64, Format, WeightBlock,
};
use crate::panel::{
    ColLayout, PanelAct, PanelFormat, Tile, COLS as PANEL_COLS, ROWS as PANEL_ROWS,
};
use crate::{scalar, Error, Result};
use std::ops::Range;

pub use crate::isa::Isa;

/// `nrows` consecutive rows of weights (`rows`, row after row) against up to
/// `cols` activation columns: `out[r * acts.len() + j] = dot(row r, acts[j])`.
pub(crate) type RowDotFn<B> =
    unsafe fn(rows: &[B], nrows: usize, acts: &[&[<B as WeightBlock>::Act]], out: &mut [f32]);

/// A dot-product kernel: one function per (op, format, ISA), with its tile.
pub struct RowKernel<B: WeightBlock> {
    name: &'static str,
    isa: Isa,
    rows: usize,
    cols: usize,
    /// # Safety
    /// The CPU must support `isa`; `1 <= nrows <= rows`, `acts.len() <= cols`,
    /// `out.len() == nrows * acts.len()`, every act row `rows.len() / nrows` blocks.
    pub(crate) f: RowDotFn<B>,
}

impl<B: WeightBlock> Clone for RowKernel<B> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B: WeightBlock> Copy for RowKernel<B> {}

impl<B: WeightBlock> RowKernel<B> {
    /// Op, weight and activation types, tile and ISA, e.g. `gemv_q4_k_q8_k_1x4_avx2`.
    pub fn name(&self) -> &'static str {
        self.name
    }
    pub fn isa(&self) -> Isa {
        self.isa
    }
    /// How many weight rows one call takes (each activation block is loaded once for all of them).
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// How many activation columns one call takes (each unpacked weight block is reused across them).
    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// A dequantization kernel. Every one is bit-identical with the scalar reference.
pub struct DequantKernel<B: WeightBlock> {
    name: &'static str,
    isa: Isa,
    /// # Safety
    /// The CPU must support `isa`; `y.len() == x.len() * block length`.
    f: unsafe fn(x: &[B], y: &mut [f32]),
}

impl<B: WeightBlock> Clone for DequantKernel<B> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B: WeightBlock> Copy for DequantKernel<B> {}

impl<B: WeightBlock> DequantKernel<B> {
    pub fn name(&self) -> &'static str {
        self.name
    }
    pub fn isa(&self) -> Isa {
        self.isa
    }
    /// Dequantizes `x` into `y` after checking the lengths and the CPU.
    pub fn run(&self, x: &[B], y: &mut [f32]) -> Result<()> {
        let expected = x.len() * B::FORMAT.block_len();
        if y.len() != expected {
            return Err(Error::LengthMismatch {
                what: "dequantized row length",
                expected,
                got: y.len(),
            });
        }
        check_cpu(self.name, self.isa)?;
        // SAFETY: ISA and lengths checked above.
        unsafe { (self.f)(x, y) };
        Ok(())
    }
}

/// An activation quantizer: f32 rows to the blocks a dot product takes,
/// byte-identical with ggml-cpu's (the scalar reference).
pub struct QuantKernel<A> {
    name: &'static str,
    isa: Isa,
    /// # Safety
    /// The CPU must support `isa`; `y` holds exactly `x.len() / block length` blocks.
    f: unsafe fn(x: &[f32], y: &mut [A]),
}

impl<A> Clone for QuantKernel<A> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<A> Copy for QuantKernel<A> {}

impl<A: PanelAct> QuantKernel<A> {
    pub fn name(&self) -> &'static str {
        self.name
    }
    pub fn isa(&self) -> Isa {
        self.isa
    }
    /// Quantizes one row after checking the lengths and the CPU.
    pub fn run(&self, x: &[f32], y: &mut [A]) -> Result<()> {
        A::FORMAT.check_row_blocks(x.len(), y.len())?;
        check_cpu(self.name, self.isa)?;
        // SAFETY: ISA and lengths checked above.
        unsafe { (self.f)(x, y) };
        Ok(())
    }
}

/// An interleaved GEMV kernel ([`crate::formats::sparse_x4`]): groups of four
/// rows (each `act.len()` blocks along K, group after group) against one
/// activation column; `out[4 * g + r]` is row r of group g. (One call for
/// many groups, so that what depends on the column only is done once.)
pub type X4GemvFn<X> = unsafe fn(groups: &[X], act: &[BlockQ8_0], out: &mut [f32]);

pub struct X4Kernel<X> {
    name: &'static str,
    isa: Isa,
    /// # Safety
    /// The CPU must support `isa`; `groups.len()` a multiple of `act.len() > 0`;
    /// `out.len() == 4 * groups.len() / act.len()`; masks valid 2:4.
    pub(crate) f: X4GemvFn<X>,
}

impl<X> Clone for X4Kernel<X> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<X> Copy for X4Kernel<X> {}

impl<X: X4Block> X4Kernel<X> {
    pub fn name(&self) -> &'static str {
        self.name
    }
    pub fn isa(&self) -> Isa {
        self.isa
    }
    /// The function itself, for benchmarks that time it without [`X4Kernel::run`]'s
    /// checks (calling it is `unsafe`: the contract of [`X4GemvFn`] in this descriptor).
    pub fn function(&self) -> X4GemvFn<X> {
        self.f
    }
    /// Runs the kernel on `groups` (groups of `act.len()` blocks) after
    /// checking the CPU, the lengths and the 2:4 masks.
    pub fn run(&self, groups: &[X], act: &[BlockQ8_0], out: &mut [f32]) -> Result<()> {
        if act.is_empty() || groups.len() % act.len() != 0 {
            return Err(Error::LengthMismatch {
                what: "interleaved blocks (a multiple of the activation blocks)",
                expected: groups.len().next_multiple_of(act.len().max(1)),
                got: groups.len(),
            });
        }
        let expected = 4 * groups.len() / act.len();
        if out.len() != expected {
            return Err(Error::LengthMismatch {
                what: "outputs (4 per group)",
                expected,
                got: out.len(),
            });
        }
        if let Some(block) = groups.iter().position(|g| !g.masks_valid()) {
            return Err(Error::NotSparse24 { block, group: 0 });
        }
        check_cpu(self.name, self.isa)?;
        // SAFETY: ISA, lengths and masks checked above.
        unsafe { (self.f)(groups, act, out) };
        Ok(())
    }
}

/// `out[r * COLS + c] = dot(row r, column c)` for a [`Tile`].
pub type TileFn = unsafe fn(t: &Tile, out: &mut [f32; PANEL_ROWS * PANEL_COLS]);

/// A panel tile kernel ([`crate::panel`]): one per ISA, shared by every weight format.
#[derive(Clone, Copy)]
pub struct PanelKernel {
    name: &'static str,
    isa: Isa,
    /// How the [`crate::panel::ColBlock`]s it reads store their codes
    /// ([`crate::panel::pack_columns_by`]).
    layout: ColLayout,
    /// # Safety
    /// The CPU must support `isa`; the tile built by [`Tile::new`] (which checks the lengths).
    pub(crate) f: TileFn,
}

impl PanelKernel {
    pub fn name(&self) -> &'static str {
        self.name
    }
    pub fn isa(&self) -> Isa {
        self.isa
    }
    /// The function itself, for benchmarks (calling it is `unsafe`: the CPU must support [`PanelKernel::isa`]).
    pub fn function(&self) -> TileFn {
        self.f
    }
    /// How the columns it reads store their codes.
    pub fn layout(&self) -> ColLayout {
        self.layout
    }
    /// Runs the tile after checking the CPU and the columns' layout
    /// ([`Tile::new`] checked the lengths).
    pub fn run(&self, tile: &Tile, out: &mut [f32; PANEL_ROWS * PANEL_COLS]) -> Result<()> {
        check_cpu(self.name, self.isa)?;
        if tile.cols.layout() != self.layout {
            return Err(Error::ColumnLayout {
                kernel: self.name,
                expected: self.layout,
                got: tile.cols.layout(),
            });
        }
        // SAFETY: ISA checked above; the tile's lengths were checked by Tile::new.
        unsafe { (self.f)(tile, out) };
        Ok(())
    }
}

/// Which matmuls of a (format, ISA) the plugin takes, by batch (the number
/// of activation columns). Where ours is slower than ggml's for a batch
/// range, the plugin declines it and llama.cpp's CPU backend keeps the op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PluginTakes {
    /// The smallest and largest batch taken (inclusive).
    pub min_batch: usize,
    pub max_batch: usize,
}

impl PluginTakes {
    /// Every batch.
    pub const ALL: PluginTakes = PluginTakes {
        min_batch: 0,
        max_batch: usize::MAX,
    };
    /// No batch: the CPU backend keeps every op of the format.
    pub const NONE: PluginTakes = PluginTakes {
        min_batch: 1,
        max_batch: 0,
    };
    pub fn takes(&self, batch: usize) -> bool {
        (self.min_batch..=self.max_batch).contains(&batch)
    }
}

/// Fails unless this CPU runs `isa`: the one check a table descriptor needs
/// before its function runs (the table pairs each function with its ISA).
pub(crate) fn check_cpu(kernel: &'static str, isa: Isa) -> Result<()> {
    if isa.supported(&crate::cpu::CpuFeatures::get()) {
        Ok(())
    } else {
        Err(Error::IsaNotSupported {
            kernel,
            isa: isa.name(),
        })
    }
}

/// One row of the table: a format's pieces on one ISA.
struct Row<B: WeightBlock> {
    kernel: RowKernel<B>,
    plugin: PluginTakes,
}

/// The table's rows of one weight format, and its dequantizers. A format
/// in [`crate::formats`]'s list must have them, its panel unpack and its
/// test blocks: the compiler names what is missing.
pub trait Kernels: PanelFormat<Act: ActKernels> + crate::testdata::RandomBlock {
    /// The rows of this format, scalar first, best ISA last.
    #[doc(hidden)]
    #[allow(private_interfaces)]
    fn rows() -> Vec<Row<Self>>;

    /// Every dequantization kernel for this format, scalar first.
    fn dequant_kernels() -> Vec<DequantKernel<Self>>;

    /// The four-row interleaved GEMV that goes with `config`, where the
    /// format has a four-row layout, as `(name, ISA)`.
    fn x4_piece(_config: &Config<Self>) -> Option<(&'static str, Isa)> {
        None
    }

    /// The lookup-table GEMV that decode of this format runs with `config`,
    /// where the format has a lookup-table layout and the table sends decode there.
    fn lut_piece(_config: &Config<Self>) -> Option<(&'static str, Isa)> {
        None
    }

    /// Every dot-product kernel for this format, scalar first.
    fn row_kernels() -> Vec<RowKernel<Self>> {
        Self::rows().into_iter().map(|r| r.kernel).collect()
    }
}

/// The activation quantizers of one activation type.
pub trait ActKernels: PanelAct {
    /// Every quantizer, scalar first.
    fn quant_kernels() -> Vec<QuantKernel<Self>>;
}

/// The scalar reference as a dequantization kernel.
///
/// # Safety
/// None beyond the length contract (checked by [`DequantKernel::run`]).
unsafe fn scalar_dequant<B: WeightBlock>(x: &[B], y: &mut [f32]) {
    B::dequantize_row(x, y).expect("lengths checked by the caller");
}

/// The scalar reference dequantization compiled for AVX2: the compiler
/// vectorizes what it can of the same operations, so it is bit-identical
/// with the reference (Rust never fuses a multiply and an add).
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn auto_dequant_avx2<B: WeightBlock>(x: &[B], y: &mut [f32]) {
    B::dequantize_row(x, y).expect("lengths checked by the caller");
}

/// [`auto_dequant_avx2`] for NEON.
///
/// # Safety
/// The CPU must have NEON.
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn auto_dequant_neon<B: WeightBlock>(x: &[B], y: &mut [f32]) {
    B::dequantize_row(x, y).expect("lengths checked by the caller");
}

/// A format's SIMD dequantizer: the one [`crate::dequant`] writes over its
/// primitives (`dequantize_q4_k`), or, named `dequantize_x(auto)`, the scalar
/// reference compiled for the ISA (a format's first kernels need no
/// hand-written dequantizer; ggml's GET_ROWS and `perplexity` are its users).
macro_rules! simd_dequant {
    ($v:ident, $block:ty, $dq:ident (auto)) => {
        #[cfg(target_arch = "x86_64")]
        $v.push(DequantKernel {
            name: concat!(stringify!($dq), "_auto_avx2"),
            isa: Isa::Avx2,
            f: auto_dequant_avx2::<$block>,
        });
        #[cfg(target_arch = "aarch64")]
        $v.push(DequantKernel {
            name: concat!(stringify!($dq), "_auto_neon"),
            isa: Isa::Neon,
            f: auto_dequant_neon::<$block>,
        });
    };
    ($v:ident, $block:ty, $dq:ident) => {
        #[cfg(target_arch = "x86_64")]
        $v.push(DequantKernel {
            name: concat!(stringify!($dq), "_avx2"),
            isa: Isa::Avx2,
            f: crate::x86_avx2::dequant::$dq,
        });
        #[cfg(target_arch = "aarch64")]
        $v.push(DequantKernel {
            name: concat!(stringify!($dq), "_neon"),
            isa: Isa::Neon,
            f: crate::aarch64_neon::dequant::$dq,
        });
    };
}

/// Registers a format's rows: its scalar reference, then per architecture
/// one (ISA, kernel name with tile, function, plugin policy) per ISA, lowest
/// first; and its dequantizers (see [`simd_dequant!`]).
macro_rules! rows {
    ($block:ty, $scalar:literal, $(x4: $x4:ty,)? $(lut: [$($lut:ty),+],)? dequant: $dq:ident $(($auto:ident))?,
     x86_64: [$(($isa:ident, $name:literal, $module:ident :: $file:ident :: $f:ident, $takes:expr)),* $(,)?],
     aarch64: [$(($aisa:ident, $aname:literal, $amodule:ident :: $afile:ident :: $aset:ident :: $af:ident, $atakes:expr)),* $(,)?]) => {
        impl Kernels for $block {
            #[allow(private_interfaces)]
            fn rows() -> Vec<Row<Self>> {
                #[allow(unused_mut)]
                let mut v = vec![Row {
                    kernel: RowKernel { name: $scalar, isa: Isa::Scalar, rows: 1, cols: 1, f: scalar::row_dot::<$block> },
                    plugin: PluginTakes::ALL,
                }];
                #[cfg(target_arch = "x86_64")]
                v.extend::<[Row<Self>; _]>([$(Row {
                    kernel: RowKernel {
                        name: $name,
                        isa: Isa::$isa,
                        rows: crate::$module::$file::ROWS,
                        cols: crate::$module::$file::COLS,
                        f: crate::$module::$file::$f,
                    },
                    plugin: $takes,
                }),*]);
                #[cfg(target_arch = "aarch64")]
                v.extend::<[Row<Self>; _]>([$(Row {
                    kernel: RowKernel {
                        name: $aname,
                        isa: Isa::$aisa,
                        rows: crate::$amodule::$afile::ROWS,
                        cols: crate::$amodule::$afile::COLS,
                        f: crate::$amodule::$afile::$aset::$af,
                    },
                    plugin: $atakes,
                }),*]);
                v
            }
            $(fn x4_piece(config: &Config<Self>) -> Option<(&'static str, Isa)> {
                let k = config.x4::<$x4>();
                Some((k.name, k.isa))
            })?
            $(fn lut_piece(config: &Config<Self>) -> Option<(&'static str, Isa)> {
                None$(.or_else(|| config.lut_for::<$lut>(1).map(|k| (k.name, k.isa))))+
            })?
            fn dequant_kernels() -> Vec<DequantKernel<Self>> {
                #[allow(unused_mut)]
                let mut v = vec![DequantKernel { name: concat!(stringify!($dq), "_scalar"), isa: Isa::Scalar, f: scalar_dequant::<$block> }];
                simd_dequant!(v, $block, $dq $(($auto))?);
                v
            }
        }
    };
}

// A row takes every batch unless it measured slower than ggml on its tier
// (docs/BENCHMARKS.md); a row that loses names its measurement here.
const ALL: PluginTakes = PluginTakes::ALL;
/// Batches below the panel GEMM only (the row kernels'): IQ4_XS at tier
/// avx2, whose panel GEMM measured 0.90x ggml's at batch 512 (0.86-0.97,
/// `docs/bench-2026-12-04-formats-avx2.jsonl`) while its row kernel is 1.0x.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // an x86 row's policy
const ROW_KERNELS_ONLY: PluginTakes = PluginTakes {
    min_batch: 0,
    max_batch: crate::panel::MIN_COLS - 1,
};

/// Batches of the panel GEMM only: the grid formats (i-quants, ternary) at
/// tiers avx2, neon and dotprod, whose row kernels have not measured faster
/// than ggml's at batch 1 (0.63-0.89x at tier avx2,
/// `docs/bench-2026-12-05-grid-avx2.jsonl`; the NEON/dotprod ternary row
/// kernels estimated at 1.0-1.18x ggml's cycles by llvm-mca,
/// `docs/arm-estimate-2026-12-05.jsonl`; at tiers avx2 and dotprod decode
/// goes through the sign planes instead where [`LutKernels::DECODE`] says
/// so, which lifts the decline for weights the plugin repacks; TQ2_0's AVX2 row kernel, 1.13-1.44x,
/// and the AVX-512 ones, 1.02-2.17x at batch 1
/// (`docs/bench-2026-12-05-grid-avx512-decode.jsonl`) and 1.23-5.5x at
/// batch 512 (`docs/bench-2026-12-04-grid-avx512.jsonl`), take every batch).
const PANEL_ONLY: PluginTakes = PluginTakes {
    min_batch: crate::panel::MIN_COLS,
    max_batch: usize::MAX,
};

rows!(BlockQ4K, "gemv_q4_k_q8_k_1x1_scalar", dequant: dequantize_q4_k,
x86_64: [
    (Avx2, "gemv_q4_k_q8_k_1x4_avx2", x86_avx2::q4_k::gemv_q4_k_q8_k_1x4, ALL),
    (Avx512, "gemv_q4_k_q8_k_1x8_avx512", x86_avx512::q4_k::gemv_q4_k_q8_k_1x8, ALL),
],
aarch64: [
    (Neon, "gemv_q4_k_q8_k_1x4_neon", aarch64_neon::q4_k::neon::gemv_q4_k_q8_k_1x4, ALL),
    (Dotprod, "gemv_q4_k_q8_k_1x4_dotprod", aarch64_neon::q4_k::dotprod::gemv_q4_k_q8_k_1x4, ALL),
]);
rows!(BlockQ5K, "gemv_q5_k_q8_k_1x1_scalar", dequant: dequantize_q5_k(auto),
x86_64: [
    (Avx2, "gemv_q5_k_q8_k_1x4_avx2", x86_avx2::q4_k::gemv_q5_k_q8_k_1x4, ALL),
    (Avx512, "gemv_q5_k_q8_k_1x8_avx512", x86_avx512::q4_k::gemv_q5_k_q8_k_1x8, ALL),
],
aarch64: [
    (Neon, "gemv_q5_k_q8_k_1x4_neon", aarch64_neon::q4_k::neon::gemv_q5_k_q8_k_1x4, ALL),
    (Dotprod, "gemv_q5_k_q8_k_1x4_dotprod", aarch64_neon::q4_k::dotprod::gemv_q5_k_q8_k_1x4, ALL),
]);
rows!(BlockQ6K, "gemv_q6_k_q8_k_1x1_scalar", dequant: dequantize_q6_k(auto),
x86_64: [
    (Avx2, "gemv_q6_k_q8_k_1x4_avx2", x86_avx2::q6_k::gemv_q6_k_q8_k_1x4, ALL),
    (Avx512, "gemv_q6_k_q8_k_1x8_avx512", x86_avx512::q6_k::gemv_q6_k_q8_k_1x8, ALL),
],
aarch64: [
    (Neon, "gemv_q6_k_q8_k_1x4_neon", aarch64_neon::q6_k::neon::gemv_q6_k_q8_k_1x4, ALL),
    (Dotprod, "gemv_q6_k_q8_k_1x4_dotprod", aarch64_neon::q6_k::dotprod::gemv_q6_k_q8_k_1x4, ALL),
]);
rows!(BlockQ3K, "gemv_q3_k_q8_k_1x1_scalar", dequant: dequantize_q3_k,
x86_64: [
    (Avx2, "gemv_q3_k_q8_k_1x4_avx2", x86_avx2::q2_k::gemv_q3_k_q8_k_1x4, ALL),
    (Avx512, "gemv_q3_k_q8_k_1x8_avx512", x86_avx512::q2_k::gemv_q3_k_q8_k_1x8, ALL),
],
aarch64: [
    (Neon, "gemv_q3_k_q8_k_1x4_neon", aarch64_neon::q2_k::neon::gemv_q3_k_q8_k_1x4, ALL),
    (Dotprod, "gemv_q3_k_q8_k_1x4_dotprod", aarch64_neon::q2_k::dotprod::gemv_q3_k_q8_k_1x4, ALL),
]);
rows!(BlockQ2K, "gemv_q2_k_q8_k_1x1_scalar", dequant: dequantize_q2_k,
x86_64: [
    (Avx2, "gemv_q2_k_q8_k_1x4_avx2", x86_avx2::q2_k::gemv_q2_k_q8_k_1x4, ALL),
    (Avx512, "gemv_q2_k_q8_k_1x8_avx512", x86_avx512::q2_k::gemv_q2_k_q8_k_1x8, ALL),
],
aarch64: [
    (Neon, "gemv_q2_k_q8_k_1x4_neon", aarch64_neon::q2_k::neon::gemv_q2_k_q8_k_1x4, ALL),
    (Dotprod, "gemv_q2_k_q8_k_1x4_dotprod", aarch64_neon::q2_k::dotprod::gemv_q2_k_q8_k_1x4, ALL),
]);
rows!(BlockQ4_0, "gemv_q4_0_q8_0_1x1_scalar", x4: BlockQ4_0x4,
    dequant: dequantize_q4_0,
x86_64: [
    (Avx2, "gemv_q4_0_q8_0_4x2_avx2", x86_avx2::q8_0::gemv_q4_0_q8_0_4x2, ALL),
    (Avx512, "gemv_q4_0_q8_0_4x4_avx512", x86_avx512::q8_0::gemv_q4_0_q8_0_4x4, ALL),
],
aarch64: [
    (Neon, "gemv_q4_0_q8_0_1x4_neon", aarch64_neon::q8_0::neon::gemv_q4_0_q8_0_1x4, ALL),
    (Dotprod, "gemv_q4_0_q8_0_1x4_dotprod", aarch64_neon::q8_0::dotprod::gemv_q4_0_q8_0_1x4, ALL),
    (I8mm, "gemv_q4_0_q8_0_2x4_i8mm", aarch64_neon::q8_0_mm::i8mm::gemv_q4_0_q8_0_2x4_i8mm, ALL),
]);
rows!(BlockQ5_0, "gemv_q5_0_q8_0_1x1_scalar", x4: BlockQ5_0x4,
    dequant: dequantize_q5_0(auto),
x86_64: [
    (Avx2, "gemv_q5_0_q8_0_4x2_avx2", x86_avx2::q8_0::gemv_q5_0_q8_0_4x2, ALL),
    (Avx512, "gemv_q5_0_q8_0_4x4_avx512", x86_avx512::q8_0::gemv_q5_0_q8_0_4x4, ALL),
],
aarch64: [
    (Neon, "gemv_q5_0_q8_0_1x4_neon", aarch64_neon::q8_0::neon::gemv_q5_0_q8_0_1x4, ALL),
    (Dotprod, "gemv_q5_0_q8_0_1x4_dotprod", aarch64_neon::q8_0::dotprod::gemv_q5_0_q8_0_1x4, ALL),
    (I8mm, "gemv_q5_0_q8_0_2x4_i8mm", aarch64_neon::q8_0_mm::i8mm::gemv_q5_0_q8_0_2x4_i8mm, ALL),
]);
rows!(BlockIq4Nl, "gemv_iq4_nl_q8_0_1x1_scalar", x4: BlockIq4Nlx4,
    dequant: dequantize_iq4_nl(auto),
x86_64: [
    (Avx2, "gemv_iq4_nl_q8_0_4x2_avx2", x86_avx2::q8_0::gemv_iq4_nl_q8_0_4x2, ALL),
    (Avx512, "gemv_iq4_nl_q8_0_4x4_avx512", x86_avx512::q8_0::gemv_iq4_nl_q8_0_4x4, ALL),
],
aarch64: [
    (Neon, "gemv_iq4_nl_q8_0_1x4_neon", aarch64_neon::q8_0::neon::gemv_iq4_nl_q8_0_1x4, ALL),
    (Dotprod, "gemv_iq4_nl_q8_0_1x4_dotprod", aarch64_neon::q8_0::dotprod::gemv_iq4_nl_q8_0_1x4, ALL),
    (I8mm, "gemv_iq4_nl_q8_0_2x4_i8mm", aarch64_neon::q8_0_mm::i8mm::gemv_iq4_nl_q8_0_2x4_i8mm, ALL),
]);
rows!(BlockIq4Xs, "gemv_iq4_xs_q8_k_1x1_scalar", dequant: dequantize_iq4_xs(auto),
x86_64: [
    (Avx2, "gemv_iq4_xs_q8_k_1x4_avx2", x86_avx2::iq4_xs::gemv_iq4_xs_q8_k_1x4, ROW_KERNELS_ONLY),
    (Avx512, "gemv_iq4_xs_q8_k_1x8_avx512", x86_avx512::iq4_xs::gemv_iq4_xs_q8_k_1x8, ALL),
],
aarch64: [
    (Neon, "gemv_iq4_xs_q8_k_1x4_neon", aarch64_neon::iq4_xs::neon::gemv_iq4_xs_q8_k_1x4, ALL),
    (Dotprod, "gemv_iq4_xs_q8_k_1x4_dotprod", aarch64_neon::iq4_xs::dotprod::gemv_iq4_xs_q8_k_1x4, ALL),
]);
rows!(BlockQ8_0, "gemv_q8_0_q8_0_1x1_scalar", x4: BlockQ8_0x4,
    dequant: dequantize_q8_0,
x86_64: [
    (Avx2, "gemv_q8_0_q8_0_4x2_avx2", x86_avx2::q8_0::gemv_q8_0_q8_0_4x2, ALL),
    (Avx512, "gemv_q8_0_q8_0_4x4_avx512", x86_avx512::q8_0::gemv_q8_0_q8_0_4x4, ALL),
],
aarch64: [
    (Neon, "gemv_q8_0_q8_0_1x4_neon", aarch64_neon::q8_0::neon::gemv_q8_0_q8_0_1x4, ALL),
    (Dotprod, "gemv_q8_0_q8_0_1x4_dotprod", aarch64_neon::q8_0::dotprod::gemv_q8_0_q8_0_1x4, ALL),
    (I8mm, "gemv_q8_0_q8_0_2x4_i8mm", aarch64_neon::q8_0_mm::i8mm::gemv_q8_0_q8_0_2x4_i8mm, ALL),
]);
rows!(BlockIq2Xxs, "gemv_iq2_xxs_q8_k_1x1_scalar", lut: [BlockIq2Xxsx64], dequant: dequantize_iq2_xxs(auto),
x86_64: [
    (Avx2, "gemv_iq2_xxs_q8_k_1x4_avx2", x86_avx2::grid::gemv_iq2_xxs_q8_k_1x4, PANEL_ONLY),
    (Avx512, "gemv_iq2_xxs_q8_k_1x8_avx512", x86_avx512::grid::gemv_iq2_xxs_q8_k_1x8, ALL),
],
aarch64: [
    (Neon, "gemv_iq2_xxs_q8_k_1x4_neon", aarch64_neon::grid::neon::gemv_iq2_xxs_q8_k_1x4, PANEL_ONLY),
    (Dotprod, "gemv_iq2_xxs_q8_k_1x4_dotprod", aarch64_neon::grid::dotprod::gemv_iq2_xxs_q8_k_1x4, PANEL_ONLY),
    (I8mm, "gemv_iq2_xxs_q8_k_2x4_i8mm", aarch64_neon::grid_mm::i8mm::gemv_iq2_xxs_q8_k_2x4_i8mm, PANEL_ONLY),
]);
rows!(BlockIq2Xs, "gemv_iq2_xs_q8_k_1x1_scalar", lut: [BlockIq2Xsx64], dequant: dequantize_iq2_xs(auto),
x86_64: [
    (Avx2, "gemv_iq2_xs_q8_k_1x4_avx2", x86_avx2::grid::gemv_iq2_xs_q8_k_1x4, PANEL_ONLY),
    (Avx512, "gemv_iq2_xs_q8_k_1x8_avx512", x86_avx512::grid::gemv_iq2_xs_q8_k_1x8, ALL),
],
aarch64: [
    (Neon, "gemv_iq2_xs_q8_k_1x4_neon", aarch64_neon::grid::neon::gemv_iq2_xs_q8_k_1x4, PANEL_ONLY),
    (Dotprod, "gemv_iq2_xs_q8_k_1x4_dotprod", aarch64_neon::grid::dotprod::gemv_iq2_xs_q8_k_1x4, PANEL_ONLY),
    (I8mm, "gemv_iq2_xs_q8_k_2x4_i8mm", aarch64_neon::grid_mm::i8mm::gemv_iq2_xs_q8_k_2x4_i8mm, PANEL_ONLY),
]);
rows!(BlockIq2S, "gemv_iq2_s_q8_k_1x1_scalar", lut: [BlockIq2Sx64], dequant: dequantize_iq2_s(auto),
x86_64: [
    (Avx2, "gemv_iq2_s_q8_k_1x4_avx2", x86_avx2::grid::gemv_iq2_s_q8_k_1x4, PANEL_ONLY),
    (Avx512, "gemv_iq2_s_q8_k_1x8_avx512", x86_avx512::grid::gemv_iq2_s_q8_k_1x8, ALL),
],
aarch64: [
    (Neon, "gemv_iq2_s_q8_k_1x4_neon", aarch64_neon::grid::neon::gemv_iq2_s_q8_k_1x4, PANEL_ONLY),
    (Dotprod, "gemv_iq2_s_q8_k_1x4_dotprod", aarch64_neon::grid::dotprod::gemv_iq2_s_q8_k_1x4, PANEL_ONLY),
    (I8mm, "gemv_iq2_s_q8_k_2x4_i8mm", aarch64_neon::grid_mm::i8mm::gemv_iq2_s_q8_k_2x4_i8mm, PANEL_ONLY),
]);
rows!(BlockIq3Xxs, "gemv_iq3_xxs_q8_k_1x1_scalar", lut: [BlockIq3Xxsx64], dequant: dequantize_iq3_xxs(auto),
x86_64: [
    (Avx2, "gemv_iq3_xxs_q8_k_1x4_avx2", x86_avx2::grid::gemv_iq3_xxs_q8_k_1x4, PANEL_ONLY),
    (Avx512, "gemv_iq3_xxs_q8_k_1x8_avx512", x86_avx512::grid::gemv_iq3_xxs_q8_k_1x8, ALL),
],
aarch64: [
    (Neon, "gemv_iq3_xxs_q8_k_1x4_neon", aarch64_neon::grid::neon::gemv_iq3_xxs_q8_k_1x4, PANEL_ONLY),
    (Dotprod, "gemv_iq3_xxs_q8_k_1x4_dotprod", aarch64_neon::grid::dotprod::gemv_iq3_xxs_q8_k_1x4, PANEL_ONLY),
    (I8mm, "gemv_iq3_xxs_q8_k_2x4_i8mm", aarch64_neon::grid_mm::i8mm::gemv_iq3_xxs_q8_k_2x4_i8mm, PANEL_ONLY),
]);
rows!(BlockIq3S, "gemv_iq3_s_q8_k_1x1_scalar", lut: [BlockIq3Sx64], dequant: dequantize_iq3_s(auto),
x86_64: [
    (Avx2, "gemv_iq3_s_q8_k_1x4_avx2", x86_avx2::grid::gemv_iq3_s_q8_k_1x4, PANEL_ONLY),
    (Avx512, "gemv_iq3_s_q8_k_1x8_avx512", x86_avx512::grid::gemv_iq3_s_q8_k_1x8, ALL),
],
aarch64: [
    (Neon, "gemv_iq3_s_q8_k_1x4_neon", aarch64_neon::grid::neon::gemv_iq3_s_q8_k_1x4, PANEL_ONLY),
    (Dotprod, "gemv_iq3_s_q8_k_1x4_dotprod", aarch64_neon::grid::dotprod::gemv_iq3_s_q8_k_1x4, PANEL_ONLY),
    (I8mm, "gemv_iq3_s_q8_k_2x4_i8mm", aarch64_neon::grid_mm::i8mm::gemv_iq3_s_q8_k_2x4_i8mm, PANEL_ONLY),
]);
rows!(BlockTq1_0, "gemv_tq1_0_q8_k_1x1_scalar", lut: [BlockTq1_0x64, BlockTq1_0Px64], dequant: dequantize_tq1_0(auto),
x86_64: [
    (Avx2, "gemv_tq1_0_q8_k_1x4_avx2", x86_avx2::grid::gemv_tq1_0_q8_k_1x4, PANEL_ONLY),
    (Avx512, "gemv_tq1_0_q8_k_1x8_avx512", x86_avx512::grid::gemv_tq1_0_q8_k_1x8, ALL),
],
aarch64: [
    (Neon, "gemv_tq1_0_q8_k_1x4_neon", aarch64_neon::grid::neon::gemv_tq1_0_q8_k_1x4, PANEL_ONLY),
    (Dotprod, "gemv_tq1_0_q8_k_1x4_dotprod", aarch64_neon::grid::dotprod::gemv_tq1_0_q8_k_1x4, PANEL_ONLY),
]);
rows!(BlockTq2_0, "gemv_tq2_0_q8_k_1x1_scalar", lut: [BlockTq2_0x64, BlockTq2_0Px64], dequant: dequantize_tq2_0(auto),
x86_64: [
    (Avx2, "gemv_tq2_0_q8_k_1x4_avx2", x86_avx2::grid::gemv_tq2_0_q8_k_1x4, ALL),
    (Avx512, "gemv_tq2_0_q8_k_1x8_avx512", x86_avx512::grid::gemv_tq2_0_q8_k_1x8, ALL),
],
aarch64: [
    (Neon, "gemv_tq2_0_q8_k_1x4_neon", aarch64_neon::grid::neon::gemv_tq2_0_q8_k_1x4, PANEL_ONLY),
    (Dotprod, "gemv_tq2_0_q8_k_1x4_dotprod", aarch64_neon::grid::dotprod::gemv_tq2_0_q8_k_1x4, PANEL_ONLY),
]);
rows!(BlockQ4_0S, "gemv_q4_0s_q8_0_1x1_scalar", x4: BlockQ4_0Sx4,
    dequant: dequantize_q4_0s,
x86_64: [
    (Avx2, "gemv_q4_0s_q8_0_4x2_avx2", x86_avx2::q8_0::gemv_q4_0s_q8_0_4x2, ALL),
    (Avx512, "gemv_q4_0s_q8_0_4x4_avx512", x86_avx512::q8_0::gemv_q4_0s_q8_0_4x4, ALL),
],
aarch64: [
    (Neon, "gemv_q4_0s_q8_0_1x4_neon", aarch64_neon::q8_0::neon::gemv_q4_0s_q8_0_1x4, ALL),
    (Dotprod, "gemv_q4_0s_q8_0_1x4_dotprod", aarch64_neon::q8_0::dotprod::gemv_q4_0s_q8_0_1x4, ALL),
    (I8mm, "gemv_q4_0s_q8_0_2x4_i8mm", aarch64_neon::q8_0_mm::i8mm::gemv_q4_0s_q8_0_2x4_i8mm, ALL),
]);
rows!(BlockQ8_0S, "gemv_q8_0s_q8_0_1x1_scalar", x4: BlockQ8_0Sx4,
    dequant: dequantize_q8_0s,
x86_64: [
    (Avx2, "gemv_q8_0s_q8_0_4x2_avx2", x86_avx2::q8_0::gemv_q8_0s_q8_0_4x2, ALL),
    (Avx512, "gemv_q8_0s_q8_0_4x4_avx512", x86_avx512::q8_0::gemv_q8_0s_q8_0_4x4, ALL),
],
aarch64: [
    (Neon, "gemv_q8_0s_q8_0_1x4_neon", aarch64_neon::q8_0::neon::gemv_q8_0s_q8_0_1x4, ALL),
    (Dotprod, "gemv_q8_0s_q8_0_1x4_dotprod", aarch64_neon::q8_0::dotprod::gemv_q8_0s_q8_0_1x4, ALL),
    (I8mm, "gemv_q8_0s_q8_0_2x4_i8mm", aarch64_neon::q8_0_mm::i8mm::gemv_q8_0s_q8_0_2x4_i8mm, ALL),
]);

/// The scalar reference as an activation quantizer.
///
/// # Safety
/// None beyond the length contract (checked by [`QuantKernel::run`]).
unsafe fn scalar_quant<B: WeightBlock<Act = A>, A>(x: &[f32], y: &mut [A]) {
    B::quantize_activations(x, y).expect("lengths checked by the caller");
}

impl ActKernels for BlockQ8K {
    fn quant_kernels() -> Vec<QuantKernel<Self>> {
        #[allow(unused_mut)]
        let mut v = vec![QuantKernel {
            name: "quantize_q8_k_scalar",
            isa: Isa::Scalar,
            f: scalar_quant::<BlockQ4K, _>,
        }];
        #[cfg(target_arch = "x86_64")]
        v.push(QuantKernel {
            name: "quantize_q8_k_avx2",
            isa: Isa::Avx2,
            f: crate::x86_avx2::quant::quantize_q8_k,
        });
        v
    }
}

impl ActKernels for BlockQ8_0 {
    fn quant_kernels() -> Vec<QuantKernel<Self>> {
        #[allow(unused_mut)]
        let mut v = vec![QuantKernel {
            name: "quantize_q8_0_scalar",
            isa: Isa::Scalar,
            f: scalar_quant::<BlockQ8_0, _>,
        }];
        #[cfg(target_arch = "x86_64")]
        v.push(QuantKernel {
            name: "quantize_q8_0_avx2",
            isa: Isa::Avx2,
            f: crate::x86_avx2::quant::quantize_q8_0,
        });
        v
    }
}

/// Every panel tile kernel, scalar reference first, best ISA last.
pub fn panel_kernels() -> Vec<PanelKernel> {
    #[allow(unused_mut)]
    let mut v = vec![PanelKernel {
        name: "gemm_i8_q8x32_8x32_scalar",
        isa: Isa::Scalar,
        layout: ColLayout::BY4,
        f: crate::panel::gemm_i8_q8x32_8x32,
    }];
    #[cfg(target_arch = "x86_64")]
    v.extend([
        PanelKernel {
            name: "gemm_i8_q8x32_8x32_avx2",
            layout: ColLayout::BY4,
            isa: Isa::Avx2,
            f: crate::x86_avx2::panel::gemm_i8_q8x32_8x32,
        },
        PanelKernel {
            name: "gemm_i8_q8x32_8x32_avx512",
            layout: ColLayout::BY4,
            isa: Isa::Avx512,
            f: crate::x86_avx512::panel::gemm_i8_q8x32_8x32,
        },
    ]);
    #[cfg(target_arch = "aarch64")]
    v.extend([
        PanelKernel {
            name: "gemm_i8_q8x32_8x32_dotprod",
            layout: crate::aarch64_neon::panel::DOTPROD_LAYOUT,
            isa: Isa::Dotprod,
            f: crate::aarch64_neon::panel::gemm_i8_q8x32_8x32,
        },
        PanelKernel {
            name: "gemm_i8_q8x32_8x32_i8mm",
            layout: crate::aarch64_neon::panel::I8MM_LAYOUT,
            isa: Isa::I8mm,
            f: crate::aarch64_neon::panel::gemm_i8_q8x32_8x32_i8mm,
        },
    ]);
    v
}

/// The scalar reference as an interleaved GEMV kernel.
///
/// # Safety
/// None (safe code behind the kernel signature).
unsafe fn scalar_x4<X: X4Block>(groups: &[X], act: &[BlockQ8_0], out: &mut [f32]) {
    for (group, out) in groups.chunks_exact(act.len()).zip(out.chunks_exact_mut(4)) {
        crate::formats::sparse_x4::gemv_x4_ref(group, act, out.try_into().unwrap())
    }
}

/// The interleaved GEMVs of a four-row layout, scalar reference first.
pub trait X4Kernels: X4Block<Row: Kernels> {
    fn x4_kernels() -> Vec<X4Kernel<Self>>;
}

/// Registers the interleaved GEMVs of a layout: the scalar reference, then
/// AVX2 and AVX-512, or NEON and dotprod. Each is a 4x1 tile (four rows, one column).
macro_rules! x4_rows {
    ($block:ty, $f:ident, $name:literal) => {
        impl X4Kernels for $block {
            fn x4_kernels() -> Vec<X4Kernel<Self>> {
                #[allow(unused_mut)]
                let mut v = vec![X4Kernel {
                    name: concat!($name, "_4x1_scalar"),
                    isa: Isa::Scalar,
                    f: scalar_x4::<Self>,
                }];
                #[cfg(target_arch = "x86_64")]
                v.extend([
                    X4Kernel {
                        name: concat!($name, "_4x1_avx2"),
                        isa: Isa::Avx2,
                        f: crate::x86_avx2::q8_0::$f,
                    },
                    X4Kernel {
                        name: concat!($name, "_4x1_avx512"),
                        isa: Isa::Avx512,
                        f: crate::x86_avx512::sparse_x4::$f,
                    },
                ]);
                #[cfg(target_arch = "aarch64")]
                v.extend([
                    X4Kernel {
                        name: concat!($name, "_4x1_neon"),
                        isa: Isa::Neon,
                        f: crate::aarch64_neon::q8_0::neon::$f,
                    },
                    X4Kernel {
                        name: concat!($name, "_4x1_dotprod"),
                        isa: Isa::Dotprod,
                        f: crate::aarch64_neon::q8_0::dotprod::$f,
                    },
                ]);
                v
            }
        }
    };
}

x4_rows!(BlockQ8_0Sx4, gemv_q8_0sx4_q8_0_4x1, "gemv_q8_0sx4_q8_0");
x4_rows!(BlockQ4_0Sx4, gemv_q4_0sx4_q8_0_4x1, "gemv_q4_0sx4_q8_0");
x4_rows!(BlockQ8_0x4, gemv_q8_0x4_q8_0_4x1, "gemv_q8_0x4_q8_0");
x4_rows!(BlockQ4_0x4, gemv_q4_0x4_q8_0_4x1, "gemv_q4_0x4_q8_0");
x4_rows!(BlockIq4Nlx4, gemv_iq4_nlx4_q8_0_4x1, "gemv_iq4_nlx4_q8_0");
x4_rows!(BlockQ5_0x4, gemv_q5_0x4_q8_0_4x1, "gemv_q5_0x4_q8_0");

/// A lookup-table GEMV of a ternary layout ([`crate::formats::ternary_x64`]):
/// block positions `blocks` of `ngroups` groups of 64 rows (block position
/// after block position) against one column, added to `out` (64 per group,
/// in slot order).
pub type LutGemvFn<X> =
    unsafe fn(x: &[X], ngroups: usize, blocks: Range<usize>, act: &[BlockQ8K], out: &mut [f32]);

pub struct LutKernel<X> {
    name: &'static str,
    isa: Isa,
    /// # Safety
    /// The CPU must support `isa`; `x.len() >= blocks.end * ngroups`,
    /// `act.len() >= blocks.end`, `out.len() >= 64 * ngroups`.
    pub(crate) f: LutGemvFn<X>,
}

impl<X> Clone for LutKernel<X> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<X> Copy for LutKernel<X> {}

impl<X: LutLayout> LutKernel<X> {
    pub fn name(&self) -> &'static str {
        self.name
    }
    pub fn isa(&self) -> Isa {
        self.isa
    }
    /// Runs the kernel after checking the CPU and the lengths.
    pub fn run(
        &self,
        x: &[X],
        ngroups: usize,
        blocks: Range<usize>,
        act: &[BlockQ8K],
        out: &mut [f32],
    ) -> Result<()> {
        let need = blocks.end.checked_mul(ngroups);
        if need.is_none_or(|n| x.len() < n) || act.len() < blocks.end {
            return Err(Error::LengthMismatch {
                what: "lookup-table blocks (block positions * groups)",
                expected: need.unwrap_or(usize::MAX),
                got: x.len(),
            });
        }
        if out.len() < ROWS_X64 * ngroups {
            return Err(Error::LengthMismatch {
                what: "outputs (64 per group)",
                expected: ROWS_X64 * ngroups,
                got: out.len(),
            });
        }
        check_cpu(self.name, self.isa)?;
        // SAFETY: ISA and lengths checked above.
        unsafe { (self.f)(x, ngroups, blocks, act, out) };
        Ok(())
    }
}

/// The scalar reference as a lookup-table kernel.
///
/// # Safety
/// None (safe code behind the kernel signature).
unsafe fn scalar_lut<X: LutLayout>(
    x: &[X],
    ngroups: usize,
    blocks: Range<usize>,
    act: &[BlockQ8K],
    out: &mut [f32],
) {
    X::gemv_ref(x, ngroups, blocks, act, out)
}

/// The lookup-table GEMVs of a ternary layout, scalar reference first.
pub trait LutKernels: LutLayout<Row: Kernels> {
    /// The ISA tiers (ceilings) at which decode (batches below
    /// [`crate::panel::MIN_COLS`]) of the rows' format goes through this
    /// layout's lookup-table GEMV instead of the row kernel: where it
    /// measured faster (docs/BENCHMARKS.md).
    const DECODE: &'static [Isa];
    fn lut_kernels() -> Vec<LutKernel<Self>>;
}

macro_rules! lut_rows {
    ($block:ty, $name:literal, x86_64: [$(($kisa:ident, $kname:literal, $kf:path)),*], decode: [$($isa:ident),*]) => {
        lut_rows!($block, $name, x86_64: [$(($kisa, $kname, $kf)),*], aarch64: [], decode: [$($isa),*]);
    };
    ($block:ty, $name:literal, x86_64: [$(($kisa:ident, $kname:literal, $kf:path)),*],
     aarch64: [$(($aisa:ident, $aname:literal, $af:path)),*], decode: [$($isa:ident),*]) => {
        impl LutKernels for $block {
            const DECODE: &'static [Isa] = &[$(Isa::$isa),*];
            fn lut_kernels() -> Vec<LutKernel<Self>> {
                #[allow(unused_mut)]
                let mut v = vec![LutKernel {
                    name: concat!($name, "_scalar"),
                    isa: Isa::Scalar,
                    f: scalar_lut::<Self>,
                }];
                #[cfg(target_arch = "x86_64")]
                v.extend::<[LutKernel<Self>; _]>([$(LutKernel {
                    name: concat!($name, $kname),
                    isa: Isa::$kisa,
                    f: $kf,
                }),*]);
                #[cfg(target_arch = "aarch64")]
                v.extend::<[LutKernel<Self>; _]>([$(LutKernel {
                    name: concat!($name, $aname),
                    isa: Isa::$aisa,
                    f: $af,
                }),*]);
                v
            }
        }
    };
}

// TQ1_0's lookup-table GEMV: 1.6-2.1x its AVX-512 row kernel at batch 1;
// TQ2_0's: 0.85-0.93x (the row kernel is already near the read bandwidth),
// so TQ2_0 keeps GGUF's layout (docs/BENCHMARKS.md, 2026-12-05 (third session)).
lut_rows!(BlockTq1_0x64, "lut_tq1_0x64_q8_k_64x1",
    x86_64: [(Avx512, "_avx512", crate::x86_avx512::ternary_lut::gemv_ternary_x64::<Self>)],
    decode: [Avx512]);
lut_rows!(BlockTq2_0x64, "lut_tq2_0x64_q8_k_64x1",
    x86_64: [(Avx512, "_avx512", crate::x86_avx512::ternary_lut::gemv_ternary_x64::<Self>)],
    decode: []);
// The ternary formats as two sign planes (`q + 1 = σ0 + 2 σ1`) at tier avx2,
// where a 256-entry table has no one-instruction lookup: TQ1_0 2.1x ggml at
// batch 1 (its row kernel 0.8x), TQ2_0 1.5-1.6x (its row kernel 1.4x)
// (docs/BENCHMARKS.md, 2026-12-05 (sixth session)).
lut_rows!(BlockTq1_0Px64, "lut_tq1_0px64_q8_k_64x1",
    x86_64: [(Avx2, "_avx2", crate::x86_avx2::plane_lut::gemv_planes_x64::<Self>)],
    aarch64: [(Dotprod, "_dotprod", crate::aarch64_neon::plane_lut::gemv_planes_x64::<Self>)],
    decode: [Avx2, Dotprod, I8mm]);
lut_rows!(BlockTq2_0Px64, "lut_tq2_0px64_q8_k_64x1",
    x86_64: [(Avx2, "_avx2", crate::x86_avx2::plane_lut::gemv_planes_x64::<Self>)],
    aarch64: [(Dotprod, "_dotprod", crate::aarch64_neon::plane_lut::gemv_planes_x64::<Self>)],
    decode: [Avx2]);
// At tier dotprod the sign planes' NEON kernel: 0.35-0.85x ggml's cycles
// for the i-quants, 0.27-0.72x for TQ1_0, 0.47-1.22x for TQ2_0 (which keeps
// ggml's decode there), by llvm-mca on four CPU models
// (docs/arm-estimate-2026-12-05-planes.jsonl).
// The 2-bit i-quants' sign planes: 2.0-2.7x ggml at batch 1 at tier avx2
// (their row kernels 0.6-1.0x), 1.9-2.3x at tier avx512 (the AVX-512 row
// kernels 0.9-1.6x) (docs/BENCHMARKS.md, 2026-12-05 (fourth session)).
lut_rows!(BlockIq2Xxsx64, "lut_iq2_xxsx64_q8_k_64x1",
    x86_64: [(Avx2, "_avx2", crate::x86_avx2::plane_lut::gemv_planes_x64::<Self>)],
    aarch64: [(Dotprod, "_dotprod", crate::aarch64_neon::plane_lut::gemv_planes_x64::<Self>)],
    decode: [Avx2, Avx512, Dotprod, I8mm]);
lut_rows!(BlockIq2Xsx64, "lut_iq2_xsx64_q8_k_64x1",
    x86_64: [(Avx2, "_avx2", crate::x86_avx2::plane_lut::gemv_planes_x64::<Self>)],
    aarch64: [(Dotprod, "_dotprod", crate::aarch64_neon::plane_lut::gemv_planes_x64::<Self>)],
    decode: [Avx2, Avx512, Dotprod, I8mm]);
lut_rows!(BlockIq2Sx64, "lut_iq2_sx64_q8_k_64x1",
    x86_64: [(Avx2, "_avx2", crate::x86_avx2::plane_lut::gemv_planes_x64::<Self>)],
    aarch64: [(Dotprod, "_dotprod", crate::aarch64_neon::plane_lut::gemv_planes_x64::<Self>)],
    decode: [Avx2, Avx512, Dotprod, I8mm]);
// IQ3_S's four planes: 2.8-3.7x ggml at batch 1 at tier avx2 (its row
// kernel 0.6x), 3.0-3.2x at tier avx512 (the AVX-512 row kernel 2.0-2.1x)
// (docs/BENCHMARKS.md, 2026-12-05 (fifth session)).
lut_rows!(BlockIq3Sx64, "lut_iq3_sx64_q8_k_64x1",
    x86_64: [(Avx2, "_avx2", crate::x86_avx2::plane_lut::gemv_planes_x64::<Self>)],
    aarch64: [(Dotprod, "_dotprod", crate::aarch64_neon::plane_lut::gemv_planes_x64::<Self>)],
    decode: [Avx2, Avx512, Dotprod, I8mm]);
// IQ3_XXS's five planes: 1.7-2.1x ggml at batch 1 at tier avx2 (its row
// kernel 0.7x); at avx512 1.5-1.9x against the AVX-512 row kernel's
// 1.9-2.8x, which keeps decode there (docs/BENCHMARKS.md, 2026-12-05 (fifth session)).
lut_rows!(BlockIq3Xxsx64, "lut_iq3_xxsx64_q8_k_64x1",
    x86_64: [(Avx2, "_avx2", crate::x86_avx2::plane_lut::gemv_planes_x64::<Self>)],
    aarch64: [(Dotprod, "_dotprod", crate::aarch64_neon::plane_lut::gemv_planes_x64::<Self>)],
    decode: [Avx2, Dotprod, I8mm]);

/// The name of the panel fill ([`crate::panel::Unpacked::fill`]) for the tile of
/// `isa`. At avx512 the interleaved groups unpack with AVX-512 code and the
/// GGUF blocks with the AVX2 build, which is faster there (docs/BENCHMARKS.md).
fn fill_name(isa: Isa) -> &'static str {
    match isa {
        Isa::Avx512 => "unpack_avx512",
        Isa::Avx2 => "unpack_avx2",
        _ => "unpack_scalar",
    }
}

/// The best of `pieces` (in ISA order) admitted under `ceiling`.
fn best<T: Copy>(pieces: &[T], isa: impl Fn(&T) -> Isa, ceiling: Isa) -> Option<T> {
    pieces
        .iter()
        .rev()
        .find(|p| isa(p).admitted_under(ceiling))
        .copied()
}

/// Everything a matmul of format `B` runs under one ISA ceiling, chosen
/// together by [`Config::at`] so the pieces cannot be mismatched.
pub struct Config<B: Kernels> {
    ceiling: Isa,
    row: RowKernel<B>,
    plugin: PluginTakes,
    panel: Option<PanelKernel>,
    fill: Isa,
    dequant: DequantKernel<B>,
    quant: QuantKernel<B::Act>,
}

impl<B: Kernels> Clone for Config<B> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B: Kernels> Copy for Config<B> {}

impl<B: Kernels> Config<B> {
    /// The best pieces this CPU runs at or below `ceiling`.
    pub fn at(ceiling: Isa) -> Config<B> {
        let rows = B::rows();
        let row = rows
            .iter()
            .rev()
            .find(|r| r.kernel.isa.admitted_under(ceiling))
            .unwrap_or(&rows[0]);
        // The best panel tile admitted under the ceiling, whatever the row
        // kernel's ISA (a format whose `smmla` GEMV did not pay keeps its
        // dotprod row kernel at tier i8mm, and still gets the i8mm tile);
        // none for the scalar row kernel, which the scalar tile would be no
        // faster than.
        let panel = best(&panel_kernels(), |p| p.isa, ceiling)
            .filter(|p| p.isa != Isa::Scalar && row.kernel.isa != Isa::Scalar);
        let fill = [Isa::Avx512, Isa::Avx2]
            .into_iter()
            .find(|i| i.admitted_under(ceiling))
            .unwrap_or(Isa::Scalar);
        Config {
            ceiling,
            row: row.kernel,
            plugin: row.plugin,
            panel,
            fill,
            dequant: best(&B::dequant_kernels(), |k| k.isa, ceiling)
                .expect("every format has a scalar dequantizer"),
            quant: best(&B::Act::quant_kernels(), |k| k.isa, ceiling)
                .expect("every activation type has a scalar quantizer"),
        }
    }

    /// [`Config::at`] the process's ceiling ([`Isa::ceiling`]: this CPU's
    /// best, or `LLMKERNEL_ISA`).
    pub fn best() -> Result<Config<B>> {
        Ok(Config::at(Isa::ceiling()?))
    }

    /// The ceiling this was chosen under.
    pub fn ceiling(&self) -> Isa {
        self.ceiling
    }
    /// The row kernel: batches below [`crate::panel::MIN_COLS`], or every
    /// batch where there is no panel tile.
    pub fn row(&self) -> &RowKernel<B> {
        &self.row
    }
    /// The panel GEMM tile for batches of at least [`crate::panel::MIN_COLS`],
    /// if the row kernel's ISA has one (the table's; [`Config::panel_for`]
    /// also honours `LLMKERNEL_PANEL=0`).
    pub fn panel(&self) -> Option<&PanelKernel> {
        self.panel.as_ref()
    }
    /// The ISA the panel fill (weight unpacking) is compiled for.
    pub fn fill_isa(&self) -> Isa {
        self.fill
    }
    pub fn dequant(&self) -> &DequantKernel<B> {
        &self.dequant
    }
    /// The activation quantizer.
    pub fn quant(&self) -> &QuantKernel<B::Act> {
        &self.quant
    }
    /// Whether the plugin takes `batch` only because decode goes through a
    /// lookup-table GEMV (the row kernels' policy declines it): only for a
    /// weight it can repack.
    pub fn plugin_via_lut(&self, batch: usize) -> bool {
        !self.plugin.takes(batch) && self.plugin().takes(batch)
    }

    /// Which batches the plugin takes: the row kernels' policy, and every
    /// decode batch where decode goes through a lookup-table GEMV.
    pub fn plugin(&self) -> PluginTakes {
        match B::lut_piece(self) {
            Some(_) => PluginTakes {
                min_batch: 0,
                ..self.plugin
            },
            None => self.plugin,
        }
    }

    /// The panel tile a matmul of `n` columns runs, if any.
    pub fn panel_for(&self, n: usize) -> Option<&PanelKernel> {
        self.panel
            .as_ref()
            .filter(|_| n >= crate::panel::MIN_COLS && crate::matmul::panels_enabled())
    }

    /// The name and ISA of the kernel a matmul of `n` columns runs.
    pub fn kernel_used(&self, n: usize) -> (&'static str, Isa) {
        self.panel_for(n)
            .map_or((self.row.name, self.row.isa), |p| (p.name, p.isa))
    }

    /// This configuration with no panel tile: every batch runs the row kernel
    /// (to compare the two, as `LLMKERNEL_PANEL=0` does for a whole process).
    pub fn without_panel(mut self) -> Config<B> {
        self.panel = None;
        self
    }

    /// The interleaved GEMV of layout `X` (rows of this format) for this
    /// configuration: the one of the row kernel's ISA, or the scalar reference.
    pub fn x4<X: X4Kernels<Row = B>>(&self) -> X4Kernel<X> {
        // The row kernel's ISA is admitted already (Config::at).
        let all = X::x4_kernels();
        all.iter()
            .find(|k| k.isa == self.row.isa)
            .copied()
            .unwrap_or(all[0])
    }

    /// The lookup-table GEMV of layout `X` (rows of this format): the best
    /// admitted under this configuration's ceiling.
    pub fn lut<X: LutKernels<Row = B>>(&self) -> LutKernel<X> {
        best(&X::lut_kernels(), |k| k.isa, self.ceiling).expect("the scalar reference")
    }

    /// The lookup-table GEMV that a matmul of `n` columns runs on layout
    /// `X`, if it goes there: a batch below [`crate::panel::MIN_COLS`], a
    /// SIMD lookup-table kernel, and [`LutKernels::DECODE`] naming its ISA
    /// (or `LLMKERNEL_LUT`, [`crate::matmul::lut_mode`], saying otherwise).
    pub fn lut_for<X: LutKernels<Row = B>>(&self, n: usize) -> Option<LutKernel<X>> {
        use crate::matmul::{lut_mode, LutMode};
        let k = self.lut::<X>();
        let on = match lut_mode() {
            LutMode::Never => false,
            LutMode::Always => true,
            LutMode::Table => X::DECODE.contains(&self.ceiling),
        };
        (on && n < crate::panel::MIN_COLS && k.isa != Isa::Scalar).then_some(k)
    }

    /// Every piece as `(piece, kernel name, ISA)`, for `info` and tests.
    pub fn pieces(&self) -> Vec<(&'static str, &'static str, Isa)> {
        let mut v = vec![
            ("row kernel", self.row.name, self.row.isa),
            ("dequant", self.dequant.name, self.dequant.isa),
            ("activation quantizer", self.quant.name, self.quant.isa),
            ("panel fill", fill_name(self.fill), self.fill),
        ];
        if let Some(p) = &self.panel {
            v.push(("panel tile", p.name, p.isa));
        }
        if let Some((name, isa)) = B::x4_piece(self) {
            v.push(("four-row gemv", name, isa));
        }
        if let Some((name, isa)) = B::lut_piece(self) {
            v.push(("lookup-table gemv", name, isa));
        }
        v
    }
}

/// Every piece `format` runs on here under the process's ceiling, as
/// [`Config::pieces`] gives them (for `llmkernel info`).
pub fn pieces(format: Format) -> Result<Vec<(&'static str, &'static str, Isa)>> {
    struct Pieces;
    impl crate::formats::WithFormat for Pieces {
        type Out = Result<Vec<(&'static str, &'static str, Isa)>>;
        fn run<B: Kernels>(self) -> Self::Out {
            Ok(Config::<B>::best()?.pieces())
        }
    }
    // An activation format is reported with the weights that share it.
    let format = if format == Format::Q8K {
        Format::Q8_0
    } else {
        format
    };
    format.with(Pieces).expect("weight formats have kernels")
}
