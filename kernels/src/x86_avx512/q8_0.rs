//! Q4_0, Q5_0, IQ4_NL and Q8_0 x Q8_0 (and the 2:4 forms) with AVX-512 VNNI: two
//! 32-value blocks per 512-bit vector, up to [`ROWS`] weight rows against up
//! to [`COLS`] activation columns.
//!
//! `vpdpbusd` multiplies unsigned by signed bytes. The weights are made
//! unsigned by a bias (Q4_0's and Q5_0's codes are already `w + 8`, `w + 16`;
//! Q8_0's get `w + 128` as `w ^ 0x80`, IQ4_NL's from a table of `value ^ 0x80`); the excess `bias * sum(y)` depends on the activations only,
//! so it is computed once per column and block pair and is where each row's
//! `vpdpbusd` starts from (negated): exact i32 block sums with one `vpdpbusd`
//! per 64 products per row and column, and no per-row correction.
//! 2:4 blocks are expanded by one `vpexpandb` per pair, merging into the
//! bias, so that dropped values read as `0 + bias` like the dense zeros.

use crate::formats::grids::KVALUES_IQ4NL;
use crate::formats::{
    Block32, BlockIq4Nl, BlockQ4_0, BlockQ4_0S, BlockQ5_0, BlockQ8_0, BlockQ8_0S, Codes,
};
use std::arch::x86_64::*;

/// Weight rows per call.
pub const ROWS: usize = 4;
/// Activation columns per call.
pub const COLS: usize = 4;

/// The weight bias of a layout: 8 for the 4-bit codes, 128 for bytes.
const fn bias(codes: Codes) -> i8 {
    match codes {
        Codes::Nibbles | Codes::SparseNibbles => 8,
        Codes::Nibbles5 => 16,
        Codes::Bytes | Codes::SparseBytes | Codes::NonLinear => -128,
    }
}

/// The 64 biased (unsigned) codes of two blocks, block `b0` in bytes 0..32.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi2,avx2,fma,f16c")]
unsafe fn weight_pair<W: Block32>(b0: &W, b1: &W) -> __m512i {
    let low4 = _mm_set1_epi8(0x0F);
    let kept = match W::CODES {
        Codes::Nibbles => {
            // SAFETY: Q4_0 has 16 code bytes: low nibbles are values 0..16, high 16..32.
            let v = unsafe {
                _mm256_set_m128i(
                    _mm_loadu_si128(b1.codes().cast()),
                    _mm_loadu_si128(b0.codes().cast()),
                )
            };
            let z = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(v), _mm256_srli_epi16::<4>(v));
            // 128-bit lanes [b0 lo, b1 lo, b0 hi, b1 hi] -> [b0 lo, b0 hi, b1 lo, b1 hi].
            let z = _mm512_shuffle_i64x2::<0b11_01_10_00>(z, z);
            return _mm512_and_si512(z, _mm512_set1_epi8(0x0F));
        }
        Codes::Nibbles5 | Codes::NonLinear => {
            // SAFETY: Q5_0 and IQ4_NL have Q4_0's 16 nibble bytes.
            let v = unsafe {
                _mm256_set_m128i(
                    _mm_loadu_si128(b1.codes().cast()),
                    _mm_loadu_si128(b0.codes().cast()),
                )
            };
            let z = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(v), _mm256_srli_epi16::<4>(v));
            let z = _mm512_and_si512(
                _mm512_shuffle_i64x2::<0b11_01_10_00>(z, z),
                _mm512_set1_epi8(0x0F),
            );
            if W::CODES == Codes::Nibbles5 {
                // The fifth bits: value j of the pair is bit j of the two qh words.
                let qh = b0.high_bits() as u64 | (b1.high_bits() as u64) << 32;
                return _mm512_mask_mov_epi8(z, qh, _mm512_or_si512(z, _mm512_set1_epi8(0x10)));
            }
            // The table values + 128, as the bias wants them.
            // SAFETY: the table has 16 bytes.
            let table = unsafe { _mm_loadu_si128(KVALUES_IQ4NL.as_ptr().cast()) };
            let table = _mm512_broadcast_i32x4(_mm_xor_si128(table, _mm_set1_epi8(-128)));
            return _mm512_shuffle_epi8(table, z);
        }
        Codes::Bytes => {
            // SAFETY: Q8_0 has 32 code bytes.
            let v = unsafe {
                _mm512_inserti64x4::<1>(
                    _mm512_castsi256_si512(_mm256_loadu_si256(b0.codes().cast())),
                    _mm256_loadu_si256(b1.codes().cast()),
                )
            };
            return _mm512_xor_si512(v, _mm512_set1_epi8(-128));
        }
        Codes::SparseNibbles => {
            // SAFETY: Q4_0S has 8 code bytes: kept values k and k + 8 in byte k.
            let v = unsafe {
                _mm_unpacklo_epi64(
                    _mm_loadl_epi64(b0.codes().cast()),
                    _mm_loadl_epi64(b1.codes().cast()),
                )
            };
            let (lo, hi) = (
                _mm_and_si128(v, low4),
                _mm_and_si128(_mm_srli_epi16::<4>(v), low4),
            );
            _mm256_set_m128i(_mm_unpackhi_epi64(lo, hi), _mm_unpacklo_epi64(lo, hi))
        }
        Codes::SparseBytes => {
            // SAFETY: Q8_0S has 16 code bytes.
            let v = unsafe {
                _mm256_set_m128i(
                    _mm_loadu_si128(b1.codes().cast()),
                    _mm_loadu_si128(b0.codes().cast()),
                )
            };
            _mm256_xor_si256(v, _mm256_set1_epi8(-128))
        }
    };
    let mask = b0.mask() as u64 | (b1.mask() as u64) << 32;
    _mm512_mask_expand_epi8(
        _mm512_set1_epi8(bias(W::CODES)),
        mask,
        _mm512_castsi256_si512(kept),
    )
}

