//! GGUF block formats: `#[repr(C)]` structs laid out exactly as ggml's
//! (`ggml-common.h`), with one scalar reference per (op, format).
//!
//! The references mirror ggml's own C code operation for operation, so that
//! dequantization is bit-identical with ggml's `dequantize_row_*` (ggml-base is
//! compiled without FMA, and Rust never contracts a*b-c into an FMA), and dot
//! products sum the same exact integers before the final float scaling.

/// The format tables of the vendored ggml (`ggml-common.h`), generated at build time.
pub mod grids {
    include!(concat!(env!("OUT_DIR"), "/grids.rs"));
}
pub mod grid;
mod iq2_s;
mod iq2_xs;
mod iq2_xxs;
mod iq3_s;
mod iq3_xxs;
mod iq4_nl;
mod iq4_xs;
pub mod lut;
pub mod planes_x64;
mod q2_k;
mod q3_k;
mod q4_0;
pub mod q4_k;
mod q5_0;
mod q5_k;
mod q6_k;
mod q8_0;
mod q8_k;
pub mod sparse;
pub mod sparse_x4;
pub mod ternary_x64;
pub(crate) mod tq1_0;
mod tq2_0;

pub use grid::GridBlock;
pub use iq2_s::BlockIq2S;
pub use iq2_xs::BlockIq2Xs;
pub use iq2_xxs::BlockIq2Xxs;
pub use iq3_s::BlockIq3S;
pub use iq3_xxs::BlockIq3Xxs;
pub use iq4_nl::{dequantize_row_iq4_nl, BlockIq4Nl};
pub use iq4_xs::{dequantize_row_iq4_xs, scales_iq4_xs, BlockIq4Xs};
pub use planes_x64::{
    BlockIq2Sx64, BlockIq2Xsx64, BlockIq2Xxsx64, BlockIq3Sx64, BlockIq3Xxsx64, BlockTq1_0Px64,
    BlockTq2_0Px64,
};
pub use q2_k::{dequantize_row_q2_k, BlockQ2K};
pub use q3_k::{dequantize_row_q3_k, scale_words_q3_k, scales_q3_k, BlockQ3K};
pub use q4_0::{dequantize_row_q4_0, BlockQ4_0};
pub use q4_k::{dequantize_row_q4_k, scale_min_k4, BlockQ4K};
pub use q5_0::{dequantize_row_q5_0, BlockQ5_0};
pub use q5_k::{dequantize_row_q5_k, BlockQ5K};
pub use q6_k::{code_q6_k, dequantize_row_q6_k, BlockQ6K};
pub use q8_0::{dequantize_row_q8_0, quantize_row_q8_0, quantize_row_q8_0_ref, BlockQ8_0};
pub use q8_k::{dequantize_row_q8_k, quantize_row_q8_k, BlockQ8K};
pub use sparse::{BlockQ4_0S, BlockQ8_0S};
pub use sparse_x4::{
    BlockIq4Nlx4, BlockQ4_0Sx4, BlockQ4_0x4, BlockQ5_0x4, BlockQ8_0Sx4, BlockQ8_0x4,
};
pub use ternary_x64::{BlockTq1_0x64, BlockTq2_0x64};
pub use tq1_0::BlockTq1_0;
pub use tq2_0::BlockTq2_0;

use crate::error::{Error, Result};
use std::fmt;

/// Values per super-block of the k-quants.
pub const QK_K: usize = 256;

/// Counts identifiers (array lengths for the format lists).
macro_rules! count {
    () => { 0usize };
    ($h:ident $($t:ident)*) => { 1usize + count!($($t)*) };
}

