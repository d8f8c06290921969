//! Interleaved 2:4 GEMV ([`crate::formats::sparse_x4`]) with AVX-512 VNNI +
//! VBMI2: four weight rows against one activation column.
//!
//! Per position along K (one [`BlockQ8_0Sx4`] / [`BlockQ4_0Sx4`], 4 x 32 values):
//! two 64-bit mask loads into `k` registers; the kept codes expanded to their
//! positions, two rows per vector (`vpexpandb`: Q8_0 straight from memory,
//! Q4_0 after splitting one 32-byte load into nibbles), biased to unsigned
//! (`+128` / `+8`, dropped values read as the bias); the activation block
//! broadcast to both halves, and per vector one `vpdpbusd` starting from the
//! column's `-bias * sum(a)`; the four row scales converted together, times the
//! activation scale, spread to each row's eight lanes, and one FMA per vector.
//! About 20 instructions per 4 x 32 values against the row-at-a-time kernel's
//! 18 per 32. Lanes 0..8 of the first accumulator are row 0, 8..16 row 1, and
//! so on: the float sums are split over eight lanes, so results differ from the
//! reference in rounding only (bounded as every kernel's).

use crate::formats::grids::KVALUES_IQ4NL;
use crate::formats::{
    BlockIq4Nlx4, BlockQ4_0Sx4, BlockQ4_0x4, BlockQ5_0x4, BlockQ8_0, BlockQ8_0Sx4, BlockQ8_0x4,
};
use std::arch::x86_64::*;

/// What differs between the interleaved formats.
pub(crate) trait Codes {
    /// The weight bias that makes codes unsigned (`-128` is 0x80: +128 as a byte).
    const BIAS: i8;
    /// Rows 0-1 and rows 2-3, biased: 64 codes per vector, row 2p in the low half.
    unsafe fn expand(&self) -> (__m512i, __m512i);
    /// Rows 0-1 and rows 2-3 as signed values (dropped 2:4 values 0).
    unsafe fn values(&self) -> (__m512i, __m512i);
    fn d(&self) -> *const u16;
}

/// The two 64-bit halves of a 2:4 block's mask bytes: rows 0-1 and rows 2-3.
#[inline(always)]
fn masks(mask: &[u8; 16]) -> (u64, u64) {
    let (a, b) = mask.split_at(8);
    (
        u64::from_le_bytes(a.try_into().unwrap()),
        u64::from_le_bytes(b.try_into().unwrap()),
    )
}

impl Codes for BlockQ8_0Sx4 {
    const BIAS: i8 = -128;
    #[inline(always)]
    unsafe fn expand(&self) -> (__m512i, __m512i) {
        let bias = _mm512_set1_epi8(Self::BIAS);
        // SAFETY: forwarded contract.
        let (v01, v23) = unsafe { self.values() };
        (_mm512_xor_si512(v01, bias), _mm512_xor_si512(v23, bias))
    }
    #[inline(always)]
    unsafe fn values(&self) -> (__m512i, __m512i) {
        let (k01, k23) = masks(&self.mask);
        let p = self.qs.as_ptr();
        // SAFETY: valid masks keep 32 of qs[0..32] for rows 0-1 and 32 of qs[32..64] for rows 2-3.
        unsafe {
            (
                _mm512_maskz_expandloadu_epi8(k01, p.cast()),
                _mm512_maskz_expandloadu_epi8(k23, p.add(32).cast()),
            )
        }
    }
    fn d(&self) -> *const u16 {
        self.d.as_ptr().cast()
    }
}

impl Codes for BlockQ4_0Sx4 {
    const BIAS: i8 = 8;
    #[inline(always)]
    unsafe fn expand(&self) -> (__m512i, __m512i) {
        let (k01, k23) = masks(&self.mask);
        let low4 = _mm256_set1_epi8(0x0F);
        // SAFETY: qs has 32 bytes: rows 0, 2 in the first 16, rows 1, 3 in the last.
        let v = unsafe { _mm256_loadu_si256(self.qs.as_ptr().cast()) };
        let (lo, hi) = (
            _mm256_and_si256(v, low4),
            _mm256_and_si256(_mm256_srli_epi16::<4>(v), low4),
        );
        // Per 128-bit half: [lo, hi] of its first row, then of its second.
        let r01 = _mm256_unpacklo_epi64(lo, hi);
        let r23 = _mm256_unpackhi_epi64(lo, hi);
        let bias = _mm512_set1_epi8(Self::BIAS);
        (
            _mm512_mask_expand_epi8(bias, k01, _mm512_castsi256_si512(r01)),
            _mm512_mask_expand_epi8(bias, k23, _mm512_castsi256_si512(r23)),
        )
    }
    #[inline(always)]
    unsafe fn values(&self) -> (__m512i, __m512i) {
        let (k01, k23) = masks(&self.mask);
        // SAFETY: forwarded contract.
        let (w01, w23) = unsafe { self.expand() };
        let bias = _mm512_set1_epi8(Self::BIAS);
        // code - 8 where kept, 0 where dropped.
        (
            _mm512_maskz_sub_epi8(k01, w01, bias),
            _mm512_maskz_sub_epi8(k23, w23, bias),
        )
    }
    fn d(&self) -> *const u16 {
        self.d.as_ptr().cast()
    }
}

