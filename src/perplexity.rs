//! `llmkernel perplexity`: perplexity computed as llama.cpp's llama-perplexity
//! computes it (chunks of `ctx` tokens, BOS first when the vocabulary wants it,
//! the first half of each chunk as context and the second half scored), with
//! ggml's kernels, llmkernel's, or both on the same model in one run, and the
//! KL-divergence of one token distribution from another (llmkernel's from
//! ggml's, or any from a teacher model's).

use crate::{backend, llama, logits_file};
use std::path::PathBuf;
use std::time::Instant;

/// Which kernels compute the weight matmuls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    Ggml,
    Llmkernel,
    Both,
}

impl Kernels {
    pub fn parse(s: &str) -> Result<Kernels, String> {
        match s {
            "ggml" => Ok(Kernels::Ggml),
            "llmkernel" => Ok(Kernels::Llmkernel),
            "both" => Ok(Kernels::Both),
            _ => Err(format!("--kernels {s}: expected ggml, llmkernel or both")),
        }
    }
}

pub struct Options {
    pub model: PathBuf,
    pub text: PathBuf,
    pub ctx: usize,
    pub chunks: Option<usize>,
    pub threads: usize,
    pub kernels: Kernels,
    pub teacher: Option<PathBuf>,
    /// The teacher is the model's exact reference (`--reference exact`):
    /// its run is labelled `exact`.
    pub teacher_is_exact: bool,
    pub progress: bool,
    /// After scoring, time this many single-token evaluations (text generation
    /// speed, as llama-bench's tg) per kernel set; 0 skips it.
    pub decode: usize,
    /// Save the (first non-teacher) run's scored logits here, in
    /// llama-perplexity's `--kl-divergence-base` format.
    pub save_logits: Option<PathBuf>,
    /// Measure KL-divergence against logits saved earlier (by this tool or by
    /// llama-perplexity) instead of a teacher run alongside.
    pub kl_base: Option<PathBuf>,
}

/// Negative log-likelihood sums of one model instance.
#[derive(Debug, Clone, Default)]
pub struct Score {
    pub label: String,
    nll: f64,
    nll2: f64,
    pub count: usize,
    /// Seconds spent in llama_decode, and the tokens it evaluated.
    pub eval_secs: f64,
    pub eval_tokens: usize,
    /// Matmuls the LLMK device computed for this instance (None: ggml's kernels).
    pub llmk_matmuls: Option<u64>,
    /// Single-token evaluations per second (None: not measured).
    pub decode_tokens_per_s: Option<f64>,
}

impl Score {
    /// Perplexity and its standard error, as llama-perplexity's final estimate.
    pub fn ppl(&self) -> (f64, f64) {
        let n = self.count as f64;
        let mean = self.nll / n;
        let ppl = mean.exp();
        let var = self.nll2 / n - mean * mean;
        let err = if var > 0.0 && n > 1.0 {
            (var / (n - 1.0)).sqrt() * ppl
        } else {
            f64::NAN
        };
        (ppl, err)
    }
    pub fn tokens_per_s(&self) -> f64 {
        self.eval_tokens as f64 / self.eval_secs
    }
}

/// KL-divergence of one distribution (`of`) from a base, per scored token.
#[derive(Debug, Clone, Default)]
pub struct Divergence {
    pub base: String,
    pub of: String,
    pub kld: Vec<f64>,
    pub same_top1: usize,
}

/// Summary statistics of a [`Divergence`].
#[derive(Debug, Clone, Copy)]
pub struct KldStats {
    pub mean: f64,
    pub mean_err: f64,
    pub median: f64,
    pub p99: f64,
    pub max: f64,
    pub same_top1: f64,
    pub same_top1_err: f64,
}

