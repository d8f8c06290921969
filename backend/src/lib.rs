//! llmkernel's kernels as a ggml backend: one ACCEL device named `LLMK`, its
//! buffer type, and a backend that computes MUL_MAT and MUL_MAT_ID for weights
//! in any weight format of `llmkernel_kernels::Format::WEIGHTS` (the k-quants
//! Q2_K..Q6_K, Q4_0, Q5_0, Q8_0, IQ4_NL, IQ4_XS) with F32 activations. Every
//! other op stays on the host's CPU backend.
//!
//! The same code is reached two ways: `libllmkernel.so` (the `plugin/` crate)
//! hands [`init`] the host's ggml-base functions found with `dlsym` in the
//! process that loaded it, and the `llmkernel` CLI hands it the functions of
//! the ggml it links statically. Either way this crate calls ggml only through
//! [`Host`]: it contains no ggml and links none. It reads ggml's structures
//! (tensors, the backend interface tables) by their layout in the vendored
//! headers, which is why [`init`] refuses a host whose ggml version differs
//! from [`BUILT_GGML_VERSION`] in major or minor.
//!
//! Weights keep the GGUF layout: the buffer type is a host buffer, so the
//! loader may map the model file straight into it (`buffer_from_host_ptr`) and
//! the CPU backend can still read any tensor placed there.

pub mod buffer;
pub mod ops;
pub(crate) mod sparse;
pub mod team;
pub mod whole_graph;

/// Raw bindings of the vendored llama.cpp headers (ggml, gguf, llama and
/// the backend interface): the one copy of the C types, which the root crate
/// re-exports (its build checks it equals what bindgen makes of the vendored
/// headers; `scripts/update-bindings.sh` regenerates it). This crate uses only
/// the types and constants; its calls into ggml go through [`Host`].
#[allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    dead_code,
    clippy::all
)]
pub mod ffi {
    include!("ffi/bindings.rs");
}

use llmkernel_kernels::table::Isa;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The ggml version this backend was built against (vendor/llama.cpp/VENDORED.md).
pub const BUILT_GGML_VERSION: &str = "0.26.0";
/// The vendored upstream commit.
pub const BUILT_UPSTREAM_COMMIT: &str = "b11434";
/// The device's and the registry's name.
pub const NAME: &CStr = c"LLMK";

/// The llmkernel commit this was built from (`-dirty` when built with local
/// changes; `unknown` outside a git checkout): see build.rs.
pub const BUILD_COMMIT: &str = env!("LLMKERNEL_BUILD_COMMIT");

/// `ggml_log_internal(level, format, ...)`.
pub type LogFn = unsafe extern "C" fn(ffi::ggml_log_level, *const c_char, ...);

/// The ggml-base functions the backend calls, taken from the host process.
#[derive(Clone, Copy)]
pub struct Host {
    pub version: unsafe extern "C" fn() -> *const c_char,
    pub buffer_init: unsafe extern "C" fn(
        ffi::ggml_backend_buffer_type_t,
        ffi::ggml_backend_buffer_i,
        *mut c_void,
        usize,
    ) -> ffi::ggml_backend_buffer_t,
    pub graph_n_nodes: unsafe extern "C" fn(*mut ffi::ggml_cgraph) -> c_int,
    pub graph_node: unsafe extern "C" fn(*mut ffi::ggml_cgraph, c_int) -> *mut ffi::ggml_tensor,
    pub nbytes: unsafe extern "C" fn(*const ffi::ggml_tensor) -> usize,
    /// `ggml_backend_buft_is_host`: the host's own reading of a buffer type
    /// (whose interface layout depends on the host's API version).
    pub buft_is_host: unsafe extern "C" fn(ffi::ggml_backend_buffer_type_t) -> bool,
    /// Whether the host process exports a function of this name (how
    /// [`HostApi::of`] tells the backend API a host implements).
    pub exports: fn(&str) -> bool,
    /// Optional: without it, messages go to stderr.
    pub log: Option<LogFn>,
    /// The host's OpenMP runtime, when its CPU backend uses one (optional).
    pub omp: Option<Omp>,
    /// The host's CPU backend and graph functions, to run whole graphs as an
    /// RPC worker (optional: without them LLMK runs only what the scheduler
    /// hands it, which is all a llama.cpp process does).
    pub cpu: Option<whole_graph::CpuHost>,
}

