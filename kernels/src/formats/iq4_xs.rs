//! IQ4_XS: 256 values in 8 sub-blocks of 32, each with a 6-bit scale (stored
//! +32: 4 low bits in `scales_l`, 2 high bits in `scales_h`) times the
//! block's f16 `d`; 4-bit indices into IQ4_NL's non-linear table.

use super::grids::KVALUES_IQ4NL;
use super::{check_out, magnitude, nearest_entry, set_bits, weight_block, BlockQ8K, Format, QK_K};
use crate::panel::PanelFormat;
use crate::testdata::{RandomBlock, Rng};
use crate::Result;
use half::f16;

/// ggml's `block_iq4_xs`: value `32ib + j` (j < 16) is
/// `d * (ls(ib) - 32) * KVALUES_IQ4NL[qs[16ib + j] & 15]`, value `32ib + 16 + j`
/// takes the high nibble.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIq4Xs {
    pub d: f16,
    pub scales_h: u16,
    pub scales_l: [u8; QK_K / 64],
    pub qs: [u8; QK_K / 2],
}

// GGML_TYPE_IQ4_XS; LLAMA_FTYPE_MOSTLY_IQ4_XS.
weight_block!(
    BlockIq4Xs,
    IQ4_XS,
    "iq4_xs",
    len QK_K,
    bytes 2 + 2 + 4 + 128,
    ggml 23,
    ftype Some(30),
    BlockQ8K,
    dequantize_row_iq4_xs,
    block_terms,
    block_magnitude,
    super::quantize_row_q8_k,
    round round_at
);

/// The eight signed sub-block scales (`ls - 32`, -32..=31).
#[inline(always)]
pub fn scales_iq4_xs(b: &BlockIq4Xs) -> [i8; 8] {
    std::array::from_fn(|ib| {
        let low = (b.scales_l[ib / 2] >> (4 * (ib % 2))) & 0x0F;
        let high = ((b.scales_h >> (2 * ib)) & 3) as u8;
        (low | high << 4) as i8 - 32
    })
}

/// The table value of value `i` of a block.
#[inline(always)]
fn code(b: &BlockIq4Xs, i: usize) -> i32 {
    let (ib, j) = (i / 32, i % 32);
    let nibble = (b.qs[16 * ib + j % 16] >> (4 * (j / 16))) & 0x0F;
    KVALUES_IQ4NL[nibble as usize] as i32
}

/// Rounds value `i` to the nearest of the table's values under its
/// sub-block's scale ([`crate::formats::WeightBlock::round_at`]).
fn round_at(b: &mut BlockIq4Xs, i: usize, w: f32) -> f32 {
    let (ib, j) = (i / 32, i % 32);
    let dl = b.d.to_f32() * scales_iq4_xs(b)[ib] as f32;
    let value = |q: usize| dl * KVALUES_IQ4NL[q] as i32 as f32;
    let q = nearest_entry(w, 16, value);
    set_bits(&mut b.qs[16 * ib + j % 16], 4 * (j / 16), 4, q as u8);
    value(q)
}

/// Mirrors ggml's `dequantize_row_iq4_xs`: `(d * (ls - 32)) * value`.
pub fn dequantize_row_iq4_xs(x: &[BlockIq4Xs], y: &mut [f32]) -> Result<()> {
    check_out(Format::IQ4_XS, x.len(), y.len())?;
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = b.d.to_f32();
        for (ib, (out, sc)) in out.chunks_exact_mut(32).zip(scales_iq4_xs(b)).enumerate() {
            let dl = d * sc as f32;
            for (j, o) in out.iter_mut().enumerate() {
                *o = dl * code(b, 32 * ib + j) as f32;
            }
        }
    }
    Ok(())
}

/// Per block: `d*dy * sum_ib scale[ib] * (value . q8)_ib`, the sums exact.
fn block_terms(a: &BlockIq4Xs, b: &BlockQ8K) -> (f32, f32) {
    let mut isum = 0i32;
    for (ib, (q8, sc)) in b.qs.chunks_exact(32).zip(scales_iq4_xs(a)).enumerate() {
        let dot: i32 = (0..32).map(|j| code(a, 32 * ib + j) * q8[j] as i32).sum();
        isum += sc as i32 * dot;
    }
    (a.d.to_f32() * b.d * isum as f32, 0.0)
}