impl Divergence {
    pub fn stats(&self) -> KldStats {
        let n = self.kld.len().max(1) as f64;
        let mean = self.kld.iter().sum::<f64>() / n;
        let var = self.kld.iter().map(|k| (k - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        let mut sorted = self.kld.clone();
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| {
            sorted
                .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .unwrap_or(f64::NAN)
        };
        let p = self.same_top1 as f64 / n;
        KldStats {
            mean,
            mean_err: (var / n).sqrt(),
            median: at(0.5),
            p99: at(0.99),
            max: sorted.last().copied().unwrap_or(f64::NAN),
            same_top1: p,
            same_top1_err: (p * (1.0 - p) / n).sqrt(),
        }
    }
}

pub struct Report {
    pub model: String,
    pub description: String,
    pub size_bytes: u64,
    pub params: u64,
    pub ctx: usize,
    pub chunks: usize,
    pub chunks_available: usize,
    pub threads: usize,
    pub scores: Vec<Score>,
    pub divergences: Vec<Divergence>,
    /// This process's resident memory at the end of the run (VmRSS), with every
    /// model of the run still loaded.
    pub resident_bytes: Option<u64>,
}

/// This process's resident set size (Linux `/proc/self/status` VmRSS).
pub fn resident_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Log-softmax of one row (f64 sums, as llama-perplexity's `log_softmax`).
fn log_softmax(row: &[f32]) -> (Vec<f32>, usize) {
    let (mut max, mut arg) = (f32::NEG_INFINITY, 0);
    for (i, &v) in row.iter().enumerate() {
        if v > max {
            max = v;
            arg = i;
        }
    }
    let sum: f64 = row.iter().map(|&v| (v - max).exp() as f64).sum();
    let log_sum = sum.ln() as f32;
    (row.iter().map(|&v| v - max - log_sum).collect(), arg)
}

struct Instance<'m> {
    ctx: llama::Context<'m>,
    score: Score,
    llmk_before: Option<u64>,
}

/// Log-probabilities of a chunk's scored positions, each with its top-1 token.
type LogProbs = Vec<(Vec<f32>, usize)>;

/// The models a run evaluates.
struct Models {
    teacher: Option<llama::Model>,
    ggml: Option<llama::Model>,
    ours: Option<llama::Model>,
    /// The LLMK backend's registry, when llmkernel's kernels run.
    reg: Option<crate::ffi::ggml_backend_reg_t>,
}

impl Models {
    /// Loads the teacher and ggml's model before registering LLMK, and ours
    /// after: models loaded before LLMK is registered keep ggml's buffer
    /// types (and kernels), models loaded after it get LLMK's.
    fn load(o: &Options) -> Result<Models, String> {
        let teacher = o
            .teacher
            .as_deref()
            .map(|p| backend::without_llmk(|| llama::Model::load(p)))
            .transpose()?;
        let ggml = matches!(o.kernels, Kernels::Ggml | Kernels::Both)
            .then(|| backend::without_llmk(|| llama::Model::load(&o.model)))
            .transpose()?;
        let reg = if matches!(o.kernels, Kernels::Llmkernel | Kernels::Both) {
            Some(backend::register_in_process()?)
        } else {
            None
        };
        let ours = reg.map(|_| llama::Model::load(&o.model)).transpose()?;
        Ok(Models {
            teacher,
            ggml,
            ours,
            reg,
        })
    }

    /// The model under test (ggml's load of it when both run).
    fn first(&self) -> &llama::Model {
        self.ggml
            .as_ref()
            .or(self.ours.as_ref())
            .expect("a kernel set runs")
    }
}

/// The text as tokens, and how many chunks of it to score.
struct Text {
    tokens: Vec<i32>,
    bos: Option<i32>,
    n_vocab: usize,
    chunks_available: usize,
    chunks: usize,
}

impl Text {
    fn new(o: &Options, models: &Models) -> Result<Text, String> {
        let text =
            std::fs::read_to_string(&o.text).map_err(|e| format!("{}: {e}", o.text.display()))?;
        let model = models.first();
        let tokens = model.tokenize(&text)?;
        let n_vocab = model.n_vocab();
        if let Some(t) = &models.teacher {
            if t.n_vocab() != n_vocab {
                return Err(format!(
                    "the teacher's vocabulary has {} tokens, the model's {n_vocab}",
                    t.n_vocab()
                ));
            }
        }
        if tokens.len() < 2 * o.ctx {
            return Err(format!(
                "{} tokenizes to {} tokens; a context of {} needs at least {}",
                o.text.display(),
                tokens.len(),
                o.ctx,
                2 * o.ctx
            ));
        }
        let chunks_available = tokens.len() / o.ctx;
        Ok(Text {
            bos: model.bos(),
            n_vocab,
            chunks: o
                .chunks
                .map_or(chunks_available, |c| c.min(chunks_available)),
            chunks_available,
            tokens,
        })
    }

    /// Chunk `c`, BOS first where the vocabulary has one.
    fn chunk(&self, c: usize, ctx: usize) -> Vec<i32> {
        let mut chunk = self.tokens[c * ctx..(c + 1) * ctx].to_vec();
        if let Some(b) = self.bos {
            chunk[0] = b;
        }
        chunk
    }
}

/// Opens `--kl-base` logits, checks they belong to this text and context,
/// and limits the chunks to those they hold.
fn open_kl_base(o: &Options, text: &mut Text) -> Result<Option<logits_file::Reader>, String> {
    let Some(p) = &o.kl_base else {
        return Ok(None);
    };
    let r = logits_file::Reader::open(p)?;
    if r.n_ctx != o.ctx || r.n_vocab != text.n_vocab {
        return Err(format!(
            "{}: saved with ctx {} and {} tokens in the vocabulary; this run has ctx {} and {}",
            p.display(),
            r.n_ctx,
            r.n_vocab,
            o.ctx,
            text.n_vocab
        ));
    }
    let n = r.tokens.len().min(text.tokens.len());
    if text.tokens[..n] != r.tokens[..n] {
        return Err(format!(
            "{}: saved for another text or tokenizer (the tokens differ)",
            p.display()
        ));
    }
    text.chunks = text.chunks.min(r.n_chunk);
    Ok(Some(r))
}

/// The label of the teacher's run.
fn teacher_label(o: &Options) -> &'static str {
    if o.teacher_is_exact {
        "exact"
    } else {
        "teacher"
    }
}

/// One context per model: the teacher first, then ggml's, then ours.
fn instances<'m>(o: &Options, models: &'m Models) -> Result<Vec<Instance<'m>>, String> {
    let runs = [
        (&models.teacher, teacher_label(o), false),
        (&models.ggml, "ggml", false),
        (&models.ours, "llmkernel", true),
    ];
    let mut v = Vec::new();
    for (model, label, llmk) in runs {
        if let Some(m) = model {
            v.push(Instance {
                ctx: m.context(o.ctx, o.ctx, o.threads)?,
                score: Score {
                    label: label.into(),
                    ..Default::default()
                },
                llmk_before: llmk.then(|| llmk_matmuls(models.reg)),
            });
        }
    }
    Ok(v)
}