/// Writes [`Format`] and everything that enumerates formats from one list:
/// weight formats (GGUF tensor types the kernels take), their 2:4 forms,
/// and activation formats. What a format is (name, block length, ggml type,
/// activation type, ...) comes from its block type's [`QuantBlock`] and
/// [`WeightBlock`] implementations in its own file.
macro_rules! formats {
    (weights: [$($w:ident: $wb:ty),* $(,)?],
     sparse: [$($s:ident: $sb:ty => $sd:ident),* $(,)?],
     activations: [$($a:ident: $ab:ty),* $(,)?] $(,)?) => {
        /// The formats llmkernel knows, named as ggml names them.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[allow(non_camel_case_types)]
        pub enum Format {
            $($w,)*
            $(
                /// A 2:4 sparse form, zeros dropped ([`sparse`]; llmkernel's own, no ggml type).
                $s,
            )*
            $($a,)*
        }

        impl Format {
            /// The weight formats: GGUF tensor types the kernels take.
            pub const WEIGHTS: [Format; count!($($w)*)] = [$(Format::$w),*];
            /// The 2:4 sparse formats, packed from the dense formats of the same name.
            pub const SPARSE: [Format; count!($($s)*)] = [$(Format::$s),*];
            /// The formats with kernels: the weight formats and their 2:4 forms.
            pub const WITH_KERNELS: [Format; count!($($w)* $($s)*)] =
                [$(Format::$w,)* $(Format::$s,)*];
            /// Every format, weights first.
            pub const ALL: [Format; count!($($w)* $($s)* $($a)*)] =
                [$(Format::$w,)* $(Format::$s,)* $(Format::$a,)*];

            /// ggml's name, as the CLI takes it (`q4_k`).
            pub fn name(self) -> &'static str {
                match self {
                    $(Format::$w => <$wb as QuantBlock>::NAME,)*
                    $(Format::$s => <$sb as QuantBlock>::NAME,)*
                    $(Format::$a => <$ab as QuantBlock>::NAME,)*
                }
            }

            /// Values per block.
            pub fn block_len(self) -> usize {
                match self {
                    $(Format::$w => <$wb as QuantBlock>::LEN,)*
                    $(Format::$s => <$sb as QuantBlock>::LEN,)*
                    $(Format::$a => <$ab as QuantBlock>::LEN,)*
                }
            }

            /// Bytes per block.
            pub fn block_bytes(self) -> usize {
                match self {
                    $(Format::$w => std::mem::size_of::<$wb>(),)*
                    $(Format::$s => std::mem::size_of::<$sb>(),)*
                    $(Format::$a => std::mem::size_of::<$ab>(),)*
                }
            }

            /// The `ggml_type` number of this format in GGUF files; for a 2:4 format,
            /// that of the dense format it packs (how its tensors are stored in GGUF).
            pub fn ggml_type(self) -> u32 {
                match self {
                    $(Format::$w => <$wb as QuantBlock>::GGML_TYPE,)*
                    $(Format::$s => <$sb as QuantBlock>::GGML_TYPE,)*
                    $(Format::$a => <$ab as QuantBlock>::GGML_TYPE,)*
                }
            }

            /// The weight format of a GGUF tensor type, where the kernels take it.
            pub fn from_ggml_type(t: u32) -> Option<Format> {
                Format::WEIGHTS.into_iter().find(|f| f.ggml_type() == t)
            }

            /// The activation format a dot product with these weights takes
            /// (ggml's `vec_dot_type`; itself for an activation format).
            pub fn activation(self) -> Format {
                match self {
                    $(Format::$w => <<$wb as WeightBlock>::Act as QuantBlock>::FORMAT,)*
                    $(Format::$s => <<$sb as WeightBlock>::Act as QuantBlock>::FORMAT,)*
                    $(Format::$a => Format::$a,)*
                }
            }

            /// The dense format a sparse one packs (itself for dense formats).
            pub fn dense(self) -> Format {
                match self {
                    $(Format::$s => Format::$sd,)*
                    f => f,
                }
            }

            /// The 2:4 sparse form of a dense format, where llmkernel has one.
            pub fn sparse_2_4(self) -> Option<Format> {
                match self {
                    $(Format::$sd => Some(Format::$s),)*
                    _ => None,
                }
            }

            /// The `llama_ftype` llama-quantize writes a model of this weight format as.
            pub fn llama_ftype(self) -> Option<u32> {
                match self {
                    $(Format::$w => <$wb as WeightBlock>::LLAMA_FTYPE,)*
                    _ => None,
                }
            }

            /// Runs `w` with this format's block type (weight and 2:4 formats;
            /// `None` for an activation format, which has no kernels).
            pub fn with<W: WithFormat>(self, w: W) -> Option<W::Out> {
                match self {
                    $(Format::$w => Some(w.run::<$wb>()),)*
                    $(Format::$s => Some(w.run::<$sb>()),)*
                    $(Format::$a => None,)*
                }
            }
        }
    };
}

