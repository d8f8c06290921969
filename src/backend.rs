//! The LLMK backend inside this process's statically linked llama.cpp, two
//! ways in, one code path (`llmkernel-backend`): registered in-process with
//! this process's own ggml functions, or the built `libllmkernel.so` loaded
//! exactly as a stock llama.cpp loads it (`ggml_backend_load`).

use crate::ffi;
use llmkernel_backend::Stats;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::Path;

extern "C" {
    // ggml-impl.h (not in the bindings): ggml's printf-like logger.
    fn ggml_log_internal(level: ffi::ggml_log_level, format: *const c_char, ...);
    // libgomp, which the vendored ggml-cpu uses (build.rs links it).
    fn GOMP_parallel(f: unsafe extern "C" fn(*mut c_void), data: *mut c_void, n: u32, flags: u32);
    fn omp_get_thread_num() -> c_int;
    fn omp_get_num_threads() -> c_int;
}

/// This process's OpenMP runtime, the one its ggml CPU backend runs on: the
/// team the LLMK backend's matmuls share with it (and `llmkernel bench`'s).
pub fn omp() -> llmkernel_backend::Omp {
    llmkernel_backend::Omp {
        parallel: GOMP_parallel,
        thread_num: omp_get_thread_num,
        num_threads: omp_get_num_threads,
    }
}

/// Registers the LLMK device with this process's ggml (once; later calls
/// return the same registry). Errors say why the backend may not run here.
pub fn register_in_process() -> Result<ffi::ggml_backend_reg_t, String> {
    crate::ggml::init();
    // Held for the whole registration: threads that register at once get one
    // registry, registered with ggml once.
    static REG: std::sync::Mutex<Option<usize>> = std::sync::Mutex::new(None);
    let mut done = REG.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = *done {
        return Ok(r as ffi::ggml_backend_reg_t);
    }
    llmkernel_backend::usable_isa()?;
    // SAFETY: the functions are this process's own ggml-base and libgomp
    // functions of those names, linked in.
    let reg = unsafe {
        llmkernel_backend::init(llmkernel_backend::Host {
            version: ffi::ggml_version,
            buffer_init: ffi::ggml_backend_buffer_init,
            graph_n_nodes: ffi::ggml_graph_n_nodes,
            graph_node: ffi::ggml_graph_node,
            nbytes: ffi::ggml_nbytes,
            buft_is_host: ffi::ggml_backend_buft_is_host,
            // The vendored ggml (backend API 3), linked in.
            exports: |name| name == "ggml_backend_buft_alloc_buffer_n",
            log: Some(ggml_log_internal),
            omp: Some(omp()),
            cpu: Some(llmkernel_backend::whole_graph::CpuHost {
                init_by_type: ffi::ggml_backend_init_by_type,
                get_device: ffi::ggml_backend_get_device,
                dev_backend_reg: ffi::ggml_backend_dev_backend_reg,
                reg_get_proc_address: ffi::ggml_backend_reg_get_proc_address,
                graph_compute: ffi::ggml_backend_graph_compute,
                free: ffi::ggml_backend_free,
                init: ffi::ggml_init,
                ctx_free: ffi::ggml_free,
                graph_overhead_custom: ffi::ggml_graph_overhead_custom,
                new_graph_custom: ffi::ggml_new_graph_custom,
                graph_add_node: ffi::ggml_graph_add_node,
            }),
        })
    };
    if reg.is_null() {
        return Err("the LLMK backend refused to register (see the log line above)".into());
    }
    // SAFETY: a valid registry that lives for the whole process.
    unsafe { ffi::ggml_backend_register(reg) };
    *done = Some(reg as usize);
    Ok(reg)
}

/// Loads a built `libllmkernel.so` through ggml's own loader, as llama.cpp
/// does for `GGML_BACKEND_PATH`. The plugin finds this process's ggml
/// functions because the executable exports them (build.rs links with
/// `--export-dynamic`).
pub fn load_plugin(path: &Path) -> Result<ffi::ggml_backend_reg_t, String> {
    crate::ggml::init();
    let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: a NUL-terminated path; ggml logs and returns null on failure.
    let reg = unsafe { ffi::ggml_backend_load(c.as_ptr()) };
    if reg.is_null() {
        Err(format!(
            "ggml could not load {} as a backend (see the log)",
            path.display()
        ))
    } else {
        Ok(reg)
    }
}

/// The LLMK device's counters, read through its registry's `get_proc_address`
/// (so they come from whichever copy of the backend the registry belongs to).
///
/// # Safety
/// `reg` must be a live ggml backend registry (as [`register_in_process`] and
/// [`load_plugin`] return).
pub unsafe fn stats(reg: ffi::ggml_backend_reg_t) -> Option<Stats> {
    // SAFETY: a live registry (the caller's contract); the name is NUL-terminated.
    let f = unsafe { ffi::ggml_backend_reg_get_proc_address(reg, c"llmkernel_get_stats".as_ptr()) };
    if f.is_null() {
        return None;
    }
    // SAFETY: the backend publishes this name with this signature.
    let f: llmkernel_backend::GetStatsFn = unsafe { std::mem::transmute(f) };
    let mut s = Stats::default();
    // SAFETY: writes one Stats.
    unsafe { f(&mut s) };
    Some(s)
}

/// The registered device named LLMK, if any.
pub fn device() -> Option<ffi::ggml_backend_dev_t> {
    // SAFETY: ggml's device list; names are NUL-terminated.
    unsafe {
        (0..ffi::ggml_backend_dev_count())
            .map(|i| ffi::ggml_backend_dev_get(i))
            .find(|&d| CStr::from_ptr(ffi::ggml_backend_dev_name(d)).to_bytes() == b"LLMK")
    }
}

/// Runs `f` (a model load) with the in-process LLMK device taking no weights,
/// so the model gets ggml's buffer types and kernels though LLMK is registered.
pub fn without_llmk<T>(f: impl FnOnce() -> T) -> T {
    llmkernel_backend::ops::set_accepting(false);
    let r = f();
    llmkernel_backend::ops::set_accepting(true);
    r
}
