//! `llmkernel quantize --reconstruct`: error-compensated quantization into
//! stock GGUF formats.
//!
//! llama-quantize rounds each weight row on its own; an importance matrix
//! weighs each input channel's rounding error, but the error a row keeps is
//! never compensated. Here the layer matrices are quantized with GPTQ's
//! column-wise solver ([`reconstruct::quantize_compensated`]): each
//! column's rounding error is spread over the columns not yet quantized,
//! through the inverse Hessian `H = XᵀX` of the matrix's inputs X on
//! calibration text (run through the input model: the inputs of the
//! unquantized layers).
//!
//! How the output stays a stock file: llama-quantize (the vendored
//! `llama_model_quantize`, with the same importance matrix) writes the
//! output first, choosing every tensor's type as it always does. Then each
//! layer matrix whose type has a solver is quantized again from the input's
//! weights:
//! - every block's scales (and mins) are ggml's choice, by the same
//!   quantizer with the imatrix's weights (`ggml_quantize_chunk` on the
//!   input rows): exactly llama-quantize's scales;
//! - the codes are chosen again, column by column in GPTQ's "act order"
//!   (the inputs with the largest Hessian diagonal first): each the nearest
//!   at its block's scales, its rounding error compensated in the columns
//!   not yet visited; the i-quants' eight values sharing grid points and
//!   signs are chosen together, groups ordered by their diagonal's sum
//!   ([`reconstruct::quantize_compensated`]);
//! - the scales are not refit afterwards.
//!
//! Memory: the Hessians are summed while the input model runs over the
//! calibration text, the layers in passes that fit `--calib-mem` ([`plan`]);
//! each pass's forward run stops after its last layer, and its layers are
//! solved before the next pass.
//!
//! Why these choices, measured (docs/QUALITY.md): choosing each block's
//! scales from the compensated values when the solver reaches the block
//! (which forces the natural column order) gave SmolLM2 Q3_K a KLD 0.88×
//! the imatrix's; fixed scales in act order gave 0.70×.
//!
//! The new blocks overwrite the tensor's bytes in place, so the file is
//! llama-quantize's byte for byte but for the values: same metadata, types,
//! offsets and sizes.

use crate::ffi;
use crate::reconstruct::{self, Inputs};
use llmkernel_kernels::formats::{Format, WeightBlock, WithFormat};
use llmkernel_kernels::table::Kernels;
use regex::Regex;
use std::collections::BTreeMap;
use std::ffi::CStr;
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::Instant;

/// The fewest calibration tokens the Hessians are built from.
pub const MIN_TOKENS: usize = 1024;

pub struct Options {
    pub input: PathBuf,
    /// Each output's format and path.
    pub outputs: Vec<(Format, PathBuf)>,
    pub pure: bool,
    pub threads: usize,
    pub imatrix: Option<PathBuf>,
    /// Calibration text, and its chunks of `ctx` tokens.
    pub calib: PathBuf,
    pub ctx: usize,
    pub chunks: usize,
    /// Bytes the calibration Hessians may take at once ([`plan`]); `None`:
    /// half of the memory available at the start.
    pub calib_mem: Option<u64>,
}

/// One matrix: its calibration output error `Σ (ΔW X)²` (over a sample of
/// rows) with llama-quantize's blocks and with the compensated ones. The
/// file keeps the blocks with the lower error ([`Tensor::compensated`]).
pub struct Tensor {
    pub name: String,
    pub format: Format,
    pub rows: usize,
    pub k: usize,
    pub err_ggml: f64,
    pub err_rec: f64,
    pub secs: f64,
}

impl Tensor {
    /// Whether the file holds the compensated blocks.
    pub fn compensated(&self) -> bool {
        self.err_rec < self.err_ggml
    }
}

