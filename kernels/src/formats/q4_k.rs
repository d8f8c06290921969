//! Q4_K: 256 values in 8 sub-blocks of 32; each sub-block has a 6-bit scale and
//! a 6-bit min, scaled by the block's f16 `d` and `dmin`; 4-bit codes.

use super::{check_out, magnitude, nearest_code, set_bits, weight_block, BlockQ8K, Format, QK_K};
use crate::panel::PanelFormat;
use crate::testdata::{RandomBlock, Rng};
use crate::Result;
use half::f16;

/// ggml's `block_q4_K`: value `32*j + l` is `d * sc[j] * q - dmin * m[j]`, where
/// q is the low nibble of `qs[32*(j/2) + l]` for even j and the high nibble for odd j.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4K {
    pub d: f16,
    pub dmin: f16,
    /// Eight 6-bit scales and eight 6-bit mins, packed as [`scale_min_k4`] reads them.
    pub scales: [u8; 12],
    pub qs: [u8; QK_K / 2],
}

// ggml GGML_TYPE_Q4_K; llama.h LLAMA_FTYPE_MOSTLY_Q4_K_M.
weight_block!(
    BlockQ4K,
    Q4K,
    "q4_k",
    len QK_K,
    bytes 2 + 2 + 12 + 128,
    ggml 12,
    ftype Some(15),
    BlockQ8K,
    dequantize_row_q4_k,
    block_terms,
    block_magnitude,
    super::quantize_row_q8_k,
    round round_at
);

/// The 6-bit (scale, min) of sub-block `j` (ggml's `get_scale_min_k4`), also used by Q5_K.
#[inline]
pub fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// The 8 sub-block scales (bytes 0..8) and 8 mins (bytes 8..16) of a block,
/// decoded four at a time from the 12 packed bytes (what [`crate::formats::scale_min_k4`]
/// does one at a time; the SIMD kernels' form).
#[inline(always)]
pub fn scales_mins(s: &[u8; 12]) -> [u8; 16] {
    const K1: u32 = 0x3f3f_3f3f;
    const K2: u32 = 0x0f0f_0f0f;
    const K3: u32 = 0x0303_0303;
    let w = |i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
    let (u0, u1, u2) = (w(0), w(4), w(8));
    let scales_lo = u0 & K1;
    let scales_hi = (u2 & K2) | (((u0 >> 6) & K3) << 4);
    let mins_lo = u1 & K1;
    let mins_hi = ((u2 >> 4) & K2) | (((u1 >> 6) & K3) << 4);
    let mut out = [0u8; 16];
    for (i, v) in [scales_lo, scales_hi, mins_lo, mins_hi]
        .into_iter()
        .enumerate()
    {
        out[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
    }
    out
}

/// Rounds value `i` to its nearest code under its sub-block's scale and min
/// ([`crate::formats::WeightBlock::round_at`]).
fn round_at(b: &mut BlockQ4K, i: usize, w: f32) -> f32 {
    let (j, l) = (i / 32, i % 32);
    let (sc, m) = scale_min_k4(j, &b.scales);
    let (dl, ml) = (b.d.to_f32() * sc as f32, b.dmin.to_f32() * m as f32);
    let value = |q: i32| dl * q as f32 - ml;
    let q = nearest_code(w, dl, -ml, (0, 15), value);
    set_bits(&mut b.qs[32 * (j / 2) + l], 4 * (j % 2), 4, q as u8);
    value(q)
}

/// Mirrors ggml's `dequantize_row_q4_K`.
pub fn dequantize_row_q4_k(x: &[BlockQ4K], y: &mut [f32]) -> Result<()> {
    check_out(Format::Q4K, x.len(), y.len())?;
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = b.d.to_f32();
        let min = b.dmin.to_f32();
        for (pair, (q, out)) in
            b.qs.chunks_exact(32)
                .zip(out.chunks_exact_mut(64))
                .enumerate()
        {
            let (sc1, m1) = scale_min_k4(2 * pair, &b.scales);
            let (sc2, m2) = scale_min_k4(2 * pair + 1, &b.scales);
            let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
            for l in 0..32 {
                out[l] = d1 * (q[l] & 0x0F) as f32 - m1;
                out[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
            }
        }
    }
    Ok(())
}

/// Per block: `d*dy * sum_j sc[j] * (q . q8)_j  -  dmin*dy * sum_j m[j] * bsum_j`,
/// with both sums over sub-blocks exact integers.
fn block_terms(a: &BlockQ4K, b: &BlockQ8K) -> (f32, f32) {
    let (mut isum, mut summs) = (0i32, 0i32);
    for (pair, q) in a.qs.chunks_exact(32).enumerate() {
        for half in 0..2 {
            let j = 2 * pair + half;
            let (sc, m) = scale_min_k4(j, &a.scales);
            let q8 = &b.qs[32 * j..32 * j + 32];
            let dot: i32 = (0..32)
                .map(|l| ((q[l] >> (4 * half)) & 0x0F) as i32 * q8[l] as i32)
                .sum();
            isum += sc as i32 * dot;
            summs += m as i32 * (b.bsums[2 * j] as i32 + b.bsums[2 * j + 1] as i32);
        }
    }
    (
        a.d.to_f32() * b.d * isum as f32,
        a.dmin.to_f32() * b.d * summs as f32,
    )
}

fn block_magnitude(a: &BlockQ4K, b: &BlockQ8K) -> f32 {
    let (mut iabs, mut mabs) = (0i32, 0i32);
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, &a.scales);
        let q = &a.qs[32 * (j / 2)..32 * (j / 2) + 32];
        let q8 = &b.qs[32 * j..32 * j + 32];
        iabs += sc as i32
            * (0..32)
                .map(|l| (((q[l] >> (4 * (j % 2))) & 0x0F) as i32 * q8[l] as i32).abs())
                .sum::<i32>();
        mabs += m as i32 * ((b.bsums[2 * j] as i32).abs() + (b.bsums[2 * j + 1] as i32).abs());
    }
    magnitude(a.d.to_f32() * b.d, iabs, a.dmin.to_f32() * b.d, mabs)
}

