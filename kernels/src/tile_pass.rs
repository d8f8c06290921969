//! The panel tile's two-row pass ([`crate::panel`]), written once over a
//! per-ISA primitive set ([`TilePrims`]): NEON dotprod (`sdot`) and i8mm
//! (`usmmla`, two values of K's groups at once), 4 columns per vector, differ
//! only in these primitives. A pass takes rows `r0`, `r0 + 1` against `V` vectors
//! of columns: per four values of K it loads the columns' interleaved codes
//! once for both rows and adds, per row, the exact `sum(code * a)`; the float
//! steps are [`crate::panel::gemm_i8_q8x32_8x32`]'s fused multiply-adds in
//! its order, so every instantiation equals the scalar tile bit for bit.
//!
//! The x86 tiles (AVX-512: 8 rows at once, VNNI; AVX2: the factored form)
//! have other shapes and keep their own bodies.

use crate::panel::{Shape, Tile, COLS, ROWS};

/// What the pass needs of an ISA. Every function is `unsafe`: it uses the
/// ISA's instructions, so it may only run inside a function compiled for them
/// (the ISA's `gemm_i8_q8x32_8x32`), and the pointer functions state their bounds.
pub(crate) trait TilePrims {
    /// Columns per vector.
    const LANES: usize;
    /// Whether [`TilePrims::sub_dots`] uses a matrix instruction (i8mm):
    /// told apart in the `llvm-mca` regions (`mca!`).
    #[allow(dead_code)] // read by the mca! regions only
    const MATRIX: bool = false;
    /// Values of an activation column stored together (the
    /// [`crate::panel::ColBlock`] the tile reads): 4, or 8 where
    /// [`TilePrims::sub_dots`] takes two columns' eight values at once.
    const GROUP: usize = 4;
    /// Whether [`TilePrims::sub_dots`] takes the activations as stored
    /// (`+ 128`, unsigned): each sub-block's sums then start at the rows'
    /// corrections (`-128 * sum(codes)`, [`TilePrims::splat_i`]), which make
    /// them exactly `sum(code * a)`.
    const BIASED: bool = false;
    /// `LANES` i32 sums.
    type I: Copy;
    /// `LANES` f32.
    type F: Copy;
    /// `LANES` columns' four activation codes, signed.
    type A: Copy;
    /// A row's four codes, broadcast.
    type W: Copy;
    /// `LANES` columns' i16 code-sum pairs.
    type S: Copy;
    /// A row's i16 min pair, broadcast.
    type M: Copy;
    /// # Safety
    /// The ISA's features.
    unsafe fn zero_i() -> Self::I;
    /// `LANES` copies of `x` (the sums' start where [`TilePrims::BIASED`]).
    ///
    /// # Safety
    /// The ISA's features.
    unsafe fn splat_i(x: i32) -> Self::I;
    /// # Safety
    /// The ISA's features.
    unsafe fn zero_f() -> Self::F;
    /// `LANES` columns' four codes at `p`, signed (the NEON dotprod tile's
    /// columns are stored signed, `ColLayout { group: 4, biased: false }`).
    ///
    /// # Safety
    /// The ISA's features; `4 * LANES` readable bytes at `p`.
    unsafe fn load_a(p: *const u8) -> Self::A;
    /// A row's four codes (`w`, little-endian); `U`: none is negative.
    ///
    /// # Safety
    /// The ISA's features.
    unsafe fn splat_w<const U: bool>(w: i32) -> Self::W;
    /// `acc` plus each column's four-value dot product with the row's codes, exact.
    ///
    /// # Safety
    /// The ISA's features.
    unsafe fn dot<const U: bool>(acc: Self::I, a: Self::A, w: Self::W) -> Self::I;
    /// `is[r][v]` plus, for rows `r` = 0, 1 (codes at `w[r]`) and column
    /// vectors `v < V`, the exact dot products over `Q` groups of four values
    /// of K: group `q`'s codes at `w[r] + 4 q`, its activations at
    /// `a + q * 4 * COLS + v * GROUP * LANES` (the `GROUP`-value runs of the
    /// vector's columns, `4 q % GROUP` into them). The default takes one
    /// group at a time with [`TilePrims::dot`]; an ISA with a matrix
    /// instruction (i8mm) takes two.
    ///
    /// # Safety
    /// The ISA's features; `4 * Q` readable bytes at each `w[r]`, and the
    /// activations above readable.
    #[inline(always)]
    unsafe fn sub_dots<const Q: usize, const V: usize, const U: bool>(
        is: &mut [[Self::I; V]; 2],
        w: [*const u8; 2],
        a: *const u8,
    ) where
        Self: Sized,
    {
        // SAFETY: forwarded contract.
        unsafe { dots_by_four::<Self, Q, V, U>(is, w, a) }
    }
    /// # Safety
    /// The ISA's features; `LANES` readable i32 at `p`.
    unsafe fn load_s(p: *const i32) -> Self::S;
    /// # Safety
    /// The ISA's features.
    unsafe fn splat_m(m: i32) -> Self::M;
    /// `acc` plus each column's sum-pair times min-pair products, exact.
    ///
    /// # Safety
    /// The ISA's features.
    unsafe fn dot_mins(acc: Self::I, s: Self::S, m: Self::M) -> Self::I;
    /// `acc + f32(x) * s`, fused.
    ///
    /// # Safety
    /// The ISA's features.
    unsafe fn fma_i(acc: Self::F, x: Self::I, s: f32) -> Self::F;
    /// A scale sub-block's sums before its products: `corr` where
    /// [`TilePrims::BIASED`] (else `corr` is 0), in the form
    /// [`TilePrims::fma_sum`] reads. The default is the plain i32.
    ///
    /// # Safety
    /// The ISA's features.
    #[inline(always)]
    unsafe fn sum_start(corr: i32) -> Self::I {
        // SAFETY: forwarded contract.
        unsafe { Self::splat_i(corr) }
    }
    /// `acc + f32(sum) * s`, fused, for sums begun by [`TilePrims::sum_start`].
    ///
    /// # Safety
    /// The ISA's features.
    #[inline(always)]
    unsafe fn fma_sum(acc: Self::F, x: Self::I, s: f32) -> Self::F {
        // SAFETY: forwarded contract.
        unsafe { Self::fma_i(acc, x, s) }
    }
    /// # Safety
    /// The ISA's features; `LANES` readable f32 at `p`.
    unsafe fn load_f(p: *const f32) -> Self::F;
    /// `acc + a * b`, fused.
    ///
    /// # Safety
    /// The ISA's features.
    unsafe fn fma(acc: Self::F, a: Self::F, b: Self::F) -> Self::F;
    /// # Safety
    /// The ISA's features; `LANES` writable f32 at `p`.
    unsafe fn store_f(p: *mut f32, v: Self::F);
}

