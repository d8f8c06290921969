//! The `llmkernel` command line.

use clap::{Parser, Subcommand};
use llmkernel::bench;
use llmkernel::kernels::table::Isa;
use llmkernel::kernels::Format;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "llmkernel",
    version,
    about = "Fast CPU kernels for llama.cpp's compressed models, measured against ggml"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// CPU features, the vendored llama.cpp, and the kernel set each format uses here.
    Info,
    /// llmkernel's kernels against ggml's on the same matrices and threads.
    Bench {
        /// Weight formats: q4_k, q3_k, q2_k, q4_0, q8_0 (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "q4_k", value_parser = parse_format)]
        format: Vec<Format>,
        /// Weight shape MxK (rows x columns); repeat for several. Default: Llama-3-8B's
        /// 4096x4096, 1024x4096, 14336x4096, 4096x14336.
        #[arg(long = "shape", value_parser = bench::parse_shape)]
        shapes: Vec<(usize, usize)>,
        /// Batch sizes (activation rows): 1 is decode, >= 32 prompt processing.
        #[arg(long, value_delimiter = ',', default_value = "1,512")]
        batch: Vec<usize>,
        /// Thread counts, for ggml and llmkernel alike. Default: all hardware threads.
        #[arg(long, value_delimiter = ',')]
        threads: Vec<usize>,
        /// Highest ISA for llmkernel's kernels: scalar, avx2, avx512, neon, dotprod, i8mm.
        #[arg(long, value_parser = parse_isa)]
        isa: Option<Isa>,
        /// Interleaved repetitions per case (medians are reported).
        #[arg(long, default_value_t = 5)]
        reps: usize,
        /// One JSON object per case per line instead of the table.
        #[arg(long)]
        json: bool,
        /// `2:4`: bench the 2:4 sparse kernels (q4_0, q8_0) on weights pruned 2:4,
        /// against our dense kernel and ggml's on the same blocks.
        #[arg(long, value_parser = parse_sparse)]
        sparse: Option<Sparse>,
    },
    /// Perplexity of a model on a text, computed as llama-perplexity computes it, with
    /// ggml's kernels, llmkernel's, or both in one run (plus the KL-divergence between them).
    Perplexity {
        /// The model (GGUF).
        #[arg(short = 'm', long)]
        model: PathBuf,
        /// The text file to score.
        #[arg(short = 'f', long)]
        file: PathBuf,
        /// Tokens per chunk: the first half is context, the second half is scored.
        #[arg(long, default_value_t = 512)]
        ctx: usize,
        /// At most this many chunks (default: all the text holds).
        #[arg(long)]
        chunks: Option<usize>,
        /// Whose kernels compute the weight matmuls: ggml, llmkernel, or both.
        #[arg(long, default_value = "llmkernel", value_parser = llmkernel::perplexity::Kernels::parse)]
        kernels: llmkernel::perplexity::Kernels,
        /// Threads (default: all hardware threads).
        #[arg(short = 't', long)]
        threads: Option<usize>,
        /// A teacher model (e.g. the uncompressed one), run alongside with ggml's kernels:
        /// KL-divergence of each run's token distribution from the teacher's.
        #[arg(long)]
        teacher: Option<PathBuf>,
        /// Also time this many single-token evaluations per kernel set (text generation speed).
        #[arg(long, default_value_t = 0)]
        decode: usize,
        /// Save the scored logits (of ggml's run with --kernels both) for later --kl-base
        /// runs, in llama-perplexity's --kl-divergence-base format.
        #[arg(long)]
        save_logits: Option<PathBuf>,
        /// KL-divergence against logits saved by --save-logits or by
        /// llama-perplexity --kl-divergence-base (same text, ctx and vocabulary).
        #[arg(long)]
        kl_base: Option<PathBuf>,
        /// One JSON object on stdout instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Makes each compressed variant of a base model and measures each with ggml's and
    /// llmkernel's kernels: one table (markdown, JSON) and one picture (SVG, PNG).
    Compare {
        /// The base model (GGUF): the variants are made from it and measured against it.
        #[arg(short = 'm', long)]
        model: PathBuf,
        /// The text file to score.
        #[arg(short = 'f', long)]
        file: PathBuf,
        /// Variant formats (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "q4_k,q3_k,q2_k", value_parser = parse_format)]
        formats: Vec<Format>,
        /// Tokens per chunk.
        #[arg(long, default_value_t = 512)]
        ctx: usize,
        /// At most this many chunks.
        #[arg(long)]
        chunks: Option<usize>,
        /// Single-token evaluations timed per variant and kernel set (tg).
        #[arg(long, default_value_t = 128)]
        decode: usize,
        /// Every matrix in the format (`quantize --pure`).
        #[arg(long)]
        pure: bool,
        /// Threads (default: all hardware threads).
        #[arg(short = 't', long)]
        threads: Option<usize>,
        /// Where the variants, compare.md, compare.json, compare.svg and compare.png go.
        #[arg(long, default_value = "compare-out")]
        out: PathBuf,
        /// An importance matrix (llama.cpp's imatrix GGUF) for quantizing the variants.
        #[arg(long)]
        imatrix: Option<PathBuf>,
        /// 2:4 pruned variants too: magnitude, wanda, wanda+reconstruct,
        /// magnitude+reconstruct (comma-separated)...
        #[arg(long, value_delimiter = ',', value_parser = parse_prune_variant)]
        prune: Vec<(llmkernel::prune::Method, bool)>,
        /// ...each stored in these formats (f16, q8_0, q4_0).
        #[arg(long, value_delimiter = ',', default_value = "q8_0,q4_0", value_parser = llmkernel::prune::OutFormat::parse)]
        prune_formats: Vec<llmkernel::prune::OutFormat>,
        /// Calibration text (another text than --file) for Wanda's norms and reconstruction.
        #[arg(long)]
        calib: Option<PathBuf>,
        /// An imatrix file for Wanda's activation norms (then --calib only feeds reconstruction).
        #[arg(long)]
        calib_imatrix: Option<PathBuf>,
    },
    /// Collects an importance matrix (llama.cpp's imatrix GGUF format) over calibration text.
    Imatrix {
        /// The model (GGUF), ideally the one the variants are made from.
        #[arg(short = 'm', long)]
        model: PathBuf,
        /// Calibration text.
        #[arg(short = 'f', long)]
        file: PathBuf,
        /// Output file.
        #[arg(short = 'o', long)]
        output: PathBuf,
        /// Tokens per chunk.
        #[arg(long, default_value_t = 512)]
        ctx: usize,
        /// At most this many chunks.
        #[arg(long)]
        chunks: Option<usize>,
        /// Threads (default: all hardware threads).
        #[arg(short = 't', long)]
        threads: Option<usize>,
    },
    /// Prunes a model's layer matrices to 2:4 sparsity (two of every four weights along K
    /// zero) and writes them in a format with exact zeros; stock llama.cpp runs the result.
    Prune {
        /// The model to prune (any type ggml can dequantize).
        input: PathBuf,
        /// Where to write the pruned model.
        output: PathBuf,
        /// The sparsity pattern; 2:4 is the one there is.
        #[arg(long, default_value = "2:4")]
        pattern: String,
        /// magnitude (|w|) or wanda (|w| times the input channel's activation norm).
        #[arg(long, default_value = "magnitude", value_parser = llmkernel::prune::Method::parse)]
        method: llmkernel::prune::Method,
        /// Calibration text for wanda's activation norms (run through the model).
        #[arg(long)]
        calib: Option<PathBuf>,
        /// ...or an imatrix file (llmkernel imatrix / llama-imatrix) for wanda's norms
        /// (with --calib too, the norms come from this file and --calib feeds --reconstruct).
        #[arg(long)]
        imatrix: Option<PathBuf>,
        /// Layer-wise reconstruction: update the kept weights by least squares so each
        /// pruned layer's outputs on the --calib text match the dense layer's (SparseGPT's
        /// solver, with the chosen mask).
        #[arg(long, requires = "calib")]
        reconstruct: bool,
        /// Tokens per calibration chunk.
        #[arg(long, default_value_t = 512)]
        ctx: usize,
        /// At most this many calibration chunks.
        #[arg(long)]
        chunks: Option<usize>,
        /// Storage of every matrix: f16, q8_0 or q4_0 (zeros stay exact).
        #[arg(long, default_value = "q8_0", value_parser = llmkernel::prune::OutFormat::parse)]
        format: llmkernel::prune::OutFormat,
        /// Matrices whose names match this regex stay dense (default: prune every
        /// attn_q/k/v/output and ffn_gate/up/down of the blocks).
        #[arg(long)]
        skip: Option<String>,
        /// Threads (default: all hardware threads).
        #[arg(short = 't', long)]
        threads: Option<usize>,
    },
    /// Quantizes a GGUF model through the vendored llama_model_quantize.
    Quantize {
        /// The model to quantize (F32/F16/BF16, or quantized: then it is requantized).
        input: PathBuf,
        /// Where to write the quantized model.
        output: PathBuf,
        /// q2_k, q3_k, q4_k (llama.cpp's Q2_K, Q3_K_M, Q4_K_M mixes), q4_0 or q8_0.
        #[arg(long, value_parser = parse_format)]
        format: Format,
        /// Every matrix in the format (no mixes; token embedding and output included).
        #[arg(long)]
        pure: bool,
        /// An importance matrix (llama.cpp's imatrix GGUF, from `llmkernel imatrix` or llama-imatrix).
        #[arg(long)]
        imatrix: Option<PathBuf>,
        /// Threads (default: all hardware threads).
        #[arg(short = 't', long)]
        threads: Option<usize>,
    },
}

