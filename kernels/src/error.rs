//! The errors a caller can get back instead of a panic deep inside a kernel.

use crate::formats::Format;
use std::fmt;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A row length that is not a whole number of blocks of the format.
    NotBlockMultiple { format: Format, len: usize },
    /// Two buffers that must describe the same number of values do not.
    LengthMismatch {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// Raw bytes that are not aligned for the block type.
    Misaligned { format: Format, align: usize },
    /// A kernel for an instruction set this CPU lacks.
    IsaNotSupported {
        kernel: &'static str,
        isa: &'static str,
    },
    /// `LLMKERNEL_ISA` names no ISA llmkernel knows.
    UnknownIsa(String),
    /// An operation that does not exist for this format.
    Unsupported { format: Format, what: &'static str },
    /// A block that is not 2:4 sparse: more than two non-zero values in a
    /// group of four (dense data to pack), or a mask without exactly two kept
    /// positions per group (sparse data to read).
    NotSparse24 { block: usize, group: usize },
    /// Activation columns packed in another layout than the tile kernel reads.
    ColumnLayout {
        kernel: &'static str,
        expected: crate::panel::ColLayout,
        got: crate::panel::ColLayout,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotBlockMultiple { format, len } => write!(
                f,
                "{format}: a row of {len} values is not a multiple of the block size {}",
                format.block_len()
            ),
            Error::LengthMismatch {
                what,
                expected,
                got,
            } => {
                write!(f, "{what}: expected {expected}, got {got}")
            }
            Error::Misaligned { format, align } => {
                write!(f, "{format}: block data is not {align}-byte aligned")
            }
            Error::IsaNotSupported { kernel, isa } => {
                write!(f, "kernel {kernel} needs {isa}, which this CPU lacks")
            }
            Error::UnknownIsa(name) => write!(
                f,
                "LLMKERNEL_ISA={name:?}: expected one of scalar, avx2, avx512, neon, dotprod, i8mm"
            ),
            Error::Unsupported { format, what } => write!(f, "{format}: no {what} for this format"),
            Error::NotSparse24 { block, group } => write!(
                f,
                "block {block}, group {group}: not 2:4 sparse (more than two non-zero values of four, or a bad kept-position mask)"
            ),
            Error::ColumnLayout {
                kernel,
                expected,
                got,
            } => write!(
                f,
                "kernel {kernel} reads activation columns in groups of {} ({}), not {} ({})",
                expected.group,
                if expected.biased { "stored + 128" } else { "signed" },
                got.group,
                if got.biased { "stored + 128" } else { "signed" },
            ),
        }
    }
}

impl std::error::Error for Error {}
