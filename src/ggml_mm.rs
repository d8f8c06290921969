//! ggml's own best CPU matmul, as a baseline: a MUL_MAT graph computed by the
//! vendored CPU backend with a given thread count, the weights in ggml's
//! "repack" extra buffer type where ggml would use it (as llama.cpp places
//! CPU weights), else in the plain CPU buffer.

use crate::ffi;
use crate::ggml;
use llmkernel_kernels::Format;
use std::ffi::{c_void, CStr};
use std::ptr;

/// `copies` weight matrices of `m` x `k` (each its own tensor) times one
/// activation matrix of `n` x `k`, in one graph: `y_i = x * w_i^T`.
pub struct GgmlMatMul {
    backend: ffi::ggml_backend_t,
    ctx_w: *mut ffi::ggml_context,
    buf_w: ffi::ggml_backend_buffer_t,
    ctx: *mut ffi::ggml_context,
    buf: ffi::ggml_backend_buffer_t,
    graph: *mut ffi::ggml_cgraph,
    x: *mut ffi::ggml_tensor,
    ys: Vec<*mut ffi::ggml_tensor>,
    /// The buffer type the weights live in (`CPU_REPACK` or `CPU`).
    pub weight_buffer: String,
}

fn new_context(tensors: usize, graph_size: usize) -> *mut ffi::ggml_context {
    // SAFETY: plain size queries and a context that allocates no tensor data (no_alloc).
    unsafe {
        let mem_size = ffi::ggml_tensor_overhead() * tensors
            + ffi::ggml_graph_overhead_custom(graph_size, false)
            + 4096;
        ffi::ggml_init(ffi::ggml_init_params {
            mem_size,
            mem_buffer: ptr::null_mut(),
            no_alloc: true,
        })
    }
}

impl GgmlMatMul {
    /// `weights[i]` holds `m` rows of `k` values of `format` in GGUF layout.
    pub fn new(
        format: Format,
        m: usize,
        k: usize,
        n: usize,
        weights: &[&[u8]],
        threads: usize,
    ) -> Result<Self, String> {
        let row_bytes = format.blocks_in(k).map_err(|e| e.to_string())? * format.block_bytes();
        if weights.is_empty() || weights.iter().any(|w| w.len() != m * row_bytes) {
            return Err(format!(
                "{format}: every weight copy must hold {m} rows of {row_bytes} bytes"
            ));
        }
        ggml::init();
        let copies = weights.len();
        let graph_size = 2 * copies + 16;
        // SAFETY: every pointer below comes from ggml and is checked or used as ggml
        // documents; tensors are created in contexts sized for them; weight bytes are
        // exactly ggml_nbytes of their tensor (checked above, and by ggml).
        unsafe {
            let backend = ffi::ggml_backend_cpu_init();
            if backend.is_null() {
                return Err("ggml_backend_cpu_init failed".into());
            }
            ffi::ggml_backend_cpu_set_n_threads(backend, threads as i32);
            let mut mm = GgmlMatMul {
                backend,
                ctx_w: new_context(copies, 0),
                buf_w: ptr::null_mut(),
                ctx: new_context(copies + 1, graph_size),
                buf: ptr::null_mut(),
                graph: ptr::null_mut(),
                x: ptr::null_mut(),
                ys: Vec::new(),
                weight_buffer: String::new(),
            };
            let ws: Vec<_> = (0..copies)
                .map(|_| ffi::ggml_new_tensor_2d(mm.ctx_w, format.ggml_type(), k as i64, m as i64))
                .collect();
            mm.x = ffi::ggml_new_tensor_2d(mm.ctx, ffi::GGML_TYPE_F32, k as i64, n as i64);
            mm.ys = ws
                .iter()
                .map(|&w| ffi::ggml_mul_mat(mm.ctx, w, mm.x))
                .collect();
            mm.place_weights(mm.ys[0])?;
            for (&w, bytes) in ws.iter().zip(weights) {
                ffi::ggml_backend_tensor_set(w, bytes.as_ptr().cast(), 0, bytes.len());
            }
            mm.graph = ffi::ggml_new_graph_custom(mm.ctx, graph_size, false);
            for &y in &mm.ys {
                ffi::ggml_build_forward_expand(mm.graph, y);
            }
            mm.buf = ffi::ggml_backend_alloc_ctx_tensors(mm.ctx, backend);
            if mm.buf.is_null() {
                return Err("ggml could not allocate the activations".into());
            }
            Ok(mm)
        }
    }