/// The whole tile as passes of 2 rows x `V` vectors: `Q` groups of four
/// values per scale sub-block, `G` sub-blocks per block, `P` pairs of mins
/// per block; `U`: the codes are never negative (see [`TilePrims::splat_w`]).
///
/// # Safety
/// `T`'s features; `t` built by [`Tile::new`] for a shape with these `Q`, `G`, `P`.
#[inline(always)]
pub(crate) unsafe fn tile<
    T: TilePrims,
    const Q: usize,
    const G: usize,
    const P: usize,
    const V: usize,
    const U: bool,
>(
    t: &Tile,
    out: &mut [f32; ROWS * COLS],
) {
    for r0 in (0..ROWS).step_by(2) {
        for c0 in (0..COLS / T::LANES).step_by(V) {
            // SAFETY: forwarded contract; rows r0, r0 + 1 < ROWS; vectors c0 + V <= COLS / LANES.
            unsafe { pass::<T, Q, G, P, V, U>(t, out, r0, c0) };
        }
    }
}

/// Rows `r0`, `r0 + 1` against the column vectors `c0 .. c0 + V`.
///
/// # Safety
/// As [`tile`]; `r0 + 1 < ROWS`, `(c0 + V) * LANES <= COLS`.
#[inline(always)]
unsafe fn pass<
    T: TilePrims,
    const Q: usize,
    const G: usize,
    const P: usize,
    const V: usize,
    const U: bool,
