//! 2:4 sparse weights: recognised by their data, kept packed, multiplied by
//! the sparse kernels.
//!
//! The first time a Q4_0 or Q8_0 weight reaches a MUL_MAT, its blocks are
//! checked for the 2:4 pattern (at most two non-zero values in each group of
//! four along K; `llmkernel prune` writes such files). A dense weight fails
//! on its first block or so and is remembered as dense. A 2:4 weight is
//! packed into the sparse blocks (lossless: the same codes and scales) and
//! from then on multiplied from the packed copy. When the dense bytes are a
//! mapped model file, their pages are handed back to the kernel
//! (`MADV_DONTNEED`: a later read faults them in again from the file), so
//! the resident memory of a pruned model drops.
//!
//! A dense Q4_0 / Q5_0 / Q8_0 / IQ4_NL weight of a mapped model file is repacked the same
//! way, by four rows ([`llmkernel_kernels::formats::sparse_x4`], as ggml
//! repacks Q4_0), and its file pages released: one sequential stream and one
//! activation load per four rows make decode faster, and resident memory does
//! not grow. A TQ1_0 weight of a mapped file is repacked into the
//! lookup-table layout by 64 rows ([`llmkernel_kernels::formats::ternary_x64`],
//! the same bytes) where the dispatch table sends its decode there (tier
//! avx512; TQ2_0 too under `LLMKERNEL_LUT=1`). Weights in anonymous memory (`--no-mmap`, test programs) keep
//! GGUF's layout, where a copy would double them. `LLMKERNEL_REPACK=0` turns
//! this off.
//!
//! Entries are keyed by the weight's address and size. Why a packed copy
//! never outlives the bytes it was made from:
//! - An entry is made at a weight's first MUL_MAT on LLMK, and only for a
//!   weight in an LLMK buffer (`supports_op` refuses others).
//! - ggml changes such bytes only through the buffer interface: set, memset,
//!   copy, clear and free. Each drops the entries its range overlaps, so
//!   memory freed and handed out again starts clean
//!   (`tests/backend_in_process.rs` writes single blocks, half a weight and
//!   whole new buffers).
//! - The four-row repacks are made only from read-only file mappings
//!   (checked in `/proc/self/maps`). Their bytes cannot change: a write
//!   faults, and released pages are read again from the same file.
//! - What is left is a program that writes a weight's memory through
//!   `tensor->data` after multiplying it. ggml allows that for host buffers,
//!   and LLMK's are host buffers (so that the CPU backend reads the weights
//!   of declined matmuls in place). llama.cpp writes `tensor->data` directly
//!   only in its model loader (`read_raw`), before the first graph, when no
//!   entry exists. Only 2:4 packing of anonymous memory (`--no-mmap`) is
//!   exposed to such a program. There, a fingerprint of 16 sampled blocks,
//!   checked at every use, catches writes that touch a sampled block.
//!   `LLMKERNEL_SPARSE=0` turns packing off for such a program.

use llmkernel_kernels::formats::lut::{self, LutLayout};
use llmkernel_kernels::formats::sparse_x4::{interleave, DenseOf, X4Block, GROUP};
use llmkernel_kernels::formats::{
    BlockIq2S, BlockIq2Sx64, BlockIq2Xs, BlockIq2Xsx64, BlockIq2Xxs, BlockIq2Xxsx64, BlockIq3S,
    BlockIq3Sx64, BlockIq3Xxs, BlockIq3Xxsx64, BlockIq4Nl, BlockIq4Nlx4, BlockQ4_0, BlockQ4_0Sx4,
    BlockQ4_0x4, BlockQ5_0, BlockQ5_0x4, BlockQ8_0, BlockQ8_0Sx4, BlockQ8_0x4, BlockTq1_0,
    BlockTq1_0Px64, BlockTq1_0x64, BlockTq2_0, BlockTq2_0Px64, BlockTq2_0x64, QuantBlock,
};
use llmkernel_kernels::matmul::Parallel;
use llmkernel_kernels::table::LutKernels;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};

