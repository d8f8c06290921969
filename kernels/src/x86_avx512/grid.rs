//! The grid formats (IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, TQ1_0, TQ2_0)
//! x Q8_K with AVX-512 VNNI, dequantize-and-dot: one weight row against up
//! to [`COLS`] activation columns. Each block is unpacked once (magnitudes,
//! a sign mask, a small integer scale per 16 values and one float factor,
//! as [`GridBlock::int_form`] defines them) and reused for every column.
//!
//! The codes come straight into vectors, 64 at a time. The i-quants take
//! their grid points by byte-table lookups
//! (`vpermi2b`, VBMI) instead of gathers: every grid point is stored as
//! its values' level codes (2 bits each for the three levels of the IQ2
//! grids, 3 bits for the eight of the IQ3 grids) in two byte tables
//! ([`Coded`], derived at compile time from the vendored grids). A block's
//! indices look up both tables at once (64 per lookup, 256-entry tables as
//! two `vpermi2b` and a blend on the index's top bit, 512 and 1024 entries
//! by blends of those on bits 8 and 9); per 64 values, one
//! `vpermi2b` puts each point's code in its lanes, `vpmultishiftqb` moves
//! each value's code to the bottom of its byte and `vpermb` maps the code to
//! its level.
//!
//! Signs are a 64-bit mask per 64 values (`vpsubb` under it from zero); the
//! 7-bit sign indices of IQ2_XXS, IQ2_XS and IQ3_XXS are completed to ggml's
//! sign bytes (`ksigns_iq2xs[i]`, `i | parity(i) << 7`) by one `vpermi2b`
//! into that 128-byte table.
//!
//! The ternary formats hand over their fields as they are (`code + 1`,
//! 0..2, no signs) and subtract the activations' sum once per block: TQ2_0
//! by four shifts of one load, its activations loaded in the fields' order
//! ([`Unpack::y`]; every scale is 1, so any order will do); TQ1_0 by two
//! byte-table lookups of its base-3 bytes (digits 0..3 as 2-bit fields,
//! and digit 4), then shifts and one `vpermi2b` per 64 values into
//! ggml's value order.
//!
//! One column (decode): the signs on the activations (`vpsubb` under the
//! mask), the magnitudes as `vpdpbusd`'s unsigned operand, each lane's dot
//! times its scale by one `vpdpwssd` (a lane's dot is below 2^15). Several
//! columns: per 64 values, the signed codes `+ 128` (`^ 0x80`) as the
//! unsigned operand of `vpdpbusd`, `vpmulld` by the scales of their 16-value
//! groups; the excess `128 * sum(scale * sum16(y))` comes off
//! once per block from the activations' 16-value sums. Exact integer sums,
//! one float scaling per block and column.

use crate::formats::grids::{
    IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID, IQ3S_GRID, IQ3XXS_GRID, KSIGNS_IQ2XS,
};
use crate::formats::{
    BlockIq2S, BlockIq2Xs, BlockIq2Xxs, BlockIq3S, BlockIq3Xxs, BlockQ8K, BlockTq1_0, BlockTq2_0,
    GridBlock,
};
use std::arch::x86_64::*;

/// Weight rows per call.
pub const ROWS: usize = 1;
/// Activation columns per call.
pub const COLS: usize = 8;

macro_rules! grid_kernels {
    ($($name:ident: $block:ty),* $(,)?) => {$(
        row_kernel!(
            $name,
            "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c",
            $block,
            BlockQ8K,
            cols<$block>,
            [1, 2, 3, 4, 5, 6, 7, 8]
        );
    )*};
}
grid_kernels!(
    gemv_iq2_xxs_q8_k_1x8: BlockIq2Xxs,
    gemv_iq2_xs_q8_k_1x8: BlockIq2Xs,
    gemv_iq2_s_q8_k_1x8: BlockIq2S,
    gemv_iq3_xxs_q8_k_1x8: BlockIq3Xxs,
    gemv_iq3_s_q8_k_1x8: BlockIq3S,
    gemv_tq1_0_q8_k_1x8: BlockTq1_0,
    gemv_tq2_0_q8_k_1x8: BlockTq2_0,
);

/// A grid format's block straight into four vectors of 64 codes.
trait Unpack: GridBlock {
    /// The unpacked magnitudes are `|code| + BIAS` (the ternary formats: the
    /// digit or 2-bit field itself, `code + 1`, with no signs).
    const BIAS: i8 = 0;
    /// Every scale is 1 (the ternary formats): the values may come in any
    /// order that [`Unpack::y`] follows, and need no scale multiply.
    const ONE_SCALE: bool = false;

    /// The activations of `w[p]`'s 64 values, in their order.
    ///
    /// # Safety
    /// The CPU must have the kernels' features.
    #[inline(always)]
    unsafe fn y(a: &BlockQ8K, p: usize) -> __m512i {
        // SAFETY: qs has 256 bytes; 64p + 64 <= 256.
        unsafe { _mm512_loadu_si512(a.qs.as_ptr().add(64 * p).cast()) }
    }

