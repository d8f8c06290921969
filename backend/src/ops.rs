//! The LLMK device and backend: which ops it takes (`supports_op`) and how it
//! computes them.

use crate::{buffer, ffi, log, sparse};
use llmkernel_kernels::formats::lut;
use llmkernel_kernels::formats::{
    BlockIq2S, BlockIq2Xs, BlockIq2Xxs, BlockIq3S, BlockIq3Xxs, BlockIq4Nl, BlockQ4_0, BlockQ5_0,
    BlockQ8_0, BlockTq1_0, BlockTq2_0, Format, QuantBlock, WithFormat,
};
use llmkernel_kernels::matmul::{
    matmul_lut_on, matmul_on, matmul_x4_on, LutMatrix, Parallel, QMatrix, X4Matrix,
};
use llmkernel_kernels::table::{Config, Kernels, LutKernels, X4Kernels};
use std::any::Any;
use std::borrow::Cow;
use std::ffi::{c_char, c_int};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

pub(crate) fn device() -> ffi::ggml_backend_device {
    ffi::ggml_backend_device {
        iface: ffi::ggml_backend_device_i {
            get_name: Some(dev_get_name),
            get_description: Some(dev_get_description),
            get_memory: Some(dev_get_memory),
            get_type: Some(dev_get_type),
            get_props: Some(dev_get_props),
            init_backend: Some(dev_init_backend),
            get_buffer_type: Some(dev_get_buffer_type),
            get_host_buffer_type: None,
            buffer_from_host_ptr: Some(dev_buffer_from_host_ptr),
            supports_op: Some(dev_supports_op),
            supports_buft: Some(dev_supports_buft),
            offload_op: None,
            event_new: None,
            event_free: None,
            event_synchronize: None,
        },
        reg: std::ptr::null_mut(), // set by init()
        context: std::ptr::null_mut(),
    }
}

unsafe extern "C" fn dev_get_name(_: ffi::ggml_backend_dev_t) -> *const c_char {
    crate::NAME.as_ptr()
}
unsafe extern "C" fn dev_get_description(_: ffi::ggml_backend_dev_t) -> *const c_char {
    crate::description()
}

/// (free, total) bytes of system memory, from /proc/meminfo (0, 0 elsewhere).
fn system_memory() -> (usize, usize) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| -> usize {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("MemAvailable:"), field("MemTotal:"))
}

unsafe extern "C" fn dev_get_memory(
    _: ffi::ggml_backend_dev_t,
    free: *mut usize,
    total: *mut usize,
) {
    let (f, t) = system_memory();
    // SAFETY: ggml passes two writable size_t.
    unsafe {
        *free = f;
        *total = t;
    }
}
unsafe extern "C" fn dev_get_type(_: ffi::ggml_backend_dev_t) -> ffi::ggml_backend_dev_type {
    ffi::GGML_BACKEND_DEVICE_TYPE_ACCEL
}
unsafe extern "C" fn dev_get_props(
    dev: ffi::ggml_backend_dev_t,
    props: *mut ffi::ggml_backend_dev_props,
) {
    let (free, total) = system_memory();
    // SAFETY: ggml passes a writable props struct.
    unsafe {
        *props = ffi::ggml_backend_dev_props {
            name: dev_get_name(dev),
            description: dev_get_description(dev),
            memory_free: free,
            memory_total: total,
            type_: ffi::GGML_BACKEND_DEVICE_TYPE_ACCEL,
            device_id: std::ptr::null(),
            caps: ffi::ggml_backend_dev_caps {
                async_: false,
                host_buffer: false,
                buffer_from_host_ptr: true,
                events: false,
                mmap_support: true,
            },
        }
    };
}
unsafe extern "C" fn dev_get_buffer_type(
    _: ffi::ggml_backend_dev_t,
) -> ffi::ggml_backend_buffer_type_t {
    crate::our_buft()
}
unsafe extern "C" fn dev_buffer_from_host_ptr(
    _: ffi::ggml_backend_dev_t,
    ptr: *mut std::ffi::c_void,
    size: usize,
    _max_tensor_size: usize,
) -> ffi::ggml_backend_buffer_t {
    // SAFETY: ggml hands over host memory of `size` bytes that outlives the buffer.
    unsafe { buffer::from_host_ptr(ptr, size) }
}
unsafe extern "C" fn dev_supports_buft(
    _: ffi::ggml_backend_dev_t,
    buft: ffi::ggml_backend_buffer_type_t,
) -> bool {
    // Our own buffers, and any host buffer: activations in the CPU backend's
    // buffers are read in place, not copied.
    // SAFETY: ggml passes a live buffer type.
    buft == crate::our_buft() || unsafe { buffer::is_host(buft) }
}

unsafe extern "C" fn dev_supports_op(
    _: ffi::ggml_backend_dev_t,
    op: *const ffi::ggml_tensor,
) -> bool {
    // SAFETY: ggml passes a live op tensor whose sources are live.
    std::panic::catch_unwind(|| unsafe { supports(&*op) }).unwrap_or(false)
}

/// Block length and block bytes of the weight types the kernels take.
fn weight_type(t: ffi::ggml_type) -> Option<(usize, usize)> {
    Format::from_ggml_type(t).map(|f| (f.block_len(), f.block_bytes()))
}

