//! The one list of kernels. Dispatch, the test harness, the benches and
//! `llmkernel bench` / `info` all read it, so no kernel exists untested or
//! unbenchmarked. A kernel carries the ISA it needs; dispatch picks the best
//! supported one once, and `LLMKERNEL_ISA` can force a lower level.

use crate::cpu::CpuFeatures;
use crate::formats::sparse_x4::X4Block;
use crate::formats::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_0S, BlockQ8_0, BlockQ8_0S, Format, WeightBlock,
};
use crate::formats::{BlockQ4_0Sx4, BlockQ4_0x4, BlockQ8_0 as Q8Act, BlockQ8_0Sx4, BlockQ8_0x4};
use crate::panel::{PanelFormat, PanelKernel};
use crate::{scalar, Error, Result};
use std::fmt;
use std::sync::OnceLock;

/// An instruction-set level kernels are written for, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX-512 F/BW/VL + VNNI + VBMI2 (Ice Lake, Zen 4 and later;
    /// Skylake-X and Cascade Lake run the AVX2 kernels).
    Avx512,
    Neon,
    /// NEON + the SDOT/UDOT instructions.
    Dotprod,
    /// NEON + dotprod + the SMMLA instructions.
    I8mm,
}

impl Isa {
    pub const ALL: [Isa; 6] = [
        Isa::Scalar,
        Isa::Avx2,
        Isa::Avx512,
        Isa::Neon,
        Isa::Dotprod,
        Isa::I8mm,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
            Isa::Dotprod => "dotprod",
            Isa::I8mm => "i8mm",
        }
    }

    pub fn from_name(name: &str) -> Option<Isa> {
        Isa::ALL
            .into_iter()
            .find(|i| i.name().eq_ignore_ascii_case(name.trim()))
    }

    /// Whether this CPU can run kernels written for this ISA.
    pub fn supported(self, cpu: &CpuFeatures) -> bool {
        match self {
            Isa::Scalar => true,
            Isa::Avx2 => cfg!(target_arch = "x86_64") && cpu.avx2 && cpu.fma && cpu.f16c,
            Isa::Avx512 => {
                Isa::Avx2.supported(cpu)
                    && cpu.avx512f
                    && cpu.avx512bw
                    && cpu.avx512vl
                    && cpu.avx512vnni
                    && cpu.avx512vbmi2
            }
            Isa::Neon => cfg!(target_arch = "aarch64") && cpu.neon,
            Isa::Dotprod => Isa::Neon.supported(cpu) && cpu.dotprod,
            Isa::I8mm => Isa::Dotprod.supported(cpu) && cpu.i8mm,
        }
    }

    /// The highest ISA dispatch may use: this CPU's best, or lower when
    /// `LLMKERNEL_ISA` says so. Read once per process.
    pub fn ceiling() -> Result<Isa> {
        static CEILING: OnceLock<Result<Isa>> = OnceLock::new();
        CEILING
            .get_or_init(|| match std::env::var("LLMKERNEL_ISA") {
                Ok(name) => Isa::from_name(&name).ok_or(Error::UnknownIsa(name)),
                Err(_) => Ok(*Isa::ALL
                    .iter()
                    .rev()
                    .find(|i| i.supported(&CpuFeatures::get()))
                    .unwrap()),
            })
            .clone()
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `nrows` consecutive rows of weights (`rows`, row after row) against up to
/// `cols` activation columns: `out[r * acts.len() + j] = dot(row r, acts[j])`.
pub type RowDotFn<B> =
    unsafe fn(rows: &[B], nrows: usize, acts: &[&[<B as WeightBlock>::Act]], out: &mut [f32]);

/// A dot-product kernel: one function per (op, format, ISA).
pub struct RowKernel<B: WeightBlock> {
    /// Named by op, weight and activation types and ISA, e.g. `gemv_q4_k_q8_k_x4` in `avx2`.
    pub name: &'static str,
    pub isa: Isa,
    /// How many weight rows one call takes (each activation block is loaded once for all of them).
    pub rows: usize,
    /// How many activation columns one call takes (each unpacked weight block is reused across them).
    pub cols: usize,
    /// # Safety
    /// The CPU must support `isa`; `1 <= nrows <= rows`, `acts.len() <= cols`,
    /// `out.len() == nrows * acts.len()`, every act row `rows.len() / nrows` blocks.
    pub f: RowDotFn<B>,
    /// The panel GEMM tile ([`crate::panel`]) the matmul driver uses with this
    /// kernel for batches of at least [`crate::panel::MIN_COLS`], if its ISA has one.
    pub panel: Option<PanelKernel>,
}

impl<B: WeightBlock> Clone for RowKernel<B> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B: WeightBlock> Copy for RowKernel<B> {}

/// Dequantization of a row of blocks to f32: one function per (format, ISA).
pub type DequantFn<B> = unsafe fn(x: &[B], y: &mut [f32]);

/// A dequantization kernel. Every one is bit-identical with the scalar reference.
pub struct DequantKernel<B: WeightBlock> {
    pub name: &'static str,
    pub isa: Isa,
    /// # Safety
    /// The CPU must support `isa`; `y.len() == x.len() * block length`.
    pub f: DequantFn<B>,
}

impl<B: WeightBlock> DequantKernel<B> {
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
        if !self.isa.supported(&CpuFeatures::get()) {
            return Err(Error::IsaNotSupported {
                kernel: self.name,
                isa: self.isa.name(),
            });
        }
        // SAFETY: ISA and lengths checked above.
        unsafe { (self.f)(x, y) };
        Ok(())
    }
}

