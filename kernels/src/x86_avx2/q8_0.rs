//! Q4_0, Q5_0, IQ4_NL and Q8_0 x Q8_0 (and the 2:4 forms) on AVX2: up to
//! [`ROWS`] weight rows against up to [`COLS`] activation columns. Blocks are 32 values with one f16 scale each.
//!
//! Signed x signed bytes through `vpmaddubsw` (unsigned x signed): multiply
//! |w| by y with w's sign moved onto y (`vpsignb`), as ggml does. Each block's
//! products reduce exactly into 8 i32 lanes; lanes are scaled by `d_w * d_y`
//! and accumulated in f32, summed once per row.

use super::hsum_ps;
use crate::formats::grids::KVALUES_IQ4NL;
use crate::formats::sparse::EXPAND_LUT;
use crate::formats::sparse_x4::X4Row;
use crate::formats::{
    Block32, BlockIq4Nl, BlockIq4Nlx4, BlockQ4_0, BlockQ4_0S, BlockQ4_0Sx4, BlockQ4_0x4, BlockQ5_0,
    BlockQ5_0x4, BlockQ8_0, BlockQ8_0S, BlockQ8_0Sx4, BlockQ8_0x4, Codes,
};
use std::arch::x86_64::*;

/// Weight rows per call.
pub const ROWS: usize = 4;
/// Activation columns per call.
pub const COLS: usize = 2;

/// An f16 scale broadcast to eight f32 lanes by F16C. (Converting a single
/// value instead, LLVM inserts it into whatever zeroed register is at hand,
/// the accumulator here, and chains every block on the previous FMA.)
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn f16_splat(bits: u16) -> __m256 {
    _mm256_cvtph_ps(_mm_set1_epi16(bits as i16))
}

/// The sum of four f32 lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn hsum128(v: __m128) -> f32 {
    let s = _mm_add_ps(v, _mm_movehl_ps(v, v));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// The 32 signed codes of a block, zeros where a 2:4 block dropped them.
///
/// Sparse blocks are expanded by one `vpshufb` of the kept values (in both
/// 128-bit lanes) with indices from [`EXPAND_LUT`], one 8-byte entry per mask
/// byte; lane 1 indexes kept values 8..16, so mask bytes 1, 2, 3 add 4, 8, 12.
///
/// # Safety
/// AVX2 must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn codes256<W: Block32>(b: &W) -> __m256i {
    let eight = _mm_set1_epi8(8);
    let low4 = _mm_set1_epi8(0x0F);
    // The 32 nibbles of a Q4_0-layout block (Q4_0, Q5_0, IQ4_NL: low nibbles
    // are values 0..16, high 16..32), unsigned.
    // SAFETY: such blocks have 16 code bytes.
    let nibbles = || unsafe {
        let v = _mm_loadu_si128(b.codes().cast());
        _mm256_and_si256(
            _mm256_set_m128i(_mm_srli_epi16::<4>(v), v),
            _mm256_set1_epi8(0x0F),
        )
    };
    // SAFETY (all loads): Q4_0, Q5_0 and IQ4_NL have 16 code bytes, Q8_0 32, Q4_0S 8, Q8_0S 16.
    let kept = match W::CODES {
        Codes::Nibbles => return _mm256_sub_epi8(nibbles(), _mm256_set1_epi8(8)),
        Codes::Nibbles5 => {
            let q = _mm256_or_si256(nibbles(), fifth_bits(b.high_bits()));
            return _mm256_sub_epi8(q, _mm256_set1_epi8(16));
        }
        Codes::NonLinear => {
            // SAFETY: the table has 16 bytes.
            let table = unsafe { _mm_loadu_si128(KVALUES_IQ4NL.as_ptr().cast()) };
            return _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(table), nibbles());
        }
        Codes::Bytes => return unsafe { _mm256_loadu_si256(b.codes().cast()) },
        Codes::SparseNibbles => {
            let v = unsafe { _mm_loadl_epi64(b.codes().cast()) };
            let lo = _mm_and_si128(v, low4);
            let hi = _mm_and_si128(_mm_srli_epi16::<4>(v), low4);
            _mm_sub_epi8(_mm_unpacklo_epi64(lo, hi), eight)
        }
        Codes::SparseBytes => unsafe { _mm_loadu_si128(b.codes().cast()) },
    };
    let m = b.mask();
    let lut = |i: u32| EXPAND_LUT[(m >> (8 * i) & 0xFF) as usize] as i64;
    let idx = _mm256_add_epi8(
        _mm256_set_epi64x(lut(3), lut(2), lut(1), lut(0)),
        _mm256_set_epi64x(
            0x0C0C_0C0C_0C0C_0C0C,
            0x0808_0808_0808_0808,
            0x0404_0404_0404_0404,
            0,
        ),
    );
    _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(kept), idx)
}