/// Exactly what the kernels handle:
/// - MUL_MAT: weight (src0) of a format in `Format::WEIGHTS` with rows of whole blocks
///   stored contiguously (any stride between matrices), in an LLMK buffer (or
///   not yet allocated); activations (src1) and output F32, each row's
///   elements contiguous, rows and planes at any strides;
///   src0 broadcast over dims 2 and 3 as ggml does (ne12 % ne02 == 0, ...).
/// - MUL_MAT_ID: the same weights as a stack of experts, I32 ids.
/// - and the no-ops (NONE, RESHAPE, VIEW, PERMUTE, TRANSPOSE), as every ggml
///   backend does: they compute nothing.
///
/// # Safety
/// `op` and its sources are live tensors.
unsafe fn supports(op: &ffi::ggml_tensor) -> bool {
    if !ACCEPTING.load(Ordering::Relaxed) {
        return false;
    }
    match op.op {
        o if is_noop(o) => return true,
        ffi::GGML_OP_MUL_MAT | ffi::GGML_OP_MUL_MAT_ID => {}
        _ => return false,
    }
    let (w, x) = (op.src[0], op.src[1]);
    if w.is_null() || x.is_null() {
        return false;
    }
    // SAFETY: non-null sources of a live op.
    let (w, x) = unsafe { (&*w, &*x) };
    let Some((blk, bytes)) = weight_type(w.type_) else {
        return false;
    };
    // SAFETY: a weight's buffer, when set, is live.
    if !w.buffer.is_null() && unsafe { (*w.buffer).buft } != crate::our_buft() {
        return false;
    }
    let k = w.ne[0];
    let row_ok = k > 0
        && k % blk as i64 == 0
        && w.nb[0] == bytes
        && w.nb[1] == k as usize / blk * bytes
        && x.type_ == ffi::GGML_TYPE_F32
        && x.ne[0] == k
        && op.type_ == ffi::GGML_TYPE_F32
        && op.nb[0] == 4
        && x.nb[0] == 4;
    if !row_ok {
        return false;
    }
    // The columns one weight matrix meets: a MUL_MAT's batch; for MUL_MAT_ID
    // the tokens (an expert meets at most as many).
    let batch = if op.op == ffi::GGML_OP_MUL_MAT {
        x.ne[1]
    } else if op.src[2].is_null() {
        return false;
    } else {
        // SAFETY: non-null source of a live op.
        unsafe { (*op.src[2]).ne[1] }
    };
    let batch = usize::try_from(batch).unwrap_or(0);
    if !takes(w.type_, batch) {
        return false;
    }
    // Decode that only a lookup-table layout makes faster than ggml's: a
    // weight the plugin cannot repack (not file-backed) stays with ggml.
    if via_lut(w.type_, batch) && !crate::sparse::repackable(w.data as *const u8, nbytes(w)) {
        return false;
    }
    if op.op == ffi::GGML_OP_MUL_MAT {
        w.ne[2] > 0
            && w.ne[3] > 0
            && x.ne[2] % w.ne[2] == 0
            && x.ne[3] % w.ne[3] == 0
            && op.ne == [w.ne[1], x.ne[1], x.ne[2], x.ne[3]]
    } else {
        let ids = op.src[2];
        if ids.is_null() {
            return false;
        }
        // SAFETY: non-null source of a live op.
        let ids = unsafe { &*ids };
        ids.type_ == ffi::GGML_TYPE_I32
            && ids.nb[0] == 4
            && w.ne[3] == 1
            && x.ne[3] == 1
            && x.ne[1] > 0
            && ids.ne[1] == x.ne[2]
            && ids.ne[0] % x.ne[1] == 0
            && op.ne == [w.ne[1], ids.ne[0], x.ne[2], 1]
    }
}

/// Whether LLMK takes a matmul of weights of ggml type `t` against `batch`
/// columns: the dispatch table's policy for the format on this ISA
/// ([`llmkernel_kernels::table::PluginTakes`]: where ggml's kernel is the
/// faster one, measured in docs/BENCHMARKS.md, the CPU backend keeps the
/// op), less what `LLMKERNEL_PLUGIN_DECLINE` declines. A format the policy
/// declines at batch 512 (llama.cpp's probe when it places weights) keeps its
/// weights in the CPU backend's buffers, repacked as ggml likes them.
pub fn takes(t: ffi::ggml_type, batch: usize) -> bool {
    struct Takes(usize);
    impl WithFormat for Takes {
        type Out = bool;
        fn run<B: Kernels>(self) -> bool {
            config::<B>().plugin().takes(self.0)
        }
    }
    let Some(format) = Format::from_ggml_type(t) else {
        return false;
    };
    !declined()
        .iter()
        .any(|(f, lo, hi)| *f == format && (*lo..=*hi).contains(&batch))
        && format.with(Takes(batch)).unwrap_or(false)
}

/// Whether [`takes`] takes this batch only through a lookup-table GEMV
/// ([`Config::plugin_via_lut`]).
fn via_lut(t: ffi::ggml_type, batch: usize) -> bool {
    struct Via(usize);
    impl WithFormat for Via {
        type Out = bool;
        fn run<B: Kernels>(self) -> bool {
            config::<B>().plugin_via_lut(self.0)
        }
    }
    Format::from_ggml_type(t).is_some_and(|f| f.with(Via(batch)).unwrap_or(false))
}

