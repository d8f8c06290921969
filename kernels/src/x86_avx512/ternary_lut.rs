//! The lookup-table GEMV of the ternary formats on 64-row groups
//! ([`crate::formats::ternary_x64`]), with VBMI byte permutes.
//!
//! Per block of the column, each byte position's 256-entry table of exact
//! 16-bit partial sums is built by `vpmaddubsw` of the bytes' digit pairs
//! against the activation pairs ([`TernaryRow::DIGIT_PAIRS`]), then split
//! into its low and high bytes (one `vpermt2b` each per 64 entries). The
//! table of a block (52 or 64 byte positions, 26 or 32 KB) stays in L1 while
//! every group of 64 rows reads it: per byte position and group, one load
//! of the 64 rows' bytes, then for each of the low and high table bytes four
//! one-table `vpermb` (64 entries each) and three blends by the byte's bits 6
//! and 7, and two unpacks into 16-bit sums; every 16 positions the 16-bit
//! sums go into 32-bit ones by `vpdpwssd` (16 positions of at most 1024 in
//! magnitude cannot overflow 16 bits). One-table lookups because the
//! two-table `vpermi2b` takes two cycles on the Sapphire Rapids and `vpermb`
//! one (docs/BENCHMARKS.md). The loop prefetches the same line of the group
//! two groups ahead.
//! The rows' results stay in slot order ([`slot_row`](crate::formats::ternary_x64::slot_row)).

use crate::formats::ternary_x64::{TernaryRow, TernaryX64, ROWS};
use crate::formats::BlockQ8K;
use core::arch::x86_64::*;
use std::ops::Range;

/// One block's tables: per byte position, the 256 entries' low bytes, then their high bytes.
#[repr(C, align(64))]
struct Tables([[u8; 512]; 64]);

/// Even bytes of two vectors (the low bytes of 64 16-bit entries), as `vpermt2b` indices.
const EVEN: [u8; 64] = {
    let mut t = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        t[i] = 2 * i as u8;
        i += 1;
    }
    t
};
/// Odd bytes of two vectors (the high bytes).
const ODD: [u8; 64] = {
    let mut t = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        t[i] = 2 * i as u8 + 1;
        i += 1;
    }
    t
};

/// Loads 64 bytes.
#[inline]
#[target_feature(enable = "avx512f")]
fn load(p: &[u8]) -> __m512i {
    assert!(p.len() >= 64);
    // SAFETY: 64 bytes readable, checked above (the check folds away at the constant offsets used).
    unsafe { _mm512_loadu_si512(p.as_ptr().cast()) }
}

/// A 16-bit lane of two activation bytes, broadcast.
#[inline]
#[target_feature(enable = "avx512f")]
fn pair(a: i8, b: i8) -> __m512i {
    _mm512_set1_epi16((a as u8 as u16 | (b as u8 as u16) << 8) as i16)
}

/// Builds block `act`'s tables for format `R` into `t`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
fn build<R: TernaryRow>(act: &BlockQ8K, t: &mut Tables) {
    let digits = &R::DIGIT_PAIRS;
    let even = load(&EVEN);
    let odd = load(&ODD);
    for (j, out) in t.0.iter_mut().take(R::GROUPS).enumerate() {
        let (pos, count) = R::positions(j);
        let mut x = [0i8; 6];
        for n in 0..count {
            x[n] = act.qs[pos[n]];
        }
        let sum: i16 = x.iter().map(|&v| v as i16).sum();
        let (p01, p23, p4) = (pair(x[0], x[1]), pair(x[2], x[3]), pair(x[4], x[5]));
        let sum = _mm512_set1_epi16(sum);
        let mut e = [_mm512_setzero_si512(); 8];
        for (c, e) in e.iter_mut().enumerate() {
            let at = 64 * c..;
            let mut v = _mm512_maddubs_epi16(load(&digits[0][at.clone()]), p01);
            v = _mm512_add_epi16(v, _mm512_maddubs_epi16(load(&digits[1][at.clone()]), p23));
            if R::TERMS > 4 {
                v = _mm512_add_epi16(v, _mm512_maddubs_epi16(load(&digits[2][at]), p4));
            }
            *e = _mm512_sub_epi16(v, sum);
        }
        for m in 0..4 {
            let (a, b) = (e[2 * m], e[2 * m + 1]);
            let (lo, hi) = (
                _mm512_permutex2var_epi8(a, even, b),
                _mm512_permutex2var_epi8(a, odd, b),
            );
            // SAFETY: out has 512 bytes; 64m + 64 <= 256 and 256 + 64m + 64 <= 512.
            unsafe {
                _mm512_storeu_si512(out[64 * m..].as_mut_ptr().cast(), lo);
                _mm512_storeu_si512(out[256 + 64 * m..].as_mut_ptr().cast(), hi);
            }
        }
    }
}

