//! A model whose logits are not finite: `perplexity` stops with an error
//! that says where, instead of reporting a perplexity of NaN.

use llmkernel::perplexity::{self, Kernels};
use llmkernel::{ffi, synthetic};
use llmkernel_kernels::Format;
use std::ffi::CString;
use std::io::{Seek, SeekFrom, Write};

/// Overwrites the F32 tensor `name` of the GGUF at `path` with `value`.
fn poison(path: &std::path::Path, name: &str, value: f32) {
    let p = CString::new(path.to_str().unwrap()).unwrap();
    let name = CString::new(name).unwrap();
    // SAFETY: a GGUF this test wrote; metadata only (no_alloc), freed once.
    let (offset, n) = unsafe {
        let g = ffi::gguf_init_from_file(
            p.as_ptr(),
            ffi::gguf_init_params {
                no_alloc: true,
                ctx: std::ptr::null_mut(),
            },
        );
        assert!(!g.is_null());
        let id = ffi::gguf_find_tensor(g, name.as_ptr());
        assert!(id >= 0);
        assert_eq!(ffi::gguf_get_tensor_type(g, id), ffi::GGML_TYPE_F32);
        let r = (
            ffi::gguf_get_data_offset(g) + ffi::gguf_get_tensor_offset(g, id),
            ffi::gguf_get_tensor_size(g, id) / 4,
        );
        ffi::gguf_free(g);
        r
    };
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(offset as u64)).unwrap();
    let bytes: Vec<u8> = (0..n).flat_map(|_| value.to_le_bytes()).collect();
    f.write_all(&bytes).unwrap();
}

#[test]
fn non_finite_logits_are_an_error_that_says_where() {
    let dir = std::env::temp_dir().join(format!("llmk-nonfinite-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("nan.gguf");
    synthetic::write_llama(&model, Format::Q8_0, synthetic::Shape::default(), 5).unwrap();
    let text = dir.join("text.txt");
    std::fs::write(
        &text,
        "the quick brown fox jumps over the lazy dog. ".repeat(40),
    )
    .unwrap();
    let opts = |model: &std::path::Path| perplexity::Options {
        model: model.into(),
        text: text.clone(),
        ctx: 64,
        chunks: Some(1),
        threads: 2,
        kernels: Kernels::Ggml,
        teacher: None,
        progress: false,
        decode: 0,
        save_logits: None,
        kl_base: None,
        teacher_is_exact: false,
    };
    // The same model before the poison scores a finite perplexity.
    let ok = perplexity::run(&opts(&model)).unwrap();
    assert!(ok.scores[0].ppl().0.is_finite());
    poison(&model, "output_norm.weight", f32::NAN);
    let err = perplexity::run(&opts(&model))
        .err()
        .expect("NaN logits must fail");
    assert!(err.contains("non-finite logit NaN"), "{err}");
    assert!(
        err.contains("at position 32 of a chunk with ggml kernels"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
