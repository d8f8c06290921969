//! The machine's DRAM read bandwidth, measured in the same run as the kernels:
//! a streaming read of 1 GiB split across the threads, several variants (wide
//! SIMD loads with four independent accumulators where the CPU has them, the
//! same with software prefetch 8 KB ahead as the GEMVs do, and an
//! 8-accumulator integer loop the compiler vectorizes), best of a few runs.
//! The best variant is the ceiling a memory-bound GEMV is measured against.

use std::time::Instant;

/// Bytes read per measurement: far beyond any last-level cache. Tests shrink it
/// with `LLMKERNEL_BANDWIDTH_BYTES` (the figure is then not a DRAM ceiling).
pub fn probe_bytes() -> usize {
    std::env::var("LLMKERNEL_BANDWIDTH_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 30)
        .max(1 << 16)
}

pub struct Bandwidth {
    /// Best read rate in GB/s (1e9 bytes per second).
    pub gbps: f64,
    /// Which variant gave it, and with how many threads.
    pub how: String,
}

fn sum_u64(chunk: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    for c in chunk.chunks_exact(8) {
        for i in 0..8 {
            acc[i] = acc[i].wrapping_add(c[i]);
        }
    }
    acc.iter().fold(0, |a, &b| a.wrapping_add(b))
}

/// Four AVX2 accumulators; with `PREFETCH`, a `prefetcht0` 8 KB ahead per
/// 128 bytes, as the GEMVs prefetch their weights (on the Zen 5 VM the
/// hardware prefetchers alone left a single stream short of what DRAM gives).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn sum_avx2<const PREFETCH: bool>(chunk: &[u64]) -> u64 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_si256(); 4];
    for c in chunk.chunks_exact(16) {
        if PREFETCH {
            let p = c.as_ptr().cast::<i8>().wrapping_add(8192);
            // A prefetch never faults, whatever the address.
            _mm_prefetch::<_MM_HINT_T0>(p);
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64));
        }
        for (i, a) in acc.iter_mut().enumerate() {
            // SAFETY: c has 16 u64 = 4 x 32 bytes; i < 4.
            let v = unsafe { _mm256_loadu_si256(c.as_ptr().add(4 * i).cast()) };
            *a = _mm256_add_epi64(*a, v);
        }
    }
    let mut out = [0u64; 4];
    let s = _mm256_add_epi64(
        _mm256_add_epi64(acc[0], acc[1]),
        _mm256_add_epi64(acc[2], acc[3]),
    );
    // SAFETY: out has 32 bytes.
    unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), s) };
    out.iter().fold(0, |a, &b| a.wrapping_add(b))
}

fn variants() -> Vec<(&'static str, fn(&[u64]) -> u64)> {
    #[allow(unused_mut)]
    let mut v: Vec<(&'static str, fn(&[u64]) -> u64)> = vec![("u64 x8 accumulators", sum_u64)];
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was just detected.
        v.push(("AVX2 loads, 4 accumulators", |c| unsafe {
            sum_avx2::<false>(c)
        }));
        // SAFETY: AVX2 was just detected.
        v.push((
            "AVX2 loads, 4 accumulators, prefetch 8 KB ahead",
            |c| unsafe { sum_avx2::<true>(c) },
        ));
    }
    v
}

/// Measures the best streaming-read rate with 1..=`threads` threads.
pub fn measure(threads: usize) -> Bandwidth {
    use rayon::prelude::*;
    let bytes = probe_bytes();
    let data: Vec<u64> = (0..bytes / 8).map(|i| i as u64 | 1).collect();
    let mut best = Bandwidth {
        gbps: 0.0,
        how: String::new(),
    };
    let mut counts = vec![threads.max(1)];
    if threads > 1 {
        counts.push(1);
    }
    for t in counts {
        let pool = llmkernel_kernels::matmul::pool(t);
        for (name, f) in variants() {
            for _ in 0..3 {
                let start = Instant::now();
                let s: u64 = pool.install(|| {
                    data.par_chunks(data.len() / t)
                        .map(f)
                        .reduce(|| 0, u64::wrapping_add)
                });
                let secs = start.elapsed().as_secs_f64();
                std::hint::black_box(s);
                let gbps = (data.len() * 8) as f64 / secs / 1e9;
                if gbps > best.gbps {
                    best = Bandwidth {
                        gbps,
                        how: format!("{name}, {t} thread{}", if t > 1 { "s" } else { "" }),
                    };
                }
            }
        }
    }
    best
}
