//! GEMM (batch >= [`MIN_COLS`], prompt processing) through unpacked panels:
//! one micro-kernel for every weight format.
//!
//! The row kernels of [`crate::table`] multiply one weight row by up to 8
//! columns straight from the GGUF blocks, so every activation load feeds one
//! row, and the per-block unpacking and scale arithmetic is repeated for every
//! group of columns. Here both sides are first put in the form an int8
//! multiply-add wants, once per matmul (activations) or once per
//! [`PANEL_ROWS`] weight rows (weights), and one format-agnostic tile kernel
//! does `ROWS x COLS` outputs at a time:
//!
//! - **Weights** ([`Unpacked`], filled by [`PanelFormat::unpack`]): each row's
//!   codes as plain `i8` along K; per run of values sharing a float scale
//!   (32 for Q4_K, Q4_0, Q8_0; the whole 256-value block for Q3_K and Q2_K,
//!   whose codes carry their small integer sub-block scales; 16 for Q6_K,
//!   whose 8-bit ones they cannot) that f32 `scale`
//!   and an i32 correction `-128 * sum(codes)`; for formats with mins (Q4_K,
//!   Q2_K), the integer mins in i16 pairs and one f32 `min_scale` per block
//!   (value = scale * code + min_scale * min).
//! - **Activations** ([`ColBlock`], from the ggml-quantized Q8_K / Q8_0
//!   blocks by [`pack_columns`]): [`COLS`] columns interleaved by four values
//!   along K (`[k/4][column][4]`), each code stored `+128` as a `u8` (or in
//!   the layout another tile reads, [`ColLayout`]: signed for the NEON
//!   dotprod tile, by eight for the i8mm tile); per
//!   pair of min sub-blocks and column the two sums of the codes (i16 pair);
//!   per activation block and column its scale.
//!
//! A tile keeps the accumulators of `ROWS x COLS` outputs. Per four values of
//! K it loads the 4-value groups of all `COLS` columns once (two 64-byte
//! vectors) and, for each row, multiplies them by that row's four codes
//! broadcast (AVX-512 VNNI `vpdpbusd`: u8 x i8, four products added into each
//! i32 lane). Starting each sub-block's integer sum at the correction makes it
//! exactly `sum(code * a)`; it is then scaled in f32 (`scale`), the block's
//! exact `sum(min * sum(a))` (`vpdpwssd` of i16 pairs) scaled by `min_scale`
//! added, and the total, per activation block, scaled by the activation scale.
//! (The AVX2 tile, without VNNI, gets the same integer sums another way:
//! [`crate::x86_avx2::panel`].) One activation load
//! feeds `ROWS` rows; one weight broadcast feeds `COLS` columns; outputs come
//! out as `COLS` consecutive values of one row, which is how ggml lays out `y`
//! (column c of row r at `y[c * m + r]`).
//!
//! The idea (reuse each unpacked weight across many columns, interleave the
//! activations so one load feeds a whole tile) is what ik_llama.cpp and
//! ggml's tiled/repacked GEMMs do; this code is our own.

use crate::formats::lut::{LutLayout, ROWS as LUT_ROWS};
use crate::formats::sparse_x4::{X4Block, GROUP};
use crate::formats::{BlockQ8K, BlockQ8_0, QuantBlock, WeightBlock};
use crate::isa::Isa;

/// Weight rows per tile. Eight rows give the AVX-512 tile 16 independent
/// `vpdpbusd` chains, enough to hide the instruction's latency at two per
/// cycle (the AVX2 tile runs them two rows at a time; four rows against
/// eight: docs/BENCHMARKS.md).
pub const ROWS: usize = 8;
/// Activation columns per tile (two 16-lane vectors).
pub const COLS: usize = 32;
/// Weight rows unpacked together and run against every column block
/// (32 rows of K = 4096: 128 KB of codes, kept in L2).
pub const PANEL_ROWS: usize = 32;
/// The smallest batch the panel GEMM takes; smaller ones run the row kernels,
/// which need no unpacking and waste no padded columns.
pub const MIN_COLS: usize = 16;

/// The activation side: ggml's Q8_K and Q8_0 blocks.
pub trait PanelAct: QuantBlock {
    fn scale(&self) -> f32;
    fn codes(&self) -> &[i8];
    /// The sums of each 16 codes, where the block stores them (Q8_K).
    fn sums16(&self) -> Option<&[i16]> {
        None
    }
}

