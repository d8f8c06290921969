//! Importance matrices in llama.cpp's imatrix GGUF format, so files made by
//! either tool work in both: `llmkernel imatrix` collects, per weight matrix,
//! the sum over calibration tokens of each input channel's squared activation
//! (and the token count), through libllama's eval callback; `load` turns a
//! file into the per-channel means `llama_model_quantize` takes.
//!
//! The file: KV `general.type = "imatrix"`, `imatrix.datasets` (array of
//! strings), `imatrix.chunk_count`, `imatrix.chunk_size` (u32); per weight
//! `<name>.in_sum2` (F32, [n_in, n_mat]) and `<name>.counts` (F32, [1, n_mat]),
//! `n_mat` > 1 for stacks of experts.

use crate::{ffi, llama};
use std::collections::BTreeMap;
use std::ffi::{c_void, CStr, CString};
use std::path::Path;

/// One weight's statistics: per matrix (expert), the sum over tokens of each
/// input channel's squared activation, and the token count.
#[derive(Default)]
pub(crate) struct Entry {
    pub sums: Vec<f64>,
    pub counts: Vec<u64>,
}

#[derive(Default)]
struct Collector {
    entries: BTreeMap<String, Entry>,
    error: Option<String>,
}

/// The weight's name as the graph shows it, without a scheduler copy's
/// `backend#name#n` decoration.
fn weight_name(raw: &str) -> &str {
    match raw.split_once('#') {
        Some((_, rest)) => rest.split('#').next().unwrap_or(rest),
        None => raw,
    }
}

/// # Safety
/// `t` is a live graph node whose sources are live and host-readable.
unsafe fn collect(c: &mut Collector, t: &ffi::ggml_tensor) -> Result<(), String> {
    // SAFETY: forwarded contract.
    let (w, x) = unsafe { (&*t.src[0], &*t.src[1]) };
    // SAFETY: NUL-terminated tensor name.
    let name =
        weight_name(&unsafe { CStr::from_ptr(w.name.as_ptr()) }.to_string_lossy()).to_string();
    if x.type_ != ffi::GGML_TYPE_F32 || x.nb[0] != 4 {
        return Err(format!("{name}: activations not contiguous F32 rows"));
    }
    let ne0 = x.ne[0] as usize;
    let row = |i1: i64, i2: i64, i3: i64| -> &[f32] {
        let off = i1 as usize * x.nb[1] + i2 as usize * x.nb[2] + i3 as usize * x.nb[3];
        // SAFETY: a row of ne0 f32 inside the activation tensor by its strides.
        unsafe { std::slice::from_raw_parts((x.data as *const u8).add(off) as *const f32, ne0) }
    };
    let add = |acc: &mut [f64], r: &[f32]| {
        for (a, &v) in acc.iter_mut().zip(r) {
            *a += (v as f64) * (v as f64);
        }
    };
    if t.op == ffi::GGML_OP_MUL_MAT_ID {
        // SAFETY: MUL_MAT_ID has its ids as src[2].
        let ids = unsafe { &*t.src[2] };
        let n_as = w.ne[2] as usize;
        let e = c.entries.entry(name.clone()).or_default();
        if e.sums.is_empty() {
            e.sums = vec![0.0; ne0 * n_as];
            e.counts = vec![0; n_as];
        }
        for tok in 0..ids.ne[1] {
            for slot in 0..ids.ne[0] {
                let off = tok as usize * ids.nb[1] + slot as usize * ids.nb[0];
                // SAFETY: inside ids by its strides.
                let ex =
                    unsafe { ((ids.data as *const u8).add(off) as *const i32).read_unaligned() };
                let ex = usize::try_from(ex)
                    .ok()
                    .filter(|&v| v < n_as)
                    .ok_or(format!("{name}: expert id {ex}"))?;
                add(
                    &mut e.sums[ex * ne0..(ex + 1) * ne0],
                    row(slot % x.ne[1], tok, 0),
                );
                e.counts[ex] += 1;
            }
        }
    } else {
        let n_mat = (w.ne[2] * w.ne[3]) as usize;
        let e = c.entries.entry(name.clone()).or_default();
        if e.sums.is_empty() {
            e.sums = vec![0.0; ne0 * n_mat];
            e.counts = vec![0; n_mat];
        }
        if e.sums.len() != ne0 * n_mat {
            return Err(format!("{name}: inconsistent sizes"));
        }
        for i3 in 0..x.ne[3] {
            for i2 in 0..x.ne[2] {
                let mat = ((i3 % w.ne[3]) * w.ne[2] + (i2 % w.ne[2])) as usize;
                for i1 in 0..x.ne[1] {
                    add(&mut e.sums[mat * ne0..(mat + 1) * ne0], row(i1, i2, i3));
                }
            }
        }
        let rows = (x.ne[1] * x.ne[2] * x.ne[3]) as u64;
        for c in e.counts.iter_mut() {
            *c += rows / n_mat as u64;
        }
    }
    Ok(())
}

