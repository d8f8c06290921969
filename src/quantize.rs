//! `llmkernel quantize`: a GGUF model to one of the kernels' formats, through
//! the vendored `llama_model_quantize` (the code behind llama-quantize).

use crate::{ffi, llama};
use llmkernel_kernels::Format;
use std::ffi::CString;
use std::path::Path;

/// llama.cpp's file type for `format`: the `_M` mixes for the k-quants (a few
/// sensitive tensors one step up, as llama-quantize's Q3_K_M / Q4_K_M), or
/// every matrix in `format` with `pure`.
fn ftype(format: Format) -> Result<ffi::llama_ftype, String> {
    Ok(match format {
        Format::Q2K => ffi::LLAMA_FTYPE_MOSTLY_Q2_K,
        Format::Q3K => ffi::LLAMA_FTYPE_MOSTLY_Q3_K_M,
        Format::Q4K => ffi::LLAMA_FTYPE_MOSTLY_Q4_K_M,
        Format::Q4_0 => ffi::LLAMA_FTYPE_MOSTLY_Q4_0,
        Format::Q8_0 => ffi::LLAMA_FTYPE_MOSTLY_Q8_0,
        Format::Q8K => return Err("q8_k is an activation format, not a weight format".into()),
    })
}

/// Quantizes `input` to `output`. Inputs that are already quantized are
/// requantized (as `llama-quantize --allow-requantize`), which loses more than
/// quantizing from F16/BF16/F32.
pub fn quantize(
    input: &Path,
    output: &Path,
    format: Format,
    pure: bool,
    threads: usize,
) -> Result<(), String> {
    if input == output {
        return Err("the output must be another file than the input".into());
    }
    if !input.is_file() {
        return Err(format!("{}: no such file", input.display()));
    }
    llama::init();
    let i = CString::new(input.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    let o = CString::new(output.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: default params with plain fields set; NUL-terminated paths; returns 0 on success.
    let rc = unsafe {
        let mut p = ffi::llama_model_quantize_default_params();
        p.ftype = ftype(format)?;
        p.nthread = threads as i32;
        p.allow_requantize = true;
        p.pure_ = pure;
        ffi::llama_model_quantize(i.as_ptr(), o.as_ptr(), &p)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "llama_model_quantize failed on {} (see the log above)",
            input.display()
        ))
    }
}
