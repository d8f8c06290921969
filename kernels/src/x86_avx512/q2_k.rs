//! Q2_K and Q3_K x Q8_K with AVX-512 BW: the AVX2 kernels' scheme (see
//! `x86_avx2::q2_k`) on 64-byte vectors. Two adjacent quarters of a half
//! (values `32 hs .. 32 hs + 64`) fill one vector whose four 128-bit lanes are
//! four consecutive sub-blocks, each scaled by its own i16 scale in
//! `vpdpwssd` (`vpmaddwd` and the add in one): half the instructions per
//! block of the AVX2 kernels. Q3_K's scales are unpacked in one vector
//! ([`scales_q3_k_x86`]) and its high bits merged into the codes with a shift
//! and a `vpternlogd` per 64 values.

use crate::formats::{BlockQ2K, BlockQ3K, BlockQ8K};
use crate::x86_avx2::q2_k::scales_q3_k_x86;
use std::arch::x86_64::*;

/// Weight rows per call.
pub const ROWS: usize = 1;
/// Activation columns per call: the unpacked block (8 vectors) and one
/// accumulator pair per column fit the 32 vector registers.
pub const COLS: usize = 8;

/// `vpermw` indices that broadcast i16 scales `4q .. 4q + 4` to the four
/// 128-bit lanes of a vector, one per lane.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn lane_scales(scales16: __m512i, quad: usize) -> __m512i {
    let idx: [i16; 32] = std::array::from_fn(|i| (4 * quad + i / 8) as i16);
    // SAFETY: idx is 64 bytes.
    _mm512_permutexvar_epi16(unsafe { _mm512_loadu_si512(idx.as_ptr().cast()) }, scales16)
}

/// A block's `d` and `dmin` (f16 bits), converted together.
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn d_dmin(d: u16, dmin: u16) -> (f32, f32) {
    let both = _mm_cvtph_ps(_mm_cvtsi32_si128((d as u32 | (dmin as u32) << 16) as i32));
    (_mm_cvtss_f32(both), _mm_cvtss_f32(_mm_movehdup_ps(both)))
}

/// Adds `sum sc * (codes . y)` over a block's four 64-value quads for each column.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn block_dot<const C: usize>(
    codes: &[__m512i; 4],
    sc: &[__m512i; 4],
    a: &[&BlockQ8K; C],
    isum: &mut [__m512i; C],
) {
    for (qd, (q, s)) in codes.iter().zip(sc).enumerate() {
        for c in 0..C {
            // SAFETY: a[c].qs has 256 bytes; 64 qd + 64 <= 256.
            let y = unsafe { _mm512_loadu_si512(a[c].qs.as_ptr().add(64 * qd).cast()) };
            isum[c] = _mm512_dpwssd_epi32(isum[c], _mm512_maddubs_epi16(*q, y), *s);
        }
    }
}

/// A vector whose 16-bit lanes hold `lo` in the low 256 bits and `hi` in the high.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn halves(lo: i16, hi: i16) -> __m512i {
    _mm512_inserti64x4::<1>(
        _mm512_castsi256_si512(_mm256_set1_epi16(lo)),
        _mm256_set1_epi16(hi),
    )
}