impl PanelAct for BlockQ8K {
    fn scale(&self) -> f32 {
        self.d
    }
    fn codes(&self) -> &[i8] {
        &self.qs
    }
    fn sums16(&self) -> Option<&[i16]> {
        Some(&self.bsums)
    }
}

impl PanelAct for BlockQ8_0 {
    fn scale(&self) -> f32 {
        self.d.to_f32()
    }
    fn codes(&self) -> &[i8] {
        &self.qs
    }
}

/// A weight format the panel GEMM takes: how one block unpacks (each
/// format's file implements it).
///
/// Value `i` of a block is `scale[i / SUB] * codes[i] + min_scale * mins[i / MIN_SUB]`
/// (no min term where `MIN_SUB == 0`). Where a sub-block's integer scale
/// times its codes fits an `i8` (Q3_K, Q2_K) the codes carry it, `SUB` is the
/// whole block, and the kernel needs one float step per block instead of one
/// per sub-block.
pub trait PanelFormat: WeightBlock<Act: PanelAct> {
    /// Values per float `scale`: 32; 256 where the codes carry the sub-block
    /// scales; 16 where a sub-block's 8-bit scale times its codes would not
    /// fit an `i8` (Q6_K).
    const SUB: usize;
    /// Values per integer min (16 or 32), or 0 for formats without mins.
    const MIN_SUB: usize;
    /// The largest magnitude an unpacked code takes, for any block bytes
    /// (kernels without a u8 x i8 multiply-add choose their method by it).
    const MAX_CODE: u8;
    /// Unpacks one block: `codes` (one per value), `scale` (one per `SUB`
    /// values), `mins` (one per `MIN_SUB` values) and `min_scale`.
    fn unpack(&self, codes: &mut [i8], scale: &mut [f32], mins: &mut [i16], min_scale: &mut f32);
    /// Whether [`PanelFormat::factor`] writes the codes' factored form.
    const FACTORED: bool = false;
    /// The largest magnitude of a factor ([`PanelFormat::factor`]).
    const MAX_FACTOR: u8 = 0;
    /// Where every value is `d * scale * factor`, with one float `d` per
    /// block, an integer scale per [`FACTOR_SUB`] values and small integer
    /// factors (at most [`PanelFormat::MAX_FACTOR`] in magnitude), writes the
    /// factors (one per value) and the scales (one per 16 values) and returns
    /// `d`. Q3_K and Q2_K, whose codes carry their sub-block scales, factor
    /// them back out (factors of at most 4); the i-quants, whose float scale
    /// per 16 or 32 values is `d` times a small odd integer, give their codes
    /// as factors. A tile without a u8 x i8 multiply-add into i32 (AVX2)
    /// multiplies the narrow factors in i16 and applies the integer scales as
    /// it widens to i32, so it sums a whole block exactly in integers and
    /// takes one float step per block.
    #[inline(always)]
    fn factor(&self, _factors: &mut [i8], _scales: &mut [i16]) -> f32 {
        0.0
    }
    /// [`PanelFormat::unpack`] and [`PanelFormat::factor`] of one block
    /// (a format that derives both from one decode overrides it).
    #[inline(always)]
    fn unpack_factored(
        &self,
        (codes, scale, mins, min_scale): (&mut [i8], &mut [f32], &mut [i16], &mut f32),
        factors: &mut [i8],
        scales: &mut [i16],
    ) -> f32 {
        self.unpack(codes, scale, mins, min_scale);
        self.factor(factors, scales)
    }
}

/// Values per integer scale of the factored form.
pub const FACTOR_SUB: usize = 16;

/// The 32-value runs of a Q2_K / Q3_K block's codes, `(h, s, codes, qs)`:
/// values `128h + 32s ..` take their low two bits from `qs[32h ..][..32]` at
/// shift `2s`.
#[inline(always)]
pub(crate) fn quarters<'a>(
    codes: &'a mut [i8],
    qs: &'a [u8; 64],
) -> impl Iterator<Item = (usize, usize, &'a mut [i8], &'a [u8])> {
    let codes: &mut [i8; 256] = codes.try_into().expect("a block's codes");
    codes
        .chunks_exact_mut(32)
        .enumerate()
        .map(move |(i, c)| (i / 4, i % 4, c, &qs[32 * (i / 4)..][..32]))
}