    /// Writes the codes' magnitudes into `w` and their signs into `neg`
    /// (bit `j` of `neg[p]` set: value `64p + j` is negative); returns the
    /// factor and the 16 scales (as [`GridBlock::int_form`]). A format
    /// implements this or, where [`Unpack::PAIRED`], [`Unpack::codes`] and
    /// [`Unpack::unpack_half`], which this then calls.
    ///
    /// # Safety
    /// The CPU must have the kernels' features.
    #[inline(always)]
    unsafe fn unpack(&self, w: &mut [__m512i; 4], neg: &mut [u64; 4]) -> (f32, __m256i) {
        // SAFETY: the caller's features.
        unsafe { self.unpack_half(&self.codes(self), 0, w, neg) }
    }

    /// The lookup fills half an index vector (32 grid points a block): the
    /// kernels look up a block's points and the next one's at once
    /// ([`Unpack::codes`]) and unpack each from its half ([`Unpack::unpack_half`]).
    const PAIRED: bool = false;

    /// The codes (`lo`, `hi`) of this block's grid points in lanes `0..32`
    /// and `next`'s in lanes `32..64` (where [`Unpack::PAIRED`]).
    ///
    /// # Safety
    /// The CPU must have the kernels' features.
    #[inline(always)]
    unsafe fn codes(&self, _next: &Self) -> [__m512i; 2] {
        // SAFETY: the caller's features.
        unsafe { [_mm512_setzero_si512(); 2] }
    }

    /// [`Unpack::unpack`] from half `half` of [`Unpack::codes`] (where
    /// [`Unpack::PAIRED`]; else the codes are not read).
    ///
    /// # Safety
    /// The CPU must have the kernels' features.
    #[inline(always)]
    unsafe fn unpack_half(
        &self,
        _codes: &[__m512i; 2],
        _half: usize,
        w: &mut [__m512i; 4],
        neg: &mut [u64; 4],
    ) -> (f32, __m256i) {
        // SAFETY: the caller's features.
        unsafe { self.unpack(w, neg) }
    }
}

/// The base-3 digits of a TQ1_0 byte as ggml reads them
/// ([`crate::formats::tq1_0::digit`] + 1): digits 0..4 two bits each, or digit 4.
const fn tq1_digits(four: bool) -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut q = 0;
    while q < 256 {
        let mut n = 0;
        while n < 5 {
            let digit = (crate::formats::tq1_0::digit(q as u8, n) + 1) as u8;
            if four && n < 4 {
                t[q] |= digit << (2 * n);
            } else if !four && n == 4 {
                t[q] = digit;
            }
            n += 1;
        }
        q += 1;
    }
    t
}
static TQ1_FOUR: [u8; 256] = tq1_digits(true);
static TQ1_FIFTH: [u8; 256] = tq1_digits(false);

/// TQ1_0's byte placement and shifts for the values `128..256` (vectors 2
/// and 3) from the four-digit codes (`vpermi2b` index < 64) and the fifth
/// digits (index 64..128): value `128 + i` is digit 4 of `qs[i]` (i < 32),
/// digit `n` of `qs[32 + m]` (`160 + 16n + m`), digit `n` of `qh[j]`
/// (`240 + 4n + j`). Returns the byte index and the digit's shift.
const fn tq1_place(v: usize) -> (u8, u16) {
    match v {
        128..160 => (64 + (v - 128) as u8, 0),
        224..240 => (64 + (32 + v - 224) as u8, 0),
        160..224 => ((32 + (v - 160) % 16) as u8, 2 * ((v - 160) / 16) as u16),
        _ => ((48 + (v - 240) % 4) as u8, 2 * ((v - 240) / 4) as u16),
    }
}
/// The [`tq1_place`] index bytes and word shifts of vector `2 + h`.
const fn tq1_tables(h: usize) -> ([u8; 64], [u16; 32]) {
    let (mut idx, mut sh) = ([0u8; 64], [0u16; 32]);
    let mut l = 0;
    while l < 64 {
        let (i, s) = tq1_place(128 + 64 * h + l);
        idx[l] = i;
        // Bytes of one word share its shift: tq1_place keeps them equal.
        sh[l / 2] = s;
        l += 1;
    }
    (idx, sh)
}
static TQ1_HIGH: [([u8; 64], [u16; 32]); 2] = [tq1_tables(0), tq1_tables(1)];
/// The word shifts of vectors 0 and 1 (digits 0, 1 and 2, 3 of `qs[0..32]`).
static TQ1_LOW: [[u16; 32]; 2] = {
    let mut t = [[0u16; 32]; 2];
    let mut k = 0;
    while k < 32 {
        t[0][k] = if k < 16 { 0 } else { 2 };
        t[1][k] = if k < 16 { 4 } else { 6 };
        k += 1;
    }
    t
};

impl Unpack for BlockTq1_0 {
    const BIAS: i8 = 1;
    const ONE_SCALE: bool = true;