pub struct Report {
    pub tensors: Vec<Tensor>,
    /// Matrices left as llama-quantize wrote them, and why.
    pub kept: Vec<(String, String)>,
    /// llama-quantize's time for this output.
    pub quantize_secs: f64,
    /// The calibration run's (shared by the outputs).
    pub calib_secs: f64,
    /// This output's solver time, the shared factors counted in.
    pub solve_secs: f64,
    /// Calibration tokens the Hessians were built from.
    pub tokens: usize,
    /// Passes over the calibration text ([`plan`]).
    pub passes: usize,
}

/// The layer matrices' calibration passes: consecutive layers whose
/// Hessians (a [`reconstruct::Gram`] per group of matrices sharing an
/// input) take at most `budget` bytes together, one layer at least. Each
/// pass gives its matrices' names in order and the bytes it holds.
pub fn plan(names: &[(String, usize)], budget: u64) -> Vec<(Vec<String>, u64)> {
    // Per layer (consecutive names of one `blk.N`): its names and bytes.
    let mut layers: Vec<(String, Vec<String>, u64)> = Vec::new();
    let mut keys = std::collections::BTreeSet::new();
    for (name, k) in names {
        let l = name.split('.').take(2).collect::<Vec<_>>().join(".");
        if layers.last().is_none_or(|(last, ..)| *last != l) {
            layers.push((l, Vec::new(), 0));
        }
        let layer = layers.last_mut().expect("a layer");
        layer.1.push(name.clone());
        if keys.insert(reconstruct::input_key(name)) {
            layer.2 += reconstruct::Gram::len(*k) as u64 * 4;
        }
    }
    let mut passes: Vec<(Vec<String>, u64)> = Vec::new();
    for (_, names, bytes) in layers {
        match passes.last_mut() {
            Some(p) if p.1 + bytes <= budget => {
                p.0.extend(names);
                p.1 += bytes;
            }
            _ => passes.push((names, bytes)),
        }
    }
    passes
}

/// Half of the memory the system has available now (Linux's MemAvailable).
fn default_budget() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(u64::MAX, |kb| kb * 1024 / 2)
}

/// ggml's quantization of rows of `k` values into `B` blocks (its
/// `ggml_quantize_chunk`), with per-column importance weights where given.
pub fn ggml_quantize<B: WeightBlock>(x: &[f32], k: usize, imatrix: Option<&[f32]>, out: &mut [B]) {
    let rows = x.len() / k.max(1);
    assert!(k % B::LEN == 0 && x.len() == rows * k && out.len() == rows * (k / B::LEN));
    assert!(imatrix.is_none_or(|m| m.len() == k));
    // SAFETY: out holds rows * k / LEN blocks, the bytes of `rows` rows of
    // `B`; x holds rows * k floats; the imatrix (if any) k weights.
    unsafe {
        ffi::ggml_quantize_chunk(
            B::GGML_TYPE as ffi::ggml_type,
            x.as_ptr(),
            out.as_mut_ptr() as *mut _,
            0,
            rows as i64,
            k as i64,
            imatrix.map_or(std::ptr::null(), |m| m.as_ptr()),
        );
    }
}

/// The order the columns are visited in (descending Hessian diagonal:
/// GPTQ's act order; for codes chosen `group` values at a time, the groups
/// by their diagonal's sum, each group's columns in order) and the factor
/// `U` of the Hessian so permuted.
pub fn act_order(h: &[f32], k: usize, group: usize) -> Result<(Vec<usize>, Vec<f32>), String> {
    if group == 0 || k % group != 0 {
        return Err(format!("{k} columns are not whole groups of {group}"));
    }
    let energy: Vec<f32> = (0..k / group)
        .map(|g| (g * group..(g + 1) * group).map(|c| h[c * k + c]).sum())
        .collect();
    let mut groups: Vec<usize> = (0..k / group).collect();
    groups.sort_by(|&a, &b| energy[b].total_cmp(&energy[a]));
    let perm: Vec<usize> = groups
        .iter()
        .flat_map(|&g| g * group..(g + 1) * group)
        .collect();
    let ph: Vec<f32> = (0..k * k)
        .map(|i| h[perm[i / k] * k + perm[i % k]])
        .collect();
    let u = reconstruct::inverse_cholesky_upper(&ph, k)?;
    Ok((perm, u))
}