/// The shape of a format's panel data: what [`Unpacked`], [`ColBlock`] and
/// [`Tile`] agree on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Values per weight block (= per activation block).
    pub block: usize,
    /// Values per float scale.
    pub sub: usize,
    /// Values per integer min, 0 for none.
    pub min_sub: usize,
    /// The largest magnitude of a code ([`PanelFormat::MAX_CODE`]).
    pub max_code: u8,
    /// Whether the codes have a factored form ([`PanelFormat::FACTORED`]).
    pub factored: bool,
    /// The largest magnitude of a factor ([`PanelFormat::MAX_FACTOR`]).
    pub max_factor: u8,
}

impl Shape {
    pub fn of<B: PanelFormat>() -> Shape {
        let block = B::FORMAT.block_len();
        assert_eq!(
            block,
            <B::Act as QuantBlock>::LEN,
            "weight and activation blocks span the same values"
        );
        Shape {
            block,
            sub: B::SUB,
            min_sub: B::MIN_SUB,
            max_code: B::MAX_CODE,
            factored: B::FACTORED,
            max_factor: B::MAX_FACTOR,
        }
    }
    /// Pairs of mins per block (mins go two to an i32: the kernel multiplies i16 pairs).
    pub fn pairs(&self) -> usize {
        if self.min_sub == 0 {
            0
        } else {
            self.block / self.min_sub / 2
        }
    }
}

/// Up to `rows` weight rows unpacked ([`PanelFormat::unpack`]); rows past
/// the filled ones are zero (they compute zeros, which are not stored).
pub struct Unpacked {
    k: usize,
    shape: Shape,
    rows: usize,
    /// `rows * k` codes, row after row.
    codes: Vec<i8>,
    /// The codes' factored form ([`PanelFormat::factor`]), where the format
    /// has one and the fill ran for AVX2 (whose tile reads it; empty
    /// otherwise): `rows * k` factors, `rows * k / 16` scales, and per row
    /// and block the float `d` and the correction `-128 * sum(scale * factor)`.
    factors: Vec<i8>,
    factor_scales: Vec<i16>,
    factor_d: Vec<f32>,
    factor_corr: Vec<i32>,
    /// Per row, per `sub` values: the float scale and the correction `-128 * sum(codes)`.
    scale: Vec<f32>,
    corr: Vec<i32>,
    /// Per row, per pair of mins: `min[2p] | min[2p + 1] << 16`.
    mins: Vec<i32>,
    /// Per row, per block.
    min_scale: Vec<f32>,
    /// Per block, for unpacking.
    block_mins: Vec<i16>,
}

impl Unpacked {
    pub fn new(rows: usize, k: usize, shape: Shape) -> Unpacked {
        let (nsub, nblk) = (k / shape.sub, k / shape.block);
        let with_min = |n: usize| if shape.min_sub == 0 { 0 } else { n };
        Unpacked {
            k,
            shape,
            rows,
            codes: vec![0; rows * k],
            factors: vec![],
            factor_scales: vec![],
            factor_d: vec![],
            factor_corr: vec![],
            scale: vec![0.0; rows * nsub],
            corr: vec![0; rows * nsub],
            mins: vec![0; rows * nblk * shape.pairs()],
            min_scale: vec![0.0; with_min(rows * nblk)],
            block_mins: vec![0; with_min(shape.block / shape.min_sub.max(1))],
        }
    }

    /// Unpacks `blocks` (`n <= rows` rows, row after row) and zeroes the
    /// rest, with code compiled for `isa` (lower where the CPU lacks it).
    pub fn fill<B: PanelFormat>(&mut self, blocks: &[B], n: usize, isa: Isa) {
        assert_eq!(blocks.len() * self.shape.block, n * self.k);
        self.fill_from(blocks.iter().copied(), n, isa)
    }