    #[inline(always)]
    unsafe fn unpack(&self, w: &mut [__m512i; 4], neg: &mut [u64; 4]) -> (f32, __m256i) {
        // SAFETY: qs and qh are 52 contiguous bytes (masked-off bytes are not
        // read); every table is 64 bytes; the features are the caller's.
        unsafe {
            let x = _mm512_maskz_loadu_epi8((1 << 52) - 1, self.qs.as_ptr().cast());
            let top = _mm512_movepi8_mask(x);
            // Byte i: digits 0..4 of byte i (2 bits each), and its digit 4.
            let four = lookup256(&TQ1_FOUR, x, top);
            let fifth = lookup256(&TQ1_FIFTH, x, top);
            let three = _mm512_set1_epi8(3);
            let load = |t: &[u16; 32]| _mm512_loadu_si512(t.as_ptr().cast());
            // Values 0..128: digits 0..4 of qs[0..32], 32 at a time.
            let dup = _mm512_shuffle_i64x2::<0b01_00_01_00>(four, four);
            w[0] = _mm512_and_si512(_mm512_srlv_epi16(dup, load(&TQ1_LOW[0])), three);
            w[1] = _mm512_and_si512(_mm512_srlv_epi16(dup, load(&TQ1_LOW[1])), three);
            for h in 0..2 {
                let (idx, sh) = &TQ1_HIGH[h];
                let placed =
                    _mm512_permutex2var_epi8(four, _mm512_loadu_si512(idx.as_ptr().cast()), fifth);
                w[2 + h] = _mm512_and_si512(_mm512_srlv_epi16(placed, load(sh)), three);
            }
            *neg = [0; 4];
            (self.d.to_f32(), _mm256_set1_epi16(1))
        }
    }
}

impl Unpack for BlockTq2_0 {
    const BIAS: i8 = 1;
    const ONE_SCALE: bool = true;

    #[inline(always)]
    unsafe fn y(a: &BlockQ8K, p: usize) -> __m512i {
        // SAFETY: qs has 256 bytes; 128 + 32p + 32 <= 256.
        unsafe {
            let lo = _mm256_loadu_si256(a.qs.as_ptr().add(32 * p).cast());
            let hi = _mm256_loadu_si256(a.qs.as_ptr().add(128 + 32 * p).cast());
            _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
        }
    }

    #[inline(always)]
    unsafe fn unpack(&self, w: &mut [__m512i; 4], neg: &mut [u64; 4]) -> (f32, __m256i) {
        // SAFETY (the block): the features are the caller's; qs has 64 bytes.
        unsafe {
            // Values 128h + 32l + m: bits 2l of byte 32h + m; w[l] holds
            // values 32l.. (h = 0), then 128 + 32l.. (h = 1), as `y` loads them.
            let x = _mm512_loadu_si512(self.qs.as_ptr().cast());
            let three = _mm512_set1_epi8(3);
            w[0] = _mm512_and_si512(x, three);
            w[1] = _mm512_and_si512(_mm512_srli_epi16::<2>(x), three);
            w[2] = _mm512_and_si512(_mm512_srli_epi16::<4>(x), three);
            w[3] = _mm512_and_si512(_mm512_srli_epi16::<6>(x), three);
            *neg = [0; 4];
            (self.d.to_f32(), _mm256_set1_epi16(1))
        }
    }
}

/// `2 * s + 1` for 16 nibbles `s` in u8 lanes, as i16 lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
fn odd(s: __m128i) -> __m256i {
    _mm256_or_si256(
        _mm256_slli_epi16::<1>(_mm256_cvtepu8_epi16(s)),
        _mm256_set1_epi16(1),
    )
}

/// The 16 scales from 8 bytes of two 4-bit scales (`2 * s + 1`), low nibble first.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
fn nibble_scales(b: &[u8; 8]) -> __m256i {
    // SAFETY: b is 8 bytes.
    let v = unsafe { _mm_loadl_epi64(b.as_ptr().cast()) };
    let m = _mm_set1_epi8(0x0F);
    odd(_mm_unpacklo_epi8(
        _mm_and_si128(v, m),
        _mm_and_si128(_mm_srli_epi16::<4>(v), m),
    ))
}

/// The 16 scales from one 4-bit scale per 32 values (`2 * s + 1`, each twice).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
fn scales32(s: [u8; 8]) -> __m256i {
    let v = _mm_cvtsi64_si128(i64::from_le_bytes(s));
    odd(_mm_unpacklo_epi8(v, v))
}

/// A grid's points as level codes: value `j` of point `i` is
/// `levels[(code >> BITS * j) & (2^BITS - 1)]`, `code = lo[i] | hi[i] << 8`;
/// `levels` repeats the grid's distinct values every `2^BITS` bytes, so
/// `vpermb` (which reads six index bits) needs no mask.
#[repr(C, align(64))]
struct Coded<const E: usize> {
    lo: [u8; E],
    hi: [u8; E],
    levels: [u8; 64],
}

