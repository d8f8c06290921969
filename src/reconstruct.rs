//! Layer-wise reconstruction of pruned weights (`llmkernel prune
//! --reconstruct`): the distillation view of pruning. For each pruned matrix
//! W (rows = outputs, K inputs) and the dense model's inputs X to it over
//! calibration text, the kept weights are updated so that the layer's
//! outputs `X W'ᵀ` stay close to the dense `X Wᵀ` (least squares), given the
//! 2:4 mask the scores chose.
//!
//! The solver follows SparseGPT (Frantar & Alistarh 2023, "SparseGPT:
//! Massive Language Models Can Be Accurately Pruned in One-Shot"): with
//! `H = XᵀX + λI` (λ = 1 % of H's mean diagonal) and U the upper Cholesky
//! factor of `H⁻¹` (`UᵀU = H⁻¹`), columns are visited left to right; a
//! pruned weight's removal error `e = w / U_ii` is compensated in the row's
//! later weights (`w_j -= e U_ij`, the optimal brain surgeon update), in
//! blocks of 128 columns with the block's errors applied to the rest by one
//! matrix product. The mask is fixed beforehand (magnitude or Wanda), so
//! this measures what reconstruction adds to a given pruning.
//!
//! The dense linear algebra is faer's (threaded, blocked): the products in
//! f32, the Cholesky factor and triangular inverse in f64.

use crate::{ffi, llama};
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatMut, MatRef, Par, Side};
use llmkernel_kernels::formats::WeightBlock;
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{c_void, CStr};
use std::path::Path;

/// Calibration inputs of the weight matrices: per group of matrices that
/// share their input (q/k/v, gate/up), up to `max_rows` rows of K floats.
#[derive(Default)]
pub struct Inputs {
    /// Key: [`input_key`] of a weight name.
    pub x: BTreeMap<String, (Vec<f32>, usize)>,
    /// With [`collect_hessians`] instead: per group, the undamped `XᵀX`.
    pub h: BTreeMap<String, Gram>,
    hessians: bool,
    max_rows: usize,
    /// Only these groups (all when empty); the chunk's graph is stopped
    /// once each of them has had its inputs.
    only: BTreeSet<String>,
    /// The groups of `only` reached in the current chunk.
    reached: BTreeSet<String>,
    error: Option<String>,
}

/// The lower triangle of a k x k `XᵀX` summed over input rows, packed by
/// block rows of [`Gram::BLOCK`]: block row `i0..i1` holds columns `0..i1`
/// (row-major, `i1` apart), about half of k² floats.
pub struct Gram {
    pub k: usize,
    /// Input rows summed.
    pub rows: usize,
    data: Vec<f32>,
}

impl Gram {
    const BLOCK: usize = 512;

    pub fn new(k: usize) -> Self {
        Gram {
            k,
            rows: 0,
            data: vec![0f32; Self::len(k)],
        }
    }

    /// Floats held for inputs of `k` values.
    pub fn len(k: usize) -> usize {
        // The whole block rows, then the last rows' k columns each.
        Self::offset(k / Self::BLOCK) + (k % Self::BLOCK) * k
    }

    /// Where block row `b` (rows `b * BLOCK..`) starts, all before it whole.
    fn offset(b: usize) -> usize {
        Self::BLOCK * Self::BLOCK * b * (b + 1) / 2
    }

    /// Adds `XᵀX` for the `rows` rows of k values of `x` that start
    /// `stride` apart.
    pub fn add(&mut self, x: &[f32], rows: usize, stride: usize) {
        let k = self.k;
        self.rows += rows;
        if rows == 0 || k == 0 {
            return;
        }
        // Xᵀ as a column-major k x rows matrix; block row i0..i1 as the
        // column-major i1 x (i1 - i0) matrix its rows are (columns i1 apart):
        // it gains X[:, ..i1]ᵀ X[:, i0..i1], about half the products of the
        // whole XᵀX (see [`gemm`] on the layouts).
        let xt = MatRef::from_column_major_slice_with_stride(
            &x[..(rows - 1) * stride + k],
            k,
            rows,
            stride,
        );
        for (b, i0) in (0..k).step_by(Self::BLOCK).enumerate() {
            let i1 = (i0 + Self::BLOCK).min(k);
            let at = Self::offset(b);
            let ht = MatMut::from_column_major_slice_with_stride_mut(
                &mut self.data[at..at + (i1 - i0) * i1],
                i1,
                i1 - i0,
                i1,
            );
            matmul(
                ht,
                Accum::Add,
                xt.subrows(0, i1),
                xt.subrows(i0, i1 - i0).transpose(),
                1.0f32,
                par(),
            );
        }
    }

