//! `llmkernel bench`: llmkernel's kernels against ggml's best CPU path on the
//! same weights, the same activations and the same thread count, interleaved
//! (ggml, ours, ggml, ours, ...), medians of several repetitions.

pub mod bandwidth;

use crate::ggml_mm::{self, GgmlMatMul};
use crate::info;
use llmkernel_backend::team::OmpTeam;
use llmkernel_kernels::formats::lut;
use llmkernel_kernels::formats::*;
use llmkernel_kernels::formats::{sparse, sparse_x4};
use llmkernel_kernels::matmul::{
    matmul_lut_on, matmul_on, matmul_x4_on, LutMatrix, Parallel, QMatrix, X4Matrix,
};
use llmkernel_kernels::panel::MIN_COLS;
use llmkernel_kernels::table::{Config, Isa, Kernels, LutKernels, X4Kernels};
use llmkernel_kernels::testdata::Rng;
use llmkernel_kernels::Format;
use std::fmt::Write as _;
use std::time::Instant;

/// Pause before each timed run, longer than libgomp's default spin-wait (300,000
/// spins, a few ms) so no thread of the other side is still spinning.
const SETTLE_MS: u64 = 20;

/// Llama-3-8B's projection shapes (rows M x columns K): q/o, k/v, gate/up, down.
pub const LLAMA3_8B_SHAPES: [(usize, usize); 4] =
    [(4096, 4096), (1024, 4096), (14336, 4096), (4096, 14336)];

pub struct Options {
    pub formats: Vec<Format>,
    pub shapes: Vec<(usize, usize)>,
    pub batches: Vec<usize>,
    pub threads: Vec<usize>,
    /// Highest ISA for llmkernel's kernels (default: the best this CPU runs).
    pub isa: Option<Isa>,
    pub reps: usize,
    pub json: bool,
    /// Bench the 2:4 sparse kernels (`--sparse 2:4`): the weights are pruned
    /// 2:4 by magnitude before ggml quantizes them; ggml and our dense kernel
    /// run the dense blocks, our sparse kernel the same blocks packed.
    pub sparse: bool,
    /// With `isa`: compare against the linked ggml-cpu even when it was
    /// compiled for another tier (otherwise that is an error naming the build
    /// that matches).
    pub mixed_tiers: bool,
}

/// Checks that a capped run (`--isa`) meets a ggml-cpu of the same tier, and
/// returns the two tiers' names (ours, ggml's).
fn tiers(opts: &Options) -> Result<(String, &'static str), String> {
    let ggml = info::ggml_tier();
    let ours = match opts.isa {
        Some(isa) => isa,
        None => Isa::ceiling().map_err(|e| e.to_string())?,
    };
    let ours = Isa::ALL
        .into_iter()
        .rfind(|i| i.admitted_under(ours))
        .unwrap_or(Isa::Scalar)
        .to_string();
    if let Some(isa) = opts.isa {
        // ggml's "avx2+vnni" is a superset of llmkernel's avx2 level.
        let same = ggml == ours || (ggml == "avx2+vnni" && ours == "avx2");
        if !same && !opts.mixed_tiers {
            return Err(format!(
                "--isa {isa}: the linked ggml-cpu is compiled for {ggml}, so the ratios would \
                 compare two tiers. Build a bench with ggml-cpu at that tier: \
                 LLMKERNEL_GGML_CPU={isa} cargo run --release --target-dir target/ggml-{isa} -- bench --isa {isa} ... \
                 (or pass --mixed-tiers to compare anyway)"
            ));
        }
    }
    Ok((ours, ggml))
}

/// One measured case.
pub struct Case {
    pub format: Format,
    pub m: usize,
    pub k: usize,
    pub batch: usize,
    pub threads: usize,
    pub kernel: String,
    pub isa: Isa,
    pub ggml_buffer: String,
    pub copies: usize,
    pub ggml_ms: f64,
    pub ours_ms: f64,
    pub gbps: f64,
    pub bw_frac: f64,
    pub gflops: f64,
    pub nmse: f64,
    /// With `--sparse 2:4`: our dense kernel's time on the same (pruned) blocks;
    /// `ours_ms` is then the sparse kernel's.
    pub dense_ms: Option<f64>,
}

impl Case {
    pub fn speedup(&self) -> f64 {
        self.ggml_ms / self.ours_ms
    }

