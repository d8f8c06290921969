//! `llmkernel prune`: 2:4 semi-structured pruning of a GGUF model's layer
//! matrices, written as a GGUF that stock llama.cpp loads and runs densely.
//!
//! In each chosen matrix, of every four consecutive weights along K (the
//! input dimension) the two with the highest score stay, the others become
//! exactly zero:
//! - magnitude: score `|w|`;
//! - Wanda (Sun et al. 2023, "A Simple and Effective Pruning Approach for
//!   Large Language Models"): score `|w_jk| * ||x_k||_2`, the norm of input
//!   channel k over calibration tokens. The norms come from the same
//!   collection as `llmkernel imatrix` (the sum of squares per channel, run
//!   through the vendored llama.cpp), or from an imatrix file.
//!
//! Every matrix (pruned or not) is then written in the output format with
//! ggml's quantizer and no importance matrix, as `llama-quantize --pure`
//! does, so the dense model of the same format made by `llmkernel quantize
//! --pure` differs from a pruned one only in the pruned weights. Zero is
//! exact in F16, Q8_0 (code 0) and Q4_0 (code 8), so the pruned matrices
//! stay 2:4 in the file; their names are listed under [`SPARSE_KEY`].

use crate::{ffi, imatrix, reconstruct};
use regex::Regex;
use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};

/// GGUF key listing the tensors that are 2:4 sparse (array of strings).
pub const SPARSE_KEY: &str = "llmkernel.sparsity.2_4";
/// GGUF key naming how they were pruned (`magnitude` or `wanda`).
pub const METHOD_KEY: &str = "llmkernel.sparsity.method";

/// The matrices pruned unless `--skip` says otherwise: the projections of
/// every block (embeddings, output head and norms stay dense, as in the
/// Wanda and SparseGPT papers).
pub const DEFAULT_TARGETS: &str =
    r"^blk\.\d+\.(attn_q|attn_k|attn_v|attn_output|ffn_gate|ffn_up|ffn_down)\.weight$";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Magnitude,
    Wanda,
}

impl Method {
    pub fn parse(s: &str) -> Result<Method, String> {
        match s {
            "magnitude" => Ok(Method::Magnitude),
            "wanda" => Ok(Method::Wanda),
            _ => Err(format!("method {s:?}: expected magnitude or wanda")),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Method::Magnitude => "magnitude",
            Method::Wanda => "wanda",
        }
    }
}

/// The formats pruned matrices can be stored in with exact zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutFormat {
    F16,
    Q8_0,
    Q4_0,
}

impl OutFormat {
    pub fn parse(s: &str) -> Result<OutFormat, String> {
        match s.to_ascii_lowercase().as_str() {
            "f16" => Ok(OutFormat::F16),
            "q8_0" => Ok(OutFormat::Q8_0),
            "q4_0" => Ok(OutFormat::Q4_0),
            _ => Err(format!(
                "format {s:?}: 2:4 weights are stored as f16, q8_0 or q4_0 (formats where zero is exact)"
            )),
        }
    }
    fn ggml_type(self) -> ffi::ggml_type {
        match self {
            OutFormat::F16 => ffi::GGML_TYPE_F16,
            OutFormat::Q8_0 => ffi::GGML_TYPE_Q8_0,
            OutFormat::Q4_0 => ffi::GGML_TYPE_Q4_0,
        }
    }
    fn file_type(self) -> u32 {
        match self {
            OutFormat::F16 => ffi::LLAMA_FTYPE_MOSTLY_F16,
            OutFormat::Q8_0 => ffi::LLAMA_FTYPE_MOSTLY_Q8_0,
            OutFormat::Q4_0 => ffi::LLAMA_FTYPE_MOSTLY_Q4_0,
        }
    }
}

/// Where Wanda's activation norms come from.
pub enum Calibration {
    /// Run the model over this text (`ctx` tokens per chunk, at most `chunks`).
    Text {
        path: PathBuf,
        ctx: usize,
        chunks: Option<usize>,
    },
    /// An imatrix file (from `llmkernel imatrix` or llama-imatrix).
    Imatrix(PathBuf),
}

