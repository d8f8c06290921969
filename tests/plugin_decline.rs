//! The plugin's decline policy: where the dispatch table marks ggml's kernel
//! the faster one for a (format, ISA, batch), and where
//! `LLMKERNEL_PLUGIN_DECLINE` says so, the LLMK device refuses the matmul
//! (`supports_op`), so llama.cpp's scheduler leaves it with the CPU backend;
//! and a whole graph handed to LLMK (an RPC worker's) runs such a node on the
//! host's CPU backend, which the counters show.
//!
//! The table declines IQ4_XS from 16 columns up at tier avx2
//! (docs/BENCHMARKS.md); the environment declines Q4_0 below the panel GEMM's
//! 16 columns, every Q8_0 and Q2_K at 2 to 100 columns; every other (format,
//! batch) must follow the table. On x86-64 the process runs at tier avx2
//! (`LLMKERNEL_ISA=avx2`, set before anything reads it).

mod common;

use common::{table_policy, table_via_lut};
use llmkernel::kernels::formats::Format;
use llmkernel::kernels::table::Isa;
use llmkernel::{backend, ffi};

/// Declined through the environment (the last entry is malformed: logged, ignored).
const DECLINE: &str = "q4_0:1-15, q8_0, q2_k:2-100, bogus:1-2";

fn env_declines(f: Format, batch: usize) -> bool {
    (f == Format::Q4_0 && (1..=15).contains(&batch))
        || f == Format::Q8_0
        || (f == Format::Q2K && (2..=100).contains(&batch))
}

/// A MUL_MAT of an unallocated `f` weight (k x 64) against `batch` F32 columns.
///
/// # Safety
/// `ctx` is a live no-alloc context with room for three tensors.
unsafe fn mul_mat(ctx: *mut ffi::ggml_context, f: Format, batch: usize) -> *mut ffi::ggml_tensor {
    // SAFETY: forwarded contract.
    unsafe {
        let w = ffi::ggml_new_tensor_2d(ctx, f.ggml_type(), 256, 64);
        let x = ffi::ggml_new_tensor_2d(ctx, ffi::GGML_TYPE_F32, 256, batch as i64);
        ffi::ggml_mul_mat(ctx, w, x)
    }
}

#[test]
fn declined_matmuls_stay_with_the_cpu_backend() {
    // SAFETY: the only test of this binary, before any thread reads the environment.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        std::env::set_var("LLMKERNEL_ISA", "avx2");
        std::env::set_var("LLMKERNEL_PLUGIN_DECLINE", DECLINE);
    }
    let reg = backend::register_in_process()
        .unwrap_or_else(|e| panic!("LLMK must register here (x86-64 with AVX2, or AArch64): {e}"));
    let dev = backend::device().expect("LLMK registered");
    let isa = Isa::ceiling().unwrap();
    #[cfg(target_arch = "x86_64")]
    assert_eq!(isa, Isa::Avx2);
    // SAFETY: ggml's API on objects made here; the context is freed once.
    unsafe {
        let ctx = ffi::ggml_init(ffi::ggml_init_params {
            mem_size: 512 * ffi::ggml_tensor_overhead(),
            mem_buffer: std::ptr::null_mut(),
            no_alloc: true,
        });
        let mut declined = 0;
        for f in Format::WEIGHTS {
            let policy = table_policy(f, isa);
            for batch in [1usize, 2, 15, 16, 100, 101, 512] {
                // These weights have no file behind them: decode that only a
                // lookup-table layout takes stays with the CPU backend.
                let want =
                    policy.takes(batch) && !env_declines(f, batch) && !table_via_lut(f, isa, batch);
                let got = ffi::ggml_backend_dev_supports_op(dev, mul_mat(ctx, f, batch));
                assert_eq!(got, want, "{f} at batch {batch} ({isa}; table {policy:?})");
                declined += usize::from(!got);
            }
        }
        assert!(declined > 0);

        // The counters: Q4_0 against 1 column (declined) and against 16
        // (taken), computed by LLMK as an RPC worker would.
        let buft = ffi::ggml_backend_dev_buffer_type(dev);
        let llmk = ffi::ggml_backend_dev_init(dev, std::ptr::null());
        for batch in [1usize, 16] {
            let g = ffi::ggml_init(ffi::ggml_init_params {
                mem_size: 8 * ffi::ggml_tensor_overhead() + ffi::ggml_graph_overhead(),
                mem_buffer: std::ptr::null_mut(),
                no_alloc: true,
            });
            let y = mul_mat(g, Format::Q4_0, batch);
            let graph = ffi::ggml_new_graph(g);
            ffi::ggml_build_forward_expand(graph, y);
            let buf = ffi::ggml_backend_alloc_ctx_tensors_from_buft(g, buft);
            assert!(!buf.is_null());
            ffi::ggml_backend_buffer_clear(buf, 0);
            let before = backend::stats(reg).unwrap();
            assert_eq!(
                ffi::ggml_backend_graph_compute(llmk, graph),
                ffi::GGML_STATUS_SUCCESS
            );
            let after = backend::stats(reg).unwrap();
            let taken =
                table_policy(Format::Q4_0, isa).takes(batch) && !env_declines(Format::Q4_0, batch);
            assert_eq!(taken, batch >= 16);
            assert_eq!(
                (
                    after.mul_mat - before.mul_mat,
                    after.cpu_nodes - before.cpu_nodes
                ),
                if taken { (1, 0) } else { (0, 1) },
                "Q4_0 at batch {batch}: (LLMK matmuls, CPU nodes)"
            );
            ffi::ggml_backend_buffer_free(buf);
            ffi::ggml_free(g);
        }
        ffi::ggml_backend_free(llmk);
        ffi::ggml_free(ctx);
    }
}
