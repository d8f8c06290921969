//! The `backend_ops` fuzz target ([`crate::fuzz`]): MUL_MAT nodes of random
//! weight types (every ggml type), shapes, broadcasts, weight views with gaps
//! between matrices, activation views with padded rows and permuted
//! (non-contiguous) activations, and descriptors corrupted after the fact.
//! What LLMK's `supports_op` accepts it computes, and the result must equal
//! the CPU backend's on the same graph; a corrupted descriptor must be
//! refused or computed alike. Every tensor lies inside its buffer, as ggml's
//! own do (the backend's contract).

use crate::ffi;
use llmkernel_kernels::testdata::Rng;

/// Choices drawn from the input's bytes, then from a generator seeded by them.
struct Choices<'a> {
    bytes: &'a [u8],
    rng: Rng,
}

impl Choices<'_> {
    fn byte(&mut self) -> u8 {
        match self.bytes.split_first() {
            Some((&b, rest)) => {
                self.bytes = rest;
                b
            }
            None => self.rng.next_u64() as u8,
        }
    }
    fn pick(&mut self, n: usize) -> usize {
        self.byte() as usize % n
    }
}

pub fn run(data: &[u8]) {
    let Ok(reg) = crate::backend::register_in_process() else {
        // No SIMD kernels on this CPU: LLMK is not there to fuzz.
        return;
    };
    let _ = reg;
    let dev = crate::backend::device().expect("registered");
    let mut c = Choices {
        bytes: data,
        rng: Rng::new(crate::fuzz::seed_of(data)),
    };
    let types: Vec<ffi::ggml_type> = (0..ffi::GGML_TYPE_COUNT)
        // SAFETY: types below GGML_TYPE_COUNT index ggml's trait table.
        .filter(|&t| unsafe { ffi::ggml_blck_size(t) } > 0)
        .collect();
    let ours: Vec<ffi::ggml_type> = llmkernel_kernels::Format::WEIGHTS
        .iter()
        .map(|f| f.ggml_type())
        .collect();
    let wtype = if c.pick(2) == 0 {
        ours[c.pick(ours.len())]
    } else {
        types[c.pick(types.len())]
    };
    // SAFETY: a type of ggml's table.
    let blck = unsafe { ffi::ggml_blck_size(wtype) } as usize;
    let k = blck * (1 + c.pick(4));
    let m = 1 + c.pick(12);
    let n = [1, 2, 3, 5, 16, 17, 40][c.pick(7)];
    let (w2, w3) = (1 + c.pick(2), 1 + c.pick(2));
    let (b2, b3) = (1 + c.pick(2), 1 + c.pick(2));
    // Weight storage: extra rows so a view can start late and leave gaps.
    let extra = c.pick(3);
    let view_w = c.pick(3) == 0;
    // Activations: padded rows, or permuted (planes and rows swapped).
    let pad = c.pick(3) * 8;
    let permute_x = c.pick(4) == 0;
    let corrupt = c.pick(4) == 0;
    let corruption = c.pick(8);
    let sane_scales = c.pick(8) != 0;

    // SAFETY: ggml's API on objects made and freed here; every view lies
    // inside its source (sizes computed below), every pointer is freed once.
    unsafe {
        let ctx = ffi::ggml_init(ffi::ggml_init_params {
            mem_size: 16 * ffi::ggml_tensor_overhead() + ffi::ggml_graph_overhead(),
            mem_buffer: std::ptr::null_mut(),
            no_alloc: true,
        });
        let ws = ffi::ggml_new_tensor_4d(
            ctx,
            wtype,
            k as i64,
            (m + extra) as i64,
            w2 as i64,
            w3 as i64,
        );
        let row = ffi::ggml_row_size(wtype, k as i64);
        let w = if extra == 0 {
            ws
        } else {
            // m rows of each matrix, from the first row or `extra` rows in
            // (then with gaps between matrices).
            ffi::ggml_view_4d(
                ctx,
                ws,
                k as i64,
                m as i64,
                w2 as i64,
                w3 as i64,
                row,
                (*ws).nb[2],
                (*ws).nb[3],
                if view_w { extra * row } else { 0 },
            )
        };
        let (x2, x3) = ((w2 * b2) as i64, (w3 * b3) as i64);
        let x = if permute_x {
            // Stored as [k, x2, n, x3], used as [k, n, x2, x3].
            let xs = ffi::ggml_new_tensor_4d(ctx, ffi::GGML_TYPE_F32, k as i64, x2, n as i64, x3);
            ffi::ggml_permute(ctx, xs, 0, 2, 1, 3)
        } else {
            let xs = ffi::ggml_new_tensor_4d(
                ctx,
                ffi::GGML_TYPE_F32,
                (k + pad) as i64,
                n as i64,
                x2,
                x3,
            );
            ffi::ggml_view_4d(
                ctx,
                xs,
                k as i64,
                n as i64,
                x2,
                x3,
                (*xs).nb[1],
                (*xs).nb[2],
                (*xs).nb[3],
                0,
            )
        };
        let y = ffi::ggml_mul_mat(ctx, w, x);
        let graph = ffi::ggml_new_graph(ctx);
        ffi::ggml_build_forward_expand(graph, y);
        let buf = ffi::ggml_backend_alloc_ctx_tensors_from_buft(
            ctx,
            ffi::ggml_backend_dev_buffer_type(dev),
        );
        assert!(!buf.is_null());
        // Random weight bytes; with sane scales, the f16 scales made finite and small.
        let wbytes = ffi::ggml_nbytes(ws);
        let mut bytes = vec![0u8; wbytes];
        c.rng.fill(&mut bytes);
        if sane_scales {
            sanitize(wtype, &mut bytes);
        }
        ffi::ggml_backend_tensor_set(ws, bytes.as_ptr().cast(), 0, wbytes);
        let xsrc = (*x).view_src;
        let xn = ffi::ggml_nelements(xsrc) as usize;
        let xv = c.rng.activations(xn);
        ffi::ggml_backend_tensor_set(xsrc, xv.as_ptr().cast(), 0, xn * 4);

        if corrupt {
            // A descriptor changed after the graph was built: only changes that
            // keep every byte the node may address inside its buffer.
            match corruption {
                0 => (*w).ne[0] -= 1, // not a whole number of blocks (or one value less)
                1 => (*w).nb[0] += 1,
                2 => (*w).type_ = ffi::GGML_TYPE_COUNT + 7,
                3 => (*x).type_ = ffi::GGML_TYPE_F16,
                4 => (*y).ne[1] = 0.max((*y).ne[1] - 1),
                5 => (*x).nb[0] = 8,
                6 => (*y).type_ = ffi::GGML_TYPE_F16,
                _ => (*w).ne[2] = 0,
            }
        }
        let llmk = ffi::ggml_backend_dev_init(dev, std::ptr::null());
        let supported = ffi::ggml_backend_dev_supports_op(dev, y);
        if supported && !corrupt {
            let before = crate::backend::stats(reg).unwrap();
            let status = ffi::ggml_backend_graph_compute(llmk, graph);
            assert_eq!(
                status,
                ffi::GGML_STATUS_SUCCESS,
                "LLMK failed a node it took"
            );
            let after = crate::backend::stats(reg).unwrap();
            assert_eq!(after.failed, before.failed);
            let count = ffi::ggml_nelements(y) as usize;
            let mut ours = vec![0f32; count];
            ffi::ggml_backend_tensor_get(y, ours.as_mut_ptr().cast(), 0, count * 4);
            let cpu = ffi::ggml_backend_cpu_init();
            assert_eq!(
                ffi::ggml_backend_graph_compute(cpu, graph),
                ffi::GGML_STATUS_SUCCESS
            );
            let mut theirs = vec![0f32; count];
            ffi::ggml_backend_tensor_get(y, theirs.as_mut_ptr().cast(), 0, count * 4);
            ffi::ggml_backend_free(cpu);
            // Each output's magnitude, sum |w| |x| over k (ggml's dequantized
            // weights): both backends sum the same integer products, so they
            // differ by float rounding of terms of that size.
            let format = llmkernel_kernels::Format::from_ggml_type(wtype).expect("LLMK took it");
            let at = |t: *mut ffi::ggml_tensor, i: [usize; 3]| {
                ((*t).data as *const u8)
                    .add(i[0] * (*t).nb[1] + i[1] * (*t).nb[2] + i[2] * (*t).nb[3])
            };
            let (yn, y2, y3) = (
                (*y).ne[1] as usize,
                (*y).ne[2] as usize,
                (*y).ne[3] as usize,
            );
            let mut wrow = vec![0f32; k];
            for i in 0..count {
                let (r, c, p2, p3) = (i % m, i / m % yn, i / m / yn % y2, i / m / yn / y2 % y3);
                let wr = std::slice::from_raw_parts(at(w, [r, p2 / b2, p3 / b3]), row);
                crate::ggml::dequantize_row(format, wr, &mut wrow).unwrap();
                let xr = at(x, [c, p2, p3]);
                let magnitude: f64 = (0..k)
                    .map(|j| {
                        let xv = (xr.add(j * (*x).nb[0]) as *const f32).read_unaligned();
                        (wrow[j] * xv).abs() as f64
                    })
                    .sum();
                let (a, b) = (ours[i], theirs[i]);
                if b.is_finite() {
                    // On aarch64 (under qemu) ggml's CPU backend differs from
                    // LLMK by up to 2.4e-5 of the magnitude on a Q6_K node with
                    // permuted activations, while LLMK's NEON, dotprod and i8mm
                    // kernels agree with each other and with the scalar
                    // reference (docs/FUZZING.md, open): a looser bound there.
                    let rel = if cfg!(target_arch = "x86_64") {
                        1e-5
                    } else {
                        1e-3
                    };
                    let bound = rel * magnitude + 1e-20;
                    assert!(
                        ((a - b) as f64).abs() <= bound,
                        "type {wtype}, k {k}, m {m}, n {n}, planes {w2}x{w3} / {x2}x{x3}, \
                         view {view_w}, permuted {permute_x}: y[{i}] = {a:e}, CPU {b:e}, \
                         magnitude {magnitude:e}"
                    );
                } else {
                    assert!(!a.is_finite(), "y[{i}] = {a:e}, CPU {b:e}");
                }
            }
        } else {
            // Each corruption breaks a rule of MUL_MAT (block rows, element
            // strides, types, shapes): LLMK must refuse the node.
            assert!(
                !(supported && corrupt),
                "LLMK took a corrupted node ({corruption})"
            );
        }
        ffi::ggml_backend_free(llmk);
        ffi::ggml_backend_buffer_free(buf);
        ffi::ggml_free(ctx);
    }
}

/// Makes the f16 scales of LLMK formats' blocks finite and at most 1 in size
/// (other types keep their random bytes: LLMK does not take them).
fn sanitize(t: ffi::ggml_type, bytes: &mut [u8]) {
    use llmkernel_kernels::formats::{Format, WithFormat};
    use llmkernel_kernels::table::Kernels;
    use llmkernel_kernels::testdata::RandomBlock;
    struct Offsets;
    impl WithFormat for Offsets {
        type Out = (usize, &'static [usize]);
        fn run<B: Kernels>(self) -> Self::Out {
            (std::mem::size_of::<B>(), <B as RandomBlock>::SCALE_OFFSETS)
        }
    }
    let Some((size, offsets)) = Format::from_ggml_type(t).and_then(|f| f.with(Offsets)) else {
        return;
    };
    for b in bytes.chunks_exact_mut(size) {
        for &o in offsets {
            // Keep sign and a small exponent: |v| in [2^-14, 1).
            let v = u16::from_le_bytes([b[o], b[o + 1]]);
            let v = (v & 0x83ff) | (((v >> 10) & 0xf) % 15 + 1) << 10;
            b[o..o + 2].copy_from_slice(&v.to_le_bytes());
        }
    }
}
