//! `llmkernel compare`: makes each compressed variant of a base model, measures
//! each with ggml's kernels and llmkernel's (perplexity, KL-divergence from the
//! base, prompt and generation speed), and writes one table (markdown, JSON)
//! and one picture (SVG, PNG): file size against KL-divergence, one point per
//! variant, coloured by llmkernel's generation speed.

use crate::perplexity::{self, Kernels, Report};
use crate::{prune, quantize};
use llmkernel_kernels::Format;
use std::path::{Path, PathBuf};

pub struct Options {
    pub base: PathBuf,
    pub text: PathBuf,
    pub formats: Vec<Format>,
    pub ctx: usize,
    pub chunks: Option<usize>,
    pub threads: usize,
    pub out_dir: PathBuf,
    pub pure: bool,
    pub decode: usize,
    pub progress: bool,
    pub imatrix: Option<PathBuf>,
    /// 2:4 variants to make with `llmkernel prune` (method, reconstruct, storage format).
    pub pruned: Vec<(prune::Method, bool, prune::OutFormat)>,
    /// Calibration for Wanda (text or imatrix).
    pub calibration: Option<prune::Calibration>,
    /// Calibration text for reconstruction (run through the base).
    pub reconstruct_text: Option<PathBuf>,
    /// Also measure both kernel sets of every variant against the variant's
    /// exact reference (`perplexity --reference exact`).
    pub exact: bool,
    /// How each format's variants are quantized (one variant per method);
    /// empty: as `imatrix` says (with it, the imatrix; without, plain).
    pub methods: Vec<QuantMethod>,
    /// Calibration chunks (of `ctx` tokens of `reconstruct_text`) for
    /// [`QuantMethod::Reconstruct`].
    pub reconstruct_chunks: usize,
}

/// How a quantized variant is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantMethod {
    /// `quantize` without an importance matrix.
    Plain,
    /// `quantize --imatrix`.
    Imatrix,
    /// `quantize --reconstruct` (with the imatrix, where there is one).
    Reconstruct,
}

impl QuantMethod {
    pub fn parse(s: &str) -> Result<QuantMethod, String> {
        match s {
            "plain" => Ok(QuantMethod::Plain),
            "imatrix" => Ok(QuantMethod::Imatrix),
            "reconstruct" => Ok(QuantMethod::Reconstruct),
            _ => Err(format!(
                "method {s:?}: expected plain, imatrix or reconstruct"
            )),
        }
    }
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub file: PathBuf,
    pub size_bytes: u64,
    pub bpw: f64,
    pub ppl: f64,
    pub ppl_err: f64,
    pub ppl_llmk: f64,
    pub dppl: f64,
    /// Mean KLD of the variant (ggml's kernels) from the base, and its error.
    pub kld: Option<(f64, f64)>,
    pub same_top1: Option<f64>,
    pub pp: (f64, f64),
    pub tg: (Option<f64>, Option<f64>),
    pub llmk_matmuls: u64,
    pub chunks: usize,
    /// Mean KLD (and error) of ggml's and of llmkernel's run from the
    /// variant's exact reference, with `--exact`.
    pub exact: Option<((f64, f64), (f64, f64))>,
    /// How a quantized variant was made ("plain", "imatrix",
    /// "imatrix+reconstruct"; empty for the base and 2:4 variants).
    pub method: String,
    /// Seconds it took to make, and the process's peak memory (MiB) while
    /// it was made, where this run made it.
    pub made: Option<(f64, Option<f64>)>,
}