/// The packed form of a weight, if it is 2:4.
#[derive(Clone)]
pub(crate) enum Packed {
    Dense,
    /// 2:4, interleaved by four rows ([`llmkernel_kernels::formats::sparse_x4`]), plane after plane.
    Q4_0(Arc<Vec<BlockQ4_0Sx4>>),
    Q8_0(Arc<Vec<BlockQ8_0Sx4>>),
    /// Dense, interleaved by four rows (file-backed weights only: the copy
    /// replaces the released file pages instead of adding to them).
    Q4_0x4(Arc<Vec<BlockQ4_0x4>>),
    Q8_0x4(Arc<Vec<BlockQ8_0x4>>),
    Iq4Nlx4(Arc<Vec<BlockIq4Nlx4>>),
    Q5_0x4(Arc<Vec<BlockQ5_0x4>>),
    /// Ternary, in the lookup-table layout (64 rows a group; file-backed
    /// weights only, where the dispatch table sends decode there).
    Tq1_0x64(Arc<Vec<BlockTq1_0x64>>),
    Tq2_0x64(Arc<Vec<BlockTq2_0x64>>),
    /// An i-quant as sign planes (64 rows a group; file-backed weights
    /// only, where the dispatch table sends decode there). Decode only:
    /// prompt batches read the file's blocks, whose pages stay.
    Iq2Xxsx64(Arc<Vec<BlockIq2Xxsx64>>),
    Iq2Xsx64(Arc<Vec<BlockIq2Xsx64>>),
    Iq2Sx64(Arc<Vec<BlockIq2Sx64>>),
    Iq3Sx64(Arc<Vec<BlockIq3Sx64>>),
    Iq3Xxsx64(Arc<Vec<BlockIq3Xxsx64>>),
    /// Ternary as sign planes (tier avx2), decode only as the i-quants'.
    Tq1_0Px64(Arc<Vec<BlockTq1_0Px64>>),
    Tq2_0Px64(Arc<Vec<BlockTq2_0Px64>>),
}

impl Packed {
    /// Bytes of the packed copy (0 for a dense weight).
    fn bytes(&self) -> usize {
        match self {
            Packed::Dense => 0,
            Packed::Q4_0(v) => std::mem::size_of_val(v.as_slice()),
            Packed::Q8_0(v) => std::mem::size_of_val(v.as_slice()),
            Packed::Q4_0x4(v) => std::mem::size_of_val(v.as_slice()),
            Packed::Q8_0x4(v) => std::mem::size_of_val(v.as_slice()),
            Packed::Iq4Nlx4(v) => std::mem::size_of_val(v.as_slice()),
            Packed::Q5_0x4(v) => std::mem::size_of_val(v.as_slice()),
            Packed::Tq1_0x64(v) => std::mem::size_of_val(v.as_slice()),
            Packed::Tq2_0x64(v) => std::mem::size_of_val(v.as_slice()),
            Packed::Iq2Xxsx64(v) => std::mem::size_of_val(v.as_slice()),
            Packed::Iq2Xsx64(v) => std::mem::size_of_val(v.as_slice()),
            Packed::Iq2Sx64(v) => std::mem::size_of_val(v.as_slice()),
            Packed::Iq3Sx64(v) => std::mem::size_of_val(v.as_slice()),
            Packed::Iq3Xxsx64(v) => std::mem::size_of_val(v.as_slice()),
            Packed::Tq1_0Px64(v) => std::mem::size_of_val(v.as_slice()),
            Packed::Tq2_0Px64(v) => std::mem::size_of_val(v.as_slice()),
        }
    }

    /// Whether the copy replaces the weight's file pages (every batch reads
    /// it), so they are released.
    fn replaces(&self) -> bool {
        !matches!(
            self,
            Packed::Iq2Xxsx64(_)
                | Packed::Iq2Xsx64(_)
                | Packed::Iq2Sx64(_)
                | Packed::Iq3Sx64(_)
                | Packed::Iq3Xxsx64(_)
                | Packed::Tq1_0Px64(_)
                | Packed::Tq2_0Px64(_)
        )
    }

    /// Whether this is a 2:4 weight (what the `sparse_*` counters count).
    pub(crate) fn is_sparse(&self) -> bool {
        matches!(self, Packed::Q4_0(_) | Packed::Q8_0(_))
    }
}

struct Entry {
    len: usize,
    fingerprint: u64,
    packed: Packed,
}