/// The codes of a grid of `E` points of `per` byte values (the low bytes
/// of each entry), `bits` bits a code. Fails to compile if the grid has more
/// than `2^bits` distinct values or a code would not fit 16 bits.
const fn coded<const E: usize>(grid: &[u64; E], per: usize, bits: u32) -> Coded<E> {
    assert!(per * bits as usize <= 16);
    let (mut lv, mut n) = ([0u8; 8], 0);
    let mut i = 0;
    while i < E {
        let mut j = 0;
        while j < per {
            let b = (grid[i] >> (8 * j)) as u8;
            let mut k = 0;
            while k < n && lv[k] != b {
                k += 1;
            }
            if k == n {
                assert!(n < 1 << bits);
                lv[n] = b;
                n += 1;
            }
            j += 1;
        }
        i += 1;
    }
    let mut c = Coded {
        lo: [0; E],
        hi: [0; E],
        levels: [0; 64],
    };
    let mut i = 0;
    while i < E {
        let (mut code, mut j) = (0u16, 0);
        while j < per {
            let b = (grid[i] >> (8 * j)) as u8;
            let mut k = 0;
            while lv[k] != b {
                k += 1;
            }
            code |= (k as u16) << (bits as usize * j);
            j += 1;
        }
        (c.lo[i], c.hi[i]) = (code as u8, (code >> 8) as u8);
        i += 1;
    }
    let mut t = 0;
    while t < 64 {
        c.levels[t] = lv[t & ((1 << bits) - 1)];
        t += 1;
    }
    c
}

const fn widen<const E: usize>(g: &[u32; E]) -> [u64; E] {
    let mut w = [0u64; E];
    let mut i = 0;
    while i < E {
        w[i] = g[i] as u64;
        i += 1;
    }
    w
}

static IQ2XXS_CODED: Coded<256> = coded(&IQ2XXS_GRID, 8, 2);
static IQ2XS_CODED: Coded<512> = coded(&IQ2XS_GRID, 8, 2);
static IQ2S_CODED: Coded<1024> = coded(&IQ2S_GRID, 8, 2);
static IQ3XXS_CODED: Coded<256> = coded(&widen(&IQ3XXS_GRID), 4, 3);
static IQ3S_CODED: Coded<512> = coded(&widen(&IQ3S_GRID), 4, 3);

/// The `vpermi2b` controls that put, for the values `64p..64p + 64`, the
/// code of their group `g`'s point (`lo` byte, then `hi` byte from the second
/// table) at the start of the group's lanes (`n` bytes a group, 8 or 4). The
/// point's index is byte `offset + step * p + g` of the indices (`offset`
/// 32: the second block of a pair, [`Unpack::PAIRED`]).
const fn spread(n: usize, step: usize, offset: usize) -> [[u8; 64]; 4] {
    let mut c = [[0u8; 64]; 4];
    let mut p = 0;
    while p < 4 {
        let mut b = 0;
        while b < 64 {
            let g = b / n;
            let at = (offset + step * p + g) as u8;
            c[p][b] = if b % 2 == 0 { at } else { 64 + at };
            b += 1;
        }
        p += 1;
    }
    c
}

/// The 2-bit i-quants (IQ2_XXS's index bytes gathered by [`IQ2XXS_INDICES`],
/// IQ2_XS's u16 lanes taken to bytes, IQ2_S's bytes): indices in order, the
/// first block of a pair, then the second.
static IQ2XS_SPREAD: [[[u8; 64]; 4]; 2] = [spread(8, 8, 0), spread(8, 8, 32)];
/// IQ3_XXS and IQ3_S: one index byte per 4 values, in order.
static IQ3_SPREAD: [[u8; 64]; 4] = spread(4, 16, 0);

/// `vpmultishiftqb` controls: byte `j` of an 8-value point's lanes from
/// bit `2j` of its code; of two 4-value points per qword, from bits `3j`
/// and `32 + 3j`.
const SHIFT_2BIT: i64 = i64::from_le_bytes([0, 2, 4, 6, 8, 10, 12, 14]);
const SHIFT_3BIT: i64 = i64::from_le_bytes([0, 3, 6, 9, 32, 35, 38, 41]);

/// `t[idx]` for the 64 byte indices `idx` into a 256-byte table; `top` is
/// their bit 7.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
fn lookup256(t: &[u8], idx: __m512i, top: __mmask64) -> __m512i {
    assert!(t.len() >= 256);
    // SAFETY: t has 256 bytes; 64k + 64 <= 256.
    let q = |k: usize| unsafe { _mm512_loadu_si512(t.as_ptr().add(64 * k).cast()) };
    _mm512_mask_blend_epi8(
        top,
        _mm512_permutex2var_epi8(q(0), idx, q(1)),
        _mm512_permutex2var_epi8(q(2), idx, q(3)),
    )
}