fn row(name: &str, file: &Path, r: &Report, base_ppl: f64) -> Row {
    let by = |l: &str| r.scores.iter().find(|s| s.label == l);
    let (g, l) = (by("ggml").unwrap(), by("llmkernel").unwrap());
    let (ppl, ppl_err) = g.ppl();
    let div = r
        .divergences
        .iter()
        .find(|d| d.of == "ggml" && d.base == "teacher")
        .map(|d| d.stats());
    Row {
        name: name.into(),
        file: file.into(),
        size_bytes: r.size_bytes,
        bpw: r.size_bytes as f64 * 8.0 / r.params as f64,
        ppl,
        ppl_err,
        ppl_llmk: l.ppl().0,
        dppl: ppl - base_ppl,
        kld: div.map(|k| (k.mean, k.mean_err)),
        same_top1: div.map(|k| k.same_top1),
        pp: (g.tokens_per_s(), l.tokens_per_s()),
        tg: (g.decode_tokens_per_s, l.decode_tokens_per_s),
        llmk_matmuls: l.llmk_matmuls.unwrap_or(0),
        chunks: r.chunks,
        exact: None,
        method: String::new(),
        made: None,
    }
}

/// Both kernel sets on `model` as `o` asks, measured against `teacher`
/// (the model's exact reference with `exact`; then no decode timing).
fn ppl_options(
    o: &Options,
    model: &Path,
    teacher: Option<&Path>,
    exact: bool,
) -> perplexity::Options {
    perplexity::Options {
        model: model.into(),
        text: o.text.clone(),
        ctx: o.ctx,
        chunks: o.chunks,
        threads: o.threads,
        kernels: Kernels::Both,
        teacher: teacher.map(Into::into),
        progress: o.progress,
        decode: if exact { 0 } else { o.decode },
        save_logits: None,
        kl_base: None,
        teacher_is_exact: exact,
    }
}

/// Each kernel set's mean KLD (and error) from `model`'s exact reference.
fn exact_klds(o: &Options, model: &Path) -> Result<((f64, f64), (f64, f64)), String> {
    let reference = quantize::exact_reference(model, &o.out_dir.join("exact"), o.threads)?;
    eprintln!(
        "compare: measuring {} against its exact reference",
        model.display()
    );
    let r = perplexity::run(&ppl_options(o, model, Some(&reference), true))?;
    let of = |k: &str| {
        r.divergences
            .iter()
            .find(|d| d.of == k && d.base == "exact")
            .map(|d| {
                let s = d.stats();
                (s.mean, s.mean_err)
            })
            .ok_or_else(|| format!("no KLD of {k} from the exact reference"))
    };
    Ok((of("ggml")?, of("llmkernel")?))
}

/// What a derived file was made from and how: the inputs' paths, sizes and
/// modification times, and the options. A file in the output directory is
/// reused only when its recipe (`<file>.recipe`, written next to it) is this
/// one: a file of the same name made from another base, imatrix or
/// calibration text, or by another llmkernel, is made again.
fn recipe(o: &Options, what: &str) -> String {
    let stamp = |p: &Path| match std::fs::metadata(p) {
        Ok(m) => format!(
            "{} ({} bytes, modified {:?})",
            p.display(),
            m.len(),
            m.modified().ok()
        ),
        Err(_) => format!("{} (missing)", p.display()),
    };
    let mut r = format!(
        "llmkernel {} ({})\nbase: {}\n{what}\n",
        env!("CARGO_PKG_VERSION"),
        crate::info::llmkernel_commit(),
        stamp(&o.base)
    );
    if let Some(i) = &o.imatrix {
        r += &format!("imatrix: {}\n", stamp(i));
    }
    match &o.calibration {
        Some(prune::Calibration::Text { path, ctx, chunks }) => {
            r += &format!(
                "calibration text: {}, ctx {ctx}, chunks {chunks:?}\n",
                stamp(path)
            )
        }
        Some(prune::Calibration::Imatrix(p)) => {
            r += &format!("calibration imatrix: {}\n", stamp(p))
        }
        None => {}
    }
    if let Some(t) = &o.reconstruct_text {
        r += &format!("reconstruction text: {}, ctx {}\n", stamp(t), o.ctx);
    }
    r
}

fn recipe_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".recipe");
    p.into()
}

/// Whether `path` exists and was made by `recipe`.
fn up_to_date(path: &Path, recipe: &str) -> bool {
    path.exists() && std::fs::read_to_string(recipe_path(path)).is_ok_and(|r| r == recipe)
}

