//! Safe entry points into the vendored ggml: the reference every llmkernel
//! kernel is checked against. Every size is checked here, before the C code
//! sees a pointer.

use crate::ffi;
use llmkernel_kernels::{Error, Format, Result};
use std::ffi::{c_void, CStr};
use std::sync::Once;

/// Initializes ggml-cpu's tables (f16 conversion, feature detection) and routes
/// ggml's log to stderr, warnings and errors only; idempotent.
pub fn init() {
    static ONCE: Once = Once::new();
    // SAFETY: ggml_cpu_init takes no arguments; the log callback is a plain function.
    ONCE.call_once(|| unsafe {
        ffi::ggml_log_set(Some(log_warnings), std::ptr::null_mut());
        ffi::ggml_cpu_init();
    });
}

/// ggml's (and llama.cpp's) log callback: warnings and errors, and the LLMK
/// device's lines (where it registered or why not; its run summaries are for
/// `-v`, which prints them itself), to stderr, or into [`failing`]'s capture
/// when one runs on this thread.
pub(crate) unsafe extern "C" fn log_warnings(
    level: ffi::ggml_log_level,
    text: *const std::ffi::c_char,
    _: *mut c_void,
) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static SHOWING: AtomicBool = AtomicBool::new(false);
    if text.is_null() {
        return;
    }
    // SAFETY: ggml passes a NUL-terminated message.
    let text = unsafe { CStr::from_ptr(text) }.to_string_lossy();
    let show = if level == ffi::GGML_LOG_LEVEL_CONT {
        SHOWING.load(Ordering::Relaxed)
    } else {
        level >= ffi::GGML_LOG_LEVEL_WARN
            || (text.starts_with("llmkernel:") && !text.starts_with("llmkernel: LLMK computed"))
    };
    SHOWING.store(show, Ordering::Relaxed);
    if !show {
        return;
    }
    let kept = CAPTURED.with_borrow_mut(|c| match c {
        Some(lines) => {
            match lines.last_mut() {
                Some(last) if level == ffi::GGML_LOG_LEVEL_CONT => last.1 += &text,
                _ => lines.push((level, text.to_string())),
            }
            true
        }
        None => false,
    });
    if !kept {
        eprint!("{text}");
    }
}