/// libgomp's entry points, to run the backend's parallel work on the OpenMP
/// team that llama.cpp's CPU backend uses. Between the CPU backend's graph
/// splits that team's threads spin for a while; threads of our own would
/// fight them for the cores (on 2 cores, 2 + 1 spinning threads), so running
/// on the same team is what keeps the two backends from oversubscribing.
#[derive(Clone, Copy)]
pub struct Omp {
    /// `void GOMP_parallel(void (*fn)(void *), void *data, unsigned num_threads, unsigned flags)`
    pub parallel: unsafe extern "C" fn(unsafe extern "C" fn(*mut c_void), *mut c_void, u32, u32),
    pub thread_num: unsafe extern "C" fn() -> c_int,
    pub num_threads: unsafe extern "C" fn() -> c_int,
}

/// The symbol names of [`Omp`]'s functions.
pub const OMP_SYMBOLS: [&str; 3] = ["GOMP_parallel", "omp_get_thread_num", "omp_get_num_threads"];

/// The symbol names of [`Host`]'s functions, for a loader that looks them up.
pub const HOST_SYMBOLS: [&str; 7] = [
    "ggml_version",
    "ggml_backend_buffer_init",
    "ggml_graph_n_nodes",
    "ggml_graph_node",
    "ggml_nbytes",
    "ggml_backend_buft_is_host",
    "ggml_log_internal",
];

static HOST: OnceLock<Host> = OnceLock::new();
static LOGGER: OnceLock<Option<LogFn>> = OnceLock::new();

pub(crate) fn host() -> &'static Host {
    HOST.get()
        .expect("the backend is used only after init() succeeded")
}

/// Logs one line through the host's ggml logger (so llama.cpp's log settings
/// apply), or to stderr before a host is known.
pub fn log(level: ffi::ggml_log_level, msg: &str) {
    let line = CString::new(format!("llmkernel: {msg}\n").replace('\0', " ")).unwrap();
    match LOGGER.get().copied().flatten() {
        // SAFETY: ggml_log_internal is printf-like; "%s" with a NUL-terminated string.
        Some(f) => unsafe { f(level, c"%s".as_ptr(), line.as_ptr()) },
        None => eprint!("{}", line.to_string_lossy()),
    }
}

/// Sets where [`log`] goes before [`init`] (the plugin's score function logs too).
pub fn set_logger(f: Option<LogFn>) {
    let _ = LOGGER.set(f);
}

/// The layouts of ggml's backend interface this backend presents: the
/// `GGML_BACKEND_API_VERSION` a host checks in a registry. They differ only in
/// the buffer-type interface (API 3 adds the optional `alloc_buffer_n` and
/// `get_alloc_size_n`, see [`buffer::BufferTypeV2`]); `ggml_tensor`, the op
/// and type numbers and every other interface are the same in both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostApi {
    /// ggml 0.25.x (e.g. llama.cpp 0c1e570, the previously vendored copy).
    V2,
    /// ggml 0.26.x, the vendored one.
    V3,
}