    /// Our dense kernel's time over our sparse kernel's (`--sparse` cases).
    pub fn speedup_vs_dense(&self) -> Option<f64> {
        self.dense_ms.map(|d| d / self.ours_ms)
    }

    pub fn json(&self) -> String {
        let sparse = match self.speedup_vs_dense() {
            Some(s) => format!(
                ",\"sparse\":\"2:4\",\"dense_ms\":{:.6},\"speedup_vs_dense\":{s:.4}",
                self.dense_ms.unwrap_or(0.0)
            ),
            None => String::new(),
        };
        format!(
            "{{\"format\":\"{}\",\"m\":{},\"k\":{},\"batch\":{},\"threads\":{},\"isa\":\"{}\",\"ggml_isa\":\"{}\",\"kernel\":\"{}\",\"ggml_buffer\":\"{}\",\"ggml_ms\":{:.6},\"ours_ms\":{:.6},\"speedup\":{:.4},\"gbps\":{:.3},\"bw_frac\":{:.4},\"gflops\":{:.3},\"nmse\":{:e},\"prefetch\":{}{sparse}}}",
            self.format.dense(), self.m, self.k, self.batch, self.threads, self.isa, info::ggml_tier(), self.kernel, self.ggml_buffer,
            self.ggml_ms, self.ours_ms, self.speedup(), self.gbps, self.bw_frac, self.gflops, self.nmse,
            llmkernel_kernels::cpu::prefetch().on
        )
    }
}

