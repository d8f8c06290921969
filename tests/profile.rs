//! `llmkernel profile` on a synthetic model: every weight matmul counted once
//! per evaluation, LLMK's nodes equal to the backend's own counters, the node
//! times inside the wall time, the files written whole, two reports compared,
//! and bad input refused in one line.

mod common;

use llmkernel::synthetic;
use llmkernel_kernels::Format;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("llmk-profile-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn model(d: &Path, format: Format) -> PathBuf {
    let m = d.join(format!("{}.gguf", format.name()));
    synthetic::write_llama(&m, format, synthetic::Shape::default(), 11).unwrap();
    m
}

fn profile(args: &[&str]) -> std::process::Output {
    common::llmkernel_command()
        .arg("profile")
        .args(args)
        // A small bandwidth probe: this checks the report, not the machine.
        .env("LLMKERNEL_BANDWIDTH_BYTES", "4000000")
        .output()
        .unwrap()
}

#[test]
fn every_weight_matmul_is_counted_once_and_llmk_counts_match_its_counters() {
    let d = dir("count");
    let m = model(&d, Format::Q4K);
    let out = d.join("out");
    let o = profile(&[
        "-m",
        m.to_str().unwrap(),
        "-p",
        "32",
        "-n",
        "3",
        "-r",
        "2",
        "-t",
        "2",
        "--json",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    // 2 layers x 7 weight matmuls + the output head.
    let per_eval = 2.0 * 7.0 + 1.0;
    let sets = r["sets"].as_array().unwrap();
    assert_eq!(sets.len(), 2);
    for set in sets {
        let kernels = set["kernels"].as_str().unwrap();
        for (phase, evals) in [("pp", 2.0), ("tg", 6.0)] {
            let p = &set["phases"][phase];
            assert_eq!(p["evals"].as_f64().unwrap(), evals, "{kernels} {phase}");
            assert_eq!(
                p["weight_matmuls_per_eval"].as_f64().unwrap(),
                per_eval,
                "{kernels} {phase}"
            );
            let matmuls = p["matmuls"].as_array().unwrap();
            assert_eq!(
                matmuls.len() as f64,
                per_eval,
                "{kernels} {phase}: one entry a weight"
            );
            let mut names: Vec<&str> = matmuls
                .iter()
                .map(|m| m["tensor"].as_str().unwrap())
                .collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len() as f64, per_eval, "{kernels} {phase}: {names:?}");
            for m in matmuls {
                assert_eq!(m["executions"].as_f64().unwrap(), evals, "{m}");
                assert!(m["ms"].as_f64().unwrap() > 0.0, "{m}");
                let want = if kernels == "llmkernel" {
                    "LLMK"
                } else {
                    "CPU"
                };
                assert_eq!(m["backend"], want, "{m}");
                // The kernel: the dispatch table's for LLMK, ggml's path for the CPU.
                let kernel = m["kernel"].as_str().unwrap();
                if kernels == "llmkernel" {
                    assert!(kernel != "?" && !kernel.starts_with("ggml"), "{m}");
                } else {
                    assert!(kernel.starts_with("ggml"), "{m}");
                }
            }
            let (llmk, counter) = (
                p["llmk_nodes_per_eval"].as_f64().unwrap(),
                p["llmk_counter_per_eval"].as_f64().unwrap(),
            );
            assert_eq!(
                llmk, counter,
                "{kernels} {phase}: nodes seen on LLMK vs its counters"
            );
            assert_eq!(
                llmk,
                if kernels == "llmkernel" {
                    per_eval
                } else {
                    0.0
                }
            );
            let (wall, nodes) = (
                p["wall_profiled_ms"].as_f64().unwrap(),
                p["node_sum_ms"].as_f64().unwrap(),
            );
            assert!(
                nodes > 0.0 && nodes <= wall,
                "{kernels} {phase}: nodes {nodes} wall {wall}"
            );
            let layers: Vec<Value> = p["layers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["layer"].clone())
                .collect();
            assert!(
                layers.contains(&Value::from(0)) && layers.contains(&Value::from(1)),
                "{layers:?}"
            );
            let classes: f64 = p["classes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["ms"].as_f64().unwrap())
                .sum();
            assert!(
                (classes - nodes).abs() <= 1e-6 * nodes.max(1.0),
                "{classes} vs {nodes}"
            );
        }
    }
    for f in ["profile.json", "profile.md", "profile.svg", "profile.png"] {
        assert!(std::fs::metadata(out.join(f)).unwrap().len() > 0, "{f}");
    }
    let md = std::fs::read_to_string(out.join("profile.md")).unwrap();
    assert!(md.contains("| matmul q4_K |"), "{md}");
    assert!(md.contains("blk.*.ffn_down.weight (2)"), "{md}");

    // Two reports side by side.
    let a = out.join("profile.json");
    let o = profile(&["--compare", a.to_str().unwrap(), a.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("## tg, llmkernel kernels"), "{text}");
    assert!(
        text.contains("| matmul q4_K |") && text.contains("| 1.00 |"),
        "{text}"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn bad_input_gets_one_line() {
    let d = dir("bad");
    let m = model(&d, Format::Q4_0);
    let not_a_report = d.join("x.json");
    std::fs::write(&not_a_report, "{}").unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "-m".into(),
                m.display().to_string(),
                "-p".into(),
                "4000".into(),
            ],
            "was trained for 2048",
        ),
        (
            vec!["-m".into(), d.join("missing.gguf").display().to_string()],
            "missing.gguf",
        ),
        (
            vec![
                "-m".into(),
                m.display().to_string(),
                "-p".into(),
                "0".into(),
                "-n".into(),
                "0".into(),
            ],
            "nothing to profile",
        ),
        (
            vec![
                "--compare".into(),
                not_a_report.display().to_string(),
                not_a_report.display().to_string(),
            ],
            "not a profile report",
        ),
    ];
    for (args, want) in cases {
        let o = profile(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let err = String::from_utf8_lossy(&o.stderr);
        let last = err.lines().last().unwrap_or("");
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(
            last.starts_with("error: ") && last.contains(want),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    std::fs::remove_dir_all(&d).unwrap();
}