    /// The whole `XᵀX` (k x k, row-major), mirrored from the lower
    /// triangle and damped ([`damp`]).
    pub fn hessian(&self) -> Vec<f32> {
        let k = self.k;
        let mut h = vec![0f32; k * k];
        for i in 0..k {
            let (b, i0) = (i / Self::BLOCK, i / Self::BLOCK * Self::BLOCK);
            let i1 = (i0 + Self::BLOCK).min(k);
            let row = Self::offset(b) + (i - i0) * i1;
            for j in 0..=i {
                let v = self.data[row + j];
                h[i * k + j] = v;
                h[j * k + i] = v;
            }
        }
        damp(&mut h, k);
        h
    }
}

/// The weights that read the same activations share one entry:
/// `blk.N.attn_{q,k,v}` -> `blk.N.attn_in`, `blk.N.ffn_{gate,up}` -> `blk.N.ffn_in`.
pub fn input_key(weight: &str) -> String {
    let base = weight.strip_suffix(".weight").unwrap_or(weight);
    for (from, to) in [
        ("attn_q", "attn_in"),
        ("attn_k", "attn_in"),
        ("attn_v", "attn_in"),
        ("ffn_gate", "ffn_in"),
        ("ffn_up", "ffn_in"),
    ] {
        if let Some(layer) = base.strip_suffix(from) {
            return format!("{layer}{to}");
        }
    }
    base.to_string()
}

unsafe extern "C" fn callback(t: *mut ffi::ggml_tensor, ask: bool, ud: *mut c_void) -> bool {
    // SAFETY: libllama passes a live node and our Inputs as user data.
    let (t, c) = unsafe { (&*t, &mut *(ud as *mut Inputs)) };
    if t.op != ffi::GGML_OP_MUL_MAT {
        return !ask;
    }
    // SAFETY: MUL_MAT has two sources.
    let (w, x) = unsafe { (&*t.src[0], &*t.src[1]) };
    // SAFETY: NUL-terminated name.
    let raw = unsafe { CStr::from_ptr(w.name.as_ptr()) }.to_string_lossy();
    let name = match raw.split_once('#') {
        Some((_, rest)) => rest.split('#').next().unwrap_or(rest).to_string(),
        None => raw.to_string(),
    };
    // One weight per shared input (q for q/k/v, gate for gate/up), so each
    // input row is kept once.
    let representative = !["attn_k.weight", "attn_v.weight", "ffn_up.weight"]
        .iter()
        .any(|s| name.ends_with(s));
    let key = input_key(&name);
    let wanted = name.starts_with("blk.")
        && representative
        && x.type_ == ffi::GGML_TYPE_F32
        && x.nb[0] == 4
        && (c.only.is_empty() || c.only.contains(&key));
    if ask {
        return wanted;
    }
    if !wanted || c.error.is_some() {
        return true;
    }
    let k = x.ne[0] as usize;
    if c.hessians {
        if !c.only.is_empty() {
            c.reached.insert(key.clone());
        }
        let entry = c.h.entry(key).or_insert_with(|| Gram::new(k));
        if entry.k != k {
            c.error = Some(format!("{name}: inputs of {k} and {} values", entry.k));
            return true;
        }
        let stride = x.nb[1] / 4;
        for i3 in 0..x.ne[3] {
            for i2 in 0..x.ne[2] {
                let rows = (x.ne[1] as usize).min(c.max_rows.saturating_sub(entry.rows));
                if rows == 0 || x.nb[1] % 4 != 0 {
                    continue;
                }
                let off = i2 as usize * x.nb[2] + i3 as usize * x.nb[3];
                // SAFETY: `rows` rows of k f32 at stride nb[1] inside the
                // activation tensor (f32, nb[0] = 4).
                let xs = unsafe {
                    let p = (x.data as *const u8).add(off) as *const f32;
                    std::slice::from_raw_parts(p, (rows - 1) * stride + k)
                };
                entry.add(xs, rows, stride);
            }
        }
        // Every group asked for has had this chunk's inputs: the rest of
        // the graph (later layers, the output) is not computed.
        return c.only.is_empty() || c.reached.len() < c.only.len();
    }
    let max_rows = c.max_rows;
    let entry = c.x.entry(key).or_insert_with(|| (Vec::new(), k));
    if entry.1 != k {
        c.error = Some(format!("{name}: inputs of {k} and {} values", entry.1));
        return true;
    }
    for i3 in 0..x.ne[3] {
        for i2 in 0..x.ne[2] {
            for i1 in 0..x.ne[1] {
                if entry.0.len() / k >= max_rows {
                    return true;
                }
                let off = i1 as usize * x.nb[1] + i2 as usize * x.nb[2] + i3 as usize * x.nb[3];
                // SAFETY: a row of k f32 inside the activation tensor by its strides.
                let row = unsafe {
                    std::slice::from_raw_parts((x.data as *const u8).add(off) as *const f32, k)
                };
                entry.0.extend_from_slice(row);
            }
        }
    }
    true
}