impl Codes for BlockQ8_0x4 {
    const BIAS: i8 = -128;
    #[inline(always)]
    unsafe fn expand(&self) -> (__m512i, __m512i) {
        let bias = _mm512_set1_epi8(Self::BIAS);
        // SAFETY: forwarded contract.
        let (v01, v23) = unsafe { self.values() };
        (_mm512_xor_si512(v01, bias), _mm512_xor_si512(v23, bias))
    }
    #[inline(always)]
    unsafe fn values(&self) -> (__m512i, __m512i) {
        // SAFETY: qs has 128 bytes: rows 0-1 in the first 64, rows 2-3 in the last.
        unsafe {
            (
                _mm512_loadu_si512(self.qs.as_ptr().cast()),
                _mm512_loadu_si512(self.qs.as_ptr().add(64).cast()),
            )
        }
    }
    fn d(&self) -> *const u16 {
        self.d.as_ptr().cast()
    }
}

/// Four rows' 16 nibble bytes each (row r at `16r`) as their 32 nibbles in
/// value order: rows 0-1 in the first vector, 2-3 in the second.
///
/// # Safety
/// The caller's features (AVX-512 BW).
#[inline(always)]
unsafe fn nibbles(qs: &[u8; 64]) -> (__m512i, __m512i) {
    // SAFETY: qs has 64 bytes.
    let v = unsafe { _mm512_loadu_si512(qs.as_ptr().cast()) };
    let low4 = _mm512_set1_epi8(0x0F);
    let (lo, hi) = (
        _mm512_and_si512(v, low4),
        _mm512_and_si512(_mm512_srli_epi16::<4>(v), low4),
    );
    // 128-bit lanes: lo = [r0 lo, r1 lo, r2 lo, r3 lo], hi likewise; row r's
    // 32 codes are [r lo, r hi]. [lo0 lo1 hi0 hi1] -> [lo0 hi0 lo1 hi1].
    let t01 = _mm512_shuffle_i64x2::<0b01_00_01_00>(lo, hi);
    let t23 = _mm512_shuffle_i64x2::<0b11_10_11_10>(lo, hi);
    (
        _mm512_shuffle_i64x2::<0b11_01_10_00>(t01, t01),
        _mm512_shuffle_i64x2::<0b11_01_10_00>(t23, t23),
    )
}

impl Codes for BlockQ4_0x4 {
    const BIAS: i8 = 8;
    #[inline(always)]
    unsafe fn expand(&self) -> (__m512i, __m512i) {
        // SAFETY: forwarded contract.
        unsafe { nibbles(&self.qs) }
    }
    #[inline(always)]
    unsafe fn values(&self) -> (__m512i, __m512i) {
        // SAFETY: forwarded contract.
        let (w01, w23) = unsafe { self.expand() };
        let bias = _mm512_set1_epi8(Self::BIAS);
        (_mm512_sub_epi8(w01, bias), _mm512_sub_epi8(w23, bias))
    }
    fn d(&self) -> *const u16 {
        self.d.as_ptr().cast()
    }
}

impl Codes for BlockQ5_0x4 {
    const BIAS: i8 = 16;
    #[inline(always)]
    unsafe fn expand(&self) -> (__m512i, __m512i) {
        // SAFETY: the layout is BlockQ4_0x4's nibbles plus 16 bytes of fifth bits.
        let (i01, i23) = unsafe { nibbles(&self.qs) };
        // Rows 0-1's values in order are bits 0..64 of qh, rows 2-3's bits 64..128.
        let m01 = u64::from_le_bytes(self.qh[..8].try_into().unwrap());
        let m23 = u64::from_le_bytes(self.qh[8..].try_into().unwrap());
        let bit4 = _mm512_set1_epi8(0x10);
        (
            _mm512_mask_mov_epi8(i01, m01, _mm512_or_si512(i01, bit4)),
            _mm512_mask_mov_epi8(i23, m23, _mm512_or_si512(i23, bit4)),
        )
    }
    #[inline(always)]
    unsafe fn values(&self) -> (__m512i, __m512i) {
        // SAFETY: forwarded contract.
        let (w01, w23) = unsafe { self.expand() };
        let bias = _mm512_set1_epi8(Self::BIAS);
        (_mm512_sub_epi8(w01, bias), _mm512_sub_epi8(w23, bias))
    }
    fn d(&self) -> *const u16 {
        self.d.as_ptr().cast()
    }
}