fn parse_format(s: &str) -> Result<Format, String> {
    Format::from_name(s)
        .filter(|f| Format::WEIGHTS.contains(f))
        .ok_or_else(|| {
            format!("unknown weight format {s:?}: expected q4_k, q3_k, q2_k, q4_0 or q8_0")
        })
}

/// `magnitude`, `wanda`, optionally `+reconstruct`.
fn parse_prune_variant(s: &str) -> Result<(llmkernel::prune::Method, bool), String> {
    let (m, r) = match s.strip_suffix("+reconstruct") {
        Some(m) => (m, true),
        None => (s, false),
    };
    Ok((llmkernel::prune::Method::parse(m)?, r))
}

/// A sparsity pattern; 2:4 is the one llmkernel has kernels for.
#[derive(Clone, Copy, Debug)]
struct Sparse;

fn parse_sparse(s: &str) -> Result<Sparse, String> {
    match s.trim() {
        "2:4" => Ok(Sparse),
        other => Err(format!("sparsity {other:?}: only 2:4 is supported")),
    }
}

fn parse_isa(s: &str) -> Result<Isa, String> {
    Isa::from_name(s).ok_or_else(|| {
        format!("unknown ISA {s:?}: expected scalar, avx2, avx512, neon, dotprod or i8mm")
    })
}

