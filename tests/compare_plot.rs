//! The compare picture and table from rows (no model needed): the files are
//! written, the PNG is a PNG with text drawn (not blank), the SVG names every variant.

use llmkernel::compare::{self, Row};
use std::path::PathBuf;

fn row(name: &str, mib: f64, kld: Option<f64>, tg: f64) -> Row {
    Row {
        name: name.into(),
        file: PathBuf::from(format!("{name}.gguf")),
        size_bytes: (mib * (1 << 20) as f64) as u64,
        bpw: mib / 100.0,
        ppl: 10.0,
        ppl_err: 0.1,
        ppl_llmk: 10.01,
        dppl: 0.5,
        kld: kld.map(|k| (k, k / 20.0)),
        same_top1: kld.map(|k| 1.0 - k),
        pp: (100.0, 80.0),
        tg: (Some(40.0), Some(tg)),
        llmk_matmuls: 100,
        chunks: 4,
        exact: None,
        method: String::new(),
        made: None,
    }
}

#[test]
fn picture_and_table() {
    let rows = vec![
        row("base", 1000.0, None, 40.0),
        row("q4_k", 900.0, Some(0.01), 43.0),
        row("q3_k", 700.0, Some(0.05), 41.0),
        row("q2_k", 550.0, Some(0.2), 62.0),
    ];
    let dir = std::env::temp_dir().join(format!("llmkernel-compare-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (svg, png) = (dir.join("c.svg"), dir.join("c.png"));
    compare::plot(&rows, "test", &svg, &png).unwrap();
    let s = std::fs::read_to_string(&svg).unwrap();
    for name in ["q4_k", "q3_k", "q2_k", "base"] {
        assert!(s.contains(name), "the SVG does not name {name}");
    }
    let p = std::fs::read(&png).unwrap();
    assert_eq!(&p[..8], b"\x89PNG\r\n\x1a\n");
    assert!(p.len() > 10_000, "PNG of {} bytes: nothing drawn?", p.len());
    let o = compare::Options {
        base: "base.gguf".into(),
        text: "t.txt".into(),
        formats: vec![],
        ctx: 512,
        chunks: None,
        threads: 2,
        out_dir: dir.clone(),
        pure: true,
        decode: 128,
        progress: false,
        imatrix: None,
        pruned: vec![],
        calibration: None,
        reconstruct_text: None,
        exact: false,
        methods: vec![],
        reconstruct_chunks: 32,
    };
    let md = compare::markdown(&rows, &o);
    assert_eq!(md.lines().filter(|l| l.starts_with("| q")).count(), 3);
    assert!(md.contains("1.55×"), "tg ratio of q2_k missing:\n{md}");
    assert!(!md.contains("exact reference"));
    // With --exact: a second table, one line a variant, with the ratio.
    let mut rows = rows;
    rows[1].exact = Some(((0.004, 0.0001), (0.0042, 0.0001)));
    let md = compare::markdown(&rows, &o);
    assert!(
        md.contains("| q4_k | 0.004000 ± 0.000100 | 0.004200 ± 0.000100 | 1.050 |"),
        "{md}"
    );
    // Variants of two methods: a frontier line each, named in the legend,
    // and the table of how long each took to make.
    let mut rows = rows;
    for (r, m) in rows[1..].iter_mut().zip(["imatrix", "imatrix", "imatrix"]) {
        r.method = m.into();
    }
    let mut rec = row("q2_k imatrix+reconstruct", 552.0, Some(0.12), 61.0);
    rec.method = "imatrix+reconstruct".into();
    rec.made = Some((95.5, Some(1234.0)));
    rows.push(rec);
    compare::plot(&rows, "test", &svg, &png).unwrap();
    let s = std::fs::read_to_string(&svg).unwrap();
    for m in ["imatrix", "imatrix+reconstruct"] {
        assert!(s.lines().any(|l| l.trim() == m), "no legend entry {m}");
    }
    let md = compare::markdown(&rows, &o);
    assert!(
        md.contains("| q2_k imatrix+reconstruct | imatrix+reconstruct | 95.5 | 1234 |"),
        "{md}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
