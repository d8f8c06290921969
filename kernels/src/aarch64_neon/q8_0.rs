//! Q4_0, Q5_0, IQ4_NL and Q8_0 x Q8_0 (and the 2:4 forms) on NEON: one weight row against up to
//! [`COLS`] activation columns, each weight block loaded once for all of them.

use super::{dot32, f16_to_f32, f16x4_to_f32, load32, sdot32};
use crate::formats::grids::KVALUES_IQ4NL;
use crate::formats::sparse::EXPAND_LUT;
use crate::formats::sparse_x4::X4Row;
use crate::formats::{
    Block32, BlockIq4Nl, BlockIq4Nlx4, BlockQ4_0, BlockQ4_0S, BlockQ4_0Sx4, BlockQ4_0x4, BlockQ5_0,
    BlockQ5_0x4, BlockQ8_0, BlockQ8_0S, BlockQ8_0Sx4, BlockQ8_0x4, Codes,
};
use std::arch::aarch64::*;

/// Activation blocks whose sums [`dotprod::gemv_q4_0x4_q8_0_4x1`] and its
/// kin make at a time for every group of rows (a 256-byte stack array).
const X4_CHUNK: usize = 64;

/// Weight rows per call.
pub const ROWS: usize = 1;
/// Activation columns per call.
pub const COLS: usize = 4;

/// What [`raw_codes`] leaves on every code of a block of these codes: the
/// offset Q4_0's nibbles are stored with (8). (Q5_0's five bits keep their
/// subtraction: taken off the sums instead, llvm-mca priced its interleaved
/// GEMV 4-7 % slower on the Cortex-A55 and A76.)
pub(crate) const fn code_offset(c: Codes) -> i32 {
    match c {
        Codes::Nibbles => 8,
        _ => 0,
    }
}

/// The 32 signed codes of a block, zeros where a 2:4 block dropped them.
///
/// # Safety
/// NEON must be available.
#[inline(always)]
pub(crate) unsafe fn codes<W: Block32>(b: &W) -> [int8x16_t; 2] {
    // SAFETY: forwarded contract.
    let [lo, hi] = unsafe { raw_codes(b) };
    match code_offset(W::CODES) {
        0 => [lo, hi],
        off => {
            let o = vdupq_n_s8(off as i8);
            [vsubq_s8(lo, o), vsubq_s8(hi, o)]
        }
    }
}