/// Makes `path` with `make` unless it is up to date, then records its recipe.
fn make_once(
    path: &Path,
    recipe: &str,
    doing: &str,
    make: impl FnOnce() -> Result<(), String>,
) -> Result<(), String> {
    if up_to_date(path, recipe) {
        eprintln!("compare: reusing {} (same recipe)", path.display());
        return Ok(());
    }
    eprintln!("compare: {doing} {}", path.display());
    let _ = std::fs::remove_file(recipe_path(path));
    make()?;
    std::fs::write(recipe_path(path), recipe)
        .map_err(|e| format!("{}: {e}", recipe_path(path).display()))
}

pub fn run(o: &Options) -> Result<Vec<Row>, String> {
    std::fs::create_dir_all(&o.out_dir).map_err(|e| format!("{}: {e}", o.out_dir.display()))?;
    let stem = o
        .base
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("model")
        .to_string();
    let ppl_opts = |model: &Path, teacher: Option<&Path>| ppl_options(o, model, teacher, false);
    eprintln!("compare: base {}", o.base.display());
    let base = perplexity::run(&ppl_opts(&o.base, None))?;
    let base_ppl = base
        .scores
        .iter()
        .find(|s| s.label == "ggml")
        .unwrap()
        .ppl()
        .0;
    let mut rows = vec![row("base", &o.base, &base, base_ppl)];
    let with_exact = |mut r: Row| -> Result<Row, String> {
        if o.exact {
            r.exact = Some(exact_klds(o, &r.file)?);
        }
        Ok(r)
    };
    rows[0] = with_exact(rows[0].clone())?;
    let methods = match (o.methods.is_empty(), &o.imatrix) {
        (false, _) => o.methods.clone(),
        (true, Some(_)) => vec![QuantMethod::Imatrix],
        (true, None) => vec![QuantMethod::Plain],
    };
    let named = o.methods.len() > 1 || methods != [QuantMethod::Plain];
    // Every quantized variant: format, method, label, imatrix, path, recipe.
    let mut variants = Vec::new();
    for &f in &o.formats {
        for &m in &methods {
            if m == QuantMethod::Plain && quantize::needs_imatrix(f) {
                eprintln!("compare: no plain {f} variant: {f} is made only with an importance matrix (--imatrix)");
                continue;
            }
            if m == QuantMethod::Reconstruct && !crate::gptq::has_solver(f) {
                eprintln!("compare: no reconstructed {f} variant: no error-compensated quantization for it");
                continue;
            }
            let imatrix = match m {
                QuantMethod::Plain => None,
                QuantMethod::Imatrix => Some(
                    o.imatrix
                        .as_deref()
                        .ok_or("the imatrix method needs --imatrix")?,
                ),
                QuantMethod::Reconstruct => o.imatrix.as_deref(),
            };
            let label = match (m, imatrix) {
                (QuantMethod::Plain, _) => "plain",
                (QuantMethod::Imatrix, _) => "imatrix",
                (QuantMethod::Reconstruct, Some(_)) => "imatrix+reconstruct",
                (QuantMethod::Reconstruct, None) => "reconstruct",
            };
            let path = o.out_dir.join(format!(
                "{stem}-{}{}{}.gguf",
                f.name(),
                if o.pure { "-pure" } else { "" },
                if named {
                    format!("-{label}")
                } else {
                    String::new()
                }
            ));
            let mut how = format!(
                "quantize --format {}{} ({label})",
                f.name(),
                if o.pure { " --pure" } else { "" }
            );
            if m == QuantMethod::Reconstruct {
                how += &format!(" --reconstruct --chunks {}", o.reconstruct_chunks);
            }
            let recipe = recipe(o, &how);
            variants.push((f, m, label, imatrix, path, recipe));
        }
    }
    // The error-compensated variants to make are made together: one
    // calibration run and one Hessian factor per layer for all of them.
    let mut made: std::collections::BTreeMap<PathBuf, (f64, Option<f64>)> = Default::default();
    let todo: Vec<_> = variants
        .iter()
        .filter(|v| v.1 == QuantMethod::Reconstruct && !up_to_date(&v.4, &v.5))
        .collect();
    if !todo.is_empty() {
        let calib = o
            .reconstruct_text
            .clone()
            .ok_or("the reconstruct method needs --calib text")?;
        for v in &todo {
            eprintln!(
                "compare: quantizing with error compensation to {}",
                v.4.display()
            );
            let _ = std::fs::remove_file(recipe_path(&v.4));
        }
        crate::gptq::reset_peak();
        let reports = crate::gptq::quantize(&crate::gptq::Options {
            input: o.base.clone(),
            outputs: todo.iter().map(|v| (v.0, v.4.clone())).collect(),
            pure: o.pure,
            threads: o.threads,
            imatrix: o.imatrix.clone(),
            calib,
            ctx: o.ctx,
            chunks: o.reconstruct_chunks,
            calib_mem: None,
        })?;
        let peak = crate::gptq::peak_rss_mib();
        for (v, r) in todo.iter().zip(reports) {
            made.insert(
                v.4.clone(),
                (r.quantize_secs + r.calib_secs + r.solve_secs, peak),
            );
            std::fs::write(recipe_path(&v.4), &v.5)
                .map_err(|e| format!("{}: {e}", recipe_path(&v.4).display()))?;
        }
    }
    for (f, _, label, imatrix, path, recipe) in &variants {
        make_once(path, recipe, "quantizing to", || {
            crate::gptq::reset_peak();
            let t = std::time::Instant::now();
            quantize::quantize(&o.base, path, *f, o.pure, o.threads, *imatrix)?;
            made.insert(
                path.clone(),
                (t.elapsed().as_secs_f64(), crate::gptq::peak_rss_mib()),
            );
            Ok(())
        })?;
        eprintln!("compare: measuring {}", path.display());
        let r = perplexity::run(&ppl_opts(path, Some(&o.base)))?;
        let name = if named {
            format!("{} {label}", f.name())
        } else {
            f.name().to_string()
        };
        let mut row = with_exact(row(&name, path, &r, base_ppl))?;
        row.method = label.to_string();
        row.made = made.get(path).copied();
        rows.push(row);
    }
    for &(method, rec, format) in &o.pruned {
        let fname = format!("{format:?}").to_lowercase();
        let variant = format!("{}{}", method.name(), if rec { "+reconstruct" } else { "" });
        let path = o.out_dir.join(format!("{stem}-{fname}-2_4-{variant}.gguf"));
        let reconstruct = match (&o.reconstruct_text, rec) {
            (_, false) => None,
            (Some(text), true) => Some(prune::Reconstruct {
                text: text.clone(),
                ctx: o.ctx,
                chunks: 8,
            }),
            (None, true) => return Err(format!("{variant}: reconstruction needs --calib text")),
        };
        let how = format!("prune {variant} --format {fname}");
        make_once(&path, &recipe(o, &how), "pruning to", || {
            let calibration = match (&o.calibration, method) {
                (Some(prune::Calibration::Text { path, ctx, chunks }), _) => {
                    Some(prune::Calibration::Text {
                        path: path.clone(),
                        ctx: *ctx,
                        chunks: *chunks,
                    })
                }
                (Some(prune::Calibration::Imatrix(p)), _) => {
                    Some(prune::Calibration::Imatrix(p.clone()))
                }
                (None, _) => None,
            };
            prune::prune(&prune::Options {
                input: o.base.clone(),
                output: path.clone(),
                method,
                format,
                calibration,
                skip: None,
                threads: o.threads,
                reconstruct,
            })
            .map(|_| ())
        })?;
        eprintln!("compare: measuring {}", path.display());
        let r = perplexity::run(&ppl_opts(&path, Some(&o.base)))?;
        rows.push(with_exact(row(
            &format!("{fname} 2:4 {variant}"),
            &path,
            &r,
            base_ppl,
        ))?);
    }
    Ok(rows)
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(g), Some(l)) => format!("{:.2}×", l / g),
        _ => "-".into(),
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

