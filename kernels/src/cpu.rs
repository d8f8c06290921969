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

/// Whether the aarch64 GEMVs prefetch their weights in software, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefetch {
    pub on: bool,
    pub why: &'static str,
}

/// What [`set_prefetch`] chose: 0 nothing, 1 off, 2 on.
static PREFETCH_SET: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Software prefetch in the one-column GEMVs. x86: always on (measured:
/// docs/BENCHMARKS.md). aarch64: `LLMKERNEL_PREFETCH=0` or `=1` decides;
/// otherwise on unless every core in /proc/cpuinfo is an in-order Cortex
/// (A32/A34/A35/A53/A55/A510/A520). The roofline (`scripts/arm-estimate.sh`)
/// puts those boards' GEMVs below their memory bandwidth, where a prefetch
/// only takes issue slots; the out-of-order boards' cores together stream
/// past it, where prefetch is what keeps a core's stream going on x86.
/// Decided once per process; the kernels choose a build with or without it
/// per call, so that each loop stays straight.
pub fn prefetch() -> Prefetch {
    static DECIDED: OnceLock<Prefetch> = OnceLock::new();
    match PREFETCH_SET.load(std::sync::atomic::Ordering::Relaxed) {
        0 => *DECIDED.get_or_init(|| {
            let (on, why) = decide_prefetch();
            Prefetch { on, why }
        }),
        v => Prefetch {
            on: v == 2,
            why: "set by the program",
        },
    }
}

/// Turns the aarch64 GEMVs' software prefetch on or off for the rest of the
/// process (the tests run both builds; results are the same either way).
pub fn set_prefetch(on: bool) {
    PREFETCH_SET.store(if on { 2 } else { 1 }, std::sync::atomic::Ordering::Relaxed);
}

fn decide_prefetch() -> (bool, &'static str) {
    if !cfg!(target_arch = "aarch64") {
        return (true, "on (x86 GEMVs: always)");
    }
    match std::env::var("LLMKERNEL_PREFETCH")
        .as_deref()
        .map(str::trim)
    {
        Ok("0") => return (false, "off (LLMKERNEL_PREFETCH=0)"),
        Ok("1") => return (true, "on (LLMKERNEL_PREFETCH=1)"),
        _ => {}
    }
    match std::fs::read_to_string("/proc/cpuinfo") {
        Ok(text) if all_in_order(&text) => (
            false,
            "off (every core is an in-order Cortex; LLMKERNEL_PREFETCH=1 turns it on)",
        ),
        Ok(text) if parts(&text).next().is_some() => (
            true,
            "on (out-of-order cores; LLMKERNEL_PREFETCH=0 turns it off)",
        ),
        _ => (
            true,
            "on (no CPU parts listed: taken as out-of-order; LLMKERNEL_PREFETCH=0 turns it off)",
        ),
    }
}

/// The `CPU part` numbers /proc/cpuinfo lists (one per core).
fn parts(cpuinfo: &str) -> impl Iterator<Item = u32> + '_ {
    cpuinfo.lines().filter_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == "CPU part")
            .then(|| u32::from_str_radix(v.trim().trim_start_matches("0x"), 16).ok())
            .flatten()
    })
}

/// Whether /proc/cpuinfo lists cores and every one is an in-order Arm Cortex:
/// A32 (0xd01), A34 (0xd02), A35 (0xd04), A53 (0xd03), A55 (0xd05),
/// A510 (0xd46), A520 (0xd80).
fn all_in_order(cpuinfo: &str) -> bool {
    const IN_ORDER: [u32; 7] = [0xd01, 0xd02, 0xd03, 0xd04, 0xd05, 0xd46, 0xd80];
    let mut any = false;
    for p in parts(cpuinfo) {
        if !IN_ORDER.contains(&p) {
            return false;
        }
        any = true;
    }
    any
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_boards_are_told_apart() {
        let a55 = "processor\t: 0\nCPU part\t: 0xd05\n\nprocessor\t: 1\nCPU part\t: 0xd05\n";
        let pi4 = "CPU part\t: 0xd08\n";
        let big_little = "CPU part\t: 0xd05\nCPU part\t: 0xd0b\n";
        assert!(all_in_order(a55));
        assert!(!all_in_order(pi4));
        assert!(!all_in_order(big_little));
        assert!(!all_in_order("processor\t: 0\n"));
        assert_eq!(
            parts("CPU part : 0xd46\nCPU part: zz\n").collect::<Vec<_>>(),
            [0xd46]
        );
    }
}
