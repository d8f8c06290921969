//! Malformed and hostile GGUF files against every subcommand that reads one.
//!
//! The files are made here from a valid synthetic model: empty, truncated,
//! bad magic and version, absurd counts and lengths, a tensor past the end,
//! a zero dimension, an unknown type, and NaN and Inf block scales. Each
//! subcommand must exit with a code other than 0 and print one line, an
//! `error:` that says what is wrong: no panic, no signal, no log noise.
//!
//! With `LLMKERNEL_MALFORMED_DOC=<file>` the matrix (file × subcommand →
//! exit code and message) is written there as markdown
//! (`scripts/check-malformed.sh` makes docs/MALFORMED-GGUF.md so), and with
//! `LLMKERNEL_LLAMA_BENCH=<llama-bench>` and `LLMKERNEL_PLUGIN=<libllmkernel.so>`
//! stock llama-bench is run on each file without and with the plugin too:
//! the plugin must not turn a clean refusal into a crash, nor add one.

mod common;

use llmkernel::synthetic;
use llmkernel_kernels::Format;
use std::path::Path;
use std::process::Command;

/// Where the fields of a GGUF's header and tensor infos are.
struct Layout {
    /// The first key's length field.
    first_key: usize,
    /// Each key with its value's type and position.
    kvs: Vec<(String, u32, usize)>,
    tensors: Vec<Info>,
    /// Start of the tensor data.
    data: usize,
}

struct Info {
    name: String,
    /// Position of ne[0]; `n_dims` i64 follow.
    dims: usize,
    n_dims: usize,
    /// Position of the type (u32), then of the offset (u64).
    type_at: usize,
    ggml_type: u32,
    offset: u64,
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn u32(&mut self) -> u32 {
        self.at += 4;
        u32::from_le_bytes(self.b[self.at - 4..self.at].try_into().unwrap())
    }
    fn u64(&mut self) -> u64 {
        self.at += 8;
        u64::from_le_bytes(self.b[self.at - 8..self.at].try_into().unwrap())
    }
    fn string(&mut self) -> String {
        let n = self.u64() as usize;
        self.at += n;
        String::from_utf8_lossy(&self.b[self.at - n..self.at]).into_owned()
    }
    /// Skips a value of GGUF type `t`.
    fn skip(&mut self, t: u32) {
        match t {
            0 | 1 | 7 => self.at += 1,
            2 | 3 => self.at += 2,
            4..=6 => self.at += 4,
            10..=12 => self.at += 8,
            8 => {
                self.string();
            }
            9 => {
                let (et, n) = (self.u32(), self.u64());
                for _ in 0..n {
                    self.skip(et);
                }
            }
            _ => panic!("GGUF value type {t}"),
        }
    }
}

/// Reads the layout of a valid GGUF (the synthetic model's: alignment 32).
fn layout(b: &[u8]) -> Layout {
    let mut r = Reader { b, at: 8 };
    let (n_tensors, n_kv) = (r.u64(), r.u64());
    let first_key = r.at;
    let kvs = (0..n_kv)
        .map(|_| {
            let key = r.string();
            let t = r.u32();
            let at = r.at;
            r.skip(t);
            (key, t, at)
        })
        .collect();
    let tensors = (0..n_tensors)
        .map(|_| {
            let name = r.string();
            let n_dims = r.u32() as usize;
            let dims = r.at;
            r.at += 8 * n_dims;
            let type_at = r.at;
            let ggml_type = r.u32();
            let offset = r.u64();
            Info {
                name,
                dims,
                n_dims,
                type_at,
                ggml_type,
                offset,
            }
        })
        .collect();
    Layout {
        first_key,
        kvs,
        tensors,
        data: r.at.div_ceil(32) * 32,
    }
}

fn put(b: &mut [u8], at: usize, v: &[u8]) {
    b[at..at + v.len()].copy_from_slice(v);
}

