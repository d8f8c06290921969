//! A quantized weight matrix times f32 activations, threaded over output rows
//! with rayon. Weights stay in the GGUF layout (row-major blocks, one row per
//! output feature); activations are quantized once, as ggml does.

use crate::error::Error;
use crate::formats::lut::{self, LutLayout};
use crate::formats::sparse_x4::{X4Block, GROUP};
use crate::formats::{BlockQ8_0, QuantBlock};
use crate::panel::{pack_columns_by, ColBlock, Shape, Tile, Unpacked, COLS, PANEL_ROWS, ROWS};
use crate::table::{check_cpu, Config, Kernels, LutKernels, PanelKernel, QuantKernel, X4Kernels};
use crate::Result;
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// `rows` rows of `k` values of format `B`, row after row (ggml's layout of a weight tensor).
#[derive(Clone, Copy)]
pub struct QMatrix<'a, B> {
    blocks: &'a [B],
    rows: usize,
    k: usize,
}

impl<'a, B: QuantBlock> QMatrix<'a, B> {
    pub fn new(blocks: &'a [B], rows: usize, k: usize) -> Result<Self> {
        let per_row = B::FORMAT.blocks_in(k)?;
        if blocks.len() != rows * per_row {
            return Err(Error::LengthMismatch {
                what: "weight blocks (rows * k / block)",
                expected: rows * per_row,
                got: blocks.len(),
            });
        }
        Ok(QMatrix { blocks, rows, k })
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn k(&self) -> usize {
        self.k
    }
    /// Rows `m .. m + n`, row after row.
    fn rows_at(&self, m: usize, n: usize) -> &'a [B] {
        let per_row = self.k / B::FORMAT.block_len();
        &self.blocks[m * per_row..(m + n) * per_row]
    }
}

/// Weight rows per cache tile in a GEMM (32 rows of K = 4096 Q4_K: 74 KB).
const TILE_ROWS: usize = 32;

/// A rayon pool of exactly `threads` threads, made once per count and kept.
pub fn pool(threads: usize) -> Arc<rayon::ThreadPool> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>> = OnceLock::new();
    let threads = threads.max(1);
    let mut pools = POOLS.get_or_init(Default::default).lock().unwrap();
    pools
        .entry(threads)
        .or_insert_with(|| {
            Arc::new(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(|i| format!("llmkernel-{i}"))
                    .build()
                    .expect("rayon pool"),
            )
        })
        .clone()
}

/// Who runs a matmul's parallel tasks: `run(tasks, f)` calls `f(0)` ..
/// `f(tasks - 1)`, each exactly once, spread over up to `threads()` threads,
/// and returns when all are done. [`Rayon`] is the default; the ggml backend
/// hands in the host's OpenMP team, so its matmuls run on the threads
/// llama.cpp's CPU backend already keeps hot instead of waking more.
pub trait Parallel: Sync {
    fn threads(&self) -> usize;
    fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync));
}

/// A rayon pool of this many threads ([`pool`]); one thread runs inline on the caller.
#[derive(Debug, Clone, Copy)]
pub struct Rayon(pub usize);

impl Parallel for Rayon {
    fn threads(&self) -> usize {
        self.0.max(1)
    }
    fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if self.0 <= 1 || tasks <= 1 {
            (0..tasks).for_each(f);
        } else {
            pool(self.0).install(|| (0..tasks).into_par_iter().for_each(f));
        }
    }
}

/// Splits `data` into chunks of `len` and runs `f(index, chunk)` for each on `par`.
fn for_each_chunk<T: Send>(
    par: &dyn Parallel,
    data: &mut [T],
    len: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    let chunks: Vec<Mutex<&mut [T]>> = data.chunks_mut(len.max(1)).map(Mutex::new).collect();
    par.run(chunks.len(), &|i| f(i, &mut chunks[i].lock().unwrap()));
}