/// [`codes`] plus [`code_offset`]: Q4_0's codes as stored (0..16), so a
/// dot product with them is over by the offset times the activations' sum.
///
/// Sparse blocks are expanded by `tbl` lookups of the 16 kept values with
/// indices from [`EXPAND_LUT`], one 8-byte entry per mask byte; the kept
/// values of mask bytes 1, 2, 3 start at 4, 8, 12.
///
/// # Safety
/// NEON must be available.
#[inline(always)]
pub(crate) unsafe fn raw_codes<W: Block32>(b: &W) -> [int8x16_t; 2] {
    // SAFETY: Q8_0 has 32 code bytes, Q4_0, Q5_0 and IQ4_NL 16 (low nibbles
    // are values 0..16, high nibbles 16..32), Q8_0S 16, Q4_0S 8; NEON is
    // available (caller).
    unsafe {
        let eight = vdupq_n_s8(8);
        // The 32 nibbles of a Q4_0-layout block (Q4_0, Q5_0, IQ4_NL): values
        // 0..16 and 16..32, unsigned.
        let nibbles = || {
            let v = vld1q_u8(b.codes());
            [vandq_u8(v, vdupq_n_u8(0x0F)), vshrq_n_u8::<4>(v)]
        };
        let kept = match W::CODES {
            Codes::Nibbles => {
                let [lo, hi] = nibbles();
                return [vreinterpretq_s8_u8(lo), vreinterpretq_s8_u8(hi)];
            }
            Codes::Nibbles5 => {
                // Fifth bits: byte i/8 of qh to byte i, then a test of bit i%8.
                let qh = vreinterpretq_u8_u32(vdupq_n_u32(b.high_bits()));
                let bit = vreinterpretq_u8_u64(vdupq_n_u64(0x8040_2010_0804_0201));
                let fifth = |lo: u64, hi: u64| {
                    let bytes = vqtbl1q_u8(qh, vcombine_u8(vcreate_u8(lo), vcreate_u8(hi)));
                    vandq_u8(vtstq_u8(bytes, bit), vdupq_n_u8(0x10))
                };
                let sixteen = vdupq_n_s8(16);
                let [lo, hi] = nibbles();
                let lo = vorrq_u8(lo, fifth(0, 0x0101_0101_0101_0101));
                let hi = vorrq_u8(hi, fifth(0x0202_0202_0202_0202, 0x0303_0303_0303_0303));
                return [
                    vsubq_s8(vreinterpretq_s8_u8(lo), sixteen),
                    vsubq_s8(vreinterpretq_s8_u8(hi), sixteen),
                ];
            }
            Codes::NonLinear => {
                let table = vld1q_s8(KVALUES_IQ4NL.as_ptr());
                let [lo, hi] = nibbles();
                return [vqtbl1q_s8(table, lo), vqtbl1q_s8(table, hi)];
            }
            Codes::Bytes => return load32(b.codes().cast()),
            Codes::SparseNibbles => {
                let v = vld1_u8(b.codes());
                let kept = vcombine_u8(vand_u8(v, vdup_n_u8(0x0F)), vshr_n_u8::<4>(v));
                vsubq_s8(vreinterpretq_s8_u8(kept), eight)
            }
            Codes::SparseBytes => vld1q_s8(b.codes().cast()),
        };
        let m = b.mask();
        let lut = |i: u32, off: u64| {
            vcreate_u8(EXPAND_LUT[(m >> (8 * i) & 0xFF) as usize].wrapping_add(off))
        };
        let lo = vcombine_u8(lut(0, 0), lut(1, 0x0404_0404_0404_0404));
        let hi = vcombine_u8(lut(2, 0x0808_0808_0808_0808), lut(3, 0x0C0C_0C0C_0C0C_0C0C));
        [vqtbl1q_s8(kept, lo), vqtbl1q_s8(kept, hi)]
    }
}

