//! `llmkernel quantize`: a GGUF model to one of the kernels' formats, through
//! the vendored `llama_model_quantize` (the code behind llama-quantize).

use crate::{ffi, llama};
use llmkernel_kernels::Format;
use std::ffi::CString;
use std::path::Path;

/// llama.cpp's file type for `format` (the format's `WeightBlock::LLAMA_FTYPE`):
/// the `_M` mixes for the k-quants (a few sensitive tensors one step up, as
/// llama-quantize's Q3_K_M / Q4_K_M), or every matrix in `format` with `pure`.
fn ftype(format: Format) -> Result<ffi::llama_ftype, String> {
    if let Some(ftype) = format.llama_ftype() {
        return Ok(ftype as ffi::llama_ftype);
    }
    Err(
        match format.sparse_2_4().is_none() && format.dense() != format {
            true => format!(
                "{format} is made by `llmkernel prune --pattern 2:4 --format {}`",
                format.dense()
            ),
            false => format!("{format} is an activation format, not a weight format"),
        },
    )
}

/// Whether llama-quantize makes `format` only with an importance matrix
/// (its `tensor_requires_imatrix`: the 2-bit i-quants and IQ3_XXS, whose
/// grids without one give garbage).
pub fn needs_imatrix(format: Format) -> bool {
    matches!(
        format,
        Format::IQ2_XXS | Format::IQ2_XS | Format::IQ2_S | Format::IQ3_XXS
    )
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
    imatrix: Option<&Path>,
) -> Result<(), String> {
    if input == output {
        return Err("the output must be another file than the input".into());
    }
    crate::ggml::check_gguf_keys(input)?;
    if !input.is_file() {
        return Err(format!("{}: no such file", input.display()));
    }
    if imatrix.is_none() && needs_imatrix(format) {
        return Err(format!(
            "{format} needs an importance matrix (llama-quantize makes it only with one): \
             make one with `llmkernel imatrix -m {} -f TEXT -o IMATRIX.gguf`, then add --imatrix IMATRIX.gguf",
            input.display()
        ));
    }
    llama::init();
    // The importance matrix as llama-quantize passes it: one entry per weight,
    // then a null-name terminator.
    let im = imatrix
        .map(crate::imatrix::load)
        .transpose()?
        .unwrap_or_default();
    let names: Vec<CString> = im
        .iter()
        .map(|(n, _)| CString::new(n.as_str()).unwrap())
        .collect();
    let mut entries: Vec<ffi::llama_model_imatrix_data> = im
        .iter()
        .zip(&names)
        .map(|((_, v), n)| ffi::llama_model_imatrix_data {
            name: n.as_ptr(),
            data: v.as_ptr(),
            size: v.len(),
        })
        .collect();
    entries.push(ffi::llama_model_imatrix_data {
        name: std::ptr::null(),
        data: std::ptr::null(),
        size: 0,
    });
    let i = CString::new(input.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    let o = CString::new(output.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    let p = {
        // SAFETY: plain default parameters.
        let mut p = unsafe { ffi::llama_model_quantize_default_params() };
        p.ftype = ftype(format)?;
        p.nthread = threads as i32;
        p.allow_requantize = true;
        p.pure_ = pure;
        if imatrix.is_some() {
            p.imatrix = entries.as_ptr();
        }
        p
    };
    // SAFETY: NUL-terminated paths; parameters whose imatrix (if any) lives
    // in `entries` past the call; returns 0 on success.
    crate::ggml::failing(|| {
        (unsafe { ffi::llama_model_quantize(i.as_ptr(), o.as_ptr(), &p) } == 0).then_some(())
    })
    .map_err(|why| {
        let why = why.unwrap_or_else(|| "see the log above".into());
        format!("quantizing {} failed: {why}", input.display())
    })
}

#[cfg(test)]
mod tests {
    /// The kernels crate states each format's llama_ftype as a number: it
    /// must be llama.h's.
    #[test]
    fn ftypes_are_llama_h_s() {
        use crate::ffi;
        use llmkernel_kernels::Format;
        let want = [
            (Format::Q4K, ffi::LLAMA_FTYPE_MOSTLY_Q4_K_M),
            (Format::Q3K, ffi::LLAMA_FTYPE_MOSTLY_Q3_K_M),
            (Format::Q2K, ffi::LLAMA_FTYPE_MOSTLY_Q2_K),
            (Format::Q4_0, ffi::LLAMA_FTYPE_MOSTLY_Q4_0),
            (Format::Q8_0, ffi::LLAMA_FTYPE_MOSTLY_Q8_0),
            (Format::Q5K, ffi::LLAMA_FTYPE_MOSTLY_Q5_K_M),
            (Format::Q6K, ffi::LLAMA_FTYPE_MOSTLY_Q6_K),
            (Format::Q5_0, ffi::LLAMA_FTYPE_MOSTLY_Q5_0),
            (Format::IQ4_NL, ffi::LLAMA_FTYPE_MOSTLY_IQ4_NL),
            (Format::IQ4_XS, ffi::LLAMA_FTYPE_MOSTLY_IQ4_XS),
            (Format::IQ2_XXS, ffi::LLAMA_FTYPE_MOSTLY_IQ2_XXS),
            (Format::IQ2_XS, ffi::LLAMA_FTYPE_MOSTLY_IQ2_XS),
            (Format::IQ2_S, ffi::LLAMA_FTYPE_MOSTLY_IQ2_S),
            (Format::IQ3_XXS, ffi::LLAMA_FTYPE_MOSTLY_IQ3_XXS),
            (Format::IQ3_S, ffi::LLAMA_FTYPE_MOSTLY_IQ3_S),
            (Format::TQ1_0, ffi::LLAMA_FTYPE_MOSTLY_TQ1_0),
            (Format::TQ2_0, ffi::LLAMA_FTYPE_MOSTLY_TQ2_0),
        ];
        for (f, t) in want {
            assert_eq!(super::ftype(f), Ok(t), "{f}");
        }
        assert!(super::ftype(Format::Q8K)
            .unwrap_err()
            .contains("activation"));
        assert!(super::ftype(Format::Q4_0S).unwrap_err().contains("prune"));
    }
}

/// The exact reference of a quantized model: every tensor dequantized to F32
/// (ggml's dequantizers, through `llama_model_quantize` to F32), so that a run
/// of it multiplies the same weights in F32 without quantizing any
/// activation. Made once per model file in `dir` (named by the model's name,
/// size and modification time) and reused.
pub fn exact_reference(
    model: &Path,
    dir: &Path,
    threads: usize,
) -> Result<std::path::PathBuf, String> {
    let meta = std::fs::metadata(model).map_err(|e| format!("{}: {e}", model.display()))?;
    let stamp = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let stem = model
        .file_stem()
        .map_or("model".into(), |s| s.to_string_lossy().into_owned());
    let out = dir.join(format!("{stem}-{}-{stamp}.exact-f32.gguf", meta.len()));
    if out.is_file() {
        return Ok(out);
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let partial = out.with_extension("partial");
    llama::init();
    let i = CString::new(model.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    let o = CString::new(partial.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: plain default parameters.
    let mut p = unsafe { ffi::llama_model_quantize_default_params() };
    p.ftype = ffi::LLAMA_FTYPE_ALL_F32;
    p.nthread = threads as i32;
    p.allow_requantize = true;
    p.pure_ = true;
    // SAFETY: NUL-terminated paths, parameters without pointers; 0 on success.
    crate::ggml::failing(|| {
        (unsafe { ffi::llama_model_quantize(i.as_ptr(), o.as_ptr(), &p) } == 0).then_some(())
    })
    .map_err(|why| {
        let why = why.unwrap_or_else(|| "see the log above".into());
        format!("dequantizing {} to F32 failed: {why}", model.display())
    })?;
    // Every tensor must now be F32: a quantized one left would not be exact.
    let g = crate::ggml::GgufFile::open(&partial, false)?;
    // SAFETY: gguf accessors on a live context, ids in range.
    let left: Vec<String> = (0..unsafe { ffi::gguf_get_n_tensors(g.gguf) })
        .filter(|&id| unsafe { ffi::gguf_get_tensor_type(g.gguf, id) } != ffi::GGML_TYPE_F32)
        .map(|id| {
            unsafe { std::ffi::CStr::from_ptr(ffi::gguf_get_tensor_name(g.gguf, id)) }
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    drop(g);
    if !left.is_empty() {
        let _ = std::fs::remove_file(&partial);
        return Err(format!(
            "the exact reference of {} keeps {} tensors unconverted ({}...)",
            model.display(),
            left.len(),
            left[0]
        ));
    }
    std::fs::rename(&partial, &out).map_err(|e| e.to_string())?;
    Ok(out)
}