// The one list of formats. A new weight format is its file in this folder
// (block, scalar reference, panel unpack, test blocks: the compiler names
// what is missing), its line here, and its rows in `crate::table`.
formats! {
    weights: [
        Q4K: BlockQ4K,
        Q6K: BlockQ6K,
        Q5K: BlockQ5K,
        Q3K: BlockQ3K,
        Q2K: BlockQ2K,
        Q4_0: BlockQ4_0,
        Q5_0: BlockQ5_0,
        IQ4_NL: BlockIq4Nl,
        IQ4_XS: BlockIq4Xs,
        Q8_0: BlockQ8_0,
        IQ2_XXS: BlockIq2Xxs,
        IQ2_XS: BlockIq2Xs,
        IQ2_S: BlockIq2S,
        IQ3_XXS: BlockIq3Xxs,
        IQ3_S: BlockIq3S,
        TQ1_0: BlockTq1_0,
        TQ2_0: BlockTq2_0,
    ],
    sparse: [
        Q4_0S: BlockQ4_0S => Q4_0,
        Q8_0S: BlockQ8_0S => Q8_0,
    ],
    activations: [Q8K: BlockQ8K],
}

/// Code generic over the weight format, run for a format chosen at run time
/// ([`Format::with`]): the way the plugin, `bench`, the benches and the tests
/// reach every format without listing them.
pub trait WithFormat {
    type Out;
    fn run<B: crate::table::Kernels>(self) -> Self::Out;
}

/// Runs `$body` once per format of `$formats` that has kernels, with `$B`
/// its block type, `$f` the format and `$i` its position, and collects the
/// results in order. The body is a generic function: it sees nothing of the
/// surrounding code but an optional context value (`$ctx`, `Clone`), so
/// tests and benches reach every format without listing them.
#[macro_export]
macro_rules! each_format {
    ($formats:expr, |$B:ident, $f:ident, $i:ident| -> $out:ty $body:block) => {
        $crate::each_format!($formats, (), |$B, $f, $i, _ctx: ()| -> $out $body)
    };
    ($formats:expr, $ctx:expr, |$B:ident, $f:ident, $i:ident, $c:ident: $ct:ty| -> $out:ty $body:block) => {{
        struct Each($ct, usize, $crate::formats::Format);
        impl $crate::formats::WithFormat for Each {
            type Out = $out;
            #[allow(unused_variables)]
            fn run<$B: $crate::table::Kernels>(self) -> $out {
                let ($c, $i, $f) = (self.0, self.1, self.2);
                $body
            }
        }
        let ctx: $ct = $ctx;
        $formats
            .into_iter()
            .enumerate()
            .filter_map(|(i, f)| f.with(Each(ctx.clone(), i, f)))
            .collect::<Vec<$out>>()
    }};
}

impl Format {
    pub fn from_name(name: &str) -> Option<Format> {
        Format::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(name))
    }

    /// Bits per weight, scales included.
    pub fn bits_per_weight(self) -> f64 {
        self.block_bytes() as f64 * 8.0 / self.block_len() as f64
    }

    /// Checks that `bytes` bytes hold exactly a row of `len` values of this format.
    pub fn check_row_bytes(self, len: usize, bytes: usize) -> Result<()> {
        let expected = self.blocks_in(len)? * self.block_bytes();
        if bytes != expected {
            return Err(Error::LengthMismatch {
                what: "row bytes",
                expected,
                got: bytes,
            });
        }
        Ok(())
    }

    /// Checks that `blocks` blocks hold exactly a row of `len` values (quantizer outputs).
    pub(crate) fn check_row_blocks(self, len: usize, blocks: usize) -> Result<()> {
        let expected = self.blocks_in(len)?;
        if blocks != expected {
            return Err(Error::LengthMismatch {
                what: "output blocks",
                expected,
                got: blocks,
            });
        }
        Ok(())
    }

    /// Number of blocks in a row of `len` values; an error unless `len` is a whole number of blocks.
    pub fn blocks_in(self, len: usize) -> Result<usize> {
        if len % self.block_len() != 0 {
            return Err(Error::NotBlockMultiple { format: self, len });
        }
        Ok(len / self.block_len())
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A block type with ggml's memory layout.
pub trait QuantBlock: bytemuck::Pod + Send + Sync + 'static {
    const FORMAT: Format;
    /// ggml's name of the format (`q4_k`).
    const NAME: &'static str;
    /// Values per block.
    const LEN: usize;
    /// The `ggml_type` number of the format in GGUF files (for a 2:4 form,
    /// that of the dense format it packs).
    const GGML_TYPE: u32;

    /// Views raw bytes holding a row of `len` values as blocks, with the checks a
    /// caller handing us foreign data (a GGUF tensor, a ggml buffer) needs.
    fn row_from_bytes(bytes: &[u8], len: usize) -> Result<&[Self]> {
        Self::FORMAT.check_row_bytes(len, bytes.len())?;
        bytemuck::try_cast_slice(bytes).map_err(|_| Error::Misaligned {
            format: Self::FORMAT,
            align: std::mem::align_of::<Self>(),
        })
    }
}

