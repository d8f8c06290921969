//! Whole graphs: the ops LLMK does not take, run on the host's CPU backend
//! from inside LLMK's `graph_compute`.
//!
//! In a llama.cpp process the scheduler hands LLMK only the ops it accepted
//! (`supports_op`), so this path stays idle. llama.cpp's RPC worker
//! (`rpc-server -d LLMK`) is different: its client's RPC device says it
//! supports every op and the worker computes each graph it receives on one
//! device, whole. Run as such a worker, LLMK computes the matmuls it takes and
//! hands every maximal run of other nodes, as a graph of its own, to a CPU
//! backend it starts with the host's registry. Every tensor is in host memory
//! (LLMK's buffers are host buffers), so the CPU backend reads and writes them
//! in place.

use crate::ffi;
use std::ffi::{c_char, c_int, c_void};

/// The host's functions this needs: ggml-base's graph building and backend
/// calls, and the registry's `ggml_backend_init_by_type` (libggml).
#[derive(Clone, Copy)]
pub struct CpuHost {
    pub init_by_type:
        unsafe extern "C" fn(ffi::ggml_backend_dev_type, *const c_char) -> ffi::ggml_backend_t,
    pub get_device: unsafe extern "C" fn(ffi::ggml_backend_t) -> ffi::ggml_backend_dev_t,
    pub dev_backend_reg: unsafe extern "C" fn(ffi::ggml_backend_dev_t) -> ffi::ggml_backend_reg_t,
    pub reg_get_proc_address:
        unsafe extern "C" fn(ffi::ggml_backend_reg_t, *const c_char) -> *mut c_void,
    pub graph_compute:
        unsafe extern "C" fn(ffi::ggml_backend_t, *mut ffi::ggml_cgraph) -> ffi::ggml_status,
    pub free: unsafe extern "C" fn(ffi::ggml_backend_t),
    pub init: unsafe extern "C" fn(ffi::ggml_init_params) -> *mut ffi::ggml_context,
    pub ctx_free: unsafe extern "C" fn(*mut ffi::ggml_context),
    pub graph_overhead_custom: unsafe extern "C" fn(usize, bool) -> usize,
    pub new_graph_custom:
        unsafe extern "C" fn(*mut ffi::ggml_context, usize, bool) -> *mut ffi::ggml_cgraph,
    pub graph_add_node: unsafe extern "C" fn(*mut ffi::ggml_cgraph, *mut ffi::ggml_tensor),
}

/// The symbol names of [`CpuHost`]'s functions, in its order.
pub const CPU_HOST_SYMBOLS: [&str; 11] = [
    "ggml_backend_init_by_type",
    "ggml_backend_get_device",
    "ggml_backend_dev_backend_reg",
    "ggml_backend_reg_get_proc_address",
    "ggml_backend_graph_compute",
    "ggml_backend_free",
    "ggml_init",
    "ggml_free",
    "ggml_graph_overhead_custom",
    "ggml_new_graph_custom",
    "ggml_graph_add_node",
];

/// A CPU backend of the host's, started on first use, freed with its owner.
pub(crate) struct Cpu {
    backend: ffi::ggml_backend_t,
    set_threads: Option<unsafe extern "C" fn(ffi::ggml_backend_t, c_int)>,
    threads: usize,
}

// SAFETY: the backend is used by one graph_compute at a time (ggml does not
// run one backend on two threads at once); the pointer is only moved.
unsafe impl Send for Cpu {}

impl Cpu {
    /// Starts the host's CPU backend, or says why it cannot.
    pub(crate) fn start() -> Result<Cpu, String> {
        let h = cpu_host()?;
        // SAFETY: the host's registry function; null params are its default.
        let backend =
            unsafe { (h.init_by_type)(ffi::GGML_BACKEND_DEVICE_TYPE_CPU, std::ptr::null()) };
        if backend.is_null() {
            return Err("the host has no CPU backend to run the ops LLMK does not take".into());
        }
        // SAFETY: a live backend; its device and registry live as long.
        let set_threads = unsafe {
            let reg = (h.dev_backend_reg)((h.get_device)(backend));
            let f = (h.reg_get_proc_address)(reg, c"ggml_backend_set_n_threads".as_ptr());
            // SAFETY: ggml's documented signature of that entry point.
            (!f.is_null()).then(|| {
                std::mem::transmute::<*mut c_void, unsafe extern "C" fn(ffi::ggml_backend_t, c_int)>(
                    f,
                )
            })
        };
        Ok(Cpu {
            backend,
            set_threads,
            threads: 0,
        })
    }

    /// Computes `nodes` (consecutive nodes of one graph, none of them LLMK's)
    /// on the CPU backend with `threads` threads.
    ///
    /// # Safety
    /// Every node is a live tensor of a live graph, its sources computed and
    /// its data allocated in host memory.
    pub(crate) unsafe fn compute(
        &mut self,
        nodes: &[*mut ffi::ggml_tensor],
        threads: usize,
    ) -> Result<(), String> {
        let h = cpu_host()?;
        if threads != self.threads {
            if let Some(f) = self.set_threads {
                // SAFETY: our live CPU backend.
                unsafe { f(self.backend, threads.min(c_int::MAX as usize) as c_int) };
            }
            self.threads = threads;
        }
        // A no_alloc context holding just the graph's node list.
        // SAFETY: plain size arithmetic in ggml.
        let size = unsafe { (h.graph_overhead_custom)(nodes.len(), false) } + 1024;
        let mut mem = vec![0u8; size];
        let params = ffi::ggml_init_params {
            mem_size: size,
            mem_buffer: mem.as_mut_ptr().cast(),
            no_alloc: true,
        };
        // SAFETY: `mem` outlives the context, freed below.
        let ctx = unsafe { (h.init)(params) };
        if ctx.is_null() {
            return Err("ggml_init failed for a CPU graph".into());
        }
        // SAFETY: the context has room for a graph of nodes.len() nodes; the
        // nodes are live (forwarded contract); ctx is freed once.
        let status = unsafe {
            let graph = (h.new_graph_custom)(ctx, nodes.len(), false);
            for &n in nodes {
                (h.graph_add_node)(graph, n);
            }
            let status = (h.graph_compute)(self.backend, graph);
            (h.ctx_free)(ctx);
            status
        };
        drop(mem);
        if status == ffi::GGML_STATUS_SUCCESS {
            Ok(())
        } else {
            Err(format!("the host's CPU backend failed (status {status})"))
        }
    }
}

impl Drop for Cpu {
    fn drop(&mut self) {
        if let Ok(h) = cpu_host() {
            // SAFETY: started by start(), freed once.
            unsafe { (h.free)(self.backend) };
        }
    }
}

fn cpu_host() -> Result<&'static CpuHost, String> {
    crate::host().cpu.as_ref().ok_or_else(|| {
        format!(
            "the host process lacks one of {CPU_HOST_SYMBOLS:?}: LLMK cannot run a whole graph \
             (as an RPC worker), only the matmuls llama.cpp's scheduler hands it"
        )
    })
}
