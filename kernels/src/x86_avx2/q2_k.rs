//! Q2_K and Q3_K x Q8_K on AVX2: one weight row against up to [`COLS`]
//! activation columns, each unpacked weight block reused for every column.
//!
//! Both formats keep 2 low bits of each code in `qs`: byte `l` of half `h`
//! holds, at bit shift `2s`, the value `128h + 32s + l`, so one shift-and-mask
//! of a 32-byte load gives 32 codes that line up with 32 contiguous activation
//! bytes, 16 of sub-block `8h + 2s` then 16 of sub-block `8h + 2s + 1`: the two
//! 128-bit halves of the vector, which `vpmaddwd` scales with one vector
//! holding each half's sub-block scale.
//!
//! Q3_K adds a high bit per code (`hmask`) and centres codes by -4. With
//! `q' = q + 4` in 0..8 (unsigned, as `vpmaddubsw` wants), the dot is
//! `sum sc * (q' . y) - 4 * sum sc * bsum`, the correction from the activation
//! block sums. All integer sums are exact.

use super::hsum_ps;
use crate::formats::{BlockQ2K, BlockQ3K, BlockQ8K};
use std::arch::x86_64::*;

/// A Q3_K block's sixteen signed scales, as [`crate::formats::scales_q3_k`]
/// unpacks them, in one vector: the low nibbles are bytes 0..8 of `scales`
/// (scales 0..8) and their high nibbles (8..16); the 2-bit tops of scales
/// `4i .. 4i + 4` are bit pair `i` of bytes 8..12. About a dozen
/// instructions, where the scalar unpacking compiled to twice that.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn scales_q3_k_x86(b: &BlockQ3K) -> __m128i {
    // 16 bytes ending with the block (`scales` at bytes 2..14, then `d`):
    // inside the block, so never past the end of a slice of blocks.
    const _: () = assert!(std::mem::size_of::<BlockQ3K>() == 110);
    // SAFETY: bytes 94..110 of a 110-byte block.
    let x = unsafe { _mm_loadu_si128((b as *const BlockQ3K).cast::<u8>().add(94).cast()) };
    let low = _mm_shuffle_epi8(
        x,
        _mm_setr_epi8(2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5, 6, 7, 8, 9),
    );
    let low = _mm_and_si128(
        _mm_blend_epi32::<0b1100>(low, _mm_srli_epi16::<4>(low)),
        _mm_set1_epi8(0x0F),
    );
    let top = _mm_shuffle_epi8(
        x,
        _mm_setr_epi8(
            10, 11, 12, 13, 10, 11, 12, 13, 10, 11, 12, 13, 10, 11, 12, 13,
        ),
    );
    let top = _mm_and_si128(
        _mm_srlv_epi32(top, _mm_setr_epi32(0, 2, 4, 6)),
        _mm_set1_epi8(3),
    );
    _mm_sub_epi8(
        _mm_or_si128(low, _mm_slli_epi32::<4>(top)),
        _mm_set1_epi8(32),
    )
}

/// Weight rows per call.
pub const ROWS: usize = 1;
/// Activation columns per call.
pub const COLS: usize = 4;

/// Shuffle masks that put i16 `2s` of a 128-bit half in the low half of a vector
/// and i16 `2s + 1` in the high half (each broadcast to 8 lanes).
#[inline]
#[target_feature(enable = "avx2")]
fn pair_masks() -> [__m256i; 4] {
    std::array::from_fn(|s| {
        let (a, b) = ((4 * s) as i8, (4 * s + 2) as i8);
        let lo = [
            a,
            a + 1,
            a,
            a + 1,
            a,
            a + 1,
            a,
            a + 1,
            a,
            a + 1,
            a,
            a + 1,
            a,
            a + 1,
            a,
            a + 1,
        ];
        let hi = [
            b,
            b + 1,
            b,
            b + 1,
            b,
            b + 1,
            b,
            b + 1,
            b,
            b + 1,
            b,
            b + 1,
            b,
            b + 1,
            b,
            b + 1,
        ];
        // SAFETY: both arrays are 16 bytes.
        unsafe {
            _mm256_set_m128i(
                _mm_loadu_si128(hi.as_ptr().cast()),
                _mm_loadu_si128(lo.as_ptr().cast()),
            )
        }
    })
}

