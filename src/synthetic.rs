//! A small llama-architecture GGUF with random weights, written through the
//! vendored gguf API: for checking the LLMK backend inside libllama end to end
//! without downloading a model. The tokenizer comes from the vendored
//! vocab-only GGUF (`vendor/llama.cpp/models/ggml-vocab-llama-spm.gguf`).

use crate::ffi;
use llmkernel_kernels::Format;
use std::ffi::CString;
use std::path::{Path, PathBuf};

/// The shape of a synthetic model. Every matrix dimension a matmul reduces
/// over is a multiple of 256, so every format can take every matrix.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            n_embd: 256,
            n_ff: 512,
            n_layer: 2,
            n_head: 4,
            n_head_kv: 2,
        }
    }
}

/// The vendored vocab-only GGUF (llama SPM tokenizer, 32000 tokens).
pub fn vocab_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("vendor/llama.cpp/models/ggml-vocab-llama-spm.gguf")
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        // splitmix64 -> uniform in [-1, 1)
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// Writes a llama model of `shape` whose every matrix (token embedding and
/// output included) is stored in `format`: layer weights uniform in
/// ±sqrt(3/k) (unit-variance outputs), norms 1, and the output matrix equal
/// to the token embedding (tied, as in many small models), so that, as in a
/// trained model, the top token stands clear of the rest. (With independent
/// random output weights the top two logits of 32000 lie so close that the
/// last-bit differences of any two correct kernels, amplified by the 8-bit
/// activation rounding of later layers, flip a few percent of them.)
pub fn write_llama(path: &Path, format: Format, shape: Shape, seed: u64) -> Result<(), String> {
    write(path, format, shape, None, seed)
}

/// A llama model as [`write_llama`] writes, with `n_vocab` dummy tokens and
/// no tokenizer (`tokenizer.ggml.model = none`, `llama.vocab_size`): for
/// running token ids, not text. A small vocabulary keeps the embedding and
/// output matrices, and so the time to quantize and multiply them, small.
pub fn write_llama_untokenized(
    path: &Path,
    format: Format,
    shape: Shape,
    n_vocab: usize,
    seed: u64,
) -> Result<(), String> {
    write(path, format, shape, Some(n_vocab), seed)
}

/// A llama model as [`write_llama`] writes, of one layer of width 32 and 64
/// tokens without a tokenizer (`tokenizer.ggml.model = none`): a few
/// kilobytes, which `quantize`, `prune` and `check` read (the fuzzers' seed).
pub fn write_tiny(path: &Path, format: Format, seed: u64) -> Result<(), String> {
    let shape = Shape {
        n_embd: 32,
        n_ff: 64,
        n_layer: 1,
        n_head: 2,
        n_head_kv: 1,
    };
    write(path, format, shape, Some(64), seed)
}

