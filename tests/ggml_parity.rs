//! The scalar references in `llmkernel-kernels` against the vendored ggml:
//! dequantization and activation quantization bit-identical, dot products
//! within a stated bound, bad lengths rejected before any C code runs.

mod common;

use common::*;
use llmkernel::ffi;
use llmkernel::ggml;
use llmkernel::kernels::formats::*;
use llmkernel::kernels::table::Kernels;
use llmkernel::kernels::{Error, Format, WeightBlock, QK_K};
use rand::Rng;

/// Compares dequantized values bit for bit; where ggml gives NaN we require NaN
/// (NaN payloads are not part of the contract). Returns how many NaN/Inf it saw.
fn assert_same_bits(format: Format, what: &str, ours: &[f32], ggml: &[f32]) -> usize {
    assert_eq!(ours.len(), ggml.len());
    let mut special = 0;
    for (i, (a, b)) in ours.iter().zip(ggml).enumerate() {
        if b.is_nan() {
            assert!(
                a.is_nan(),
                "{format} {what}: value {i} (block {}): ours {a}, ggml NaN",
                i / format.block_len()
            );
        } else {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "{format} {what}: value {i} (block {}): ours {a:e}, ggml {b:e}",
                i / format.block_len()
            );
        }
        special += usize::from(!b.is_finite());
    }
    special
}

fn dequant_parity<B: WeightBlock>(blocks: &[B], what: &str) -> usize {
    let n = blocks.len() * B::FORMAT.block_len();
    let mut ours = vec![0f32; n];
    B::dequantize_row(blocks, &mut ours).unwrap();
    let mut theirs = vec![0f32; n];
    ggml::dequantize_row(B::FORMAT, bytemuck::cast_slice(blocks), &mut theirs).unwrap();
    assert_same_bits(B::FORMAT, what, &ours, &theirs)
}

fn dequant_random<B: WeightBlock + TestBlock>(seed: u64) {
    let blocks: Vec<B> = random_blocks(seed, 10_000);
    dequant_parity(&blocks, "random blocks");
}

fn dequant_edges<B: WeightBlock + TestBlock>() {
    let blocks: Vec<B> = edge_blocks();
    let special = dequant_parity(&blocks, "edge blocks");
    assert!(
        special > 0,
        "{}: the edge blocks must exercise NaN/Inf scales",
        B::FORMAT
    );
}

/// ggml's own dot product against ours, both on activations we quantized
/// (bit-identical with ggml's, see below). The bound: 1e-5 relative to the
/// magnitude of the products (`dot_magnitude`: per block |d*dy| * sum|sc*q*q8|
/// + |dmin*dy| * sum|m*bsum|), since the integer sums are exact and only the
/// float scaling and summation order differ. (Relative to the result itself
/// would not do: a block whose scale and min terms cancel has a true dot of 0
/// that no float implementation computes exactly.)
fn dot_parity<B>(blocks: &[B], acts: &[f32], what: &str)
where
    B: WeightBlock,
{
    let len = blocks.len() * B::FORMAT.block_len();
    assert_eq!(acts.len(), len);
    let act_format = B::FORMAT.activation();
    let mut qa = vec![0u8; act_format.blocks_in(len).unwrap() * act_format.block_bytes()];
    ggml::quantize_row_cpu(act_format, acts, &mut qa).unwrap();
    let y: &[B::Act] = bytemuck::cast_slice(&qa);
    let ours = B::vec_dot(blocks, y).unwrap();
    let theirs = ggml::vec_dot(B::FORMAT, len, bytemuck::cast_slice(blocks), &qa).unwrap();
    let magnitude = B::dot_magnitude(blocks, y).unwrap();
    let err = (ours - theirs).abs();
    assert!(
        err <= 1e-5 * magnitude,
        "{} {what}: {} blocks: ours {ours:e}, ggml {theirs:e}, |diff| {err:e} > 1e-5 * {magnitude:e}",
        B::FORMAT,
        blocks.len()
    );
}

fn dot_random<B: WeightBlock + TestBlock>(seed: u64) {
    let mut r = rng(seed);
    let mut cases = 0;
    for nblocks in [1usize, 2, 3, 7, 16, 57] {
        for _ in 0..60 {
            let blocks: Vec<B> = random_blocks(r.gen(), nblocks);
            let acts = random_activations(&mut r, nblocks * B::FORMAT.block_len());
            dot_parity(&blocks, &acts, "random");
            cases += 1;
        }
    }
    assert_eq!(cases, 360);
}