/// The last-level cache size in bytes: `LLMKERNEL_LLC_BYTES`, else Linux sysfs,
/// else 32 MiB.
fn llc_bytes() -> usize {
    if let Some(v) = std::env::var("LLMKERNEL_LLC_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return v;
    }
    (0..8)
        .rev()
        .filter_map(|i| {
            std::fs::read_to_string(format!("/sys/devices/system/cpu/cpu0/cache/index{i}/size"))
                .ok()
        })
        .find_map(|s| {
            let s = s.trim();
            let (num, mult) = match s.strip_suffix('K') {
                Some(n) => (n, 1024),
                None => s.strip_suffix('M').map(|n| (n, 1 << 20)).unwrap_or((s, 1)),
            };
            num.parse::<usize>().ok().map(|v| v * mult)
        })
        .unwrap_or(32 << 20)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs every case and prints the table (or JSON lines) on stdout, progress on stderr.
pub fn run(opts: &Options) -> Result<Vec<Case>, String> {
    for &format in &opts.formats {
        if !Format::WEIGHTS.contains(&format) {
            return Err(format!("{format} is not a weight format"));
        }
        if opts.sparse && format.sparse_2_4().is_none() {
            return Err(format!(
                "--sparse 2:4: llmkernel has 2:4 kernels for q4_0 and q8_0, not {format}"
            ));
        }
        for &(m, k) in &opts.shapes {
            format
                .blocks_in(k)
                .map_err(|e| format!("shape {m}x{k}: {e}"))?;
        }
    }
    let (our_tier, ggml_tier) = tiers(opts)?;
    let max_threads = opts.threads.iter().copied().max().unwrap_or(1);
    eprintln!(
        "measuring read bandwidth (streaming read of {} MiB)...",
        bandwidth::probe_bytes() >> 20
    );
    let bw = bandwidth::measure(max_threads);
    if !opts.json {
        println!("llmkernel bench — commit {}", info::llmkernel_commit());
        println!(
            "cpu: {} ({}); llc {} MiB",
            info::cpu_name(),
            std::env::consts::ARCH,
            llc_bytes() >> 20
        );
        println!(
            "ggml: vendored llama.cpp {} built with {}",
            info::UPSTREAM_COMMIT,
            info::ggml_cpu_flags()
        );
        println!(
            "tiers: llmkernel {our_tier}, ggml-cpu {ggml_tier}{}",
            if our_tier == ggml_tier {
                ""
            } else {
                " (not the same tier: see --isa and LLMKERNEL_GGML_CPU)"
            }
        );
        println!("read bandwidth: {:.1} GB/s ({})", bw.gbps, bw.how);
        println!(
            "software prefetch in our GEMVs: {}",
            llmkernel_kernels::cpu::prefetch().why
        );
        println!(
            "batch 1 runs over weight copies totalling >= 4x the LLC (read from DRAM); medians of {} interleaved reps",
            opts.reps
        );
        println!();
        println!(
            "{:<5} {:>6} {:>6} {:>5} {:>3} {:<32} {:<10} {:>9} {:>9} {:>7} {:>7} {:>6} {:>8} {:>9}{}",
            "fmt",
            "M",
            "K",
            "batch",
            "thr",
            "ours (kernel_tile_isa)",
            "ggml buf",
            "ggml ms",
            "ours ms",
            "speedup",
            "GB/s",
            "bw%",
            "GFLOP/s",
            "NMSE",
            if opts.sparse {
                format!(" {:>9} {:>8}", "dense ms", "vs dense")
            } else {
                String::new()
            }
        );
        if opts.sparse {
            println!("(2:4: weights pruned by magnitude; ggml and \"dense ms\" run the dense blocks, \"ours\" the packed 2:4 blocks)");
        }
    }
    let mut cases = Vec::new();
    for &format in &opts.formats {
        match (format, opts.sparse) {
            (Format::Q4_0, true) => run_format::<BlockQ4_0, BlockQ4_0Sx4, BlockQ4_0x4>(
                format,
                opts,
                bw.gbps,
                &mut cases,
                Some(sparse::pack_q4_0),
            )?,
            (Format::Q8_0, true) => run_format::<BlockQ8_0, BlockQ8_0Sx4, BlockQ8_0x4>(
                format,
                opts,
                bw.gbps,
                &mut cases,
                Some(sparse::pack_q8_0),
            )?,
            // Our dense Q4_0/Q5_0/Q8_0/IQ4_NL decode runs rows interleaved by four, as the plugin repacks them.
            (Format::Q4_0, _) => run_format::<BlockQ4_0, BlockQ4_0Sx4, BlockQ4_0x4>(
                format, opts, bw.gbps, &mut cases, None,
            )?,
            (Format::Q8_0, _) => run_format::<BlockQ8_0, BlockQ8_0Sx4, BlockQ8_0x4>(
                format, opts, bw.gbps, &mut cases, None,
            )?,
            // Q5_0 and IQ4_NL have no 2:4 form: their four-row layout stands in for both.
            (Format::Q5_0, false) => run_format::<BlockQ5_0, BlockQ5_0x4, BlockQ5_0x4>(
                format, opts, bw.gbps, &mut cases, None,
            )?,
            (Format::IQ4_NL, false) => run_format::<BlockIq4Nl, BlockIq4Nlx4, BlockIq4Nlx4>(
                format, opts, bw.gbps, &mut cases, None,
            )?,
            (_, _) => format
                .with(Dense {
                    format,
                    opts,
                    bw_gbps: bw.gbps,
                    cases: &mut cases,
                })
                .ok_or_else(|| format!("{format} has no kernels"))??,
        }
    }
    Ok(cases)
}

/// Packs dense blocks into their 2:4 sparse form.
type Pack<B, S> = fn(&[B]) -> llmkernel_kernels::Result<Vec<S>>;

/// Benches a weight format in GGUF's layout (every format but Q4_0 / Q8_0).
struct Dense<'a> {
    format: Format,
    opts: &'a Options,
    bw_gbps: f64,
    cases: &'a mut Vec<Case>,
}

impl WithFormat for Dense<'_> {
    type Out = Result<(), String>;
    fn run<B: Kernels>(self) -> Result<(), String> {
        // (The 2:4 and interleaved types are unused without a pack function and
        // for formats other than Q4_0 / Q8_0.)
        run_format::<B, BlockQ8_0Sx4, BlockQ8_0x4>(
            self.format,
            self.opts,
            self.bw_gbps,
            self.cases,
            None,
        )
    }
}

/// The name and ISA of the kernel [`matmul_x4_on`] runs for `n` columns.
fn x4_kernel_used<X: X4Kernels>(config: &Config<X::Row>, n: usize) -> (&'static str, Isa) {
    match config.panel_for(n) {
        Some(p) => (p.name(), p.isa()),
        None => {
            let x4 = config.x4::<X>();
            (x4.name(), x4.isa())
        }
    }
}

fn select<B: Kernels>(isa: Option<Isa>) -> Result<Config<B>, String> {
    match isa {
        Some(isa) => Ok(Config::at(isa)),
        None => Config::best().map_err(|e| e.to_string()),
    }
}

