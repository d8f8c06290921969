//! `llmkernel compare`.

use super::{parse_format, parse_threads, progress, threads_or_all, Outcome};
use llmkernel::compare::{self, QuantMethod};
use llmkernel::kernels::Format;
use llmkernel::prune::{Calibration, Method, OutFormat};
use std::path::PathBuf;

/// Makes each compressed variant of a base model and measures each with ggml's and
/// llmkernel's kernels: one table (markdown, JSON) and one picture (SVG, PNG).
#[derive(clap::Args)]
pub struct Args {
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
    /// Also measure both kernel sets of every variant against the variant's exact
    /// reference (weights dequantized to F32, no activation quantized; made in OUT/exact).
    #[arg(long)]
    exact: bool,
    /// Threads (default: all hardware threads).
    #[arg(short = 't', long, value_parser = parse_threads)]
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
    prune: Vec<(Method, bool)>,
    /// ...each stored in these formats (f16, q8_0, q4_0).
    #[arg(long, value_delimiter = ',', default_value = "q8_0,q4_0", value_parser = OutFormat::parse)]
    prune_formats: Vec<OutFormat>,
    /// Calibration text (another text than --file) for Wanda's norms and reconstruction.
    #[arg(long)]
    calib: Option<PathBuf>,
    /// An imatrix file for Wanda's activation norms (then --calib only feeds reconstruction).
    #[arg(long)]
    calib_imatrix: Option<PathBuf>,
    /// How each format's variants are quantized, one variant per method: plain, imatrix,
    /// reconstruct (comma-separated; default: imatrix with --imatrix, else plain).
    #[arg(long, value_delimiter = ',', value_parser = QuantMethod::parse)]
    methods: Vec<QuantMethod>,
    /// Add the error-compensated variants (`quantize --reconstruct` on the --calib text,
    /// with --imatrix where given) to the methods.
    #[arg(long, requires = "calib")]
    reconstruct: bool,
    /// Calibration chunks for the error-compensated variants.
    #[arg(long, default_value_t = 32)]
    reconstruct_chunks: usize,
}

/// `magnitude`, `wanda`, optionally `+reconstruct`.
fn parse_prune_variant(s: &str) -> Result<(Method, bool), String> {
    let (m, r) = match s.strip_suffix("+reconstruct") {
        Some(m) => (m, true),
        None => (s, false),
    };
    Ok((Method::parse(m)?, r))
}

impl Args {
    pub fn run(self) -> Outcome {
        llmkernel::check::preflight(&self.model)?;
        let reconstruct_text = self.calib.clone();
        let calibration = match (self.calib, self.calib_imatrix) {
            (_, Some(p)) => Some(Calibration::Imatrix(p)),
            (Some(path), None) => Some(Calibration::Text {
                path,
                ctx: self.ctx,
                chunks: Some(16),
            }),
            (None, None) => None,
        };
        let prune_formats = self.prune_formats;
        let pruned = self
            .prune
            .iter()
            .flat_map(|&(m, r)| prune_formats.iter().map(move |&f| (m, r, f)))
            .collect();
        let mut methods = self.methods;
        if self.reconstruct {
            if methods.is_empty() {
                methods.push(match self.imatrix {
                    Some(_) => QuantMethod::Imatrix,
                    None => QuantMethod::Plain,
                });
            }
            if !methods.contains(&QuantMethod::Reconstruct) {
                methods.push(QuantMethod::Reconstruct);
            }
        }
        let o = compare::Options {
            base: self.model,
            text: self.file,
            formats: self.formats,
            ctx: self.ctx,
            chunks: self.chunks,
            threads: threads_or_all(self.threads),
            out_dir: self.out,
            pure: self.pure,
            decode: self.decode,
            progress: progress(),
            imatrix: self.imatrix,
            pruned,
            calibration,
            reconstruct_text,
            exact: self.exact,
            methods,
            reconstruct_chunks: self.reconstruct_chunks,
        };
        let rows = compare::run(&o)?;
        let md = compare::markdown(&rows, &o);
        write_outputs(&o, &rows, &md)?;
        print!("{md}");
        println!(
            "\nwritten: {}/compare.{{md,json,svg,png}}",
            o.out_dir.display()
        );
        Ok(())
    }
}

/// compare.md, compare.json and the picture (SVG, PNG) in the output folder.
fn write_outputs(o: &compare::Options, rows: &[compare::Row], md: &str) -> Result<(), String> {
    let title = format!(
        "{}: size vs KL-divergence (colour: llmkernel speed, blue slow, red fast)",
        o.base
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("model")
    );
    let write = |name: &str, text: &str| std::fs::write(o.out_dir.join(name), text);
    let (svg, png) = (o.out_dir.join("compare.svg"), o.out_dir.join("compare.png"));
    write("compare.md", md)
        .and_then(|_| write("compare.json", &compare::json(rows)))
        .map_err(|e| e.to_string())
        .and_then(|_| compare::plot(rows, &title, &svg, &png))
}