    /// Allocates the weights in the first of the CPU device's extra buffer types
    /// (the repack types) that supports this matmul, else in the CPU buffer type.
    ///
    /// # Safety
    /// `op` is a MUL_MAT whose weight is a tensor of `self.ctx_w`.
    unsafe fn place_weights(&mut self, op: *mut ffi::ggml_tensor) -> Result<(), String> {
        // SAFETY: as documented by ggml-backend.h for the CPU device and its registry.
        unsafe {
            let dev = ffi::ggml_backend_get_device(self.backend);
            let reg = ffi::ggml_backend_dev_backend_reg(dev);
            let name = c"ggml_backend_dev_get_extra_bufts";
            let proc = ffi::ggml_backend_reg_get_proc_address(reg, name.as_ptr());
            if !proc.is_null() {
                let get: unsafe extern "C" fn(
                    ffi::ggml_backend_dev_t,
                )
                    -> *mut ffi::ggml_backend_buffer_type_t =
                    std::mem::transmute::<*mut c_void, _>(proc);
                let mut list = get(dev);
                while !list.is_null() && !(*list).is_null() {
                    let buft = *list;
                    self.buf_w = ffi::ggml_backend_alloc_ctx_tensors_from_buft(self.ctx_w, buft);
                    if !self.buf_w.is_null() && ffi::ggml_backend_dev_supports_op(dev, op) {
                        self.weight_buffer = CStr::from_ptr(ffi::ggml_backend_buft_name(buft))
                            .to_string_lossy()
                            .into();
                        return Ok(());
                    }
                    if !self.buf_w.is_null() {
                        ffi::ggml_backend_buffer_free(self.buf_w);
                        // Detach the tensors from the freed buffer before trying the next type.
                        let mut t = ffi::ggml_get_first_tensor(self.ctx_w);
                        while !t.is_null() {
                            (*t).buffer = ptr::null_mut();
                            (*t).data = ptr::null_mut();
                            (*t).extra = ptr::null_mut();
                            t = ffi::ggml_get_next_tensor(self.ctx_w, t);
                        }
                        self.buf_w = ptr::null_mut();
                    }
                    list = list.add(1);
                }
            }
            let buft = ffi::ggml_backend_cpu_buffer_type();
            self.buf_w = ffi::ggml_backend_alloc_ctx_tensors_from_buft(self.ctx_w, buft);
            if self.buf_w.is_null() {
                return Err("ggml could not allocate the weights".into());
            }
            self.weight_buffer = CStr::from_ptr(ffi::ggml_backend_buft_name(buft))
                .to_string_lossy()
                .into();
            Ok(())
        }
    }

    /// Sets the activations: `n` rows of `k` floats.
    pub fn set_input(&mut self, x: &[f32]) {
        // SAFETY: x has exactly the tensor's bytes (asserted).
        unsafe {
            assert_eq!(x.len() * 4, ffi::ggml_nbytes(self.x));
            ffi::ggml_backend_tensor_set(self.x, x.as_ptr().cast(), 0, x.len() * 4);
        }
    }

    /// Computes all `copies` matmuls.
    pub fn compute(&mut self) -> Result<(), String> {
        // SAFETY: the graph and backend are alive and allocated.
        let status = unsafe { ffi::ggml_backend_graph_compute(self.backend, self.graph) };
        if status != ffi::GGML_STATUS_SUCCESS {
            return Err(format!(
                "ggml_backend_graph_compute failed with status {status}"
            ));
        }
        Ok(())
    }

    /// The output of weight copy `i`: `n` rows of `m` floats.
    pub fn output(&self, i: usize) -> Vec<f32> {
        // SAFETY: reads exactly the tensor's bytes into a buffer of that size.
        unsafe {
            let bytes = ffi::ggml_nbytes(self.ys[i]);
            let mut out = vec![0f32; bytes / 4];
            ffi::ggml_backend_tensor_get(self.ys[i], out.as_mut_ptr().cast(), 0, bytes);
            out
        }
    }
}

impl Drop for GgmlMatMul {
    fn drop(&mut self) {
        // SAFETY: each handle was made by ggml and is freed once here.
        unsafe {
            if !self.buf.is_null() {
                ffi::ggml_backend_buffer_free(self.buf);
            }
            if !self.buf_w.is_null() {
                ffi::ggml_backend_buffer_free(self.buf_w);
            }
            ffi::ggml_free(self.ctx);
            ffi::ggml_free(self.ctx_w);
            ffi::ggml_backend_free(self.backend);
        }
    }
}

/// Quantizes `rows` rows of `k` floats with ggml's quantizer for `format`
/// (`ggml_quantize_chunk`), rows split across `threads`. No importance
/// matrix, except a uniform one for the formats ggml quantizes only with
/// one (IQ2_XXS, IQ2_XS: `ggml_quantize_requires_imatrix`).
pub fn quantize(
    format: Format,
    x: &[f32],
    rows: usize,
    k: usize,
    threads: usize,
) -> Result<Vec<u8>, String> {
    let row_bytes = format.blocks_in(k).map_err(|e| e.to_string())? * format.block_bytes();
    if x.len() != rows * k {
        return Err(format!(
            "quantize: {} floats for {rows} rows of {k}",
            x.len()
        ));
    }
    ggml::init();
    // SAFETY: a pure predicate on the type number.
    let uniform =
        unsafe { ffi::ggml_quantize_requires_imatrix(format.ggml_type()) }.then(|| vec![1f32; k]);
    let mut out = vec![0u8; rows * row_bytes];
    let chunk = rows.div_ceil(threads.max(1) * 4).max(1);
    use rayon::prelude::*;
    llmkernel_kernels::matmul::pool(threads).install(|| {
        out.par_chunks_mut(chunk * row_bytes)
            .zip(x.par_chunks(chunk * k))
            .for_each(|(dst, src)| {
                let n = src.len() / k;
                // SAFETY: src holds n rows of k floats, dst exactly their
                // quantized bytes, the imatrix (where any) k weights.
                unsafe {
                    ffi::ggml_quantize_chunk(
                        format.ggml_type(),
                        src.as_ptr(),
                        dst.as_mut_ptr().cast(),
                        0,
                        n as i64,
                        k as i64,
                        uniform.as_ref().map_or(ptr::null(), |m| m.as_ptr()),
                    )
                };
            })
    });
    Ok(out)
}
