//! `llmkernel check`: every tensor of a GGUF model scanned for the values
//! that make a model print garbage: non-finite (NaN, ±Inf) block scales and
//! float weights, and absurd scales. Each finding names the tensor, the block
//! and the value.
//!
//! The subcommands that read a model run the same scan first and refuse a
//! model with a non-finite value ([`preflight`]), so a broken file
//! is an error that says where, not a perplexity of NaN.

use crate::ffi;
use crate::ggml::GgufFile;
use half::{bf16, f16};
use llmkernel_kernels::formats::{Format, WithFormat};
use llmkernel_kernels::table::Kernels;
use llmkernel_kernels::testdata::RandomBlock;
use std::ffi::CStr;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// A block scale larger than this is reported as absurd: it would make the
/// block's weights reach thousands or more, where trained weights stay
/// within a few units.
pub const ABSURD_SCALE: f32 = 1000.0;

/// What a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    NonFinite,
    Absurd,
}

/// One bad value.
#[derive(Clone, Debug)]
pub struct Finding {
    pub tensor: String,
    pub ggml_type: String,
    /// The block of a quantized tensor, the element of a float tensor.
    pub index: u64,
    /// What the value is: `scale d`, `scale dmin`, `value`.
    pub what: &'static str,
    pub value: f32,
    pub kind: Kind,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            Kind::NonFinite => "non-finite",
            Kind::Absurd => "absurd",
        };
        if self.what == GGML {
            return write!(
                f,
                "tensor {} ({}), the 4 MiB of blocks from block {}: a non-finite value (found by ggml_validate_row_data)",
                self.tensor, self.ggml_type, self.index
            );
        }
        let unit = if self.what == "value" {
            "element"
        } else {
            "block"
        };
        write!(
            f,
            "tensor {} ({}), {unit} {}: {} = {} ({kind})",
            self.tensor, self.ggml_type, self.index, self.what, self.value
        )
    }
}

/// The result of a scan.
#[derive(Debug, Default)]
pub struct Report {
    pub tensors: usize,
    /// Blocks (quantized) and elements (float) looked at.
    pub scanned: u64,
    pub non_finite: u64,
    pub absurd: u64,
    /// The first findings (at most [`Report::KEPT`]).
    pub findings: Vec<Finding>,
    /// Tensors of a type whose values this scan cannot locate: checked with
    /// ggml's `ggml_validate_row_data` (which finds non-finite values but not where).
    pub validated_by_ggml: usize,
}

impl Report {
    pub const KEPT: usize = 50;

    fn add(&mut self, f: Finding) {
        match f.kind {
            Kind::NonFinite => self.non_finite += 1,
            Kind::Absurd => self.absurd += 1,
        }
        if self.findings.len() < Self::KEPT {
            self.findings.push(f);
        }
    }
}

/// The `what` of a finding made by ggml's validation.
const GGML: &str = "ggml";

/// Where a quantized format keeps its f16 scales.
struct Scales;
impl WithFormat for Scales {
    type Out = (u32, usize, &'static [usize]);
    fn run<B: Kernels>(self) -> Self::Out {
        (
            B::GGML_TYPE,
            std::mem::size_of::<B>(),
            <B as RandomBlock>::SCALE_OFFSETS,
        )
    }
}

/// The names of the scales at `offsets` (`d`, then `dmin`).
fn scale_name(i: usize) -> &'static str {
    if i == 0 {
        "scale d"
    } else {
        "scale dmin"
    }
}

fn classify(v: f32) -> Option<Kind> {
    if !v.is_finite() {
        Some(Kind::NonFinite)
    } else if v.abs() > ABSURD_SCALE {
        Some(Kind::Absurd)
    } else {
        None
    }
}

