//! Which kernel set serves each format on this CPU.
//!
//! Today only the scalar references exist; the SIMD kernel sets join this
//! registry with their ISA requirement, and dispatch, tests, benches and
//! `llmkernel info` all read it from here.

use crate::cpu::CpuFeatures;
use crate::formats::Format;
use std::fmt;

/// An instruction-set level a kernel set is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    Scalar,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
        }
    }

    /// Whether this CPU can run kernels written for this ISA.
    pub fn supported(self, _cpu: &CpuFeatures) -> bool {
        match self {
            Isa::Scalar => true,
        }
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Every ISA that has kernels for `format`, best first.
pub fn isas_for(_format: Format) -> &'static [Isa] {
    &[Isa::Scalar]
}

/// The kernel set `format` runs on with this CPU.
pub fn select(format: Format, cpu: &CpuFeatures) -> Isa {
    isas_for(format)
        .iter()
        .copied()
        .find(|isa| isa.supported(cpu))
        .unwrap_or(Isa::Scalar)
}
