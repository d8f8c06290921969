//! A thin safe layer over the vendored libllama: load a GGUF model, evaluate
//! tokens, read logits. Whatever backends are registered when a model loads
//! (the CPU backend, and LLMK if registered) take its weights, as in llama.cpp.

use crate::ffi;
use std::ffi::{c_void, CString};
use std::path::Path;
use std::sync::Once;

/// Initializes llama.cpp once; its log goes through [`crate::ggml`]'s filter
/// (warnings and errors to stderr) unless `LLMKERNEL_LLAMA_LOG=1`.
pub fn init() {
    static ONCE: Once = Once::new();
    crate::ggml::init();
    ONCE.call_once(|| {
        // SAFETY: plain initialisation calls; the callback is a plain function.
        unsafe {
            ffi::llama_backend_init();
            if std::env::var_os("LLMKERNEL_LLAMA_LOG").is_none_or(|v| v != "1") {
                ffi::llama_log_set(Some(crate::ggml::log_warnings), std::ptr::null_mut());
            }
        }
    });
}

/// Reads `path`'s metadata (architecture, hyperparameters, vocabulary, tensor
/// shapes; no weights) with llama.cpp in a child process. llama.cpp aborts on some malformed
/// hyperparameters (`GGML_ASSERT` on a block count of 0, an expert count
/// above its maximum, ...) instead of refusing them; here that abort ends the
/// child and becomes a one-line error naming the failed check.
pub fn probe(path: &Path) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::io::Read;
        use std::os::fd::FromRawFd;
        unsafe extern "C" {
            fn fork() -> i32;
            fn pipe(fds: *mut i32) -> i32;
            fn dup2(old: i32, new: i32) -> i32;
            fn close(fd: i32) -> i32;
            fn waitpid(pid: i32, status: *mut i32, options: i32) -> i32;
            fn _exit(code: i32) -> !;
        }
        init();
        crate::ggml::check_gguf_keys(path)?;
        let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
        let mut fds = [0i32; 2];
        // SAFETY: pipe writes two descriptors into fds.
        if unsafe { pipe(fds.as_mut_ptr()) } != 0 {
            return Ok(()); // no probe possible; the load itself will tell
        }
        // SAFETY: the child only loads metadata with llama.cpp, writes to the
        // pipe and exits without unwinding or running destructors.
        let pid = unsafe { fork() };
        if pid == 0 {
            // SAFETY: in the child: stderr to the pipe, one load without weights, _exit.
            unsafe {
                dup2(fds[1], 2);
                close(fds[0]);
                let mut p = ffi::llama_model_default_params();
                p.n_gpu_layers = 0;
                // Metadata and tensor shapes, no weights read (llama.cpp's
                // memory-fit pass: no mapping either).
                p.no_alloc = true;
                p.load_mode = ffi::LLAMA_LOAD_MODE_NONE;
                let m = ffi::llama_model_load_from_file(c.as_ptr(), p);
                _exit(if m.is_null() { 1 } else { 0 })
            }
        }
        // SAFETY: our descriptors; the read end becomes a File closed on drop.
        let mut out = String::new();
        unsafe {
            close(fds[1]);
            if pid < 0 {
                close(fds[0]);
                return Ok(());
            }
            let _ = std::fs::File::from_raw_fd(fds[0]).read_to_string(&mut out);
        }
        let mut status = 0i32;
        // SAFETY: waits for the child made above.
        unsafe { waitpid(pid, &mut status, 0) };
        let (exited, code, signal) = (status & 0x7f == 0, (status >> 8) & 0xff, status & 0x7f);
        let line = |pick: &dyn Fn(&&str) -> bool| {
            out.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .find(pick)
                .map(str::to_string)
        };
        if exited && code == 0 {
            return Ok(());
        }
        if !exited {
            let why = line(&|l| l.contains("GGML_ASSERT") || l.contains("error"))
                .unwrap_or_else(|| format!("signal {signal}"));
            return Err(format!(
                "{}: llama.cpp aborts reading this file's metadata ({why})",
                path.display()
            ));
        }
        let why = line(&|l| l.contains("error"))
            .map_or_else(|| "see above".into(), |l| crate::ggml::reason(&l));
        Err(format!(
            "llama.cpp could not load {}: {why}",
            path.display()
        ))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}

/// A loaded model.
pub struct Model {
    ptr: *mut ffi::llama_model,
}
// SAFETY: llama_model is immutable after loading and used from one thread at a time here.
unsafe impl Send for Model {}

impl Model {
    /// Loads `path` (memory-mapped, as llama.cpp does by default).
    pub fn load(path: &Path) -> Result<Model, String> {
        Model::load_mapped(path, true)
    }