fn cache() -> &'static Mutex<HashMap<usize, Entry>> {
    static CACHE: OnceLock<Mutex<HashMap<usize, Entry>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// FNV-1a over 16 blocks spread across the weight (and its length).
fn fingerprint(bytes: &[u8], block: usize) -> u64 {
    let blocks = bytes.len() / block;
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ bytes.len() as u64;
    for i in 0..16.min(blocks) {
        let b = i * blocks / 16.min(blocks);
        for &v in &bytes[b * block..(b + 1) * block] {
            h = (h ^ v as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
    h
}

/// [`pack_on`] of dense blocks given as bytes (viewed in place when aligned, else copied).
fn pack_bytes<X: X4Block>(
    bytes: &[u8],
    (m, k): (usize, usize),
    par: &dyn Parallel,
) -> Option<Vec<X>>
where
    X::Row: DenseOf,
    <X::Row as DenseOf>::Dense: Sync,
{
    pack_on::<X>(&blocks_of(bytes), (m, k), par)
}

/// `bytes` as blocks: viewed in place when aligned, else copied.
fn blocks_of<T: bytemuck::Pod>(bytes: &[u8]) -> Cow<'_, [T]> {
    match bytemuck::try_cast_slice(bytes) {
        Ok(v) => Cow::Borrowed(v),
        Err(_) => {
            let mut v = vec![T::zeroed(); bytes.len() / std::mem::size_of::<T>()];
            bytemuck::cast_slice_mut::<T, u8>(&mut v).copy_from_slice(bytes);
            Cow::Owned(v)
        }
    }
}

/// An on-by-default switch: off when the environment variable `var` is `0`
/// (read once per process, into `cell`).
fn switch(cell: &'static OnceLock<bool>, var: &str) -> bool {
    *cell.get_or_init(|| std::env::var(var).map_or(true, |v| v != "0"))
}

/// Whether sparse weights are used at all (`LLMKERNEL_SPARSE=0` turns them off,
/// for comparing with the dense kernels on the same file).
fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    switch(&ON, "LLMKERNEL_SPARSE")
}

/// Whether dense Q4_0 / Q8_0 weights of a mapped file are repacked into
/// four-row groups for decode (`LLMKERNEL_REPACK=0` keeps GGUF's layout).
fn repack_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    switch(&ON, "LLMKERNEL_REPACK")
}

/// Whether a dense weight at `data` would be repacked on first use (packing
/// on, a read-only file mapping); remembered per address.
pub(crate) fn repackable(data: *const u8, len: usize) -> bool {
    if !enabled() || !repack_enabled() || data.is_null() || len == 0 {
        return false;
    }
    let key = (data as usize, len);
    if let Some(&v) = mapped().lock().unwrap().get(&key) {
        return v;
    }
    let v = file_backed_range(data, len);
    mapped().lock().unwrap().insert(key, v);
    v
}

/// [`repackable`]'s answers by (address, length).
fn mapped() -> &'static Mutex<HashMap<(usize, usize), bool>> {
    static MAPPED: OnceLock<Mutex<HashMap<(usize, usize), bool>>> = OnceLock::new();
    MAPPED.get_or_init(Default::default)
}

/// Packs `dense` (planes of `m` rows of `k` values) into four-row groups of
/// `X` on `par` (runs of groups in parallel), or `None` if `X` is a 2:4
/// layout and a block is not 2:4.
fn pack_on<X: X4Block>(
    dense: &[<X::Row as DenseOf>::Dense],
    (m, k): (usize, usize),
    par: &dyn Parallel,
) -> Option<Vec<X>>
where
    X::Row: DenseOf,
    <X::Row as DenseOf>::Dense: Sync,
{
    // The first block decides for most dense weights, before any thread wakes.
    <X::Row as DenseOf>::pack(&dense[..dense.len().min(1)]).ok()?;
    let per_row = k / 32;
    if per_row == 0 || m == 0 || dense.len() % (m * per_row) != 0 {
        return None;
    }
    let (planes, groups) = (dense.len() / (m * per_row), m.div_ceil(GROUP));
    // Runs of about 16384 dense blocks, whole groups, never across planes.
    let run = (16384 / (GROUP * per_row)).max(1);
    let runs_per_plane = groups.div_ceil(run);
    let out: Vec<Mutex<Option<Vec<X>>>> = (0..planes * runs_per_plane)
        .map(|_| Mutex::new(None))
        .collect();
    par.run(out.len(), &|i| {
        let (p, r) = (i / runs_per_plane, i % runs_per_plane);
        let rows = GROUP * run * r..(GROUP * run * (r + 1)).min(m);
        let part = &dense[(p * m + rows.start) * per_row..(p * m + rows.end) * per_row];
        let packed = <X::Row as DenseOf>::pack(part)
            .ok()
            .and_then(|s| interleave(&s, rows.len(), k).ok());
        *out[i].lock().unwrap() = packed;
    });
    let mut v = Vec::with_capacity(planes * groups * per_row);
    for o in out {
        v.extend(o.into_inner().unwrap()?);
    }
    Some(v)
}

