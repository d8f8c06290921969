//! `llmkernel quantize --reconstruct` on a small synthetic llama model: the
//! output is llama-quantize's file byte for byte outside the layer matrices'
//! data (metadata, types, shapes, offsets, the other tensors), every layer
//! matrix is requantized with a lower output error on the calibration
//! inputs than the imatrix alone, libllama loads and runs it, and bad input
//! (a calibration text too short, an imatrix of another model, a format
//! without a solver) is a one-line error.

mod common;

use llmkernel::gptq::{self, Options};
use llmkernel::kernels::Format;
use llmkernel::{imatrix, quantize, synthetic};
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("llmkernel-gptq-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn opts(input: &Path, output: &Path, format: Format, imatrix: &Path, calib: &Path) -> Options {
    Options {
        input: input.into(),
        outputs: vec![(format, output.into())],
        pure: false,
        threads: 2,
        imatrix: Some(imatrix.into()),
        calib: calib.into(),
        ctx: 64,
        chunks: 20,
        calib_mem: None,
    }
}

#[test]
fn reconstruct_writes_llama_quantizes_file_with_compensated_values() {
    let d = dir();
    let shape = synthetic::Shape::default();
    let model = d.join("m.gguf");
    synthetic::write_llama(&model, Format::Q8_0, shape, 21).unwrap();
    let text = d.join("calib.txt");
    std::fs::write(&text, include_str!("../README.md").repeat(3)).unwrap();
    let im = d.join("m.imatrix");
    imatrix::collect_to_file(&model, &text, &im, 64, Some(8), 2).unwrap();
    let targets = regex::Regex::new(llmkernel::prune::DEFAULT_TARGETS).unwrap();
    // One call for every format: one calibration pass shared by all outputs.
    let formats = [
        Format::Q4K,
        Format::Q2K,
        Format::Q4_0,
        Format::Q8_0,
        Format::IQ2_XS,
    ];
    let path = |f: Format, m: &str| d.join(format!("{f}-{m}.gguf"));
    let mut o = opts(&model, &path(formats[0], "rec"), formats[0], &im, &text);
    o.outputs = formats.iter().map(|&f| (f, path(f, "rec"))).collect();
    let reports = gptq::quantize(&o).unwrap();
    assert_eq!(reports.len(), formats.len());
    assert_eq!(reports[0].passes, 1);
    // One layer per pass (each pass stops after its layer): the same
    // Hessians, so the same file.
    let mut one = opts(
        &model,
        &path(Format::Q4K, "passes"),
        Format::Q4K,
        &im,
        &text,
    );
    one.calib_mem = Some(0);
    let r = gptq::quantize(&one).unwrap().remove(0);
    assert_eq!(r.passes, shape.n_layer);
    assert_eq!(r.tokens, reports[0].tokens);
    assert!(
        std::fs::read(path(Format::Q4K, "passes")).unwrap()
            == std::fs::read(path(Format::Q4K, "rec")).unwrap(),
        "one layer per pass wrote another file"
    );
    for (&format, r) in formats.iter().zip(&reports) {
        let (theirs, ours) = (path(format, "im"), path(format, "rec"));
        quantize::quantize(&model, &theirs, format, false, 2, Some(&im)).unwrap();
        assert_eq!(
            r.tensors.len(),
            7 * shape.n_layer,
            "{format}: every layer matrix"
        );
        assert!(r.kept.is_empty(), "{format}: {:?}", r.kept);
        assert!(
            r.tensors.iter().any(|t| t.format == format),
            "{format}: no matrix of the format itself"
        );
        assert!(r.tokens >= gptq::MIN_TOKENS);
        if format == Format::Q8_0 {
            // Requantizing Q8_0 to Q8_0 is lossless for llama-quantize: the
            // compensated blocks cannot be better, so its file is kept byte for byte.
            assert!(r
                .tensors
                .iter()
                .all(|t| t.err_ggml == 0.0 && !t.compensated()));
            assert!(std::fs::read(&theirs).unwrap() == std::fs::read(&ours).unwrap());
            continue;
        }
        for t in &r.tensors {
            assert!(
                t.compensated(),
                "{format}: {}: {} -> {}",
                t.name,
                t.err_ggml,
                t.err_rec
            );
        }
        // Byte for byte llama-quantize's file outside the layer matrices' data.
        let (a, b) = (
            std::fs::read(&theirs).unwrap(),
            std::fs::read(&ours).unwrap(),
        );
        assert_eq!(a.len(), b.len(), "{format}");
        let (ta, tb) = (
            gptq::stored_tensors(&theirs).unwrap(),
            gptq::stored_tensors(&ours).unwrap(),
        );
        let layout = |t: &[gptq::Stored]| -> Vec<_> {
            t.iter()
                .map(|s| (s.name.clone(), s.ty, s.k, s.rows, s.offset, s.size))
                .collect()
        };
        assert_eq!(
            layout(&ta),
            layout(&tb),
            "{format}: same tensors, types and places"
        );
        let mut inside = vec![false; a.len()];
        for s in tb.iter().filter(|s| targets.is_match(&s.name)) {
            let (o, n) = (s.offset as usize, s.size);
            inside[o..o + n].fill(true);
            assert_ne!(a[o..o + n], b[o..o + n], "{format}: {} unchanged", s.name);
        }
        let outside = (0..a.len()).filter(|&i| !inside[i] && a[i] != b[i]).count();
        assert_eq!(
            outside, 0,
            "{format}: bytes differ outside the layer matrices"
        );
        common::runs(&ours);
    }
}

#[test]
fn bad_input_is_a_clear_error() {
    let d = dir();
    let model = d.join("b.gguf");
    synthetic::write_llama(&model, Format::Q8_0, synthetic::Shape::default(), 22).unwrap();
    let text = d.join("calib-b.txt");
    std::fs::write(&text, include_str!("../README.md").repeat(3)).unwrap();
    let im = d.join("b.imatrix");
    imatrix::collect_to_file(&model, &text, &im, 64, Some(2), 2).unwrap();
    let out = d.join("b-out.gguf");
    let err = |o: &Options| gptq::quantize(o).err().expect("an error");
    // Too few tokens for the Hessians.
    let mut o = opts(&model, &out, Format::Q4K, &im, &text);
    o.chunks = 4;
    let e = err(&o);
    assert!(
        e.contains("calibration tokens") && e.contains("at least"),
        "{e}"
    );
    // A text shorter than one chunk.
    let short = d.join("short.txt");
    std::fs::write(&short, "a few words").unwrap();
    let e = err(&opts(&model, &out, Format::Q4K, &im, &short));
    assert!(e.contains("fewer than"), "{e}");
    // An imatrix of another model (other widths).
    let other = d.join("other.gguf");
    let wide = synthetic::Shape {
        n_embd: 512,
        ..Default::default()
    };
    synthetic::write_llama(&other, Format::Q8_0, wide, 23).unwrap();
    let im_other = d.join("other.imatrix");
    imatrix::collect_to_file(&other, &text, &im_other, 64, Some(2), 2).unwrap();
    let e = err(&opts(&model, &out, Format::Q2K, &im_other, &text));
    assert!(e.contains("imatrix") || e.contains("another model"), "{e}");
    // A format without a solver.
    let e = err(&opts(&model, &out, Format::Q8_0S, &im, &text));
    assert!(e.contains("no error-compensated quantization"), "{e}");
    for e in [&e] {
        assert!(!e.contains('\n'), "one line: {e}");
    }
}
