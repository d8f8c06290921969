//! `llmkernel profile`: where a real model's time goes on this CPU.
//!
//! It runs prompt processing (one batch of `prompt` tokens) and decode
//! (`gen` single tokens after it) through libllama, as llama-bench does, with
//! a warm-up and repetitions, once plainly and once with every graph node
//! timed. The timing uses libllama's eval callback (`cb_eval`): asked about
//! every node, it says it wants each, so ggml's scheduler computes the graph
//! one node at a time and the callback reads the clock before and after each.
//! That costs a graph launch per node (measured: the profiled wall time
//! against the plain one, in every report). What the nodes do not explain
//! (split copies between backends, graph building, the callback itself) is
//! the wall time minus the sum of node times, reported as such.
//!
//! Every matmul's backend is known, not guessed: LLMK's counter of computed
//! nodes is read before and after each node.

use crate::backend;
use crate::ffi;
use crate::llama;
use crate::perplexity::Kernels;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::ffi::{c_void, CStr};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

pub struct Options {
    pub model: PathBuf,
    /// Prompt tokens evaluated as one batch (0: no prompt phase).
    pub prompt: usize,
    /// Single tokens decoded after the prompt (0: no decode phase).
    pub gen: usize,
    pub kernels: Kernels,
    pub threads: usize,
    /// Repetitions of each phase, plain and profiled, after one warm-up.
    pub reps: usize,
    /// Memory-map the model (llama.cpp's default), or read it into buffers.
    pub mmap: bool,
    pub progress: bool,
}

/// What one graph node is, found once per node of a graph.
#[derive(Clone, Debug)]
struct NodeInfo {
    name: String,
    op: String,
    class: String,
    /// The weight tensor of a weight matmul: name, ggml type, K, M, bytes.
    weight: Option<(String, String, i64, i64, u64)>,
    /// Columns (activation rows) the matmul multiplies.
    cols: i64,
    flops: f64,
    layer: Option<u32>,
    /// ggml's buffer type holding the weight (CPU, CPU_REPACK, LLMK).
    weight_buffer: String,
}

#[derive(Default)]
struct Agg {
    ns: u64,
    count: u64,
    /// Executions that LLMK's counters say LLMK computed.
    llmk: u64,
}

/// One phase (prompt or decode) of one kernel set.
#[derive(Default)]
struct Phase {
    infos: Vec<NodeInfo>,
    aggs: Vec<Agg>,
    index: HashMap<(usize, [u8; 64], i32), usize>,
    /// Profiled evaluations, their summed wall time, and the plain ones' walls.
    evals: u64,
    wall_profiled_ns: u64,
    walls_plain_ns: Vec<u64>,
    /// LLMK's counter of matmul nodes across the profiled evaluations.
    llmk_counter: u64,
}

struct Recorder {
    /// Which phase records now (None: the callback asks for no node).
    on: Option<usize>,
    phases: Vec<Phase>,
    start: Option<Instant>,
    llmk_before: u64,
    /// The layer of the node timed before (unnamed nodes, as the attention's,
    /// belong to the layer of the node before them).
    last_layer: Option<u32>,
}

fn llmk_matmuls() -> u64 {
    let s = llmkernel_backend::stats();
    s.mul_mat + s.mul_mat_id
}

unsafe extern "C" fn callback(t: *mut ffi::ggml_tensor, ask: bool, user: *mut c_void) -> bool {
    // SAFETY: user is the Mutex<Recorder> run() made, alive while its context is.
    let rec = unsafe { &*(user as *const Mutex<Recorder>) };
    let mut r = rec.lock().unwrap_or_else(|e| e.into_inner());
    let Some(p) = r.on else { return false };
    if ask {
        r.llmk_before = llmk_matmuls();
        r.start = Some(Instant::now());
        return true;
    }
    let ns = r.start.take().map_or(0, |s| s.elapsed().as_nanos() as u64);
    let llmk = llmk_matmuls() > r.llmk_before;
    // SAFETY: ggml passes a live node whose sources are live.
    let key = unsafe {
        let t = &*t;
        (
            t as *const _ as usize,
            std::mem::transmute::<[std::ffi::c_char; 64], [u8; 64]>(t.name),
            t.op as i32,
        )
    };
    let i = match r.phases[p].index.get(&key) {
        Some(&i) => i,
        None => {
            // SAFETY: as above.
            let mut info = unsafe { node_info(&*t) };
            if info.layer.is_none() && info.weight.is_none() {
                info.layer = r.last_layer;
            }
            let phase = &mut r.phases[p];
            let i = match phase
                .infos
                .iter()
                .position(|n| n.name == info.name && n.op == info.op && n.weight == info.weight)
            {
                Some(i) => i,
                None => {
                    phase.infos.push(info);
                    phase.aggs.push(Agg::default());
                    phase.infos.len() - 1
                }
            };
            phase.index.insert(key, i);
            i
        }
    };
    let phase = &mut r.phases[p];
    let layer = phase.infos[i].layer;
    let a = &mut phase.aggs[i];
    a.ns += ns;
    a.count += 1;
    a.llmk += llmk as u64;
    r.last_layer = layer;
    true
}