/// `t[idx | bit8 << 8]` for a 512-byte table; `top` is `idx`'s bit 7.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
fn lookup512(t: &[u8; 512], idx: __m512i, top: __mmask64, bit8: __mmask64) -> __m512i {
    _mm512_mask_blend_epi8(
        bit8,
        lookup256(&t[..256], idx, top),
        lookup256(&t[256..], idx, top),
    )
}

/// The levels of 64 values from the codes `lo`/`hi` of their points:
/// `spread` places each point's code, `shift` each value's bits.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
fn expand(lo: __m512i, hi: __m512i, spread: &[u8; 64], shift: i64, levels: &[u8; 64]) -> __m512i {
    // SAFETY: both are 64 bytes.
    let (spread, levels) = unsafe {
        (
            _mm512_loadu_si512(spread.as_ptr().cast()),
            _mm512_loadu_si512(levels.as_ptr().cast()),
        )
    };
    let codes = _mm512_permutex2var_epi8(lo, spread, hi);
    _mm512_permutexvar_epi8(
        _mm512_multishift_epi64_epi8(_mm512_set1_epi64(shift), codes),
        levels,
    )
}

/// The 2-bit i-quants' levels for a block's 256 values from half `half` of
/// a pair's codes ([`Unpack::codes`]).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
fn expand_2bit(codes: &[__m512i; 2], half: usize, levels: &[u8; 64], w: &mut [__m512i; 4]) {
    for (p, w) in w.iter_mut().enumerate() {
        *w = expand(
            codes[0],
            codes[1],
            &IQ2XS_SPREAD[half][p],
            SHIFT_2BIT,
            levels,
        );
    }
}

/// ggml's sign bytes (`ksigns_iq2xs`) of the 7-bit indices in the low
/// bits of each byte (bit 7 ignored).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
fn sign_bytes(fields: __m512i) -> [u64; 8] {
    // SAFETY: KSIGNS_IQ2XS has 128 bytes.
    let (k0, k1) = unsafe {
        (
            _mm512_loadu_si512(KSIGNS_IQ2XS.as_ptr().cast()),
            _mm512_loadu_si512(KSIGNS_IQ2XS.as_ptr().add(64).cast()),
        )
    };
    let mut out = [0u64; 8];
    // SAFETY: out is 64 bytes.
    unsafe {
        _mm512_storeu_si512(
            out.as_mut_ptr().cast(),
            _mm512_permutex2var_epi8(k0, fields, k1),
        )
    };
    out
}

/// The 16 scales (`2 * s + 1`, each twice) from one scale `s` per 32 values in 8 i16 lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
fn scales32_lanes(s: __m128i) -> __m256i {
    let d = _mm_or_si128(_mm_slli_epi16::<1>(s), _mm_set1_epi16(1));
    _mm256_set_m128i(_mm_unpackhi_epi16(d, d), _mm_unpacklo_epi16(d, d))
}

/// `g` with the values whose bit is set in `signs` negated.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn negate(g: __m512i, signs: u64) -> __m512i {
    _mm512_mask_sub_epi8(g, signs, _mm512_setzero_si512(), g)
}

/// IQ2_XXS: the index bytes of two blocks, in order (a block's qword `ib`
/// holds sub-block `ib`'s four index bytes, then its aux).
static IQ2XXS_INDICES: [u8; 64] = {
    let mut c = [0u8; 64];
    let mut j = 0;
    while j < 64 {
        let g = j % 32;
        c[j] = (64 * (j / 32) + 8 * (g / 4) + g % 4) as u8;
        j += 1;
    }
    c
};

impl Unpack for BlockIq2Xxs {
    const PAIRED: bool = true;
    #[inline(always)]
    unsafe fn codes(&self, next: &Self) -> [__m512i; 2] {
        // SAFETY: qs is 64 bytes, IQ2XXS_INDICES 64; the features are the caller's.
        unsafe {
            let idx = _mm512_permutex2var_epi8(
                _mm512_loadu_si512(self.qs.as_ptr().cast()),
                _mm512_loadu_si512(IQ2XXS_INDICES.as_ptr().cast()),
                _mm512_loadu_si512(next.qs.as_ptr().cast()),
            );
            let top = _mm512_movepi8_mask(idx);
            let t = &IQ2XXS_CODED;
            [lookup256(&t.lo, idx, top), lookup256(&t.hi, idx, top)]
        }
    }
    #[inline(always)]
    unsafe fn unpack_half(
        &self,
        codes: &[__m512i; 2],
        half: usize,
        w: &mut [__m512i; 4],
        neg: &mut [u64; 4],
    ) -> (f32, __m256i) {
        // SAFETY: qs is 64 bytes; the features are the caller's.
        unsafe {
            // Qword ib: sub-block ib's four index bytes, then its aux (bits 32..64).
            let v = _mm512_loadu_si512(self.qs.as_ptr().cast());
            // Byte l of qword ib: aux >> 7l; sub-blocks 2p and 2p + 1 make the mask of p.
            let fields = _mm512_multishift_epi64_epi8(
                _mm512_set1_epi64(i64::from_le_bytes([32, 39, 46, 53, 0, 0, 0, 0])),
                v,
            );
            let signs = sign_bytes(fields);
            expand_2bit(codes, half, &IQ2XXS_CODED.levels, w);
            for (p, neg) in neg.iter_mut().enumerate() {
                *neg = signs[2 * p] as u32 as u64 | signs[2 * p + 1] << 32;
            }
            let s = _mm512_cvtepi64_epi16(_mm512_srli_epi64::<60>(v));
            (self.d.to_f32() * 0.125, scales32_lanes(s))
        }
    }
}