    /// [`Unpacked::fill`] from rows `r0 .. r0 + n` of interleaved groups
    /// (`groups`: the blocks of the groups holding those rows; `r0` a multiple of 4).
    pub fn fill_x4<X: X4Block>(&mut self, groups: &[X], n: usize, isa: Isa)
    where
        X::Row: PanelFormat,
    {
        let per_row = self.k / self.shape.block;
        assert_eq!(groups.len(), n.div_ceil(GROUP) * per_row);
        assert!(n <= self.rows && self.shape == Shape::of::<X::Row>() && self.rows % GROUP == 0);
        #[cfg(target_arch = "x86_64")]
        if Isa::Avx512.admitted_under(isa) {
            use crate::formats::{
                BlockIq4Nlx4, BlockQ4_0Sx4, BlockQ4_0x4, BlockQ5_0x4, BlockQ8_0Sx4, BlockQ8_0x4,
            };
            use crate::x86_avx512::sparse_x4::unpack_rows;
            use std::any::TypeId;
            let full = n.div_ceil(GROUP) * GROUP;
            let (codes, scale) = (&mut self.codes[..], &mut self.scale[..]);
            let id = TypeId::of::<X>();
            // SAFETY: AVX-512 checked above; `full` rows of groups (checked
            // above) fit the rows this was made for (a multiple of four); the
            // masks of interleaved blocks are valid (they were packed or checked);
            // the casts are identities (the type ids match).
            let done = unsafe {
                macro_rules! unpack_as {
                    ($($t:ty),*) => {
                        $(if id == TypeId::of::<$t>() {
                            unpack_rows::<$t>(bytemuck::cast_slice(groups), full, self.k, codes, scale);
                            true
                        } else)* {
                            false
                        }
                    };
                }
                unpack_as!(
                    BlockQ8_0Sx4,
                    BlockQ4_0Sx4,
                    BlockQ8_0x4,
                    BlockQ4_0x4,
                    BlockIq4Nlx4,
                    BlockQ5_0x4
                )
            };
            if done {
                return self.finish(n, isa);
            }
        }
        let rows = (0..n).flat_map(|r| {
            let g = &groups[r / GROUP * per_row..][..per_row];
            g.iter().map(move |b| b.row(r % GROUP))
        });
        self.fill_from(rows, n, isa)
    }

    /// [`Unpacked::fill`] from rows `r0 .. r0 + n` of ternary rows in the
    /// lookup-table layout (`x`: every block position's `ngroups` groups of 64).
    pub fn fill_lut<X: LutLayout>(&mut self, x: &[X], ngroups: usize, r0: usize, n: usize, isa: Isa)
    where
        X::Row: PanelFormat,
    {
        let per_row = self.k / self.shape.block;
        assert_eq!(x.len(), per_row * ngroups);
        assert!(r0 + n <= ngroups * LUT_ROWS);
        let rows = (r0..r0 + n).flat_map(|r| {
            (0..per_row).map(move |b| x[b * ngroups + r / LUT_ROWS].row_block(r % LUT_ROWS))
        });
        self.fill_from(rows, n, isa)
    }

    /// Unpacks `n` rows of blocks, row after row, and zeroes the rest.
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
    fn fill_from<B: PanelFormat>(&mut self, blocks: impl Iterator<Item = B>, n: usize, isa: Isa) {
        assert!(n <= self.rows && self.shape == Shape::of::<B>());
        // Only the AVX2 tile reads the factored form.
        let factored = B::FACTORED && isa == Isa::Avx2;
        if factored && self.factors.is_empty() {
            let nblk = self.rows * self.k / self.shape.block;
            self.factors = vec![0; self.rows * self.k];
            self.factor_scales = vec![0; self.rows * self.k / FACTOR_SUB];
            self.factor_d = vec![0.0; nblk];
            self.factor_corr = vec![0; nblk];
        } else if !factored {
            self.factors.clear();
            self.factor_scales.clear();
            self.factor_d.clear();
            self.factor_corr.clear();
        }
        // Under AVX-512 too: compiled for AVX-512, the i-quants' table
        // loads became gathers, up to 2.2x slower (docs/BENCHMARKS.md).
        #[cfg(target_arch = "x86_64")]
        if Isa::Avx2.admitted_under(isa) {
            // SAFETY: AVX2 checked just above.
            return unsafe { self.fill_avx2(blocks, n) };
        }
        self.fill_any(blocks, n)
    }