/// Quantizes `n` rows of `k` activations for a dot product with `B` weights,
/// with the best quantizer this CPU runs under the process's ISA ceiling.
pub fn quantize_activations<B: Kernels>(
    x: &[f32],
    n: usize,
    k: usize,
    threads: usize,
) -> Result<Vec<B::Act>> {
    quantize_activations_on(Config::<B>::best()?.quant(), x, n, k, &Rayon(threads))
}

/// [`quantize_activations`] with quantizer `quant`, on `par`.
pub fn quantize_activations_on<A: crate::table::ActKernels>(
    quant: &QuantKernel<A>,
    x: &[f32],
    n: usize,
    k: usize,
    par: &dyn Parallel,
) -> Result<Vec<A>> {
    let per_row = A::FORMAT.blocks_in(k)?;
    if x.len() != n * k {
        return Err(Error::LengthMismatch {
            what: "activations (n * k)",
            expected: n * k,
            got: x.len(),
        });
    }
    let mut q = vec![<A as bytemuck::Zeroable>::zeroed(); n * per_row];
    if per_row == 0 {
        return Ok(q);
    }
    if n < 8 {
        // A few rows (decode): cheaper here than waking the pool.
        for (xr, qr) in x.chunks(k).zip(q.chunks_mut(per_row)) {
            quant.run(xr, qr)?;
        }
    } else {
        let rows = n.div_ceil(par.threads());
        let error = Mutex::new(None);
        for_each_chunk(par, &mut q, rows * per_row, |i, qc| {
            let xs = &x[i * rows * k..][..qc.len() / per_row * k];
            for (xr, qr) in xs.chunks(k).zip(qc.chunks_mut(per_row)) {
                if let Err(e) = quant.run(xr, qr) {
                    *error.lock().unwrap() = Some(e);
                }
            }
        });
        if let Some(e) = error.into_inner().unwrap() {
            return Err(e);
        }
    }
    Ok(q)
}

/// `y = x · wᵀ`: `x` is `n` rows of `k` f32, `y` is `n` rows of `w.rows()` f32
/// (ggml's MUL_MAT with `w` as src0, `x` as src1, `y` as dst).
pub fn matmul<B: Kernels>(
    w: &QMatrix<B>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    config: &Config<B>,
    threads: usize,
) -> Result<()> {
    matmul_on(w, x, n, y, config, &Rayon(threads))
}

/// One row of activations quantized for `B` weights with the best quantizer
/// this CPU runs under the process's ISA ceiling.
pub fn quantize_row<B: Kernels>(x: &[f32], q: &mut [B::Act]) -> Result<()> {
    Config::<B>::best()?.quant().run(x, q)
}

/// [`matmul`] with its tasks run by `par`.
pub fn matmul_on<B: Kernels>(
    w: &QMatrix<B>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    config: &Config<B>,
    par: &dyn Parallel,
) -> Result<()> {
    let m = w.rows();
    if y.len() != n * m {
        return Err(Error::LengthMismatch {
            what: "output (n * rows)",
            expected: n * m,
            got: y.len(),
        });
    }
    let acts = quantize_activations_on(config.quant(), x, n, w.k(), par)?;
    matmul_quantized_on(w, &acts, n, y, config, par)
}

/// [`matmul`] with activations already quantized (`n` rows of `k / block` blocks).
pub fn matmul_quantized<B: Kernels>(
    w: &QMatrix<B>,
    acts: &[B::Act],
    n: usize,
    y: &mut [f32],
    config: &Config<B>,
    threads: usize,
) -> Result<()> {
    matmul_quantized_on(w, acts, n, y, config, &Rayon(threads))
}

