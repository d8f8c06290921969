//! The LLMK backend registered in this process, as the CLI does:
//! - computing a whole graph, as llama.cpp's RPC worker (`rpc-server -d LLMK`)
//!   asks of it: matmuls on llmkernel's kernels, the other ops (softmax,
//!   scale) on the host's CPU backend, in one `graph_compute`; the result
//!   equals the CPU backend's own computation of the same graph, and the
//!   counters show which backend did what;
//! - registered from several threads at once: one registry, one device.

use llmkernel::{backend, ffi};

const K: usize = 512;

/// The backend's counters are per process: tests that read them run one at a time.
static COUNTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
const M: usize = 256;
const N: usize = 3;

fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// y = scale(W · softmax(W' · x)) with W, W' in `wtype`, all in `buft`.
struct Graph {
    ctx: *mut ffi::ggml_context,
    buf: ffi::ggml_backend_buffer_t,
    graph: *mut ffi::ggml_cgraph,
    out: *mut ffi::ggml_tensor,
}

impl Graph {
    unsafe fn new(wtype: ffi::ggml_type, buft: ffi::ggml_backend_buffer_type_t) -> Graph {
        unsafe {
            let ctx = ffi::ggml_init(ffi::ggml_init_params {
                mem_size: 64 * ffi::ggml_tensor_overhead() + ffi::ggml_graph_overhead(),
                mem_buffer: std::ptr::null_mut(),
                no_alloc: true,
            });
            assert!(!ctx.is_null());
            let w1 = ffi::ggml_new_tensor_2d(ctx, wtype, K as i64, M as i64);
            let w2 = ffi::ggml_new_tensor_2d(ctx, wtype, M as i64, K as i64);
            let x = ffi::ggml_new_tensor_2d(ctx, ffi::GGML_TYPE_F32, K as i64, N as i64);
            let h = ffi::ggml_mul_mat(ctx, w1, x);
            let p = ffi::ggml_soft_max(ctx, h);
            let y = ffi::ggml_mul_mat(ctx, w2, p);
            let out = ffi::ggml_scale(ctx, y, 0.5);
            let graph = ffi::ggml_new_graph(ctx);
            ffi::ggml_build_forward_expand(graph, out);
            let buf = ffi::ggml_backend_alloc_ctx_tensors_from_buft(ctx, buft);
            assert!(!buf.is_null());
            for (t, seed, rows, cols) in [(w1, 1, M, K), (w2, 2, K, M)] {
                let f = rand_vec(rows * cols, seed);
                let mut q = vec![0u8; ffi::ggml_nbytes(t)];
                ffi::ggml_quantize_chunk(
                    wtype,
                    f.as_ptr(),
                    q.as_mut_ptr().cast(),
                    0,
                    rows as i64,
                    cols as i64,
                    std::ptr::null(),
                );
                ffi::ggml_backend_tensor_set(t, q.as_ptr().cast(), 0, q.len());
            }
            let xs = rand_vec(K * N, 3);
            ffi::ggml_backend_tensor_set(x, xs.as_ptr().cast(), 0, xs.len() * 4);
            Graph {
                ctx,
                buf,
                graph,
                out,
            }
        }
    }

    unsafe fn compute(&self, backend: ffi::ggml_backend_t) -> Vec<f32> {
        unsafe {
            assert_eq!(
                ffi::ggml_backend_graph_compute(backend, self.graph),
                ffi::GGML_STATUS_SUCCESS
            );
            let mut v = vec![0f32; K * N];
            ffi::ggml_backend_tensor_get(self.out, v.as_mut_ptr().cast(), 0, v.len() * 4);
            v
        }
    }
}

impl Drop for Graph {
    fn drop(&mut self) {
        // SAFETY: made in new(), freed once.
        unsafe {
            ffi::ggml_backend_buffer_free(self.buf);
            ffi::ggml_free(self.ctx);
        }
    }
}