impl HostApi {
    /// The API of a host with ggml `version` that exports the functions
    /// `exports` names. The version alone is not enough (hosts built from
    /// commits between releases carry a version their headers no longer
    /// match), so each API is also recognised by a function only it has:
    /// API 2 exports `ggml_backend_meta_alloc_ctx_tensors_from_buft` (removed
    /// by API 3), API 3 `ggml_backend_buft_alloc_buffer_n` (added by it).
    /// Anything else is a host whose layout this backend does not know.
    pub fn of(version: &str, exports: impl Fn(&str) -> bool) -> Result<HostApi, String> {
        let major_minor = |v: &str| -> Option<(u32, u32)> {
            let mut it = v.trim().split('.');
            Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
        };
        let (v2_marker, v3_marker) = (
            exports("ggml_backend_meta_alloc_ctx_tensors_from_buft"),
            exports("ggml_backend_buft_alloc_buffer_n"),
        );
        match (major_minor(version), v2_marker, v3_marker) {
            (Some((0, 25)), true, false) => Ok(HostApi::V2),
            (Some((0, 26)), false, true) => Ok(HostApi::V3),
            _ => Err(format!(
                "host ggml {version} (backend API {}) is not one this plugin knows \
                 (ggml 0.25.x with backend API 2, ggml 0.26.x with API 3): not registering; \
                 every op stays on llama.cpp's own backends",
                match (v2_marker, v3_marker) {
                    (true, false) => "2",
                    (false, true) => "3",
                    _ => "unknown",
                }
            )),
        }
    }

    /// The `api_version` a registry for this host carries.
    pub fn number(self) -> c_int {
        match self {
            HostApi::V2 => 2,
            HostApi::V3 => 3,
        }
    }
}

/// The ISA the kernels would run on, or why the backend should not run:
/// `LLMKERNEL_ISA` unknown, or it (or this CPU) leaves only the scalar
/// reference, which is slower than ggml's own kernels.
pub fn usable_isa() -> Result<Isa, String> {
    let isa = Isa::ceiling().map_err(|e| e.to_string())?;
    let best = Isa::ALL
        .into_iter()
        .rfind(|i| i.admitted_under(isa))
        .unwrap_or(Isa::Scalar);
    if best == Isa::Scalar {
        Err(format!(
            "no SIMD kernels usable here (ISA ceiling {isa}): not registering; every op stays on llama.cpp's CPU backend"
        ))
    } else {
        Ok(best)
    }
}

/// `ggml_backend_score`: 0 when the backend should not run on this machine.
pub fn score() -> c_int {
    match usable_isa() {
        Ok(isa) => 10 + isa as c_int,
        Err(e) => {
            log(ffi::GGML_LOG_LEVEL_WARN, &e);
            0
        }
    }
}

/// Counters a test reads to know the backend computed (not a silent fallback).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// MUL_MAT nodes computed.
    pub mul_mat: u64,
    /// MUL_MAT_ID nodes computed.
    pub mul_mat_id: u64,
    /// Weight bytes multiplied (each weight matrix once per node).
    pub weight_bytes: u64,
    /// Nodes that failed (bad shape or data found at compute time).
    pub failed: u64,
    /// MUL_MAT nodes computed with 2:4 sparse weights.
    pub sparse_mul_mat: u64,
    /// Weights found 2:4 and packed (cumulative).
    pub sparse_packed: u64,
    /// Weights held packed now, and their bytes.
    pub sparse_tensors: u64,
    pub sparse_bytes: u64,
    /// Nodes of whole graphs (an RPC worker's) run on the host's CPU backend.
    pub cpu_nodes: u64,
}

pub(crate) static MUL_MAT: AtomicU64 = AtomicU64::new(0);
pub(crate) static MUL_MAT_ID: AtomicU64 = AtomicU64::new(0);
pub(crate) static WEIGHT_BYTES: AtomicU64 = AtomicU64::new(0);
pub(crate) static FAILED: AtomicU64 = AtomicU64::new(0);
pub(crate) static SPARSE_MUL_MAT: AtomicU64 = AtomicU64::new(0);
pub(crate) static SPARSE_PACKED: AtomicU64 = AtomicU64::new(0);
pub(crate) static SPARSE_TENSORS: AtomicU64 = AtomicU64::new(0);
pub(crate) static SPARSE_BYTES: AtomicU64 = AtomicU64::new(0);
pub(crate) static CPU_NODES: AtomicU64 = AtomicU64::new(0);