/// A weight format: dequantization and the dot product with its activation blocks.
pub trait WeightBlock: QuantBlock {
    type Act: QuantBlock;
    /// The `llama_ftype` (its number in llama.h) llama-quantize writes a
    /// model of this format as, where it is a GGUF file type.
    const LLAMA_FTYPE: Option<u32>;
    /// Scalar reference dequantization (bit-identical with ggml's `dequantize_row_*`).
    fn dequantize_row(x: &[Self], y: &mut [f32]) -> Result<()>;
    /// Scalar reference dot product with activations of the same length.
    fn vec_dot(x: &[Self], y: &[Self::Act]) -> Result<f32> {
        dot_terms(x, y, Self::block_terms)
    }
    /// The magnitude of the products a dot product adds up: per block,
    /// `|d*dy| * sum |sc*q*q8| + |dmin*dy| * sum |m*bsum|` over its values. Float
    /// rounding in any summation order (kernels split sums into SIMD lanes)
    /// stays within a few ulps of this, so it is the yardstick of every
    /// dot-product error bound. (Test and bench use; not a hot path.)
    fn dot_magnitude(x: &[Self], y: &[Self::Act]) -> Result<f32> {
        check_dot(x.len(), y.len())?;
        Ok(x.iter()
            .zip(y)
            .map(|(a, b)| Self::block_magnitude(a, b))
            .sum())
    }
    /// One block's share of [`WeightBlock::dot_magnitude`].
    fn block_magnitude(x: &Self, y: &Self::Act) -> f32;
    /// Quantizes f32 activations to `Act` exactly as ggml-cpu does for this
    /// weight type (`quantize_row_q8_K`, or ggml-cpu's `quantize_row_q8_0`).
    fn quantize_activations(x: &[f32], y: &mut [Self::Act]) -> Result<()>;
    /// One block's dot product as `(scale term, min term)`; the dot is their
    /// difference. Each term is an exact integer sum times one float scale.
    fn block_terms(x: &Self, y: &Self::Act) -> (f32, f32);
    /// The step of error-compensated quantization (`llmkernel quantize
    /// --reconstruct`): with this block's scales as they are, writes into
    /// position `i` (< [`QuantBlock::LEN`]) the code whose value is nearest
    /// `w`, and returns that value exactly as [`WeightBlock::dequantize_row`]
    /// gives it. `None` for a format without the step (the 2:4 forms).
    fn round_at(&mut self, i: usize, w: f32) -> Option<f32> {
        let _ = (i, w);
        None
    }
    /// Values whose codes are chosen together ([`WeightBlock::round_group`]):
    /// 1, or 8 for the i-quants, whose eight values share grid points and signs.
    const GROUP: usize = 1;
    /// The step of error-compensated quantization for [`WeightBlock::GROUP`]
    /// values from position `i` (a multiple of `GROUP`): with the block's
    /// scales as they are, writes the codes whose values are nearest `w`
    /// (squared errors weighted by `weights`), and puts those values into
    /// `out` exactly as [`WeightBlock::dequantize_row`] gives them. `None`
    /// for a format without the step; panics on slices other than `GROUP`
    /// long or a position outside the block.
    fn round_group(&mut self, i: usize, w: &[f32], weights: &[f32], out: &mut [f32]) -> Option<()> {
        assert!(w.len() == 1 && weights.len() == 1 && out.len() == 1 && Self::GROUP == 1);
        out[0] = self.round_at(i, w[0])?;
        Some(())
    }
}