/// Block positions `blocks` of the `ngroups` groups of 64 rows in `x`
/// (block position after block position) against the column `act`, added
/// to `out` (64 results per group, in slot order).
///
/// # Safety
/// The CPU must have AVX-512 F/BW/VL/VNNI/VBMI, F16C and FMA;
/// `x.len() >= blocks.end * ngroups`, `act.len() >= blocks.end`,
/// `out.len() >= 64 * ngroups`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")]
pub unsafe fn gemv_ternary_x64<X: TernaryX64>(
    x: &[X],
    ngroups: usize,
    blocks: Range<usize>,
    act: &[BlockQ8K],
    out: &mut [f32],
) {
    let groups = X::Row::GROUPS;
    let ahead = 2 * std::mem::size_of::<X>();
    let mut t = Tables([[0; 512]; 64]);
    let (one_even, one_odd) = (_mm512_set1_epi32(1), _mm512_set1_epi32(1 << 16));
    for b in blocks {
        build::<X::Row>(&act[b], &mut t);
        let dx = _mm512_set1_ps(act[b].d);
        for (w, o) in x[b * ngroups..(b + 1) * ngroups]
            .iter()
            .zip(out.chunks_exact_mut(ROWS))
        {
            let q = w.q();
            let mut acc = [_mm512_setzero_si512(); 4];
            for start in (0..groups).step_by(16) {
                let (mut lo16, mut hi16) = (_mm512_setzero_si512(), _mm512_setzero_si512());
                for j in start..(start + 16).min(groups) {
                    let tab = &t.0[j];
                    let idx = load(&q[j]);
                    // The same line two groups ahead (past the end: a harmless prefetch of any address).
                    _mm_prefetch::<_MM_HINT_T0>(q[j].as_ptr().wrapping_add(ahead).cast());
                    let top = _mm512_movepi8_mask(idx);
                    let six = _mm512_movepi8_mask(_mm512_add_epi8(idx, idx));
                    let look = |o: usize| {
                        let a = _mm512_mask_blend_epi8(
                            six,
                            _mm512_permutexvar_epi8(idx, load(&tab[o..])),
                            _mm512_permutexvar_epi8(idx, load(&tab[o + 64..])),
                        );
                        let b = _mm512_mask_blend_epi8(
                            six,
                            _mm512_permutexvar_epi8(idx, load(&tab[o + 128..])),
                            _mm512_permutexvar_epi8(idx, load(&tab[o + 192..])),
                        );
                        _mm512_mask_blend_epi8(top, a, b)
                    };
                    let lo = look(0);
                    let hi = look(256);
                    lo16 = _mm512_add_epi16(lo16, _mm512_unpacklo_epi8(lo, hi));
                    hi16 = _mm512_add_epi16(hi16, _mm512_unpackhi_epi8(lo, hi));
                }
                acc[0] = _mm512_dpwssd_epi32(acc[0], lo16, one_even);
                acc[1] = _mm512_dpwssd_epi32(acc[1], lo16, one_odd);
                acc[2] = _mm512_dpwssd_epi32(acc[2], hi16, one_even);
                acc[3] = _mm512_dpwssd_epi32(acc[3], hi16, one_odd);
            }
            for (v, (o, d)) in o
                .chunks_exact_mut(16)
                .zip(w.d().chunks_exact(16))
                .enumerate()
            {
                // SAFETY: o has 16 floats and d 16 f16 (32 bytes), by chunks_exact.
                unsafe {
                    let d = _mm512_cvtph_ps(_mm256_loadu_si256(d.as_ptr().cast()));
                    let prev = _mm512_loadu_ps(o.as_ptr());
                    let sum =
                        _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[v]), _mm512_mul_ps(d, dx), prev);
                    _mm512_storeu_ps(o.as_mut_ptr(), sum);
                }
            }
        }
    }
}