/// `W` quantized to `B` with compensation: the blocks' scales are ggml's
/// choice for the rows as they are (with the importance weights `im`), the
/// codes are chosen again column by column in the order `perm` with `u`
/// ([`act_order`]).
pub fn compensated<B: WeightBlock>(
    w: &[f32],
    rows: usize,
    k: usize,
    (perm, u): (&[usize], &[f32]),
    im: Option<&[f32]>,
) -> Result<Vec<B>, String> {
    if k % B::LEN != 0 || w.len() != rows * k {
        return Err(format!(
            "{}: rows of {k} values are not whole blocks of {}",
            B::NAME,
            B::LEN
        ));
    }
    if !llmkernel_kernels::formats::has_round::<B>() {
        return Err(format!(
            "{}: no error-compensated quantization for it",
            B::NAME
        ));
    }
    let mut blocks = vec![B::zeroed(); rows * k / B::LEN];
    ggml_quantize(w, k, im, &mut blocks);
    let mut w = w.to_vec();
    reconstruct::quantize_compensated(&mut w, rows, k, u, perm, &mut blocks)?;
    Ok(blocks)
}

/// Whether `format` has the solver's step ([`WeightBlock::round_at`]).
pub fn has_solver(format: Format) -> bool {
    struct Probe;
    impl WithFormat for Probe {
        type Out = bool;
        fn run<B: Kernels>(self) -> bool {
            llmkernel_kernels::formats::has_round::<B>()
        }
    }
    format.with(Probe).unwrap_or(false)
}

/// How many values of `format` share their codes ([`WeightBlock::GROUP`]).
pub fn group_of(format: Format) -> usize {
    struct Probe;
    impl WithFormat for Probe {
        type Out = usize;
        fn run<B: Kernels>(self) -> usize {
            B::GROUP
        }
    }
    format.with(Probe).unwrap_or(1)
}

/// Dequantized blocks of `B`, from bytes.
fn dequantize<B: WeightBlock>(blocks: &[B], n: usize) -> Vec<f32> {
    let mut y = vec![0f32; n];
    B::dequantize_row(blocks, &mut y).expect("whole blocks");
    y
}

/// `Σ over a sample of rows of (d X)²` for the differences `d` from the
/// input weights: at most 256 rows, evenly spread (the cost is rows × k²).
fn sample_error(d: &[f32], rows: usize, k: usize, h: &[f32]) -> f64 {
    let step = rows.div_ceil(256).max(1);
    let picked: Vec<f32> = d
        .chunks(k)
        .step_by(step)
        .flat_map(|r| r.iter().copied())
        .collect();
    reconstruct::output_error(&picked, picked.len() / k, k, h) * step as f64
}

/// One matrix's compensated quantization, for a format chosen at run time.
struct Solve<'a> {
    w: &'a [f32],
    rows: usize,
    k: usize,
    perm: &'a [usize],
    u: &'a [f32],
    h: &'a [f32],
    im: Option<&'a [f32]>,
    /// llama-quantize's bytes of the tensor: in, for the error; out, the new ones.
    bytes: &'a mut [u8],
}

impl WithFormat for Solve<'_> {
    type Out = Result<(f64, f64), String>;
    fn run<B: Kernels>(self) -> Self::Out {
        let n = self.rows * self.k;
        let theirs: &[B] = bytemuck::try_cast_slice(self.bytes)
            .ok()
            .filter(|b: &&[B]| b.len() * B::LEN == n)
            .ok_or_else(|| {
                format!(
                    "{} bytes are not {n} values of {}",
                    self.bytes.len(),
                    B::NAME
                )
            })?;
        let diff = |v: Vec<f32>| -> Vec<f32> { v.iter().zip(self.w).map(|(a, b)| a - b).collect() };
        let err_ggml = sample_error(&diff(dequantize(theirs, n)), self.rows, self.k, self.h);
        let ours = compensated::<B>(self.w, self.rows, self.k, (self.perm, self.u), self.im)?;
        let err_rec = sample_error(&diff(dequantize(&ours, n)), self.rows, self.k, self.h);
        // Never worse than llama-quantize on the calibration inputs (as when
        // the input is already in the format: requantizing it is lossless).
        if err_rec < err_ggml {
            self.bytes.copy_from_slice(bytemuck::cast_slice(&ours));
        }
        Ok((err_ggml, err_rec))
    }
}