/// The scalar reference as a dequantization kernel.
///
/// # Safety
/// None beyond the length contract (checked by [`DequantKernel::run`]).
unsafe fn scalar_dequant<B: WeightBlock>(x: &[B], y: &mut [f32]) {
    B::dequantize_row(x, y).expect("lengths checked by the caller");
}

/// The kernels of one weight format.
pub trait Kernels: PanelFormat {
    /// Every dequantization kernel for this format, best ISA last.
    fn dequant_kernels() -> Vec<DequantKernel<Self>>;

    /// Every dot-product kernel for this format, best ISA last.
    fn row_kernels() -> Vec<RowKernel<Self>>;

    /// The best kernel this CPU supports under the `LLMKERNEL_ISA` ceiling.
    fn select() -> Result<RowKernel<Self>> {
        Ok(Self::select_at(Isa::ceiling()?))
    }

    /// The best kernel this CPU supports at or below `ceiling`.
    fn select_at(ceiling: Isa) -> RowKernel<Self> {
        let cpu = CpuFeatures::get();
        Self::row_kernels()
            .into_iter()
            .rfind(|k| k.isa <= ceiling && k.isa.supported(&cpu))
            .expect("every format has a scalar kernel")
    }
}

/// Registers a format's kernels: its scalar reference, then SIMD kernels per
/// architecture, lowest ISA first.
macro_rules! register {
    ($block:ty, $scalar:literal, dequant: $dq:ident,
     x86_64: [$(($isa:ident, $name:literal, $module:ident :: $file:ident :: $f:ident)),* $(,)?],
     aarch64: [$(($aisa:ident, $aname:literal, $amodule:ident :: $afile:ident :: $aset:ident :: $af:ident)),* $(,)?]) => {
        impl Kernels for $block {
            fn dequant_kernels() -> Vec<DequantKernel<Self>> {
                #[allow(unused_mut)]
                let mut v = vec![DequantKernel { name: stringify!($dq), isa: Isa::Scalar, f: scalar_dequant::<$block> }];
                #[cfg(target_arch = "x86_64")]
                v.push(DequantKernel { name: stringify!($dq), isa: Isa::Avx2, f: crate::x86_avx2::dequant::$dq });
                #[cfg(target_arch = "aarch64")]
                v.push(DequantKernel { name: stringify!($dq), isa: Isa::Neon, f: crate::aarch64_neon::dequant::$dq });
                v
            }
            fn row_kernels() -> Vec<RowKernel<Self>> {
                #[allow(unused_mut)]
                let mut v = vec![RowKernel { name: $scalar, isa: Isa::Scalar, rows: 1, cols: 1, f: scalar::row_dot::<$block>, panel: None }];
                #[cfg(target_arch = "x86_64")]
                v.extend::<[RowKernel<Self>; _]>([$(RowKernel {
                    name: $name,
                    isa: Isa::$isa,
                    rows: crate::$module::$file::ROWS,
                    cols: crate::$module::$file::COLS,
                    f: crate::$module::$file::$f,
                    panel: crate::panel::for_isa(Isa::$isa),
                }),*]);
                #[cfg(target_arch = "aarch64")]
                v.extend::<[RowKernel<Self>; _]>([$(RowKernel {
                    name: $aname,
                    isa: Isa::$aisa,
                    rows: crate::$amodule::$afile::ROWS,
                    cols: crate::$amodule::$afile::COLS,
                    f: crate::$amodule::$afile::$aset::$af,
                    panel: crate::panel::for_isa(Isa::$aisa),
                }),*]);
                v
            }
        }
    };
}