/// The progress bar over every chunk evaluation, when asked for.
fn progress_bar(o: &Options, evaluations: usize) -> Option<indicatif::ProgressBar> {
    o.progress.then(|| {
        let b = indicatif::ProgressBar::new(evaluations as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} chunk evaluations, {elapsed} elapsed, ETA {eta} {msg}",
            )
            .unwrap()
            .progress_chars("=> "),
        );
        b.set_prefix("perplexity");
        b
    })
}

/// Evaluates `chunk` on `inst` and adds its scored positions' negative
/// log-likelihoods to its score; returns their log-probabilities when
/// `keep` (a divergence needs them), and the raw logits go to `saver`.
fn score_chunk(
    o: &Options,
    inst: &mut Instance,
    chunk: &[i32],
    n_vocab: usize,
    saver: Option<&mut logits_file::Writer>,
    keep: bool,
) -> Result<LogProbs, String> {
    let first = o.ctx / 2;
    inst.ctx.clear();
    let t0 = Instant::now();
    let logits = inst.ctx.eval_from(chunk, first)?;
    inst.score.eval_secs += t0.elapsed().as_secs_f64();
    inst.score.eval_tokens += chunk.len();
    if let Some(w) = saver {
        w.rows(&logits[..(o.ctx - 1 - first) * n_vocab])?;
    }
    let mut rows = Vec::new();
    // Position first + i predicts token first + i + 1.
    for (i, row) in logits.chunks(n_vocab).take(o.ctx - 1 - first).enumerate() {
        if let Some(j) = row.iter().position(|x| !x.is_finite()) {
            // A NaN here would turn the whole perplexity into NaN with no
            // hint of where: say which position and logit, and stop.
            return Err(format!(
                "non-finite logit {} (token id {j}) at position {} of a chunk with {} kernels: \
                 the model or the kernels produced NaN or infinity",
                row[j],
                first + i,
                inst.score.label
            ));
        }
        let (lp, arg) = log_softmax(row);
        let v = -(lp[chunk[first + i + 1] as usize] as f64);
        inst.score.nll += v;
        inst.score.nll2 += v * v;
        inst.score.count += 1;
        if keep {
            rows.push((lp, arg));
        }
    }
    Ok(rows)
}