#[test]
fn llmk_computes_a_whole_graph_with_the_cpu_backend_for_other_ops() {
    let _one = COUNTING.lock().unwrap_or_else(|e| e.into_inner());
    let reg = match backend::register_in_process() {
        Ok(r) => r,
        // No SIMD kernels here (LLMKERNEL_ISA=scalar): nothing registers, by design.
        Err(e) if llmkernel_backend::usable_isa().is_err() => {
            eprintln!("LLMK not registered here ({e}); the whole-graph path is not reachable");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let dev = backend::device().expect("LLMK registered");
    // SAFETY: ggml's API on live objects made here; every pointer is freed once.
    unsafe {
        for wtype in [ffi::GGML_TYPE_Q4_K, ffi::GGML_TYPE_Q8_0] {
            let g = Graph::new(wtype, ffi::ggml_backend_dev_buffer_type(dev));
            let llmk = ffi::ggml_backend_dev_init(dev, std::ptr::null());
            let cpu = ffi::ggml_backend_cpu_init();
            let before = backend::stats(reg).unwrap();
            let ours = g.compute(llmk);
            let after = backend::stats(reg).unwrap();
            let theirs = g.compute(cpu);
            assert_eq!(after.mul_mat - before.mul_mat, 2, "LLMK ran both matmuls");
            assert_eq!(after.failed, before.failed);
            // soft_max and scale (views are skipped: none here).
            assert_eq!(
                after.cpu_nodes - before.cpu_nodes,
                2,
                "the CPU backend ran the rest"
            );
            let (mut err, mut sig) = (0f64, 0f64);
            for (a, b) in ours.iter().zip(&theirs) {
                assert!(a.is_finite());
                err += ((a - b) as f64).powi(2);
                sig += (*b as f64).powi(2);
            }
            // Both quantize the activations the same way (Q8_K / Q8_0) and sum
            // the same integer products; only float rounding differs.
            assert!(err / sig < 1e-8, "type {wtype}: NMSE {}", err / sig);
            ffi::ggml_backend_free(llmk);
            ffi::ggml_backend_free(cpu);
        }
    }
}

/// Threads that register the backend at once get one registry, and ggml
/// lists one LLMK device.
#[test]
fn concurrent_registration_makes_one_device() {
    if llmkernel_backend::usable_isa().is_err() {
        eprintln!("LLMK not registered here (no SIMD kernels): nothing to race");
        return;
    }
    let start = std::sync::Barrier::new(8);
    let regs: Vec<usize> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    backend::register_in_process().unwrap() as usize
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(regs.iter().all(|&r| r == regs[0]), "{regs:?}");
    // SAFETY: ggml's device list; names are NUL-terminated.
    let llmk = unsafe {
        (0..ffi::ggml_backend_dev_count())
            .filter(|&i| {
                std::ffi::CStr::from_ptr(ffi::ggml_backend_dev_name(ffi::ggml_backend_dev_get(i)))
                    .to_bytes()
                    == b"LLMK"
            })
            .count()
    };
    assert_eq!(llmk, 1);
}

/// A 2:4 weight's packed copy follows every write through ggml's buffer
/// interface: set, memset, and a buffer freed and made again (whose memory
/// the allocator may hand back at the same address). Each result equals the
/// CPU backend's on the weight's bytes of the moment.
#[test]
fn packed_weights_follow_writes_through_the_buffer_interface() {
    let _one = COUNTING.lock().unwrap_or_else(|e| e.into_inner());
    let Ok(reg) = backend::register_in_process() else {
        assert!(llmkernel_backend::usable_isa().is_err());
        eprintln!("LLMK not registered here (no SIMD kernels): no packed weights");
        return;
    };
    let dev = backend::device().expect("LLMK registered");
    // A 2:4 weight: two of every four values zero (at positions that move with `seed`).
    let weight = |seed: u64| -> Vec<u8> {
        let mut f = rand_vec(M * K, seed);
        for (i, v) in f.iter_mut().enumerate() {
            if (i + seed as usize) % 4 < 2 {
                *v = 0.0;
            }
        }
        let mut q = vec![0u8; M * K / 32 * 34];
        // SAFETY: q holds M rows of K Q8_0 values.
        unsafe {
            ffi::ggml_quantize_chunk(
                ffi::GGML_TYPE_Q8_0,
                f.as_ptr(),
                q.as_mut_ptr().cast(),
                0,
                M as i64,
                K as i64,
                std::ptr::null(),
            )
        };
        q
    };
    // SAFETY: ggml's API on live objects made here; every pointer is freed once.
    unsafe {
        let buft = ffi::ggml_backend_dev_buffer_type(dev);
        let llmk = ffi::ggml_backend_dev_init(dev, std::ptr::null());
        let cpu = ffi::ggml_backend_cpu_init();
        let xs = rand_vec(K * 4, 9);
        // y = W x, W and x in a new LLMK buffer.
        let make = || {
            let ctx = ffi::ggml_init(ffi::ggml_init_params {
                mem_size: 8 * ffi::ggml_tensor_overhead() + ffi::ggml_graph_overhead(),
                mem_buffer: std::ptr::null_mut(),
                no_alloc: true,
            });
            let w = ffi::ggml_new_tensor_2d(ctx, ffi::GGML_TYPE_Q8_0, K as i64, M as i64);
            let x = ffi::ggml_new_tensor_2d(ctx, ffi::GGML_TYPE_F32, K as i64, 4);
            let y = ffi::ggml_mul_mat(ctx, w, x);
            let graph = ffi::ggml_new_graph(ctx);
            ffi::ggml_build_forward_expand(graph, y);
            let buf = ffi::ggml_backend_alloc_ctx_tensors_from_buft(ctx, buft);
            assert!(!buf.is_null());
            ffi::ggml_backend_tensor_set(x, xs.as_ptr().cast(), 0, xs.len() * 4);
            (ctx, buf, w, y, graph)
        };
        let set = |w: *mut ffi::ggml_tensor, seed: u64| {
            let q = weight(seed);
            ffi::ggml_backend_tensor_set(w, q.as_ptr().cast(), 0, q.len());
        };
        let check = |what: &str, graph: *mut ffi::ggml_cgraph, y: *mut ffi::ggml_tensor| {
            let run = |b: ffi::ggml_backend_t| {
                assert_eq!(
                    ffi::ggml_backend_graph_compute(b, graph),
                    ffi::GGML_STATUS_SUCCESS
                );
                let mut v = vec![0f32; M * 4];
                ffi::ggml_backend_tensor_get(y, v.as_mut_ptr().cast(), 0, v.len() * 4);
                v
            };
            let before = backend::stats(reg).unwrap();
            let ours = run(llmk);
            let after = backend::stats(reg).unwrap();
            assert_eq!(
                after.sparse_mul_mat - before.sparse_mul_mat,
                1,
                "{what}: not packed"
            );
            let theirs = run(cpu);
            let (mut err, mut sig) = (0f64, 0f64);
            for (a, b) in ours.iter().zip(&theirs) {
                err += ((a - b) as f64).powi(2);
                sig += (*b as f64).powi(2);
            }
            assert!(sig > 0.0 && err / sig < 1e-8, "{what}: NMSE {}", err / sig);
        };
        let (ctx, buf, w, y, graph) = make();
        set(w, 1);
        check("first use", graph, y);
        set(w, 2);
        check("after set_tensor", graph, y);
        // Zero the first half: still 2:4, other values.
        ffi::ggml_backend_tensor_memset(w, 0, 0, M / 2 * K / 32 * 34);
        check("after memset_tensor", graph, y);
        // One block, which the cache's sampled fingerprint does not read.
        let q = weight(7);
        ffi::ggml_backend_tensor_set(w, q[34..68].as_ptr().cast(), 34, 34);
        check("after one block's set_tensor", graph, y);
        ffi::ggml_backend_buffer_free(buf);
        ffi::ggml_free(ctx);
        for seed in 3..6 {
            let (ctx, buf, w, y, graph) = make();
            set(w, seed);
            check("in a new buffer", graph, y);
            ffi::ggml_backend_buffer_free(buf);
            ffi::ggml_free(ctx);
        }
        ffi::ggml_backend_free(llmk);
        ffi::ggml_backend_free(cpu);
    }
}

/// An LLMK buffer refuses to copy a tensor into a smaller one (ggml then
/// takes its own path, which checks the sizes), and the smaller tensor and
/// the bytes after it are left as they were.
#[test]
fn cpy_tensor_refuses_a_smaller_destination() {
    if backend::register_in_process().is_err() {
        assert!(llmkernel_backend::usable_isa().is_err());
        eprintln!("LLMK not registered here (no SIMD kernels): no LLMK buffers");
        return;
    }
    let dev = backend::device().expect("LLMK registered");
    // SAFETY: ggml's API on objects made here; the buffer's own cpy_tensor
    // is called with live tensors of live buffers; every pointer is freed once.
    unsafe {
        let ctx = ffi::ggml_init(ffi::ggml_init_params {
            mem_size: 4 * ffi::ggml_tensor_overhead(),
            mem_buffer: std::ptr::null_mut(),
            no_alloc: true,
        });
        let src = ffi::ggml_new_tensor_1d(ctx, ffi::GGML_TYPE_F32, 256);
        let dst = ffi::ggml_new_tensor_1d(ctx, ffi::GGML_TYPE_F32, 64);
        let after = ffi::ggml_new_tensor_1d(ctx, ffi::GGML_TYPE_F32, 256);
        let buf = ffi::ggml_backend_alloc_ctx_tensors_from_buft(
            ctx,
            ffi::ggml_backend_dev_buffer_type(dev),
        );
        assert!(!buf.is_null());
        let ones = vec![1f32; 256];
        let twos = vec![2f32; 256];
        ffi::ggml_backend_tensor_set(src, ones.as_ptr().cast(), 0, 256 * 4);
        ffi::ggml_backend_tensor_set(dst, twos.as_ptr().cast(), 0, 64 * 4);
        ffi::ggml_backend_tensor_set(after, twos.as_ptr().cast(), 0, 256 * 4);
        let copy = (*buf).iface.cpy_tensor.expect("LLMK buffers copy");
        assert!(
            !copy(buf, src, dst),
            "a copy of 1 KiB into 256 bytes was accepted"
        );
        let mut v = vec![0f32; 64 + 256];
        ffi::ggml_backend_tensor_get(dst, v.as_mut_ptr().cast(), 0, 64 * 4);
        ffi::ggml_backend_tensor_get(after, v[64..].as_mut_ptr().cast(), 0, 256 * 4);
        assert!(
            v.iter().all(|&x| x == 2.0),
            "the destination or its neighbour changed"
        );
        // Same sizes: copied.
        assert!(copy(buf, src, after));
        ffi::ggml_backend_tensor_get(after, v[64..].as_mut_ptr().cast(), 0, 256 * 4);
        assert!(v[64..].iter().all(|&x| x == 1.0));
        ffi::ggml_backend_buffer_free(buf);
        ffi::ggml_free(ctx);
    }
}