/// The malformed files: (name, what is wrong, bytes).
fn cases(good: &[u8]) -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let l = layout(good);
    let q4 = Format::Q4_0.ggml_type();
    // A weight matrix of the model (Q4_0), and the tensor whose data comes last.
    let w = l
        .tensors
        .iter()
        .find(|t| t.name == "blk.0.attn_q.weight" && t.ggml_type == q4)
        .expect("the synthetic model has a Q4_0 blk.0.attn_q.weight");
    let last = l.tensors.iter().max_by_key(|t| t.offset).unwrap();
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = good.to_vec();
        f(&mut b);
        b
    };
    let scale = |bits: u16| {
        with(&|b| {
            // The f16 scale d of the block 7 of the weight.
            put(b, l.data + w.offset as usize + 7 * 18, &bits.to_le_bytes())
        })
    };
    vec![
        ("empty", "0 bytes", Vec::new()),
        ("truncated-1k", "the first 1 KiB", good[..1024].to_vec()),
        (
            "truncated-half",
            "the first half",
            good[..good.len() / 2].to_vec(),
        ),
        ("bad-magic", "magic GGUX", with(&|b| put(b, 0, b"GGUX"))),
        (
            "bad-version",
            "version 99",
            with(&|b| put(b, 4, &99u32.to_le_bytes())),
        ),
        (
            "tensor-count-2e60",
            "2^60 tensors",
            with(&|b| put(b, 8, &(1u64 << 60).to_le_bytes())),
        ),
        (
            "key-count-2e60",
            "2^60 keys",
            with(&|b| put(b, 16, &(1u64 << 60).to_le_bytes())),
        ),
        (
            "key-length-2e62",
            "a key 2^62 bytes long",
            with(&|b| put(b, l.first_key, &(1u64 << 62).to_le_bytes())),
        ),
        (
            "empty-key",
            "the first key 0 bytes long (ggml's reader aborts)",
            with(&|b| {
                // The first key's name cut out, its length set to 0.
                let n = u64::from_le_bytes(b[l.first_key..l.first_key + 8].try_into().unwrap());
                let mut v = b[..l.first_key].to_vec();
                v.extend(0u64.to_le_bytes());
                v.extend(&b[l.first_key + 8 + n as usize..]);
                *b = v;
            }),
        ),
        (
            "block-count-0",
            "llama.block_count = 0 (llama.cpp aborts)",
            with(&|b| {
                let (_, t, at) = l.kvs.iter().find(|k| k.0 == "llama.block_count").unwrap();
                assert_eq!(*t, 4, "u32");
                put(b, *at, &0u32.to_le_bytes())
            }),
        ),
        (
            "offset-past-end",
            "the last tensor's data past the end",
            with(&|b| put(b, last.type_at + 4, &(good.len() as u64 * 2).to_le_bytes())),
        ),
        (
            "zero-dim",
            "ne[0] = 0 in the last tensor",
            with(&|b| {
                assert!(last.n_dims >= 1);
                put(b, last.dims, &0i64.to_le_bytes())
            }),
        ),
        (
            "unknown-type",
            "a tensor of type 200",
            with(&|b| put(b, w.type_at, &200u32.to_le_bytes())),
        ),
        ("nan-scale", "a Q4_0 block scale NaN", scale(0x7e00)),
        ("inf-scale", "a Q4_0 block scale +Inf", scale(0x7c00)),
    ]
}

/// Every subcommand that reads a GGUF, with arguments that make it read `model`.
fn subcommands(model: &Path, text: &Path, out: &Path) -> Vec<(&'static str, Vec<String>)> {
    let (m, f, o) = (
        model.display().to_string(),
        text.display().to_string(),
        out.display().to_string(),
    );
    let run = ["--ctx", "64", "--chunks", "1", "-t", "2"].map(String::from);
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut v = vec![
        ("check", args(&["check", &m])),
        ("perplexity", args(&["perplexity", "-m", &m, "-f", &f])),
        (
            "imatrix",
            args(&["imatrix", "-m", &m, "-f", &f, "-o", &format!("{o}.imatrix")]),
        ),
        (
            "prune",
            args(&["prune", &m, &format!("{o}.pruned.gguf"), "-t", "2"]),
        ),
        (
            "quantize",
            args(&[
                "quantize",
                "--format",
                "q8_0",
                &m,
                &format!("{o}.q8_0.gguf"),
                "-t",
                "2",
            ]),
        ),
        (
            "compare",
            args(&[
                "compare",
                "-m",
                &m,
                "-f",
                &f,
                "--formats",
                "q8_0",
                "--decode",
                "1",
                "--out",
                &format!("{o}.compare"),
            ]),
        ),
    ];
    for (name, a) in v.iter_mut() {
        if matches!(*name, "perplexity" | "imatrix" | "compare") {
            a.extend(run.iter().cloned());
        }
    }
    v
}

struct Outcome {
    code: Option<i32>,
    stderr: String,
}

