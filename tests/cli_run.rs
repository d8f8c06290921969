//! The command line as a user meets it, run as a subprocess: what it says
//! about itself (the commit it was built from) and about a run (`-v`).

mod common;

use llmkernel::synthetic;
use llmkernel_kernels::Format;
use std::process::Command;

fn llmkernel() -> Command {
    common::llmkernel_command()
}

fn git(args: &[&str]) -> String {
    let o = Command::new("git")
        .arg("-C")
        .arg(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .expect("git runs");
    assert!(o.status.success(), "git {args:?} failed");
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

/// The commit is the one the binary was built from (cargo test builds it from
/// this tree first), also when run from a directory outside any checkout.
#[test]
fn info_names_the_commit_the_binary_was_built_from() {
    let o = llmkernel()
        .arg("info")
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert!(o.status.success());
    let out = String::from_utf8(o.stdout).unwrap();
    let first = out.lines().next().unwrap();
    let head = git(&["rev-parse", "--short=12", "HEAD"]);
    let dirty = !git(&[
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        "Cargo.toml",
        "Cargo.lock",
        "build.rs",
        "src",
        "kernels",
        "backend",
        "plugin",
        "vendor",
    ])
    .is_empty();
    let want = if dirty { format!("{head}-dirty") } else { head };
    assert!(
        first.ends_with(&format!("(commit {want})")),
        "{first:?} does not name commit {want}"
    );
}

/// `-v` prints what LLMK computed when its backend is freed, per backend: with
/// `--kernels both` the ggml run's context (which has an LLMK backend too,
/// unused) reports nothing computed, though both models stay loaded to the end.
#[test]
fn verbose_run_reports_what_llmk_computed() {
    let dir = std::env::temp_dir().join(format!("llmk-cli-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("q4_0.gguf");
    synthetic::write_llama(&model, Format::Q4_0, synthetic::Shape::default(), 7).unwrap();
    let text = dir.join("text.txt");
    std::fs::write(
        &text,
        "the quick brown fox jumps over the lazy dog. ".repeat(40),
    )
    .unwrap();
    let run = |verbose: bool| {
        let mut c = llmkernel();
        if verbose {
            c.arg("-v");
        }
        let o = c
            .args([
                "perplexity",
                "--kernels",
                "both",
                "--ctx",
                "64",
                "--chunks",
                "1",
                "-t",
                "2",
                "-m",
            ])
            .arg(&model)
            .arg("-f")
            .arg(&text)
            .env_remove("LLMKERNEL_STATS")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stderr).unwrap()
    };
    let err = run(true);
    let mut counts: Vec<u64> = err
        .lines()
        .filter_map(|l| l.strip_prefix("llmkernel: LLMK computed "))
        .map(|rest| {
            assert!(rest.contains(", 0 failed"), "{rest}");
            rest.split(' ').next().unwrap().parse().unwrap()
        })
        .collect();
    counts.sort_unstable();
    // 2 layers x 7 weight matmuls + the output head, for one chunk, on the
    // llmkernel run's context only.
    assert_eq!(counts.len(), 2, "one summary a context expected in:\n{err}");
    assert_eq!(
        counts[0], 0,
        "the ggml run's context computed on LLMK:\n{err}"
    );
    assert!(counts[1] >= 15, "{err}");
    assert!(!run(false).contains("LLMK computed"));
    std::fs::remove_dir_all(&dir).unwrap();
}