/// Ternary rows given as bytes (planes of `m` rows of `k` values) in the
/// lookup-table layout, plane after plane, block positions filled in
/// parallel on `par`; `None` if the shape does not fit the bytes.
fn pack_lut<X: LutLayout>(
    bytes: &[u8],
    (m, k): (usize, usize),
    par: &dyn Parallel,
) -> Option<Vec<X>> {
    let per_row = X::Row::FORMAT.blocks_in(k).ok()?;
    let plane = m * per_row * std::mem::size_of::<X::Row>();
    if plane == 0 || bytes.len() % plane != 0 {
        return None;
    }
    let rows: Cow<[X::Row]> = blocks_of(bytes);
    let (planes, groups) = (bytes.len() / plane, lut::groups(m));
    let mut out = vec![X::zeroed(); planes * per_row * groups];
    let at: Vec<Mutex<&mut [X]>> = out.chunks_mut(groups).map(Mutex::new).collect();
    par.run(at.len(), &|i| {
        let (p, b) = (i / per_row, i % per_row);
        let plane_rows = &rows[p * m * per_row..(p + 1) * m * per_row];
        lut::interleave_position(plane_rows, m, per_row, b, &mut at[i].lock().unwrap());
    });
    drop(at);
    Some(out)
}

/// Whether the dispatch table sends decode of layout `X`'s format through
/// its lookup-table GEMV on this backend's ISA.
fn lut_decode<X: LutKernels>() -> bool {
    crate::ops::config::<X::Row>().lut_for::<X>(1).is_some()
}