/// Adds one chunk's KL-divergences (and top-1 agreement) of every run but
/// the base (`base`, an index into `lps`, or the saved logits) to `divs`.
/// Saved logits hold log-probs only down to 16 below the top; like
/// llama-perplexity, the divergence then sums over those.
fn add_divergences(
    lps: &[LogProbs],
    base: Option<usize>,
    saved_base: Option<&mut logits_file::Reader>,
    divs: &mut [Divergence],
) -> Result<(), String> {
    let from_file;
    let (base_rows, floor) = match saved_base {
        Some(r) => {
            from_file = r.chunk()?;
            (&from_file, -16.0f32)
        }
        None => (&lps[base.expect("a base run")], f32::NEG_INFINITY),
    };
    let runs = lps.iter().enumerate().filter(|(i, _)| Some(*i) != base);
    for ((_, rows), div) in runs.zip(divs) {
        for ((lb, ab), (lq, aq)) in base_rows.iter().zip(rows) {
            let kld: f64 = lb
                .iter()
                .zip(lq)
                .filter(|(&p, _)| p > floor)
                .map(|(&p, &q)| (p as f64).exp() * (p as f64 - q as f64))
                .sum();
            div.kld.push(kld.max(0.0));
            div.same_top1 += (ab == aq) as usize;
        }
    }
    Ok(())
}

/// Times `o.decode` single-token evaluations on every run but the teacher
/// (text generation speed), after one warm-up token as llama-bench does.
fn time_decode(o: &Options, instances: &mut [Instance], first_token: i32) -> Result<(), String> {
    for inst in instances
        .iter_mut()
        .filter(|i| i.score.label != teacher_label(o))
    {
        inst.ctx.clear();
        let mut t = first_token;
        inst.ctx.eval_from(&[t], 0)?;
        // Positions 1..=n after the warm-up token; the context holds ctx.
        let n = o.decode.min(o.ctx - 1);
        let t0 = Instant::now();
        for _ in 0..n {
            let logits = inst.ctx.eval_from(&[t], 0)?;
            // Greedy next token keeps the sequence a model's own.
            t = log_softmax(&logits).1 as i32;
        }
        inst.score.decode_tokens_per_s = Some(n as f64 / t0.elapsed().as_secs_f64());
    }
    Ok(())
}