/// The current layer's input groups: per group the damped Hessian, and
/// per code group size (1, or 8 for the i-quants) the column order and the
/// factor ([`act_order`]).
type Factor = (Vec<f32>, BTreeMap<usize, (Vec<usize>, Vec<f32>)>);

#[derive(Default)]
struct Factors {
    layer: String,
    by_key: BTreeMap<String, Factor>,
}

impl Factors {
    /// The Hessian, column order and factor of `name`'s inputs, for codes
    /// chosen `group` at a time. The calibration sum is dropped once its
    /// Hessian is made, and a layer's factors once the next layer's are asked for.
    fn get(
        &mut self,
        name: &str,
        inputs: &mut Inputs,
        k: usize,
        group: usize,
    ) -> Result<(&[f32], &[usize], &[f32]), String> {
        let layer = name.split('.').take(2).collect::<Vec<_>>().join(".");
        if layer != self.layer {
            self.by_key.clear();
            self.layer = layer;
        }
        let key = reconstruct::input_key(name);
        if !self.by_key.contains_key(&key) {
            let gram = inputs
                .h
                .remove(&key)
                .ok_or_else(|| format!("{name}: no calibration inputs reached it"))?;
            if gram.k != k {
                return Err(format!(
                    "{name}: inputs of {} values, matrix of {k}",
                    gram.k
                ));
            }
            self.by_key
                .insert(key.clone(), (gram.hessian(), BTreeMap::new()));
        }
        let (h, orders) = self.by_key.get_mut(&key).expect("inserted");
        if h.len() != k * k {
            return Err(format!("{name}: inputs of another width, matrix of {k}"));
        }
        if !orders.contains_key(&group) {
            let order = act_order(h, k, group).map_err(|e| format!("{name}: {e}"))?;
            orders.insert(group, order);
        }
        let (perm, u) = &orders[&group];
        Ok((h, perm, u))
    }
}

/// A tensor of a GGUF file: name, type, shape, and where its bytes are.
pub struct Stored {
    pub name: String,
    pub ty: ffi::ggml_type,
    pub k: usize,
    pub rows: usize,
    /// From the start of the file.
    pub offset: u64,
    pub size: usize,
}

/// The tensors of the GGUF file at `path`, in file order.
pub fn stored_tensors(path: &std::path::Path) -> Result<Vec<Stored>, String> {
    let file = crate::ggml::GgufFile::open(path, false)?;
    // SAFETY: the file's gguf and tensor contexts are alive with `file`;
    // i < n; tensors are looked up by their listed names.
    unsafe {
        let base = ffi::gguf_get_data_offset(file.gguf) as u64;
        (0..ffi::gguf_get_n_tensors(file.gguf))
            .map(|i| {
                let cname = CStr::from_ptr(ffi::gguf_get_tensor_name(file.gguf, i));
                let t = ffi::ggml_get_tensor(file.ctx, cname.as_ptr());
                let name = cname.to_string_lossy().into_owned();
                if t.is_null() {
                    return Err(format!("{name}: listed but not in the file"));
                }
                Ok(Stored {
                    name,
                    ty: (*t).type_,
                    k: (*t).ne[0] as usize,
                    rows: ((*t).ne[1] * (*t).ne[2] * (*t).ne[3]) as usize,
                    offset: base + ffi::gguf_get_tensor_offset(file.gguf, i) as u64,
                    size: ffi::gguf_get_tensor_size(file.gguf, i),
                })
            })
            .collect()
    }
}