    /// [`Unpacked::fill`] compiled for AVX2: the same code, which the
    /// compiler vectorizes with 32-byte registers (3-4x faster than with SSE2).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn fill_avx2<B: PanelFormat>(&mut self, blocks: impl Iterator<Item = B>, n: usize) {
        self.fill_any(blocks, n)
    }

    #[inline(always)]
    fn fill_any<B: PanelFormat>(&mut self, blocks: impl Iterator<Item = B>, n: usize) {
        let Shape { block, sub, .. } = self.shape;
        let pairs = self.shape.pairs();
        let mut min_scale = 0f32;
        for (i, ((b, codes), scale)) in blocks
            .zip(self.codes.chunks_exact_mut(block))
            .zip(self.scale.chunks_exact_mut(block / sub))
            .enumerate()
        {
            let unpacked = (codes, scale, &mut self.block_mins[..], &mut min_scale);
            if self.factors.is_empty() {
                let (codes, scale, mins, min_scale) = unpacked;
                b.unpack(codes, scale, mins, min_scale);
            } else {
                self.factor_d[i] = b.unpack_factored(
                    unpacked,
                    &mut self.factors[i * block..][..block],
                    &mut self.factor_scales[i * block / FACTOR_SUB..][..block / FACTOR_SUB],
                );
            }
            if pairs > 0 {
                self.min_scale[i] = min_scale;
                for (p, m) in self.mins[i * pairs..][..pairs]
                    .iter_mut()
                    .zip(self.block_mins.chunks_exact(2))
                {
                    *p = (m[0] as u16 as i32) | (m[1] as i32) << 16;
                }
            }
        }
        self.finish_any(n)
    }

    /// The corrections of the first `n` rows, and zeros past them.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code, unused_variables))]
    fn finish(&mut self, n: usize, isa: Isa) {
        #[cfg(target_arch = "x86_64")]
        if Isa::Avx2.admitted_under(isa) {
            #[target_feature(enable = "avx2")]
            unsafe fn avx2(u: &mut Unpacked, n: usize) {
                u.finish_any(n)
            }
            // SAFETY: AVX2 checked just above.
            return unsafe { avx2(self, n) };
        }
        self.finish_any(n)
    }

    #[inline(always)]
    fn finish_any(&mut self, n: usize) {
        let Shape { block, sub, .. } = self.shape;
        let (nsub, nblk, pairs) = (self.k / sub, self.k / block, self.shape.pairs());
        for (corr, codes) in self.corr[..n * nsub]
            .iter_mut()
            .zip(self.codes.chunks_exact(sub))
        {
            *corr = -128 * codes.iter().map(|&c| c as i32).sum::<i32>();
        }
        self.codes[n * self.k..].fill(0);
        if !self.factors.is_empty() {
            for ((corr, f), s) in self.factor_corr[..n * nblk]
                .iter_mut()
                .zip(self.factors.chunks_exact(block))
                .zip(self.factor_scales.chunks_exact(block / FACTOR_SUB))
            {
                *corr = -128
                    * f.chunks_exact(FACTOR_SUB)
                        .zip(s)
                        .map(|(f, &s)| s as i32 * f.iter().map(|&f| f as i32).sum::<i32>())
                        .sum::<i32>();
            }
            self.factors[n * self.k..].fill(0);
            self.factor_scales[n * self.k / FACTOR_SUB..].fill(0);
            self.factor_d[n * nblk..].fill(0.0);
            self.factor_corr[n * nblk..].fill(0);
        }
        self.scale[n * nsub..].fill(0.0);
        self.corr[n * nsub..].fill(0);
        self.mins[n * nblk * pairs..].fill(0);
        if pairs > 0 {
            self.min_scale[n * nblk..].fill(0.0);
        }
    }

    /// Factor, integer scale and block `d` of value `i` of row `r`, where
    /// the factored form was filled.
    pub fn factored(&self, r: usize, i: usize) -> Option<(i8, i16, f32)> {
        (!self.factors.is_empty()).then(|| {
            (
                self.factors[r * self.k + i],
                self.factor_scales[(r * self.k + i) / FACTOR_SUB],
                self.factor_d[(r * self.k + i) / self.shape.block],
            )
        })
    }

    /// The code of value `i` of row `r`.
    pub fn code(&self, r: usize, i: usize) -> i8 {
        self.codes[r * self.k + i]
    }

    /// Value `i` of row `r` as the unpacked form gives it.
    pub fn value(&self, r: usize, i: usize) -> f32 {
        let Shape {
            block,
            sub,
            min_sub,
            ..
        } = self.shape;
        let v = self.scale[r * (self.k / sub) + i / sub] * self.codes[r * self.k + i] as f32;
        if min_sub == 0 {
            return v;
        }
        let (b, j) = (r * (self.k / block) + i / block, (i % block) / min_sub);
        let pair = self.mins[b * self.shape.pairs() + j / 2];
        let min = if j % 2 == 0 {
            pair as i16
        } else {
            (pair >> 16) as i16
        };
        v + self.min_scale[b] * min as f32
    }
}