impl Unpack for BlockIq2Xs {
    const PAIRED: bool = true;
    #[inline(always)]
    unsafe fn codes(&self, next: &Self) -> [__m512i; 2] {
        // SAFETY: qs is 32 u16 = 64 bytes; the features are the caller's.
        unsafe {
            // u16 lane i: index (9 bits), then its 7-bit sign index.
            let q0 = _mm512_loadu_si512(self.qs.as_ptr().cast());
            let q1 = _mm512_loadu_si512(next.qs.as_ptr().cast());
            let idx = _mm512_inserti64x4::<1>(
                _mm512_castsi256_si512(_mm512_cvtepi16_epi8(q0)),
                _mm512_cvtepi16_epi8(q1),
            );
            let top = _mm512_movepi8_mask(idx);
            let bit8 = _mm512_test_epi16_mask(q0, _mm512_set1_epi16(0x100)) as u64
                | (_mm512_test_epi16_mask(q1, _mm512_set1_epi16(0x100)) as u64) << 32;
            let t = &IQ2XS_CODED;
            [
                lookup512(&t.lo, idx, top, bit8),
                lookup512(&t.hi, idx, top, bit8),
            ]
        }
    }
    #[inline(always)]
    unsafe fn unpack_half(
        &self,
        codes: &[__m512i; 2],
        half: usize,
        w: &mut [__m512i; 4],
        neg: &mut [u64; 4],
    ) -> (f32, __m256i) {
        // SAFETY: qs is 32 u16 = 64 bytes; the features are the caller's.
        unsafe {
            let q = _mm512_loadu_si512(self.qs.as_ptr().cast());
            let fields = _mm512_castsi256_si512(_mm512_cvtepi16_epi8(_mm512_srli_epi16::<9>(q)));
            let signs = sign_bytes(fields);
            expand_2bit(codes, half, &IQ2XS_CODED.levels, w);
            neg.copy_from_slice(&signs[..4]);
            (self.d.to_f32() * 0.125, nibble_scales(&self.scales))
        }
    }
}

/// Bits `0, 2, 4, ..` of `x` packed to bits `0, 1, 2, ..`.
#[inline(always)]
fn even_bits(x: u64) -> u64 {
    let mut x = x & 0x5555_5555_5555_5555;
    x = (x | x >> 1) & 0x3333_3333_3333_3333;
    x = (x | x >> 2) & 0x0F0F_0F0F_0F0F_0F0F;
    x = (x | x >> 4) & 0x00FF_00FF_00FF_00FF;
    x = (x | x >> 8) & 0x0000_FFFF_0000_FFFF;
    (x | x >> 16) & 0xFFFF_FFFF
}

impl Unpack for BlockIq2S {
    const PAIRED: bool = true;
    #[inline(always)]
    unsafe fn codes(&self, next: &Self) -> [__m512i; 2] {
        // Index g (g < 32): qs[g] | (qh >> 2g & 3) << 8.
        let (qh0, qh1) = (u64::from_le_bytes(self.qh), u64::from_le_bytes(next.qh));
        let bit8 = even_bits(qh0) | even_bits(qh1) << 32;
        let bit9 = even_bits(qh0 >> 1) | even_bits(qh1 >> 1) << 32;
        // SAFETY: qs has 64 bytes; the features are the caller's.
        unsafe {
            let idx = _mm512_inserti64x4::<1>(
                _mm512_castsi256_si512(_mm256_loadu_si256(self.qs.as_ptr().cast())),
                _mm256_loadu_si256(next.qs.as_ptr().cast()),
            );
            let top = _mm512_movepi8_mask(idx);
            let look = |t: &[u8; 1024]| {
                let half = |h: usize| -> &[u8; 512] { t[512 * h..][..512].try_into().unwrap() };
                _mm512_mask_blend_epi8(
                    bit9,
                    lookup512(half(0), idx, top, bit8),
                    lookup512(half(1), idx, top, bit8),
                )
            };
            [look(&IQ2S_CODED.lo), look(&IQ2S_CODED.hi)]
        }
    }
    #[inline(always)]
    unsafe fn unpack_half(
        &self,
        codes: &[__m512i; 2],
        half: usize,
        w: &mut [__m512i; 4],
        neg: &mut [u64; 4],
    ) -> (f32, __m256i) {
        let signs = |p: usize| u64::from_le_bytes(self.qs[32 + 8 * p..][..8].try_into().unwrap());
        *neg = std::array::from_fn(signs);
        // SAFETY: the features are the caller's.
        unsafe {
            expand_2bit(codes, half, &IQ2S_CODED.levels, w);
            (self.d.to_f32() * 0.125, nibble_scales(&self.scales))
        }
    }
}

