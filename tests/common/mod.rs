//! Shared test data: random and extreme blocks of every format.
#![allow(dead_code)]

use llmkernel::kernels::testdata::{self, RandomBlock};
use llmkernel::kernels::QuantBlock;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// f16 scales at the edges: zeros, subnormals, the largest finite, negatives, Inf and NaN.
pub const EDGE_SCALES: [u16; 12] = [
    0x0000, 0x8000, 0x0001, 0x03FF, 0x0400, 0x3C00, 0x7BFF, 0xFBFF, 0xBC00, 0x7C00, 0xFC00, 0x7E00,
];

/// A block format whose blocks a test can make at random and at the edges
/// (each format's file implements `RandomBlock`).
pub trait TestBlock: QuantBlock + RandomBlock {}
impl<B: QuantBlock + RandomBlock> TestBlock for B {}

/// `n` random blocks (random codes, finite scales between 2^-14 and 2^4).
pub fn random_blocks<B: TestBlock>(seed: u64, n: usize) -> Vec<B> {
    B::random_vec(&mut testdata::Rng::new(seed), n)
}

/// Every combination of code fill (all zero, all max, alternating) and edge scales.
pub fn edge_blocks<B: TestBlock>() -> Vec<B> {
    let mut v = Vec::new();
    for fill in [0x00u8, 0xFF, 0x55, 0xAA, 0x0F, 0xF0] {
        for &d in &EDGE_SCALES {
            for &dmin in &EDGE_SCALES {
                v.push(B::filled(fill, d, dmin));
            }
        }
    }
    v
}

/// Activations of assorted magnitudes: Gaussian-like, with outliers, zeros, and tiny values.
pub fn random_activations(r: &mut StdRng, n: usize) -> Vec<f32> {
    let scale = 10f32.powf(r.gen_range(-3.0..2.0));
    (0..n)
        .map(|i| match r.gen_range(0..100) {
            0 => 0.0,
            1 => scale * r.gen_range(-50.0..50.0),
            2 if i % 7 == 0 => f32::MIN_POSITIVE * r.gen_range(-4.0..4.0),
            _ => scale * (r.gen::<f32>() + r.gen::<f32>() + r.gen::<f32>() - 1.5),
        })
        .collect()
}

/// The built `llmkernel` binary as a command this host runs: directly, or,
/// for an aarch64 build whose tests run under qemu-user (which cannot start
/// another aarch64 program without binfmt_misc), through `qemu-aarch64 -L
/// $LLMKERNEL_QEMU_LD_PREFIX` (default /usr/aarch64-linux-gnu, as
/// .cargo/config.toml's runner). Panics if neither runs.
pub fn llmkernel_command() -> std::process::Command {
    use std::process::Command;
    let bin = env!("CARGO_BIN_EXE_llmkernel");
    let runs = |c: &mut Command| {
        c.arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if runs(&mut Command::new(bin)) {
        return Command::new(bin);
    }
    let prefix = std::env::var("LLMKERNEL_QEMU_LD_PREFIX")
        .unwrap_or_else(|_| "/usr/aarch64-linux-gnu".into());
    let qemu = || {
        let mut c = Command::new("qemu-aarch64");
        c.arg("-L").arg(&prefix).arg(bin);
        c
    };
    assert!(
        cfg!(target_arch = "aarch64") && runs(&mut qemu()),
        "{bin} runs neither directly nor through qemu-aarch64 -L {prefix}"
    );
    qemu()
}

/// Runs a few tokens through libllama: the file loads and gives finite logits.
pub fn runs(model: &std::path::Path) {
    let m = llmkernel::llama::Model::load(model).unwrap();
    let mut cx = m.context(64, 64, 2).unwrap();
    let logits = cx.eval(&[1, 450, 4996, 17354, 1701]).unwrap();
    assert!(!logits.is_empty() && logits.iter().all(|v| v.is_finite()));
}

/// The dispatch table's plugin policy for `f` under `isa`.
pub fn table_policy(
    f: llmkernel::kernels::Format,
    isa: llmkernel::kernels::table::Isa,
) -> llmkernel::kernels::table::PluginTakes {
    use llmkernel::kernels::formats::WithFormat;
    use llmkernel::kernels::table::{Config, Isa, Kernels, PluginTakes};
    struct P(Isa);
    impl WithFormat for P {
        type Out = PluginTakes;
        fn run<B: Kernels>(self) -> PluginTakes {
            Config::<B>::at(self.0).plugin()
        }
    }
    f.with(P(isa)).expect("a weight format")
}

/// Whether the plugin takes `f` at `batch` under `isa` only through a
/// lookup-table GEMV (then only for weights it can repack: a file mapping).
pub fn table_via_lut(
    f: llmkernel::kernels::Format,
    isa: llmkernel::kernels::table::Isa,
    batch: usize,
) -> bool {
    use llmkernel::kernels::formats::WithFormat;
    use llmkernel::kernels::table::{Config, Isa, Kernels};
    struct P(Isa, usize);
    impl WithFormat for P {
        type Out = bool;
        fn run<B: Kernels>(self) -> bool {
            Config::<B>::at(self.0).plugin_via_lut(self.1)
        }
    }
    f.with(P(isa, batch)).expect("a weight format")
}