/// Whether `B` has the step of error-compensated quantization
/// ([`WeightBlock::round_group`]).
pub fn has_round<B: WeightBlock>() -> bool {
    let (w, mut out) = ([0f32; 8], [0f32; 8]);
    let g = B::GROUP;
    g <= 8
        && <B as bytemuck::Zeroable>::zeroed()
            .round_group(0, &w[..g], &w[..g], &mut out[..g])
            .is_some()
}

/// The code in `lo..=hi` whose `value` is nearest `w`, for a value linear in
/// the code, about `step * q + offset`: the rounded guess and its two
/// neighbours, compared by their exact values. Non-finite scales give some
/// code in range, never a panic.
#[inline]
pub(crate) fn nearest_code(
    w: f32,
    step: f32,
    offset: f32,
    (lo, hi): (i32, i32),
    value: impl Fn(i32) -> f32,
) -> i32 {
    let guess = ((w - offset) / step).round();
    let g = if guess.is_nan() {
        lo
    } else {
        guess.clamp(lo as f32, hi as f32) as i32
    };
    let mut best = g;
    for q in [g - 1, g + 1] {
        if (lo..=hi).contains(&q) && (value(q) - w).abs() < (value(best) - w).abs() {
            best = q;
        }
    }
    best
}

/// The index of the table entry whose `value` is nearest `w` (the non-linear formats).
#[inline]
pub(crate) fn nearest_entry(w: f32, n: usize, value: impl Fn(usize) -> f32) -> usize {
    (1..n).fold(0, |best, q| {
        if (value(q) - w).abs() < (value(best) - w).abs() {
            q
        } else {
            best
        }
    })
}

/// Replaces the `bits`-wide field at bit `shift` of `byte` with `v`.
#[inline]
pub(crate) fn set_bits(byte: &mut u8, shift: usize, bits: u32, v: u8) {
    let mask = (((1u32 << bits) - 1) << shift) as u8;
    *byte = (*byte & !mask) | ((v << shift) & mask);
}

/// Sums block terms in block order: the sum of `scale - min`.
fn dot_terms<W, A>(x: &[W], y: &[A], terms: impl Fn(&W, &A) -> (f32, f32)) -> Result<f32> {
    check_dot(x.len(), y.len())?;
    Ok(x.iter().zip(y).fold(0.0f32, |sum, (a, b)| {
        let (s, m) = terms(a, b);
        sum + (s - m)
    }))
}

/// `|d| * iabs + |dmin| * mabs`: a block's magnitude from its sums of absolute products.
#[inline]
fn magnitude(d: f32, iabs: i32, dmin: f32, mabs: i32) -> f32 {
    d.abs() * iabs as f32 + dmin.abs() * mabs as f32
}

/// How a 32-value block stores its codes, as the SIMD kernels read them.
#[allow(dead_code)] // not every architecture has kernels that use every layout
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codes {
    /// Q4_0: 16 bytes of 4-bit codes offset by 8, low nibbles values 0..16, high 16..32.
    Nibbles,
    /// Q5_0: Q4_0's nibbles plus a fifth bit per value ([`Block32::high_bits`]), offset by 16.
    Nibbles5,
    /// IQ4_NL: Q4_0's nibbles as indices into [`grids::KVALUES_IQ4NL`].
    NonLinear,
    /// Q8_0: 32 signed bytes.
    Bytes,
    /// Q4_0S: 8 bytes of 16 kept 4-bit codes offset by 8 (low nibbles kept 0..8, high 8..16), and a mask.
    SparseNibbles,
    /// Q8_0S: 16 kept signed bytes and a mask.
    SparseBytes,
}

/// A 32-value block with an f16 scale (Q4_0, Q8_0 and their 2:4 forms), as
/// the SIMD kernels read it: plain data access, so that the intrinsics stay
/// inside the kernels' `#[target_feature]` functions, where they inline.
#[allow(dead_code)] // not every architecture has kernels that use it
pub(crate) trait Block32 {
    const CODES: Codes;
    fn codes(&self) -> *const u8;
    fn d_bits(&self) -> u16;
    /// The kept-position mask of a sparse block (0 for dense ones).
    fn mask(&self) -> u32 {
        0
    }
    /// The fifth bits of a [`Codes::Nibbles5`] block: bit j for value j.
    fn high_bits(&self) -> u32 {
        0
    }
}