/// How a [`ColBlock`] stores its columns' codes, as the tile kernel that
/// reads it wants ([`crate::table::PanelKernel::layout`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColLayout {
    /// Values of a column stored together: 4, or 8 for the i8mm tile,
    /// whose `usmmla` takes two columns' eight values as one operand.
    pub group: usize,
    /// Whether each code is stored `+ 128` as a `u8` (the x86 tiles'
    /// `vpdpbusd` / `vpmaddubsw` and `usmmla` take unsigned activations),
    /// or as the signed code (`sdot` takes signed ones).
    pub biased: bool,
}

impl ColLayout {
    /// Four values together, stored `+ 128`: the x86 tiles and the scalar one.
    pub const BY4: ColLayout = ColLayout {
        group: 4,
        biased: true,
    };
}

/// [`COLS`] activation columns, interleaved for the tile kernels.
pub struct ColBlock {
    layout: ColLayout,
    /// `[k / group][COLS][group]` codes (`layout`), in 32-bit words.
    codes: Vec<u32>,
    /// `[k / (2 * min_sub)][COLS]`: the sums of the column's codes over two
    /// min sub-blocks, as an i16 pair (empty without mins).
    sums: Vec<i32>,
    /// `[k / block][COLS]`: the column's activation scale.
    scales: Vec<f32>,
}

/// Interleaves columns `c0 .. c0 + COLS` of `acts` (`n` columns of `k`
/// values, `Act` blocks) into a [`ColBlock`] for `shape`, four values of a
/// column together; columns at or past `n` are zero.
pub fn pack_columns<A: PanelAct>(
    acts: &[A],
    n: usize,
    k: usize,
    c0: usize,
    shape: Shape,
) -> ColBlock {
    pack_columns_by(acts, n, k, c0, shape, ColLayout::BY4)
}

/// [`pack_columns`] in `layout`, as the tile kernel that reads it wants
/// ([`crate::table::PanelKernel::layout`]).
pub fn pack_columns_by<A: PanelAct>(
    acts: &[A],
    n: usize,
    k: usize,
    c0: usize,
    shape: Shape,
    layout: ColLayout,
) -> ColBlock {
    let group = layout.group;
    assert!(group == 4 || group == 8, "a column group of 4 or 8 values");
    assert!(k % A::LEN == 0 && A::LEN % group == 0);
    let per_col = k / A::LEN;
    let npairs = if shape.min_sub == 0 {
        0
    } else {
        k / shape.min_sub / 2
    };
    let bias = if layout.biased { 0x8080_8080 } else { 0 };
    let mut b = ColBlock {
        layout,
        codes: vec![bias; k / 4 * COLS],
        sums: vec![0; npairs * COLS],
        scales: vec![0.0; per_col * COLS],
    };
    let pair = |lo: i32, hi: i32| (lo as u16 as i32) | hi << 16;
    for c in 0..COLS.min(n.saturating_sub(c0)) {
        let col = &acts[(c0 + c) * per_col..][..per_col];
        for (i, blk) in col.iter().enumerate() {
            b.scales[i * COLS + c] = blk.scale();
            let word = |q: &[i8]| {
                u32::from_le_bytes([q[0] as u8, q[1] as u8, q[2] as u8, q[3] as u8]) ^ bias
            };
            // Four values: one word a run, by the strided iterator (a loop
            // over runs of either length packed 1.3x slower on x86).
            if group == 4 {
                let words = b.codes[i * A::LEN / 4 * COLS + c..]
                    .iter_mut()
                    .step_by(COLS);
                for (w, q) in words.zip(blk.codes().chunks_exact(4)) {
                    *w = word(q);
                }
            } else {
                // Run j of the block (eight values, two words) at word
                // 2 * (run * COLS + c).
                let pairs = b.codes[(i * A::LEN / 8 * COLS + c) * 2..]
                    .chunks_exact_mut(2)
                    .step_by(COLS);
                for (w, q) in pairs.zip(blk.codes().chunks_exact(8)) {
                    w[0] = word(&q[..4]);
                    w[1] = word(&q[4..]);
                }
            }
            if npairs == 0 {
                continue;
            }
            let per_blk = A::LEN / shape.min_sub / 2;
            let sums = b.sums[i * per_blk * COLS + c..]
                .iter_mut()
                .step_by(COLS)
                .take(per_blk);
            match (blk.sums16(), shape.min_sub) {
                (Some(s16), 16) => sums
                    .zip(s16.chunks_exact(2))
                    .for_each(|(o, s)| *o = pair(s[0] as i32, s[1] as i32)),
                (Some(s16), 32) => sums.zip(s16.chunks_exact(4)).for_each(|(o, s)| {
                    *o = pair(s[0] as i32 + s[1] as i32, s[2] as i32 + s[3] as i32)
                }),
                _ => {
                    let sum = |q: &[i8]| q.iter().map(|&v| v as i32).sum::<i32>();
                    for (o, q) in sums.zip(blk.codes().chunks_exact(2 * shape.min_sub)) {
                        let (lo, hi) = q.split_at(shape.min_sub);
                        *o = pair(sum(lo), sum(hi));
                    }
                }
            }
        }
    }
    b
}