fn dot_edges<B: WeightBlock + TestBlock>(seed: u64) {
    let mut r = rng(seed);
    // Finite edge scales only: with Inf/NaN scales both sides are non-finite by construction.
    for fill in [0x00u8, 0xFF, 0x55, 0xAA] {
        for d in [0x0000u16, 0x0001, 0x03FF, 0x3C00, 0x7BFF, 0xBC00] {
            for dmin in [0x0000u16, 0x7BFF, 0x3C00] {
                let blocks = vec![B::filled(fill, d, dmin); 4];
                let acts = random_activations(&mut r, 4 * B::FORMAT.block_len());
                dot_parity(
                    &blocks,
                    &acts,
                    &format!("fill {fill:#x} d {d:#x} dmin {dmin:#x}"),
                );
            }
        }
    }
}

/// Runs one parity check on every weight format, so a new format is checked
/// without a line here.
fn for_every_weight_format(check: fn(Format, u64) -> Option<()>) {
    for (i, f) in Format::WEIGHTS.into_iter().enumerate() {
        check(f, 100 * (i as u64 + 1)).expect("weight formats have kernels");
        eprintln!("{f}: ok");
    }
}

macro_rules! check {
    ($name:ident, |$B:ident, $seed:ident| $body:expr) => {
        #[test]
        fn $name() {
            struct Check(u64);
            impl WithFormat for Check {
                type Out = ();
                #[allow(unused_variables)]
                fn run<$B: Kernels>(self) {
                    let $seed = self.0;
                    $body
                }
            }
            for_every_weight_format(|f, seed| f.with(Check(seed)));
        }
    };
}

check!(
    dequantize_random_bit_identical,
    |B, seed| dequant_random::<B>(seed)
);
check!(
    dequantize_edges_bit_identical,
    |B, seed| dequant_edges::<B>()
);
check!(vec_dot_random_within_bound, |B, seed| dot_random::<B>(
    seed + 1
));
check!(vec_dot_edges_within_bound, |B, seed| dot_edges::<B>(
    seed + 2
));
check!(layout_matches_ggml, |B, seed| {
    let f = B::FORMAT;
    // SAFETY: valid ggml type ids return pointers into ggml's static table.
    let t = unsafe { &*ffi::ggml_get_type_traits(f.ggml_type()) };
    assert_eq!(t.type_size, std::mem::size_of::<B>(), "{f}");
    assert_eq!(t.blck_size as usize, f.block_len(), "{f}");
    assert_eq!(ggml::vec_dot_type(f), f.activation().ggml_type(), "{f}");
    // SAFETY: ggml's type names are static NUL-terminated strings.
    let name = unsafe { std::ffi::CStr::from_ptr(ffi::ggml_type_name(f.ggml_type())) };
    assert!(
        name.to_str().unwrap().eq_ignore_ascii_case(f.name()),
        "{f}: ggml calls it {name:?}"
    );
});

/// Activation rows that stress quantization: random, all zero, one non-zero,
/// exact rounding ties, tiny values, huge values.
fn activation_rows(block: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut r = rng(seed);
    let mut rows: Vec<Vec<f32>> = (0..400)
        .map(|i| random_activations(&mut r, block * (1 + i % 5)))
        .collect();
    rows.push(vec![0.0; block]);
    let mut one = vec![0.0; block];
    one[block / 3] = -3.25;
    rows.push(one);
    // amax = 127 makes both scales 1 (q8_0: d = 1; q8_K: iscale = -127/-127... = 1 for
    // max = -127), so x.5 values are exact ties: roundf and round-half-even disagree.
    let mut ties: Vec<f32> = (0..block).map(|i| (i as f32 % 60.0) - 29.5).collect();
    ties[0] = -127.0;
    rows.push(ties.clone());
    ties[0] = 127.0;
    rows.push(ties);
    // Tiny but normal: where 1/d still fits in an f32 (below that, ggml's float to
    // int conversion of an infinite product is undefined behaviour in C).
    rows.push(
        (0..block)
            .map(|i| f32::MIN_POSITIVE * 100.0 * (i as f32 - 7.0))
            .collect(),
    );
    rows.push((0..block).map(|i| 1e30 * ((i % 11) as f32 - 5.0)).collect());
    rows
}

#[test]
fn quantize_q8_k_bit_identical() {
    for row in activation_rows(QK_K, 7) {
        let mut ours = vec![
            BlockQ8K {
                d: 0.0,
                qs: [0; QK_K],
                bsums: [0; 16]
            };
            row.len() / QK_K
        ];
        quantize_row_q8_k(&row, &mut ours).unwrap();
        let ours: &[u8] = bytemuck::cast_slice(&ours);
        for (name, f) in [
            (
                "ref",
                ggml::quantize_row_ref as fn(Format, &[f32], &mut [u8]) -> _,
            ),
            ("cpu", ggml::quantize_row_cpu),
        ] {
            let mut theirs = vec![0u8; ours.len()];
            f(Format::Q8K, &row, &mut theirs).unwrap();
            assert!(
                ours == &theirs[..],
                "q8_K ({name}) differs from ggml for row starting {:?}",
                &row[..4]
            );
        }
    }
}