/// 0x10 in byte i where bit i of `qh` is set (Q5_0's fifth bits).
#[inline]
#[target_feature(enable = "avx2")]
fn fifth_bits(qh: u32) -> __m256i {
    _mm256_and_si256(super::bit_bytes(qh), _mm256_set1_epi8(0x10))
}

/// `R` weight rows against `C` activation columns: each activation block is
/// loaded (and its scale converted) once for the `R` rows, each weight block
/// unpacked once for the `C` columns, and the `R * C` accumulators are
/// independent chains, so a GEMV (C = 1) is not bound by one FMA's latency.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile<W: Block32, const R: usize, const C: usize>(
    rows: &[W],
    acts: &[&[BlockQ8_0]],
    out: &mut [f32],
) {
    let per_row = rows.len() / R;
    let mut acc = [[_mm256_setzero_ps(); C]; R];
    let ones = _mm256_set1_epi16(1);
    for i in 0..per_row {
        let mut y = [_mm256_setzero_si256(); C];
        let mut dy = [_mm256_setzero_ps(); C];
        for c in 0..C {
            // SAFETY: the caller guarantees every acts[c] has per_row blocks; qs is 32 bytes.
            let a = unsafe { acts.get_unchecked(c).get_unchecked(i) };
            y[c] = unsafe { _mm256_loadu_si256(a.qs.as_ptr().cast()) };
            dy[c] = f16_splat(a.d.to_bits());
        }
        for r in 0..R {
            // SAFETY: rows holds R rows of per_row blocks; AVX2 is enabled here.
            let b = unsafe { rows.get_unchecked(r * per_row + i) };
            let w = unsafe { codes256(b) };
            let aw = _mm256_sign_epi8(w, w);
            let dw = f16_splat(b.d_bits());
            for c in 0..C {
                let dot =
                    _mm256_madd_epi16(_mm256_maddubs_epi16(aw, _mm256_sign_epi8(y[c], w)), ones);
                acc[r][c] =
                    _mm256_fmadd_ps(_mm256_mul_ps(dw, dy[c]), _mm256_cvtepi32_ps(dot), acc[r][c]);
            }
        }
    }
    for r in 0..R {
        for c in 0..C {
            out[r * C + c] = hsum_ps(acc[r][c]);
        }
    }
}

row_kernel!(
    gemv_q8_0_q8_0_4x2,
    "avx2,fma,f16c",
    BlockQ8_0,
    BlockQ8_0,
    tile<BlockQ8_0>,
    rows [1, 2, 3, 4],
    cols [1, 2]
);
row_kernel!(
    gemv_q5_0_q8_0_4x2,
    "avx2,fma,f16c",
    BlockQ5_0,
    BlockQ8_0,
    tile<BlockQ5_0>,
    rows [1, 2, 3, 4],
    cols [1, 2]
);
row_kernel!(
    gemv_iq4_nl_q8_0_4x2,
    "avx2,fma,f16c",
    BlockIq4Nl,
    BlockQ8_0,
    tile<BlockIq4Nl>,
    rows [1, 2, 3, 4],
    cols [1, 2]
);
row_kernel!(
    gemv_q4_0_q8_0_4x2,
    "avx2,fma,f16c",
    BlockQ4_0,
    BlockQ8_0,
    tile<BlockQ4_0>,
    rows [1, 2, 3, 4],
    cols [1, 2]
);
row_kernel!(
    gemv_q4_0s_q8_0_4x2,
    "avx2,fma,f16c",
    BlockQ4_0S,
    BlockQ8_0,
    tile<BlockQ4_0S>,
    rows [1, 2, 3, 4],
    cols [1, 2]
);
row_kernel!(
    gemv_q8_0s_q8_0_4x2,
    "avx2,fma,f16c",
    BlockQ8_0S,
    BlockQ8_0,
    tile<BlockQ8_0S>,
    rows [1, 2, 3, 4],
    cols [1, 2]
);