impl ColBlock {
    /// Code `i` of column `c`, as packed (the inverse of [`pack_columns_by`]).
    pub fn code(&self, c: usize, i: usize) -> i8 {
        (self.acode(c, i) ^ 0x80) as i8
    }
    /// Code `i` of column `c` + 128, whichever way it is stored.
    fn acode(&self, c: usize, i: usize) -> u8 {
        let g = self.layout.group;
        let stored = bytemuck::cast_slice::<u32, u8>(&self.codes)[(i / g * COLS + c) * g + i % g];
        if self.layout.biased {
            stored
        } else {
            stored ^ 0x80
        }
    }
    /// How the codes are stored.
    pub fn layout(&self) -> ColLayout {
        self.layout
    }
    /// The scale of activation block `b` of column `c`.
    pub fn scale(&self, c: usize, b: usize) -> f32 {
        self.scales[b * COLS + c]
    }
    /// The code sums of min sub-blocks `2p` and `2p + 1` of column `c`.
    pub fn sums(&self, c: usize, p: usize) -> (i16, i16) {
        let v = self.sums[p * COLS + c];
        (v as i16, (v >> 16) as i16)
    }
}

/// What one tile kernel call reads: [`ROWS`] unpacked weight rows against one
/// [`ColBlock`].
pub struct Tile<'a> {
    pub k: usize,
    pub shape: Shape,
    /// Row r's codes: `codes[r * k ..][..k]`.
    pub codes: &'a [i8],
    /// Row r's factored codes, where filled (else empty): `factors[r * k ..][..k]`,
    /// `factor_scales[r * k / 16 ..][..k / 16]`, `factor_d` and `factor_corr`
    /// `[r * k / block ..][..k / block]`.
    pub factors: &'a [i8],
    pub factor_scales: &'a [i16],
    pub factor_d: &'a [f32],
    pub factor_corr: &'a [i32],
    /// Row r's scales and corrections: `[r * k / sub ..][..k / sub]`.
    pub scale: &'a [f32],
    pub corr: &'a [i32],
    /// Row r's min pairs: `[r * k / block * pairs ..]`; min scales: `[r * k / block ..]`.
    pub mins: &'a [i32],
    pub min_scale: &'a [f32],
    pub cols: &'a ColBlock,
}