fn block_magnitude(a: &BlockIq4Xs, b: &BlockQ8K) -> f32 {
    let mut iabs = 0i32;
    for (ib, (q8, sc)) in b.qs.chunks_exact(32).zip(scales_iq4_xs(a)).enumerate() {
        let abs: i32 = (0..32)
            .map(|j| (code(a, 32 * ib + j) * q8[j] as i32).abs())
            .sum();
        iabs += (sc as i32).abs() * abs;
    }
    magnitude(a.d.to_f32() * b.d, iabs, 0.0, 0)
}

/// Per byte, the table values of its low and its high nibble.
const BYTE_VALUES: [[i8; 2]; 256] = {
    let mut t = [[0i8; 2]; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = [KVALUES_IQ4NL[b & 15], KVALUES_IQ4NL[b >> 4]];
        b += 1;
    }
    t
};

impl PanelFormat for BlockIq4Xs {
    const SUB: usize = 32;
    const MIN_SUB: usize = 0;
    const MAX_CODE: u8 = 127; // table values -127..=113
    /// Codes the table values, scales `d * (ls - 32)` per 32 values.
    #[inline(always)]
    fn unpack(&self, codes: &mut [i8], scale: &mut [f32], _: &mut [i16], _: &mut f32) {
        let d = self.d.to_f32();
        for (s, sc) in scale.iter_mut().zip(scales_iq4_xs(self)) {
            *s = d * sc as f32;
        }
        // Values 32 j + i and 32 j + 16 + i from byte 16 j + i.
        let codes: &mut [i8; 256] = codes.try_into().expect("a block's codes");
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("ssse3") {
            use std::arch::x86_64::*;
            // SAFETY: SSSE3 was detected; each load reads 16 of the table's
            // 16 or of qs's 128 bytes (16 j + 16 <= 128), each store writes
            // 16 of codes' 256 (32 j + 32 <= 256).
            unsafe {
                let table = _mm_loadu_si128(KVALUES_IQ4NL.as_ptr().cast());
                let m = _mm_set1_epi8(15);
                for j in 0..8 {
                    let q = _mm_loadu_si128(self.qs.as_ptr().add(16 * j).cast());
                    let lo = _mm_shuffle_epi8(table, _mm_and_si128(q, m));
                    let hi = _mm_shuffle_epi8(table, _mm_and_si128(_mm_srli_epi16::<4>(q), m));
                    _mm_storeu_si128(codes.as_mut_ptr().add(32 * j).cast(), lo);
                    _mm_storeu_si128(codes.as_mut_ptr().add(32 * j + 16).cast(), hi);
                }
            }
            return;
        }
        // Elsewhere one lookup of both table values per byte.
        for (codes, qs) in codes.chunks_exact_mut(32).zip(self.qs.chunks_exact(16)) {
            let (lo, hi) = codes.split_at_mut(16);
            for ((lo, hi), &b) in lo.iter_mut().zip(hi).zip(qs) {
                [*lo, *hi] = BYTE_VALUES[b as usize];
            }
        }
    }
}

impl RandomBlock for BlockIq4Xs {
    const SCALE_OFFSETS: &'static [usize] = &[0];
    fn random(r: &mut Rng) -> Self {
        let h: [u8; 2] = r.bytes();
        BlockIq4Xs {
            d: r.scale(),
            scales_h: u16::from_le_bytes(h),
            scales_l: r.bytes(),
            qs: r.bytes(),
        }
    }
    fn filled(fill: u8, d: u16, _: u16) -> Self {
        BlockIq4Xs {
            d: f16::from_bits(d),
            scales_h: u16::from_le_bytes([fill; 2]),
            scales_l: [fill; 4],
            qs: [fill; 128],
        }
    }
}