/// Four interleaved 2:4 rows ([`crate::formats::sparse_x4`]) against one
/// column: [`tile`]'s arithmetic with four rows and one column, the rows read
/// in place from one stream, the activation block loaded once for the four.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemv_x4<'a, X: 'a>(groups: &'a [X], act: &[BlockQ8_0], out: &mut [f32])
where
    X4Row<'a, X>: Block32,
{
    let ones = _mm256_set1_epi16(1);
    for (group, out) in groups.chunks_exact(act.len()).zip(out.chunks_exact_mut(4)) {
        let mut acc = [_mm256_setzero_ps(); 4];
        for (b, a) in group.iter().zip(act) {
            super::prefetch_ahead(b);
            // SAFETY: qs is 32 bytes.
            let y = unsafe { _mm256_loadu_si256(a.qs.as_ptr().cast()) };
            let dy = f16_splat(a.d.to_bits());
            for (r, acc) in acc.iter_mut().enumerate() {
                let row = X4Row { b, r };
                // SAFETY: AVX2 is enabled here; the row's codes lie inside b.
                let w = unsafe { codes256(&row) };
                let aw = _mm256_sign_epi8(w, w);
                let dot = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, _mm256_sign_epi8(y, w)), ones);
                *acc = _mm256_fmadd_ps(
                    _mm256_mul_ps(f16_splat(row.d_bits()), dy),
                    _mm256_cvtepi32_ps(dot),
                    *acc,
                );
            }
        }
        for (o, acc) in out.iter_mut().zip(acc) {
            *o = hsum_ps(acc);
        }
    }
}

/// Groups of four interleaved Q8_0 2:4 rows against one column.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; [`crate::table::X4GemvFn`]'s contract.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn gemv_q8_0sx4_q8_0_4x1(groups: &[BlockQ8_0Sx4], act: &[BlockQ8_0], out: &mut [f32]) {
    // SAFETY: forwarded contract.
    unsafe { gemv_x4(groups, act, out) }
}

/// Groups of four interleaved Q4_0 2:4 rows against one column.
///
/// # Safety
/// As [`gemv_q8_0sx4_q8_0_4x1`].
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn gemv_q4_0sx4_q8_0_4x1(groups: &[BlockQ4_0Sx4], act: &[BlockQ8_0], out: &mut [f32]) {
    // SAFETY: forwarded contract.
    unsafe { gemv_x4(groups, act, out) }
}

/// Groups of four interleaved dense Q8_0 rows against one column.
///
/// # Safety
/// As [`gemv_q8_0sx4_q8_0_4x1`].
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn gemv_q8_0x4_q8_0_4x1(groups: &[BlockQ8_0x4], act: &[BlockQ8_0], out: &mut [f32]) {
    // SAFETY: forwarded contract.
    unsafe { gemv_x4(groups, act, out) }
}

/// Groups of four interleaved dense Q5_0 rows against one column.
///
/// # Safety
/// As [`gemv_q8_0sx4_q8_0_4x1`].
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn gemv_q5_0x4_q8_0_4x1(groups: &[BlockQ5_0x4], act: &[BlockQ8_0], out: &mut [f32]) {
    // SAFETY: forwarded contract.
    unsafe { gemv_x4(groups, act, out) }
}

/// The frame of the four-row GEMVs that take two rows per vector, over
/// Q4_0x4's layout (four scales, four rows' 16 nibble bytes): per block, the
/// activation's halves broadcast to both lanes (`y_lo`, `y_hi`), `prep` of
/// them once for the four rows, then per 32-byte load `v` (rows r and r + 1,
/// one per 128-bit lane) `dot(v, y_lo, y_hi, &prep)`, the exact i32 sums of
/// row r in lanes 0-3 and of row r + 1 in lanes 4-7. The four scales convert
/// at once and are spread to the lanes by two permutes.
///
/// # Safety
/// The caller's features (AVX2, FMA, F16C); [`crate::table::X4GemvFn`]'s contract.
#[inline(always)]
unsafe fn gemv_two_rows<P>(
    groups: &[BlockQ4_0x4],
    act: &[BlockQ8_0],
    out: &mut [f32],
    prep: impl Fn(__m256i, __m256i) -> P,
    dot: impl Fn(__m256i, __m256i, __m256i, &P) -> __m256i,
) {
    // SAFETY (the intrinsics): the caller's features.
    unsafe {
        // Lane spreads of the four rows' scales: rows 0, 1 and rows 2, 3.
        let spread01 = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
        let spread23 = _mm256_setr_epi32(2, 2, 2, 2, 3, 3, 3, 3);
        for (group, out) in groups.chunks_exact(act.len()).zip(out.chunks_exact_mut(4)) {
            let mut acc = [_mm256_setzero_ps(); 2];
            for (b, a) in group.iter().zip(act) {
                super::prefetch_ahead(b);
                // SAFETY (loads): qs is 32 bytes; b.qs 64; b.d four f16 (8 bytes).
                let (y, v01, v23, d) = (
                    _mm256_loadu_si256(a.qs.as_ptr().cast()),
                    _mm256_loadu_si256(b.qs.as_ptr().cast()),
                    _mm256_loadu_si256(b.qs.as_ptr().add(32).cast()),
                    _mm_cvtph_ps(_mm_loadl_epi64(b.d.as_ptr().cast())),
                );
                let y_lo = _mm256_permute2x128_si256::<0x00>(y, y);
                let y_hi = _mm256_permute2x128_si256::<0x11>(y, y);
                let p = prep(y_lo, y_hi);
                let dd = _mm256_mul_ps(_mm256_set_m128(d, d), f16_splat(a.d.to_bits()));
                for (i, (v, spread)) in [(v01, spread01), (v23, spread23)].into_iter().enumerate() {
                    let scale = _mm256_permutevar8x32_ps(dd, spread);
                    let sum = dot(v, y_lo, y_hi, &p);
                    acc[i] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(sum), acc[i]);
                }
            }
            // Row r's sum: the low lane of acc[r / 2] for even r, the high lane for odd.
            for (pair, acc) in acc.into_iter().enumerate() {
                out[2 * pair] = hsum128(_mm256_castps256_ps128(acc));
                out[2 * pair + 1] = hsum128(_mm256_extractf128_ps::<1>(acc));
            }
        }
    }
}