/// The C string at `p` (empty for null).
///
/// # Safety
/// `p` is null or points to a NUL-terminated string.
unsafe fn cstr(p: *const std::ffi::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: forwarded contract (ggml's names are NUL-terminated static or tensor strings).
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// # Safety
/// `t` is a live graph node with live sources.
unsafe fn node_info(t: &ffi::ggml_tensor) -> NodeInfo {
    // SAFETY: forwarded contract.
    let (op, name) = unsafe { (cstr(ffi::ggml_op_desc(t)), cstr(t.name.as_ptr())) };
    let is_mm = t.op == ffi::GGML_OP_MUL_MAT || t.op == ffi::GGML_OP_MUL_MAT_ID;
    let mut weight = None;
    let mut weight_buffer = String::new();
    let mut cols = 0;
    let mut flops = 0.0;
    if is_mm && !t.src[0].is_null() {
        // SAFETY: a matmul's first source is live.
        let w = unsafe { &*t.src[0] };
        let base = if w.view_src.is_null() {
            w
        } else {
            // SAFETY: a live view's source is live.
            unsafe { &*w.view_src }
        };
        // SAFETY: a live buffer (or none).
        // SAFETY: a live tensor's buffer (checked not null).
        let is_weight = !base.buffer.is_null()
            && unsafe { ffi::ggml_backend_buffer_get_usage(base.buffer) }
                == ffi::GGML_BACKEND_BUFFER_USAGE_WEIGHTS;
        let k = w.ne[0];
        let out: i64 = t.ne.iter().product();
        flops = 2.0 * k as f64 * out as f64;
        cols = out / t.ne[0].max(1);
        if is_weight {
            // SAFETY: live tensors and buffers; ggml's names.
            unsafe {
                weight_buffer = cstr(ffi::ggml_backend_buft_name(
                    ffi::ggml_backend_buffer_get_type(base.buffer),
                ));
                let mut bytes = ffi::ggml_nbytes(w) as u64;
                if t.op == ffi::GGML_OP_MUL_MAT_ID && w.ne[2] > 0 {
                    // Experts read: at most one each of those the ids pick.
                    let used = (t.ne[1] * t.ne[2]).min(w.ne[2]);
                    bytes = bytes / w.ne[2] as u64 * used as u64;
                }
                weight = Some((
                    cstr(base.name.as_ptr()),
                    cstr(ffi::ggml_type_name(w.type_)),
                    k,
                    w.ne[1],
                    bytes,
                ));
            }
        }
    }
    let class = match (t.op, &weight) {
        (_, Some((_, ty, ..))) => format!("matmul {ty}"),
        (ffi::GGML_OP_MUL_MAT | ffi::GGML_OP_FLASH_ATTN_EXT | ffi::GGML_OP_SOFT_MAX, _) => {
            "attention".into()
        }
        (
            ffi::GGML_OP_RMS_NORM
            | ffi::GGML_OP_NORM
            | ffi::GGML_OP_L2_NORM
            | ffi::GGML_OP_GROUP_NORM,
            _,
        ) => "norm".into(),
        (ffi::GGML_OP_ROPE, _) => "rope".into(),
        (
            ffi::GGML_OP_CPY
            | ffi::GGML_OP_CONT
            | ffi::GGML_OP_DUP
            | ffi::GGML_OP_GET_ROWS
            | ffi::GGML_OP_SET_ROWS
            | ffi::GGML_OP_CONCAT,
            _,
        ) => "copy".into(),
        (
            ffi::GGML_OP_NONE
            | ffi::GGML_OP_VIEW
            | ffi::GGML_OP_RESHAPE
            | ffi::GGML_OP_PERMUTE
            | ffi::GGML_OP_TRANSPOSE,
            _,
        ) => "view (no-op)".into(),
        (
            ffi::GGML_OP_ADD
            | ffi::GGML_OP_ADD1
            | ffi::GGML_OP_SUB
            | ffi::GGML_OP_MUL
            | ffi::GGML_OP_DIV
            | ffi::GGML_OP_SCALE
            | ffi::GGML_OP_UNARY
            | ffi::GGML_OP_GLU
            | ffi::GGML_OP_SQR
            | ffi::GGML_OP_SQRT
            | ffi::GGML_OP_CLAMP,
            _,
        ) => "element-wise".into(),
        _ => "other".into(),
    };
    let layer = weight
        .as_ref()
        .and_then(|(n, ..)| n.strip_prefix("blk.")?.split('.').next()?.parse().ok())
        .or_else(|| name.rsplit_once('-')?.1.parse().ok());
    NodeInfo {
        name,
        op,
        class,
        weight,
        cols,
        flops,
        layer,
        weight_buffer,
    }
}

/// The kernel LLMK's dispatch table picks for a `format` matmul of `cols` columns.
fn llmk_kernel(ty: &str, cols: i64) -> String {
    use llmkernel_kernels::{panel, table, Format};
    let Some(f) = Format::from_name(&ty.to_ascii_lowercase()) else {
        return "?".into();
    };
    let Ok(pieces) = table::pieces(f) else {
        return "?".into();
    };
    let find = |what: &str| pieces.iter().find(|p| p.0 == what).map(|p| p.1.to_string());
    if cols as usize >= panel::MIN_COLS && llmkernel_kernels::matmul::panels_enabled() {
        if let Some(t) = find("panel tile") {
            return t;
        }
    }
    find("four-row gemv")
        .or_else(|| find("row kernel"))
        .unwrap_or_else(|| "?".into())
}

/// The ggml CPU path a matmul of a `ty` weight in `buffer` takes for `cols`
/// columns: the repacked GEMV/GEMM of the `CPU_REPACK` buffer, else the
/// type's `vec_dot` against its activation type (for batches, llamafile's
/// sgemm where it takes the type).
fn ggml_kernel(ty: &str, cols: i64, buffer: &str) -> String {
    if buffer.contains("REPACK") {
        let how = if cols == 1 { "gemv" } else { "gemm" };
        return format!("ggml repacked {ty} {how} ({buffer})");
    }
    let act = if ty.ends_with("_K") || (ty.starts_with("iq") && ty != "iq4_nl") {
        "q8_K"
    } else {
        "q8_0"
    };
    let vec_dot = format!("ggml_vec_dot_{ty}_{act}");
    if cols == 1 {
        format!("{vec_dot} ({buffer})")
    } else {
        format!("{vec_dot} or llamafile sgemm ({buffer})")
    }
}

/// One kernel set's run of both phases.
struct Run {
    label: &'static str,
    model: llama::Model,
}

/// The phases: 0 = prompt, 1 = decode.
const PHASES: [&str; 2] = ["pp", "tg"];

/// The report, as JSON (what [`markdown`] and [`plot`] read).
pub fn run(o: &Options) -> Result<Value, String> {
    if o.prompt == 0 && o.gen == 0 {
        return Err("nothing to profile: -p and -n are both 0".into());
    }
    if o.reps == 0 {
        return Err("-r must be at least 1".into());
    }
    let ggml = matches!(o.kernels, Kernels::Ggml | Kernels::Both)
        .then(|| backend::without_llmk(|| llama::Model::load_mapped(&o.model, o.mmap)))
        .transpose()?;
    let ours = if matches!(o.kernels, Kernels::Llmkernel | Kernels::Both) {
        backend::register_in_process()?;
        Some(llama::Model::load_mapped(&o.model, o.mmap)?)
    } else {
        None
    };
    let mut runs: Vec<Run> = Vec::new();
    if let Some(m) = ggml {
        runs.push(Run {
            label: "ggml",
            model: m,
        });
    }
    if let Some(m) = ours {
        runs.push(Run {
            label: "llmkernel",
            model: m,
        });
    }
    let first = &runs[0].model;
    let n_ctx = o.prompt + o.gen + 1;
    let train = first.n_ctx_train();
    if train > 0 && n_ctx > train {
        return Err(format!(
            "-p {} plus -n {} needs a context of {n_ctx} tokens; {} was trained for {train}",
            o.prompt,
            o.gen,
            o.model.display()
        ));
    }
    let n_vocab = first.n_vocab();
    // Random tokens, as llama-bench uses (a fixed seed: the same for every run).
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n_vocab as u64) as i32
    };
    let prompt: Vec<i32> = (0..o.prompt.max(1)).map(|_| next()).collect();
    let gen: Vec<i32> = (0..o.gen).map(|_| next()).collect();

    let bandwidth = crate::bench::bandwidth::measure(o.threads);

    let recorders: Vec<Box<Mutex<Recorder>>> = runs
        .iter()
        .map(|_| {
            Box::new(Mutex::new(Recorder {
                on: None,
                phases: vec![Phase::default(), Phase::default()],
                start: None,
                llmk_before: 0,
                last_layer: None,
            }))
        })
        .collect();
    let mut contexts = Vec::new();
    for (r, rec) in runs.iter().zip(&recorders) {
        contexts.push(r.model.context_with_callback(
            n_ctx,
            o.prompt.max(1),
            o.threads,
            Some(callback),
            &**rec as *const Mutex<Recorder> as *mut c_void,
        )?);
    }
    let set = |rec: &Mutex<Recorder>, on: Option<usize>| {
        let mut r = rec.lock().unwrap_or_else(|e| e.into_inner());
        r.on = on;
        r.last_layer = None;
    };
    // One evaluation of the phases; with `profiled`, recorded.
    let mut once = |i: usize, profiled: bool, record: bool| -> Result<(), String> {
        let cx = &mut contexts[i];
        let rec = &recorders[i];
        cx.clear();
        let timed = |phase: usize, cx: &mut llama::Context, tokens: &[i32]| {
            if profiled {
                set(rec, Some(phase));
            }
            let c0 = llmk_matmuls();
            let t0 = Instant::now();
            let r = cx.eval_last(tokens);
            let ns = t0.elapsed().as_nanos() as u64;
            set(rec, None);
            r?;
            if record {
                let mut g = rec.lock().unwrap_or_else(|e| e.into_inner());
                let p = &mut g.phases[phase];
                if profiled {
                    p.evals += 1;
                    p.wall_profiled_ns += ns;
                    p.llmk_counter += llmk_matmuls() - c0;
                } else {
                    p.walls_plain_ns.push(ns);
                }
            }
            Ok::<(), String>(())
        };
        if o.prompt > 0 {
            timed(0, cx, &prompt)?;
        } else {
            cx.eval_last(&prompt)?;
        }
        for &t in &gen {
            timed(1, cx, &[t])?;
        }
        Ok(())
    };
    let total = runs.len() * (1 + 2 * o.reps);
    let mut done = 0;
    let mut tick = |what: &str| {
        done += 1;
        if o.progress {
            eprint!("\rprofile: {done}/{total} runs ({what})   ");
        }
    };
    for i in 0..runs.len() {
        once(i, false, false)?;
        tick("warm-up");
    }
    // Interleaved: each repetition runs every kernel set plainly, then profiled.
    for _ in 0..o.reps {
        for i in 0..runs.len() {
            once(i, false, true)?;
            tick(runs[i].label);
            once(i, true, true)?;
            tick(runs[i].label);
        }
    }
    if o.progress {
        eprintln!();
    }
    drop(contexts);

    let (size, params) = runs[0].model.size_and_params();
    let mut sets = Vec::new();
    for (r, rec) in runs.iter().zip(&recorders) {
        let g = rec.lock().unwrap_or_else(|e| e.into_inner());
        let mut phases = serde_json::Map::new();
        for (pi, p) in g.phases.iter().enumerate() {
            if p.evals == 0 {
                continue;
            }
            let tokens = if pi == 0 { o.prompt } else { 1 };
            phases.insert(PHASES[pi].into(), phase_json(p, tokens, bandwidth.gbps));
        }
        sets.push(json!({ "kernels": r.label, "phases": phases }));
    }
    let json = json!({
        "model": o.model.display().to_string(),
        "description": runs[0].model.description(),
        "model_bytes": size,
        "params": params,
        "prompt": o.prompt,
        "gen": o.gen,
        "reps": o.reps,
        "mmap": o.mmap,
        "threads": o.threads,
        "cpu": crate::info::cpu_name(),
        "arch": std::env::consts::ARCH,
        "features": llmkernel_kernels::cpu::CpuFeatures::get().list().iter()
            .filter(|(_, on)| *on).map(|(n, _)| n.to_string()).collect::<Vec<_>>(),
        "llmkernel_isa": llmkernel_kernels::table::Isa::ceiling().map(|i| i.name()).unwrap_or("none"),
        "ggml_tier": crate::info::ggml_tier(),
        "prefetch": llmkernel_kernels::cpu::prefetch().why,
        "commit": crate::info::llmkernel_commit(),
        "ggml": crate::ggml::version(),
        "bandwidth_gbps": bandwidth.gbps,
        "bandwidth_how": bandwidth.how,
        "sets": sets,
    });
    Ok(json)
}