/// The counters so far (also reachable from C: `get_proc_address("llmkernel_get_stats")`).
pub fn stats() -> Stats {
    Stats {
        mul_mat: MUL_MAT.load(Ordering::Relaxed),
        mul_mat_id: MUL_MAT_ID.load(Ordering::Relaxed),
        weight_bytes: WEIGHT_BYTES.load(Ordering::Relaxed),
        failed: FAILED.load(Ordering::Relaxed),
        sparse_mul_mat: SPARSE_MUL_MAT.load(Ordering::Relaxed),
        sparse_packed: SPARSE_PACKED.load(Ordering::Relaxed),
        sparse_tensors: SPARSE_TENSORS.load(Ordering::Relaxed),
        sparse_bytes: SPARSE_BYTES.load(Ordering::Relaxed),
        cpu_nodes: CPU_NODES.load(Ordering::Relaxed),
    }
}

impl Stats {
    /// One JSON line of the counters.
    pub fn json(&self) -> String {
        format!(
            "{{\"mul_mat\":{},\"mul_mat_id\":{},\"weight_bytes\":{},\"failed\":{},\
             \"sparse_mul_mat\":{},\"sparse_packed\":{},\"sparse_tensors\":{},\
             \"sparse_bytes\":{},\"cpu_nodes\":{}}}",
            self.mul_mat,
            self.mul_mat_id,
            self.weight_bytes,
            self.failed,
            self.sparse_mul_mat,
            self.sparse_packed,
            self.sparse_tensors,
            self.sparse_bytes,
            self.cpu_nodes
        )
    }
}

impl Stats {
    /// The counts from `start` to `self`; the gauges (packed weights held now) as in `self`.
    pub fn since(&self, start: &Stats) -> Stats {
        Stats {
            mul_mat: self.mul_mat - start.mul_mat,
            mul_mat_id: self.mul_mat_id - start.mul_mat_id,
            weight_bytes: self.weight_bytes - start.weight_bytes,
            failed: self.failed - start.failed,
            sparse_mul_mat: self.sparse_mul_mat - start.sparse_mul_mat,
            sparse_packed: self.sparse_packed - start.sparse_packed,
            cpu_nodes: self.cpu_nodes - start.cpu_nodes,
            ..*self
        }
    }

    /// `self` with the counts of `more` added; the gauges as in `more`.
    pub fn plus(&self, more: &Stats) -> Stats {
        Stats {
            mul_mat: self.mul_mat + more.mul_mat,
            mul_mat_id: self.mul_mat_id + more.mul_mat_id,
            weight_bytes: self.weight_bytes + more.weight_bytes,
            failed: self.failed + more.failed,
            sparse_mul_mat: self.sparse_mul_mat + more.sparse_mul_mat,
            sparse_packed: self.sparse_packed + more.sparse_packed,
            cpu_nodes: self.cpu_nodes + more.cpu_nodes,
            ..*more
        }
    }

    /// The one-line summary of a run (what [`summary`] prints).
    pub fn summary(&self) -> String {
        let mut s = format!(
            "LLMK computed {} MUL_MAT and {} MUL_MAT_ID nodes ({:.2} GB of weights read), {} failed",
            self.mul_mat,
            self.mul_mat_id,
            self.weight_bytes as f64 / 1e9,
            self.failed
        );
        if self.sparse_mul_mat > 0 {
            s += &format!(", {} on 2:4 sparse weights", self.sparse_mul_mat);
        }
        if self.cpu_nodes > 0 {
            s += &format!(
                ", {} nodes of whole graphs on the CPU backend",
                self.cpu_nodes
            );
        }
        s + &format!(" (llmkernel {BUILD_COMMIT}, {} kernels)", isa())
    }
}