    /// Loads `path`, memory-mapped or (`mmap` false) read into allocated
    /// buffers, as llama-bench's `-mmp 1` / `-mmp 0`.
    pub fn load_mapped(path: &Path, mmap: bool) -> Result<Model, String> {
        init();
        crate::ggml::check_gguf_keys(path)?;
        let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
        let ptr = crate::ggml::failing(|| {
            // SAFETY: default params; a NUL-terminated path; null on failure.
            let ptr = unsafe {
                let mut p = ffi::llama_model_default_params();
                p.n_gpu_layers = 0;
                if !mmap {
                    p.load_mode = ffi::LLAMA_LOAD_MODE_NONE;
                }
                ffi::llama_model_load_from_file(c.as_ptr(), p)
            };
            (!ptr.is_null()).then_some(ptr)
        })
        .map_err(|why| {
            let why = why.unwrap_or_else(|| "see the log above".into());
            format!("llama.cpp could not load {}: {why}", path.display())
        })?;
        Ok(Model { ptr })
    }

    /// Tokenizes `text` as llama.cpp's tools do (`common_tokenize(ctx, text,
    /// add_special = true, parse_special = false)`): BOS first if the vocabulary
    /// asks for it.
    pub fn tokenize(&self, text: &str) -> Result<Vec<i32>, String> {
        let len = i32::try_from(text.len()).map_err(|_| "text longer than 2 GiB".to_string())?;
        // SAFETY: a live model; text is len bytes; tokens has the room we pass.
        let run = |tokens: &mut [i32]| unsafe {
            ffi::llama_tokenize(
                ffi::llama_model_get_vocab(self.ptr),
                text.as_ptr().cast(),
                len,
                tokens.as_mut_ptr(),
                tokens.len() as i32,
                true,
                false,
            )
        };
        let mut tokens = vec![0i32; text.len() + 2];
        let mut n = run(&mut tokens);
        if n < 0 {
            // Too small: llama_tokenize says how many it needs.
            tokens.resize((-n) as usize, 0);
            n = run(&mut tokens);
        }
        if n < 0 {
            return Err("tokenization failed".into());
        }
        tokens.truncate(n as usize);
        Ok(tokens)
    }

    /// The BOS token when the vocabulary wants one at the start of a sequence.
    pub fn bos(&self) -> Option<i32> {
        // SAFETY: a live model.
        unsafe {
            let vocab = ffi::llama_model_get_vocab(self.ptr);
            ffi::llama_vocab_get_add_bos(vocab).then(|| ffi::llama_vocab_bos(vocab))
        }
    }

    /// llama.cpp's one-line description (architecture, size, type).
    pub fn description(&self) -> String {
        let mut buf = [0u8; 256];
        // SAFETY: writes at most buf.len() bytes, NUL-terminated.
        unsafe { ffi::llama_model_desc(self.ptr, buf.as_mut_ptr().cast(), buf.len()) };
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    }

    /// Bytes of weights and parameters.
    pub fn size_and_params(&self) -> (u64, u64) {
        // SAFETY: a live model.
        unsafe {
            (
                ffi::llama_model_size(self.ptr),
                ffi::llama_model_n_params(self.ptr),
            )
        }
    }

    /// The context length the model was trained for (0 if it does not say).
    pub fn n_ctx_train(&self) -> usize {
        // SAFETY: a live model.
        unsafe { ffi::llama_model_n_ctx_train(self.ptr).max(0) as usize }
    }

    pub fn n_vocab(&self) -> usize {
        // SAFETY: a live model.
        unsafe { ffi::llama_vocab_n_tokens(ffi::llama_model_get_vocab(self.ptr)) as usize }
    }

    /// A context of `n_ctx` tokens evaluating `n_batch` at a time on `threads` threads.
    pub fn context(
        &self,
        n_ctx: usize,
        n_batch: usize,
        threads: usize,
    ) -> Result<Context<'_>, String> {
        self.context_with_callback(n_ctx, n_batch, threads, None, std::ptr::null_mut())
    }

    /// [`Model::context`] with libllama's eval callback (`cb_eval`): it is
    /// asked about every graph node and sees the data of those it wants.
    /// `user_data` must outlive the context.
    pub fn context_with_callback(
        &self,
        n_ctx: usize,
        n_batch: usize,
        threads: usize,
        cb: ffi::ggml_backend_sched_eval_callback,
        user_data: *mut c_void,
    ) -> Result<Context<'_>, String> {
        // SAFETY: a live model; null on failure.
        let ptr = unsafe {
            let mut p = ffi::llama_context_default_params();
            p.n_ctx = n_ctx as u32;
            p.n_batch = n_batch as u32;
            p.n_ubatch = n_batch as u32;
            p.n_threads = threads as i32;
            p.n_threads_batch = threads as i32;
            p.no_perf = true;
            p.cb_eval = cb;
            p.cb_eval_user_data = user_data;
            ffi::llama_init_from_model(self.ptr, p)
        };
        if ptr.is_null() {
            return Err("llama.cpp could not create a context".into());
        }
        Ok(Context {
            ptr,
            model: self,
            n_pos: 0,
        })
    }
}