>(
    t: &Tile,
    out: &mut [f32; ROWS * COLS],
    r0: usize,
    c0: usize,
) {
    let Shape { sub, block, .. } = t.shape;
    let (k, nsub, nblk, lanes) = (t.k, t.k / sub, t.k / block, T::LANES);
    let codes = t.codes.as_ptr();
    let acodes = t.acodes().as_ptr();
    let (asums, ascales) = (t.asums().as_ptr(), t.ascales().as_ptr());
    // SAFETY (every pointer read below): Tile::new checked codes (ROWS * k),
    // scale and corr (ROWS * nsub), mins (ROWS * nblk * P), min_scale (ROWS * nblk when
    // P > 0), acodes (k * COLS bytes: a run of GROUP values of K is
    // GROUP * COLS bytes, and kq * 4 * COLS + (c0 + v) * GROUP * LANES +
    // GROUP * LANES <= k * COLS for a run's start kq), asums (nblk * P * COLS i32) and ascales
    // (nblk * COLS); r0 + 1 < ROWS. The features are the caller's.
    unsafe {
        let mut acc = [[T::zero_f(); V]; 2];
        for b in 0..nblk {
            // Per block: 2 rows x 4QG values x V * LANES columns.
            mca!(
                begin["tile.block"],
                mm = T::MATRIX as u32,
                q = Q,
                g = G,
                p = P,
                v = V,
                lanes = T::LANES
            );
            let mut sb = [[T::zero_f(); V]; 2];
            for g in b * G..(b + 1) * G {
                let start = |r: usize| {
                    T::sum_start(if T::BIASED {
                        *t.corr.get_unchecked((r0 + r) * nsub + g)
                    } else {
                        0
                    })
                };
                let mut is = [[start(0); V], [start(1); V]];
                T::sub_dots::<Q, V, U>(
                    &mut is,
                    [
                        codes.add(r0 * k + 4 * g * Q).cast(),
                        codes.add((r0 + 1) * k + 4 * g * Q).cast(),
                    ],
                    acodes.add(g * Q * 4 * COLS + c0 * T::GROUP * lanes),
                );
                for (r, sb) in sb.iter_mut().enumerate() {
                    let scale = *t.scale.get_unchecked((r0 + r) * nsub + g);
                    for v in 0..V {
                        sb[v] = T::fma_sum(sb[v], is[r][v], scale);
                    }
                }
            }
            if P > 0 {
                let mut im = [[T::zero_i(); V]; 2];
                for p in b * P..(b + 1) * P {
                    let at = |v: usize| asums.add(p * COLS + (c0 + v) * lanes);
                    let mut s = [T::load_s(at(0)); V];
                    for (v, s) in s.iter_mut().enumerate().skip(1) {
                        *s = T::load_s(at(v));
                    }
                    for (r, im) in im.iter_mut().enumerate() {
                        let m = T::splat_m(*t.mins.get_unchecked((r0 + r) * nblk * P + p));
                        for v in 0..V {
                            im[v] = T::dot_mins(im[v], s[v], m);
                        }
                    }
                }
                for (r, sb) in sb.iter_mut().enumerate() {
                    let ms = *t.min_scale.get_unchecked((r0 + r) * nblk + b);
                    for v in 0..V {
                        sb[v] = T::fma_i(sb[v], im[r][v], ms);
                    }
                }
            }
            for v in 0..V {
                let ad = T::load_f(ascales.add(b * COLS + (c0 + v) * lanes));
                for r in 0..2 {
                    acc[r][v] = T::fma(acc[r][v], sb[r][v], ad);
                }
            }
            mca!(end);
        }
        for r in 0..2 {
            for v in 0..V {
                T::store_f(
                    out.as_mut_ptr().add((r0 + r) * COLS + (c0 + v) * lanes),
                    acc[r][v],
                );
            }
        }
    }
}

/// [`TilePrims::sub_dots`] one group of four values at a time, with [`TilePrims::dot`].
///
/// # Safety
/// As [`TilePrims::sub_dots`].
#[inline(always)]
pub(crate) unsafe fn dots_by_four<T: TilePrims, const Q: usize, const V: usize, const U: bool>(
    is: &mut [[T::I; V]; 2],
    w: [*const u8; 2],
    a: *const u8,
) {
    for q in 0..Q {
        // (Loops, not closures: a closure would not be compiled for the ISA.)
        // SAFETY: forwarded contract.
        unsafe {
            let at = |v: usize| a.add(q * 4 * COLS + v * 4 * T::LANES);
            let mut av = [T::load_a(at(0)); V];
            for (v, av) in av.iter_mut().enumerate().skip(1) {
                *av = T::load_a(at(v));
            }
            for (r, is) in is.iter_mut().enumerate() {
                let wr = T::splat_w::<U>(w[r].add(4 * q).cast::<i32>().read_unaligned());
                for v in 0..V {
                    is[v] = T::dot::<U>(is[v], av[v], wr);
                }
            }
        }
    }
}