/// The per-(h, s) scale vectors of a block from its 16 sub-block scales as i16.
#[inline]
#[target_feature(enable = "avx2")]
fn scale_vectors(scales16: __m256i, masks: &[__m256i; 4]) -> [__m256i; 8] {
    let halves = [
        _mm256_permute2x128_si256::<0x00>(scales16, scales16),
        _mm256_permute2x128_si256::<0x11>(scales16, scales16),
    ];
    std::array::from_fn(|hs| _mm256_shuffle_epi8(halves[hs / 4], masks[hs % 4]))
}

/// Shared body: `codes(hs)` gives the 32 unsigned codes of (half, quarter) `hs`.
#[inline(always)]
unsafe fn block_dot<const C: usize>(
    codes: &[__m256i; 8],
    sc: &[__m256i; 8],
    a: &[&BlockQ8K; C],
    isum: &mut [__m256i; C],
) {
    for (hs, (q, s)) in codes.iter().zip(sc).enumerate() {
        for c in 0..C {
            // SAFETY: a[c].qs has 256 bytes; hs*32 + 32 <= 256 (value 128h + 32s = 32*hs).
            let y = unsafe { _mm256_loadu_si256(a[c].qs.as_ptr().add(32 * hs).cast()) };
            // SAFETY: AVX2 is enabled in every caller.
            isum[c] = unsafe {
                _mm256_add_epi32(isum[c], _mm256_madd_epi16(_mm256_maddubs_epi16(*q, y), *s))
            };
        }
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q2_cols<const C: usize>(row: &[BlockQ2K], acts: &[&[BlockQ8K]], out: &mut [f32]) {
    let mut acc = [_mm256_setzero_ps(); C];
    let masks = pair_masks();
    let m3 = _mm256_set1_epi8(3);
    let m4 = _mm_set1_epi8(0x0F);
    for (i, b) in row.iter().enumerate() {
        if C == 1 {
            super::prefetch_ahead(b);
        }
        // SAFETY: the caller guarantees every acts[c] has row.len() blocks.
        let a: [&BlockQ8K; C] =
            std::array::from_fn(|c| unsafe { acts.get_unchecked(c).get_unchecked(i) });
        // SAFETY: scales is 16 bytes.
        let packed = unsafe { _mm_loadu_si128(b.scales.as_ptr().cast()) };
        let scales16 = _mm256_cvtepu8_epi16(_mm_and_si128(packed, m4));
        let mins16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(packed), m4));
        let sc = scale_vectors(scales16, &masks);
        let mut codes = [_mm256_setzero_si256(); 8];
        for h in 0..2 {
            // SAFETY: qs has 64 bytes; h*32 + 32 <= 64.
            let v = unsafe { _mm256_loadu_si256(b.qs.as_ptr().add(32 * h).cast()) };
            codes[4 * h] = _mm256_and_si256(v, m3);
            codes[4 * h + 1] = _mm256_and_si256(_mm256_srli_epi16::<2>(v), m3);
            codes[4 * h + 2] = _mm256_and_si256(_mm256_srli_epi16::<4>(v), m3);
            codes[4 * h + 3] = _mm256_and_si256(_mm256_srli_epi16::<6>(v), m3);
        }
        let mut isum = [_mm256_setzero_si256(); C];
        // SAFETY: AVX2 is enabled here; shapes as documented.
        unsafe { block_dot(&codes, &sc, &a, &mut isum) };
        let dd = _mm256_cvtph_ps(_mm_set1_epi32(
            (b.d.to_bits() as u32 | (b.dmin.to_bits() as u32) << 16) as i32,
        ));
        let (d, dmin) = (_mm256_moveldup_ps(dd), _mm256_movehdup_ps(dd));
        for c in 0..C {
            // SAFETY: bsums is 16 i16 = 32 bytes.
            let bsums = unsafe { _mm256_loadu_si256(a[c].bsums.as_ptr().cast()) };
            let msum = _mm256_cvtepi32_ps(_mm256_madd_epi16(bsums, mins16));
            let dy = _mm256_set1_ps(a[c].d);
            acc[c] = _mm256_fmadd_ps(_mm256_mul_ps(d, dy), _mm256_cvtepi32_ps(isum[c]), acc[c]);
            acc[c] = _mm256_fnmadd_ps(_mm256_mul_ps(dmin, dy), msum, acc[c]);
        }
    }
    for c in 0..C {
        out[c] = hsum_ps(acc[c]);
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q3_cols<const C: usize>(row: &[BlockQ3K], acts: &[&[BlockQ8K]], out: &mut [f32]) {
    let mut acc = [_mm256_setzero_ps(); C];
    let masks = pair_masks();
    let m3 = _mm256_set1_epi8(3);
    let four = _mm256_set1_epi8(4);
    for (i, b) in row.iter().enumerate() {
        if C == 1 {
            super::prefetch_ahead(b);
        }
        // SAFETY: the caller guarantees every acts[c] has row.len() blocks.
        let a: [&BlockQ8K; C] =
            std::array::from_fn(|c| unsafe { acts.get_unchecked(c).get_unchecked(i) });
        let scales16 = _mm256_cvtepi8_epi16(scales_q3_k_x86(b));
        let sc = scale_vectors(scales16, &masks);
        // SAFETY: hmask is 32 bytes.
        let hm = unsafe { _mm256_loadu_si256(b.hmask.as_ptr().cast()) };
        let mut codes = [_mm256_setzero_si256(); 8];
        for h in 0..2 {
            // SAFETY: qs has 64 bytes; h*32 + 32 <= 64.
            let v = unsafe { _mm256_loadu_si256(b.qs.as_ptr().add(32 * h).cast()) };
            let low = [
                _mm256_and_si256(v, m3),
                _mm256_and_si256(_mm256_srli_epi16::<2>(v), m3),
                _mm256_and_si256(_mm256_srli_epi16::<4>(v), m3),
                _mm256_and_si256(_mm256_srli_epi16::<6>(v), m3),
            ];
            for (s, lo) in low.into_iter().enumerate() {
                // q' = low + 4 * (high bit of value 128h + 32s + l: bit 4h + s of hmask[l]).
                let bit = _mm256_set1_epi8(1 << (4 * h + s));
                let set = _mm256_cmpeq_epi8(_mm256_and_si256(hm, bit), bit);
                codes[4 * h + s] = _mm256_add_epi8(lo, _mm256_and_si256(set, four));
            }
        }
        let mut isum = [_mm256_setzero_si256(); C];
        // SAFETY: AVX2 is enabled here; shapes as documented.
        unsafe { block_dot(&codes, &sc, &a, &mut isum) };
        let d = _mm256_cvtph_ps(_mm_set1_epi16(b.d.to_bits() as i16));
        for c in 0..C {
            // SAFETY: bsums is 16 i16 = 32 bytes.
            let bsums = unsafe { _mm256_loadu_si256(a[c].bsums.as_ptr().cast()) };
            // The -4 centring: 4 * sum over sub-blocks of scale * bsum.
            let corr = _mm256_slli_epi32::<2>(_mm256_madd_epi16(bsums, scales16));
            let exact = _mm256_sub_epi32(isum[c], corr);
            acc[c] = _mm256_fmadd_ps(
                _mm256_mul_ps(d, _mm256_set1_ps(a[c].d)),
                _mm256_cvtepi32_ps(exact),
                acc[c],
            );
        }
    }
    for c in 0..C {
        out[c] = hsum_ps(acc[c]);
    }
}

row_kernel!(
    gemv_q2_k_q8_k_1x4,
    "avx2,fma,f16c",
    BlockQ2K,
    BlockQ8K,
    q2_cols,
    [1, 2, 3, 4]
);
row_kernel!(
    gemv_q3_k_q8_k_1x4,
    "avx2,fma,f16c",
    BlockQ3K,
    BlockQ8K,
    q3_cols,
    [1, 2, 3, 4]
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::scales_q3_k;
    use crate::testdata::Rng;

    #[test]
    fn vector_q3_k_scales_equal_the_scalar_unpacking() {
        if !is_x86_feature_detected!("avx2") {
            eprintln!("skipped: this CPU has no AVX2");
            return;
        }
        let mut r = Rng::new(7);
        let mut b: BlockQ3K = bytemuck::Zeroable::zeroed();
        // Random bytes, then each byte of the scales through all 256 values.
        for case in 0..4096 + 12 * 256 {
            for s in b.scales.iter_mut().chain(b.qs.iter_mut().rev().take(2)) {
                *s = r.next_u64() as u8;
            }
            if case >= 4096 {
                let i = case - 4096;
                b.scales[i / 256] = (i % 256) as u8;
            }
            b.d = half::f16::from_bits(r.next_u64() as u16);
            let mut got = [0i8; 16];
            // SAFETY: AVX2 detected above; got is 16 bytes.
            unsafe { _mm_storeu_si128(got.as_mut_ptr().cast(), scales_q3_k_x86(&b)) };
            assert_eq!(got, scales_q3_k(&b.scales), "scales {:?}", b.scales);
        }
    }
}
