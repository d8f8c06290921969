//! Records the commit this crate is built from, as `LLMKERNEL_BUILD_COMMIT`:
//! the short hash, with `-dirty` when a tracked file of the build differs from
//! it, or `unknown` outside a git checkout. The binaries print this one (bench
//! headers, reports, the plugin's log), not whatever the checkout holds when
//! they run.
//!
//! This script is cheap, so it reruns whenever a source of the build or git's
//! HEAD or index changes (the root build script, which compiles llama.cpp,
//! must not).

use std::path::Path;
use std::process::Command;

/// What goes into the binaries, relative to the workspace root.
const SOURCES: &[&str] = &[
    "Cargo.toml",
    "Cargo.lock",
    "build.rs",
    "src",
    "kernels/Cargo.toml",
    "kernels/build.rs",
    "kernels/src",
    "backend/Cargo.toml",
    "backend/build.rs",
    "backend/src",
    "plugin/Cargo.toml",
    "plugin/src",
    "vendor",
];

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for s in SOURCES {
        println!("cargo:rerun-if-changed={}", root.join(s).display());
    }
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(&root)
            // Never refresh the index: that would change .git/index, which
            // reruns this script.
            .arg("--no-optional-locks")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        let dir = Path::new(&dir);
        let branch = git(&["symbolic-ref", "-q", "HEAD"]);
        let files = ["HEAD", "index", "packed-refs"]
            .into_iter()
            .chain(branch.as_deref());
        // A path that does not exist would rerun this script every build.
        for f in files.map(|f| dir.join(f)).filter(|f| f.exists()) {
            println!("cargo:rerun-if-changed={}", f.display());
        }
    }
    let commit = match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(hash) => {
            let mut status = vec!["status", "--porcelain", "--untracked-files=no", "--"];
            status.extend(SOURCES);
            match git(&status) {
                Some(s) if s.is_empty() => hash,
                _ => format!("{hash}-dirty"),
            }
        }
        None => "unknown".into(),
    };
    println!("cargo:rustc-env=LLMKERNEL_BUILD_COMMIT={commit}");
}