/// Whether a run's summary goes to stderr (`LLMKERNEL_STATS=1`, or `-v` of
/// the llmkernel command line); otherwise it is logged at INFO level, which
/// llama.cpp's tools show when verbose.
fn stats_to_stderr() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("LLMKERNEL_STATS").is_ok_and(|v| v == "1"))
}

/// Reports what one backend computed (called when it is freed: one line per
/// llama.cpp context).
pub(crate) fn summary(own: &Stats) {
    let line = Stats {
        sparse_tensors: SPARSE_TENSORS.load(Ordering::Relaxed),
        sparse_bytes: SPARSE_BYTES.load(Ordering::Relaxed),
        ..*own
    }
    .summary();
    if stats_to_stderr() {
        eprintln!("llmkernel: {line}");
    } else {
        log(ffi::GGML_LOG_LEVEL_INFO, &line);
    }
}

/// With `LLMKERNEL_STATS_FILE=<path>`, the counters as one JSON line,
/// rewritten after every graph: how to see what a process that never exits
/// (an RPC worker) has computed.
pub(crate) fn write_stats_file() {
    static PATH: OnceLock<Option<std::path::PathBuf>> = OnceLock::new();
    if let Some(p) = PATH.get_or_init(|| std::env::var_os("LLMKERNEL_STATS_FILE").map(Into::into)) {
        let tmp = p.with_extension("tmp");
        if std::fs::write(&tmp, stats().json() + "\n").is_ok() {
            let _ = std::fs::rename(&tmp, p);
        }
    }
}

/// `void llmkernel_get_stats(struct Stats *)`.
pub type GetStatsFn = unsafe extern "C" fn(*mut Stats);
unsafe extern "C" fn get_stats(out: *mut Stats) {
    if !out.is_null() {
        // SAFETY: the caller passes a valid Stats to write.
        unsafe { *out = stats() };
    }
}

/// `void ggml_backend_set_n_threads(ggml_backend_t, int)`, as the CPU backend's.
unsafe extern "C" fn set_n_threads(backend: ffi::ggml_backend_t, n: c_int) {
    // SAFETY: ggml passes a live backend.
    if let Some(ctx) = unsafe { ops::context(backend) } {
        ctx.set_threads(n.max(1) as usize);
    }
}

/// The registry, device and buffer type, made once and never freed (ggml keeps
/// pointers to them for the life of the process).
struct Objects {
    reg: ffi::ggml_backend_reg,
    dev: ffi::ggml_backend_device,
    /// The buffer type as API 3 hosts lay it out (the vendored headers), and
    /// as API 2 hosts do.
    buft: ffi::ggml_backend_buffer_type,
    buft2: buffer::BufferTypeV2,
    api: HostApi,
    description: CString,
    isa: Isa,
}
struct Shared(*mut Objects);
// SAFETY: the objects are written once in init() and only read afterwards.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}
static OBJECTS: OnceLock<Shared> = OnceLock::new();

fn objects() -> &'static Objects {
    // SAFETY: set once in init() to a leaked Box, never freed.
    unsafe { &*OBJECTS.get().expect("init() ran").0 }
}

/// Our buffer type, in the layout of the host's API (a handle to us: this
/// crate never reads it through the pointer's type).
pub(crate) fn our_buft() -> ffi::ggml_backend_buffer_type_t {
    let o = objects();
    match o.api {
        HostApi::V2 => &o.buft2 as *const _ as *mut _,
        HostApi::V3 => &o.buft as *const _ as *mut _,
    }
}
pub(crate) fn our_dev() -> ffi::ggml_backend_dev_t {
    &objects().dev as *const _ as *mut _
}
pub(crate) fn isa() -> Isa {
    objects().isa
}