/// The packed form of the weight at `data` (`len` bytes of blocks of
/// `ggml_type`), packing it on first use.
///
/// # Safety
/// `data` points to `len` readable bytes that stay valid while the weight's
/// buffer lives.
pub(crate) unsafe fn lookup(
    data: *const u8,
    len: usize,
    ggml_type: u32,
    rows_k: (usize, usize),
    par: &dyn Parallel,
) -> Packed {
    // The packed forms release the file's pages; where ggml keeps this
    // format's decode (the dispatch table's policy), its kernels would fault
    // them back in, and the copy would double the weight's memory.
    if !enabled() || len == 0 || !crate::ops::takes(ggml_type, 1) {
        return Packed::Dense;
    }
    let block = match ggml_type {
        crate::ffi::GGML_TYPE_Q4_0 => std::mem::size_of::<BlockQ4_0>(),
        crate::ffi::GGML_TYPE_Q8_0 => std::mem::size_of::<BlockQ8_0>(),
        crate::ffi::GGML_TYPE_IQ4_NL => std::mem::size_of::<BlockIq4Nl>(),
        crate::ffi::GGML_TYPE_Q5_0 => std::mem::size_of::<BlockQ5_0>(),
        crate::ffi::GGML_TYPE_TQ1_0 => std::mem::size_of::<BlockTq1_0>(),
        crate::ffi::GGML_TYPE_TQ2_0 => std::mem::size_of::<BlockTq2_0>(),
        crate::ffi::GGML_TYPE_IQ2_XXS => std::mem::size_of::<BlockIq2Xxs>(),
        crate::ffi::GGML_TYPE_IQ2_XS => std::mem::size_of::<BlockIq2Xs>(),
        crate::ffi::GGML_TYPE_IQ2_S => std::mem::size_of::<BlockIq2S>(),
        crate::ffi::GGML_TYPE_IQ3_S => std::mem::size_of::<BlockIq3S>(),
        crate::ffi::GGML_TYPE_IQ3_XXS => std::mem::size_of::<BlockIq3Xxs>(),
        _ => return Packed::Dense,
    };
    // SAFETY: forwarded contract.
    let bytes = unsafe { std::slice::from_raw_parts(data, len) };
    let fp = fingerprint(bytes, block);
    let key = data as usize;
    if let Some(e) = cache().lock().unwrap().get(&key) {
        if e.len == len && e.fingerprint == fp {
            return e.packed.clone();
        }
    }
    use crate::ffi::{
        GGML_TYPE_IQ2_S, GGML_TYPE_IQ2_XS, GGML_TYPE_IQ2_XXS, GGML_TYPE_IQ3_S, GGML_TYPE_IQ3_XXS,
        GGML_TYPE_IQ4_NL, GGML_TYPE_Q4_0, GGML_TYPE_Q5_0, GGML_TYPE_Q8_0, GGML_TYPE_TQ1_0,
        GGML_TYPE_TQ2_0,
    };
    let mut packed = match ggml_type {
        GGML_TYPE_Q4_0 => pack_bytes::<BlockQ4_0Sx4>(bytes, rows_k, par)
            .map_or(Packed::Dense, |v| Packed::Q4_0(Arc::new(v))),
        GGML_TYPE_Q8_0 => pack_bytes::<BlockQ8_0Sx4>(bytes, rows_k, par)
            .map_or(Packed::Dense, |v| Packed::Q8_0(Arc::new(v))),
        _ => Packed::Dense, // no 2:4 form
    };
    if matches!(packed, Packed::Dense) && repack_enabled() && file_backed_range(data, len) {
        packed =
            match ggml_type {
                GGML_TYPE_Q5_0 => pack_bytes::<BlockQ5_0x4>(bytes, rows_k, par)
                    .map_or(Packed::Dense, |v| Packed::Q5_0x4(Arc::new(v))),
                GGML_TYPE_IQ4_NL => pack_bytes::<BlockIq4Nlx4>(bytes, rows_k, par)
                    .map_or(Packed::Dense, |v| Packed::Iq4Nlx4(Arc::new(v))),
                GGML_TYPE_Q4_0 => pack_bytes::<BlockQ4_0x4>(bytes, rows_k, par)
                    .map_or(Packed::Dense, |v| Packed::Q4_0x4(Arc::new(v))),
                GGML_TYPE_Q8_0 => pack_bytes::<BlockQ8_0x4>(bytes, rows_k, par)
                    .map_or(Packed::Dense, |v| Packed::Q8_0x4(Arc::new(v))),
                GGML_TYPE_TQ1_0 if lut_decode::<BlockTq1_0x64>() => pack_lut(bytes, rows_k, par)
                    .map_or(Packed::Dense, |v| Packed::Tq1_0x64(Arc::new(v))),
                GGML_TYPE_TQ2_0 if lut_decode::<BlockTq2_0x64>() => pack_lut(bytes, rows_k, par)
                    .map_or(Packed::Dense, |v| Packed::Tq2_0x64(Arc::new(v))),
                GGML_TYPE_TQ1_0 if lut_decode::<BlockTq1_0Px64>() => pack_lut(bytes, rows_k, par)
                    .map_or(Packed::Dense, |v| Packed::Tq1_0Px64(Arc::new(v))),
                GGML_TYPE_TQ2_0 if lut_decode::<BlockTq2_0Px64>() => pack_lut(bytes, rows_k, par)
                    .map_or(Packed::Dense, |v| Packed::Tq2_0Px64(Arc::new(v))),
                GGML_TYPE_IQ2_XXS if lut_decode::<BlockIq2Xxsx64>() => pack_lut(bytes, rows_k, par)
                    .map_or(Packed::Dense, |v| Packed::Iq2Xxsx64(Arc::new(v))),
                GGML_TYPE_IQ2_XS if lut_decode::<BlockIq2Xsx64>() => pack_lut(bytes, rows_k, par)
                    .map_or(Packed::Dense, |v| Packed::Iq2Xsx64(Arc::new(v))),
                GGML_TYPE_IQ2_S if lut_decode::<BlockIq2Sx64>() => pack_lut(bytes, rows_k, par)
                    .map_or(Packed::Dense, |v| Packed::Iq2Sx64(Arc::new(v))),
                GGML_TYPE_IQ3_S if lut_decode::<BlockIq3Sx64>() => pack_lut(bytes, rows_k, par)
                    .map_or(Packed::Dense, |v| Packed::Iq3Sx64(Arc::new(v))),
                GGML_TYPE_IQ3_XXS if lut_decode::<BlockIq3Xxsx64>() => pack_lut(bytes, rows_k, par)
                    .map_or(Packed::Dense, |v| Packed::Iq3Xxsx64(Arc::new(v))),
                _ => Packed::Dense,
            };
    }
    let packed_bytes = packed.bytes();
    if packed_bytes > 0 {
        if packed.is_sparse() {
            crate::SPARSE_PACKED.fetch_add(1, Ordering::Relaxed);
            crate::SPARSE_TENSORS.fetch_add(1, Ordering::Relaxed);
            crate::SPARSE_BYTES.fetch_add(packed_bytes as u64, Ordering::Relaxed);
        }
        if packed.replaces() {
            // SAFETY: forwarded contract.
            unsafe { release_if_file_backed(data, len) };
        }
    }
    let mut c = cache().lock().unwrap();
    if let Some(old) = c.insert(
        key,
        Entry {
            len,
            fingerprint: fp,
            packed: packed.clone(),
        },
    ) {
        forget(&old);
    }
    packed
}