/// `LLMKERNEL_PLUGIN_DECLINE`: matmuls the CPU backend keeps whatever the
/// table says, as `format` (every batch) or `format:lo-hi` (batches lo to
/// hi), comma-separated: `q4_0:1-15,q8_0`. Read once; a bad entry is logged
/// and ignored.
fn declined() -> &'static [(Format, usize, usize)] {
    static LIST: OnceLock<Vec<(Format, usize, usize)>> = OnceLock::new();
    LIST.get_or_init(|| {
        let Ok(v) = std::env::var("LLMKERNEL_PLUGIN_DECLINE") else {
            return vec![];
        };
        let mut list = vec![];
        for e in v.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            match parse_decline(e) {
                Some(d) => list.push(d),
                None => log(
                    ffi::GGML_LOG_LEVEL_ERROR,
                    &format!(
                        "LLMKERNEL_PLUGIN_DECLINE: ignoring '{e}' (want a weight format such as q4_0, or q4_0:LO-HI for batches LO to HI)"
                    ),
                ),
            }
        }
        list
    })
}

/// One entry of `LLMKERNEL_PLUGIN_DECLINE`: `format` or `format:lo-hi`.
fn parse_decline(e: &str) -> Option<(Format, usize, usize)> {
    let (name, range) = e.split_once(':').unwrap_or((e, "0-"));
    let format = Format::from_name(name).filter(|f| Format::WEIGHTS.contains(f))?;
    let (lo, hi) = range.split_once('-')?;
    let lo = lo.trim().parse().ok()?;
    let hi = match hi.trim() {
        "" => usize::MAX,
        h => h.parse().ok()?,
    };
    (lo <= hi).then_some((format, lo, hi))
}

static ACCEPTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// While `false`, the device takes no op: a model loaded meanwhile keeps
/// ggml's own buffer types (and kernels) although LLMK is registered. The CLI
/// uses it to run ggml's kernels and llmkernel's on the same model in one
/// process. Default `true`.
pub fn set_accepting(on: bool) {
    ACCEPTING.store(on, Ordering::Relaxed);
}

/// Per-backend state.
pub(crate) struct Context {
    threads: AtomicUsize,
    /// The host's CPU backend, for the nodes of a whole graph LLMK does not
    /// take (started on first need: see [`crate::whole_graph`]).
    cpu: std::sync::Mutex<Option<crate::whole_graph::Cpu>>,
    /// What this backend computed: the change of the process's counters over
    /// each of its graphs. Two contexts computing at the same time (threads of
    /// one host) would each count the other's nodes too; llama.cpp's tools
    /// compute one context at a time.
    own: std::sync::Mutex<crate::Stats>,
}
impl Context {
    pub(crate) fn set_threads(&self, n: usize) {
        self.threads.store(n, Ordering::Relaxed);
    }
    fn threads(&self) -> usize {
        self.threads.load(Ordering::Relaxed)
    }
}

static GUID: ffi::ggml_guid = *b"llmkernel-LLMK-1";

/// The Context of `backend` if it is one of ours.
///
/// # Safety
/// `backend` is null or a live ggml backend that outlives `'a`.
pub(crate) unsafe fn context<'a>(backend: ffi::ggml_backend_t) -> Option<&'a Context> {
    // SAFETY: a live backend (forwarded contract); ours carry a Context.
    unsafe {
        (!backend.is_null() && (*backend).device == crate::our_dev())
            .then(|| &*((*backend).context as *const Context))
    }
}

unsafe extern "C" fn dev_init_backend(
    dev: ffi::ggml_backend_dev_t,
    _params: *const c_char,
) -> ffi::ggml_backend_t {
    let ctx = Box::new(Context {
        // The CPU backend's default; llama.cpp sets its n_threads on both.
        threads: AtomicUsize::new(ffi::GGML_DEFAULT_N_THREADS as usize),
        cpu: std::sync::Mutex::new(None),
        own: std::sync::Mutex::new(crate::Stats::default()),
    });
    Box::into_raw(Box::new(ffi::ggml_backend {
        guid: &GUID as *const _ as *mut _,
        iface: ffi::ggml_backend_i {
            get_name: Some(backend_get_name),
            free: Some(backend_free),
            set_tensor_async: None,
            get_tensor_async: None,
            set_tensor_2d_async: None,
            get_tensor_2d_async: None,
            cpy_tensor_async: None,
            synchronize: None,
            graph_plan_create: None,
            graph_plan_free: None,
            graph_plan_update: None,
            graph_plan_compute: None,
            graph_compute: Some(backend_graph_compute),
            event_record: None,
            event_wait: None,
            graph_optimize: None,
        },
        device: dev,
        context: Box::into_raw(ctx).cast(),
    }))
}

unsafe extern "C" fn backend_get_name(_: ffi::ggml_backend_t) -> *const c_char {
    crate::NAME.as_ptr()
}
unsafe extern "C" fn backend_free(backend: ffi::ggml_backend_t) {
    // SAFETY: made by dev_init_backend; ggml frees a backend once.
    unsafe {
        let ctx = Box::from_raw((*backend).context as *mut Context);
        crate::summary(&ctx.own.lock().unwrap_or_else(|e| e.into_inner()));
        drop(ctx);
        drop(Box::from_raw(backend));
    }
}