/// One shape's weights, quantized by ggml once, in every layout a case runs.
struct Weights<X, D> {
    m: usize,
    k: usize,
    /// ggml's blocks (GGUF layout), as bytes: what ggml and our GGUF-layout kernels read.
    gguf: Vec<u8>,
    /// With `--sparse`: the 2:4 blocks, interleaved by four rows.
    sparse: Option<Vec<X>>,
    /// For Q4_0 / Q8_0: the rows interleaved by four, as the plugin repacks them for decode.
    dense_x4: Option<Vec<D>>,
}

impl<X: X4Kernels, D: X4Kernels> Weights<X, D> {
    /// Random weights of `m x k` (pruned 2:4 by magnitude first when `pack`
    /// is given) quantized with ggml's quantizer.
    fn new<B: Kernels>(
        format: Format,
        (m, k): (usize, usize),
        rng: &mut Rng,
        threads: usize,
        pack: Option<Pack<B, X::Row>>,
    ) -> Result<Self, String> {
        let mut w = rng.activations(m * k);
        if pack.is_some() {
            crate::prune::prune_row_2_4(&mut w, |_, v| v.abs());
        }
        let gguf = ggml_mm::quantize(format, &w, m, k, threads)?;
        let sparse = match pack {
            Some(pack) => {
                let dense: Vec<B> = bytemuck::pod_collect_to_vec(&gguf);
                let rows = pack(&dense).map_err(|e| format!("{format} {m}x{k}: {e}"))?;
                Some(sparse_x4::interleave(&rows, m, k).map_err(|e| e.to_string())?)
            }
            None => None,
        };
        let interleave_dense =
            D::FORMAT == format && std::mem::size_of::<D::Row>() == std::mem::size_of::<B>();
        let dense_x4 = if interleave_dense {
            let rows: Vec<D::Row> = bytemuck::pod_collect_to_vec(&gguf);
            Some(sparse_x4::interleave(&rows, m, k).map_err(|e| e.to_string())?)
        } else {
            None
        };
        Ok(Weights {
            m,
            k,
            gguf,
            sparse,
            dense_x4,
        })
    }

    /// The bytes "ours" streams: the 2:4 layout's with `--sparse`, else GGUF's.
    fn stored_bytes(&self) -> usize {
        match &self.sparse {
            Some(s) => std::mem::size_of_val(s.as_slice()),
            None => self.gguf.len(),
        }
    }
}

/// `copies` copies of a shape's weights for one batch: batch 1 rotates over
/// copies totalling at least 4x the last-level cache, so decode is measured
/// from DRAM.
struct Copies<B, X, D> {
    gguf: Vec<Vec<B>>,
    sparse: Vec<Vec<X>>,
    /// Only for batches below [`MIN_COLS`] (larger ones run the panel GEMM on GGUF's layout).
    dense_x4: Vec<Vec<D>>,
}

impl<B: Kernels, X: X4Kernels, D: X4Kernels> Copies<B, X, D> {
    fn new(w: &Weights<X, D>, copies: usize, n: usize) -> Self {
        let gguf = (0..copies)
            .map(|_| {
                let mut v = vec![B::zeroed(); w.gguf.len() / std::mem::size_of::<B>()];
                bytemuck::cast_slice_mut::<B, u8>(&mut v).copy_from_slice(&w.gguf);
                v
            })
            .collect();
        Copies {
            gguf,
            sparse: repeat(w.sparse.as_ref(), copies),
            dense_x4: repeat(w.dense_x4.as_ref().filter(|_| n < MIN_COLS), copies),
        }
    }
}

/// `copies` clones of `v`, or none.
fn repeat<T: Clone>(v: Option<&Vec<T>>, copies: usize) -> Vec<Vec<T>> {
    v.map_or_else(Vec::new, |v| (0..copies).map(|_| v.clone()).collect())
}

/// Matrices over every copy of one layout.
fn matrices<'a, T, M>(
    copies: &'a [Vec<T>],
    new: impl Fn(&'a [T]) -> llmkernel_kernels::Result<M>,
) -> Result<Vec<M>, String> {
    copies
        .iter()
        .map(|v| new(v))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())
}

/// `sum (got - want)^2` and `sum want^2`: the NMSE's numerator and denominator.
fn squared_error(want: &[f32], got: &[f32]) -> (f64, f64) {
    want.iter().zip(got).fold((0f64, 0f64), |(a, b), (&w, &g)| {
        (a + (g as f64 - w as f64).powi(2), b + (w as f64).powi(2))
    })
}