fn type_name(ty: ffi::ggml_type) -> String {
    // SAFETY: ggml_type_name returns a static string for any type id.
    unsafe { CStr::from_ptr(ffi::ggml_type_name(ty)) }
        .to_string_lossy()
        .into_owned()
}

/// Quantizes `o.input` to each of `o.outputs` as llama-quantize does, then
/// quantizes their layer matrices again with error compensation (module
/// docs). The calibration run and each layer's Hessian factor are shared by
/// the outputs; one report per output.
pub fn quantize(o: &Options) -> Result<Vec<Report>, String> {
    if let Some((f, _)) = o.outputs.iter().find(|(f, _)| !has_solver(*f)) {
        return Err(format!("{f}: no error-compensated quantization for it"));
    }
    let im: BTreeMap<String, Vec<f32>> = match &o.imatrix {
        Some(p) => crate::imatrix::load(p)?.into_iter().collect(),
        None => BTreeMap::new(),
    };
    let mut reports = Vec::new();
    for (format, output) in &o.outputs {
        let start = Instant::now();
        crate::quantize::quantize(
            &o.input,
            output,
            *format,
            o.pure,
            o.threads,
            o.imatrix.as_deref(),
        )?;
        reports.push(Report {
            tensors: vec![],
            kept: vec![],
            quantize_secs: start.elapsed().as_secs_f64(),
            calib_secs: 0.0,
            solve_secs: 0.0,
            tokens: 0,
            passes: 0,
        });
    }
    let targets = Regex::new(crate::prune::DEFAULT_TARGETS).expect("valid regex");
    let mut files = Vec::new();
    for (_, output) in &o.outputs {
        let stored: BTreeMap<String, Stored> = stored_tensors(output)?
            .into_iter()
            .filter(|s| targets.is_match(&s.name))
            .map(|s| (s.name.clone(), s))
            .collect();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(output)
            .map_err(|e| format!("{}: {e}", output.display()))?;
        files.push((stored, file));
    }
    // The layer matrices in the first output's file order.
    let mut names: Vec<(u64, String, usize)> = files[0]
        .0
        .values()
        .map(|s| (s.offset, s.name.clone(), s.k))
        .collect();
    names.sort();
    let names: Vec<(String, usize)> = names.into_iter().map(|(_, n, k)| (n, k)).collect();
    // The importance matrix is checked before the calibration run.
    let mut weights: BTreeMap<&str, Option<&[f32]>> = BTreeMap::new();
    for (name, k) in &names {
        let m = match im.get(name) {
            Some(v) if v.len() == *k => Some(v.as_slice()),
            Some(v) => {
                return Err(format!(
                    "{}: the imatrix has {} values for {name}, the model {k} (an imatrix of another model?)",
                    o.imatrix.as_ref().unwrap().display(),
                    v.len(),
                ))
            }
            None if o.imatrix.is_some() => {
                return Err(format!(
                    "{}: no entry for {name} (an imatrix of another model?)",
                    o.imatrix.as_ref().unwrap().display(),
                ))
            }
            None => None,
        };
        weights.insert(name, m);
    }
    let budget = o.calib_mem.unwrap_or_else(default_budget);
    let passes = plan(&names, budget);
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    eprintln!(
        "reconstruct: the Hessians take {:.2} GiB; {} {} over the calibration text{}",
        gib(passes.iter().map(|p| p.1).sum()),
        passes.len(),
        if passes.len() == 1 { "pass" } else { "passes" },
        if passes.len() == 1 {
            String::new()
        } else {
            format!(
                " (at most {:.2} GiB at once: {} GiB{}), each stopping after its last layer",
                gib(passes.iter().map(|p| p.1).max().unwrap_or(0)),
                if budget == u64::MAX {
                    "no limit".into()
                } else {
                    format!("{:.2}", gib(budget))
                },
                if o.calib_mem.is_none() {
                    ", half the available memory"
                } else {
                    ""
                }
            )
        }
    );
    for r in &mut reports {
        r.passes = passes.len();
    }
    // The input's matrices are read one at a time, as they are solved.
    let inputs_at: BTreeMap<String, Stored> = stored_tensors(&o.input)?
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect();
    let mut source =
        std::fs::File::open(&o.input).map_err(|e| format!("{}: {e}", o.input.display()))?;
    let total: usize = files[0].0.values().map(|s| s.k * s.rows).sum();
    let (mut done, mut solve_secs) = (0usize, 0.0);
    let (mut calib_secs, mut tokens) = (0.0, usize::MAX);
    let mut factors = Factors::default();
    for (i, (pass, _)) in passes.iter().enumerate() {
        let t_calib = Instant::now();
        let only = pass.iter().map(|n| reconstruct::input_key(n)).collect();
        let mut inputs =
            reconstruct::collect_hessians(&o.input, &o.calib, o.ctx, o.chunks, o.threads, only)?;
        calib_secs += t_calib.elapsed().as_secs_f64();
        tokens = tokens.min(inputs.h.values().map(|g| g.rows).min().unwrap_or(0));
        if tokens < MIN_TOKENS {
            return Err(format!(
                "{}: {tokens} calibration tokens reached the layers; the Hessians need at least {MIN_TOKENS} (a longer text, or more --chunks)",
                o.calib.display()
            ));
        }
        for name in pass {
            let first = &files[0].0[name];
            let (k, rows) = (first.k, first.rows);
            let m = weights[name.as_str()];
            let at = inputs_at
                .get(name)
                .ok_or_else(|| format!("{name}: not in {}", o.input.display()))?;
            if (at.k, at.rows) != (k, rows) {
                return Err(format!("{name}: another shape in {}", o.input.display()));
            }
            let mut bytes = vec![0u8; at.size];
            let io = |e: std::io::Error| format!("{}: {e}", o.input.display());
            source.seek(SeekFrom::Start(at.offset)).map_err(io)?;
            std::io::Read::read_exact(&mut source, &mut bytes).map_err(io)?;
            let w = crate::prune::rows_to_f32(name, at.ty, &bytes, k)?;
            drop(bytes);
            let t_solve = Instant::now();
            // Each output's format, where it has a solver; the factors they
            // need are made first, their time shared by the outputs.
            let formats: Vec<Result<Format, String>> = files
                .iter()
                .zip(&o.outputs)
                .map(|((stored, _), (_, output))| {
                    let s = stored
                        .get(name)
                        .ok_or_else(|| format!("{name}: not in {}", output.display()))?;
                    Format::from_ggml_type(s.ty)
                        .filter(|f| has_solver(*f))
                        .ok_or_else(|| format!("no solver for {}", type_name(s.ty)))
                })
                .collect();
            let t_factor = Instant::now();
            for f in formats.iter().flatten() {
                factors.get(name, &mut inputs, k, group_of(*f))?;
            }
            let factor_secs = t_factor.elapsed().as_secs_f64();
            for (((stored, file), ((_, output), report)), format) in files
                .iter_mut()
                .zip(o.outputs.iter().zip(&mut reports))
                .zip(&formats)
            {
                let t0 = Instant::now();
                let s = &stored[name];
                let format = match format {
                    Ok(f) => *f,
                    Err(e) if e.starts_with("no solver") => {
                        report.kept.push((name.clone(), e.clone()));
                        continue;
                    }
                    Err(e) => return Err(e.clone()),
                };
                let (h, perm, u) = factors.get(name, &mut inputs, k, group_of(format))?;
                let mut bytes = vec![0u8; s.size];
                let io = |e: std::io::Error| format!("{}: {e}", output.display());
                file.seek(SeekFrom::Start(s.offset)).map_err(io)?;
                std::io::Read::read_exact(file, &mut bytes).map_err(io)?;
                let (err_ggml, err_rec) = format
                    .with(Solve {
                        w: &w,
                        rows,
                        k,
                        perm,
                        u,
                        h,
                        im: m,
                        bytes: &mut bytes,
                    })
                    .expect("a weight format")
                    .map_err(|e| format!("{name}: {e}"))?;
                file.seek(SeekFrom::Start(s.offset)).map_err(io)?;
                file.write_all(&bytes).map_err(io)?;
                // The shared factor is counted in every output's time.
                let secs = t0.elapsed().as_secs_f64() + factor_secs;
                report.solve_secs += secs;
                eprintln!(
                    "reconstruct: {:>5.1}% {:<28} {:<6} {:>5}x{:<5} calibration error {:.3e} -> {:.3e} ({:.2}x{})  {:.1} s",
                    100.0 * done as f64 / total as f64,
                    name,
                    format.name(),
                    rows,
                    k,
                    err_ggml,
                    err_rec,
                    err_rec / err_ggml,
                    if err_rec < err_ggml { "" } else { ", llama-quantize's kept" },
                    secs,
                );
                report.tensors.push(Tensor {
                    name: name.clone(),
                    format,
                    rows,
                    k,
                    err_ggml,
                    err_rec,
                    secs,
                });
            }
            done += k * rows;
            solve_secs += t_solve.elapsed().as_secs_f64();
            // The solver's rate per weight, the calibration's per pass.
            let left = solve_secs / done as f64 * (total - done) as f64
                + calib_secs / (i + 1) as f64 * (passes.len() - i - 1) as f64;
            eprintln!(
                "reconstruct: {:>5.1}% done, {:.0} s, ETA {:.0} s",
                100.0 * done as f64 / total as f64,
                calib_secs + solve_secs,
                left
            );
        }
    }
    for r in &mut reports {
        (r.calib_secs, r.tokens) = (calib_secs, tokens);
    }
    Ok(reports)
}