impl Codes for BlockIq4Nlx4 {
    const BIAS: i8 = -128;
    #[inline(always)]
    unsafe fn expand(&self) -> (__m512i, __m512i) {
        // The table's values + 128 (`^ 0x80`), indexed by Q4_0's nibbles.
        // SAFETY: the table has 16 bytes; the layout is BlockQ4_0x4's.
        let (t, (i01, i23)) = unsafe {
            (
                _mm_loadu_si128(KVALUES_IQ4NL.as_ptr().cast()),
                nibbles(&self.qs),
            )
        };
        let t = _mm512_broadcast_i32x4(_mm_xor_si128(t, _mm_set1_epi8(-128)));
        (_mm512_shuffle_epi8(t, i01), _mm512_shuffle_epi8(t, i23))
    }
    #[inline(always)]
    unsafe fn values(&self) -> (__m512i, __m512i) {
        // SAFETY: forwarded contract.
        let (w01, w23) = unsafe { self.expand() };
        let bias = _mm512_set1_epi8(Self::BIAS);
        (_mm512_xor_si512(w01, bias), _mm512_xor_si512(w23, bias))
    }
    fn d(&self) -> *const u16 {
        self.d.as_ptr().cast()
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi2,avx2,fma,f16c")]
unsafe fn gemv<X: Codes>(groups: &[X], act: &[BlockQ8_0], out: &mut [f32]) {
    let bias = _mm512_set1_epi8(X::BIAS);
    let spread01 = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    let spread23 = _mm512_setr_epi32(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    // The column's side (codes, bias sums, scale) is recomputed per group:
    // kept in memory for all groups instead, it was 192 bytes per block, more
    // than the weights, and made this 1.5-2x slower.
    for (group, out) in groups.chunks_exact(act.len()).zip(out.chunks_exact_mut(4)) {
        let (mut acc01, mut acc23) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        for (b, a) in group.iter().zip(act) {
            crate::x86_avx2::prefetch_ahead(b);
            // SAFETY: a.qs is 32 bytes; b's scales are 8 bytes, its codes as expand() reads them.
            unsafe {
                let y = _mm512_broadcast_i64x4(_mm256_loadu_si256(a.qs.as_ptr().cast()));
                let excess = _mm512_sub_epi32(
                    _mm512_setzero_si512(),
                    _mm512_dpbusd_epi32(_mm512_setzero_si512(), bias, y),
                );
                let (w01, w23) = b.expand();
                let dw = _mm_cvtph_ps(_mm_loadl_epi64(b.d().cast()));
                let da = _mm_cvtph_ps(_mm_set1_epi16(a.d.to_bits() as i16));
                let s = _mm512_castps128_ps512(_mm_mul_ps(dw, da));
                acc01 = _mm512_fmadd_ps(
                    _mm512_permutexvar_ps(spread01, s),
                    _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(excess, w01, y)),
                    acc01,
                );
                acc23 = _mm512_fmadd_ps(
                    _mm512_permutexvar_ps(spread23, s),
                    _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(excess, w23, y)),
                    acc23,
                );
            }
        }
        out[0] = _mm512_mask_reduce_add_ps(0x00FF, acc01);
        out[1] = _mm512_mask_reduce_add_ps(0xFF00, acc01);
        out[2] = _mm512_mask_reduce_add_ps(0x00FF, acc23);
        out[3] = _mm512_mask_reduce_add_ps(0xFF00, acc23);
    }
}

/// Groups of four interleaved Q8_0 2:4 rows against one column.
///
/// # Safety
/// The CPU must have AVX-512 F/BW/VL, VNNI and VBMI2; [`crate::table::X4GemvFn`]'s
/// contract; every mask valid 2:4 (as [`crate::formats::sparse::check_row`] checks).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi2,avx2,fma,f16c")]
pub unsafe fn gemv_q8_0sx4_q8_0_4x1(groups: &[BlockQ8_0Sx4], act: &[BlockQ8_0], out: &mut [f32]) {
    // SAFETY: forwarded contract.
    unsafe { gemv(groups, act, out) }
}

/// Groups of four interleaved Q4_0 2:4 rows against one column.
///
/// # Safety
/// As [`gemv_q8_0sx4_q8_0_4x1`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi2,avx2,fma,f16c")]
pub unsafe fn gemv_q4_0sx4_q8_0_4x1(groups: &[BlockQ4_0Sx4], act: &[BlockQ8_0], out: &mut [f32]) {
    // SAFETY: forwarded contract.
    unsafe { gemv(groups, act, out) }
}

/// Unpacks the first `rows` rows (a multiple of four) of interleaved groups
/// into signed codes (`codes[r * k ..]`, dropped values 0) and scales
/// (`scale[r * k / 32 ..]`): [`crate::panel::Unpacked::fill_x4`]'s work, two
/// rows per `vpexpandb`.
///
/// # Safety
/// The CPU must have AVX-512 F/BW/VL and VBMI2; `groups` holds `rows / 4`
/// groups of `k / 32` blocks with valid masks; `codes` has `rows * k` bytes
/// and `scale` `rows * k / 32` floats.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi2,avx2,fma,f16c")]
pub(crate) unsafe fn unpack_rows<X: Codes>(
    groups: &[X],
    rows: usize,
    k: usize,
    codes: &mut [i8],
    scale: &mut [f32],
) {
    let per_row = k / 32;
    debug_assert!(rows % 4 == 0 && groups.len() == rows / 4 * per_row);
    debug_assert!(codes.len() >= rows * k && scale.len() >= rows * per_row);
    let (c, s) = (codes.as_mut_ptr(), scale.as_mut_ptr());
    for (j, b) in groups.iter().enumerate() {
        let (g, i) = (j / per_row, j % per_row);
        let r0 = 4 * g;
        // SAFETY: row r0 + 3 < rows and block i < per_row: inside codes and
        // scale (lengths above); masks and scales of b are 16 and 8 bytes.
        unsafe {
            let (v01, v23) = b.values();
            let at = |r: usize| c.add((r0 + r) * k + 32 * i).cast::<__m256i>();
            _mm256_storeu_si256(at(0), _mm512_castsi512_si256(v01));
            _mm256_storeu_si256(at(1), _mm512_extracti64x4_epi64::<1>(v01));
            _mm256_storeu_si256(at(2), _mm512_castsi512_si256(v23));
            _mm256_storeu_si256(at(3), _mm512_extracti64x4_epi64::<1>(v23));
            let d: [f32; 4] = std::mem::transmute(_mm_cvtph_ps(_mm_loadl_epi64(b.d().cast())));
            for (r, d) in d.into_iter().enumerate() {
                *s.add((r0 + r) * per_row + i) = d;
            }
        }
    }
}

/// Groups of four interleaved dense Q8_0 rows against one column.
///
/// # Safety
/// As [`gemv_q8_0sx4_q8_0_4x1`] (no masks).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi2,avx2,fma,f16c")]
pub unsafe fn gemv_q8_0x4_q8_0_4x1(groups: &[BlockQ8_0x4], act: &[BlockQ8_0], out: &mut [f32]) {
    // SAFETY: forwarded contract.
    unsafe { gemv(groups, act, out) }
}

/// Groups of four interleaved dense Q5_0 rows against one column.
///
/// # Safety
/// As [`gemv_q8_0sx4_q8_0_4x1`] (no masks).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi2,avx2,fma,f16c")]
pub unsafe fn gemv_q5_0x4_q8_0_4x1(groups: &[BlockQ5_0x4], act: &[BlockQ8_0], out: &mut [f32]) {
    // SAFETY: forwarded contract.
    unsafe { gemv(groups, act, out) }
}

/// Groups of four interleaved dense IQ4_NL rows against one column.
///
/// # Safety
/// As [`gemv_q8_0sx4_q8_0_4x1`] (no masks).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi2,avx2,fma,f16c")]
pub unsafe fn gemv_iq4_nlx4_q8_0_4x1(groups: &[BlockIq4Nlx4], act: &[BlockQ8_0], out: &mut [f32]) {
    // SAFETY: forwarded contract.
    unsafe { gemv(groups, act, out) }
}

/// Groups of four interleaved dense Q4_0 rows against one column.
///
/// # Safety
/// As [`gemv_q8_0sx4_q8_0_4x1`] (no masks).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi2,avx2,fma,f16c")]
pub unsafe fn gemv_q4_0x4_q8_0_4x1(groups: &[BlockQ4_0x4], act: &[BlockQ8_0], out: &mut [f32]) {
    // SAFETY: forwarded contract.
    unsafe { gemv(groups, act, out) }
}