fn hardware_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Prune {
            input,
            output,
            pattern,
            method,
            calib,
            imatrix,
            ctx,
            chunks,
            format,
            skip,
            threads,
            reconstruct,
        } => {
            use llmkernel::prune;
            if pattern != "2:4" {
                eprintln!("error: pattern {pattern:?}: only 2:4 is supported");
                return ExitCode::from(2);
            }
            let skip = match skip.as_deref().map(regex::Regex::new).transpose() {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: --skip: {e}");
                    return ExitCode::from(2);
                }
            };
            let reconstruct = match (&calib, reconstruct) {
                (Some(text), true) => Some(prune::Reconstruct {
                    text: text.clone(),
                    ctx,
                    chunks: chunks.unwrap_or(8),
                }),
                _ => None,
            };
            let calibration = match (calib, imatrix) {
                (_, Some(p)) => Some(prune::Calibration::Imatrix(p)),
                (Some(path), None) => Some(prune::Calibration::Text { path, ctx, chunks }),
                (None, None) => None,
            };
            let o = prune::Options {
                input,
                output,
                method,
                format,
                calibration,
                skip,
                threads: threads.unwrap_or_else(hardware_threads).max(1),
                reconstruct,
            };
            match prune::prune(&o) {
                Ok(r) => println!(
                    "{}: {} matrices pruned 2:4 ({}), {} dense",
                    o.output.display(),
                    r.pruned.len(),
                    method.name(),
                    r.dense.len()
                ),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        Command::Imatrix {
            model,
            file,
            output,
            ctx,
            chunks,
            threads,
        } => {
            let t = threads.unwrap_or_else(hardware_threads).max(1);
            match llmkernel::imatrix::collect_to_file(&model, &file, &output, ctx, chunks, t) {
                Ok(n) => println!("{}: {n} weight matrices", output.display()),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        Command::Compare {
            model,
            file,
            formats,
            ctx,
            chunks,
            decode,
            pure,
            threads,
            out,
            imatrix,
            prune,
            prune_formats,
            calib,
            calib_imatrix,
        } => {
            let reconstruct_text = calib.clone();
            let calibration = match (calib, calib_imatrix) {
                (_, Some(p)) => Some(llmkernel::prune::Calibration::Imatrix(p)),
                (Some(path), None) => Some(llmkernel::prune::Calibration::Text {
                    path,
                    ctx,
                    chunks: Some(16),
                }),
                (None, None) => None,
            };
            let pruned = prune
                .iter()
                .flat_map(|&(m, r)| prune_formats.iter().map(move |&f| (m, r, f)))
                .collect();
            let o = llmkernel::compare::Options {
                base: model,
                text: file,
                formats,
                ctx,
                chunks,
                threads: threads.unwrap_or_else(hardware_threads).max(1),
                out_dir: out,
                pure,
                decode,
                progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
                imatrix,
                pruned,
                calibration,
                reconstruct_text,
            };
            let rows = match llmkernel::compare::run(&o) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let md = llmkernel::compare::markdown(&rows, &o);
            let title = format!(
                "{}: size vs KL-divergence (colour: llmkernel speed, blue slow, red fast)",
                o.base
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("model")
            );
            let write = |name: &str, text: &str| std::fs::write(o.out_dir.join(name), text);
            let (svg, png) = (o.out_dir.join("compare.svg"), o.out_dir.join("compare.png"));
            let r = write("compare.md", &md)
                .and_then(|_| write("compare.json", &llmkernel::compare::json(&rows)))
                .map_err(|e| e.to_string())
                .and_then(|_| llmkernel::compare::plot(&rows, &title, &svg, &png));
            if let Err(e) = r {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
            print!("{md}");
            println!(
                "\nwritten: {}/compare.{{md,json,svg,png}}",
                o.out_dir.display()
            );
        }
        Command::Quantize {
            input,
            output,
            format,
            pure,
            imatrix,
            threads,
        } => {
            let t = threads.unwrap_or_else(hardware_threads).max(1);
            if let Err(e) =
                llmkernel::quantize::quantize(&input, &output, format, pure, t, imatrix.as_deref())
            {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
            println!("{}", output.display());
        }
        Command::Perplexity {
            model,
            file,
            ctx,
            chunks,
            kernels,
            threads,
            teacher,
            decode,
            save_logits,
            kl_base,
            json,
        } => {
            let opts = llmkernel::perplexity::Options {
                model,
                text: file,
                ctx,
                chunks,
                threads: threads.unwrap_or_else(hardware_threads).max(1),
                kernels,
                teacher,
                progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
                decode,
                save_logits,
                kl_base,
            };
            match llmkernel::perplexity::run(&opts) {
                Ok(r) if json => println!("{}", r.json()),
                Ok(r) => print!("{}", r.text()),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        Command::Info => print!("{}", llmkernel::info::report()),
        Command::Bench {
            format,
            shapes,
            batch,
            threads,
            isa,
            reps,
            json,
            sparse,
        } => {
            let threads = if threads.is_empty() {
                vec![hardware_threads()]
            } else {
                threads
            };
            if threads.contains(&0) || batch.contains(&0) {
                eprintln!("error: thread counts and batch sizes must be positive");
                return ExitCode::from(2);
            }
            let opts = bench::Options {
                formats: format,
                shapes: if shapes.is_empty() {
                    bench::LLAMA3_8B_SHAPES.to_vec()
                } else {
                    shapes
                },
                batches: batch,
                threads,
                isa,
                reps,
                json,
                sparse: sparse.is_some(),
            };
            if let Err(e) = bench::run(&opts) {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
