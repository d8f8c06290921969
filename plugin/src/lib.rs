//! `libllmkernel.so`: the llmkernel ggml backend as a library a stock llama.cpp
//! loads (`GGML_BACKEND_PATH=/path/libllmkernel.so`), the way it loads its own
//! `GGML_BACKEND_DL` backends: it exports `ggml_backend_init` and
//! `ggml_backend_score` (see `GGML_BACKEND_DL_IMPL` in the vendored
//! `ggml-backend-impl.h`).
//!
//! It carries no copy of ggml. The few ggml-base functions the backend calls
//! are looked up in the process that loaded it (libggml-base.so, or an
//! executable that exports them); a host without them gets one log line and no
//! LLMK device, never a crash.

use llmkernel_backend::{ffi, Host, LogFn, HOST_SYMBOLS};
use std::ffi::c_int;
use std::sync::OnceLock;

/// The host's functions, looked up once in the loading process.
fn host() -> &'static Result<Host, String> {
    static HOST: OnceLock<Result<Host, String>> = OnceLock::new();
    HOST.get_or_init(|| {
        let this = libloading::os::unix::Library::this();
        // SAFETY (each lookup): the types are the vendored headers' signatures of
        // these ggml-base functions, the same in every host HostApi::of (in
        // init) accepts; ggml_version's has not changed since ggml 0.9.
        let log = unsafe { this.get::<LogFn>(b"ggml_log_internal\0") }
            .ok()
            .map(|s| *s);
        llmkernel_backend::set_logger(log);
        macro_rules! sym {
            ($name:literal) => {
                *unsafe { this.get(concat!($name, "\0").as_bytes()) }.map_err(|_| {
                    format!(
                        "the host process has no ggml-base function {} (of {HOST_SYMBOLS:?}): \
                         not registering",
                        $name
                    )
                })?
            };
        }
        Ok(Host {
            version: sym!("ggml_version"),
            buffer_init: sym!("ggml_backend_buffer_init"),
            graph_n_nodes: sym!("ggml_graph_n_nodes"),
            graph_node: sym!("ggml_graph_node"),
            nbytes: sym!("ggml_nbytes"),
            buft_is_host: sym!("ggml_backend_buft_is_host"),
            exports,
            log,
            cpu: cpu_host(&this),
            // SAFETY: libgomp's documented ABI, unchanged since GCC 4.9.
            omp: unsafe {
                match (
                    this.get(b"GOMP_parallel\0"),
                    this.get(b"omp_get_thread_num\0"),
                    this.get(b"omp_get_num_threads\0"),
                ) {
                    (Ok(p), Ok(t), Ok(n)) => Some(llmkernel_backend::Omp {
                        parallel: *p,
                        thread_num: *t,
                        num_threads: *n,
                    }),
                    _ => None,
                }
            },
        })
    })
}

/// The host's CPU-backend and graph functions, when it has all of them
/// (`ggml_backend_init_by_type` is libggml's, which some hosts load privately).
fn cpu_host(
    this: &libloading::os::unix::Library,
) -> Option<llmkernel_backend::whole_graph::CpuHost> {
    macro_rules! sym {
        ($name:literal) => {
            // SAFETY: the vendored headers' signature of this ggml function,
            // the same in ggml 0.25 and 0.26.
            *unsafe { this.get(concat!($name, "\0").as_bytes()) }.ok()?
        };
    }
    Some(llmkernel_backend::whole_graph::CpuHost {
        init_by_type: sym!("ggml_backend_init_by_type"),
        get_device: sym!("ggml_backend_get_device"),
        dev_backend_reg: sym!("ggml_backend_dev_backend_reg"),
        reg_get_proc_address: sym!("ggml_backend_reg_get_proc_address"),
        graph_compute: sym!("ggml_backend_graph_compute"),
        free: sym!("ggml_backend_free"),
        init: sym!("ggml_init"),
        ctx_free: sym!("ggml_free"),
        graph_overhead_custom: sym!("ggml_graph_overhead_custom"),
        new_graph_custom: sym!("ggml_new_graph_custom"),
        graph_add_node: sym!("ggml_graph_add_node"),
    })
}

/// Whether the loading process exports a function named `name`.
fn exports(name: &str) -> bool {
    let Ok(name) = std::ffi::CString::new(name) else {
        return false;
    };
    let this = libloading::os::unix::Library::this();
    // SAFETY: only the symbol's presence is asked; nothing is called.
    unsafe { this.get::<*const std::ffi::c_void>(name.as_bytes_with_nul()) }.is_ok()
}

/// Called by ggml's loader after `ggml_backend_score`; null means "no device".
#[no_mangle]
pub extern "C" fn ggml_backend_init() -> ffi::ggml_backend_reg_t {
    std::panic::catch_unwind(|| match host() {
        // SAFETY: host() looked each function up by its name in this process
        // (the loaded libraries stay for the process's life).
        Ok(h) => unsafe { llmkernel_backend::init(*h) },
        Err(e) => {
            llmkernel_backend::log(ffi::GGML_LOG_LEVEL_ERROR, e);
            std::ptr::null_mut()
        }
    })
    .unwrap_or(std::ptr::null_mut())
}

/// 0 when this CPU (or `LLMKERNEL_ISA`) leaves no SIMD kernel to run, or the
/// host lacks the functions the backend needs; the loader then skips the plugin.
#[no_mangle]
pub extern "C" fn ggml_backend_score() -> c_int {
    std::panic::catch_unwind(|| match host() {
        Ok(_) => llmkernel_backend::score(),
        Err(e) => {
            llmkernel_backend::log(ffi::GGML_LOG_LEVEL_ERROR, e);
            0
        }
    })
    .unwrap_or(0)
}