/// [`matmul_quantized`] with its tasks run by `par`.
pub fn matmul_quantized_on<B: Kernels>(
    w: &QMatrix<B>,
    acts: &[B::Act],
    n: usize,
    y: &mut [f32],
    config: &Config<B>,
    par: &dyn Parallel,
) -> Result<()> {
    let kernel = config.row();
    let (m, per_row) = (w.rows(), w.k() / B::FORMAT.block_len());
    if acts.len() != n * per_row {
        return Err(Error::LengthMismatch {
            what: "activation blocks",
            expected: n * per_row,
            got: acts.len(),
        });
    }
    if y.len() != n * m {
        return Err(Error::LengthMismatch {
            what: "output (n * rows)",
            expected: n * m,
            got: y.len(),
        });
    }
    if n == 0 || m == 0 {
        return Ok(());
    }
    check_cpu(kernel.name(), kernel.isa())?;
    if let Some(panel) = config.panel_for(n).filter(|_| per_row > 0) {
        let isa = config.fill_isa();
        let fill = |u: &mut Unpacked, r0: usize, nr: usize| u.fill(w.rows_at(r0, nr), nr, isa);
        matmul_panel::<B>((m, w.k()), &fill, acts, n, y, panel, par);
        return Ok(());
    }
    let cols: Vec<&[B::Act]> = if per_row == 0 {
        vec![&[]; n]
    } else {
        acts.chunks(per_row).collect()
    };
    // Each task owns a run of weight rows and writes their outputs for all n
    // columns into its own slice of `t` (rows × n), transposed into y at the end.
    // One contiguous run of rows per thread (as ggml splits a matmul): each thread
    // streams its own part of the weights; more, smaller tasks only add scheduling.
    let rows_per_task = m.div_ceil(par.threads()).max(1);
    // Each task owns a run of weight rows (one contiguous run per thread, as
    // ggml splits a matmul: each thread streams its own part of the weights)
    // and writes their outputs for every column straight into y, where
    // column c's output for row r is y[c * m + r]: the tasks' rows are
    // disjoint, so are the elements they write.
    struct Out(*mut f32);
    // SAFETY: tasks write disjoint elements of y, which outlives par.run.
    unsafe impl Sync for Out {}
    let out = Out(y.as_mut_ptr());
    let tasks = m.div_ceil(rows_per_task);
    // A GEMV streams one row at a time: several rows per call read as many
    // interleaved streams from DRAM, which is slower there though faster in
    // cache (docs/BENCHMARKS.md).
    let rows_per_call = if n == 1 { 1 } else { kernel.rows() };
    par.run(tasks, &|task| {
        let out = &out;
        let rows = task * rows_per_task..((task + 1) * rows_per_task).min(m);
        let mut o = vec![0f32; kernel.rows() * kernel.cols()];
        // Tiles of TILE_ROWS weight rows (kept in L2) against every column
        // group (kept in L1 while the tile's rows pass), so a GEMM reads each
        // activation column once per tile rather than once per row.
        for tile in rows.clone().step_by(TILE_ROWS) {
            let tile_rows = tile..(tile + TILE_ROWS).min(rows.end);
            for (g, c) in cols.chunks(kernel.cols()).enumerate() {
                for r in tile_rows.clone().step_by(rows_per_call) {
                    let nr = rows_per_call.min(tile_rows.end - r);
                    let o = &mut o[..nr * c.len()];
                    // SAFETY: ISA support checked above; nr <= kernel.rows(), c.len() <=
                    // kernel.cols(), o.len() == nr * c.len(), and every column has a row's
                    // block count (acts checked above).
                    unsafe { (kernel.f)(w.rows_at(r, nr), nr, c, o) };
                    for (i, o) in o.chunks(c.len()).enumerate() {
                        for (j, &v) in o.iter().enumerate() {
                            // SAFETY: column g * cols + j < n and r + i < m, so inside y
                            // (y.len() == n * m, checked above); the row is this task's only.
                            unsafe { *out.0.add((g * kernel.cols() + j) * m + r + i) = v };
                        }
                    }
                }
            }
        }
    });
    Ok(())
}

