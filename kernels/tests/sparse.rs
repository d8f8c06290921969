//! The 2:4 packing: lossless against the dense GGUF blocks (byte-exact round
//! trips), dot products and dequantization identical to the dense blocks',
//! and clear errors for data that is not 2:4.

use llmkernel_kernels::formats::sparse::{
    check_row, is_2_4, pack_q4_0, pack_q8_0, unpack_q4_0, unpack_q8_0, valid_mask, EXPAND_LUT,
};
use llmkernel_kernels::formats::*;
use llmkernel_kernels::testdata::{RandomBlock, Rng};
use llmkernel_kernels::Error;

/// Dense blocks that are 2:4 sparse: random codes with two values of every
/// four set to zero (code 8 for Q4_0, 0 for Q8_0), some groups with fewer
/// non-zeros (one or none), and some whole blocks zero.
fn dense_2_4_q4_0(r: &mut Rng, n: usize) -> Vec<BlockQ4_0> {
    (0..n)
        .map(|i| {
            let mut b = BlockQ4_0::random(r);
            let mask = u32::from_le_bytes(r.mask_2_4());
            for p in 0..32 {
                let drop = mask >> p & 1 == 0 || i % 7 == 3 || (p % 9 == 0 && i % 2 == 0);
                if drop {
                    let sh = 4 * (p / 16);
                    b.qs[p % 16] = (b.qs[p % 16] & !(15 << sh)) | (8 << sh);
                }
            }
            b
        })
        .collect()
}

fn dense_2_4_q8_0(r: &mut Rng, n: usize) -> Vec<BlockQ8_0> {
    (0..n)
        .map(|i| {
            let mut b = BlockQ8_0::random(r);
            let mask = u32::from_le_bytes(r.mask_2_4());
            for p in 0..32 {
                if mask >> p & 1 == 0 || i % 7 == 3 || (p % 9 == 0 && i % 2 == 0) {
                    b.qs[p] = 0;
                }
            }
            b
        })
        .collect()
}

fn bytes<T: bytemuck::Pod>(v: &[T]) -> &[u8] {
    bytemuck::cast_slice(v)
}

#[test]
fn dense_to_sparse_to_dense_is_byte_exact() {
    let mut r = Rng::new(24);
    let d4 = dense_2_4_q4_0(&mut r, 1000);
    let s4 = pack_q4_0(&d4).unwrap();
    assert_eq!(bytes(&unpack_q4_0(&s4)), bytes(&d4));
    let d8 = dense_2_4_q8_0(&mut r, 1000);
    let s8 = pack_q8_0(&d8).unwrap();
    assert_eq!(bytes(&unpack_q8_0(&s8)), bytes(&d8));
    // Packing is canonical: a packed block packs to itself again.
    assert_eq!(bytes(&pack_q4_0(&unpack_q4_0(&s4)).unwrap()), bytes(&s4));
    assert_eq!(bytes(&pack_q8_0(&unpack_q8_0(&s8)).unwrap()), bytes(&s8));
    check_row(&s4).unwrap();
    check_row(&s8).unwrap();
    assert_eq!(std::mem::size_of::<BlockQ4_0S>(), 14);
    assert_eq!(std::mem::size_of::<BlockQ8_0S>(), 22);
}

#[test]
fn sparse_blocks_compute_what_their_dense_blocks_compute() {
    let mut r = Rng::new(25);
    let s4 = BlockQ4_0S::random_vec(&mut r, 64);
    let s8 = BlockQ8_0S::random_vec(&mut r, 64);
    let (d4, d8) = (unpack_q4_0(&s4), unpack_q8_0(&s8));
    let x = r.activations(64 * 32);
    let mut acts = vec![
        BlockQ8_0 {
            d: half::f16::ZERO,
            qs: [0; 32]
        };
        64
    ];
    quantize_row_q8_0(&x, &mut acts).unwrap();
    for i in 0..64 {
        let (a, s, d) = (&acts[i..i + 1], &s4[i..i + 1], &d4[i..i + 1]);
        assert_eq!(
            BlockQ4_0S::vec_dot(s, a).unwrap().to_bits(),
            BlockQ4_0::vec_dot(d, a).unwrap().to_bits()
        );
        let (s, d) = (&s8[i..i + 1], &d8[i..i + 1]);
        assert_eq!(
            BlockQ8_0S::vec_dot(s, a).unwrap().to_bits(),
            BlockQ8_0::vec_dot(d, a).unwrap().to_bits()
        );
    }
    let (mut a, mut b) = (vec![0f32; 64 * 32], vec![0f32; 64 * 32]);
    BlockQ4_0S::dequantize_row(&s4, &mut a).unwrap();
    BlockQ4_0::dequantize_row(&d4, &mut b).unwrap();
    assert_eq!(bytes(&a), bytes(&b));
    BlockQ8_0S::dequantize_row(&s8, &mut a).unwrap();
    BlockQ8_0::dequantize_row(&d8, &mut b).unwrap();
    assert_eq!(bytes(&a), bytes(&b));
    assert!(is_2_4(&a));
}

#[test]
fn data_that_is_not_2_4_is_an_error() {
    let mut r = Rng::new(26);
    let mut d4 = dense_2_4_q4_0(&mut r, 5);
    // Block 3 gets a third non-zero value in its group 6 (positions 24..28).
    let g = 6;
    for p in 4 * g..4 * g + 3 {
        let sh = 4 * (p / 16);
        d4[3].qs[p % 16] = (d4[3].qs[p % 16] & !(15 << sh)) | (1 << sh);
    }
    assert_eq!(
        pack_q4_0(&d4),
        Err(Error::NotSparse24 { block: 3, group: 6 })
    );
    let mut d8 = dense_2_4_q8_0(&mut r, 5);
    d8[0].qs[..4].copy_from_slice(&[1, 2, 3, 0]);
    assert_eq!(
        pack_q8_0(&d8),
        Err(Error::NotSparse24 { block: 0, group: 0 })
    );
    let mut s = pack_q8_0(&dense_2_4_q8_0(&mut r, 4)).unwrap();
    s[2].mask = 0x7777_7777u32.to_le_bytes();
    assert!(matches!(
        check_row(&s),
        Err(Error::NotSparse24 { block: 2, .. })
    ));
    assert!(!valid_mask(0x3333_3331));
    assert!(valid_mask(0xCCCC_5A3A));
    assert!(!is_2_4(&[1.0, 2.0, 3.0, 0.0]));
    assert!(is_2_4(&[0.0, 2.0, -0.0, 1.0]));
}

#[test]
fn the_expansion_table_places_kept_values_in_order() {
    for m in 0..256usize {
        let e = EXPAND_LUT[m].to_le_bytes();
        let mut next = 0;
        for (j, &v) in e.iter().enumerate() {
            if m >> j & 1 == 1 {
                assert_eq!(v, next);
                next += 1;
            } else {
                assert_eq!(v, 0x80);
            }
        }
    }
}