/// Runs the perplexity evaluation.
pub fn run(o: &Options) -> Result<Report, String> {
    if o.ctx < 8 {
        return Err(format!("--ctx {}: too small (at least 8)", o.ctx));
    }
    if o.teacher.is_some() && o.kl_base.is_some() {
        return Err("give --teacher or --kl-base, not both".into());
    }
    llama::init();
    let models = Models::load(o)?;
    let mut text = Text::new(o, &models)?;
    let mut saved_base = open_kl_base(o, &mut text)?;
    let chunks = text.chunks;
    let mut saver = match &o.save_logits {
        Some(p) => Some(logits_file::Writer::create(
            p,
            o.ctx,
            text.n_vocab,
            &text.tokens[..chunks * o.ctx],
        )?),
        None => None,
    };
    let mut instances = instances(o, &models)?;
    // The base of the divergences: the teacher, else saved logits, else ggml's
    // kernels when both run. `base` indexes instances; None with saved logits.
    let base = (models.teacher.is_some() || (saved_base.is_none() && o.kernels == Kernels::Both))
        .then_some(0);
    let base_label = match (&saved_base, base) {
        (Some(_), _) => Some("kl-base".to_string()),
        (None, Some(b)) => Some(instances[b].score.label.clone()),
        _ => None,
    };
    let mut divergences: Vec<Divergence> = match &base_label {
        Some(l) => instances
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != base)
            .map(|(_, inst)| Divergence {
                base: l.clone(),
                of: inst.score.label.clone(),
                ..Default::default()
            })
            .collect(),
        None => Vec::new(),
    };
    // Whose logits --save-logits writes: the first run that is not the teacher.
    let saving = instances
        .iter()
        .position(|i| i.score.label != teacher_label(o));

    let bar = progress_bar(o, chunks * instances.len());
    for c in 0..chunks {
        let chunk = text.chunk(c, o.ctx);
        let mut lps: Vec<LogProbs> = Vec::new();
        for (k, inst) in instances.iter_mut().enumerate() {
            let saver = saver.as_mut().filter(|_| saving == Some(k));
            lps.push(score_chunk(
                o,
                inst,
                &chunk,
                text.n_vocab,
                saver,
                base_label.is_some(),
            )?);
            if let Some(b) = &bar {
                b.inc(1);
            }
        }
        if base_label.is_some() {
            add_divergences(&lps, base, saved_base.as_mut(), &mut divergences)?;
        }
        if let Some(b) = &bar {
            let msg: Vec<String> = instances
                .iter()
                .map(|i| format!("{} PPL {:.4}", i.score.label, i.score.ppl().0))
                .collect();
            b.set_message(msg.join(", "));
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if let Some(w) = saver {
        w.finish()?;
    }
    if o.decode > 0 {
        time_decode(o, &mut instances, text.bos.unwrap_or(text.tokens[0]))?;
    }
    let scores = instances
        .into_iter()
        .map(|inst| Score {
            llmk_matmuls: inst
                .llmk_before
                .map(|before| llmk_matmuls(models.reg) - before),
            ..inst.score
        })
        .collect();
    let m = models.ours.as_ref().or(models.ggml.as_ref()).unwrap();
    let (size_bytes, params) = m.size_and_params();
    Ok(Report {
        model: o.model.display().to_string(),
        description: m.description(),
        size_bytes,
        params,
        ctx: o.ctx,
        chunks,
        chunks_available: text.chunks_available,
        threads: o.threads,
        scores,
        divergences,
        resident_bytes: resident_bytes(),
    })
}

impl Report {
    pub fn text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        writeln!(
            s,
            "model: {} ({}, {:.1} MiB, {:.2} B params)",
            self.model,
            self.description,
            self.size_bytes as f64 / (1 << 20) as f64,
            self.params as f64 / 1e9
        )
        .unwrap();
        writeln!(
            s,
            "ctx {}, {} of {} chunks, {} tokens scored per model, {} threads, commit {}",
            self.ctx,
            self.chunks,
            self.chunks_available,
            self.scores.first().map_or(0, |x| x.count),
            self.threads,
            crate::info::llmkernel_commit()
        )
        .unwrap();
        writeln!(
            s,
            "{:<10} {:>10} {:>9} {:>10} {:>12}",
            "kernels", "PPL", "± err", "pp tok/s", "LLMK matmuls"
        )
        .unwrap();
        for x in &self.scores {
            let (p, e) = x.ppl();
            writeln!(
                s,
                "{:<10} {:>10.4} {:>9.5} {:>10.1} {:>12}",
                x.label,
                p,
                e,
                x.tokens_per_s(),
                x.llmk_matmuls.map_or("-".into(), |n| n.to_string())
            )
            .unwrap();
        }
        if let Some(r) = self.resident_bytes {
            writeln!(
                s,
                "resident memory at the end: {:.0} MiB (every model of the run loaded)",
                r as f64 / (1 << 20) as f64
            )
            .unwrap();
        }
        for d in &self.divergences {
            let k = d.stats();
            writeln!(
                s,
                "KLD of {} from {}: mean {:.6} ± {:.6}, median {:.6}, 99th percentile {:.6}, max {:.6}; same top-1 {:.3} ± {:.3} %",
                d.of, d.base, k.mean, k.mean_err, k.median, k.p99, k.max, k.same_top1 * 100.0, k.same_top1_err * 100.0
            )
            .unwrap();
        }
        s
    }

    pub fn json(&self) -> String {
        let scores: Vec<serde_json::Value> = self
            .scores
            .iter()
            .map(|x| {
                let (p, e) = x.ppl();
                serde_json::json!({
                    "kernels": x.label, "ppl": p, "ppl_err": e, "tokens_scored": x.count,
                    "pp_tokens_per_s": x.tokens_per_s(), "tg_tokens_per_s": x.decode_tokens_per_s,
                    "llmk_matmuls": x.llmk_matmuls,
                })
            })
            .collect();
        let divs: Vec<serde_json::Value> = self
            .divergences
            .iter()
            .map(|d| {
                let k = d.stats();
                serde_json::json!({
                    "base": d.base, "of": d.of, "kld_mean": k.mean, "kld_mean_err": k.mean_err,
                    "kld_median": k.median, "kld_p99": k.p99, "kld_max": k.max,
                    "same_top1": k.same_top1, "same_top1_err": k.same_top1_err,
                })
            })
            .collect();
        serde_json::json!({
            "model": self.model, "description": self.description, "size_bytes": self.size_bytes,
            "params": self.params, "ctx": self.ctx, "chunks": self.chunks, "threads": self.threads,
            "commit": crate::info::llmkernel_commit(), "scores": scores, "divergences": divs,
            "resident_bytes": self.resident_bytes,
        })
        .to_string()
    }
}

/// The LLMK backend's MUL_MAT count so far, 0 without it (`reg`: the registry
/// `backend::register_in_process` returned, or none).
fn llmk_matmuls(reg: Option<crate::ffi::ggml_backend_reg_t>) -> u64 {
    // SAFETY: a registry from register_in_process lives for the whole process.
    reg.and_then(|r| unsafe { backend::stats(r) })
        .map_or(0, |s| s.mul_mat)
}