unsafe extern "C" fn callback(t: *mut ffi::ggml_tensor, ask: bool, ud: *mut c_void) -> bool {
    // SAFETY: libllama passes a live node and our Collector as user data.
    let (t, c) = unsafe { (&*t, &mut *(ud as *mut Collector)) };
    if ask {
        if t.op == ffi::GGML_OP_MUL_MAT_ID {
            return true;
        }
        if t.op != ffi::GGML_OP_MUL_MAT {
            return false;
        }
        // SAFETY: MUL_MAT has two sources.
        let (w, x) = unsafe { (&*t.src[0], &*t.src[1]) };
        // SAFETY: NUL-terminated name.
        let name = unsafe { CStr::from_ptr(w.name.as_ptr()) }.to_string_lossy();
        // Weights of the layers, as llama-imatrix (which skips batches under 16 rows).
        return x.ne[1] >= 16
            && x.type_ == ffi::GGML_TYPE_F32
            && weight_name(&name).starts_with("blk.");
    }
    if c.error.is_none() {
        // SAFETY: the scheduler computed t and hands it to us before going on.
        if let Err(e) =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe { collect(c, t) }))
                .unwrap_or_else(|_| Err("panic while collecting".into()))
        {
            c.error = Some(e);
        }
    }
    true
}

/// Collects an importance matrix of `model` over `chunks` chunks of `ctx`
/// tokens of `text` and writes it to `out`.
pub fn collect_to_file(
    model: &Path,
    text: &Path,
    out: &Path,
    ctx: usize,
    chunks: Option<usize>,
    threads: usize,
) -> Result<usize, String> {
    let (entries, n) = collect_entries(model, text, ctx, chunks, threads)?;
    write(&entries, out, &[text.display().to_string()], n, ctx)?;
    Ok(entries.len())
}

/// The statistics of every layer weight of `model` over `chunks` chunks of
/// `ctx` tokens of `text`, and the number of chunks used.
pub(crate) fn collect_entries(
    model: &Path,
    text: &Path,
    ctx: usize,
    chunks: Option<usize>,
    threads: usize,
) -> Result<(BTreeMap<String, Entry>, usize), String> {
    let mut c = Box::new(Collector::default());
    let ud = &mut *c as *mut Collector as *mut c_void;
    let n = llama::eval_chunks(
        model,
        text,
        ctx,
        chunks,
        threads,
        Some(callback),
        ud,
        "imatrix",
        &mut || {
            // SAFETY: between chunks no callback runs; ud points into the live box.
            match unsafe { &(*(ud as *const Collector)).error } {
                Some(e) => Err(e.clone()),
                None => Ok(()),
            }
        },
    )?;
    Ok((std::mem::take(&mut c.entries), n))
}