#[test]
fn quantize_q8_0_bit_identical() {
    let mut ties_differ = false;
    for row in activation_rows(32, 8) {
        let n = row.len() / 32;
        let zero = BlockQ8_0 {
            d: half::f16::ZERO,
            qs: [0; 32],
        };
        let (mut r, mut c) = (vec![zero; n], vec![zero; n]);
        quantize_row_q8_0_ref(&row, &mut r).unwrap();
        quantize_row_q8_0(&row, &mut c).unwrap();
        let (mut gr, mut gc) = (vec![0u8; n * 34], vec![0u8; n * 34]);
        ggml::quantize_row_ref(Format::Q8_0, &row, &mut gr).unwrap();
        ggml::quantize_row_cpu(Format::Q8_0, &row, &mut gc).unwrap();
        assert!(
            bytemuck::cast_slice::<_, u8>(&r) == &gr[..],
            "quantize_row_q8_0_ref differs, row {:?}",
            &row[..4]
        );
        assert!(
            bytemuck::cast_slice::<_, u8>(&c) == &gc[..],
            "quantize_row_q8_0 (cpu) differs, row {:?}",
            &row[..4]
        );
        ties_differ |= r != c;
    }
    if cfg!(target_arch = "x86_64") || cfg!(target_arch = "aarch64") {
        assert!(
            ties_differ,
            "the tie rows must tell roundf from round-half-even"
        );
    }
}

#[test]
fn bad_lengths_are_errors_before_ggml_runs() {
    let q = vec![0u8; 144 * 2];
    let mut out = vec![0f32; 300];
    assert_eq!(
        ggml::dequantize_row(Format::Q4K, &q, &mut out),
        Err(Error::NotBlockMultiple {
            format: Format::Q4K,
            len: 300
        })
    );
    let mut out = vec![0f32; 256];
    assert!(matches!(
        ggml::dequantize_row(Format::Q4K, &q, &mut out),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        ggml::vec_dot(Format::Q4K, 512, &q, &[0u8; 100]),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        ggml::vec_dot(Format::Q4_0, 33, &[0u8; 18], &[0u8; 34]),
        Err(Error::NotBlockMultiple { .. })
    ));
    let mut y = vec![0u8; 34];
    assert!(matches!(
        ggml::quantize_row_cpu(Format::Q8_0, &[1.0; 31], &mut y),
        Err(Error::NotBlockMultiple { .. })
    ));
}

#[test]
fn block_field_offsets_match_ggml_common_h() {
    use std::mem::{offset_of, size_of};
    macro_rules! same {
        ($ours:ty, $theirs:ty, $($field:ident),*) => {
            assert_eq!(size_of::<$ours>(), size_of::<$theirs>(), stringify!($ours));
            $(assert_eq!(offset_of!($ours, $field), offset_of!($theirs, $field), concat!(stringify!($ours), ".", stringify!($field)));)*
        };
    }
    same!(BlockQ4_0, ffi::block_q4_0, d, qs);
    same!(BlockQ8_0, ffi::block_q8_0, d, qs);
    same!(BlockQ8K, ffi::block_q8_K, d, qs, bsums);
    same!(BlockQ3K, ffi::block_q3_K, hmask, qs, scales, d);
    same!(BlockQ2K, ffi::block_q2_K, scales, qs);
    same!(BlockQ4K, ffi::block_q4_K, scales, qs);
    same!(BlockQ5K, ffi::block_q5_K, scales, qh, qs);
    same!(BlockQ6K, ffi::block_q6_K, ql, qh, scales, d);
    same!(BlockQ5_0, ffi::block_q5_0, d, qh, qs);
    same!(BlockIq4Nl, ffi::block_iq4_nl, d, qs);
    same!(BlockIq4Xs, ffi::block_iq4_xs, d, scales_h, scales_l, qs);
    same!(BlockIq2Xxs, ffi::block_iq2_xxs, d, qs);
    same!(BlockIq2Xs, ffi::block_iq2_xs, d, qs, scales);
    same!(BlockIq2S, ffi::block_iq2_s, d, qs, qh, scales);
    same!(BlockIq3Xxs, ffi::block_iq3_xxs, d, qs);
    same!(BlockIq3S, ffi::block_iq3_s, d, qs, qh, signs, scales);
    same!(BlockTq1_0, ffi::block_tq1_0, qs, qh, d);
    same!(BlockTq2_0, ffi::block_tq2_0, qs, d);
    // d and dmin sit in an anonymous union in ggml-common.h: first and last 4 bytes.
    assert_eq!(
        (offset_of!(BlockQ2K, d), offset_of!(BlockQ2K, dmin)),
        (80, 82)
    );
    assert_eq!(
        (offset_of!(BlockQ4K, d), offset_of!(BlockQ4K, dmin)),
        (0, 2)
    );
    assert_eq!(
        (offset_of!(BlockQ5K, d), offset_of!(BlockQ5K, dmin)),
        (0, 2)
    );
    assert_eq!(offset_of!(ffi::block_q2_K, __bindgen_anon_1), 80);
    assert_eq!(offset_of!(ffi::block_q4_K, __bindgen_anon_1), 0);
}