/// Runs `model` over `chunks` chunks of `ctx` tokens of `text` and keeps up
/// to `max_rows` input rows per weight group.
pub fn collect(
    model: &Path,
    text: &Path,
    ctx: usize,
    chunks: usize,
    max_rows: usize,
    threads: usize,
) -> Result<Inputs, String> {
    let c = Inputs {
        max_rows,
        ..Default::default()
    };
    run(model, text, ctx, chunks, threads, c)
}

/// Runs `model` over `chunks` chunks of `ctx` tokens of `text` and sums
/// the `XᵀX` of the weight groups `only` (by [`input_key`]; every group
/// when empty) over their input rows: memory is one [`Gram`] per group,
/// whatever the number of tokens. With `only` given, each chunk's forward
/// pass stops once those groups have had their inputs.
pub fn collect_hessians(
    model: &Path,
    text: &Path,
    ctx: usize,
    chunks: usize,
    threads: usize,
    only: BTreeSet<String>,
) -> Result<Inputs, String> {
    let c = Inputs {
        max_rows: ctx * chunks,
        hessians: true,
        only,
        ..Default::default()
    };
    run(model, text, ctx, chunks, threads, c)
}

/// The calibration run of [`collect`] and [`collect_hessians`], filling `c`.
fn run(
    model: &Path,
    text: &Path,
    ctx: usize,
    chunks: usize,
    threads: usize,
    c: Inputs,
) -> Result<Inputs, String> {
    let mut c = Box::new(c);
    let ud = &mut *c as *mut Inputs as *mut c_void;
    llama::eval_chunks(
        model,
        text,
        ctx,
        Some(chunks),
        threads,
        Some(callback),
        ud,
        "reconstruct: calibration",
        &mut || {
            // SAFETY: between chunks no callback runs; ud points into the live box.
            let c = unsafe { &mut *(ud as *mut Inputs) };
            c.reached.clear();
            match &c.error {
                Some(e) => Err(e.clone()),
                None => Ok(()),
            }
        },
    )?;
    Ok(*c)
}

fn par() -> Par {
    Par::rayon(rayon::current_num_threads())
}

/// `c (m x n) = beta * c + alpha * a (m x k) * b (k x n)`, all row-major with
/// the given row strides (`b` transposed when `bt`: then it is n x k);
/// `beta` is 0 or 1. Through faer's blocked, threaded kernels.
#[allow(clippy::too_many_arguments)]
fn gemm(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    bt: bool,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(beta == 0.0 || beta == 1.0);
    // faer is given column-major destinations only: C (row-major) is Cᵀ
    // column-major, so it computes Cᵀ = Bᵀ Aᵀ. (faer 0.24 wrote out of
    // bounds into some row-major destinations; valgrind found it.)
    let c_len = (m - 1) * ldc + n;
    let mut ct = MatMut::from_column_major_slice_with_stride_mut(&mut c[..c_len], n, m, ldc);
    let accum = if beta == 0.0 {
        Accum::Replace
    } else {
        Accum::Add
    };
    if k == 0 {
        if beta == 0.0 {
            ct.fill(0.0);
        }
        return;
    }
    let at = MatRef::from_column_major_slice_with_stride(&a[..(m - 1) * lda + k], k, m, lda);
    let bt_ = if bt {
        MatRef::from_column_major_slice_with_stride(&b[..(n - 1) * ldb + k], k, n, ldb).transpose()
    } else {
        MatRef::from_column_major_slice_with_stride(&b[..(k - 1) * ldb + n], n, k, ldb)
    };
    matmul(ct.as_mut(), accum, bt_, at, alpha, par());
}