thread_local! {
    /// The log lines [`failing`] keeps back on this thread.
    static CAPTURED: std::cell::RefCell<Option<Vec<(ffi::ggml_log_level, String)>>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f`, a call into ggml or llama.cpp that returns `None` when it fails
/// (and logs why), with the warnings and errors it logs on this thread kept
/// back. On success they are printed as usual; on failure the first error,
/// without its function-name prefix, is returned, so that the caller's error
/// is one line that says what is wrong.
pub fn failing<T>(f: impl FnOnce() -> Option<T>) -> std::result::Result<T, Option<String>> {
    let outer = CAPTURED.with_borrow_mut(|c| c.replace(Vec::new()));
    let r = f();
    let lines = CAPTURED
        .with_borrow_mut(|c| std::mem::replace(c, outer))
        .unwrap_or_default();
    match r {
        Some(v) => {
            for (_, l) in &lines {
                eprint!("{l}");
            }
            Ok(v)
        }
        None => Err(lines
            .iter()
            .find(|(level, _)| *level == ffi::GGML_LOG_LEVEL_ERROR)
            .or(lines.first())
            .map(|(_, l)| reason(l))),
    }
}

/// `func: error loading model: what` → `what`.
pub(crate) fn reason(line: &str) -> String {
    let mut s = line.trim();
    if let Some((head, rest)) = s.split_once(": ") {
        if head.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            s = rest;
        }
    }
    s.strip_prefix("error loading model: ")
        .unwrap_or(s)
        .replace('\n', " ")
}

/// `ggml_version()` of the linked ggml.
pub fn version() -> String {
    // SAFETY: returns a pointer to a static NUL-terminated string.
    unsafe { CStr::from_ptr(ffi::ggml_version()) }
        .to_string_lossy()
        .into_owned()
}

/// `ggml_commit()` of the linked ggml.
pub fn commit() -> String {
    // SAFETY: returns a pointer to a static NUL-terminated string.
    unsafe { CStr::from_ptr(ffi::ggml_commit()) }
        .to_string_lossy()
        .into_owned()
}

fn traits(format: Format) -> &'static ffi::ggml_type_traits {
    // SAFETY: ggml returns a pointer into its static type-traits table for every valid type.
    unsafe { &*ffi::ggml_get_type_traits(format.ggml_type()) }
}

fn cpu_traits(format: Format) -> &'static ffi::ggml_type_traits_cpu {
    init();
    // SAFETY: as above, for ggml-cpu's table.
    unsafe { &*ffi::ggml_get_type_traits_cpu(format.ggml_type()) }
}

/// ggml's `dequantize_row_*` (ggml-base, `type_traits.to_float`).
pub fn dequantize_row(format: Format, x: &[u8], y: &mut [f32]) -> Result<()> {
    format.check_row_bytes(y.len(), x.len())?;
    let f = traits(format).to_float.ok_or(Error::Unsupported {
        format,
        what: "ggml dequantize",
    })?;
    // SAFETY: x holds exactly y.len() / block_len blocks; y has y.len() floats.
    unsafe { f(x.as_ptr().cast(), y.as_mut_ptr(), y.len() as i64) };
    Ok(())
}

fn quantize_with(f: ffi::ggml_from_float_t, format: Format, x: &[f32], y: &mut [u8]) -> Result<()> {
    format.check_row_bytes(x.len(), y.len())?;
    let f = f.ok_or(Error::Unsupported {
        format,
        what: "ggml quantizer",
    })?;
    // SAFETY: y holds exactly the blocks of x.len() values.
    unsafe { f(x.as_ptr(), y.as_mut_ptr().cast::<c_void>(), x.len() as i64) };
    Ok(())
}

/// ggml's reference quantizer (`type_traits.from_float_ref`, e.g. `quantize_row_q8_0_ref`).
pub fn quantize_row_ref(format: Format, x: &[f32], y: &mut [u8]) -> Result<()> {
    match format {
        // ggml's type table has no from_float_ref for Q8_K; its reference is exported directly.
        Format::Q8K => quantize_with(Some(q8_k_ref), format, x, y),
        _ => quantize_with(traits(format).from_float_ref, format, x, y),
    }
}

unsafe extern "C" fn q8_k_ref(x: *const f32, y: *mut c_void, k: i64) {
    // SAFETY: the caller (quantize_with) checked that y holds the blocks of k values.
    unsafe { ffi::quantize_row_q8_K_ref(x, y.cast(), k) }
}

/// ggml-cpu's quantizer (`type_traits_cpu.from_float`): how ggml quantizes
/// activations in its matmuls on this architecture.
pub fn quantize_row_cpu(format: Format, x: &[f32], y: &mut [u8]) -> Result<()> {
    quantize_with(cpu_traits(format).from_float, format, x, y)
}

/// The format ggml-cpu quantizes activations to for a dot product with `format`.
pub fn vec_dot_type(format: Format) -> u32 {
    cpu_traits(format).vec_dot_type
}

/// ggml-cpu's `vec_dot` of a row of `len` weights of `format` with activations
/// already quantized to its `vec_dot_type`.
pub fn vec_dot(format: Format, len: usize, x: &[u8], y: &[u8]) -> Result<f32> {
    format.check_row_bytes(len, x.len())?;
    format.activation().check_row_bytes(len, y.len())?;
    if len > i32::MAX as usize {
        return Err(Error::LengthMismatch {
            what: "row length (ggml takes an int)",
            expected: i32::MAX as usize,
            got: len,
        });
    }
    let f = cpu_traits(format).vec_dot.ok_or(Error::Unsupported {
        format,
        what: "ggml-cpu vec_dot",
    })?;
    let mut s = 0.0f32;
    // SAFETY: x and y hold exactly the blocks of len values; nrc = 1 writes one float to s.
    unsafe {
        f(
            len as i32,
            &mut s,
            0,
            x.as_ptr().cast(),
            0,
            y.as_ptr().cast(),
            0,
            1,
        )
    };
    Ok(s)
}

/// Walks a GGUF's header, key-value pairs and tensor infos for what ggml
/// accepts on reading but aborts on when the file is copied or written (by
/// `prune`, `quantize`): an empty key, and a key or tensor name with a NUL
/// byte, which ggml's C strings cut short (`GGML_ASSERT(!key.empty())`, or
/// "duplicate tensor name"). Every length is checked against the file's size
/// before it is used. Everything else ggml's reader checks itself, with a
/// message.
pub fn check_gguf_keys(path: &std::path::Path) -> std::result::Result<(), String> {
    use std::io::{BufReader, Read, Seek, SeekFrom};
    struct Walk {
        r: BufReader<std::fs::File>,
        at: u64,
        len: u64,
    }
    impl Walk {
        /// A little-endian integer of `n` <= 8 bytes, if the file holds it.
        fn int(&mut self, n: u64) -> Option<u64> {
            let mut b = [0u8; 8];
            (n <= self.len - self.at).then_some(())?;
            self.r.read_exact(&mut b[..n as usize]).ok()?;
            self.at += n;
            Some(u64::from_le_bytes(b))
        }
        /// Skips `n` bytes, if the file holds them.
        fn skip(&mut self, n: u64) -> bool {
            let ok = n <= self.len - self.at && self.r.seek(SeekFrom::Current(n as i64)).is_ok();
            self.at = self.at.saturating_add(n).min(self.len);
            ok
        }
        /// Skips a string: its length, then its bytes.
        fn string(&mut self) -> bool {
            self.int(8).is_some_and(|n| self.skip(n))
        }
        /// A name: its length, then its bytes (`None` past the end).
        fn name(&mut self) -> Option<Vec<u8>> {
            let n = self.int(8)?;
            (n <= self.len - self.at).then_some(())?;
            let mut v = vec![0u8; n as usize];
            self.r.read_exact(&mut v).ok()?;
            self.at += n;
            Some(v)
        }
    }
    let scalar = |t: u64| match t {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    };
    let e = |e: std::io::Error| format!("{}: {e}", path.display());
    let f = std::fs::File::open(path).map_err(e)?;
    let len = f.metadata().map_err(e)?.len();
    let mut w = Walk {
        r: BufReader::new(f),
        at: 0,
        len,
    };
    // Magic, version and counts: ggml's reader says what is wrong with them.
    let (Some(_), Some(_), Some(n_tensors), Some(n_kv)) = (w.int(4), w.int(4), w.int(8), w.int(8))
    else {
        return Ok(());
    };
    let bad_name = |what: &str, i: u64, name: &[u8]| -> Option<String> {
        let why = if name.is_empty() {
            "is empty"
        } else if name.contains(&0) {
            "has a NUL byte"
        } else {
            return None;
        };
        Some(format!(
            "{}: the {what} of {i} {why} ({:?})",
            path.display(),
            String::from_utf8_lossy(name)
        ))
    };
    for i in 0..n_kv {
        let Some(key) = w.name() else {
            return Ok(());
        };
        if let Some(e) = bad_name("key of key-value pair", i, &key) {
            return Err(e);
        }
        let ok = match w.int(4) {
            Some(8) => w.string(),
            Some(9) => match (w.int(4), w.int(8)) {
                (Some(8), Some(n)) => (0..n).all(|_| w.string()),
                (Some(t), Some(n)) => scalar(t)
                    .and_then(|s| n.checked_mul(s))
                    .is_some_and(|b| w.skip(b)),
                _ => false,
            },
            Some(t) => scalar(t).is_some_and(|s| w.skip(s)),
            None => false,
        };
        if !ok {
            // Past the end or an unknown type: ggml's reader refuses it.
            return Ok(());
        }
    }
    for i in 0..n_tensors {
        let Some(name) = w.name() else {
            return Ok(());
        };
        if let Some(e) = bad_name("name of tensor", i, &name) {
            return Err(e);
        }
        // Dimensions, then the type and the offset.
        match w.int(4) {
            Some(n_dims) if n_dims <= 4 && w.skip(8 * n_dims + 12) => {}
            _ => return Ok(()),
        }
    }
    Ok(())
}

/// A GGUF file opened by ggml: its metadata, and its tensors in a ggml
/// context (their data too when opened with data). Both are freed on drop.
pub struct GgufFile {
    pub gguf: *mut ffi::gguf_context,
    /// The tensors: shapes and types, and with data their bytes.
    pub ctx: *mut ffi::ggml_context,
}

impl GgufFile {
    /// Opens `path`; with `data`, reads every tensor's bytes into memory too.
    pub fn open(path: &std::path::Path, data: bool) -> std::result::Result<GgufFile, String> {
        init();
        check_gguf_keys(path)?;
        let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|e| e.to_string())?;
        let mut ctx: *mut ffi::ggml_context = std::ptr::null_mut();
        let gguf = failing(|| {
            // SAFETY: a NUL-terminated path; ggml writes the context pointer only.
            let g = unsafe {
                ffi::gguf_init_from_file(
                    p.as_ptr(),
                    ffi::gguf_init_params {
                        no_alloc: !data,
                        ctx: &mut ctx,
                    },
                )
            };
            (!g.is_null()).then_some(g)
        })
        .map_err(|why| {
            format!(
                "{}: {}",
                path.display(),
                why.as_deref()
                    .unwrap_or("not a GGUF file, truncated or unreadable")
            )
        })?;
        Ok(GgufFile { gguf, ctx })
    }
}

impl Drop for GgufFile {
    fn drop(&mut self) {
        // SAFETY: made by gguf_init_from_file (and its context), freed once here.
        unsafe {
            ffi::gguf_free(self.gguf);
            if !self.ctx.is_null() {
                ffi::ggml_free(self.ctx);
            }
        }
    }
}
