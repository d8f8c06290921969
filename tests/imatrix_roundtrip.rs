//! `llmkernel imatrix` on a small synthetic llama model: one entry per layer
//! matrix with the input width as its length, finite positive means that
//! match the activations' scale; the file loads back and `quantize --imatrix`
//! takes it and changes the result (the importance weights are used).

use llmkernel::kernels::Format;
use llmkernel::{imatrix, quantize, synthetic};

#[test]
fn collect_load_quantize() {
    let dir = std::env::temp_dir().join(format!("llmkernel-imatrix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let shape = synthetic::Shape::default();
    let model = dir.join("m.gguf");
    synthetic::write_llama(&model, Format::Q8_0, shape, 7).unwrap();
    let text = dir.join("calib.txt");
    std::fs::write(&text, include_str!("../README.md").repeat(2)).unwrap();
    let out = dir.join("m.imatrix");
    let n = imatrix::collect_to_file(&model, &text, &out, 64, Some(3), 2).unwrap();
    assert_eq!(n, 7 * shape.n_layer, "one entry per layer matrix");
    let entries = imatrix::load(&out).unwrap();
    assert_eq!(entries.len(), n);
    for (name, v) in &entries {
        let k = if name.contains("ffn_down") {
            shape.n_ff
        } else {
            shape.n_embd
        };
        assert_eq!(v.len(), k, "{name}");
        assert!(v.iter().all(|x| x.is_finite() && *x >= 0.0), "{name}");
        let mean = v.iter().sum::<f32>() / k as f32;
        // Inputs after RMS norm (weight 1) have mean square 1 per token.
        if name.contains("attn_q") || name.contains("ffn_up") {
            assert!((mean - 1.0).abs() < 0.05, "{name}: mean square {mean}");
        }
    }
    let (plain, weighted) = (dir.join("q.gguf"), dir.join("qi.gguf"));
    quantize::quantize(&model, &plain, Format::Q4_0, true, 2, None).unwrap();
    quantize::quantize(&model, &weighted, Format::Q4_0, true, 2, Some(&out)).unwrap();
    assert_ne!(
        std::fs::read(&plain).unwrap(),
        std::fs::read(&weighted).unwrap()
    );
    assert!(
        imatrix::load(&model).is_err(),
        "a model is not an imatrix file"
    );
    std::fs::remove_dir_all(&dir).ok();
}