/// U (upper, row-major) with `UᵀU = H⁻¹`, through the reversed Cholesky:
/// with J the reversal, `JHJ = MMᵀ` gives `U = J M⁻¹ J`. In f64 (faer's
/// blocked Cholesky and triangular inverse): the Hessians of real layers
/// span many orders of magnitude (docs/QUALITY.md measures f32 against f64).
pub fn inverse_cholesky_upper(h: &[f32], n: usize) -> Result<Vec<f32>, String> {
    let r = Mat::<f64>::from_fn(n, n, |i, j| h[(n - 1 - i) * n + (n - 1 - j)] as f64);
    let llt = r
        .llt(Side::Lower)
        .map_err(|_| "matrix not positive definite".to_string())?;
    drop(r);
    let mut minv = Mat::<f64>::zeros(n, n);
    faer::linalg::triangular_inverse::invert_lower_triangular(minv.as_mut(), llt.L(), par());
    Ok((0..n * n)
        .map(|idx| minv[(n - 1 - idx / n, n - 1 - idx % n)] as f32)
        .collect())
}

/// `XᵀX` of `rows` rows of `k` values, damped by 1 % of its mean diagonal;
/// inputs that are always zero get 1 on the diagonal (their weights do not
/// matter, and this keeps H positive definite).
pub fn hessian(x: &[f32], rows: usize, k: usize) -> Vec<f32> {
    let mut g = Gram::new(k);
    g.add(x, rows, k);
    g.hessian()
}

/// Damps `XᵀX` (k x k) in place as [`hessian`] does.
pub fn damp(h: &mut [f32], k: usize) {
    let mean = (0..k).map(|i| h[i * k + i] as f64).sum::<f64>() / k.max(1) as f64;
    let damp = (0.01 * mean).max(1e-8) as f32;
    for i in 0..k {
        if h[i * k + i] == 0.0 {
            h[i * k + i] = 1.0;
        }
        h[i * k + i] += damp;
    }
}

/// `sum over rows of d H dᵀ` for the rows of `d` (m x k): the squared output
/// error on the calibration inputs that H sums up (with its damping).
pub fn output_error(d: &[f32], m: usize, k: usize, h: &[f32]) -> f64 {
    let mut e = vec![0f32; m * k];
    gemm(m, k, k, 1.0, d, k, h, k, false, 0.0, &mut e, k);
    e.iter().zip(d).map(|(a, b)| *a as f64 * *b as f64).sum()
}

/// Reconstructs `w` (`m` rows of `k`) under `keep` (same shape, true = kept):
/// pruned weights become exactly zero, kept ones absorb their removal error
/// (SparseGPT's column-wise OBS updates with `u`, see the module docs).
pub fn reconstruct(w: &mut [f32], keep: &[bool], m: usize, k: usize, u: &[f32]) {
    let mut rows: Vec<&[bool]> = keep.chunks(k).collect();
    solve(w, m, k, u, 128, &mut rows, |keep, row, c| {
        if keep[c] {
            row[c]
        } else {
            0.0
        }
    });
}