/// The kernels for one feature set (`$feat`) and its 32-byte dot product (`$dot`).
macro_rules! kernels {
    ($feat:literal, $dot:ident, offset: $offset:literal) => {
        #[inline]
        #[target_feature(enable = $feat)]
        pub(crate) unsafe fn cols<W: Block32, const C: usize, const PF: bool>(
            row: &[W],
            acts: &[&[BlockQ8_0]],
            out: &mut [f32],
        ) {
            let mut acc = [vdupq_n_f32(0.0); C];
            for (i, b) in row.iter().enumerate() {
                mca!(begin ["q8_0.cols ", $feat], codes = W::CODES as u32, c = C, pf = PF as u32, w = 32);
                if PF {
                    crate::aarch64_neon::prefetch_ahead(b);
                }
                // SAFETY: NEON is enabled here.
                let w = unsafe { codes(b) };
                let dw = f16_to_f32(b.d_bits());
                for c in 0..C {
                    // SAFETY: the caller guarantees every acts[c] has row.len() blocks; qs is 32 bytes.
                    let a = unsafe { acts.get_unchecked(c).get_unchecked(i) };
                    let y = unsafe { load32(a.qs.as_ptr()) };
                    let dot = $dot(vdupq_n_s32(0), w, y);
                    acc[c] = vfmaq_n_f32(acc[c], vcvtq_f32_s32(dot), dw * f16_to_f32(a.d.to_bits()));
                }
                mca!(end);
            }
            for c in 0..C {
                out[c] = vaddvq_f32(acc[c]);
            }
        }

        /// Four interleaved rows against one column, the rows read in place
        /// from one stream, the activation block loaded once for the four.
        /// Per block the four rows' exact i32 sums are gathered into one
        /// vector, lane r for row r (three pairwise adds), so the scales
        /// (one `fcvtl` for the four), the conversion and the multiply-add
        /// are one vector operation each for the four rows.
        ///
        /// With dotprod (`offset: true`), Q4_0's codes are taken as stored
        /// ([`raw_codes`]) and their offset off the four sums at once:
        /// `8 * sum(y)` per activation block, made for [`X4_CHUNK`] blocks at
        /// a time and read by every group of rows, instead of a subtraction
        /// per row. (Baseline NEON keeps the subtraction: llvm-mca priced the
        /// offset form 7 % slower on the Cortex-A55 model.)
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn gemv_x4<'a, X: 'a>(groups: &'a [X], act: &[BlockQ8_0], out: &mut [f32])
        where
            X4Row<'a, X>: Block32,
        {
            // SAFETY: forwarded contract.
            unsafe {
                if super::super::prefetch_on() {
                    gemv_x4_by::<X, true>(groups, act, out)
                } else {
                    gemv_x4_by::<X, false>(groups, act, out)
                }
            }
        }

        /// [`gemv_x4`], with or without software prefetch (`PF`).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn gemv_x4_by<'a, X: 'a, const PF: bool>(groups: &'a [X], act: &[BlockQ8_0], out: &mut [f32])
        where
            X4Row<'a, X>: Block32,
        {
            let nb = act.len();
            let off = if $offset { code_offset(<X4Row<'a, X> as Block32>::CODES) } else { 0 };
            let mut ysum = [0i32; X4_CHUNK];
            for c0 in (0..nb).step_by(X4_CHUNK) {
                let chunk = &act[c0..nb.min(c0 + X4_CHUNK)];
                if off != 0 {
                    let ones = [vdupq_n_s8(1); 2];
                    for (ys, a) in ysum.iter_mut().zip(chunk) {
                        // SAFETY: qs is 32 bytes. (Exact: |sum(y)| <= 32 * 128.)
                        let y = unsafe { load32(a.qs.as_ptr()) };
                        *ys = off * vaddvq_s32($dot(vdupq_n_s32(0), ones, y));
                    }
                }
                for (group, out) in groups.chunks_exact(nb).zip(out.chunks_exact_mut(4)) {
                    // SAFETY: out has 4 floats (chunks_exact_mut(4)).
                    let mut acc = if c0 == 0 { vdupq_n_f32(0.0) } else { unsafe { vld1q_f32(out.as_ptr()) } };
                    for ((b, a), &ys) in group[c0..].iter().zip(chunk).zip(&ysum) {
                        mca!(begin ["q8_0.x4 ", $feat], codes = <X4Row<'a, X> as Block32>::CODES as u32, c = 1, pf = PF as u32, w = 128);
                        if PF {
                            crate::aarch64_neon::prefetch_ahead(b);
                        }
                        // SAFETY: qs is 32 bytes.
                        let y = unsafe { load32(a.qs.as_ptr()) };
                        let dots: [int32x4_t; 4] = std::array::from_fn(|r| {
                            // SAFETY: NEON is enabled here; the row's codes lie inside b.
                            let w = unsafe {
                                if off != 0 { raw_codes(&X4Row { b, r }) } else { codes(&X4Row { b, r }) }
                            };
                            $dot(vdupq_n_s32(0), w, y)
                        });
                        let sums = vpaddq_s32(vpaddq_s32(dots[0], dots[1]), vpaddq_s32(dots[2], dots[3]));
                        let sums = if off != 0 { vsubq_s32(sums, vdupq_n_s32(ys)) } else { sums };
                        let bits = (0..4).fold(0u64, |v, r| v | (X4Row { b, r }.d_bits() as u64) << (16 * r));
                        let scale = vmulq_n_f32(f16x4_to_f32(bits), f16_to_f32(a.d.to_bits()));
                        acc = vfmaq_f32(acc, vcvtq_f32_s32(sums), scale);
                        mca!(end);
                    }
                    // SAFETY: out has 4 floats (chunks_exact_mut(4)).
                    unsafe { vst1q_f32(out.as_mut_ptr(), acc) };
                }
            }
        }

        /// Groups of four interleaved Q8_0 2:4 rows against one column.
        ///
        /// # Safety
        #[doc = concat!("The CPU must have `", $feat, "`; `crate::table::X4GemvFn`'s contract.")]
        #[target_feature(enable = $feat)]
        pub unsafe fn gemv_q8_0sx4_q8_0_4x1(
            groups: &[BlockQ8_0Sx4],
            act: &[BlockQ8_0],
            out: &mut [f32],
        ) {
            // SAFETY: forwarded contract.
            unsafe { gemv_x4(groups, act, out) }
        }

        /// Groups of four interleaved Q4_0 2:4 rows against one column.
        ///
        /// # Safety
        /// As `gemv_q8_0sx4_q8_0_4x1`.
        #[target_feature(enable = $feat)]
        pub unsafe fn gemv_q4_0sx4_q8_0_4x1(
            groups: &[BlockQ4_0Sx4],
            act: &[BlockQ8_0],
            out: &mut [f32],
        ) {
            // SAFETY: forwarded contract.
            unsafe { gemv_x4(groups, act, out) }
        }

        /// Groups of four interleaved dense Q8_0 rows against one column.
        ///
        /// # Safety
        /// As `gemv_q8_0sx4_q8_0_4x1`.
        #[target_feature(enable = $feat)]
        pub unsafe fn gemv_q8_0x4_q8_0_4x1(
            groups: &[BlockQ8_0x4],
            act: &[BlockQ8_0],
            out: &mut [f32],
        ) {
            // SAFETY: forwarded contract.
            unsafe { gemv_x4(groups, act, out) }
        }

        /// Groups of four interleaved dense Q5_0 rows against one column.
        ///
        /// # Safety
        /// As `gemv_q8_0sx4_q8_0_4x1`.
        #[target_feature(enable = $feat)]
        pub unsafe fn gemv_q5_0x4_q8_0_4x1(
            groups: &[BlockQ5_0x4],
            act: &[BlockQ8_0],
            out: &mut [f32],
        ) {
            // SAFETY: forwarded contract.
            unsafe { gemv_x4(groups, act, out) }
        }

        /// Groups of four interleaved dense IQ4_NL rows against one column.
        ///
        /// # Safety
        /// As `gemv_q8_0sx4_q8_0_4x1`.
        #[target_feature(enable = $feat)]
        pub unsafe fn gemv_iq4_nlx4_q8_0_4x1(
            groups: &[BlockIq4Nlx4],
            act: &[BlockQ8_0],
            out: &mut [f32],
        ) {
            // SAFETY: forwarded contract.
            unsafe { gemv_x4(groups, act, out) }
        }

        /// Groups of four interleaved dense Q4_0 rows against one column.
        ///
        /// # Safety
        /// As `gemv_q8_0sx4_q8_0_4x1`.
        #[target_feature(enable = $feat)]
        pub unsafe fn gemv_q4_0x4_q8_0_4x1(
            groups: &[BlockQ4_0x4],
            act: &[BlockQ8_0],
            out: &mut [f32],
        ) {
            // SAFETY: forwarded contract.
            unsafe { gemv_x4(groups, act, out) }
        }

        row_kernel!(
            gemv_q8_0_q8_0_1x4,
            $feat,
            BlockQ8_0,
            BlockQ8_0,
            prefetch cols<BlockQ8_0>,
            [1, 2, 3, 4]
        );
        row_kernel!(
            gemv_q4_0_q8_0_1x4,
            $feat,
            BlockQ4_0,
            BlockQ8_0,
            prefetch cols<BlockQ4_0>,
            [1, 2, 3, 4]
        );
        row_kernel!(
            gemv_q5_0_q8_0_1x4,
            $feat,
            BlockQ5_0,
            BlockQ8_0,
            prefetch cols<BlockQ5_0>,
            [1, 2, 3, 4]
        );
        row_kernel!(
            gemv_iq4_nl_q8_0_1x4,
            $feat,
            BlockIq4Nl,
            BlockQ8_0,
            prefetch cols<BlockIq4Nl>,
            [1, 2, 3, 4]
        );
        row_kernel!(
            gemv_q4_0s_q8_0_1x4,
            $feat,
            BlockQ4_0S,
            BlockQ8_0,
            prefetch cols<BlockQ4_0S>,
            [1, 2, 3, 4]
        );
        row_kernel!(
            gemv_q8_0s_q8_0_1x4,
            $feat,
            BlockQ8_0S,
            BlockQ8_0,
            prefetch cols<BlockQ8_0S>,
            [1, 2, 3, 4]
        );
    };
}

/// Baseline NEON.
pub mod neon {
    use super::*;
    kernels!("neon", dot32, offset: false);
}

/// NEON + dotprod (`sdot`).
pub mod dotprod {
    use super::*;
    kernels!("neon,dotprod", sdot32, offset: true);
}
