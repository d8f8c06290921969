//! Q5_K: Q4_K's layout (8 sub-blocks of 32 with 6-bit scales and mins, the
//! block's f16 `d` and `dmin`) with a fifth bit per code in `qh`.

use super::{check_out, magnitude, nearest_code, set_bits, weight_block, BlockQ8K, Format, QK_K};
use crate::formats::q4_k::scales_mins;
use crate::formats::scale_min_k4;
use crate::panel::PanelFormat;
use crate::testdata::{RandomBlock, Rng};
use crate::Result;
use half::f16;

/// ggml's `block_q5_K`: value `32j + l` is `d * sc[j] * q - dmin * m[j]`, where
/// q's low 4 bits are nibble `j % 2` of `qs[32(j / 2) + l]` and its fifth bit
/// is bit `j` of `qh[l]`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ5K {
    pub d: f16,
    pub dmin: f16,
    /// Eight 6-bit scales and eight 6-bit mins, packed as Q4_K's.
    pub scales: [u8; 12],
    pub qh: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 2],
}

// GGML_TYPE_Q5_K; LLAMA_FTYPE_MOSTLY_Q5_K_M.
weight_block!(
    BlockQ5K,
    Q5K,
    "q5_k",
    len QK_K,
    bytes 2 + 2 + 12 + 32 + 128,
    ggml 13,
    ftype Some(17),
    BlockQ8K,
    dequantize_row_q5_k,
    block_terms,
    block_magnitude,
    super::quantize_row_q8_k,
    round round_at
);

/// The 5-bit code (0..=31) of value `i` of a block.
#[inline(always)]
fn code(b: &BlockQ5K, i: usize) -> u8 {
    let (j, l) = (i / 32, i % 32);
    let low = (b.qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 0x0F;
    low | ((b.qh[l] >> j) & 1) << 4
}

/// Rounds value `i` to its nearest code under its sub-block's scale and min
/// ([`crate::formats::WeightBlock::round_at`]).
fn round_at(b: &mut BlockQ5K, i: usize, w: f32) -> f32 {
    let (j, l) = (i / 32, i % 32);
    let (sc, m) = scale_min_k4(j, &b.scales);
    let (dl, ml) = (b.d.to_f32() * sc as f32, b.dmin.to_f32() * m as f32);
    let value = |q: i32| dl * q as f32 - ml;
    let q = nearest_code(w, dl, -ml, (0, 31), value) as u8;
    set_bits(&mut b.qs[32 * (j / 2) + l], 4 * (j % 2), 4, q & 0x0F);
    set_bits(&mut b.qh[l], j, 1, q >> 4);
    value(q as i32)
}

/// Mirrors ggml's `dequantize_row_q5_K`.
pub fn dequantize_row_q5_k(x: &[BlockQ5K], y: &mut [f32]) -> Result<()> {
    check_out(Format::Q5K, x.len(), y.len())?;
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let (d, min) = (b.d.to_f32(), b.dmin.to_f32());
        for (j, out) in out.chunks_exact_mut(32).enumerate() {
            let (sc, m) = scale_min_k4(j, &b.scales);
            let (dl, ml) = (d * sc as f32, min * m as f32);
            for (l, o) in out.iter_mut().enumerate() {
                *o = dl * code(b, 32 * j + l) as f32 - ml;
            }
        }
    }
    Ok(())
}

/// Per block: `d*dy * sum_j sc[j] * (q . q8)_j  -  dmin*dy * sum_j m[j] * bsum_j`,
/// both sums exact integers.
fn block_terms(a: &BlockQ5K, b: &BlockQ8K) -> (f32, f32) {
    let (mut isum, mut summs) = (0i32, 0i32);
    for (j, q8) in b.qs.chunks_exact(32).enumerate() {
        let (sc, m) = scale_min_k4(j, &a.scales);
        let dot: i32 = (0..32)
            .map(|l| code(a, 32 * j + l) as i32 * q8[l] as i32)
            .sum();
        isum += sc as i32 * dot;
        summs += m as i32 * (b.bsums[2 * j] as i32 + b.bsums[2 * j + 1] as i32);
    }
    (
        a.d.to_f32() * b.d * isum as f32,
        a.dmin.to_f32() * b.d * summs as f32,
    )
}

fn block_magnitude(a: &BlockQ5K, b: &BlockQ8K) -> f32 {
    let (mut iabs, mut mabs) = (0i32, 0i32);
    for (j, q8) in b.qs.chunks_exact(32).enumerate() {
        let (sc, m) = scale_min_k4(j, &a.scales);
        iabs += sc as i32
            * (0..32)
                .map(|l| (code(a, 32 * j + l) as i32 * q8[l] as i32).abs())
                .sum::<i32>();
        mabs += m as i32 * ((b.bsums[2 * j] as i32).abs() + (b.bsums[2 * j + 1] as i32).abs());
    }
    magnitude(a.d.to_f32() * b.d, iabs, a.dmin.to_f32() * b.d, mabs)
}

impl PanelFormat for BlockQ5K {
    const SUB: usize = 32;
    const MIN_SUB: usize = 32;
    const MAX_CODE: u8 = 31; // codes 0..=31
    #[inline(always)]
    fn unpack(&self, codes: &mut [i8], scale: &mut [f32], mins: &mut [i16], min_scale: &mut f32) {
        let sm = scales_mins(&self.scales);
        let d = self.d.to_f32();
        for j in 0..8 {
            scale[j] = d * sm[j] as f32;
            mins[j] = sm[8 + j] as i16;
        }
        *min_scale = -self.dmin.to_f32();
        let codes: &mut [i8; 256] = codes.try_into().expect("a block's codes");
        for (pair, (codes, q)) in codes
            .chunks_exact_mut(64)
            .zip(self.qs.chunks_exact(32))
            .enumerate()
        {
            let (lo, hi) = codes.split_at_mut(32);
            for (((lo, hi), &b), &h) in lo.iter_mut().zip(hi).zip(q).zip(&self.qh) {
                let (h0, h1) = ((h >> (2 * pair)) & 1, (h >> (2 * pair + 1)) & 1);
                (*lo, *hi) = (((b & 0x0F) | h0 << 4) as i8, ((b >> 4) | h1 << 4) as i8);
            }
        }
    }
}

impl super::BlockK4 for BlockQ5K {
    const FIFTH_BIT: bool = true;
    fn scales(&self) -> &[u8; 12] {
        &self.scales
    }
    fn qs(&self) -> &[u8; QK_K / 2] {
        &self.qs
    }
    fn qh(&self) -> &[u8; QK_K / 8] {
        &self.qh
    }
    fn d_dmin_bits(&self) -> u32 {
        self.d.to_bits() as u32 | (self.dmin.to_bits() as u32) << 16
    }
}

impl RandomBlock for BlockQ5K {
    const SCALE_OFFSETS: &'static [usize] = &[0, 2];
    fn random(r: &mut Rng) -> Self {
        BlockQ5K {
            d: r.scale(),
            dmin: r.scale(),
            scales: r.bytes(),
            qh: r.bytes(),
            qs: r.bytes(),
        }
    }
    fn filled(fill: u8, d: u16, dmin: u16) -> Self {
        BlockQ5K {
            d: f16::from_bits(d),
            dmin: f16::from_bits(dmin),
            scales: [fill; 12],
            qh: [fill; 32],
            qs: [fill; 128],
        }
    }
}