/// Evaluates `model` over up to `chunks` chunks of `ctx` tokens of `text`
/// (BOS first where the vocabulary has one; outputs for every token, as
/// llama-imatrix, so the last layer sees all rows) with libllama's eval
/// callback `cb` and its `user_data` (which must outlive the run). After each
/// chunk `after` may end the run with an error. Returns the number of chunks.
#[allow(clippy::too_many_arguments)]
pub fn eval_chunks(
    model: &Path,
    text: &Path,
    ctx: usize,
    chunks: Option<usize>,
    threads: usize,
    cb: ffi::ggml_backend_sched_eval_callback,
    user_data: *mut c_void,
    label: &str,
    after: &mut dyn FnMut() -> Result<(), String>,
) -> Result<usize, String> {
    let body = std::fs::read_to_string(text).map_err(|e| format!("{}: {e}", text.display()))?;
    let m = Model::load(model)?;
    let tokens = m.tokenize(&body)?;
    let n = (tokens.len() / ctx).min(chunks.unwrap_or(usize::MAX));
    if n == 0 {
        return Err(format!("{} has fewer than {ctx} tokens", text.display()));
    }
    let mut cx = m.context_with_callback(ctx, ctx, threads, cb, user_data)?;
    for i in 0..n {
        let mut chunk = tokens[i * ctx..(i + 1) * ctx].to_vec();
        if let Some(b) = m.bos() {
            chunk[0] = b;
        }
        cx.clear();
        cx.eval_from(&chunk, 0)?;
        after()?;
        eprint!("\r{label}: chunk {}/{n} ", i + 1);
    }
    eprintln!();
    Ok(n)
}

impl Drop for Model {
    fn drop(&mut self) {
        // SAFETY: made by llama_model_load_from_file; contexts borrow the model, so are gone.
        unsafe { ffi::llama_model_free(self.ptr) };
    }
}

/// An evaluation context of one sequence.
pub struct Context<'m> {
    ptr: *mut ffi::llama_context,
    model: &'m Model,
    n_pos: usize,
}

impl Context<'_> {
    /// Forgets all evaluated tokens (the next token is at position 0).
    pub fn clear(&mut self) {
        // SAFETY: a live context.
        unsafe { ffi::llama_memory_clear(ffi::llama_get_memory(self.ptr), true) };
        self.n_pos = 0;
    }

    /// Evaluates `tokens` as one batch after those already evaluated and
    /// returns the logits of every one of them (`tokens.len()` rows of n_vocab).
    pub fn eval(&mut self, tokens: &[i32]) -> Result<Vec<f32>, String> {
        self.eval_from(tokens, 0)
    }

    /// [`Context::eval`] with logits for the last token only (as llama-bench
    /// evaluates a prompt).
    pub fn eval_last(&mut self, tokens: &[i32]) -> Result<Vec<f32>, String> {
        self.eval_from(tokens, tokens.len().saturating_sub(1))
    }

    /// [`Context::eval`], returning logits only for `tokens[from..]` (llama.cpp
    /// computes the output layer only for those).
    pub fn eval_from(&mut self, tokens: &[i32], from: usize) -> Result<Vec<f32>, String> {
        let n_vocab = self.model.n_vocab();
        if let Some(&t) = tokens.iter().find(|&&t| t < 0 || t as usize >= n_vocab) {
            return Err(format!(
                "token {t} is outside the vocabulary (0..{n_vocab})"
            ));
        }
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        // SAFETY: the batch holds tokens.len() entries, each written below before llama_decode.
        unsafe {
            let batch = ffi::llama_batch_init(tokens.len() as i32, 0, 1);
            for (i, &t) in tokens.iter().enumerate() {
                *batch.token.add(i) = t;
                *batch.pos.add(i) = (self.n_pos + i) as i32;
                *batch.n_seq_id.add(i) = 1;
                **batch.seq_id.add(i) = 0;
                *batch.logits.add(i) = (i >= from) as i8;
            }
            let mut b = batch;
            b.n_tokens = tokens.len() as i32;
            let rc = ffi::llama_decode(self.ptr, b);
            if rc != 0 {
                ffi::llama_batch_free(batch);
                return Err(format!("llama_decode failed ({rc})"));
            }
            let mut out = Vec::with_capacity(tokens.len().saturating_sub(from) * n_vocab);
            for i in from..tokens.len() {
                let l = ffi::llama_get_logits_ith(self.ptr, i as i32);
                if l.is_null() {
                    ffi::llama_batch_free(batch);
                    return Err(format!("no logits for batch position {i}"));
                }
                out.extend_from_slice(std::slice::from_raw_parts(l, n_vocab));
            }
            ffi::llama_batch_free(batch);
            self.n_pos += tokens.len();
            Ok(out)
        }
    }
}

impl Drop for Context<'_> {
    fn drop(&mut self) {
        // SAFETY: made by llama_init_from_model.
        unsafe { ffi::llama_free(self.ptr) };
    }
}