pub struct Options {
    pub input: PathBuf,
    pub output: PathBuf,
    pub method: Method,
    pub format: OutFormat,
    pub calibration: Option<Calibration>,
    /// Matrices matching this stay dense.
    pub skip: Option<Regex>,
    pub threads: usize,
    /// Layer-wise reconstruction of the kept weights ([`reconstruct`]).
    pub reconstruct: Option<Reconstruct>,
}

/// Where reconstruction's calibration inputs come from.
pub struct Reconstruct {
    /// Calibration text, run through the (dense) input model.
    pub text: PathBuf,
    pub ctx: usize,
    pub chunks: usize,
}

/// What a prune did.
pub struct Report {
    pub pruned: Vec<String>,
    pub dense: Vec<String>,
}

/// Zeroes, in each group of four consecutive weights, the two with the lowest
/// `score(k, w)` (k the position in the row); ties keep the earlier weight.
pub fn prune_row_2_4(row: &mut [f32], score: impl Fn(usize, f32) -> f32) {
    let keep = mask_row_2_4(row, score);
    for (w, k) in row.iter_mut().zip(keep) {
        if !k {
            *w = 0.0;
        }
    }
}

/// Which weights [`prune_row_2_4`] keeps (true) in `row`.
pub fn mask_row_2_4(row: &[f32], score: impl Fn(usize, f32) -> f32) -> Vec<bool> {
    let mut keep = vec![true; row.len()];
    for (g, w) in row.chunks_exact(4).enumerate() {
        let s: [f32; 4] = std::array::from_fn(|i| {
            let v = score(4 * g + i, w[i]);
            if v.is_nan() {
                f32::INFINITY
            } else {
                v
            }
        });
        let mut order = [0usize, 1, 2, 3];
        // Lowest score first; among equal scores the later position goes first.
        order.sort_by(|&a, &b| s[a].total_cmp(&s[b]).then(b.cmp(&a)));
        keep[4 * g + order[0]] = false;
        keep[4 * g + order[1]] = false;
    }
    keep
}

/// Per weight name: each input channel's L2 norm over the calibration tokens.
fn activation_norms(
    calibration: &Calibration,
    model: &Path,
    threads: usize,
) -> Result<BTreeMap<String, Vec<f32>>, String> {
    match calibration {
        Calibration::Text { path, ctx, chunks } => {
            let (entries, n) = imatrix::collect_entries(model, path, *ctx, *chunks, threads)?;
            eprintln!(
                "wanda: activation norms of {} matrices over {n} chunks of {ctx} tokens",
                entries.len()
            );
            Ok(entries
                .into_iter()
                .map(|(k, e)| (k, e.sums.iter().map(|&s| s.sqrt() as f32).collect()))
                .collect())
        }
        // The file holds means of squares; the norm's square root of them differs
        // from ||x|| by the constant sqrt(count), which does not change a ranking.
        Calibration::Imatrix(path) => Ok(imatrix::load(path)?
            .into_iter()
            .map(|(k, v)| (k, v.iter().map(|&s| s.sqrt()).collect()))
            .collect()),
    }
}

/// A tensor of the input file, dequantized to f32 rows.
///
/// # Safety
/// `t` is a live tensor with its data in memory.
pub(crate) unsafe fn to_f32(t: *const ffi::ggml_tensor) -> Result<Vec<f32>, String> {
    // SAFETY: forwarded contract: the tensor's bytes are its rows of its type.
    unsafe {
        let n = ffi::ggml_nelements(t) as usize;
        let ne0 = (*t).ne[0].max(0) as usize;
        let name = CStr::from_ptr((*t).name.as_ptr()).to_string_lossy();
        let bytes = if n == 0 || ne0 == 0 {
            &[][..]
        } else {
            let size = n / ne0 * ffi::ggml_row_size((*t).type_, ne0 as i64);
            std::slice::from_raw_parts((*t).data as *const u8, size)
        };
        rows_to_f32(&name, (*t).type_, bytes, ne0)
    }
}