/// Error-compensated quantization (GPTQ: Frantar et al. 2023, "GPTQ:
/// Accurate Post-Training Quantization for Generative Pre-trained
/// Transformers") into the blocks of format `B`, with their scales fixed
/// beforehand: `blocks` (m rows of k / LEN) come quantized, and their codes
/// are chosen again. The columns of `w` (m rows of k) are visited in the
/// order `perm` (GPTQ's "act order": the inputs with the largest Hessian
/// diagonal first); each column's code is the nearest at its block's scales
/// ([`WeightBlock::round_at`]), and its rounding error is compensated in
/// the columns not yet visited through `u`, the factor of the Hessian
/// permuted by `perm` (the OBS update of [`reconstruct`]). `w` ends as the
/// blocks' values.
///
/// Formats whose codes cover [`WeightBlock::GROUP`] values (the i-quants'
/// grid points) choose a group's codes at its first column, from the
/// group's values as compensated so far, each squared error weighted by
/// `1 / U_jj²` (what leaving it costs the layer's output, column by
/// column); `perm` must then keep each group's columns together and in
/// order. The group's columns are then visited one by one with their codes
/// fixed: that is the OBS update for fixing the columns together (GPTVQ,
/// van Baalen et al. 2024), since the triangular factor's rows applied in
/// turn give `E U_SS⁻¹ U_SR`, the error of the group through the inverse
/// of its own block.
pub fn quantize_compensated<B: WeightBlock + bytemuck::Pod + Send>(
    w: &mut [f32],
    m: usize,
    k: usize,
    u: &[f32],
    perm: &[usize],
    blocks: &mut [B],
) -> Result<(), String> {
    let len = B::LEN;
    let nb = k / len;
    if k % len != 0
        || w.len() != m * k
        || u.len() != k * k
        || perm.len() != k
        || blocks.len() != m * nb
    {
        return Err(format!("{}: shapes do not match", B::NAME));
    }
    let mut pw: Vec<f32> = w
        .chunks(k)
        .flat_map(|row| perm.iter().map(move |&j| row[j]))
        .collect();
    let g = B::GROUP;
    let whole = (0..k)
        .step_by(g)
        .all(|c| perm[c] % g == 0 && (1..g).all(|t| perm[c + t] == perm[c] + t));
    if g == 0 || g > 8 || len % g != 0 || !whole {
        return Err(format!(
            "{}: the column order does not keep groups of {g} together",
            B::NAME
        ));
    }
    // Per row: its blocks, and the values of the group being visited.
    let mut rows: Vec<(&mut [B], [f32; 8])> =
        blocks.chunks_mut(nb).map(|b| (b, [0f32; 8])).collect();
    solve(
        &mut pw,
        m,
        k,
        u,
        128,
        &mut rows,
        |(blocks, values), row, c| {
            let j = perm[c];
            if j % g == 0 {
                let mut weights = [0f32; 8];
                for (t, wt) in weights[..g].iter_mut().enumerate() {
                    *wt = 1.0 / u[(c + t) * k + c + t].powi(2);
                }
                if blocks[j / len]
                    .round_group(j % len, &row[c..c + g], &weights[..g], &mut values[..g])
                    .is_none()
                {
                    values[..g].fill(f32::NAN);
                }
            }
            values[j % g]
        },
    );
    for (row, p) in w.chunks_mut(k).zip(pw.chunks(k)) {
        for (c, &j) in perm.iter().enumerate() {
            row[j] = p[c];
        }
    }
    Ok(())
}