fn run(cmd: &mut Command) -> Outcome {
    let o = cmd
        .env_remove("LLMKERNEL_STATS")
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("runs");
    Outcome {
        code: o.status.code(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// A matrix cell: exit code and the first line of stderr (the files' directory left out).
fn cell(o: &Outcome, dir: &Path) -> String {
    let first = o
        .stderr
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let first = first.replace(&format!("{}/", dir.display()), "");
    let code = o.code.map_or("signal".into(), |c| c.to_string());
    format!("{code}: `{}`", first.replace('|', "\\|").replace('`', "'"))
}

#[test]
fn every_subcommand_refuses_malformed_ggufs_in_one_line() {
    let dir = std::env::temp_dir().join(format!("llmk-malformed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good_path = dir.join("good.gguf");
    synthetic::write_llama(&good_path, Format::Q4_0, synthetic::Shape::default(), 11).unwrap();
    let good = std::fs::read(&good_path).unwrap();
    let text = dir.join("text.txt");
    std::fs::write(
        &text,
        "the quick brown fox jumps over the lazy dog. ".repeat(40),
    )
    .unwrap();

    let cases = cases(&good);
    let names: Vec<&str> = subcommands(&good_path, &text, &dir)
        .iter()
        .map(|s| s.0)
        .collect();
    let mut doc = format!(
        "| file | what is wrong | {} |\n|---|---|{}\n",
        names.join(" | "),
        "---|".repeat(names.len())
    );
    let mut failures = Vec::new();
    for (name, what, bytes) in &cases {
        let path = dir.join(format!("{name}.gguf"));
        std::fs::write(&path, bytes).unwrap();
        let mut row = format!("| {name} | {what} |");
        for (sub, args) in subcommands(&path, &text, &dir.join(name)) {
            let o = run(common::llmkernel_command().args(&args));
            let lines: Vec<&str> = o.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
            let ok = matches!(o.code, Some(c) if c != 0)
                && lines.len() == 1
                && lines[0].starts_with("error: ")
                && !o.stderr.contains("panicked");
            if !ok {
                failures.push(format!(
                    "{name} × {sub}: exit {:?}, stderr:\n{}",
                    o.code, o.stderr
                ));
            }
            row += &format!(" {} |", cell(&o, &dir));
        }
        doc += &(row + "\n");
    }
    if let Ok(out) = std::env::var("LLMKERNEL_MALFORMED_DOC") {
        std::fs::write(&out, &doc).unwrap();
    }
    if let (Ok(bench), Ok(plugin)) = (
        std::env::var("LLMKERNEL_LLAMA_BENCH"),
        std::env::var("LLMKERNEL_PLUGIN"),
    ) {
        let mut table =
            String::from("| file | llama-bench | llama-bench with the plugin |\n|---|---|---|\n");
        for (name, _, _) in &cases {
            let path = dir.join(format!("{name}.gguf"));
            let bench = |with_plugin: bool| {
                let mut c = Command::new(&bench);
                c.args(["-p", "16", "-n", "2", "-r", "1", "-t", "2", "-m"])
                    .arg(&path);
                if with_plugin {
                    c.env("GGML_BACKEND_PATH", &plugin);
                }
                run(&mut c)
            };
            let (stock, ours) = (bench(false), bench(true));
            // The plugin may not add a crash, nor change how a run ends.
            if stock.code != ours.code {
                failures.push(format!(
                    "llama-bench on {name}: stock exit {:?}, with the plugin {:?}:\n{}",
                    stock.code, ours.code, ours.stderr
                ));
            }
            let last = |o: &Outcome| Outcome {
                code: o.code,
                // llama-bench logs a lot: the failed assertion, if any, else
                // its last line, says why it stopped.
                stderr: o
                    .stderr
                    .lines()
                    .find(|l| l.contains("GGML_ASSERT"))
                    .or_else(|| o.stderr.lines().rev().find(|l| !l.trim().is_empty()))
                    .unwrap_or("")
                    .into(),
            };
            table += &format!(
                "| {name} | {} | {} |\n",
                cell(&last(&stock), &dir),
                cell(&last(&ours), &dir)
            );
        }
        if let Ok(out) = std::env::var("LLMKERNEL_MALFORMED_DOC") {
            std::fs::write(&out, doc + "\n" + &table).unwrap();
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// `check` names the tensor, block and value of each finding: a clean model
/// passes; an absurd scale and a NaN norm weight are listed.
#[test]
fn check_names_each_bad_value() {
    let dir = std::env::temp_dir().join(format!("llmk-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("good.gguf");
    synthetic::write_llama(&path, Format::Q4_0, synthetic::Shape::default(), 12).unwrap();
    let good = std::fs::read(&path).unwrap();
    let check = |p: &Path| {
        let o = common::llmkernel_command()
            .arg("check")
            .arg(p)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    let (code, out) = check(&path);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("0 non-finite, 0 absurd"), "{out}");

    let l = layout(&good);
    let find = |name: &str| l.tensors.iter().find(|t| t.name == name).unwrap();
    let mut bad = good.clone();
    let w = find("blk.1.ffn_up.weight");
    // Block 3's scale 30000 (f16 0x7753), and output_norm's element 5 NaN.
    put(
        &mut bad,
        l.data + w.offset as usize + 3 * 18,
        &0x7753u16.to_le_bytes(),
    );
    let norm = find("output_norm.weight");
    assert_eq!(norm.ggml_type, 0, "F32");
    put(
        &mut bad,
        l.data + norm.offset as usize + 5 * 4,
        &f32::NAN.to_le_bytes(),
    );
    let bad_path = dir.join("bad.gguf");
    std::fs::write(&bad_path, &bad).unwrap();
    let (code, out) = check(&bad_path);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("tensor blk.1.ffn_up.weight (q4_0), block 3: scale d = 30000 (absurd)"),
        "{out}"
    );
    assert!(
        out.contains("tensor output_norm.weight (f32), element 5: value = NaN (non-finite)"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