/// Rows of `k` values of ggml type `ty`, dequantized by ggml (`name` for
/// the error when ggml cannot, or the bytes are not whole rows).
pub(crate) fn rows_to_f32(
    name: &str,
    ty: ffi::ggml_type,
    bytes: &[u8],
    k: usize,
) -> Result<Vec<f32>, String> {
    if bytes.is_empty() || k == 0 {
        return Ok(Vec::new());
    }
    // SAFETY: pure lookups for any type id below GGML_TYPE_COUNT.
    let (row_bytes, traits) = unsafe {
        if ty >= ffi::GGML_TYPE_COUNT {
            return Err(format!("{name}: unknown ggml type {ty}"));
        }
        (
            ffi::ggml_row_size(ty, k as i64),
            &*ffi::ggml_get_type_traits(ty),
        )
    };
    if row_bytes == 0 || bytes.len() % row_bytes != 0 {
        return Err(format!(
            "{name}: {} bytes are not whole rows of {k} values",
            bytes.len()
        ));
    }
    let rows = bytes.len() / row_bytes;
    let mut out = vec![0f32; rows * k];
    if ty == ffi::GGML_TYPE_F32 {
        for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
            *o = f32::from_le_bytes(b.try_into().expect("4 bytes"));
        }
        return Ok(out);
    }
    let f = traits
        .to_float
        .ok_or_else(|| format!("{name}: ggml cannot dequantize its type {ty}"))?;
    for (r, o) in out.chunks_exact_mut(k).enumerate() {
        // SAFETY: row r's row_bytes bytes of type ty give k floats into o.
        unsafe {
            f(
                bytes[r * row_bytes..].as_ptr() as *const _,
                o.as_mut_ptr(),
                k as i64,
            )
        };
    }
    Ok(out)
}

/// Encodes f32 rows in `format` with ggml's quantizer (no importance matrix).
fn encode(format: OutFormat, x: &[f32], rows: usize, k: usize) -> Vec<u8> {
    // SAFETY: ggml_row_size is a pure size computation.
    let row_bytes = unsafe { ffi::ggml_row_size(format.ggml_type(), k as i64) };
    let mut out = vec![0u8; rows * row_bytes];
    // SAFETY: out holds rows * row_bytes; x holds rows * k floats.
    unsafe {
        ffi::ggml_quantize_chunk(
            format.ggml_type(),
            x.as_ptr(),
            out.as_mut_ptr() as *mut _,
            0,
            rows as i64,
            k as i64,
            std::ptr::null(),
        );
    }
    out
}

/// The activation norms Wanda scores with (none for magnitude pruning).
fn wanda_norms(o: &Options) -> Result<Option<BTreeMap<String, Vec<f32>>>, String> {
    match (o.method, &o.calibration) {
        (Method::Wanda, None) => {
            Err("--method wanda needs calibration text (--calib FILE) or --imatrix FILE".into())
        }
        (Method::Wanda, Some(c)) => Ok(Some(activation_norms(c, &o.input, o.threads)?)),
        (Method::Magnitude, _) => Ok(None),
    }
}

/// What pruning a matrix needs beyond its values: Wanda's norms, the
/// calibration inputs for reconstruction, and the factors of the current
/// layer's input Hessians (U, the upper Cholesky factor of H⁻¹, per input
/// group, kept for one layer).
struct Pruner<'a> {
    norms: Option<&'a BTreeMap<String, Vec<f32>>>,
    inputs: Option<&'a reconstruct::Inputs>,
    factors: BTreeMap<String, Vec<f32>>,
}