impl Unpack for BlockIq3Xxs {
    #[inline(always)]
    unsafe fn unpack(&self, w: &mut [__m512i; 4], neg: &mut [u64; 4]) -> (f32, __m256i) {
        // SAFETY: qs is 96 bytes: 64 indices, then 8 u32 aux; the features are the caller's.
        unsafe {
            let v = _mm512_loadu_si512(self.qs.as_ptr().cast());
            let aux = _mm256_loadu_si256(self.qs.as_ptr().add(64).cast());
            let t = &IQ3XXS_CODED;
            let top = _mm512_movepi8_mask(v);
            let (lo, hi) = (lookup256(&t.lo, v, top), lookup256(&t.hi, v, top));
            // Byte 4ib + l: aux[ib] >> 7l (two aux a qword), in order.
            let fields = _mm512_multishift_epi64_epi8(
                _mm512_set1_epi64(i64::from_le_bytes([0, 7, 14, 21, 32, 39, 46, 53])),
                _mm512_castsi256_si512(aux),
            );
            let signs = sign_bytes(fields);
            for p in 0..4 {
                let g = expand(lo, hi, &IQ3_SPREAD[p], SHIFT_3BIT, &t.levels);
                (w[p], neg[p]) = (g, signs[p]);
            }
            let s = _mm256_cvtepi32_epi16(_mm256_srli_epi32::<28>(aux));
            (self.d.to_f32() * 0.25, scales32_lanes(s))
        }
    }
}

