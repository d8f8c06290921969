//! Q2_K, Q3_K and Q6_K x Q8_K with i8mm: the 2 x 2 tile ([`super::mm`])
//! for the formats with 16 sub-blocks of 16. Per block position: both rows'
//! codes once ([`super::q2_k::q2_codes`]; Q3_K's as `q + 4`,
//! [`super::q2_k::q3_codes`]; Q6_K's as `q - 32`, [`super::q6_k::unpack`]);
//! per sub-block, two `smmla` give the 2 x 2 exact sums, scaled by the rows'
//! sub-block scales in i32 (`mla` with `[s0, s0, s1, s1]`). Q2_K's mins and
//! Q3_K's `-4` centring come from the activation block sums in i32 (Q3_K's
//! subtracted there, exactly). One float multiply-add per block position for
//! the four dot products (two for Q2_K, with its `dmin`).

use super::mm::{cross, fma_scaled, pairs_i32, smmla16, tile, PairBlock};
use super::q2_k::{q2_codes, q3_codes};
use crate::formats::{scales_q3_k, BlockQ2K, BlockQ3K, BlockQ6K, BlockQ8K};
use std::arch::aarch64::*;

/// Weight rows per call.
pub const ROWS: usize = 2;
/// Activation columns per call.
pub const COLS: usize = 4;

/// `Σ_s s[s] · (codes_s · y_s)` over the 16 sub-blocks of 16, both rows
/// against both columns, exact; `TYPE` (the ggml type) names the `mca!` region.
///
/// # Safety
/// NEON and i8mm.
#[inline(always)]
unsafe fn sub_blocks<const TYPE: u32>(
    q: [[int8x16_t; 16]; 2],
    s: [[i32; 16]; 2],
    a0: &BlockQ8K,
    a1: &BlockQ8K,
) -> int32x4_t {
    let mut isum = vdupq_n_s32(0);
    for j in 0..16 {
        mca!(begin["q2_k_mm.sub i8mm"], c = 2, w = 32);
        // SAFETY: the caller's features; a.qs has 256 bytes, 16j + 16 <= 256.
        unsafe {
            let (y0, y1) = (
                vld1q_s8(a0.qs.as_ptr().add(16 * j)),
                vld1q_s8(a1.qs.as_ptr().add(16 * j)),
            );
            let sums = smmla16(vdupq_n_s32(0), q[0][j], q[1][j], y0, y1);
            isum = vmlaq_s32(isum, sums, pairs_i32(s[0][j], s[1][j]));
        }
        mca!(end);
    }
    isum
}

/// The activations' sums of each sub-block of 16, both columns.
fn bsums(a0: &BlockQ8K, a1: &BlockQ8K) -> [[i32; 16]; 2] {
    [a0.bsums.map(i32::from), a1.bsums.map(i32::from)]
}

/// Two `[[int8x16_t; 2]; 8]` code sets as sixteen sub-blocks each.
fn flat(q: [[int8x16_t; 2]; 8]) -> [int8x16_t; 16] {
    std::array::from_fn(|s| q[s / 2][s % 2])
}

impl PairBlock for BlockQ2K {
    type Act = BlockQ8K;
    #[inline(always)]
    unsafe fn step(
        b0: &Self,
        b1: &Self,
        a0: &BlockQ8K,
        a1: &BlockQ8K,
        acc: &mut float32x4_t,
        sub: &mut float32x4_t,
    ) {
        let sc =
            |b: &BlockQ2K| -> [i32; 16] { std::array::from_fn(|s| (b.scales[s] & 0x0F) as i32) };
        let mn = |b: &BlockQ2K| -> [i32; 16] { std::array::from_fn(|s| (b.scales[s] >> 4) as i32) };
        // SAFETY: the caller's features.
        unsafe {
            let mins = cross([mn(b0), mn(b1)], bsums(a0, a1));
            let q = [flat(q2_codes(b0)), flat(q2_codes(b1))];
            let isum = sub_blocks::<{ <Self as crate::formats::QuantBlock>::GGML_TYPE }>(
                q,
                [sc(b0), sc(b1)],
                a0,
                a1,
            );
            *acc = fma_scaled(*acc, isum, b0.d.to_bits(), b1.d.to_bits(), a0.d, a1.d);
            *sub = fma_scaled(*sub, mins, b0.dmin.to_bits(), b1.dmin.to_bits(), a0.d, a1.d);
        }
    }
    #[inline(always)]
    unsafe fn one_row<const C: usize>(row: &[Self], acts: &[&[BlockQ8K]], out: &mut [f32]) {
        // SAFETY: forwarded contract.
        unsafe {
            if C == 1 && super::prefetch_on() {
                super::q2_k::dotprod::q2_cols::<1, true>(row, acts, out)
            } else {
                super::q2_k::dotprod::q2_cols::<C, false>(row, acts, out)
            }
        }
    }
}

