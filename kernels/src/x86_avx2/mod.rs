//! x86-64 kernels for AVX2 + FMA + F16C. Entry points are `#[target_feature]`
//! functions reached only through the dispatch table ([`crate::table`]), which checks the CPU first.

pub mod dequant;
pub mod grid;
pub mod iq4_xs;
pub mod panel;
pub mod plane_lut;
pub mod q2_k;
pub mod q4_k;
pub mod q6_k;
pub mod q8_0;
pub mod quant;

use std::arch::x86_64::*;

/// Horizontal sum of eight f32.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// 0xFF in byte `i` where bit `i` of `bits` is set: byte `i / 8` of `bits`
/// spread to byte `i`, then a test of its bit `i % 8`.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn bit_bytes(bits: u32) -> __m256i {
    let bytes = _mm256_shuffle_epi8(
        _mm256_set1_epi32(bits as i32),
        _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0,
        ),
    );
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    _mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit)
}

/// How far ahead of the block it is reading a GEMV (a row kernel run on one
/// column, or a four-row interleaved GEMV) asks the CPU for the weights: the
/// hardware prefetchers alone leave one thread's stream from DRAM well below
/// what the kernel runs in cache. Issued per block, spread through the loop:
/// a whole row at a time, from the driver, is slower on long rows. The
/// distance sweep and the measurements: docs/BENCHMARKS.md.
pub(crate) const PREFETCH_AHEAD: usize = 8192;

/// `prefetcht0` of each cache line of `block`'s size, [`PREFETCH_AHEAD`] bytes on.
#[inline(always)]
pub(crate) fn prefetch_ahead<T>(block: &T) {
    let p = (block as *const T)
        .cast::<i8>()
        .wrapping_add(PREFETCH_AHEAD);
    for off in (0..std::mem::size_of::<T>()).step_by(64) {
        // SAFETY: a prefetch never faults and changes nothing the program sees,
        // whatever the address (past the matrix's end it is simply wasted).
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                p.wrapping_add(off),
            )
        };
    }
}