/// Resets the process's peak resident memory to what it holds now (Linux's
/// `clear_refs` 5), so [`peak_rss_mib`] then measures what follows.
pub fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The process's peak resident memory in MiB (Linux's VmHWM), where known.
pub fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmkernel_kernels::each_format;
    use llmkernel_kernels::testdata::Rng;

    /// On correlated inputs (as activations are), the compensated blocks of
    /// every weight format leave a smaller output error on the calibration
    /// inputs than ggml's quantization with the same importance weights,
    /// and they are what the returned values say.
    #[test]
    fn compensation_beats_the_imatrix_alone_in_every_format() {
        const N: usize = 1024;
        const K: usize = 512;
        const M: usize = 24;
        let (n, k) = (N, K);
        let mut r = Rng::new(5);
        let base = r.activations(n * 4);
        let x: Vec<f32> = (0..n * k)
            .map(|i| {
                let (t, c) = (i / k, i % k);
                base[4 * t + c % 4] * (1.0 + (c % 7) as f32 / 3.0) + 0.4 * r.uniform(-1.0, 1.0)
            })
            .collect();
        let w = r.activations(M * K);
        let im: Vec<f32> = (0..k)
            .map(|c| (0..n).map(|t| x[t * k + c].powi(2)).sum::<f32>() / n as f32)
            .collect();
        let h = reconstruct::hessian(&x, n, k);
        // The column orders and factors for codes chosen one and eight at a time.
        let orders = [act_order(&h, k, 1).unwrap(), act_order(&h, k, 8).unwrap()];
        let solvable: Vec<Format> = Format::WEIGHTS
            .into_iter()
            .filter(|f| has_solver(*f))
            .collect();
        let ratios = each_format!(
            solvable.clone(),
            (w, im, h, orders),
            |B,
             f,
             _i,
             c: (Vec<f32>, Vec<f32>, Vec<f32>, [(Vec<usize>, Vec<f32>); 2])|
             -> (Format, f64) {
                let (w, im, h, orders) = c;
                let (perm, u) = &orders[(B::GROUP > 1) as usize];
                let mut theirs = vec![B::zeroed(); M * K / B::LEN];
                ggml_quantize(&w, K, Some(&im), &mut theirs);
                let ours = compensated::<B>(&w, M, K, (perm, u), Some(&im)).unwrap();
                let err = |b: &[B]| {
                    let d: Vec<f32> = dequantize(b, M * K)
                        .iter()
                        .zip(&w)
                        .map(|(a, b)| a - b)
                        .collect();
                    reconstruct::output_error(&d, M, K, &h)
                };
                let (g, o) = (err(&theirs), err(&ours));
                eprintln!(
                    "{f}: calibration output error {g:.4e} -> {o:.4e} ({:.3}x)",
                    o / g
                );
                // The scales are ggml's: only codes changed.
                let scale_bytes = |b: &B| -> Vec<u8> {
                    let (mut z, g) = (*b, B::GROUP);
                    let (zero, one, mut out) = ([0f32; 8], [1f32; 8], [0f32; 8]);
                    for i in (0..B::LEN).step_by(g) {
                        z.round_group(i, &zero[..g], &one[..g], &mut out[..g])
                            .unwrap();
                    }
                    bytemuck::bytes_of(&z).to_vec()
                };
                for (a, b) in theirs.iter().zip(&ours) {
                    assert_eq!(scale_bytes(a), scale_bytes(b), "{f}: the scales changed");
                }
                (f, o / g)
            }
        );
        assert_eq!(ratios.len(), solvable.len());
        for (f, q) in ratios {
            assert!(
                q < 0.9,
                "{f}: compensated error {q:.3}x the imatrix-only one"
            );
        }
    }

    /// Passes hold whole consecutive layers within the budget (one layer
    /// at least), a Hessian per group of matrices sharing an input.
    #[test]
    fn passes_hold_whole_layers_within_the_budget() {
        let layer = |l: usize| -> Vec<(String, usize)> {
            [
                ("attn_q", 64),
                ("attn_k", 64),
                ("attn_v", 64),
                ("attn_output", 64),
                ("ffn_gate", 64),
                ("ffn_up", 64),
                ("ffn_down", 1100),
            ]
            .iter()
            .map(|(n, k)| (format!("blk.{l}.{n}.weight"), *k))
            .collect()
        };
        let names: Vec<(String, usize)> = (0..5).flat_map(layer).collect();
        let per_layer = 4 * (3 * reconstruct::Gram::len(64) + reconstruct::Gram::len(1100)) as u64;
        for (budget, want) in [
            (u64::MAX, vec![5]),
            (5 * per_layer, vec![5]),
            (5 * per_layer - 1, vec![4, 1]),
            (2 * per_layer, vec![2, 2, 1]),
            (per_layer + 1, vec![1; 5]),
            (0, vec![1; 5]),
        ] {
            let p = plan(&names, budget);
            let got: Vec<usize> = p.iter().map(|(n, _)| n.len() / 7).collect();
            assert_eq!(got, want, "budget {budget}");
            for (n, bytes) in &p {
                assert_eq!(*bytes, per_layer * (n.len() / 7) as u64);
            }
            let flat: Vec<String> = p.into_iter().flat_map(|(n, _)| n).collect();
            assert_eq!(
                flat,
                names.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn a_format_without_a_solver_and_a_bad_shape_are_refused() {
        assert!(!has_solver(Format::Q8_0S) && !has_solver(Format::Q8K));
        // Every weight format has the step (the i-quants eight values at a time).
        let without: Vec<Format> = Format::WEIGHTS
            .into_iter()
            .filter(|f| !has_solver(*f))
            .collect();
        assert_eq!(without, []);
        let grouped: Vec<Format> = Format::WEIGHTS
            .into_iter()
            .filter(|f| group_of(*f) > 1)
            .collect();
        assert_eq!(
            grouped,
            [
                Format::IQ2_XXS,
                Format::IQ2_XS,
                Format::IQ2_S,
                Format::IQ3_XXS,
                Format::IQ3_S
            ]
        );
        let (perm, u) = ((0..48).collect::<Vec<_>>(), vec![1f32; 48 * 48]);
        let e = compensated::<llmkernel_kernels::formats::BlockQ4_0>(
            &[0.0; 48],
            1,
            48,
            (&perm, &u),
            None,
        );
        assert!(e.unwrap_err().contains("whole blocks"));
    }
}