fn write(
    entries: &BTreeMap<String, Entry>,
    out: &Path,
    datasets: &[String],
    chunks: usize,
    chunk_size: usize,
) -> Result<(), String> {
    let bytes: usize = entries
        .values()
        .map(|e| (e.sums.len() + e.counts.len()) * 4)
        .sum();
    // SAFETY: gguf/ggml calls on contexts made and freed here; tensor data
    // written within the sizes they were created with.
    unsafe {
        let ctx = ffi::ggml_init(ffi::ggml_init_params {
            mem_size: bytes + entries.len() * 2 * (ffi::ggml_tensor_overhead() + 64) + 4096,
            mem_buffer: std::ptr::null_mut(),
            no_alloc: false,
        });
        let g = ffi::gguf_init_empty();
        ffi::gguf_set_val_str(g, c"general.type".as_ptr(), c"imatrix".as_ptr());
        let ds: Vec<CString> = datasets
            .iter()
            .map(|d| CString::new(d.as_str()).unwrap())
            .collect();
        let dp: Vec<*const std::ffi::c_char> = ds.iter().map(|d| d.as_ptr()).collect();
        ffi::gguf_set_arr_str(
            g,
            c"imatrix.datasets".as_ptr(),
            dp.as_ptr() as *mut _,
            dp.len(),
        );
        ffi::gguf_set_val_u32(g, c"imatrix.chunk_count".as_ptr(), chunks as u32);
        ffi::gguf_set_val_u32(g, c"imatrix.chunk_size".as_ptr(), chunk_size as u32);
        for (name, e) in entries {
            let n_mat = e.counts.len();
            let sums = ffi::ggml_new_tensor_2d(
                ctx,
                ffi::GGML_TYPE_F32,
                (e.sums.len() / n_mat) as i64,
                n_mat as i64,
            );
            let counts = ffi::ggml_new_tensor_2d(ctx, ffi::GGML_TYPE_F32, 1, n_mat as i64);
            for (i, v) in e.sums.iter().enumerate() {
                *((*sums).data as *mut f32).add(i) = *v as f32;
            }
            for (i, v) in e.counts.iter().enumerate() {
                *((*counts).data as *mut f32).add(i) = *v as f32;
            }
            let n1 = CString::new(format!("{name}.in_sum2")).unwrap();
            let n2 = CString::new(format!("{name}.counts")).unwrap();
            ffi::ggml_set_name(sums, n1.as_ptr());
            ffi::ggml_set_name(counts, n2.as_ptr());
            ffi::gguf_add_tensor(g, sums);
            ffi::gguf_add_tensor(g, counts);
        }
        let path = CString::new(out.as_os_str().as_encoded_bytes()).unwrap();
        let ok = ffi::gguf_write_to_file(g, path.as_ptr(), false);
        ffi::gguf_free(g);
        ffi::ggml_free(ctx);
        if ok {
            Ok(())
        } else {
            Err(format!("cannot write {}", out.display()))
        }
    }
}

/// Per weight: the mean squared activation of each input channel (per
/// expert, concatenated), as llama-quantize hands them to the quantizer.
pub fn load(path: &Path) -> Result<Vec<(String, Vec<f32>)>, String> {
    let file = crate::ggml::GgufFile::open(path, true)?;
    let data_ctx = file.ctx;
    // SAFETY: the file's tensors live in data_ctx until `file` drops; tensor
    // data is read within each tensor's element count.
    unsafe {
        let mut sums: BTreeMap<String, (Vec<f32>, Vec<f32>)> = BTreeMap::new();
        let mut t = ffi::ggml_get_first_tensor(data_ctx);
        let mut bad = None;
        while !t.is_null() {
            let name = CStr::from_ptr((*t).name.as_ptr())
                .to_string_lossy()
                .into_owned();
            let n = ffi::ggml_nelements(t) as usize;
            let ours = name.ends_with(".in_sum2") || name.ends_with(".counts");
            if !ours {
                // gguf's own "binary blob" tensor holding all data, or foreign tensors
            } else if (*t).type_ != ffi::GGML_TYPE_F32 {
                bad = Some(format!("{name} is not F32"));
            } else {
                let v = std::slice::from_raw_parts((*t).data as *const f32, n).to_vec();
                if let Some(w) = name.strip_suffix(".in_sum2") {
                    sums.entry(w.into()).or_default().0 = v;
                } else if let Some(w) = name.strip_suffix(".counts") {
                    sums.entry(w.into()).or_default().1 = v;
                }
            }
            t = ffi::ggml_get_next_tensor(data_ctx, t);
        }
        if let Some(b) = bad {
            return Err(format!("{}: {b}", path.display()));
        }
        if sums.is_empty() {
            return Err(format!(
                "{}: no <name>.in_sum2 / <name>.counts tensors: not an imatrix file",
                path.display()
            ));
        }
        sums.into_iter()
            .map(|(name, (s, c))| {
                if c.is_empty() || s.is_empty() || s.len() % c.len() != 0 {
                    return Err(format!(
                        "{}: sums and counts of {name} do not match",
                        path.display()
                    ));
                }
                let per = s.len() / c.len();
                let v = s
                    .chunks(per)
                    .zip(&c)
                    .flat_map(|(row, &n)| {
                        row.iter().map(move |&x| if n > 0.0 { x / n } else { 1.0 })
                    })
                    .collect();
                Ok((name, v))
            })
            .collect()
    }
}
