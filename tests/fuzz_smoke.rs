//! The fuzz targets of `llmkernel::fuzz` on stable Rust, bounded in time: for
//! each target, its seeds and the committed corpus (`tests/fuzz/corpus/<target>/`),
//! then random mutations of them for `LLMKERNEL_FUZZ_SECONDS` seconds
//! (default 10) from the seed `LLMKERNEL_FUZZ_SEED` (default: the clock,
//! printed). A panic is written to `target/fuzz-findings/` and fails the test.
//! Coverage-guided runs: `scripts/fuzz.sh` (cargo-fuzz on nightly).

use llmkernel::fuzz::{seeds, TARGETS};
use llmkernel_kernels::testdata::Rng;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Mutates `base`: bit flips, bytes and interesting values (f16 NaN and Inf,
/// huge counts) written, ranges cut, repeated or taken from `other`.
fn mutate(base: &[u8], other: &[u8], r: &mut Rng) -> Vec<u8> {
    let mut v = base.to_vec();
    for _ in 0..1 + r.next_u64() % 4 {
        let at = |r: &mut Rng, len: usize| (r.next_u64() as usize) % len.max(1);
        match r.next_u64() % 8 {
            0 if !v.is_empty() => {
                let i = at(r, v.len());
                v[i] ^= 1 << (r.next_u64() % 8);
            }
            1 if !v.is_empty() => {
                let i = at(r, v.len());
                v[i] = r.next_u64() as u8;
            }
            2 => {
                const VALUES: [&[u8]; 8] = [
                    &[0x00, 0x7e],
                    &[0x00, 0x7c],
                    &[0x00, 0xfc],
                    &[0x01, 0x00],
                    &[0xff, 0x7b],
                    &[0, 0, 0, 0, 0, 0, 0, 0x10],
                    &[0xff; 8],
                    &[0; 8],
                ];
                let val = VALUES[(r.next_u64() % 8) as usize];
                let i = at(r, v.len());
                for (j, b) in val.iter().enumerate() {
                    if let Some(x) = v.get_mut(i + j) {
                        *x = *b;
                    }
                }
            }
            3 if !v.is_empty() => {
                let i = at(r, v.len());
                v.truncate(i);
            }
            4 if !v.is_empty() => {
                let (i, n) = (at(r, v.len()), 1 + at(r, 64));
                let end = (i + n).min(v.len());
                v.drain(i..end);
            }
            5 if !v.is_empty() => {
                let (i, n) = (at(r, v.len()), 1 + at(r, 64));
                let piece: Vec<u8> = v[i..(i + n).min(v.len())].to_vec();
                let j = at(r, v.len());
                v.splice(j..j, piece);
            }
            6 if !other.is_empty() => {
                let (i, n) = (at(r, other.len()), 1 + at(r, 256));
                let piece = &other[i..(i + n).min(other.len())];
                let j = at(r, v.len());
                let end = (j + piece.len()).min(v.len());
                v.splice(j..end, piece.iter().copied());
            }
            _ => {
                let i = at(r, v.len() + 1);
                v.insert(i.min(v.len()), r.next_u64() as u8);
            }
        }
    }
    v
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

/// Runs `target` on `input`; a panic saves the input and fails.
fn run(name: &str, target: fn(&[u8]), input: &[u8]) {
    if std::panic::catch_unwind(|| target(input)).is_err() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-findings");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!(
            "{name}-{:016x}",
            llmkernel_kernels::testdata::Rng::new(input.len() as u64).next_u64()
                ^ input.iter().fold(0u64, |h, &b| h.rotate_left(5) ^ b as u64)
        ));
        std::fs::write(&path, input).unwrap();
        panic!(
            "fuzz target {name} panicked; input saved to {}",
            path.display()
        );
    }
}

#[test]
fn fuzz_targets_within_a_time_budget() {
    let secs: u64 = std::env::var("LLMKERNEL_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let seed: u64 = std::env::var("LLMKERNEL_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    if let Ok(dir) = std::env::var("LLMKERNEL_FUZZ_WRITE_SEEDS") {
        // For scripts/fuzz.sh: the seeds as corpus files for cargo-fuzz.
        for (name, _) in TARGETS {
            let d = PathBuf::from(&dir).join(name);
            std::fs::create_dir_all(&d).unwrap();
            for (i, s) in seeds(name).iter().enumerate() {
                std::fs::write(d.join(format!("seed-{i:02}")), s).unwrap();
            }
        }
    }
    for (name, target) in TARGETS {
        let mut inputs = seeds(name);
        inputs.extend(corpus(name));
        assert!(!inputs.is_empty(), "{name}: no seeds");
        for i in &inputs {
            run(name, target, i);
        }
        let mut r = Rng::new(seed);
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < Duration::from_secs(secs) {
            let a = &inputs[(r.next_u64() % inputs.len() as u64) as usize];
            let b = &inputs[(r.next_u64() % inputs.len() as u64) as usize];
            let m = mutate(a, b, &mut r);
            run(name, target, &m);
            n += 1;
        }
        println!(
            "fuzz {name}: {} seed and corpus inputs, then {n} mutations in {secs} s (LLMKERNEL_FUZZ_SEED={seed})",
            inputs.len()
        );
        if name == "backend_ops" {
            // The target is not vacuous: LLMK took and computed nodes.
            if let Ok(reg) = llmkernel::backend::register_in_process() {
                // SAFETY: the registry register_in_process returned.
                let s = unsafe { llmkernel::backend::stats(reg) }.unwrap();
                println!(
                    "fuzz backend_ops: LLMK computed {} MUL_MAT nodes",
                    s.mul_mat
                );
                assert!(s.mul_mat > 0, "backend_ops never reached a computation");
            }
        }
    }
}