impl Unpack for BlockIq3S {
    #[inline(always)]
    unsafe fn unpack(&self, w: &mut [__m512i; 4], neg: &mut [u64; 4]) -> (f32, __m256i) {
        let signs = |p: usize| u64::from_le_bytes(self.signs[8 * p..][..8].try_into().unwrap());
        // SAFETY: qs is 64 bytes; the features are the caller's.
        unsafe {
            let v = _mm512_loadu_si512(self.qs.as_ptr().cast());
            let top = _mm512_movepi8_mask(v);
            // Bit i of qh is bit 8 of index i.
            let bit8 = u64::from_le_bytes(self.qh);
            let t = &IQ3S_CODED;
            let (lo, hi) = (
                lookup512(&t.lo, v, top, bit8),
                lookup512(&t.hi, v, top, bit8),
            );
            for p in 0..4 {
                let g = expand(lo, hi, &IQ3_SPREAD[p], SHIFT_3BIT, &t.levels);
                (w[p], neg[p]) = (g, signs(p));
            }
        }
        let s: [u8; 8] = std::array::from_fn(|ib| (self.scales[ib / 2] >> (4 * (ib % 2))) & 0x0F);
        // SAFETY: the features are the caller's.
        (self.d.to_f32(), unsafe { scales32(s) })
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")]
unsafe fn cols<B: Unpack, const C: usize>(row: &[B], acts: &[&[BlockQ8K]], out: &mut [f32]) {
    // One vpdpwssd scales a lane's dot of four values: |dot| <= 4 * (MAX_CODE + BIAS) * 127 < 2^15.
    const { assert!(4 * (B::MAX_CODE as i32 + B::BIAS as i32) * 127 < 1 << 15) };
    let mut acc = [_mm512_setzero_ps(); C];
    let mut codes = [_mm512_setzero_si512(); 2];
    for (i, blk) in row.iter().enumerate() {
        if C == 1 {
            crate::x86_avx2::prefetch_ahead(blk);
        }
        // SAFETY: the caller guarantees every acts[c] has row.len() blocks.
        let a: [&BlockQ8K; C] =
            std::array::from_fn(|c| unsafe { acts.get_unchecked(c).get_unchecked(i) });
        let (mut w, mut neg) = ([_mm512_setzero_si512(); 4], [0u64; 4]);
        if B::PAIRED && i % 2 == 0 {
            // SAFETY: the kernel's features are enabled.
            codes = unsafe { blk.codes(row.get(i + 1).unwrap_or(blk)) };
        }
        // SAFETY: the kernel's features are enabled.
        let (factor, s16) = unsafe { blk.unpack_half(&codes, i % 2, &mut w, &mut neg) };
        let s32 = _mm512_cvtepi16_epi32(s16);
        let mut sc = [_mm512_setzero_si512(); 4];
        for p in 0..4 {
            // Lane l (values 64p + 4l ..) takes the scale of 16-value group 4p + l/4.
            let idx = _mm512_add_epi32(
                _mm512_set1_epi32(4 * p as i32),
                _mm512_srli_epi32::<2>(_mm512_set_epi32(
                    15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0,
                )),
            );
            sc[p] = _mm512_permutexvar_epi32(idx, s32);
        }
        if C == 1 {
            // The signs on the activations, the magnitudes as the unsigned
            // operand: a lane's dot is below 2^15 in magnitude, so one
            // vpdpwssd multiplies it by its scale (the scale's high word is 0).
            let mut isum = _mm512_setzero_si512();
            for p in 0..4 {
                // SAFETY: the kernel's features are enabled.
                let y = negate(unsafe { B::y(a[0], p) }, neg[p]);
                if B::ONE_SCALE {
                    isum = _mm512_dpbusd_epi32(isum, w[p], y);
                } else {
                    let dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[p], y);
                    isum = _mm512_dpwssd_epi32(isum, dot, sc[p]);
                }
            }
            if B::BIAS != 0 {
                // SAFETY: bsums is 16 i16 = 32 bytes.
                let bsums = unsafe { _mm256_loadu_si256(a[0].bsums.as_ptr().cast()) };
                let bias = _mm256_mullo_epi32(
                    _mm256_madd_epi16(bsums, s16),
                    _mm256_set1_epi32(B::BIAS as i32),
                );
                isum = _mm512_sub_epi32(isum, _mm512_zextsi256_si512(bias));
            }
            let dd = factor * a[0].d;
            acc[0] = _mm512_fmadd_ps(_mm512_set1_ps(dd), _mm512_cvtepi32_ps(isum), acc[0]);
            continue;
        }
        for p in 0..4 {
            // The signed codes (`w - BIAS` where there is a bias, and then no signs) + 128.
            let v = _mm512_sub_epi8(negate(w[p], neg[p]), _mm512_set1_epi8(B::BIAS));
            w[p] = _mm512_xor_si512(v, _mm512_set1_epi8(-128));
        }
        for c in 0..C {
            let mut isum = _mm512_setzero_si512();
            for p in 0..4 {
                // SAFETY: the kernel's features are enabled.
                let y = unsafe { B::y(a[c], p) };
                if B::ONE_SCALE {
                    isum = _mm512_dpbusd_epi32(isum, w[p], y);
                } else {
                    let dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[p], y);
                    isum = _mm512_add_epi32(isum, _mm512_mullo_epi32(dot, sc[p]));
                }
            }
            // SAFETY: bsums is 16 i16 = 32 bytes.
            let bsums = unsafe { _mm256_loadu_si256(a[c].bsums.as_ptr().cast()) };
            let excess = _mm256_slli_epi32::<7>(_mm256_madd_epi16(bsums, s16));
            let isum = _mm512_sub_epi32(isum, _mm512_zextsi256_si512(excess));
            let dd = factor * a[c].d;
            acc[c] = _mm512_fmadd_ps(_mm512_set1_ps(dd), _mm512_cvtepi32_ps(isum), acc[c]);
        }
    }
    for c in 0..C {
        out[c] = _mm512_reduce_add_ps(acc[c]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every point of every coded grid reads back as the vendored grid's
    /// bytes, through the codes and the level table as the kernels read them
    /// (`vpmultishiftqb` takes 8 bits at the code's offset, `vpermb` the low 6).
    fn check<const E: usize>(name: &str, coded: &Coded<E>, grid: &[u64; E], per: usize, bits: u32) {
        for (i, &point) in grid.iter().enumerate() {
            let code = coded.lo[i] as u64 | (coded.hi[i] as u64) << 8;
            for j in 0..per {
                let byte = ((code >> (bits as usize * j)) & 0xFF) as usize;
                assert_eq!(
                    coded.levels[byte & 63],
                    (point >> (8 * j)) as u8,
                    "{name}: point {i}, value {j}"
                );
            }
        }
    }

    #[test]
    fn coded_grids_read_back_as_the_vendored_grids() {
        check("iq2_xxs", &IQ2XXS_CODED, &IQ2XXS_GRID, 8, 2);
        check("iq2_xs", &IQ2XS_CODED, &IQ2XS_GRID, 8, 2);
        check("iq2_s", &IQ2S_CODED, &IQ2S_GRID, 8, 2);
        check("iq3_xxs", &IQ3XXS_CODED, &widen(&IQ3XXS_GRID), 4, 3);
        check("iq3_s", &IQ3S_CODED, &widen(&IQ3S_GRID), 4, 3);
    }

    /// The TQ1_0 tables give, for every byte, the digits `formats::tq1_0`
    /// reads (plus one).
    #[test]
    fn tq1_digit_tables_hold_every_bytes_digits() {
        for q in 0..=255u8 {
            for n in 0..4 {
                let d = (TQ1_FOUR[q as usize] >> (2 * n)) & 3;
                assert_eq!(
                    d as i8 - 1,
                    crate::formats::tq1_0::digit(q, n),
                    "byte {q} digit {n}"
                );
            }
            assert_eq!(
                TQ1_FIFTH[q as usize] as i8 - 1,
                crate::formats::tq1_0::digit(q, 4),
                "byte {q}"
            );
        }
    }
}