/// How a tensor's bytes are scanned.
enum Scan {
    /// Blocks of this many bytes with f16 scales at these offsets.
    Blocks(usize, &'static [usize]),
    F32,
    F16,
    Bf16,
    /// Handed to ggml_validate_row_data.
    Ggml,
}

fn scan_of(t: u32) -> Scan {
    match t {
        ffi::GGML_TYPE_F32 => return Scan::F32,
        ffi::GGML_TYPE_F16 => return Scan::F16,
        ffi::GGML_TYPE_BF16 => return Scan::Bf16,
        _ => {}
    }
    Format::WEIGHTS
        .iter()
        .filter_map(|f| f.with(Scales))
        .find(|&(g, _, _)| g == t)
        .map_or(Scan::Ggml, |(_, bytes, offsets)| {
            Scan::Blocks(bytes, offsets)
        })
}

/// Scans every tensor of `path`. With `stop`, returns at the first
/// non-finite value. Errors (one line each) for a file that is not a GGUF
/// model whose tensors lie inside it.
pub fn scan(path: &Path, stop: bool) -> Result<Report, String> {
    let g = GgufFile::open(path, false)?;
    let mut file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut r = Report::default();
    // SAFETY: gguf accessors on a live context, ids in range; names are NUL-terminated.
    let n = unsafe { ffi::gguf_get_n_tensors(g.gguf) };
    let base = unsafe { ffi::gguf_get_data_offset(g.gguf) } as u64;
    for id in 0..n {
        let (name, t, offset, size) = unsafe {
            (
                CStr::from_ptr(ffi::gguf_get_tensor_name(g.gguf, id))
                    .to_string_lossy()
                    .into_owned(),
                ffi::gguf_get_tensor_type(g.gguf, id),
                base + ffi::gguf_get_tensor_offset(g.gguf, id) as u64,
                ffi::gguf_get_tensor_size(g.gguf, id) as u64,
            )
        };
        // SAFETY: a type ggml accepted when it read the file.
        let type_name = unsafe { CStr::from_ptr(ffi::ggml_type_name(t)) }
            .to_string_lossy()
            .into_owned();
        let c = std::ffi::CString::new(name.clone()).unwrap();
        // SAFETY: the metadata context of this file, a NUL-terminated name.
        let tensor = unsafe { ffi::ggml_get_tensor(g.ctx, c.as_ptr()) };
        if !tensor.is_null() {
            // SAFETY: a tensor of the live context.
            let ne = unsafe { (*tensor).ne };
            if ne.contains(&0) {
                return Err(format!(
                    "{}: tensor {name} has no elements (shape {:?})",
                    path.display(),
                    &ne
                ));
            }
        }
        if offset.checked_add(size).is_none_or(|end| end > len) {
            return Err(format!(
                "{}: tensor {name}'s data (bytes {offset} to {}) lies past the end of the file ({len} bytes): truncated or corrupt",
                path.display(),
                offset.saturating_add(size)
            ));
        }
        r.tensors += 1;
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let scan = scan_of(t);
        // Whole blocks or values per read, about 4 MiB at a time.
        let unit = match scan {
            Scan::Blocks(b, _) => b,
            // SAFETY: a type ggml accepted.
            Scan::Ggml => unsafe { ffi::ggml_row_size(t, ffi::ggml_blck_size(t)) },
            Scan::F32 => 4,
            Scan::F16 | Scan::Bf16 => 2,
        };
        let chunk_len = (4 << 20) / unit * unit;
        let mut buf = vec![0u8; chunk_len];
        let mut done = 0u64;
        while done < size {
            let n = chunk_len.min((size - done) as usize);
            file.read_exact(&mut buf[..n])
                .map_err(|e| format!("{}: reading tensor {name}: {e}", path.display()))?;
            let chunk = &buf[..n];
            let mut found = |index: u64, what, value: f32, kind| {
                r.add(Finding {
                    tensor: name.clone(),
                    ggml_type: type_name.clone(),
                    index,
                    what,
                    value,
                    kind,
                })
            };
            match scan {
                Scan::Blocks(b, offsets) => {
                    for (i, blk) in chunk.chunks_exact(b).enumerate() {
                        for (j, &o) in offsets.iter().enumerate() {
                            let v = f16::from_le_bytes([blk[o], blk[o + 1]]).to_f32();
                            if let Some(k) = classify(v) {
                                found(done / b as u64 + i as u64, scale_name(j), v, k);
                            }
                        }
                    }
                }
                Scan::F32 | Scan::F16 | Scan::Bf16 => {
                    let (w, get): (usize, fn(&[u8]) -> f32) = match scan {
                        Scan::F32 => (4, |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                        Scan::F16 => (2, |b| f16::from_le_bytes([b[0], b[1]]).to_f32()),
                        _ => (2, |b| bf16::from_le_bytes([b[0], b[1]]).to_f32()),
                    };
                    for (i, e) in chunk.chunks_exact(w).enumerate() {
                        let v = get(e);
                        if !v.is_finite() {
                            found(done / w as u64 + i as u64, "value", v, Kind::NonFinite);
                        }
                    }
                }
                Scan::Ggml => {
                    // ggml logs where; the finding says which 4 MiB.
                    let ok = crate::ggml::failing(|| {
                        // SAFETY: n bytes of whole blocks of type t.
                        unsafe { ffi::ggml_validate_row_data(t, chunk.as_ptr().cast(), n) }
                            .then_some(())
                    });
                    if ok.is_err() {
                        found(done / unit as u64, GGML, f32::NAN, Kind::NonFinite);
                    }
                }
            }
            r.scanned += (n / unit.max(1)) as u64;
            done += n as u64;
            if stop && r.non_finite > 0 {
                return Ok(r);
            }
        }
        if matches!(scan, Scan::Ggml) {
            r.validated_by_ggml += 1;
        }
    }
    Ok(r)
}

/// What a subcommand does before it reads a model: the scan, stopping at the
/// first non-finite value, then llama.cpp's reading of the metadata in a
/// child process ([`crate::llama::probe`]). A malformed file or a non-finite
/// value is a one-line error.
pub fn preflight(path: &Path) -> Result<(), String> {
    let r = scan(path, true)?;
    crate::llama::probe(path)?;
    match r.findings.iter().find(|f| f.kind == Kind::NonFinite) {
        None => Ok(()),
        Some(f) => Err(format!(
            "{}: {f}; `llmkernel check {}` lists every bad value",
            path.display(),
            path.display()
        )),
    }
}