fn forget(e: &Entry) {
    let bytes = e.packed.bytes();
    if bytes == 0 || !e.packed.is_sparse() {
        return;
    }
    crate::SPARSE_TENSORS.fetch_sub(1, Ordering::Relaxed);
    crate::SPARSE_BYTES.fetch_sub(bytes as u64, Ordering::Relaxed);
}

/// Drops the entries of weights inside `[base, base + size)` (their memory
/// is being written or freed).
pub(crate) fn invalidate(base: *const u8, size: usize) {
    let (lo, hi) = (base as usize, base as usize + size);
    mapped()
        .lock()
        .unwrap()
        .retain(|&(k, len), _| k + len <= lo || k >= hi);
    let mut c = cache().lock().unwrap();
    c.retain(|&k, e| {
        let keep = k + e.len <= lo || k >= hi;
        if !keep {
            forget(e);
        }
        keep
    });
}

/// Hands the whole pages of `[data, data + len)` back to the kernel if they
/// belong to a file mapping (read again from the file if touched later);
/// anonymous memory is left alone (dropping it would zero it).
///
/// # Safety
/// The range is mapped memory that nobody writes.
unsafe fn release_if_file_backed(data: *const u8, len: usize) {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let start = (data as usize).div_ceil(PAGE) * PAGE;
        let end = (data as usize + len) / PAGE * PAGE;
        if end <= start || !file_backed(start, end) {
            return;
        }
        unsafe extern "C" {
            fn madvise(addr: *mut std::ffi::c_void, len: usize, advice: i32) -> i32;
        }
        const MADV_DONTNEED: i32 = 4;
        // SAFETY: whole pages of a file mapping (checked above); their data
        // stays what the file holds.
        unsafe { madvise(start as *mut _, end - start, MADV_DONTNEED) };
    }
}

/// Whether the bytes `[data, data + len)` lie inside one read-only mapping of a file.
fn file_backed_range(data: *const u8, len: usize) -> bool {
    #[cfg(target_os = "linux")]
    {
        file_backed(data as usize, data as usize + len)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (data, len);
        false
    }
}

/// Whether `[start, end)` lies inside one mapping of a file (`/proc/self/maps`).
#[cfg(target_os = "linux")]
fn file_backed(start: usize, end: usize) -> bool {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return false;
    };
    maps.lines().any(|l| {
        let mut f = l.split_whitespace();
        let (Some(range), Some(perms), _, _, Some(inode), Some(path)) =
            (f.next(), f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            return false;
        };
        let Some((a, b)) = range.split_once('-') else {
            return false;
        };
        let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) else {
            return false;
        };
        // A read-only (never written, so never copied-on-write) file mapping.
        a <= start && end <= b && inode != "0" && path.starts_with('/') && !perms.contains('w')
    })
}