impl<'a> Tile<'a> {
    /// Rows `r0 .. r0 + ROWS` of `w` against `cols`.
    pub fn new(w: &'a Unpacked, r0: usize, cols: &'a ColBlock) -> Tile<'a> {
        let (k, shape) = (w.k, w.shape);
        let (nsub, nblk, pairs) = (k / shape.sub, k / shape.block, shape.pairs());
        assert!(r0 + ROWS <= w.rows);
        assert!(cols.codes.len() == k / 4 * COLS && cols.scales.len() == nblk * COLS);
        assert!(cols.sums.len() == nblk * pairs * COLS);
        let with_min = |s: &'a [f32]| {
            if pairs == 0 {
                &s[..0]
            } else {
                &s[r0 * nblk..(r0 + ROWS) * nblk]
            }
        };
        // This tile's rows of a per-row array (`per_row` entries a row),
        // or nothing where the array is empty (no factored form).
        fn rows_of<T>(v: &[T], per_row: usize, r0: usize) -> &[T] {
            if v.is_empty() {
                v
            } else {
                &v[r0 * per_row..(r0 + ROWS) * per_row]
            }
        }
        Tile {
            k,
            shape,
            codes: &w.codes[r0 * k..(r0 + ROWS) * k],
            factors: rows_of(&w.factors, k, r0),
            factor_scales: rows_of(&w.factor_scales, k / FACTOR_SUB, r0),
            factor_d: rows_of(&w.factor_d, nblk, r0),
            factor_corr: rows_of(&w.factor_corr, nblk, r0),
            scale: &w.scale[r0 * nsub..(r0 + ROWS) * nsub],
            corr: &w.corr[r0 * nsub..(r0 + ROWS) * nsub],
            mins: &w.mins[r0 * nblk * pairs..(r0 + ROWS) * nblk * pairs],
            min_scale: with_min(&w.min_scale),
            cols,
        }
    }
    pub fn acodes(&self) -> &[u8] {
        bytemuck::cast_slice(&self.cols.codes)
    }
    pub fn asums(&self) -> &[i32] {
        &self.cols.sums
    }
    pub fn ascales(&self) -> &[f32] {
        &self.cols.scales
    }
}

/// The scalar reference of the tile kernels: the same integer sums and the
/// same fused multiply-adds in the same order, so every SIMD tile kernel
/// must equal it bit for bit. Per block of each column: per `sub` values the
/// exact `sum(code * a)` times its scale (where the tile has the factored
/// form, the block's exact `sum(scale * factor * a)` times its `d`); the exact `sum(min * sum(a))` times
/// the block's min scale; the total times the activation scale.
///
/// # Safety
/// None (safe code; `unsafe fn` to fit [`TileFn`]).
pub unsafe fn gemm_i8_q8x32_8x32(t: &Tile, out: &mut [f32; ROWS * COLS]) {
    let Shape { block, sub, .. } = t.shape;
    let (nsub, nblk, pairs) = (t.k / sub, t.k / block, t.shape.pairs());
    let lo_hi = |v: i32| (v as i16 as i32, v >> 16);
    let a = |i: usize, c: usize| t.cols.acode(c, i) as i32;
    for r in 0..ROWS {
        for c in 0..COLS {
            let mut acc = 0f32;
            for b in 0..nblk {
                let mut sb = 0f32;
                if t.factors.is_empty() {
                    for g in b * block / sub..(b + 1) * block / sub {
                        let mut isum = t.corr[r * nsub + g];
                        for i in g * sub..(g + 1) * sub {
                            isum += t.codes[r * t.k + i] as i32 * a(i, c);
                        }
                        sb = (isum as f32).mul_add(t.scale[r * nsub + g], sb);
                    }
                } else {
                    // The factored form: the whole block's sum in integers.
                    let mut isum = t.factor_corr[r * nblk + b];
                    for j in b * block / FACTOR_SUB..(b + 1) * block / FACTOR_SUB {
                        let part: i32 = (j * FACTOR_SUB..(j + 1) * FACTOR_SUB)
                            .map(|i| t.factors[r * t.k + i] as i32 * a(i, c))
                            .sum();
                        isum += t.factor_scales[r * t.k / FACTOR_SUB + j] as i32 * part;
                    }
                    sb = (isum as f32).mul_add(t.factor_d[r * nblk + b], sb);
                }
                if pairs > 0 {
                    let mut imin = 0i32;
                    for p in b * pairs..(b + 1) * pairs {
                        let ((m0, m1), (s0, s1)) = (
                            lo_hi(t.mins[r * nblk * pairs + p]),
                            lo_hi(t.asums()[p * COLS + c]),
                        );
                        imin += m0 * s0 + m1 * s1;
                    }
                    sb = (imin as f32).mul_add(t.min_scale[r * nblk + b], sb);
                }
                acc = sb.mul_add(t.ascales()[b * COLS + c], acc);
            }
            out[r * COLS + c] = acc;
        }
    }
}