/// Whether the panel GEMM is on: `LLMKERNEL_PANEL=0` turns it off (to compare
/// it with the row kernels). Read once per process.
pub fn panels_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("LLMKERNEL_PANEL").map_or(true, |v| v.trim() != "0"))
}

/// Where decode goes through the lookup-table GEMV ([`Config::lut_for`]):
/// `LLMKERNEL_LUT=0` never, `LLMKERNEL_LUT=1` wherever a layout has a
/// lookup-table kernel (to measure the ones the table does not pick),
/// otherwise where the dispatch table says. Read once per process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LutMode {
    Never,
    Always,
    Table,
}

pub fn lut_mode() -> LutMode {
    static MODE: OnceLock<LutMode> = OnceLock::new();
    *MODE.get_or_init(
        || match std::env::var("LLMKERNEL_LUT").as_deref().map(str::trim) {
            Ok("0") => LutMode::Never,
            Ok("1") => LutMode::Always,
            _ => LutMode::Table,
        },
    )
}

/// The GEMM through [`crate::panel`]: activations interleaved into column
/// blocks once (in parallel), then each task unpacks its weight rows
/// [`PANEL_ROWS`] at a time and runs them against every column block.
/// Lengths and the ISA are checked by the caller.
fn matmul_panel<B: Kernels>(
    (m, k): (usize, usize),
    fill: &(dyn Fn(&mut Unpacked, usize, usize) + Sync),
    acts: &[B::Act],
    n: usize,
    y: &mut [f32],
    panel: &PanelKernel,
    par: &dyn Parallel,
) {
    let shape = Shape::of::<B>();
    let nblocks = n.div_ceil(COLS);
    let blocks: Vec<Mutex<Option<ColBlock>>> = (0..nblocks).map(|_| Mutex::new(None)).collect();
    par.run(nblocks, &|i| {
        *blocks[i].lock().unwrap() =
            Some(pack_columns_by(acts, n, k, i * COLS, shape, panel.layout()));
    });
    let blocks: Vec<ColBlock> = blocks
        .into_iter()
        .map(|b| b.into_inner().unwrap().expect("every block packed"))
        .collect();
    let rows_per_task = m.div_ceil(par.threads()).next_multiple_of(ROWS).max(ROWS);
    let tasks = m.div_ceil(rows_per_task);
    struct Out(*mut f32);
    // SAFETY: tasks write disjoint rows of y, which outlives par.run.
    unsafe impl Sync for Out {}
    let out = Out(y.as_mut_ptr());
    par.run(tasks, &|task| {
        let out = &out;
        let rows = task * rows_per_task..((task + 1) * rows_per_task).min(m);
        let mut u = Unpacked::new(PANEL_ROWS, k, shape);
        // The outputs of PANEL_ROWS rows x COLS columns, written to y a column
        // (PANEL_ROWS consecutive floats) at a time.
        let mut o = [0f32; PANEL_ROWS * COLS];
        for r0 in rows.clone().step_by(PANEL_ROWS) {
            let nr = PANEL_ROWS.min(rows.end - r0);
            fill(&mut u, r0, nr);
            for (cb, cols) in blocks.iter().enumerate() {
                let nc = COLS.min(n - cb * COLS);
                for (rt, o) in o
                    .chunks_exact_mut(ROWS * COLS)
                    .enumerate()
                    .take(nr.div_ceil(ROWS))
                {
                    let tile = Tile::new(&u, rt * ROWS, cols);
                    let o: &mut [f32; ROWS * COLS] = o.try_into().expect("a tile's outputs");
                    // SAFETY: the caller checked the kernel's ISA; the tile checked its lengths.
                    unsafe { (panel.f)(&tile, o) };
                }
                for c in 0..nc {
                    for r in 0..nr {
                        // SAFETY: row r0 + r < m is this task's; column cb * COLS + c < n.
                        unsafe { *out.0.add((cb * COLS + c) * m + r0 + r) = o[r * COLS + c] };
                    }
                }
            }
        }
    });
}