/// The table in markdown.
pub fn markdown(rows: &[Row], o: &Options) -> String {
    let chunks = rows.first().map_or(0, |r| r.chunks);
    let mut s =
        format!(
        "Base: `{}`; text `{}`; ctx {}, {} chunks; {} threads; variants made from the base with \
         `llmkernel quantize{}{}`{}; commit {}.\n\n",
        o.base.display(),
        o.text.display(),
        o.ctx,
        chunks,
        o.threads,
        if o.pure { " --pure" } else { "" },
        o.imatrix.as_ref().map_or(String::new(), |p| format!(" --imatrix {}", p.display())),
        if o.pruned.is_empty() {
            String::new()
        } else {
            format!(
                ", 2:4 variants with `llmkernel prune` from the base{}",
                match &o.calibration {
                    Some(prune::Calibration::Text { path, .. }) =>
                        format!(" (Wanda calibration: {})", path.display()),
                    Some(prune::Calibration::Imatrix(p)) =>
                        format!(" (Wanda calibration: imatrix {})", p.display()),
                    None => String::new(),
                }
            )
        },
        crate::info::llmkernel_commit()
    );
    s += "| variant | bits/weight | size MiB | PPL (ggml) | ΔPPL | PPL (llmkernel) | mean KLD vs base | same top-1 | pp{ctx} ggml t/s | pp llmkernel t/s | pp ratio | tg ggml t/s | tg llmkernel t/s | tg ratio |\n";
    s += "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    for r in rows {
        s += &format!(
            "| {} | {:.2} | {:.1} | {:.4} ± {:.4} | {:+.4} | {:.4} | {} | {} | {:.1} | {:.1} | {:.2}× | {} | {} | {} |\n",
            r.name,
            r.bpw,
            r.size_bytes as f64 / (1 << 20) as f64,
            r.ppl,
            r.ppl_err,
            r.dppl,
            r.ppl_llmk,
            r.kld.map_or("-".into(), |(m, e)| format!("{m:.5} ± {e:.5}")),
            r.same_top1.map_or("-".into(), |p| format!("{:.2} %", p * 100.0)),
            r.pp.0,
            r.pp.1,
            r.pp.1 / r.pp.0,
            opt(r.tg.0, 1),
            opt(r.tg.1, 1),
            ratio(r.tg.0, r.tg.1),
        );
    }
    if rows.iter().any(|r| r.made.is_some()) {
        s += "\nHow long each variant made in this run took to make, and the process's peak memory meanwhile \
              (VmHWM, reset before each; it includes what the process already held). The error-compensated \
              variants are made together: each one's time counts the shared calibration run and Hessian \
              factors in full, and the peak is the batch's.\n\n";
        s += "| variant | method | made in s | peak memory MiB |\n|---|---|---|---|\n";
        for r in rows {
            if let Some((secs, peak)) = r.made {
                s += &format!(
                    "| {} | {} | {secs:.1} | {} |\n",
                    r.name,
                    r.method,
                    opt(peak, 0)
                );
            }
        }
    }
    if rows.iter().any(|r| r.exact.is_some()) {
        s += "\nEach kernel set against the variant's exact reference (its weights dequantized to F32, \
              multiplied in F32, no activation quantized): the error the kernels add.\n\n";
        s += "| variant | KLD of ggml from exact | KLD of llmkernel from exact | llmkernel / ggml |\n|---|---|---|---|\n";
        for r in rows {
            if let Some(((g, ge), (l, le))) = r.exact {
                s += &format!(
                    "| {} | {g:.6} ± {ge:.6} | {l:.6} ± {le:.6} | {:.3} |\n",
                    r.name,
                    l / g
                );
            }
        }
    }
    s.replace("pp{ctx}", &format!("pp{}", o.ctx))
}