register!(
    BlockQ4K,
    "gemv_q4_k_q8_k",
    dequant: dequantize_q4_k,
x86_64: [
    (Avx2, "gemv_q4_k_q8_k_x4", x86_avx2::q4_k::gemv_q4_k_q8_k_x4),
    (Avx512, "gemv_q4_k_q8_k_x8", x86_avx512::q4_k::gemv_q4_k_q8_k_x8),
],
aarch64: [
    (Neon, "gemv_q4_k_q8_k_x4", aarch64_neon::q4_k::neon::gemv_q4_k_q8_k_x4),
    (Dotprod, "gemv_q4_k_q8_k_x4", aarch64_neon::q4_k::dotprod::gemv_q4_k_q8_k_x4),
]);
register!(
    BlockQ3K,
    "gemv_q3_k_q8_k",
    dequant: dequantize_q3_k,
x86_64: [
        (Avx2, "gemv_q3_k_q8_k_x4", x86_avx2::q2_k::gemv_q3_k_q8_k_x4),
        (Avx512, "gemv_q3_k_q8_k_x8", x86_avx512::q2_k::gemv_q3_k_q8_k_x8),
    ],
aarch64: [
    (Neon, "gemv_q3_k_q8_k_x4", aarch64_neon::q2_k::neon::gemv_q3_k_q8_k_x4),
    (Dotprod, "gemv_q3_k_q8_k_x4", aarch64_neon::q2_k::dotprod::gemv_q3_k_q8_k_x4),
]);
register!(
    BlockQ2K,
    "gemv_q2_k_q8_k",
    dequant: dequantize_q2_k,
x86_64: [
        (Avx2, "gemv_q2_k_q8_k_x4", x86_avx2::q2_k::gemv_q2_k_q8_k_x4),
        (Avx512, "gemv_q2_k_q8_k_x8", x86_avx512::q2_k::gemv_q2_k_q8_k_x8),
    ],
aarch64: [
    (Neon, "gemv_q2_k_q8_k_x4", aarch64_neon::q2_k::neon::gemv_q2_k_q8_k_x4),
    (Dotprod, "gemv_q2_k_q8_k_x4", aarch64_neon::q2_k::dotprod::gemv_q2_k_q8_k_x4),
]);
register!(
    BlockQ4_0,
    "gemv_q4_0_q8_0",
    dequant: dequantize_q4_0,
x86_64: [
        (Avx2, "gemv_q4_0_q8_0_x4", x86_avx2::q8_0::gemv_q4_0_q8_0_x4),
        (Avx512, "gemv_q4_0_q8_0_x4", x86_avx512::q8_0::gemv_q4_0_q8_0_x4),
    ],
aarch64: [
    (Neon, "gemv_q4_0_q8_0_x4", aarch64_neon::q8_0::neon::gemv_q4_0_q8_0_x4),
    (Dotprod, "gemv_q4_0_q8_0_x4", aarch64_neon::q8_0::dotprod::gemv_q4_0_q8_0_x4),
]);
register!(
    BlockQ8_0,
    "gemv_q8_0_q8_0",
    dequant: dequantize_q8_0,
x86_64: [
        (Avx2, "gemv_q8_0_q8_0_x4", x86_avx2::q8_0::gemv_q8_0_q8_0_x4),
        (Avx512, "gemv_q8_0_q8_0_x4", x86_avx512::q8_0::gemv_q8_0_q8_0_x4),
    ],
aarch64: [
    (Neon, "gemv_q8_0_q8_0_x4", aarch64_neon::q8_0::neon::gemv_q8_0_q8_0_x4),
    (Dotprod, "gemv_q8_0_q8_0_x4", aarch64_neon::q8_0::dotprod::gemv_q8_0_q8_0_x4),
]);

register!(
    BlockQ4_0S,
    "gemv_q4_0s_q8_0",
    dequant: dequantize_q4_0s,
x86_64: [
        (Avx2, "gemv_q4_0s_q8_0_x4", x86_avx2::q8_0::gemv_q4_0s_q8_0_x4),
        (Avx512, "gemv_q4_0s_q8_0_x4", x86_avx512::q8_0::gemv_q4_0s_q8_0_x4),
    ],
aarch64: [
    (Neon, "gemv_q4_0s_q8_0_x4", aarch64_neon::q8_0::neon::gemv_q4_0s_q8_0_x4),
    (Dotprod, "gemv_q4_0s_q8_0_x4", aarch64_neon::q8_0::dotprod::gemv_q4_0s_q8_0_x4),
]);
register!(
    BlockQ8_0S,
    "gemv_q8_0s_q8_0",
    dequant: dequantize_q8_0s,
x86_64: [
        (Avx2, "gemv_q8_0s_q8_0_x4", x86_avx2::q8_0::gemv_q8_0s_q8_0_x4),
        (Avx512, "gemv_q8_0s_q8_0_x4", x86_avx512::q8_0::gemv_q8_0s_q8_0_x4),
    ],
aarch64: [
    (Neon, "gemv_q8_0s_q8_0_x4", aarch64_neon::q8_0::neon::gemv_q8_0s_q8_0_x4),
    (Dotprod, "gemv_q8_0s_q8_0_x4", aarch64_neon::q8_0::dotprod::gemv_q8_0s_q8_0_x4),
]);