/// `rows` rows of `k` values of interleaved 2:4 blocks
/// ([`crate::formats::sparse_x4`]: groups of four rows, group after group).
#[derive(Clone, Copy)]
pub struct X4Matrix<'a, X> {
    blocks: &'a [X],
    rows: usize,
    k: usize,
}

impl<'a, X: X4Block> X4Matrix<'a, X> {
    pub fn new(blocks: &'a [X], rows: usize, k: usize) -> Result<Self> {
        let per_row = X::FORMAT.blocks_in(k)?;
        if blocks.len() != rows.div_ceil(GROUP) * per_row {
            return Err(Error::LengthMismatch {
                what: "interleaved 2:4 blocks (ceil(rows / 4) * k / 32)",
                expected: rows.div_ceil(GROUP) * per_row,
                got: blocks.len(),
            });
        }
        Ok(X4Matrix { blocks, rows, k })
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn k(&self) -> usize {
        self.k
    }
    /// The blocks of the groups holding rows `r0 .. r0 + n` (`r0` a multiple of 4).
    fn groups_at(&self, r0: usize, n: usize) -> &'a [X] {
        let per_row = self.k / 32;
        &self.blocks[r0 / GROUP * per_row..(r0 + n).div_ceil(GROUP) * per_row]
    }
}

/// What a matmul of `n` columns on `m x k` weights starts with: the output
/// length checked, the activations quantized; `None` (with `y` zeroed) when
/// there is nothing to multiply.
fn begin<A: crate::table::ActKernels>(
    quant: &QuantKernel<A>,
    x: &[f32],
    n: usize,
    (m, k): (usize, usize),
    y: &mut [f32],
    par: &dyn Parallel,
) -> Result<Option<Vec<A>>> {
    if y.len() != n * m {
        return Err(Error::LengthMismatch {
            what: "output (n * rows)",
            expected: n * m,
            got: y.len(),
        });
    }
    let acts = quantize_activations_on(quant, x, n, k, par)?;
    if n == 0 || m == 0 || k == 0 {
        y.fill(0.0);
        return Ok(None);
    }
    Ok(Some(acts))
}

/// `y = x · wᵀ` for weights interleaved by four rows. `config` is that of
/// the rows' format: batches of at least [`crate::panel::MIN_COLS`] run its
/// panel GEMM, smaller ones its interleaved GEMV ([`Config::x4`]), each
/// thread's groups in one call per column.
pub fn matmul_x4_on<X: X4Kernels>(
    w: &X4Matrix<X>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    config: &Config<X::Row>,
    par: &dyn Parallel,
) -> Result<()> {
    let (m, k) = (w.rows, w.k);
    let Some(acts) = begin(config.quant(), x, n, (m, k), y, par)? else {
        return Ok(());
    };
    if let Some(panel) = config.panel_for(n) {
        check_cpu(panel.name(), panel.isa())?;
        let isa = config.fill_isa();
        let fill = |u: &mut Unpacked, r0: usize, nr: usize| u.fill_x4(w.groups_at(r0, nr), nr, isa);
        matmul_panel::<X::Row>((m, k), &fill, &acts, n, y, panel, par);
        return Ok(());
    }
    let per_row = k / 32;
    let cols: Vec<&[BlockQ8_0]> = acts.chunks(per_row).collect();
    let x4 = config.x4::<X>();
    check_cpu(x4.name(), x4.isa())?;
    let groups = m.div_ceil(GROUP);
    let groups_per_task = groups.div_ceil(par.threads()).max(1);
    struct Out(*mut f32);
    // SAFETY: tasks write disjoint rows of y, which outlives par.run.
    unsafe impl Sync for Out {}
    let out = Out(y.as_mut_ptr());
    par.run(groups.div_ceil(groups_per_task), &|task| {
        let out = &out;
        let gs = task * groups_per_task..((task + 1) * groups_per_task).min(groups);
        let blocks = &w.blocks[gs.start * per_row..gs.end * per_row];
        let rows = GROUP * gs.start..(GROUP * gs.end).min(m);
        let mut o = vec![0f32; GROUP * gs.len()];
        for (c, col) in cols.iter().enumerate() {
            // SAFETY: the kernel's ISA is supported (checked above);
            // the groups and the column have per_row blocks each; o has 4 per group.
            unsafe { (x4.f)(blocks, col, &mut o) };
            for (r, &v) in rows.clone().zip(&o) {
                // SAFETY: row r < m is this task's; column c < n.
                unsafe { *out.0.add(c * m + r) = v };
            }
        }
    });
    Ok(())
}