pub fn json(rows: &[Row]) -> String {
    let v: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "variant": r.name, "file": r.file, "size_bytes": r.size_bytes, "bits_per_weight": r.bpw,
                "ppl": r.ppl, "ppl_err": r.ppl_err, "ppl_llmkernel": r.ppl_llmk, "delta_ppl": r.dppl,
                "kld_mean": r.kld.map(|k| k.0), "kld_mean_err": r.kld.map(|k| k.1),
                "same_top1": r.same_top1, "pp_ggml": r.pp.0, "pp_llmkernel": r.pp.1,
                "tg_ggml": r.tg.0, "tg_llmkernel": r.tg.1, "llmk_matmuls": r.llmk_matmuls,
                "kld_exact_ggml": r.exact.map(|e| e.0 .0), "kld_exact_ggml_err": r.exact.map(|e| e.0 .1),
                "kld_exact_llmkernel": r.exact.map(|e| e.1 .0), "kld_exact_llmkernel_err": r.exact.map(|e| e.1 .1),
                "method": r.method, "made_secs": r.made.map(|m| m.0), "made_peak_mib": r.made.and_then(|m| m.1),
            })
        })
        .collect();
    serde_json::to_string_pretty(&v).unwrap()
}

/// Registers the font the bitmap backend draws text with (no system fonts needed).
pub fn register_font() {
    static FONT: std::sync::Once = std::sync::Once::new();
    FONT.call_once(|| {
        let _ = plotters::style::register_font(
            "sans-serif",
            plotters::style::FontStyle::Normal,
            epaint_default_fonts::UBUNTU_LIGHT,
        );
    });
}