impl Pruner<'_> {
    /// Prunes `x` (`rows` rows of `k`) 2:4 in place, and with calibration
    /// inputs reconstructs the kept weights.
    fn prune(&mut self, name: &str, x: &mut Vec<f32>, rows: usize, k: usize) -> Result<(), String> {
        let norms_row: Option<&Vec<f32>> = match self.norms {
            None => None,
            Some(norms) => {
                let nm = norms.get(name).ok_or_else(|| {
                    format!("{name}: no activation statistics for it in the calibration")
                })?;
                if nm.len() != k {
                    return Err(format!(
                        "{name}: calibration has {} channels, the matrix {k}",
                        nm.len()
                    ));
                }
                Some(nm)
            }
        };
        let score = |j: usize, w: f32| match norms_row {
            None => w.abs(),
            Some(nm) => w.abs() * nm[j],
        };
        let Some(inputs) = self.inputs else {
            for row in x.chunks_mut(k) {
                prune_row_2_4(row, score);
            }
            return Ok(());
        };
        let key = reconstruct::input_key(name);
        let u = self.factor(name, &key, inputs, k)?;
        let keep: Vec<bool> = x
            .chunks(k)
            .flat_map(|row| mask_row_2_4(row, score))
            .collect();
        let dense = std::env::var_os("LLMKERNEL_RECONSTRUCT_DEBUG").map(|_| x.clone());
        reconstruct::reconstruct(x, &keep, rows, k, u);
        if let Some(dense) = dense {
            let (xs, _) = &inputs.x[&key];
            let h = reconstruct::hessian(xs, xs.len() / k, k);
            let plain: Vec<f32> = dense
                .iter()
                .zip(&keep)
                .map(|(w, kp)| if *kp { 0.0 } else { -*w })
                .collect();
            let rec: Vec<f32> = x.iter().zip(&dense).map(|(a, b)| a - b).collect();
            eprintln!(
                "reconstruct: {name}: calibration output error {:.4e} -> {:.4e}",
                reconstruct::output_error(&plain, rows, k, &h),
                reconstruct::output_error(&rec, rows, k, &h)
            );
        }
        eprintln!("reconstruct: {name}");
        Ok(())
    }

    /// The factor of input group `key` (computed once per layer).
    fn factor(
        &mut self,
        name: &str,
        key: &str,
        inputs: &reconstruct::Inputs,
        k: usize,
    ) -> Result<&Vec<f32>, String> {
        let layer = name.split('.').take(2).collect::<Vec<_>>().join(".");
        self.factors
            .retain(|k, _| k.starts_with(&format!("{layer}.")));
        if !self.factors.contains_key(key) {
            let (xs, xk) = inputs
                .x
                .get(key)
                .ok_or_else(|| format!("{name}: no calibration inputs reached it"))?;
            if *xk != k {
                return Err(format!("{name}: inputs of {xk} values, matrix of {k}"));
            }
            let h = reconstruct::hessian(xs, xs.len() / k, k);
            let u =
                reconstruct::inverse_cholesky_upper(&h, k).map_err(|e| format!("{name}: {e}"))?;
            self.factors.insert(key.to_string(), u);
        }
        Ok(&self.factors[key])
    }
}

/// A tensor of the output: name, the input tensor it replaces (its shape),
/// its bytes and type.
type Encoded = (CString, *mut ffi::ggml_tensor, Vec<u8>, ffi::ggml_type);