/// `rows` rows of `k` ternary values in the lookup-table layout
/// ([`crate::formats::ternary_x64`]: block position after block position,
/// groups of 64 rows within each).
#[derive(Clone, Copy)]
pub struct LutMatrix<'a, X> {
    blocks: &'a [X],
    rows: usize,
    k: usize,
}

impl<'a, X: LutLayout> LutMatrix<'a, X> {
    pub fn new(blocks: &'a [X], rows: usize, k: usize) -> Result<Self> {
        lut::check_len(blocks.len(), rows, X::Row::FORMAT.blocks_in(k)?)?;
        Ok(LutMatrix { blocks, rows, k })
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn k(&self) -> usize {
        self.k
    }
}

/// `y = x · wᵀ` for ternary weights in the lookup-table layout: batches of
/// at least [`crate::panel::MIN_COLS`] by the format's panel GEMM (its
/// rows unpacked from the layout), smaller ones column by column through the
/// lookup-table GEMV ([`Config::lut`]). Each task takes a
/// range of block positions for every row (so each column's tables are
/// built once, by the task that reads them); the tasks' partial sums are
/// added in task order.
pub fn matmul_lut_on<X: LutKernels>(
    w: &LutMatrix<X>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    config: &Config<X::Row>,
    par: &dyn Parallel,
) -> Result<()> {
    let (m, k) = (w.rows, w.k);
    let Some(acts) = begin(config.quant(), x, n, (m, k), y, par)? else {
        return Ok(());
    };
    let nb = k / crate::formats::QK_K;
    let ngroups = lut::groups(m);
    if let Some(panel) = config.panel_for(n) {
        check_cpu(panel.name(), panel.isa())?;
        let isa = config.fill_isa();
        let fill =
            |u: &mut Unpacked, r0: usize, nr: usize| u.fill_lut(w.blocks, ngroups, r0, nr, isa);
        matmul_panel::<X::Row>((m, k), &fill, &acts, n, y, panel, par);
        return Ok(());
    }
    let lut = config.lut::<X>();
    check_cpu(lut.name(), lut.isa())?;
    let slots = lut::ROWS * ngroups;
    let tasks = par.threads().min(nb).max(1);
    let mut partial = vec![0f32; tasks * slots];
    for (col, y) in acts.chunks(nb).zip(y.chunks_exact_mut(m)) {
        partial.fill(0.0);
        for_each_chunk(par, &mut partial, slots, |t, out| {
            let blocks = nb * t / tasks..nb * (t + 1) / tasks;
            // SAFETY: the kernel's ISA is supported (checked above); w holds
            // nb block positions of ngroups groups, col nb blocks, out 64 per group.
            unsafe { (lut.f)(w.blocks, ngroups, blocks, col, out) };
        });
        let (sum, rest) = partial.split_at_mut(slots);
        for p in rest.chunks_exact(slots) {
            sum.iter_mut().zip(p).for_each(|(s, v)| *s += v);
        }
        lut::unslot::<X>(sum, y);
    }
    Ok(())
}