impl PanelFormat for BlockQ4K {
    const SUB: usize = 32;
    const MIN_SUB: usize = 32;
    const MAX_CODE: u8 = 15; // codes 0..=15
    #[inline(always)]
    fn unpack(&self, codes: &mut [i8], scale: &mut [f32], mins: &mut [i16], min_scale: &mut f32) {
        let sm = crate::formats::q4_k::scales_mins(&self.scales);
        let d = self.d.to_f32();
        for j in 0..8 {
            scale[j] = d * sm[j] as f32;
            mins[j] = sm[8 + j] as i16;
        }
        *min_scale = -self.dmin.to_f32();
        let codes: &mut [i8; 256] = codes.try_into().expect("a block's codes");
        // Value i from byte 32 * (i / 64) + i % 32, low or high nibble by
        // (i / 32) % 2: one indexed loop, which the compiler vectorizes.
        for (i, c) in codes.iter_mut().enumerate() {
            let b = self.qs[32 * (i / 64) + i % 32];
            *c = (b >> (4 * ((i / 32) % 2)) & 0x0F) as i8;
        }
    }
}

impl super::BlockK4 for BlockQ4K {
    const FIFTH_BIT: bool = false;
    fn scales(&self) -> &[u8; 12] {
        &self.scales
    }
    fn qs(&self) -> &[u8; QK_K / 2] {
        &self.qs
    }
    fn qh(&self) -> &[u8; QK_K / 8] {
        &[0; QK_K / 8]
    }
    fn d_dmin_bits(&self) -> u32 {
        self.d.to_bits() as u32 | (self.dmin.to_bits() as u32) << 16
    }
}

impl RandomBlock for BlockQ4K {
    const SCALE_OFFSETS: &'static [usize] = &[0, 2];
    fn random(r: &mut Rng) -> Self {
        BlockQ4K {
            d: r.scale(),
            dmin: r.scale(),
            scales: r.bytes(),
            qs: r.bytes(),
        }
    }
    fn filled(fill: u8, d: u16, dmin: u16) -> Self {
        BlockQ4K {
            d: f16::from_bits(d),
            dmin: f16::from_bits(dmin),
            scales: [fill; 12],
            qs: [fill; 128],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_mins_matches_scale_min_k4() {
        let mut s = [0u8; 12];
        for seed in 0u32..2000 {
            for (i, b) in s.iter_mut().enumerate() {
                *b = (seed.wrapping_mul(2654435761).rotate_left(i as u32 * 5) >> 7) as u8
                    ^ (i as u8 * 37);
            }
            let sm = scales_mins(&s);
            for j in 0..8 {
                assert_eq!(
                    (sm[j], sm[8 + j]),
                    scale_min_k4(j, &s),
                    "bytes {s:?}, sub-block {j}"
                );
            }
        }
    }
}