impl PairBlock for BlockQ3K {
    type Act = BlockQ8K;
    #[inline(always)]
    unsafe fn step(
        b0: &Self,
        b1: &Self,
        a0: &BlockQ8K,
        a1: &BlockQ8K,
        acc: &mut float32x4_t,
        _sub: &mut float32x4_t,
    ) {
        let sc = |b: &BlockQ3K| -> [i32; 16] { scales_q3_k(&b.scales).map(i32::from) };
        let (s0, s1) = (sc(b0), sc(b1));
        // SAFETY: the caller's features.
        unsafe {
            // The codes are q + 4: subtract 4 * scale * bsum per sub-block.
            let centre = cross([s0.map(|s| 4 * s), s1.map(|s| 4 * s)], bsums(a0, a1));
            let q = [flat(q3_codes(b0)), flat(q3_codes(b1))];
            let isum = sub_blocks::<{ <Self as crate::formats::QuantBlock>::GGML_TYPE }>(
                q,
                [s0, s1],
                a0,
                a1,
            );
            let exact = vsubq_s32(isum, centre);
            *acc = fma_scaled(*acc, exact, b0.d.to_bits(), b1.d.to_bits(), a0.d, a1.d);
        }
    }
    #[inline(always)]
    unsafe fn one_row<const C: usize>(row: &[Self], acts: &[&[BlockQ8K]], out: &mut [f32]) {
        // SAFETY: forwarded contract.
        unsafe {
            if C == 1 && super::prefetch_on() {
                super::q2_k::dotprod::q3_cols::<1, true>(row, acts, out)
            } else {
                super::q2_k::dotprod::q3_cols::<C, false>(row, acts, out)
            }
        }
    }
}

impl PairBlock for BlockQ6K {
    type Act = BlockQ8K;
    #[inline(always)]
    unsafe fn step(
        b0: &Self,
        b1: &Self,
        a0: &BlockQ8K,
        a1: &BlockQ8K,
        acc: &mut float32x4_t,
        _sub: &mut float32x4_t,
    ) {
        let sc = |b: &BlockQ6K| -> [i32; 16] { b.scales.map(i32::from) };
        // SAFETY: the caller's features.
        unsafe {
            let q = [super::q6_k::unpack(b0), super::q6_k::unpack(b1)];
            let isum = sub_blocks::<{ <Self as crate::formats::QuantBlock>::GGML_TYPE }>(
                q,
                [sc(b0), sc(b1)],
                a0,
                a1,
            );
            *acc = fma_scaled(*acc, isum, b0.d.to_bits(), b1.d.to_bits(), a0.d, a1.d);
        }
    }
    #[inline(always)]
    unsafe fn one_row<const C: usize>(row: &[Self], acts: &[&[BlockQ8K]], out: &mut [f32]) {
        // SAFETY: forwarded contract.
        unsafe {
            if C == 1 && super::prefetch_on() {
                super::q6_k::dotprod::cols::<1, true>(row, acts, out)
            } else {
                super::q6_k::dotprod::cols::<C, false>(row, acts, out)
            }
        }
    }
}

/// The entry points (`crate::table`).
pub mod i8mm {
    use super::*;
    row_kernel!(gemv_q2_k_q8_k_2x4_i8mm, "neon,dotprod,i8mm", BlockQ2K, BlockQ8K, tile<BlockQ2K>, rows [1, 2], cols [1, 2, 3, 4]);
    row_kernel!(gemv_q3_k_q8_k_2x4_i8mm, "neon,dotprod,i8mm", BlockQ3K, BlockQ8K, tile<BlockQ3K>, rows [1, 2], cols [1, 2, 3, 4]);
    row_kernel!(gemv_q6_k_q8_k_2x4_i8mm, "neon,dotprod,i8mm", BlockQ6K, BlockQ8K, tile<BlockQ6K>, rows [1, 2], cols [1, 2, 3, 4]);
}