/// Draws size against KLD into `svg` and `png`: a point per variant, a
/// line per quantization method.
pub fn plot(rows: &[Row], title: &str, svg: &Path, png: &Path) -> Result<(), String> {
    use plotters::prelude::*;
    register_font();
    let pts: Vec<&Row> = rows.iter().filter(|r| r.kld.is_some()).collect();
    if pts.is_empty() {
        return Err("no variant to plot".into());
    }
    let mib = |r: &Row| r.size_bytes as f64 / (1 << 20) as f64;
    let xmax = rows.iter().map(mib).fold(0.0, f64::max) * 1.45; // room for the labels
    let (ymin, ymax) = pts
        .iter()
        .map(|r| r.kld.unwrap().0)
        .fold((f64::MAX, 0f64), |(a, b), k| (a.min(k), b.max(k)));
    let (ymin, ymax) = (ymin / 2.0, ymax * 2.0);
    let tg = |r: &Row| r.tg.1.unwrap_or(r.pp.1);
    let (tmin, tmax) = pts
        .iter()
        .map(|r| tg(r))
        .fold((f64::MAX, 0f64), |(a, b), t| (a.min(t), b.max(t)));
    fn draw<DB: DrawingBackend>(
        root: DrawingArea<DB, plotters::coord::Shift>,
        rows: &[Row],
        pts: &[&Row],
        title: &str,
        (xmax, ymin, ymax, tmin, tmax): (f64, f64, f64, f64, f64),
    ) -> Result<(), String>
    where
        DB::ErrorType: 'static,
    {
        let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        root.fill(&WHITE).map_err(e)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(20)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..xmax, (ymin..ymax).log_scale())
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc("file size (MiB)")
            .y_desc("mean KL-divergence from the base (log)")
            .axis_desc_style(("sans-serif", 15))
            .draw()
            .map_err(e)?;
        let mib = |r: &Row| r.size_bytes as f64 / (1 << 20) as f64;
        // One line per quantization method through its variants: the frontiers.
        let mut methods: Vec<&str> = pts
            .iter()
            .map(|r| r.method.as_str())
            .filter(|m| !m.is_empty())
            .collect();
        methods.sort();
        methods.dedup();
        let styles = [
            RGBColor(120, 120, 120),
            RGBColor(30, 140, 60),
            RGBColor(0, 0, 0),
            RGBColor(200, 120, 0),
        ];
        for (i, m) in methods.iter().enumerate() {
            let mut line: Vec<(f64, f64)> = pts
                .iter()
                .filter(|r| r.method == *m)
                .map(|r| (mib(r), r.kld.unwrap().0))
                .collect();
            line.sort_by(|a, b| a.0.total_cmp(&b.0));
            let style = styles[i % styles.len()];
            chart
                .draw_series(std::iter::once(PathElement::new(
                    line.clone(),
                    style.stroke_width(2),
                )))
                .map_err(e)?
                .label(*m)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], style.stroke_width(2))
                });
        }
        if !methods.is_empty() {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperRight)
                .label_font(("sans-serif", 14))
                .draw()
                .map_err(e)?;
        }
        for r in pts {
            let (x, y) = (mib(r), r.kld.unwrap().0);
            let t = r.tg.1.unwrap_or(r.pp.1);
            let f = if tmax > tmin {
                (t - tmin) / (tmax - tmin)
            } else {
                1.0
            };
            // slow = blue, fast = red
            let colour = RGBColor((40.0 + 200.0 * f) as u8, 60, (220.0 - 180.0 * f) as u8);
            chart
                .draw_series(std::iter::once(Circle::new((x, y), 9, colour.filled())))
                .map_err(e)?;
            let speed = match (r.tg.0, r.tg.1) {
                (Some(g), Some(l)) => format!("{} — tg {l:.0} t/s ({:.2}× ggml)", r.name, l / g),
                _ => format!(
                    "{} — pp {:.0} t/s ({:.2}× ggml)",
                    r.name,
                    r.pp.1,
                    r.pp.1 / r.pp.0
                ),
            };
            chart
                .draw_series(std::iter::once(Text::new(
                    speed,
                    (x + xmax * 0.015, y),
                    ("sans-serif", 14),
                )))
                .map_err(e)?;
        }
        if let Some(b) = rows.iter().find(|r| r.kld.is_none()) {
            let x = mib(b);
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(x, ymin), (x, ymax)],
                    BLACK.stroke_width(1),
                )))
                .map_err(e)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("base ({:.0} MiB)", x),
                    (x + xmax * 0.01, ymax / 1.3),
                    ("sans-serif", 14),
                )))
                .map_err(e)?;
        }
        root.present().map_err(e)?;
        Ok(())
    }
    let bounds = (xmax, ymin, ymax, tmin, tmax);
    draw(
        SVGBackend::new(svg, (900, 560)).into_drawing_area(),
        rows,
        &pts,
        title,
        bounds,
    )?;
    draw(
        BitMapBackend::new(png, (900, 560)).into_drawing_area(),
        rows,
        &pts,
        title,
        bounds,
    )?;
    Ok(())
}

#[cfg(test)]
mod recipe_tests {
    use super::*;

    /// A derived file is reused only when it was made by the same recipe.
    #[test]
    fn files_are_remade_when_their_recipe_changes() {
        let dir = std::env::temp_dir().join(format!("llmk-recipe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m-q4_k.gguf");
        let made = std::cell::Cell::new(0);
        let make = || {
            made.set(made.get() + 1);
            std::fs::write(&path, b"x").map_err(|e| e.to_string())
        };
        // A file of that name from elsewhere (no recipe): made again.
        std::fs::write(&path, b"stale").unwrap();
        make_once(&path, "recipe A", "making", make).unwrap();
        assert_eq!(made.get(), 1);
        make_once(&path, "recipe A", "making", make).unwrap();
        assert_eq!(made.get(), 1, "same recipe: reused");
        make_once(&path, "recipe B", "making", make).unwrap();
        assert_eq!(made.get(), 2, "another recipe: made again");
        // A failed make leaves no recipe, so the next run makes it again.
        assert!(make_once(&path, "recipe C", "making", || Err("no".into())).is_err());
        make_once(&path, "recipe C", "making", make).unwrap();
        assert_eq!(made.get(), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