unsafe extern "C" fn backend_graph_compute(
    backend: ffi::ggml_backend_t,
    graph: *mut ffi::ggml_cgraph,
) -> ffi::ggml_status {
    // SAFETY: ggml passes a live backend.
    let Some(ctx) = (unsafe { context(backend) }) else {
        return ffi::GGML_STATUS_FAILED;
    };
    let before = crate::stats();
    // SAFETY: forwarded (a live graph).
    let status = unsafe { graph_compute(ctx, graph) };
    let mut own = ctx.own.lock().unwrap_or_else(|e| e.into_inner());
    *own = own.plus(&crate::stats().since(&before));
    drop(own);
    crate::write_stats_file();
    status
}

/// # Safety
/// `graph` is a live graph.
unsafe fn graph_compute(ctx: &Context, graph: *mut ffi::ggml_cgraph) -> ffi::ggml_status {
    // One runner for the whole graph (every matmul of it uses the same threads).
    let par = crate::team::runner(ctx.threads());
    let h = crate::host();
    // SAFETY: ggml passes a live graph.
    let n = unsafe { (h.graph_n_nodes)(graph) };
    // Nodes LLMK does not take, waiting to run on the CPU backend (only a
    // whole graph, as an RPC worker gets, has them).
    let mut run: Vec<*mut ffi::ggml_tensor> = Vec::new();
    for i in 0..n {
        // SAFETY: i < n_nodes.
        let node = unsafe { (h.graph_node)(graph, i) };
        // SAFETY: graph nodes are live tensors with live sources.
        let (noop, ours) = unsafe { (is_noop((*node).op), supports(&*node)) };
        if !ours || (noop && !run.is_empty()) {
            run.push(node);
            continue;
        }
        if let Err(e) = run_on_cpu(ctx, &mut run) {
            return failed(i, node, &e);
        }
        // SAFETY: as above, and supports() accepted the node; the graph's
        // data is allocated when it is computed.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
            compute(&*node, &*par)
        }))
        .unwrap_or_else(|_| Err("panic in a kernel".into()));
        if let Err(e) = result {
            return failed(i, node, &e);
        }
    }
    match run_on_cpu(ctx, &mut run) {
        Ok(()) => ffi::GGML_STATUS_SUCCESS,
        // SAFETY: n > 0 when the run was not empty.
        Err(e) => failed(n - 1, unsafe { (h.graph_node)(graph, n - 1) }, &e),
    }
}

/// The ops every backend takes as no-ops: views of their source's data.
fn is_noop(op: ffi::ggml_op) -> bool {
    matches!(
        op,
        ffi::GGML_OP_NONE
            | ffi::GGML_OP_RESHAPE
            | ffi::GGML_OP_VIEW
            | ffi::GGML_OP_PERMUTE
            | ffi::GGML_OP_TRANSPOSE
    )
}

/// Runs the waiting nodes of a whole graph on the host's CPU backend.
fn run_on_cpu(ctx: &Context, run: &mut Vec<*mut ffi::ggml_tensor>) -> Result<()> {
    if run.is_empty() {
        return Ok(());
    }
    let mut cpu = ctx.cpu.lock().unwrap_or_else(|e| e.into_inner());
    if cpu.is_none() {
        *cpu = Some(crate::whole_graph::Cpu::start()?);
        log(
            ffi::GGML_LOG_LEVEL_INFO,
            "a whole graph (an RPC worker's): the ops LLMK does not take run on the host's CPU backend",
        );
    }
    // SAFETY: the nodes are live nodes of the graph being computed, in order,
    // their sources computed before them; LLMK's buffers are host memory.
    unsafe { cpu.as_mut().unwrap().compute(run, ctx.threads()) }?;
    crate::CPU_NODES.fetch_add(run.len() as u64, Ordering::Relaxed);
    run.clear();
    Ok(())
}

/// Logs a node that failed and returns the failure.
fn failed(i: c_int, node: *mut ffi::ggml_tensor, e: &str) -> ffi::ggml_status {
    crate::FAILED.fetch_add(1, Ordering::Relaxed);
    // SAFETY: a live graph node.
    let name = unsafe { std::ffi::CStr::from_ptr((*node).name.as_ptr()) };
    log(
        ffi::GGML_LOG_LEVEL_ERROR,
        &format!("node {i} ({}): {e}", name.to_string_lossy()),
    );
    crate::write_stats_file();
    ffi::GGML_STATUS_FAILED
}

/// The table's configuration of format `B` under the backend's ISA ceiling,
/// chosen once per process for every format.
pub(crate) fn config<B: Kernels>() -> &'static Config<B> {
    struct Make;
    impl WithFormat for Make {
        type Out = Box<dyn Any + Send + Sync>;
        fn run<B: Kernels>(self) -> Self::Out {
            Box::new(Config::<B>::at(crate::isa()))
        }
    }
    static CONFIGS: OnceLock<Vec<Box<dyn Any + Send + Sync>>> = OnceLock::new();
    CONFIGS
        .get_or_init(|| {
            Format::ALL
                .into_iter()
                .filter_map(|f| f.with(Make))
                .collect()
        })
        .iter()
        .find_map(|c| c.downcast_ref::<Config<B>>())
        .expect("every format with kernels has a configuration")
}

