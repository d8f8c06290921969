//! IQ4_NL: 32 values per block, one f16 scale, 4-bit indices into a
//! non-linear table of 16 signed values (`kvalues_iq4nl`, read from the
//! vendored ggml at build time: [`super::grids`]).

use super::grids::KVALUES_IQ4NL;
use super::{
    check_out, magnitude, nearest_entry, set_bits, weight_block, Block32, BlockQ8_0, Codes, Format,
};
use crate::panel::PanelFormat;
use crate::testdata::{RandomBlock, Rng};
use crate::Result;
use half::f16;

/// ggml's `block_iq4_nl`: value j is `d * KVALUES_IQ4NL[nibble j / 16 of qs[j % 16]]`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIq4Nl {
    pub d: f16,
    pub qs: [u8; 16],
}

// GGML_TYPE_IQ4_NL; LLAMA_FTYPE_MOSTLY_IQ4_NL.
weight_block!(
    BlockIq4Nl,
    IQ4_NL,
    "iq4_nl",
    len 32,
    bytes 2 + 16,
    ggml 20,
    ftype Some(25),
    BlockQ8_0,
    dequantize_row_iq4_nl,
    block_terms,
    block_magnitude,
    super::quantize_row_q8_0,
    round round_at
);

/// The table value of value `j`.
#[inline(always)]
fn code(b: &BlockIq4Nl, j: usize) -> i32 {
    KVALUES_IQ4NL[((b.qs[j % 16] >> (4 * (j / 16))) & 0x0F) as usize] as i32
}

/// Rounds value `i` to the nearest of the table's values under the block's
/// `d` ([`crate::formats::WeightBlock::round_at`]).
fn round_at(b: &mut BlockIq4Nl, i: usize, w: f32) -> f32 {
    let d = b.d.to_f32();
    let value = |q: usize| d * KVALUES_IQ4NL[q] as i32 as f32;
    let q = nearest_entry(w, 16, value);
    set_bits(&mut b.qs[i % 16], 4 * (i / 16), 4, q as u8);
    value(q)
}

/// Mirrors ggml's `dequantize_row_iq4_nl`: `d * value`.
pub fn dequantize_row_iq4_nl(x: &[BlockIq4Nl], y: &mut [f32]) -> Result<()> {
    check_out(Format::IQ4_NL, x.len(), y.len())?;
    for (b, out) in x.iter().zip(y.chunks_exact_mut(32)) {
        let d = b.d.to_f32();
        for (j, o) in out.iter_mut().enumerate() {
            *o = d * code(b, j) as f32;
        }
    }
    Ok(())
}

/// One block's `d_x * d_y * sum_j value[j] * q_y[j]`, the integer sum exact.
fn block_terms(a: &BlockIq4Nl, b: &BlockQ8_0) -> (f32, f32) {
    let isum: i32 = (0..32).map(|j| code(a, j) * b.qs[j] as i32).sum();
    (isum as f32 * (a.d.to_f32() * b.d.to_f32()), 0.0)
}

fn block_magnitude(a: &BlockIq4Nl, b: &BlockQ8_0) -> f32 {
    let iabs: i32 = (0..32).map(|j| (code(a, j) * b.qs[j] as i32).abs()).sum();
    magnitude(a.d.to_f32() * b.d.to_f32(), iabs, 0.0, 0)
}

impl PanelFormat for BlockIq4Nl {
    const SUB: usize = 32;
    const MIN_SUB: usize = 0;
    const MAX_CODE: u8 = 127; // table values -127..=113
    #[inline(always)]
    fn unpack(&self, codes: &mut [i8], scale: &mut [f32], _: &mut [i16], _: &mut f32) {
        scale[0] = self.d.to_f32();
        table_codes(&self.qs, codes.try_into().expect("a block's codes"));
    }
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

/// The table values of 32 codes from 16 bytes (IQ4_NL's block, a 32-value
/// run of IQ4_XS's): value `i` from byte `i`'s low nibble, value `16 + i`
/// from its high one. By `pshufb` of the 16-entry table where the CPU has
/// SSSE3 (2.5x faster in the panel fill), else one lookup of both values per byte.
#[inline(always)]
pub(crate) fn table_codes(qs: &[u8; 16], codes: &mut [i8; 32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("ssse3") {
        use std::arch::x86_64::*;
        // SAFETY: SSSE3 was detected; the loads read the table's and qs's
        // 16 bytes, the stores write codes' 32.
        unsafe {
            let m = _mm_set1_epi8(15);
            let table = _mm_loadu_si128(KVALUES_IQ4NL.as_ptr().cast());
            let q = _mm_loadu_si128(qs.as_ptr().cast());
            let lo = _mm_shuffle_epi8(table, _mm_and_si128(q, m));
            let hi = _mm_shuffle_epi8(table, _mm_and_si128(_mm_srli_epi16::<4>(q), m));
            _mm_storeu_si128(codes.as_mut_ptr().cast(), lo);
            _mm_storeu_si128(codes.as_mut_ptr().add(16).cast(), hi);
        }
        return;
    }
    let (lo, hi) = codes.split_at_mut(16);
    for ((lo, hi), &b) in lo.iter_mut().zip(hi).zip(qs) {
        [*lo, *hi] = BYTE_VALUES[b as usize];
    }
}

impl Block32 for BlockIq4Nl {
    const CODES: Codes = Codes::NonLinear;
    fn codes(&self) -> *const u8 {
        self.qs.as_ptr()
    }
    fn d_bits(&self) -> u16 {
        self.d.to_bits()
    }
}

impl RandomBlock for BlockIq4Nl {
    const SCALE_OFFSETS: &'static [usize] = &[0];
    fn random(r: &mut Rng) -> Self {
        BlockIq4Nl {
            d: r.scale(),
            qs: r.bytes(),
        }
    }
    fn filled(fill: u8, d: u16, _: u16) -> Self {
        BlockIq4Nl {
            d: f16::from_bits(d),
            qs: [fill; 16],
        }
    }
}