/// Two f16 scales as 16 f32 lanes: `a` in lanes 0..8, `b` in 8..16.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi2,avx2,fma,f16c")]
fn scale_pair(a: u16, b: u16) -> __m512 {
    _mm512_cvtph_ps(_mm256_set_m128i(
        _mm_set1_epi16(b as i16),
        _mm_set1_epi16(a as i16),
    ))
}

/// `R` weight rows against `C` activation columns, two blocks per vector:
/// each activation pair is loaded, its excess and scales computed once for
/// the `R` rows, each weight pair unpacked once for the `C` columns; the
/// `R * C` accumulators are independent chains. An odd last block is paired
/// with itself and counted once (its copy's scales are zero).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi2,avx2,fma,f16c")]
unsafe fn tile<W: Block32, const R: usize, const C: usize>(
    rows: &[W],
    acts: &[&[BlockQ8_0]],
    out: &mut [f32],
) {
    let per_row = rows.len() / R;
    let mut acc = [[_mm512_setzero_ps(); C]; R];
    let bias = _mm512_set1_epi8(bias(W::CODES));
    for i in (0..per_row).step_by(2) {
        // The pair (i, j); j == i for an odd last block, whose copy gets scale 0.
        let j = (i + 1).min(per_row - 1);
        let mut y = [_mm512_setzero_si512(); C];
        let mut excess = [_mm512_setzero_si512(); C];
        let mut dy = [_mm512_setzero_ps(); C];
        for c in 0..C {
            // SAFETY: the caller guarantees every acts[c] has per_row blocks; qs are 32 bytes.
            let (a0, a1) = unsafe {
                let col = acts.get_unchecked(c);
                (col.get_unchecked(i), col.get_unchecked(j))
            };
            y[c] = unsafe {
                _mm512_inserti64x4::<1>(
                    _mm512_castsi256_si512(_mm256_loadu_si256(a0.qs.as_ptr().cast())),
                    _mm256_loadu_si256(a1.qs.as_ptr().cast()),
                )
            };
            // -bias * y per lane (4 values): where each row's dot product starts.
            excess[c] = _mm512_sub_epi32(
                _mm512_setzero_si512(),
                _mm512_dpbusd_epi32(_mm512_setzero_si512(), bias, y[c]),
            );
            dy[c] = scale_pair(a0.d.to_bits(), if j > i { a1.d.to_bits() } else { 0 });
        }
        for r in 0..R {
            // SAFETY: rows holds R rows of per_row blocks; AVX-512 is enabled here.
            let (b0, b1) = unsafe {
                (
                    rows.get_unchecked(r * per_row + i),
                    rows.get_unchecked(r * per_row + j),
                )
            };
            let w = unsafe { weight_pair(b0, b1) };
            let dw = scale_pair(b0.d_bits(), if j > i { b1.d_bits() } else { 0 });
            for c in 0..C {
                let dot = _mm512_dpbusd_epi32(excess[c], w, y[c]);
                acc[r][c] =
                    _mm512_fmadd_ps(_mm512_mul_ps(dw, dy[c]), _mm512_cvtepi32_ps(dot), acc[r][c]);
            }
        }
    }
    for r in 0..R {
        for c in 0..C {
            out[r * C + c] = _mm512_reduce_add_ps(acc[r][c]);
        }
    }
}

row_kernel!(
    gemv_q8_0_q8_0_4x4,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi2,avx2,fma,f16c",
    BlockQ8_0,
    BlockQ8_0,
    tile<BlockQ8_0>,
    rows [1, 2, 3, 4],
    cols [1, 2, 3, 4]
);
row_kernel!(
    gemv_q5_0_q8_0_4x4,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi2,avx2,fma,f16c",
    BlockQ5_0,
    BlockQ8_0,
    tile<BlockQ5_0>,
    rows [1, 2, 3, 4],
    cols [1, 2, 3, 4]
);
row_kernel!(
    gemv_iq4_nl_q8_0_4x4,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi2,avx2,fma,f16c",
    BlockIq4Nl,
    BlockQ8_0,
    tile<BlockIq4Nl>,
    rows [1, 2, 3, 4],
    cols [1, 2, 3, 4]
);
row_kernel!(
    gemv_q4_0_q8_0_4x4,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi2,avx2,fma,f16c",
    BlockQ4_0,
    BlockQ8_0,
    tile<BlockQ4_0>,
    rows [1, 2, 3, 4],
    cols [1, 2, 3, 4]
);
row_kernel!(
    gemv_q4_0s_q8_0_4x4,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi2,avx2,fma,f16c",
    BlockQ4_0S,
    BlockQ8_0,
    tile<BlockQ4_0S>,
    rows [1, 2, 3, 4],
    cols [1, 2, 3, 4]
);
row_kernel!(
    gemv_q8_0s_q8_0_4x4,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi2,avx2,fma,f16c",
    BlockQ8_0S,
    BlockQ8_0,
    tile<BlockQ8_0S>,
    rows [1, 2, 3, 4],
    cols [1, 2, 3, 4]
);