/// MUL_MAT (`id == false`) or MUL_MAT_ID of a node whose weights are in
/// GGUF's layout, for the weight's format.
struct MulMat<'a> {
    node: &'a ffi::ggml_tensor,
    par: &'a dyn Parallel,
    id: bool,
}

impl MulMat<'_> {
    /// Runs the node with the kernels of its weight's format.
    ///
    /// # Safety
    /// As [`compute`], and [`supports`] accepted the node.
    unsafe fn run(self) -> Result<()> {
        // SAFETY: supports() checked the sources exist.
        let t = unsafe { (*self.node.src[0]).type_ };
        Format::from_ggml_type(t)
            .and_then(|f| f.with(self))
            .unwrap_or_else(|| Err(format!("weight type {t} is not one the kernels take")))
    }
}

impl WithFormat for MulMat<'_> {
    type Out = Result<()>;
    fn run<B: Kernels>(self) -> Result<()> {
        let (node, par) = (self.node, self.par);
        // SAFETY: a MulMat is run only through MulMat::run, whose contract is
        // that of mul_mat and mul_mat_id (supports() checked the shapes).
        unsafe {
            let w = &*node.src[0];
            if self.id {
                mul_mat_id::<B>(node, config::<B>(), par)
            } else {
                mul_mat::<B>(node, config::<B>(), par, &|off, count| {
                    blocks::<B>((w.data as *const u8).add(off), count)
                })
            }
        }
    }
}

type Result<T> = std::result::Result<T, String>;

/// # Safety
/// `node` is a live tensor whose sources are live and allocated.
unsafe fn compute(node: &ffi::ggml_tensor, par: &dyn Parallel) -> Result<()> {
    match node.op {
        op if is_noop(op) => Ok(()),
        ffi::GGML_OP_MUL_MAT | ffi::GGML_OP_MUL_MAT_ID => {
            // SAFETY: forwarded contract.
            if !unsafe { supports(node) } {
                return Err("shape or type the kernels do not take".into());
            }
            if node.op == ffi::GGML_OP_MUL_MAT {
                crate::MUL_MAT.fetch_add(1, Ordering::Relaxed);
                // SAFETY: forwarded contract; supports() checked the shapes.
                if let Some(done) = unsafe { mul_mat_packed(node, par) } {
                    return done;
                }
                // SAFETY: forwarded contract; supports() accepted the node.
                unsafe {
                    MulMat {
                        node,
                        par,
                        id: false,
                    }
                    .run()
                }
            } else {
                crate::MUL_MAT_ID.fetch_add(1, Ordering::Relaxed);
                // SAFETY: as above.
                unsafe {
                    MulMat {
                        node,
                        par,
                        id: true,
                    }
                    .run()
                }
            }
        }
        op => Err(format!("op {op} is not one this backend computes")),
    }
}

/// The bytes a tensor spans (ggml_nbytes).
pub(crate) fn nbytes(t: &ffi::ggml_tensor) -> usize {
    // SAFETY: host function on a live tensor.
    unsafe { (crate::host().nbytes)(t) }
}

/// `count` blocks at `ptr`, borrowed when aligned, else copied.
///
/// # Safety
/// `ptr` points to `count` blocks' bytes that stay valid for `'a`.
unsafe fn blocks<'a, B: QuantBlock>(ptr: *const u8, count: usize) -> Cow<'a, [B]> {
    if ptr as usize % std::mem::align_of::<B>() == 0 {
        // SAFETY: aligned, in bounds (forwarded contract); B is Pod.
        Cow::Borrowed(unsafe { std::slice::from_raw_parts(ptr as *const B, count) })
    } else {
        let mut v = vec![<B as bytemuck::Zeroable>::zeroed(); count];
        // SAFETY: v has room for count blocks; the source holds as many bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(
                ptr,
                v.as_mut_ptr() as *mut u8,
                count * std::mem::size_of::<B>(),
            )
        };
        Cow::Owned(v)
    }
}

/// Gathers rows of `k` f32 at byte offsets `rows` from `base` (each row's
/// elements contiguous, as [`supports`] requires; rows need not be aligned).
///
/// # Safety
/// Every row lies inside the tensor at `base`.
unsafe fn gather(base: *const u8, k: usize, rows: impl Iterator<Item = usize>) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::new();
    for off in rows {
        let at = v.len();
        v.resize(at + k, 0.0);
        // SAFETY: forwarded contract; a byte copy needs no alignment.
        unsafe {
            std::ptr::copy_nonoverlapping(base.add(off), v[at..].as_mut_ptr() as *mut u8, 4 * k)
        };
    }
    v
}

/// Writes `row` to the f32 row at `base` (elements contiguous).
///
/// # Safety
/// `row.len()` f32 at `base` lie inside a writable tensor.
unsafe fn write_row(base: *mut u8, row: &[f32]) {
    // SAFETY: forwarded contract; a byte copy needs no alignment.
    unsafe { std::ptr::copy_nonoverlapping(row.as_ptr() as *const u8, base, 4 * row.len()) };
}