/// Checks the host and the CPU and returns the registry to hand to ggml, or
/// null (after one log line saying why) when the backend must not be used.
/// Idempotent: later calls return the same registry.
///
/// # Safety
/// Every function in `h` (and in `h.omp`) is the host process's function of
/// the name in [`HOST_SYMBOLS`] / [`OMP_SYMBOLS`], with that signature, and
/// stays loaded for the life of the process.
pub unsafe fn init(h: Host) -> ffi::ggml_backend_reg_t {
    set_logger(h.log);
    // One init at a time: two threads loading backends at once must get the
    // same registry, not two, of which only one is the device ops check for.
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _once = INIT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(o) = OBJECTS.get() {
        // SAFETY: see objects().
        return unsafe { &mut (*o.0).reg };
    }
    // SAFETY: ggml_version returns a static NUL-terminated string.
    let version = unsafe { CStr::from_ptr((h.version)()) }
        .to_string_lossy()
        .into_owned();
    let api = match HostApi::of(&version, h.exports) {
        Ok(api) => api,
        Err(e) => {
            log(ffi::GGML_LOG_LEVEL_ERROR, &e);
            return std::ptr::null_mut();
        }
    };
    let isa = match usable_isa() {
        Ok(isa) => isa,
        Err(e) => {
            log(ffi::GGML_LOG_LEVEL_WARN, &e);
            return std::ptr::null_mut();
        }
    };
    let _ = HOST.set(h);
    let o = Box::leak(Box::new(Objects {
        reg: ffi::ggml_backend_reg {
            api_version: api.number(),
            iface: ffi::ggml_backend_reg_i {
                get_name: Some(reg_get_name),
                get_device_count: Some(reg_get_device_count),
                get_device: Some(reg_get_device),
                get_proc_address: Some(reg_get_proc_address),
            },
            context: std::ptr::null_mut(),
        },
        dev: ops::device(),
        buft: buffer::buffer_type(),
        buft2: buffer::BufferTypeV2::new(),
        api,
        description: CString::new(format!(
            "llmkernel {} kernels ({isa}) for {}",
            env!("CARGO_PKG_VERSION"),
            llmkernel_kernels::Format::WEIGHTS
                .map(|f| f.name().to_uppercase())
                .join(" ")
        ))
        .unwrap(),
        isa,
    }));
    o.dev.reg = &mut o.reg;
    o.buft.device = &mut o.dev;
    o.buft2.device = &mut o.dev;
    let ptr: *mut Objects = o;
    let _ = OBJECTS.set(Shared(ptr));
    log(
        ffi::GGML_LOG_LEVEL_INFO,
        &format!(
            "device LLMK registered, {isa} kernels, host ggml {version} (backend API {})",
            api.number()
        ),
    );
    // SAFETY: just leaked, lives forever.
    unsafe { &mut (*ptr).reg }
}

unsafe extern "C" fn reg_get_name(_: ffi::ggml_backend_reg_t) -> *const c_char {
    NAME.as_ptr()
}
unsafe extern "C" fn reg_get_device_count(_: ffi::ggml_backend_reg_t) -> usize {
    1
}
unsafe extern "C" fn reg_get_device(
    _: ffi::ggml_backend_reg_t,
    i: usize,
) -> ffi::ggml_backend_dev_t {
    if i == 0 {
        our_dev()
    } else {
        std::ptr::null_mut()
    }
}
unsafe extern "C" fn reg_get_proc_address(
    _: ffi::ggml_backend_reg_t,
    name: *const c_char,
) -> *mut c_void {
    if name.is_null() {
        return std::ptr::null_mut();
    }
    // SAFETY: ggml passes a NUL-terminated name.
    match unsafe { CStr::from_ptr(name) }.to_bytes() {
        b"ggml_backend_set_n_threads" => set_n_threads as *mut c_void,
        b"llmkernel_get_stats" => get_stats as *mut c_void,
        _ => std::ptr::null_mut(),
    }
}