/// The 2-bit codes of a block as four 64-value quads (quarters 2k, 2k+1 of
/// each half): each half's 32 bytes broadcast to both 256-bit halves of a
/// vector, then one shift by 0 | 2 (or 4 | 6) per 16-bit lane and a mask.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn low_codes(qs: &[u8; 64]) -> [__m512i; 4] {
    let m3 = _mm512_set1_epi8(3);
    let (s01, s23) = (halves(0, 2), halves(4, 6));
    let mut out = [_mm512_setzero_si512(); 4];
    for h in 0..2 {
        // SAFETY: qs has 64 bytes; 32h + 32 <= 64.
        let v =
            _mm512_broadcast_i64x4(unsafe { _mm256_loadu_si256(qs.as_ptr().add(32 * h).cast()) });
        out[2 * h] = _mm512_and_si512(_mm512_srlv_epi16(v, s01), m3);
        out[2 * h + 1] = _mm512_and_si512(_mm512_srlv_epi16(v, s23), m3);
    }
    out
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q2_cols<const C: usize>(row: &[BlockQ2K], acts: &[&[BlockQ8K]], out: &mut [f32]) {
    let mut acc = [_mm512_setzero_ps(); C];
    let m4 = _mm_set1_epi8(0x0F);
    for (i, b) in row.iter().enumerate() {
        if C == 1 {
            crate::x86_avx2::prefetch_ahead(b);
        }
        // SAFETY: the caller guarantees every acts[c] has row.len() blocks.
        let a: [&BlockQ8K; C] =
            std::array::from_fn(|c| unsafe { acts.get_unchecked(c).get_unchecked(i) });
        // SAFETY: scales is 16 bytes.
        let packed = unsafe { _mm_loadu_si128(b.scales.as_ptr().cast()) };
        let scales16 = _mm256_cvtepu8_epi16(_mm_and_si128(packed, m4));
        let mins16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(packed), m4));
        let s512 = _mm512_castsi256_si512(scales16);
        let sc: [__m512i; 4] = std::array::from_fn(|qd| lane_scales(s512, qd));
        let codes = low_codes(&b.qs);
        let mut isum = [_mm512_setzero_si512(); C];
        // SAFETY: AVX-512 is enabled here; shapes as documented.
        unsafe { block_dot(&codes, &sc, &a, &mut isum) };
        let (d, dmin) = d_dmin(b.d.to_bits(), b.dmin.to_bits());
        for c in 0..C {
            // SAFETY: bsums is 16 i16 = 32 bytes.
            let bsums = unsafe { _mm256_loadu_si256(a[c].bsums.as_ptr().cast()) };
            let msum = _mm256_cvtepi32_ps(_mm256_madd_epi16(bsums, mins16));
            acc[c] = _mm512_fmadd_ps(
                _mm512_set1_ps(d * a[c].d),
                _mm512_cvtepi32_ps(isum[c]),
                acc[c],
            );
            // The min term into the same lanes (zero-extended: only the lane sum matters).
            acc[c] = _mm512_fnmadd_ps(
                _mm512_set1_ps(dmin * a[c].d),
                _mm512_zextps256_ps512(msum),
                acc[c],
            );
        }
    }
    for c in 0..C {
        out[c] = _mm512_reduce_add_ps(acc[c]);
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q3_cols<const C: usize>(row: &[BlockQ3K], acts: &[&[BlockQ8K]], out: &mut [f32]) {
    let mut acc = [_mm512_setzero_ps(); C];
    let four = _mm512_set1_epi8(4);
    // Per-16-bit-lane shift counts (low half, high half) that move bit 2qd
    // (low) and 2qd + 1 (high) to bit 2: left by 2 and 1 for quad 0, right
    // by 0/1, 2/3 and 4/5 for quads 1..3.
    let shift = [halves(2, 1), halves(0, 1), halves(2, 3), halves(4, 5)];
    for (i, b) in row.iter().enumerate() {
        if C == 1 {
            crate::x86_avx2::prefetch_ahead(b);
        }
        // SAFETY: the caller guarantees every acts[c] has row.len() blocks.
        let a: [&BlockQ8K; C] =
            std::array::from_fn(|c| unsafe { acts.get_unchecked(c).get_unchecked(i) });
        let scales16 = _mm256_cvtepi8_epi16(scales_q3_k_x86(b));
        let s512 = _mm512_castsi256_si512(scales16);
        let sc: [__m512i; 4] = std::array::from_fn(|qd| lane_scales(s512, qd));
        // SAFETY: hmask is 32 bytes; both halves of the vector see the same 32 bytes.
        let hm = unsafe { _mm512_broadcast_i64x4(_mm256_loadu_si256(b.hmask.as_ptr().cast())) };
        let mut codes = low_codes(&b.qs);
        // Quad qd holds quarters 2qd (low 32 bytes) and 2qd + 1 (high): their
        // high bits are bits 2qd and 2qd + 1 of hmask[l], shifted (within each
        // 16-bit lane, so within each byte for the bit kept) to bit 2 and
        // merged into the 2-bit codes: q' = q | (h & 4).
        let high = [
            _mm512_sllv_epi16(hm, shift[0]),
            _mm512_srlv_epi16(hm, shift[1]),
            _mm512_srlv_epi16(hm, shift[2]),
            _mm512_srlv_epi16(hm, shift[3]),
        ];
        for (q, h) in codes.iter_mut().zip(high) {
            *q = _mm512_ternarylogic_epi32::<0xF8>(*q, h, four);
        }
        let mut isum = [_mm512_setzero_si512(); C];
        // SAFETY: AVX-512 is enabled here; shapes as documented.
        unsafe { block_dot(&codes, &sc, &a, &mut isum) };
        let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(b.d.to_bits() as i32)));
        for c in 0..C {
            // SAFETY: bsums is 16 i16 = 32 bytes.
            let bsums = unsafe { _mm256_loadu_si256(a[c].bsums.as_ptr().cast()) };
            // The -4 centring: 4 * sum over sub-blocks of scale * bsum.
            let corr = _mm256_slli_epi32::<2>(_mm256_madd_epi16(bsums, scales16));
            // (Subtracted from the low 8 lanes: only the sum over all lanes matters.)
            let exact = _mm512_sub_epi32(isum[c], _mm512_zextsi256_si512(corr));
            acc[c] = _mm512_fmadd_ps(
                _mm512_set1_ps(d * a[c].d),
                _mm512_cvtepi32_ps(exact),
                acc[c],
            );
        }
    }
    for c in 0..C {
        out[c] = _mm512_reduce_add_ps(acc[c]);
    }
}

row_kernel!(
    gemv_q2_k_q8_k_1x8,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    BlockQ2K,
    BlockQ8K,
    q2_cols,
    [1, 2, 3, 4, 5, 6, 7, 8]
);
row_kernel!(
    gemv_q3_k_q8_k_1x8,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    BlockQ3K,
    BlockQ8K,
    q3_cols,
    [1, 2, 3, 4, 5, 6, 7, 8]
);