/// MUL_MAT with a contiguous Q4_0/Q5_0/Q8_0/IQ4_NL/TQ1_0/TQ2_0 weight that
/// [`sparse::lookup`] packed (2:4 weights, and dense ones of a mapped file),
/// from its four-row interleaved copy or its lookup-table layout; `None` if
/// the weight stays in GGUF's layout.
///
/// # Safety
/// As [`mul_mat`].
unsafe fn mul_mat_packed(node: &ffi::ggml_tensor, par: &dyn Parallel) -> Option<Result<()>> {
    // SAFETY: supports() checked the sources.
    let w = unsafe { &*node.src[0] };
    let (block, values) = match w.type_ {
        ffi::GGML_TYPE_Q4_0 => (std::mem::size_of::<BlockQ4_0>(), 32),
        ffi::GGML_TYPE_Q8_0 => (std::mem::size_of::<BlockQ8_0>(), 32),
        ffi::GGML_TYPE_IQ4_NL => (std::mem::size_of::<BlockIq4Nl>(), 32),
        ffi::GGML_TYPE_Q5_0 => (std::mem::size_of::<BlockQ5_0>(), 32),
        ffi::GGML_TYPE_TQ1_0 => (std::mem::size_of::<BlockTq1_0>(), 256),
        ffi::GGML_TYPE_TQ2_0 => (std::mem::size_of::<BlockTq2_0>(), 256),
        ffi::GGML_TYPE_IQ2_XXS => (std::mem::size_of::<BlockIq2Xxs>(), 256),
        ffi::GGML_TYPE_IQ2_XS => (std::mem::size_of::<BlockIq2Xs>(), 256),
        ffi::GGML_TYPE_IQ2_S => (std::mem::size_of::<BlockIq2S>(), 256),
        ffi::GGML_TYPE_IQ3_S => (std::mem::size_of::<BlockIq3S>(), 256),
        ffi::GGML_TYPE_IQ3_XXS => (std::mem::size_of::<BlockIq3Xxs>(), 256),
        _ => return None,
    };
    let row = w.ne[0] as usize / values * block;
    let contiguous = w.nb[0] == block
        && w.nb[1] == row
        && w.nb[2] == w.ne[1] as usize * row
        && w.nb[3] == w.ne[2] as usize * w.nb[2];
    if !contiguous {
        return None;
    }
    let len = nbytes(w);
    let (k, m) = (w.ne[0] as usize, w.ne[1] as usize);
    // SAFETY: the weight's bytes live as long as its buffer, past this node.
    let packed = unsafe { sparse::lookup(w.data as *const u8, len, w.type_, (m, k), par) };
    let r = match &packed {
        sparse::Packed::Dense => return None,
        // SAFETY: forwarded contract; the packed copy holds every plane.
        sparse::Packed::Q4_0(v) => unsafe { mul_mat_x4(node, config(), par, v) },
        sparse::Packed::Q8_0(v) => unsafe { mul_mat_x4(node, config(), par, v) },
        sparse::Packed::Q4_0x4(v) => unsafe { mul_mat_x4(node, config(), par, v) },
        sparse::Packed::Q8_0x4(v) => unsafe { mul_mat_x4(node, config(), par, v) },
        sparse::Packed::Iq4Nlx4(v) => unsafe { mul_mat_x4(node, config(), par, v) },
        sparse::Packed::Q5_0x4(v) => unsafe { mul_mat_x4(node, config(), par, v) },
        sparse::Packed::Tq1_0x64(v) => unsafe { mul_mat_lut(node, config(), par, v) },
        sparse::Packed::Tq2_0x64(v) => unsafe { mul_mat_lut(node, config(), par, v) },
        // The planes serve decode; prompt batches read the file's blocks.
        sparse::Packed::Iq2Xxsx64(v) if decode_batch(node) => unsafe {
            mul_mat_lut(node, config(), par, v)
        },
        sparse::Packed::Iq2Xsx64(v) if decode_batch(node) => unsafe {
            mul_mat_lut(node, config(), par, v)
        },
        sparse::Packed::Iq2Sx64(v) if decode_batch(node) => unsafe {
            mul_mat_lut(node, config(), par, v)
        },
        sparse::Packed::Iq3Sx64(v) if decode_batch(node) => unsafe {
            mul_mat_lut(node, config(), par, v)
        },
        sparse::Packed::Iq3Xxsx64(v) if decode_batch(node) => unsafe {
            mul_mat_lut(node, config(), par, v)
        },
        sparse::Packed::Tq1_0Px64(v) if decode_batch(node) => unsafe {
            mul_mat_lut(node, config(), par, v)
        },
        sparse::Packed::Tq2_0Px64(v) if decode_batch(node) => unsafe {
            mul_mat_lut(node, config(), par, v)
        },
        sparse::Packed::Iq2Xxsx64(_)
        | sparse::Packed::Iq2Xsx64(_)
        | sparse::Packed::Iq2Sx64(_)
        | sparse::Packed::Iq3Sx64(_)
        | sparse::Packed::Iq3Xxsx64(_)
        | sparse::Packed::Tq1_0Px64(_)
        | sparse::Packed::Tq2_0Px64(_) => return None,
    };
    if packed.is_sparse() {
        crate::SPARSE_MUL_MAT.fetch_add(1, Ordering::Relaxed);
    }
    Some(r)
}