/// Groups of four interleaved dense IQ4_NL rows against one column, two rows
/// per vector ([`gemv_two_rows`]; [`BlockIq4Nlx4`] is laid out as
/// [`BlockQ4_0x4`]).
///
/// The low and high nibbles become table values by one `vpshufb` each and
/// meet the activation's first and last 16 values as `|w| x sign(y, w)` in
/// `vpmaddubsw` (pairs at most 2 x 127 x 128: each half widened by its own
/// `vpmaddwd`, their sum would not fit i16). Per block and row about 7
/// vector ops against the generic four-row GEMV's 14.
///
/// # Safety
/// As [`gemv_q8_0sx4_q8_0_4x1`].
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn gemv_iq4_nlx4_q8_0_4x1(groups: &[BlockIq4Nlx4], act: &[BlockQ8_0], out: &mut [f32]) {
    let ones = _mm256_set1_epi16(1);
    let low4 = _mm256_set1_epi8(0x0F);
    // SAFETY: the table has 16 bytes.
    let table =
        _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(KVALUES_IQ4NL.as_ptr().cast()) });
    let dot = |w: __m256i, y: __m256i| {
        _mm256_madd_epi16(
            _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(y, w)),
            ones,
        )
    };
    // SAFETY: forwarded contract; the two block types have the same layout (Pod casts).
    unsafe {
        gemv_two_rows(
            bytemuck::cast_slice(groups),
            act,
            out,
            |_, _| (),
            |v, y_lo, y_hi, _| {
                let lo = _mm256_shuffle_epi8(table, _mm256_and_si256(v, low4));
                let hi =
                    _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16::<4>(v), low4));
                _mm256_add_epi32(dot(lo, y_lo), dot(hi, y_hi))
            },
        )
    }
}

/// Groups of four interleaved dense Q4_0 rows against one column, two rows
/// per vector ([`gemv_two_rows`]).
///
/// The nibbles stay unsigned (0..15, no `- 8` and no sign trick): the low
/// nibbles meet the activation's first 16 values and the high nibbles the
/// last 16 in `vpmaddubsw` (pairs at most 2 x 15 x 128). The `- 8` comes off
/// as `8 x` the same pairs of the activation, once per block for all four
/// rows, in i16 (at most 2 x 2 x 8 x 128 in magnitude), before one
/// `vpmaddwd` widens them. Per block and row about 8 vector ops against the
/// generic form's 14.
///
/// # Safety
/// As [`gemv_q8_0sx4_q8_0_4x1`].
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn gemv_q4_0x4_q8_0_4x1(groups: &[BlockQ4_0x4], act: &[BlockQ8_0], out: &mut [f32]) {
    let ones = _mm256_set1_epi16(1);
    let low4 = _mm256_set1_epi8(0x0F);
    let eights = _mm256_set1_epi8(8);
    // SAFETY: forwarded contract.
    unsafe {
        gemv_two_rows(
            groups,
            act,
            out,
            |y_lo, y_hi| {
                _mm256_add_epi16(
                    _mm256_maddubs_epi16(eights, y_lo),
                    _mm256_maddubs_epi16(eights, y_hi),
                )
            },
            |v, y_lo, y_hi, corr| {
                let lo = _mm256_and_si256(v, low4);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), low4);
                let p = _mm256_add_epi16(
                    _mm256_maddubs_epi16(lo, y_lo),
                    _mm256_maddubs_epi16(hi, y_hi),
                );
                _mm256_madd_epi16(_mm256_sub_epi16(p, *corr), ones)
            },
        )
    }
}