/// The column-wise solver of [`reconstruct`] and [`quantize_compensated`]:
/// column `c` of each row takes the value `step(state of the row, row, c)`,
/// and the change is compensated in the row's later columns (at once within
/// a batch of `batch` columns, by one matrix product for the columns after it).
fn solve<S: Send>(
    w: &mut [f32],
    m: usize,
    k: usize,
    u: &[f32],
    batch: usize,
    states: &mut [S],
    step: impl Fn(&mut S, &mut [f32], usize) -> f32 + Sync,
) {
    assert!(w.len() == m * k && u.len() == k * k && states.len() == m);
    for i1 in (0..k).step_by(batch) {
        let i2 = (i1 + batch).min(k);
        let bw = i2 - i1;
        let mut err = vec![0f32; m * bw];
        w.par_chunks_mut(k)
            .zip(states.par_iter_mut())
            .zip(err.par_chunks_mut(bw))
            .for_each(|((row, state), e)| {
                for i in 0..bw {
                    let c = i1 + i;
                    let q = step(state, row, c);
                    let d = (row[c] - q) / u[c * k + c];
                    row[c] = q;
                    e[i] = d;
                    if d != 0.0 {
                        for j in c + 1..i2 {
                            row[j] -= d * u[c * k + j];
                        }
                    }
                }
            });
        if i2 < k {
            // W[:, i2:] -= Err · U[i1:i2, i2:]
            let mut upd = vec![0f32; m * (k - i2)];
            gemm(
                m,
                bw,
                k - i2,
                1.0,
                &err,
                bw,
                &u[i1 * k + i2..],
                k,
                false,
                0.0,
                &mut upd,
                k - i2,
            );
            w.par_chunks_mut(k)
                .zip(upd.par_chunks(k - i2))
                .for_each(|(row, d)| {
                    for (a, b) in row[i2..].iter_mut().zip(d) {
                        *a -= b;
                    }
                });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmkernel_kernels::testdata::Rng;

    // Hand-written references for the tests: a right-looking blocked Cholesky
    // and a blocked lower-triangular inverse (f64 inside the diagonal blocks).
    const NB: usize = 128;

    /// In-place lower Cholesky factor of the symmetric positive definite `a`
    /// (n x n, row-major; the upper triangle is zeroed). Right-looking, blocked.
    fn cholesky(a: &mut [f32], n: usize) -> Result<(), String> {
        for j0 in (0..n).step_by(NB) {
            let j1 = (j0 + NB).min(n);
            // The diagonal block, unblocked (f64 accumulation).
            for j in j0..j1 {
                let mut d = a[j * n + j] as f64;
                for p in j0..j {
                    d -= (a[j * n + p] as f64).powi(2);
                }
                if !(d > 0.0) {
                    return Err(format!("matrix not positive definite at column {j}"));
                }
                let d = d.sqrt();
                a[j * n + j] = d as f32;
                for i in j + 1..j1 {
                    let mut s = a[i * n + j] as f64;
                    for p in j0..j {
                        s -= a[i * n + p] as f64 * a[j * n + p] as f64;
                    }
                    a[i * n + j] = (s / d) as f32;
                }
            }
            // The panel below it: P := P D^-T, row by row (independent rows).
            let (top, below) = a.split_at_mut(j1 * n);
            let diag = &top[j0 * n..];
            below.par_chunks_mut(n).for_each(|row| {
                for j in j0..j1 {
                    let mut s = row[j] as f64;
                    for p in j0..j {
                        s -= row[p] as f64 * diag[(j - j0) * n + p] as f64;
                    }
                    row[j] = (s / diag[(j - j0) * n + j] as f64) as f32;
                }
            });
            // The trailing matrix: A22 -= P Pᵀ.
            let rest = n - j1;
            if rest > 0 {
                let p: Vec<f32> = below
                    .chunks(n)
                    .flat_map(|r| r[j0..j1].iter().copied())
                    .collect();
                let jb = j1 - j0;
                gemm(
                    rest,
                    jb,
                    rest,
                    -1.0,
                    &p,
                    jb,
                    &p,
                    jb,
                    true,
                    1.0,
                    &mut below[j1..],
                    n,
                );
            }
        }
        for i in 0..n {
            a[i * n + i + 1..(i + 1) * n].fill(0.0);
        }
        Ok(())
    }

    /// The inverse of the lower-triangular `l` (n x n, row-major), lower-triangular.
    fn invert_lower(l: &[f32], n: usize) -> Vec<f32> {
        let mut x = vec![0f32; n * n];
        for i0 in (0..n).step_by(NB) {
            let i1 = (i0 + NB).min(n);
            let ib = i1 - i0;
            // The diagonal block's inverse, unblocked: row i of D⁻¹ by forward substitution.
            let mut dinv = vec![0f64; ib * ib];
            for i in 0..ib {
                for j in 0..=i {
                    let mut s = if i == j { 1.0 } else { 0.0 };
                    for p in j..i {
                        s -= l[(i0 + i) * n + i0 + p] as f64 * dinv[p * ib + j];
                    }
                    dinv[i * ib + j] = s / l[(i0 + i) * n + i0 + i] as f64;
                }
            }
            for i in 0..ib {
                for j in 0..=i {
                    x[(i0 + i) * n + i0 + j] = dinv[i * ib + j] as f32;
                }
            }
            if i0 == 0 {
                continue;
            }
            // Off-diagonal: X[i, :i0] = -D⁻¹ (L[i, :i0] X[:i0, :i0]).
            let mut t = vec![0f32; ib * i0];
            gemm(
                ib,
                i0,
                i0,
                1.0,
                &l[i0 * n..],
                n,
                &x,
                n,
                false,
                0.0,
                &mut t,
                i0,
            );
            let dinv32: Vec<f32> = dinv.iter().map(|&v| v as f32).collect();
            let mut o = vec![0f32; ib * i0];
            gemm(
                ib, ib, i0, -1.0, &dinv32, ib, &t, i0, false, 0.0, &mut o, i0,
            );
            for i in 0..ib {
                x[(i0 + i) * n..(i0 + i) * n + i0].copy_from_slice(&o[i * i0..(i + 1) * i0]);
            }
        }
        x
    }

    fn matmul_t(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        // a (m x k) times bᵀ with b (n x k), in f64.
        (0..m * n)
            .map(|i| {
                let (r, c) = (i / n, i % n);
                (0..k)
                    .map(|p| a[r * k + p] as f64 * b[c * k + p] as f64)
                    .sum::<f64>() as f32
            })
            .collect()
    }

    /// A random symmetric positive definite n x n matrix: BᵀB/n + I.
    fn spd(r: &mut Rng, n: usize) -> Vec<f32> {
        let b = r.activations(n * n);
        let mut bt = vec![0f32; n * n];
        for i in 0..n {
            for j in 0..n {
                bt[j * n + i] = b[i * n + j];
            }
        }
        let mut h = matmul_t(&bt, &bt, n, n, n);
        for (i, v) in h.iter_mut().enumerate() {
            *v /= n as f32;
            if i / n == i % n {
                *v += 1.0;
            }
        }
        h
    }

    fn max_dev_from_identity(a: &[f32], n: usize) -> f32 {
        a.iter()
            .enumerate()
            .map(|(i, v)| (v - if i / n == i % n { 1.0 } else { 0.0 }).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn cholesky_inverse_and_the_reversed_factor() {
        let mut r = Rng::new(3);
        for n in [1, 5, 128, 300] {
            let h = spd(&mut r, n);
            let mut l = h.clone();
            cholesky(&mut l, n).unwrap();
            assert!((0..n).all(|i| (i + 1..n).all(|j| l[i * n + j] == 0.0)));
            let llt = matmul_t(&l, &l, n, n, n);
            let err = llt
                .iter()
                .zip(&h)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(err < 1e-4, "n {n}: |LLᵀ - H| = {err}");
            // L · L⁻¹ = I.
            let linv = invert_lower(&l, n);
            let mut linv_t = vec![0f32; n * n];
            for i in 0..n {
                for j in 0..n {
                    linv_t[j * n + i] = linv[i * n + j];
                }
            }
            let dev = max_dev_from_identity(&matmul_t(&l, &linv_t, n, n, n), n);
            assert!(dev < 1e-4, "n {n}: |L L⁻¹ - I| = {dev}");
            // UᵀU = H⁻¹, so UᵀU H = I; U upper.
            let u = inverse_cholesky_upper(&h, n).unwrap();
            assert!((0..n).all(|i| (0..i).all(|j| u[i * n + j] == 0.0)));
            let mut ut = vec![0f32; n * n];
            for i in 0..n {
                for j in 0..n {
                    ut[j * n + i] = u[i * n + j];
                }
            }
            // (UᵀU)_{ij} = sum_p U_pi U_pj: rows of Uᵀ against rows of Uᵀ.
            let hinv = matmul_t(&ut, &ut, n, n, n);
            let dev = max_dev_from_identity(&matmul_t(&hinv, &h, n, n, n), n);
            assert!(dev < 1e-3, "n {n}: |UᵀU H - I| = {dev}");
        }
        let mut bad = vec![1.0, 2.0, 2.0, 1.0];
        assert!(cholesky(&mut bad, 2).is_err());
    }

    /// The packed lower triangle, summed in two parts with a row stride
    /// wider than k, is `XᵀX` (damped) for widths below, at and across the
    /// block rows, and holds about half of k² floats.
    #[test]
    fn packed_gram_is_the_whole_product() {
        let mut r = Rng::new(9);
        for k in [1, 7, 512, 513, 1100] {
            let (rows, stride) = (37, k + 3);
            let x = r.activations(rows * stride);
            let mut g = Gram::new(k);
            g.add(&x, 20, stride);
            g.add(&x[20 * stride..], rows - 20, stride);
            assert_eq!(g.rows, rows);
            let mut want = vec![0f32; k * k];
            for i in 0..k {
                for j in 0..k {
                    want[i * k + j] = (0..rows)
                        .map(|t| x[t * stride + i] as f64 * x[t * stride + j] as f64)
                        .sum::<f64>() as f32;
                }
            }
            damp(&mut want, k);
            let got = g.hessian();
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "k {k} at {i}: {a} != {b}"
                );
            }
            assert!(Gram::len(k) <= k * k / 2 + k * Gram::BLOCK / 2 + k);
        }
    }

    /// Reconstruction keeps the mask, and its output error on the calibration
    /// inputs is far below plain pruning's and close to the per-row optimum
    /// (the exact least squares over each row's kept weights).
    #[test]
    fn reconstruction_approaches_the_least_squares_optimum() {
        let mut r = Rng::new(4);
        let (n, k, m) = (600, 160, 12);
        // Correlated inputs: a shared component plus noise, as activations are.
        let base = r.activations(n);
        let x: Vec<f32> = (0..n * k)
            .map(|i| base[i / k] * (1.0 + (i % k) as f32 / k as f32) + 0.3 * r.uniform(-1.0, 1.0))
            .collect();
        let w = r.activations(m * k);
        let keep: Vec<bool> = w
            .chunks(k)
            .flat_map(|row| crate::prune::mask_row_2_4(row, |_, v| v.abs()))
            .collect();
        let dense_out = matmul_t(&x, &w, n, k, m);
        let err = |wp: &[f32]| -> f64 {
            matmul_t(&x, wp, n, k, m)
                .iter()
                .zip(&dense_out)
                .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
                .sum()
        };
        let pruned: Vec<f32> = w
            .iter()
            .zip(&keep)
            .map(|(v, k)| if *k { *v } else { 0.0 })
            .collect();
        let h = hessian(&x, n, k);
        let u = inverse_cholesky_upper(&h, k).unwrap();
        let mut rec = w.clone();
        reconstruct(&mut rec, &keep, m, k, &u);
        for (v, kp) in rec.iter().zip(&keep) {
            assert!(*kp || *v == 0.0, "a pruned weight survived");
        }
        // The optimum per row: (X_S ᵀX_S) w_S = X_Sᵀ X w, with the same damping.
        let mut best = vec![0f32; m * k];
        for row in 0..m {
            let s: Vec<usize> = (0..k).filter(|&j| keep[row * k + j]).collect();
            let ns = s.len();
            let mut a = vec![0f32; ns * ns];
            let mut b = vec![0f64; ns];
            for (i, &si) in s.iter().enumerate() {
                for (j, &sj) in s.iter().enumerate() {
                    a[i * ns + j] = h[si * k + sj];
                }
                b[i] = (0..k)
                    .map(|p| h[si * k + p] as f64 * w[row * k + p] as f64)
                    .sum();
            }
            cholesky(&mut a, ns).unwrap();
            // Solve L y = b, Lᵀ z = y.
            let mut y = vec![0f64; ns];
            for i in 0..ns {
                y[i] = (b[i] - (0..i).map(|p| a[i * ns + p] as f64 * y[p]).sum::<f64>())
                    / a[i * ns + i] as f64;
            }
            for i in (0..ns).rev() {
                let z = (y[i]
                    - (i + 1..ns)
                        .map(|p| a[p * ns + i] as f64 * best[row * k + s[p]] as f64)
                        .sum::<f64>())
                    / a[i * ns + i] as f64;
                best[row * k + s[i]] = z as f32;
            }
        }
        // The greedy OBS it implements, written plainly: for each pruned column c in
        // order, with R = {c, c+1, ..}, w_R -= w_c / [H_RR⁻¹]_cc * H_RR⁻¹[:, c].
        let mut obs = w.clone();
        for c in 0..k {
            let rn = k - c;
            let mut hr: Vec<f32> = (0..rn * rn)
                .map(|i| h[(c + i / rn) * k + c + i % rn])
                .collect();
            cholesky(&mut hr, rn).unwrap();
            let li = invert_lower(&hr, rn);
            // (H_RR⁻¹)[:, 0] = L⁻ᵀ L⁻¹ e_0 = sum_p L⁻¹[p][i] L⁻¹[p][0].
            let col: Vec<f64> = (0..rn)
                .map(|i| {
                    (0..rn)
                        .map(|p| li[p * rn + i] as f64 * li[p * rn] as f64)
                        .sum()
                })
                .collect();
            for row in 0..m {
                if keep[row * k + c] {
                    continue;
                }
                let f = obs[row * k + c] as f64 / col[0];
                for i in 0..rn {
                    obs[row * k + c + i] -= (f * col[i]) as f32;
                }
                obs[row * k + c] = 0.0;
            }
        }
        let dev = rec
            .iter()
            .zip(&obs)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        let scale = w.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let (e_pruned, e_rec, e_obs, e_best) = (err(&pruned), err(&rec), err(&obs), err(&best));
        eprintln!(
            "output error: pruned {e_pruned:.4e}, reconstructed {e_rec:.4e} (plain OBS {e_obs:.4e}, max weight difference {dev:.2e}), optimum {e_best:.4e}"
        );
        assert!(
            dev < 1e-3 * scale,
            "the blocked solver differs from plain OBS by {dev}"
        );
        assert!(e_rec < 0.2 * e_pruned, "reconstruction did not help enough");
        assert!(
            e_best <= e_rec * 1.0001,
            "better than the optimum? (the check is wrong)"
        );
    }
}