/// Whether the node's batch (src1's rows) is one the lookup-table GEMV
/// takes, below the panel GEMM's.
///
/// # Safety
/// As [`mul_mat`].
unsafe fn decode_batch(node: &ffi::ggml_tensor) -> bool {
    // SAFETY: supports() checked the sources.
    let x = unsafe { &*node.src[1] };
    (x.ne[1] as usize) < llmkernel_kernels::panel::MIN_COLS
}

/// The `count` weight blocks at byte offset `off` of the weight tensor.
type Plane<'a, B> = dyn Fn(usize, usize) -> Cow<'a, [B]> + 'a;

/// ggml's MUL_MAT: `dst[i3][i2][i1][i0] = dot(src0[i3/r3][i2/r2][i0], src1[i3][i2][i1])`,
/// the weight planes coming from `plane`.
///
/// # Safety
/// As [`compute`], and [`supports`] accepted `dst`.
unsafe fn mul_mat<'a, B: Kernels>(
    dst: &ffi::ggml_tensor,
    kernel: &Config<B>,
    par: &dyn Parallel,
    plane: &Plane<'a, B>,
) -> Result<()> {
    // SAFETY: supports() checked the sources.
    let w = unsafe { &*dst.src[0] };
    let (k, m) = (w.ne[0] as usize, w.ne[1] as usize);
    let per_row = k / B::FORMAT.block_len();
    let bytes = m * per_row * std::mem::size_of::<B>();
    // SAFETY: forwarded contract.
    unsafe {
        mul_mat_planes(dst, bytes, &|w2, w3, xs, n, y| {
            // The plane lies inside src0 (ggml's shape/stride contract).
            let wb = plane(w3 * w.nb[3] + w2 * w.nb[2], m * per_row);
            let qm = QMatrix::new(&wb, m, k).map_err(|e| e.to_string())?;
            matmul_on(&qm, xs, n, y, kernel, par).map_err(|e| e.to_string())
        })
    }
}

/// [`mul_mat`] for a weight in a repacked layout (`packed`: its planes one
/// after the other, `per_plane(m, k)` units each), each plane multiplied
/// by `matmul(plane, m, k, x, n, y)`.
///
/// # Safety
/// As [`mul_mat`].
unsafe fn mul_mat_repacked<T>(
    dst: &ffi::ggml_tensor,
    packed: &[T],
    per_plane: fn(usize, usize) -> usize,
    matmul: &dyn Fn(&[T], usize, usize, &[f32], usize, &mut [f32]) -> Result<()>,
) -> Result<()> {
    // SAFETY: supports() checked the sources.
    let w = unsafe { &*dst.src[0] };
    let (k, m) = (w.ne[0] as usize, w.ne[1] as usize);
    let per_plane = per_plane(m, k);
    // SAFETY: forwarded contract.
    unsafe {
        mul_mat_planes(
            dst,
            per_plane * std::mem::size_of::<T>(),
            &|w2, w3, xs, n, y| {
                let p = w3 * w.ne[2] as usize + w2;
                let blocks = packed
                    .get(p * per_plane..(p + 1) * per_plane)
                    .ok_or("packed plane out of range")?;
                matmul(blocks, m, k, xs, n, y)
            },
        )
    }
}

/// [`mul_mat`] for a weight interleaved by four rows (2:4 or dense; each
/// plane `ceil(m / 4) * k / 32` blocks).
///
/// # Safety
/// As [`mul_mat`].
unsafe fn mul_mat_x4<X: X4Kernels>(
    dst: &ffi::ggml_tensor,
    kernel: &Config<X::Row>,
    par: &dyn Parallel,
    packed: &[X],
) -> Result<()> {
    let per_plane = |m: usize, k: usize| m.div_ceil(4) * (k / 32);
    // SAFETY: forwarded contract.
    unsafe {
        mul_mat_repacked(dst, packed, per_plane, &|blocks, m, k, xs, n, y| {
            let qm = X4Matrix::new(blocks, m, k).map_err(|e| e.to_string())?;
            matmul_x4_on(&qm, xs, n, y, kernel, par).map_err(|e| e.to_string())
        })
    }
}

/// [`mul_mat`] for a weight in a lookup-table layout (each plane
/// `ceil(m / 64) * k / 256` blocks).
///
/// # Safety
/// As [`mul_mat`].
unsafe fn mul_mat_lut<X: LutKernels>(
    dst: &ffi::ggml_tensor,
    kernel: &Config<X::Row>,
    par: &dyn Parallel,
    packed: &[X],
) -> Result<()> {
    let per_plane = |m: usize, k: usize| lut::groups(m) * (k / 256);
    // SAFETY: forwarded contract.
    unsafe {
        mul_mat_repacked(dst, packed, per_plane, &|blocks, m, k, xs, n, y| {
            let qm = LutMatrix::new(blocks, m, k).map_err(|e| e.to_string())?;
            matmul_lut_on(&qm, xs, n, y, kernel, par).map_err(|e| e.to_string())
        })
    }
}