pub fn prune(o: &Options) -> Result<Report, String> {
    if o.input == o.output {
        return Err("the output must be another file than the input".into());
    }
    if !o.input.is_file() {
        return Err(format!("{}: no such file", o.input.display()));
    }
    let norms = wanda_norms(o)?;
    let inputs = match &o.reconstruct {
        Some(r) => Some(reconstruct::collect(
            &o.input,
            &r.text,
            r.ctx,
            r.chunks,
            r.ctx * r.chunks,
            o.threads,
        )?),
        None => None,
    };
    let mut pruner = Pruner {
        norms: norms.as_ref(),
        inputs: inputs.as_ref(),
        factors: BTreeMap::new(),
    };
    crate::ggml::init();
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let targets = Regex::new(DEFAULT_TARGETS).expect("valid regex");
    let file = crate::ggml::GgufFile::open(&o.input, true)?;
    let (src, data_ctx) = (file.gguf, file.ctx);
    let mut encoded: Vec<Encoded> = Vec::new();
    let mut report = Report {
        pruned: vec![],
        dense: vec![],
    };
    // SAFETY: gguf/ggml calls on the input's contexts (alive with `file`);
    // tensor data is read within each tensor's size.
    let n = unsafe { ffi::gguf_get_n_tensors(src) };
    for i in 0..n {
        // SAFETY: as above; i < n.
        let (cname, t) = unsafe {
            let cname = CStr::from_ptr(ffi::gguf_get_tensor_name(src, i)).to_owned();
            let t = ffi::ggml_get_tensor(data_ctx, cname.as_ptr());
            (cname, t)
        };
        let name = cname.to_string_lossy().into_owned();
        if t.is_null() {
            return Err(format!("{name}: listed but not loaded"));
        }
        // SAFETY: a live tensor of the input.
        let (k, rows, dims, ty) = unsafe {
            (
                (*t).ne[0] as usize,
                ((*t).ne[1] * (*t).ne[2] * (*t).ne[3]) as usize,
                ffi::ggml_n_dims(t),
                (*t).type_,
            )
        };
        if dims < 2 || k == 0 || k % 32 != 0 {
            // SAFETY: the tensor's data spans ggml_nbytes bytes.
            let v = unsafe {
                std::slice::from_raw_parts((*t).data as *const u8, ffi::ggml_nbytes(t)).to_vec()
            };
            encoded.push((cname, t, v, ty));
            continue;
        }
        // SAFETY: a live, allocated tensor of the input.
        let mut x = unsafe { to_f32(t)? };
        if targets.is_match(&name) && !o.skip.as_ref().is_some_and(|s| s.is_match(&name)) {
            pruner.prune(&name, &mut x, rows, k)?;
            report.pruned.push(name.clone());
        } else {
            report.dense.push(name.clone());
        }
        let v = encode(o.format, &x, rows, k);
        encoded.push((cname, t, v, o.format.ggml_type()));
        if progress {
            eprint!("\rprune: {}/{n} {name:50}", i + 1);
        }
    }
    if progress {
        eprintln!();
    }
    // SAFETY: src and the tensors in `encoded` are the input's, alive with `file`.
    unsafe { write_pruned(o, src, &encoded, &report)? };
    Ok(report)
}