/// An interleaved GEMV kernel ([`crate::formats::sparse_x4`]): groups of four
/// rows (each `act.len()` blocks along K, group after group) against one
/// activation column; `out[4 * g + r]` is row r of group g. (One call for
/// many groups, so that what depends on the column only is done once.)
pub type X4GemvFn<X> = unsafe fn(groups: &[X], act: &[Q8Act], out: &mut [f32]);

pub struct X4Kernel<X> {
    /// Named by op, weight layout, activation type and ISA.
    pub name: &'static str,
    pub isa: Isa,
    /// # Safety
    /// The CPU must support `isa`; `groups.len()` a multiple of `act.len() > 0`;
    /// `out.len() == 4 * groups.len() / act.len()`; masks valid 2:4.
    pub f: X4GemvFn<X>,
}

impl<X> Clone for X4Kernel<X> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<X> Copy for X4Kernel<X> {}

/// The scalar reference as an interleaved GEMV kernel.
///
/// # Safety
/// None (safe code behind the kernel signature).
unsafe fn scalar_x4<X: X4Block>(groups: &[X], act: &[Q8Act], out: &mut [f32]) {
    for (group, out) in groups.chunks_exact(act.len()).zip(out.chunks_exact_mut(4)) {
        crate::formats::sparse_x4::gemv_x4_ref(group, act, out.try_into().unwrap())
    }
}

/// The interleaved 2:4 GEMV kernels of a layout, scalar reference first.
pub trait X4Kernels: X4Block<Row: Kernels> {
    fn x4_kernels() -> Vec<X4Kernel<Self>>;
}

/// Registers the interleaved GEMVs of a layout: the scalar reference, then
/// AVX2 and AVX-512, or NEON and dotprod.
macro_rules! register_x4 {
    ($block:ty, $name:ident) => {
        impl X4Kernels for $block {
            fn x4_kernels() -> Vec<X4Kernel<Self>> {
                #[allow(unused_mut)]
                let mut v = vec![X4Kernel {
                    name: stringify!($name),
                    isa: Isa::Scalar,
                    f: scalar_x4::<Self>,
                }];
                #[cfg(target_arch = "x86_64")]
                v.extend([
                    X4Kernel {
                        name: stringify!($name),
                        isa: Isa::Avx2,
                        f: crate::x86_avx2::q8_0::$name,
                    },
                    X4Kernel {
                        name: stringify!($name),
                        isa: Isa::Avx512,
                        f: crate::x86_avx512::sparse_x4::$name,
                    },
                ]);
                #[cfg(target_arch = "aarch64")]
                v.extend([
                    X4Kernel {
                        name: stringify!($name),
                        isa: Isa::Neon,
                        f: crate::aarch64_neon::q8_0::neon::$name,
                    },
                    X4Kernel {
                        name: stringify!($name),
                        isa: Isa::Dotprod,
                        f: crate::aarch64_neon::q8_0::dotprod::$name,
                    },
                ]);
                v
            }
        }
    };
}

register_x4!(BlockQ8_0Sx4, gemv_q8_0sx4_q8_0);
register_x4!(BlockQ4_0Sx4, gemv_q4_0sx4_q8_0);
register_x4!(BlockQ8_0x4, gemv_q8_0x4_q8_0);
register_x4!(BlockQ4_0x4, gemv_q4_0x4_q8_0);

/// The ISA of the kernel `format` runs on here (for `llmkernel info`).
pub fn select(format: Format) -> Result<Isa> {
    Ok(match format {
        Format::Q4K => BlockQ4K::select()?.isa,
        Format::Q3K => BlockQ3K::select()?.isa,
        Format::Q2K => BlockQ2K::select()?.isa,
        Format::Q4_0 => BlockQ4_0::select()?.isa,
        Format::Q8_0 | Format::Q8K => BlockQ8_0::select()?.isa,
        Format::Q4_0S => BlockQ4_0S::select()?.isa,
        Format::Q8_0S => BlockQ8_0S::select()?.isa,
    })
}