/// The plane loop of MUL_MAT: for each plane of src1, its weight plane
/// `(w2, w3)` times its rows, through `matmul(w2, w3, x, n, y)`, written into dst.
///
/// # Safety
/// As [`mul_mat`].
unsafe fn mul_mat_planes(
    dst: &ffi::ggml_tensor,
    weight_bytes: usize,
    matmul: &dyn Fn(usize, usize, &[f32], usize, &mut [f32]) -> Result<()>,
) -> Result<()> {
    // SAFETY: supports() checked the sources.
    let (w, x) = unsafe { (&*dst.src[0], &*dst.src[1]) };
    let (k, m, n) = (w.ne[0] as usize, w.ne[1] as usize, x.ne[1] as usize);
    let (r2, r3) = (x.ne[2] / w.ne[2], x.ne[3] / w.ne[3]);
    let contiguous_y = dst.nb[1] == 4 * m;
    for i3 in 0..x.ne[3] {
        for i2 in 0..x.ne[2] {
            let (w3, w2) = ((i3 / r3) as usize, (i2 / r2) as usize);
            let xoff = i3 as usize * x.nb[3] + i2 as usize * x.nb[2];
            // SAFETY: rows of the plane lie inside src1.
            let xs =
                unsafe { gather(x.data as *const u8, k, (0..n).map(|i1| xoff + i1 * x.nb[1])) };
            let yoff = i3 as usize * dst.nb[3] + i2 as usize * dst.nb[2];
            let ybase = unsafe { (dst.data as *mut u8).add(yoff) };
            if contiguous_y && ybase as usize % 4 == 0 {
                // SAFETY: the plane's n rows of m f32 are contiguous inside dst.
                let y = unsafe { std::slice::from_raw_parts_mut(ybase as *mut f32, n * m) };
                matmul(w2, w3, &xs, n, y)?;
            } else {
                let mut y = vec![0f32; n * m];
                matmul(w2, w3, &xs, n, &mut y)?;
                for (i1, row) in y.chunks(m.max(1)).enumerate() {
                    // SAFETY: dst row i1 of the plane holds m contiguous f32.
                    unsafe { write_row(ybase.add(i1 * dst.nb[1]), row) };
                }
            }
            crate::WEIGHT_BYTES.fetch_add(weight_bytes as u64, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// ggml's MUL_MAT_ID: for token t and slot i, expert e = ids[t][i],
/// `dst[t][i] = src0[e] · src1[t][i % ne11]`. Tokens are grouped by expert so
/// each expert's weights are read once per node.
///
/// # Safety
/// As [`mul_mat`].
unsafe fn mul_mat_id<B: Kernels>(
    dst: &ffi::ggml_tensor,
    kernel: &Config<B>,
    par: &dyn Parallel,
) -> Result<()> {
    // SAFETY: supports() checked the sources.
    let (w, x, ids) = unsafe { (&*dst.src[0], &*dst.src[1], &*dst.src[2]) };
    let (k, m, n_as) = (w.ne[0] as usize, w.ne[1] as usize, w.ne[2] as usize);
    let per_row = k / B::FORMAT.block_len();
    let (n_used, n_tok, ne11) = (ids.ne[0] as usize, ids.ne[1] as usize, x.ne[1] as usize);
    let mut by_expert: Vec<Vec<(usize, usize)>> = vec![Vec::new(); n_as];
    for t in 0..n_tok {
        for i in 0..n_used {
            // SAFETY: inside ids by its strides.
            let e = unsafe {
                ((ids.data as *const u8).add(t * ids.nb[1] + i * ids.nb[0]) as *const i32)
                    .read_unaligned()
            };
            let e = usize::try_from(e)
                .ok()
                .filter(|&e| e < n_as)
                .ok_or_else(|| format!("expert id {e} out of range 0..{n_as}"))?;
            by_expert[e].push((i, t));
        }
    }
    for (e, pairs) in by_expert.iter().enumerate() {
        if pairs.is_empty() {
            continue;
        }
        // SAFETY: expert e's matrix lies inside src0.
        let wb = unsafe { blocks::<B>((w.data as *const u8).add(e * w.nb[2]), m * per_row) };
        let qm = QMatrix::new(&wb, m, k).map_err(|e| e.to_string())?;
        // SAFETY: rows inside src1 (i % ne11 < ne11, t < ne12).
        let xs = unsafe {
            gather(
                x.data as *const u8,
                k,
                pairs
                    .iter()
                    .map(|&(i, t)| (i % ne11) * x.nb[1] + t * x.nb[2]),
            )
        };
        let mut y = vec![0f32; pairs.len() * m];
        matmul_on(&qm, &xs, pairs.len(), &mut y, kernel, par).map_err(|e| e.to_string())?;
        for (&(i, t), row) in pairs.iter().zip(y.chunks(m.max(1))) {
            // SAFETY: dst row (i, t) holds m contiguous f32.
            unsafe {
                write_row(
                    (dst.data as *mut u8).add(i * dst.nb[1] + t * dst.nb[2]),
                    row,
                )
            };
        }
        crate::WEIGHT_BYTES.fetch_add(
            (m * per_row * std::mem::size_of::<B>()) as u64,
            Ordering::Relaxed,
        );
    }
    Ok(())
}