/// A Q4_K-layout block (Q4_K, Q5_K) as the SIMD kernels read it: the 6-bit
/// scales and mins, 4-bit codes, and where `FIFTH_BIT`, a fifth bit of value
/// `32j + l` at bit `j` of `qh()[l]`.
#[allow(dead_code)] // not every architecture has kernels that use it
pub(crate) trait BlockK4: Copy {
    const FIFTH_BIT: bool;
    fn scales(&self) -> &[u8; 12];
    fn qs(&self) -> &[u8; QK_K / 2];
    /// The fifth bits (zeros where the format has none).
    fn qh(&self) -> &[u8; QK_K / 8];
    /// `d` in the low 16 bits, `dmin` in the high.
    fn d_dmin_bits(&self) -> u32;
}

impl Block32 for BlockQ8_0 {
    const CODES: Codes = Codes::Bytes;
    fn codes(&self) -> *const u8 {
        self.qs.as_ptr().cast()
    }
    fn d_bits(&self) -> u16 {
        self.d.to_bits()
    }
}

impl Block32 for BlockQ4_0 {
    const CODES: Codes = Codes::Nibbles;
    fn codes(&self) -> *const u8 {
        self.qs.as_ptr()
    }
    fn d_bits(&self) -> u16 {
        self.d.to_bits()
    }
}

impl Block32 for BlockQ4_0S {
    const CODES: Codes = Codes::SparseNibbles;
    fn codes(&self) -> *const u8 {
        self.qs.as_ptr()
    }
    fn d_bits(&self) -> u16 {
        self.d.to_bits()
    }
    fn mask(&self) -> u32 {
        sparse::SparseBlock::mask(self)
    }
}

impl Block32 for BlockQ8_0S {
    const CODES: Codes = Codes::SparseBytes;
    fn codes(&self) -> *const u8 {
        self.qs.as_ptr().cast()
    }
    fn d_bits(&self) -> u16 {
        self.d.to_bits()
    }
    fn mask(&self) -> u32 {
        sparse::SparseBlock::mask(self)
    }
}

/// Checks that `out` holds exactly the values of `blocks` blocks of `format`.
fn check_out(format: Format, blocks: usize, out: usize) -> Result<()> {
    let expected = blocks * format.block_len();
    if out != expected {
        return Err(Error::LengthMismatch {
            what: "dequantized row length",
            expected,
            got: out,
        });
    }
    Ok(())
}

/// Checks that weights and activations of a dot product cover the same length.
fn check_dot(x: usize, y: usize) -> Result<()> {
    if x != y {
        return Err(Error::LengthMismatch {
            what: "activation blocks",
            expected: x,
            got: y,
        });
    }
    Ok(())
}

macro_rules! weight_block {
    ($block:ty, $format:ident, $name:literal, len $len:expr, bytes $bytes:expr, ggml $ggml:expr, ftype $ftype:expr,
     $act:ty, $deq:path, $terms:path, $mag:path, $quant:path $(, round $round:path)? $(, group $group:path)?) => {
        impl crate::formats::QuantBlock for $block {
            const FORMAT: crate::formats::Format = crate::formats::Format::$format;
            const NAME: &'static str = $name;
            const LEN: usize = $len;
            const GGML_TYPE: u32 = $ggml;
        }
        impl crate::formats::WeightBlock for $block {
            type Act = $act;
            const LLAMA_FTYPE: Option<u32> = $ftype;
            fn dequantize_row(x: &[Self], y: &mut [f32]) -> crate::Result<()> {
                $deq(x, y)
            }
            fn block_terms(x: &Self, y: &$act) -> (f32, f32) {
                $terms(x, y)
            }
            fn block_magnitude(x: &Self, y: &$act) -> f32 {
                $mag(x, y)
            }
            #[inline(always)]
            fn quantize_activations(x: &[f32], y: &mut [$act]) -> crate::Result<()> {
                $quant(x, y)
            }
            $(
                fn round_at(&mut self, i: usize, w: f32) -> Option<f32> {
                    Some($round(self, i, w))
                }
            )?
            $(
                const GROUP: usize = 8;
                fn round_group(&mut self, i: usize, w: &[f32], weights: &[f32], out: &mut [f32]) -> Option<()> {
                    $group(self, i, w, weights, out);
                    Some(())
                }
            )?
        }
        // ggml's `sizeof(block_*)`, written out so the layout is checked at compile time.
        const _: () = assert!(std::mem::size_of::<$block>() == $bytes);
    };
}
pub(crate) use weight_block;