/// The grids `kernels/build.rs` takes from the vendored ggml-common.h, entry
/// by entry: blocks whose grid indices sweep every entry (signs and scales
/// zero, d = 1) dequantize bit for bit as ggml's do.
#[test]
fn every_grid_entry_dequantizes_as_ggmls() {
    let d = half::f16::ONE;
    // IQ2_XXS: 256 entries, a byte index per 8 values, 32 per block.
    let iq2xxs: Vec<BlockIq2Xxs> = (0..8u16)
        .map(|j| BlockIq2Xxs {
            d,
            qs: std::array::from_fn(|q| match q % 4 {
                0 | 1 => {
                    let i = 32 * j + 4 * (q as u16 / 4) + 2 * (q as u16 % 4);
                    i | (i + 1) << 8
                }
                _ => 0,
            }),
        })
        .collect();
    // IQ2_XS: 512 entries, a 9-bit index per 8 values.
    let iq2xs: Vec<BlockIq2Xs> = (0..16u16)
        .map(|j| BlockIq2Xs {
            d,
            qs: std::array::from_fn(|q| 32 * j + q as u16),
            scales: [0; 8],
        })
        .collect();
    // IQ2_S: 1024 entries, a 10-bit index (low byte in qs, two bits in qh).
    let iq2s: Vec<BlockIq2S> = (0..32usize)
        .map(|j| {
            let i = |g: usize| 32 * j + g;
            BlockIq2S {
                d,
                qs: std::array::from_fn(|q| if q < 32 { i(q) as u8 } else { 0 }),
                qh: std::array::from_fn(|ib| {
                    (0..4)
                        .map(|l| ((i(4 * ib + l) >> 8) << (2 * l)) as u8)
                        .sum()
                }),
                scales: [0; 8],
            }
        })
        .collect();
    // IQ3_XXS: 256 entries, a byte index per 4 values, 64 per block.
    let iq3xxs: Vec<BlockIq3Xxs> = (0..4usize)
        .map(|j| BlockIq3Xxs {
            d,
            qs: std::array::from_fn(|q| if q < 64 { (64 * j + q) as u8 } else { 0 }),
        })
        .collect();
    // IQ3_S: 512 entries, a 9-bit index per 4 values (ninth bits in qh).
    let iq3s: Vec<BlockIq3S> = (0..8usize)
        .map(|j| {
            let i = |q: usize| 64 * j + q;
            BlockIq3S {
                d,
                qs: std::array::from_fn(|q| i(q) as u8),
                qh: std::array::from_fn(|ib| {
                    (0..8).map(|b| ((i(8 * ib + b) >> 8) << b) as u8).sum()
                }),
                signs: [0; 32],
                scales: [0; 4],
            }
        })
        .collect();
    dequant_parity(&iq2xxs, "every IQ2XXS_GRID entry");
    dequant_parity(&iq2xs, "every IQ2XS_GRID entry");
    dequant_parity(&iq2s, "every IQ2S_GRID entry");
    dequant_parity(&iq3xxs, "every IQ3XXS_GRID entry");
    dequant_parity(&iq3s, "every IQ3S_GRID entry");
    // And they did reach every entry: distinct 8-value (4-value) points.
    let points = |v: &[f32], n: usize| {
        let mut p: Vec<Vec<u32>> = v
            .chunks(n)
            .map(|c| c.iter().map(|x| x.to_bits()).collect())
            .collect();
        p.sort();
        p.dedup();
        p.len()
    };
    let deq = |f: Format, bytes: &[u8]| {
        let mut y = vec![0f32; bytes.len() / f.block_bytes() * 256];
        ggml::dequantize_row(f, bytes, &mut y).unwrap();
        y
    };
    assert_eq!(
        points(&deq(Format::IQ2_XXS, bytemuck::cast_slice(&iq2xxs)), 8),
        256
    );
    assert_eq!(
        points(&deq(Format::IQ2_XS, bytemuck::cast_slice(&iq2xs)), 8),
        512
    );
    assert_eq!(
        points(&deq(Format::IQ2_S, bytemuck::cast_slice(&iq2s)), 8),
        1024
    );
    assert_eq!(
        points(&deq(Format::IQ3_XXS, bytemuck::cast_slice(&iq3xxs)), 4),
        256
    );
    assert_eq!(
        points(&deq(Format::IQ3_S, bytemuck::cast_slice(&iq3s)), 4),
        512
    );
}