/// Per-copy seconds of `reps` interleaved runs of each of `runs` (ggml,
/// ours, and our 2:4 form where there is one), each after a pause: each
/// side's idle worker threads spin for a while after a run (libgomp's),
/// stealing cores from the other side's next run.
fn time_interleaved(
    reps: usize,
    copies: usize,
    runs: &mut [&mut dyn FnMut() -> Result<(), String>],
) -> Result<Vec<Vec<f64>>, String> {
    let settle_ms = std::env::var("LLMKERNEL_BENCH_SETTLE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SETTLE_MS);
    let mut times = vec![Vec::new(); runs.len()];
    for _ in 0..reps.max(1) {
        for (run, t) in runs.iter_mut().zip(&mut times) {
            std::thread::sleep(std::time::Duration::from_millis(settle_ms));
            let s = Instant::now();
            run()?;
            t.push(s.elapsed().as_secs_f64() / copies as f64);
        }
    }
    Ok(times)
}

/// Benches format `B` against ggml; with `pack`, also its 2:4 sparse form,
/// interleaved by four rows as `X` (then "ours" is the 2:4 matmul and
/// `dense_ms` our dense one). For Q4_0 and Q8_0 our dense decode (batches
/// under [`MIN_COLS`]) runs the rows interleaved by four as `D`, as the plugin
/// repacks them.
fn run_format<B: Kernels, X: X4Kernels, D: X4Kernels>(
    format: Format,
    opts: &Options,
    bw_gbps: f64,
    cases: &mut Vec<Case>,
    pack: Option<Pack<B, X::Row>>,
) -> Result<(), String> {
    let max_threads = opts.threads.iter().copied().max().unwrap_or(1);
    let mut rng = Rng::new(42);
    for &(m, k) in &opts.shapes {
        eprintln!("{format} {m}x{k}: quantizing random weights with ggml's quantizer...");
        let w = Weights::<X, D>::new::<B>(format, (m, k), &mut rng, max_threads, pack)?;
        for &n in &opts.batches {
            let copies = if n == 1 {
                (4 * llc_bytes()).div_ceil(w.stored_bytes()).max(1)
            } else {
                1
            };
            let c = Copies::<B, X, D>::new(&w, copies, n);
            let x = rng.activations(n * k);
            // Highest thread count first: after a 1-thread ggml backend, a 2-thread one
            // in the same process ran up to 2x slower here (libgomp team change; see
            // docs/BENCHMARKS.md), which a llama.cpp process with a fixed count never sees.
            let mut threads = opts.threads.clone();
            threads.sort_unstable_by(|a, b| b.cmp(a));
            for &t in &threads {
                eprint!(
                    "\r{format} {m}x{k} batch {n} threads {t}: {copies} weight cop{}...   ",
                    if copies > 1 { "ies" } else { "y" }
                );
                let case = run_case(format, opts, &w, &c, &x, (n, t), bw_gbps)?;
                eprint!("\r{:70}\r", "");
                if opts.json {
                    println!("{}", case.json());
                } else {
                    println!("{}", row(&case));
                }
                cases.push(case);
            }
        }
    }
    Ok(())
}

/// Our matmul on a format's lookup-table layout ([`lut`]: the ternary
/// formats' bytes, the i-quants' sign planes), where
/// [`Config::lut_for`] sends the batch there:
/// `copies` copies of the repacked weights, and the kernel used.
struct Lut {
    run: Box<LutRun>,
    kernel: (&'static str, Isa),
}

/// `(copy, x, n, y, threads)`: the matmul on one copy.
type LutRun = dyn Fn(usize, &[f32], usize, &mut [f32], &dyn Parallel) -> Result<(), String>;

impl Lut {
    fn new(
        format: Format,
        isa: Option<Isa>,
        gguf: &[u8],
        (m, k): (usize, usize),
        copies: usize,
        n: usize,
    ) -> Result<Option<Lut>, String> {
        match format {
            // The ternary formats' byte tables (tier avx512), else their sign planes.
            Format::TQ1_0 => match Lut::of::<BlockTq1_0x64>(isa, gguf, (m, k), copies, n)? {
                None => Lut::of::<BlockTq1_0Px64>(isa, gguf, (m, k), copies, n),
                lut => Ok(lut),
            },
            Format::TQ2_0 => match Lut::of::<BlockTq2_0x64>(isa, gguf, (m, k), copies, n)? {
                None => Lut::of::<BlockTq2_0Px64>(isa, gguf, (m, k), copies, n),
                lut => Ok(lut),
            },
            Format::IQ2_XXS => Lut::of::<BlockIq2Xxsx64>(isa, gguf, (m, k), copies, n),
            Format::IQ2_XS => Lut::of::<BlockIq2Xsx64>(isa, gguf, (m, k), copies, n),
            Format::IQ2_S => Lut::of::<BlockIq2Sx64>(isa, gguf, (m, k), copies, n),
            Format::IQ3_S => Lut::of::<BlockIq3Sx64>(isa, gguf, (m, k), copies, n),
            Format::IQ3_XXS => Lut::of::<BlockIq3Xxsx64>(isa, gguf, (m, k), copies, n),
            _ => Ok(None),
        }
    }

    fn of<X: LutKernels>(
        isa: Option<Isa>,
        gguf: &[u8],
        (m, k): (usize, usize),
        copies: usize,
        n: usize,
    ) -> Result<Option<Lut>, String> {
        let config: Config<X::Row> = select(isa)?;
        let Some(kernel) = config.lut_for::<X>(n) else {
            return Ok(None);
        };
        let rows: Vec<X::Row> = bytemuck::pod_collect_to_vec(gguf);
        let one = lut::interleave::<X>(&rows, m, k).map_err(|e| e.to_string())?;
        let w: Vec<Vec<X>> = (0..copies).map(|_| one.clone()).collect();
        Ok(Some(Lut {
            run: Box::new(move |c, x, n, y, par| {
                let qm = LutMatrix::new(&w[c], m, k).map_err(|e| e.to_string())?;
                matmul_lut_on(&qm, x, n, y, &config, par).map_err(|e| e.to_string())
            }),
            kernel: (kernel.name(), kernel.isa()),
        }))
    }
}

/// One case: batch `n` on `t` threads, ggml and ours interleaved.
fn run_case<B: Kernels, X: X4Kernels, D: X4Kernels>(
    format: Format,
    opts: &Options,
    w: &Weights<X, D>,
    c: &Copies<B, X, D>,
    x: &[f32],
    (n, t): (usize, usize),
    bw_gbps: f64,
) -> Result<Case, String> {
    let (m, k, copies) = (w.m, w.k, c.gguf.len());
    let config: Config<B> = select(opts.isa)?;
    let sconfig: Config<X::Row> = select(opts.isa)?;
    let dconfig: Config<D::Row> = select(opts.isa)?;
    let qms = matrices(&c.gguf, |v| QMatrix::new(v, m, k))?;
    let sqms = matrices(&c.sparse, |v| X4Matrix::new(v, m, k))?;
    let dqms = matrices(&c.dense_x4, |v| X4Matrix::new(v, m, k))?;
    // The ternary formats' decode on their lookup-table layout (as the plugin repacks them).
    let lut = match w.sparse {
        None => Lut::new(format, opts.isa, &w.gguf, (m, k), copies, n)?,
        Some(_) => None,
    };
    let ggml_w: Vec<&[u8]> = c.gguf.iter().map(|v| bytemuck::cast_slice(v)).collect();
    let mut g = GgmlMatMul::new(format, m, k, n, &ggml_w, t)?;
    // Our matmuls run on the OpenMP team ggml's run uses, as the LLMK
    // backend does inside llama.cpp: both sides get the same threads.
    // SAFETY: omp() is this process's libgomp, linked in.
    let team = unsafe { OmpTeam::new(crate::backend::omp(), t) };
    g.set_input(x);
    let mut y = vec![0f32; n * m];
    let ours = |y: &mut [f32]| -> Result<(), String> {
        if let Some(lut) = &lut {
            for c in 0..copies {
                (lut.run)(c, x, n, y, &team)?;
            }
            return Ok(());
        }
        for qm in &dqms {
            matmul_x4_on(qm, x, n, y, &dconfig, &team).map_err(|e| e.to_string())?;
        }
        if dqms.is_empty() {
            for qm in &qms {
                matmul_on(qm, x, n, y, &config, &team).map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    };
    let ours_sparse = |y: &mut [f32]| -> Result<(), String> {
        for qm in &sqms {
            matmul_x4_on(qm, x, n, y, &sconfig, &team).map_err(|e| e.to_string())?;
        }
        Ok(())
    };
    // Warm-up: page in, build ggml's work buffer and threads.
    g.compute()?;
    ours(&mut y)?;
    ours_sparse(&mut y)?;
    let times = {
        let mut ys = vec![0f32; n * m];
        let (mut run_g, mut run_o) = (|| g.compute(), || ours(&mut y));
        let mut run_s = || ours_sparse(&mut ys);
        let mut runs: Vec<&mut dyn FnMut() -> Result<(), String>> = vec![&mut run_g, &mut run_o];
        if !sqms.is_empty() {
            runs.push(&mut run_s);
        }
        time_interleaved(opts.reps, copies, &mut runs)?
    };
    let reference = g.output(0);
    let (mut ours_times, mut dense_ms) = (times[1].clone(), None);
    if let Some(sqm) = sqms.first() {
        // Sparse and dense sum the same integers; only the float summation
        // order may differ (the interleaved GEMV splits each row over eight lanes).
        let mut yd = vec![0f32; n * m];
        matmul_on(&qms[0], x, n, &mut yd, &config, &team).map_err(|e| e.to_string())?;
        matmul_x4_on(sqm, x, n, &mut y, &sconfig, &team).map_err(|e| e.to_string())?;
        let (num, den) = squared_error(&yd, &y);
        if !(num <= 1e-10 * den) {
            return Err(format!(
                "{format} {m}x{k} batch {n}: the 2:4 output differs from the dense one by NMSE {:e}",
                num / den
            ));
        }
        dense_ms = Some(median(ours_times) * 1e3);
        ours_times = times[2].clone();
    } else {
        ours(&mut y)?;
    }
    let (num, den) = squared_error(&reference, &y);
    let (ggml_s, ours_s) = (median(times[0].clone()), median(ours_times));
    let bytes = w.stored_bytes() as f64;
    let used = if dense_ms.is_some() {
        x4_kernel_used::<X>(&sconfig, n)
    } else if let Some(lut) = &lut {
        lut.kernel
    } else if !dqms.is_empty() {
        x4_kernel_used::<D>(&dconfig, n)
    } else {
        config.kernel_used(n)
    };
    Ok(Case {
        format,
        m,
        k,
        batch: n,
        threads: t,
        kernel: used.0.to_string(),
        isa: used.1,
        ggml_buffer: g.weight_buffer.clone(),
        copies,
        ggml_ms: ggml_s * 1e3,
        ours_ms: ours_s * 1e3,
        gbps: bytes / ours_s / 1e9,
        bw_frac: bytes / ours_s / 1e9 / bw_gbps,
        gflops: 2.0 * (m * n * k) as f64 / ours_s / 1e9,
        nmse: if den > 0.0 { num / den } else { num },
        dense_ms,
    })
}

fn row(c: &Case) -> String {
    let mut s = String::new();
    let format = match c.dense_ms {
        Some(_) => c.format.sparse_2_4().unwrap_or(c.format),
        None => c.format,
    };
    write!(
        s,
        "{:<5} {:>6} {:>6} {:>5} {:>3} {:<32} {:<10} {:>9.3} {:>9.3} {:>6.2}x {:>7.1} {:>5.0}% {:>8.1} {:>9.2e}",
        format.name(),
        c.m,
        c.k,
        c.batch,
        c.threads,
        c.kernel,
        c.ggml_buffer,
        c.ggml_ms,
        c.ours_ms,
        c.speedup(),
        c.gbps,
        100.0 * c.bw_frac,
        c.gflops,
        c.nmse
    )
    .unwrap();
    if let (Some(d), Some(r)) = (c.dense_ms, c.speedup_vs_dense()) {
        write!(s, " {d:>9.3} {r:>7.2}x").unwrap();
    }
    s
}

/// Parses `MxK` (e.g. `4096x14336`).
pub fn parse_shape(s: &str) -> Result<(usize, usize), String> {
    let (m, k) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("shape {s:?}: expected MxK, e.g. 4096x4096"))?;
    let p = |v: &str| {
        v.trim()
            .parse::<usize>()
            .map_err(|_| format!("shape {s:?}: {v:?} is not a number"))
    };
    let (m, k) = (p(m)?, p(k)?);
    if m == 0 || k == 0 {
        return Err(format!("shape {s:?}: dimensions must be positive"));
    }
    Ok((m, k))
}