fn median(v: &[u64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2] as f64
    }
}

fn phase_json(p: &Phase, tokens: usize, probe_gbps: f64) -> Value {
    let evals = p.evals as f64;
    let per_eval_ms = |ns: u64| ns as f64 / evals / 1e6;
    let node_ns: u64 = p.aggs.iter().map(|a| a.ns).sum();
    let wall = per_eval_ms(p.wall_profiled_ns);
    let nodes = per_eval_ms(node_ns);
    let plain = median(&p.walls_plain_ns) / 1e6;
    let mut classes: Vec<(String, u64)> = Vec::new();
    let mut tensors: Vec<Value> = Vec::new();
    let mut layers: std::collections::BTreeMap<i64, u64> = Default::default();
    let mut weight_matmuls = 0u64;
    let mut llmk_nodes = 0u64;
    for (n, a) in p.infos.iter().zip(&p.aggs) {
        match classes.iter_mut().find(|c| c.0 == n.class) {
            Some(c) => c.1 += a.ns,
            None => classes.push((n.class.clone(), a.ns)),
        }
        *layers.entry(n.layer.map_or(-1, i64::from)).or_default() += a.ns;
        llmk_nodes += a.llmk;
        if let Some((name, ty, k, m, bytes)) = &n.weight {
            weight_matmuls += a.count;
            let ms = a.ns as f64 / a.count.max(1) as f64 / 1e6;
            let gbps = *bytes as f64 / (ms / 1e3) / 1e9;
            let ran = if a.llmk == a.count {
                "LLMK"
            } else if a.llmk == 0 {
                "CPU"
            } else {
                "both"
            };
            let kernel = if ran == "CPU" {
                ggml_kernel(ty, n.cols, &n.weight_buffer)
            } else {
                llmk_kernel(ty, n.cols)
            };
            tensors.push(json!({
                "tensor": name, "type": ty, "k": k, "m": m, "cols": n.cols,
                "node": n.name, "backend": ran, "kernel": kernel,
                "executions": a.count, "ms": ms, "weight_bytes": bytes,
                "gbps": gbps, "probe_share": gbps / probe_gbps,
                "gflops": n.flops / (ms / 1e3) / 1e9,
                "flop_per_byte": n.flops / *bytes as f64,
            }));
        }
    }
    classes.sort_by_key(|c| std::cmp::Reverse(c.1));
    let share = |pred: &dyn Fn(&str) -> bool| {
        classes
            .iter()
            .filter(|c| pred(&c.0))
            .map(|c| c.1)
            .sum::<u64>() as f64
            / evals
            / 1e6
    };
    let matmul = share(&|c| c.starts_with("matmul"));
    let attention = share(&|c| c == "attention");
    let per_token = |ms: f64| ms / tokens as f64;
    json!({
        "tokens_per_eval": tokens,
        "evals": p.evals,
        "wall_plain_ms": plain,
        "wall_profiled_ms": wall,
        "node_sum_ms": nodes,
        "unexplained_ms": wall - nodes,
        "timing_cost": wall / plain - 1.0,
        "per_token_ms": {
            "wall": per_token(wall), "matmul": per_token(matmul),
            "attention": per_token(attention), "rest": per_token(nodes - matmul - attention),
            "unexplained": per_token(wall - nodes),
        },
        "classes": classes.iter().map(|(c, ns)| json!({"class": c, "ms": *ns as f64 / evals / 1e6})).collect::<Vec<_>>(),
        "layers": layers.iter().map(|(l, ns)| json!({"layer": if *l < 0 { Value::Null } else { json!(l) }, "ms": *ns as f64 / evals / 1e6})).collect::<Vec<_>>(),
        "weight_matmuls_per_eval": weight_matmuls as f64 / evals,
        "llmk_nodes_per_eval": llmk_nodes as f64 / evals,
        "llmk_counter_per_eval": p.llmk_counter as f64 / evals,
        "matmuls": tensors,
    })
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// A phase's milliseconds in op class `c` (0 if it has none).
fn class_ms(p: &Value, c: &str) -> f64 {
    p["classes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|x| x["class"] == c)
        .map_or(0.0, |x| f(&x["ms"]))
}

/// The op classes of `phases`, each once, in the order met.
fn classes_of<'a>(phases: impl IntoIterator<Item = &'a Value>) -> Vec<String> {
    let mut classes: Vec<String> = Vec::new();
    for p in phases {
        for c in p["classes"].as_array().into_iter().flatten() {
            let c = c["class"].as_str().unwrap_or("").to_string();
            if !classes.contains(&c) {
                classes.push(c);
            }
        }
    }
    classes
}

/// The tensor name with its layer number replaced by `*`.
fn role(name: &str) -> String {
    match name.strip_prefix("blk.").and_then(|r| r.split_once('.')) {
        Some((_, rest)) => format!("blk.*.{rest}"),
        None => name.to_string(),
    }
}

/// The report as markdown.
pub fn markdown(r: &Value) -> String {
    let mut s = String::new();
    let sets = r["sets"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(
        s,
        "# llmkernel profile: {}\n\n{} ({:.1} MiB, {:.2} B params); {}, {} threads; llmkernel {} kernels, ggml built for {}; commit {}; bandwidth probe {:.1} GB/s ({}); {} repetitions; model {}.\n",
        r["model"].as_str().unwrap_or(""),
        r["description"].as_str().unwrap_or(""),
        f(&r["model_bytes"]) / (1u64 << 20) as f64,
        f(&r["params"]) / 1e9,
        r["cpu"].as_str().unwrap_or(""),
        r["threads"],
        r["llmkernel_isa"].as_str().unwrap_or(""),
        r["ggml_tier"].as_str().unwrap_or(""),
        r["commit"].as_str().unwrap_or(""),
        f(&r["bandwidth_gbps"]),
        r["bandwidth_how"].as_str().unwrap_or(""),
        r["reps"],
        if r["mmap"] == false { "read into buffers (--mmap 0)" } else { "memory-mapped" },
    );
    for phase in PHASES {
        let ps: Vec<(&str, &Value)> = sets
            .iter()
            .filter_map(|x| Some((x["kernels"].as_str()?, x["phases"].get(phase)?)))
            .collect();
        if ps.is_empty() {
            continue;
        }
        let what = if phase == "pp" {
            format!("Prompt processing: one batch of {} tokens", r["prompt"])
        } else {
            "Decode: one token after the prompt".to_string()
        };
        let _ = writeln!(s, "## {what} (ms per evaluation)\n");
        let _ = write!(s, "| |");
        for (k, _) in &ps {
            let _ = write!(s, " {k} |");
        }
        let _ = writeln!(s, "\n|---|{}", "---|".repeat(ps.len()));
        let row = |s: &mut String, name: &str, get: &dyn Fn(&Value) -> String| {
            let _ = write!(s, "| {name} |");
            for (_, p) in &ps {
                let _ = write!(s, " {} |", get(p));
            }
            let _ = writeln!(s);
        };
        row(&mut s, "wall, plain (median)", &|p| {
            format!("{:.3}", f(&p["wall_plain_ms"]))
        });
        row(&mut s, "wall, profiled (mean)", &|p| {
            format!(
                "{:.3} ({:+.0} % timing cost)",
                f(&p["wall_profiled_ms"]),
                100.0 * f(&p["timing_cost"])
            )
        });
        row(&mut s, "sum of node times", &|p| {
            format!(
                "{:.3} ({:.1} % of the profiled wall)",
                f(&p["node_sum_ms"]),
                100.0 * f(&p["node_sum_ms"]) / f(&p["wall_profiled_ms"])
            )
        });
        for c in &classes_of(ps.iter().map(|(_, p)| *p)) {
            row(&mut s, c, &|p| {
                let ms = class_ms(p, c);
                format!("{ms:.3} ({:.1} %)", 100.0 * ms / f(&p["wall_profiled_ms"]))
            });
        }
        row(&mut s, "between nodes (unexplained)", &|p| {
            format!(
                "{:.3} ({:.1} %)",
                f(&p["unexplained_ms"]),
                100.0 * f(&p["unexplained_ms"]) / f(&p["wall_profiled_ms"])
            )
        });
        row(
            &mut s,
            "per token: matmul / attention / rest / unexplained",
            &|p| {
                let t = &p["per_token_ms"];
                let w = f(&t["wall"]);
                format!(
                    "{:.0} / {:.0} / {:.0} / {:.0} %",
                    100.0 * f(&t["matmul"]) / w,
                    100.0 * f(&t["attention"]) / w,
                    100.0 * f(&t["rest"]) / w,
                    100.0 * f(&t["unexplained"]) / w
                )
            },
        );
        row(&mut s, "weight matmuls per evaluation (on LLMK)", &|p| {
            format!(
                "{} ({})",
                f(&p["weight_matmuls_per_eval"]),
                f(&p["llmk_nodes_per_eval"])
            )
        });
        let _ = writeln!(s);
        // Weight matmuls by role (the same tensor in every layer), per kernel set.
        let _ = writeln!(s, "Weight matmuls by tensor (summed over layers; GB/s and GFLOP/s per matmul, the mean of the layers):\n");
        let _ = writeln!(s, "| kernels | tensor | type | K × M | cols | backend | kernel | ms | GB/s | of probe | GFLOP/s |");
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|");
        for (k, p) in &ps {
            let mut roles: Vec<(String, Vec<&Value>)> = Vec::new();
            for m in p["matmuls"].as_array().into_iter().flatten() {
                let r = role(m["tensor"].as_str().unwrap_or(""));
                match roles.iter_mut().find(|x| x.0 == r) {
                    Some(x) => x.1.push(m),
                    None => roles.push((r, vec![m])),
                }
            }
            for (r, ms) in roles {
                let n = ms.len() as f64;
                let m0 = ms[0];
                let sum = |key: &str| ms.iter().map(|m| f(&m[key])).sum::<f64>();
                let backends: Vec<&str> = ms.iter().filter_map(|m| m["backend"].as_str()).collect();
                let backend = if backends.iter().all(|b| *b == backends[0]) {
                    backends[0].to_string()
                } else {
                    "mixed".into()
                };
                let _ = writeln!(
                    s,
                    "| {k} | {r}{} | {} | {} × {} | {} | {backend} | {} | {:.3} | {:.1} | {:.0} % | {:.1} |",
                    if n > 1.0 { format!(" ({n})") } else { String::new() },
                    m0["type"].as_str().unwrap_or(""),
                    m0["k"],
                    m0["m"],
                    m0["cols"],
                    m0["kernel"].as_str().unwrap_or(""),
                    sum("ms"),
                    sum("gbps") / n,
                    100.0 * sum("probe_share") / n,
                    sum("gflops") / n,
                );
            }
        }
        let _ = writeln!(s);
        // By layer.
        let _ = write!(s, "By layer (ms):\n\n| layer |");
        for (k, _) in &ps {
            let _ = write!(s, " {k} |");
        }
        let _ = writeln!(s, "\n|---|{}", "---|".repeat(ps.len()));
        let mut layer_keys: Vec<Value> = Vec::new();
        for (_, p) in &ps {
            for l in p["layers"].as_array().into_iter().flatten() {
                if !layer_keys.contains(&l["layer"]) {
                    layer_keys.push(l["layer"].clone());
                }
            }
        }
        for l in &layer_keys {
            let name = if l.is_null() {
                "outside layers".to_string()
            } else {
                l.to_string()
            };
            let _ = write!(s, "| {name} |");
            for (_, p) in &ps {
                let ms = p["layers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|x| &x["layer"] == l)
                    .map_or(0.0, |x| f(&x["ms"]));
                let _ = write!(s, " {ms:.3} |");
            }
            let _ = writeln!(s);
        }
        let _ = writeln!(s);
    }
    s
}

/// Two reports side by side: per phase and kernel set, each class's ms per
/// evaluation in `a` and `b` and their ratio.
pub fn compare(a: &Value, b: &Value, names: (&str, &str)) -> String {
    let mut s = String::new();
    for (n, r) in [names.0, names.1].iter().zip([a, b]) {
        let _ = writeln!(
            s,
            "- {n}: {} on {} ({}), {} threads, commit {}, probe {:.1} GB/s",
            r["description"].as_str().unwrap_or(""),
            r["cpu"].as_str().unwrap_or(""),
            r["arch"].as_str().unwrap_or(""),
            r["threads"],
            r["commit"].as_str().unwrap_or(""),
            f(&r["bandwidth_gbps"])
        );
    }
    let _ = writeln!(s);
    let get = |r: &Value, set: &str, phase: &str| -> Option<Value> {
        r["sets"]
            .as_array()?
            .iter()
            .find(|x| x["kernels"] == set)
            .and_then(|x| x["phases"].get(phase).cloned())
    };
    for phase in PHASES {
        for set in ["ggml", "llmkernel"] {
            let (Some(pa), Some(pb)) = (get(a, set, phase), get(b, set, phase)) else {
                continue;
            };
            let _ = writeln!(s, "## {phase}, {set} kernels (ms per evaluation)\n");
            let _ = writeln!(
                s,
                "| | {} | {} | {} / {} |\n|---|---|---|---|",
                names.0, names.1, names.1, names.0
            );
            let classes = classes_of([&pa, &pb]);
            let mut line = |name: &str, x: f64, y: f64| {
                let _ = writeln!(s, "| {name} | {x:.3} | {y:.3} | {:.2} |", y / x);
            };
            line(
                "wall, plain",
                f(&pa["wall_plain_ms"]),
                f(&pb["wall_plain_ms"]),
            );
            line(
                "wall, profiled",
                f(&pa["wall_profiled_ms"]),
                f(&pb["wall_profiled_ms"]),
            );
            for c in &classes {
                line(c, class_ms(&pa, c), class_ms(&pb, c));
            }
            line(
                "between nodes",
                f(&pa["unexplained_ms"]),
                f(&pb["unexplained_ms"]),
            );
            let _ = writeln!(s);
        }
    }
    s
}

/// Draws the report: per phase, stacked bars of each kernel set's ms per
/// token by class; and a roofline scatter of the weight matmuls.
pub fn plot(r: &Value, svg: &Path, png: &Path) -> Result<(), String> {
    use plotters::prelude::*;
    crate::compare::register_font();
    const COLOURS: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    let sets = r["sets"].as_array().cloned().unwrap_or_default();
    // Classes in a fixed order across the bars.
    let mut classes = classes_of(
        sets.iter()
            .flat_map(|x| PHASES.iter().map(move |phase| &x["phases"][*phase])),
    );
    classes.retain(|c| c != "view (no-op)");
    classes.push("between nodes".into());
    let colour = |i: usize| {
        if i + 1 == classes.len() {
            RGBColor(200, 200, 200)
        } else {
            COLOURS[i % COLOURS.len()]
        }
    };
    fn draw<DB: DrawingBackend>(
        root: DrawingArea<DB, plotters::coord::Shift>,
        r: &Value,
        sets: &[Value],
        classes: &[String],
        colour: &dyn Fn(usize) -> RGBColor,
    ) -> Result<(), String>
    where
        DB::ErrorType: 'static,
    {
        let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        root.fill(&WHITE).map_err(e)?;
        let (bars, roof) = root.split_horizontally(760);
        let panels = bars.split_evenly((1, 2));
        for (pi, phase) in PHASES.iter().enumerate() {
            let area = &panels[pi];
            let cols: Vec<(&str, &Value)> = sets
                .iter()
                .filter_map(|x| Some((x["kernels"].as_str()?, x["phases"].get(*phase)?)))
                .collect();
            if cols.is_empty() {
                continue;
            }
            let ms_of = |p: &Value, c: &str| -> f64 {
                let per = f(&p["tokens_per_eval"]).max(1.0);
                if c == "between nodes" {
                    return f(&p["unexplained_ms"]).max(0.0) / per;
                }
                class_ms(p, c) / per
            };
            let ymax = cols
                .iter()
                .map(|(_, p)| classes.iter().map(|c| ms_of(p, c)).sum::<f64>())
                .fold(0.0, f64::max)
                * 1.1;
            let title = if *phase == "pp" {
                format!("prompt ({} tokens): ms per token", r["prompt"])
            } else {
                "decode: ms per token".to_string()
            };
            let mut chart = ChartBuilder::on(area)
                .caption(title, ("sans-serif", 16))
                .margin(12)
                .x_label_area_size(30)
                .y_label_area_size(50)
                .build_cartesian_2d(0f64..cols.len() as f64, 0f64..ymax.max(1e-6))
                .map_err(e)?;
            let labels: Vec<String> = cols.iter().map(|c| c.0.to_string()).collect();
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(cols.len() * 2 + 1)
                .x_label_formatter(&|x| {
                    let i = (*x - 0.5).round();
                    if (x - 0.5 - i).abs() < 0.01 && i >= 0.0 && (i as usize) < labels.len() {
                        labels[i as usize].clone()
                    } else {
                        String::new()
                    }
                })
                .draw()
                .map_err(e)?;
            for (ci, (_, p)) in cols.iter().enumerate() {
                let mut y0 = 0.0;
                for (k, c) in classes.iter().enumerate() {
                    let h = ms_of(p, c);
                    if h <= 0.0 {
                        continue;
                    }
                    let x0 = ci as f64 + 0.2;
                    chart
                        .draw_series(std::iter::once(Rectangle::new(
                            [(x0, y0), (x0 + 0.6, y0 + h)],
                            colour(k).filled(),
                        )))
                        .map_err(e)?;
                    y0 += h;
                }
            }
            if pi == 0 {
                for (k, c) in classes.iter().enumerate() {
                    let y = 40 + 16 * k as i32;
                    area.draw(&Rectangle::new(
                        [(250, y), (260, y + 10)],
                        colour(k).filled(),
                    ))
                    .map_err(e)?;
                    area.draw(&Text::new(c.clone(), (264, y - 1), ("sans-serif", 12)))
                        .map_err(e)?;
                }
            }
        }
        // Roofline.
        let probe = f(&r["bandwidth_gbps"]);
        let mut pts: Vec<(f64, f64, usize, bool)> = Vec::new();
        for (si, x) in sets.iter().enumerate() {
            for (pi, phase) in PHASES.iter().enumerate() {
                for m in x["phases"][*phase]["matmuls"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    let (ai, g) = (f(&m["flop_per_byte"]), f(&m["gflops"]));
                    if ai > 0.0 && g > 0.0 && ai.is_finite() && g.is_finite() {
                        pts.push((ai, g, si, pi == 0));
                    }
                }
            }
        }
        let peak = pts.iter().map(|p| p.1).fold(0.0, f64::max);
        let (xmin, xmax) = pts
            .iter()
            .fold((f64::MAX, 0f64), |(a, b), p| (a.min(p.0), b.max(p.0)));
        if !pts.is_empty() {
            let (xmin, xmax) = (xmin / 2.0, xmax * 2.0);
            let (ymin, ymax) = ((probe * xmin).min(peak) / 2.0, peak.max(probe * xmin) * 1.6);
            let mut chart = ChartBuilder::on(&roof)
                .caption("weight matmuls: roofline", ("sans-serif", 16))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d((xmin..xmax).log_scale(), (ymin..ymax).log_scale())
                .map_err(e)?;
            chart
                .configure_mesh()
                .x_desc("FLOP per weight byte")
                .y_desc("GFLOP/s")
                .draw()
                .map_err(e)?;
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(xmin, probe * xmin), (xmax, probe * xmax)],
                    BLACK.stroke_width(1),
                )))
                .map_err(e)?
                .label(format!("bandwidth probe {probe:.0} GB/s"))
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], BLACK));
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(xmin, peak), (xmax, peak)],
                    RGBColor(120, 120, 120).stroke_width(1),
                )))
                .map_err(e)?
                .label(format!("fastest matmul measured {peak:.0} GFLOP/s"))
                .legend(|(x, y)| {
                    PathElement::new(vec![(x, y), (x + 15, y)], RGBColor(120, 120, 120))
                });
            for (si, x) in sets.iter().enumerate() {
                let c = if x["kernels"] == "ggml" {
                    RGBColor(31, 119, 180)
                } else {
                    RGBColor(214, 39, 40)
                };
                let mine: Vec<(f64, f64)> = pts
                    .iter()
                    .filter(|p| p.2 == si)
                    .map(|p| (p.0, p.1))
                    .collect();
                chart
                    .draw_series(
                        mine.iter()
                            .map(|&(a, g)| Circle::new((a, g), 3, c.filled())),
                    )
                    .map_err(e)?
                    .label(x["kernels"].as_str().unwrap_or("").to_string())
                    .legend(move |(x, y)| Circle::new((x + 7, y), 3, c.filled()));
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperLeft)
                .draw()
                .map_err(e)?;
        }
        root.present().map_err(e)?;
        Ok(())
    }
    let size = (1240, 520);
    draw(
        SVGBackend::new(svg, size).into_drawing_area(),
        r,
        &sets,
        &classes,
        &colour,
    )?;
    draw(
        BitMapBackend::new(png, size).into_drawing_area(),
        r,
        &sets,
        &classes,
        &colour,
    )?;
    Ok(())
}