/// Writes the output GGUF: the input's metadata, `encoded`'s tensors (same
/// names and shapes, new types), and which tensors were pruned by which method.
///
/// # Safety
/// `src` and the tensors of `encoded` are live.
unsafe fn write_pruned(
    o: &Options,
    src: *mut ffi::gguf_context,
    encoded: &[Encoded],
    report: &Report,
) -> Result<(), String> {
    let dst = CString::new(o.output.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    let names: Vec<CString> = report
        .pruned
        .iter()
        .map(|n| CString::new(n.as_str()).unwrap())
        .collect();
    let ptrs: Vec<*const std::ffi::c_char> = names.iter().map(|n| n.as_ptr()).collect();
    let (sparse_key, method_key) = (
        CString::new(SPARSE_KEY).unwrap(),
        CString::new(METHOD_KEY).unwrap(),
    );
    let method = CString::new(o.method.name()).unwrap();
    // SAFETY: gguf/ggml calls on contexts made and freed here and on the
    // caller's live src and tensors; the tensor data outlives the write.
    unsafe {
        let out = ffi::gguf_init_empty();
        ffi::gguf_set_kv(out, src);
        ffi::gguf_set_val_u32(out, c"general.file_type".as_ptr(), o.format.file_type());
        // The new tensors in a metadata-only context.
        let meta = ffi::ggml_init(ffi::ggml_init_params {
            mem_size: encoded.len() * (ffi::ggml_tensor_overhead() + 64) + 4096,
            mem_buffer: std::ptr::null_mut(),
            no_alloc: true,
        });
        for (name, t, data, ty) in encoded {
            let nt = ffi::ggml_new_tensor(meta, *ty, ffi::ggml_n_dims(*t), (**t).ne.as_ptr());
            ffi::ggml_set_name(nt, name.as_ptr());
            ffi::gguf_add_tensor(out, nt);
            ffi::gguf_set_tensor_data(out, name.as_ptr(), data.as_ptr() as *const _);
        }
        ffi::gguf_set_arr_str(
            out,
            sparse_key.as_ptr(),
            ptrs.as_ptr() as *mut _,
            ptrs.len(),
        );
        ffi::gguf_set_val_str(out, method_key.as_ptr(), method.as_ptr());
        let ok = ffi::gguf_write_to_file(out, dst.as_ptr(), false);
        ffi::gguf_free(out);
        ffi::ggml_free(meta);
        if !ok {
            return Err(format!("cannot write {}", o.output.display()));
        }
    }
    Ok(())
}

/// The names listed as 2:4 sparse in a GGUF file's metadata (empty if none).
pub fn sparse_tensors(path: &Path) -> Result<Vec<String>, String> {
    let file = crate::ggml::GgufFile::open(path, false)?;
    let g = file.gguf;
    // SAFETY: metadata of a file open until `file` drops; strings copied.
    unsafe {
        let key = CString::new(SPARSE_KEY).unwrap();
        let id = ffi::gguf_find_key(g, key.as_ptr());
        let mut names = vec![];
        if id >= 0 && ffi::gguf_get_arr_type(g, id) == ffi::GGUF_TYPE_STRING {
            for i in 0..ffi::gguf_get_arr_n(g, id) {
                names.push(
                    CStr::from_ptr(ffi::gguf_get_arr_str(g, id, i))
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
        Ok(names)
    }
}

/// A tensor read back from a GGUF file.
pub struct StoredTensor {
    pub ggml_type: u32,
    /// Elements per row, then rows (ggml's ne[0], ne[1]*ne[2]*ne[3]).
    pub k: usize,
    pub rows: usize,
    pub data: Vec<u8>,
}

/// Every tensor of a GGUF file, by name (for checks; the file is read whole).
pub fn read_tensors(path: &Path) -> Result<BTreeMap<String, StoredTensor>, String> {
    let file = crate::ggml::GgufFile::open(path, true)?;
    let (g, ctx) = (file.gguf, file.ctx);
    // SAFETY: the tensors live in ctx until `file` drops; data copied within nbytes.
    unsafe {
        let mut out = BTreeMap::new();
        for i in 0..ffi::gguf_get_n_tensors(g) {
            let name = CStr::from_ptr(ffi::gguf_get_tensor_name(g, i));
            let t = ffi::ggml_get_tensor(ctx, name.as_ptr());
            if t.is_null() {
                continue;
            }
            out.insert(
                name.to_string_lossy().into_owned(),
                StoredTensor {
                    ggml_type: (*t).type_,
                    k: (*t).ne[0] as usize,
                    rows: ((*t).ne[1] * (*t).ne[2] * (*t).ne[3]) as usize,
                    data: std::slice::from_raw_parts((*t).data as *const u8, ffi::ggml_nbytes(t))
                        .to_vec(),
                },
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod zero_width_tests {
    use super::*;

    /// A tensor with no columns (`ne0 = 0`) passes `k % 32 == 0`; reading it
    /// must give no values, not a division by zero.
    #[test]
    fn a_zero_width_tensor_reads_as_empty() {
        crate::ggml::init();
        // SAFETY: a ggml context made and freed here; the tensor lives in it.
        unsafe {
            let ctx = ffi::ggml_init(ffi::ggml_init_params {
                mem_size: 4 * ffi::ggml_tensor_overhead() + 1024,
                mem_buffer: std::ptr::null_mut(),
                no_alloc: false,
            });
            assert!(!ctx.is_null());
            for ty in [ffi::GGML_TYPE_Q8_0, ffi::GGML_TYPE_F32] {
                let t = ffi::ggml_new_tensor_2d(ctx, ty, 0, 4);
                assert_eq!(to_f32(t).unwrap(), Vec::<f32>::new());
            }
            ffi::ggml_free(ctx);
        }
    }
}
