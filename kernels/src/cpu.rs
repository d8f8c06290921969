//! CPU features, detected at run time once (never from compile-time flags, so
//! one binary serves every CPU of its architecture).

use std::sync::OnceLock;

/// The features llmkernel's kernels and ggml's care about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuFeatures {
    pub avx2: bool,
    pub fma: bool,
    pub f16c: bool,
    pub avx512f: bool,
    pub avx512bw: bool,
    pub avx512vl: bool,
    pub avx512vnni: bool,
    pub avx512vbmi: bool,
    pub avx512vbmi2: bool,
    pub avxvnni: bool,
    pub neon: bool,
    pub dotprod: bool,
    pub i8mm: bool,
    pub sve: bool,
}

impl CpuFeatures {
    /// The features of this CPU, detected once.
    pub fn get() -> CpuFeatures {
        static FEATURES: OnceLock<CpuFeatures> = OnceLock::new();
        *FEATURES.get_or_init(detect)
    }

    /// `(name, present)` for every feature relevant on this architecture.
    pub fn list(&self) -> Vec<(&'static str, bool)> {
        if cfg!(target_arch = "aarch64") {
            vec![
                ("NEON", self.neon),
                ("dotprod", self.dotprod),
                ("i8mm", self.i8mm),
                ("SVE", self.sve),
            ]
        } else {
            vec![
                ("AVX2", self.avx2),
                ("FMA", self.fma),
                ("F16C", self.f16c),
                ("AVX-512F", self.avx512f),
                ("AVX-512BW", self.avx512bw),
                ("AVX-512VL", self.avx512vl),
                ("AVX-512VNNI", self.avx512vnni),
                ("AVX-512VBMI", self.avx512vbmi),
                ("AVX-512VBMI2", self.avx512vbmi2),
                ("AVX-VNNI", self.avxvnni),
            ]
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn detect() -> CpuFeatures {
    use std::arch::is_x86_feature_detected as has;
    CpuFeatures {
        avx2: has!("avx2"),
        fma: has!("fma"),
        f16c: has!("f16c"),
        avx512f: has!("avx512f"),
        avx512bw: has!("avx512bw"),
        avx512vl: has!("avx512vl"),
        avx512vnni: has!("avx512vnni"),
        avx512vbmi: has!("avx512vbmi"),
        avx512vbmi2: has!("avx512vbmi2"),
        avxvnni: has!("avxvnni"),
        ..CpuFeatures::default()
    }
}

#[cfg(target_arch = "aarch64")]
fn detect() -> CpuFeatures {
    use std::arch::is_aarch64_feature_detected as has;
    CpuFeatures {
        neon: has!("neon"),
        dotprod: has!("dotprod"),
        i8mm: has!("i8mm"),
        sve: has!("sve"),
        ..CpuFeatures::default()
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn detect() -> CpuFeatures {
    CpuFeatures::default()
}
