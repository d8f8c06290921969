//! Q4_K, Q5_K and IQ4_XS x Q8_K with i8mm: the 2 x 2 tile ([`super::mm`]).
//! Per block position: both rows unpacked once ([`super::q4_k::unpack`],
//! [`super::iq4_xs::unpack`]); per sub-block of 32, four `smmla` give the
//! 2 x 2 exact sums, scaled by the rows' sub-block scales in i32 (`mla` with
//! `[s0, s0, s1, s1]`); Q4_K/Q5_K's mins (`bsums` pairs times the rows'
//! 6-bit mins) are exact i32 too. One float multiply-add per block position
//! for the four dot products (two with the mins).

use super::load32;
use super::mm::{cross, fma_scaled, pairs_i32, smmla32, tile, PairBlock};
use crate::formats::q4_k::scales_mins;
use crate::formats::{scales_iq4_xs, BlockIq4Xs, BlockK4, BlockQ4K, BlockQ5K, BlockQ8K};
use std::arch::aarch64::*;

/// Weight rows per call.
pub const ROWS: usize = 2;
/// Activation columns per call.
pub const COLS: usize = 4;

/// `Σ_j s[j] · (codes_j · y_j)` over the eight sub-blocks of 32, both rows
/// against both columns, exact; `TYPE` (the ggml type) names the `mca!` region.
///
/// # Safety
/// NEON and i8mm.
#[inline(always)]
unsafe fn sub_blocks<const TYPE: u32>(
    q: [[[int8x16_t; 2]; 8]; 2],
    s: [[i32; 8]; 2],
    a0: &BlockQ8K,
    a1: &BlockQ8K,
) -> int32x4_t {
    let mut isum = vdupq_n_s32(0);
    for j in 0..8 {
        mca!(begin["q4_k_mm.sub i8mm"], c = 2, w = 64);
        // SAFETY: the caller's features; a.qs has 256 bytes, 32j + 32 <= 256.
        unsafe {
            let (y0, y1) = (
                load32(a0.qs.as_ptr().add(32 * j)),
                load32(a1.qs.as_ptr().add(32 * j)),
            );
            let sums = smmla32(vdupq_n_s32(0), q[0][j], q[1][j], y0, y1);
            isum = vmlaq_s32(isum, sums, pairs_i32(s[0][j], s[1][j]));
        }
        mca!(end);
    }
    isum
}

macro_rules! pair_k4 {
    ($($block:ty),*) => {$(
        impl PairBlock for $block {
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
                let (s0, s1) = (scales_mins(b0.scales()), scales_mins(b1.scales()));
                let sc = |s: &[u8; 16]| -> [i32; 8] { std::array::from_fn(|j| s[j] as i32) };
                // The mins: per row the 6-bit mins, per column the bsums of
                // each sub-block of 32 (two of 16 added), in i32.
                let pairs = |a: &BlockQ8K| -> [i32; 8] {
                    std::array::from_fn(|j| a.bsums[2 * j] as i32 + a.bsums[2 * j + 1] as i32)
                };
                let mn = |s: &[u8; 16]| -> [i32; 8] { std::array::from_fn(|j| s[8 + j] as i32) };
                let (dd0, dd1) = (b0.d_dmin_bits(), b1.d_dmin_bits());
                // SAFETY: the caller's features.
                unsafe {
                    let mins = cross([mn(&s0), mn(&s1)], [pairs(a0), pairs(a1)]);
                    let q = [super::q4_k::unpack(b0), super::q4_k::unpack(b1)];
                    let isum = sub_blocks::<{ <Self as crate::formats::QuantBlock>::GGML_TYPE }>(q, [sc(&s0), sc(&s1)], a0, a1);
                    *acc = fma_scaled(*acc, isum, dd0 as u16, dd1 as u16, a0.d, a1.d);
                    let (m0, m1) = ((dd0 >> 16) as u16, (dd1 >> 16) as u16);
                    *sub = fma_scaled(*sub, mins, m0, m1, a0.d, a1.d);
                }
            }
            #[inline(always)]
            unsafe fn one_row<const C: usize>(row: &[Self], acts: &[&[BlockQ8K]], out: &mut [f32]) {
                // SAFETY: forwarded contract.
                unsafe {
            if C == 1 && super::prefetch_on() {
                super::q4_k::dotprod::cols::<$block, 1, true>(row, acts, out)
            } else {
                super::q4_k::dotprod::cols::<$block, C, false>(row, acts, out)
            }
        }
            }
        }
    )*};
}
pair_k4!(BlockQ4K, BlockQ5K);

impl PairBlock for BlockIq4Xs {
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
        let sc = |b: &BlockIq4Xs| -> [i32; 8] { scales_iq4_xs(b).map(i32::from) };
        // SAFETY: the caller's features.
        unsafe {
            let q = [super::iq4_xs::unpack(b0), super::iq4_xs::unpack(b1)];
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
                super::iq4_xs::dotprod::cols::<1, true>(row, acts, out)
            } else {
                super::iq4_xs::dotprod::cols::<C, false>(row, acts, out)
            }
        }
    }
}

/// The entry points (`crate::table`).
pub mod i8mm {
    use super::*;
    row_kernel!(gemv_q4_k_q8_k_2x4_i8mm, "neon,dotprod,i8mm", BlockQ4K, BlockQ8K, tile<BlockQ4K>, rows [1, 2], cols [1, 2, 3, 4]);
    row_kernel!(gemv_q5_k_q8_k_2x4_i8mm, "neon,dotprod,i8mm", BlockQ5K, BlockQ8K, tile<BlockQ5K>, rows [1, 2], cols [1, 2, 3, 4]);
    row_kernel!(gemv_iq4_xs_q8_k_2x4_i8mm, "neon,dotprod,i8mm", BlockIq4Xs, BlockQ8K, tile<BlockIq4Xs>, rows [1, 2], cols [1, 2, 3, 4]);
}
