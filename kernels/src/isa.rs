//! The instruction-set levels kernels are written for, and the ceiling
//! dispatch may use on this CPU.

use crate::cpu::CpuFeatures;
use crate::{Error, Result};
use std::fmt;
use std::sync::OnceLock;

/// An instruction-set level kernels are written for, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX-512 F/BW/VL + VNNI + VBMI + VBMI2 (Ice Lake, Zen 4 and later;
    /// Skylake-X and Cascade Lake run the AVX2 kernels).
    Avx512,
    Neon,
    /// NEON + the SDOT/UDOT instructions.
    Dotprod,
    /// NEON + dotprod + the SMMLA instructions: the two-row `smmla` row
    /// kernels (and the panel tile) where a format has them, the dotprod
    /// kernels otherwise.
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
                    && cpu.avx512vbmi
                    && cpu.avx512vbmi2
            }
            Isa::Neon => cfg!(target_arch = "aarch64") && cpu.neon,
            Isa::Dotprod => Isa::Neon.supported(cpu) && cpu.dotprod,
            Isa::I8mm => Isa::Dotprod.supported(cpu) && cpu.i8mm,
        }
    }

    /// Whether a kernel written for `self` may run under `ceiling` on this
    /// CPU: the CPU has it, and it is the scalar code or a level of the
    /// ceiling's family no higher than the ceiling (so `neon` on an x86 CPU
    /// admits only the scalar code).
    pub fn admitted_under(self, ceiling: Isa) -> bool {
        let same_family = self == Isa::Scalar || self.is_arm() == ceiling.is_arm();
        same_family && self <= ceiling && self.supported(&CpuFeatures::get())
    }

    fn is_arm(self) -> bool {
        self >= Isa::Neon
    }

    /// The highest ISA dispatch may use: this CPU's best, or lower when
    /// `LLMKERNEL_ISA` says so. Read once per process.
    pub fn ceiling() -> Result<Isa> {
        static CEILING: OnceLock<Result<Isa>> = OnceLock::new();
        CEILING
            .get_or_init(|| match std::env::var("LLMKERNEL_ISA") {
                Ok(name) => Isa::from_name(&name).ok_or(Error::UnknownIsa(name)),
                Err(_) => Ok(Isa::best()),
            })
            .clone()
    }

    /// The best ISA this CPU supports.
    pub fn best() -> Isa {
        let cpu = CpuFeatures::get();
        Isa::ALL
            .into_iter()
            .rfind(|i| i.supported(&cpu))
            .unwrap_or(Isa::Scalar)
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