pub(crate) fn description() -> *const c_char {
    objects().description.as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the backend registers with agrees with what the table runs: the
    /// level the backend registers admits every row the table picks (a format
    /// may have no row at the top level, e.g. no i8mm Q4_K kernel, and then
    /// runs the level below), and a ceiling of the other architecture's
    /// family admits only scalar code, so no registration.
    #[test]
    fn usable_isa_is_the_tables_choice() {
        use llmkernel_kernels::formats::{self, Format};
        use llmkernel_kernels::table::Config;
        struct RowIsa;
        impl formats::WithFormat for RowIsa {
            type Out = Isa;
            fn run<B: llmkernel_kernels::table::Kernels>(self) -> Isa {
                Config::<B>::best().unwrap().row().isa()
            }
        }
        let usable = usable_isa();
        for f in Format::WITH_KERNELS {
            let table = f.with(RowIsa).unwrap();
            match &usable {
                Ok(isa) => assert!(
                    table.admitted_under(*isa) && table != Isa::Scalar,
                    "{f:?}: {table} under {isa}"
                ),
                Err(_) => assert_eq!(table, Isa::Scalar, "{f:?}"),
            }
        }
    }

    #[test]
    fn host_apis() {
        let v2 = |s: &str| s == "ggml_backend_meta_alloc_ctx_tensors_from_buft";
        let v3 = |s: &str| s == "ggml_backend_buft_alloc_buffer_n";
        assert_eq!(HostApi::of("0.25.3", v2), Ok(HostApi::V2));
        assert_eq!(HostApi::of("0.25.9", v2), Ok(HostApi::V2));
        assert_eq!(HostApi::of("0.26.0", v3), Ok(HostApi::V3));
        // The version and the exported functions must agree.
        let e = HostApi::of("0.26.0", v2).unwrap_err();
        assert!(
            e.contains("host ggml 0.26.0 (backend API 2) is not one this plugin knows"),
            "{e}"
        );
        assert!(HostApi::of("0.25.3", v3).is_err());
        assert!(HostApi::of("0.25.3", |_| true).is_err());
        assert!(HostApi::of("0.25.3", |_| false).is_err());
        assert!(HostApi::of("0.27.0", v3).is_err());
        assert!(HostApi::of("1.25.3", v2).is_err());
        assert!(HostApi::of("garbage", v2).is_err());
        assert!(HostApi::of("", v2).is_err());
    }

    /// A host whose ggml this backend does not know gets no registry (and
    /// none of the other host functions is ever called).
    #[test]
    fn init_refuses_another_ggml() {
        unsafe extern "C" fn version() -> *const c_char {
            c"0.27.1".as_ptr()
        }
        unsafe extern "C" fn buft_is_host(_: ffi::ggml_backend_buffer_type_t) -> bool {
            panic!("called")
        }
        unsafe extern "C" fn buffer_init(
            _: ffi::ggml_backend_buffer_type_t,
            _: ffi::ggml_backend_buffer_i,
            _: *mut c_void,
            _: usize,
        ) -> ffi::ggml_backend_buffer_t {
            panic!("called")
        }
        unsafe extern "C" fn n_nodes(_: *mut ffi::ggml_cgraph) -> c_int {
            panic!("called")
        }
        unsafe extern "C" fn node(_: *mut ffi::ggml_cgraph, _: c_int) -> *mut ffi::ggml_tensor {
            panic!("called")
        }
        unsafe extern "C" fn nbytes(_: *const ffi::ggml_tensor) -> usize {
            panic!("called")
        }
        // SAFETY: stand-ins with the functions' signatures; only `version` is
        // called (the others panic, which the test would report).
        let reg = unsafe {
            init(Host {
                version,
                buffer_init,
                graph_n_nodes: n_nodes,
                graph_node: node,
                nbytes,
                buft_is_host,
                exports: |s| s == "ggml_backend_buft_alloc_buffer_n",
                log: None,
                omp: None,
                cpu: None,
            })
        };
        assert!(reg.is_null());
        assert!(OBJECTS.get().is_none());
    }
}