/// With `n_vocab`, no tokenizer (and that many tokens); else the vendored one.
fn write(
    path: &Path,
    format: Format,
    shape: Shape,
    n_vocab: Option<usize>,
    seed: u64,
) -> Result<(), String> {
    crate::ggml::init();
    let vocab = CString::new(vocab_path().to_string_lossy().as_bytes()).unwrap();
    let head_dim = shape.n_embd / shape.n_head;
    let kv = head_dim * shape.n_head_kv;
    let mut rng = Rng(seed);
    // SAFETY: gguf/ggml calls on contexts created and freed here; every tensor
    // is created with the size its data is written with.
    unsafe {
        let g = ffi::gguf_init_empty();
        let n_vocab = match n_vocab {
            Some(n) => {
                ffi::gguf_set_val_str(g, c"tokenizer.ggml.model".as_ptr(), c"none".as_ptr());
                ffi::gguf_set_val_u32(g, c"llama.vocab_size".as_ptr(), n as u32);
                n
            }
            None => {
                let src = ffi::gguf_init_from_file(
                    vocab.as_ptr(),
                    ffi::gguf_init_params {
                        no_alloc: true,
                        ctx: std::ptr::null_mut(),
                    },
                );
                if src.is_null() {
                    ffi::gguf_free(g);
                    return Err(format!("cannot read {}", vocab_path().display()));
                }
                let key = ffi::gguf_find_key(src, c"tokenizer.ggml.tokens".as_ptr());
                if key < 0 {
                    ffi::gguf_free(src);
                    ffi::gguf_free(g);
                    return Err("the vocab GGUF has no tokenizer.ggml.tokens".into());
                }
                let n = ffi::gguf_get_arr_n(src, key);
                ffi::gguf_set_kv(g, src);
                ffi::gguf_free(src);
                n
            }
        };
        let set_u32 = |k: &str, v: usize| {
            let k = CString::new(k).unwrap();
            ffi::gguf_set_val_u32(g, k.as_ptr(), v as u32);
        };
        ffi::gguf_set_val_str(g, c"general.architecture".as_ptr(), c"llama".as_ptr());
        ffi::gguf_set_val_str(g, c"general.name".as_ptr(), c"llmkernel synthetic".as_ptr());
        set_u32("llama.context_length", 2048);
        set_u32("llama.embedding_length", shape.n_embd);
        set_u32("llama.feed_forward_length", shape.n_ff);
        set_u32("llama.block_count", shape.n_layer);
        set_u32("llama.attention.head_count", shape.n_head);
        set_u32("llama.attention.head_count_kv", shape.n_head_kv);
        set_u32("llama.rope.dimension_count", head_dim);
        ffi::gguf_set_val_f32(g, c"llama.attention.layer_norm_rms_epsilon".as_ptr(), 1e-5);

        // (name, k, rows, quantized)
        let mut tensors: Vec<(String, usize, usize, bool)> = vec![
            ("token_embd.weight".into(), shape.n_embd, n_vocab, true),
            ("output_norm.weight".into(), shape.n_embd, 1, false),
            ("output.weight".into(), shape.n_embd, n_vocab, true),
        ];
        for l in 0..shape.n_layer {
            let b = |n: &str| format!("blk.{l}.{n}.weight");
            tensors.extend([
                (b("attn_norm"), shape.n_embd, 1, false),
                (b("attn_q"), shape.n_embd, shape.n_embd, true),
                (b("attn_k"), shape.n_embd, kv, true),
                (b("attn_v"), shape.n_embd, kv, true),
                (b("attn_output"), shape.n_embd, shape.n_embd, true),
                (b("ffn_norm"), shape.n_embd, 1, false),
                (b("ffn_gate"), shape.n_embd, shape.n_ff, true),
                (b("ffn_up"), shape.n_embd, shape.n_ff, true),
                (b("ffn_down"), shape.n_ff, shape.n_embd, true),
            ]);
        }
        let bytes: usize = tensors
            .iter()
            .map(|(_, k, rows, q)| {
                if *q {
                    rows * k / format.block_len() * format.block_bytes()
                } else {
                    k * 4
                }
            })
            .sum();
        let ctx = ffi::ggml_init(ffi::ggml_init_params {
            mem_size: bytes + tensors.len() * (ffi::ggml_tensor_overhead() + 64) + 4096,
            mem_buffer: std::ptr::null_mut(),
            no_alloc: false,
        });
        if ctx.is_null() {
            ffi::gguf_free(g);
            return Err("ggml_init failed".into());
        }
        let mut embedding = Vec::new();
        for (name, k, rows, quantized) in &tensors {
            let t = if *quantized {
                let q = if name == "output.weight" {
                    std::mem::take(&mut embedding)
                } else {
                    let a = (3.0 / *k as f32).sqrt();
                    let scale = if name == "token_embd.weight" { 1.0 } else { a };
                    let x: Vec<f32> = (0..k * rows).map(|_| rng.next() * scale).collect();
                    crate::ggml_mm::quantize(format, &x, *rows, *k, 2)?
                };
                if name == "token_embd.weight" {
                    embedding = q.clone();
                }
                let t = ffi::ggml_new_tensor_2d(ctx, format.ggml_type(), *k as i64, *rows as i64);
                std::ptr::copy_nonoverlapping(q.as_ptr(), (*t).data as *mut u8, q.len());
                t
            } else {
                let t = ffi::ggml_new_tensor_1d(ctx, ffi::GGML_TYPE_F32, *k as i64);
                std::slice::from_raw_parts_mut((*t).data as *mut f32, *k).fill(1.0);
                t
            };
            let n = CString::new(name.as_str()).unwrap();
            ffi::ggml_set_name(t, n.as_ptr());
            ffi::gguf_add_tensor(g, t);
        }
        let out = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        let ok = ffi::gguf_write_to_file(g, out.as_ptr(), false);
        ffi::gguf_free(g);
        ffi::ggml_free(ctx);
        if ok {
            Ok(())
        } else {
            Err(format!("cannot write {}", path.display()))
        }
    }
}
