//! What every lookup-table layout shares: a layout block holds one block
//! position (256 values along K) of 64 rows, a matrix is stored block
//! position after block position with its groups of 64 rows in order (so one
//! block position of every row is one contiguous run), and a last group of
//! fewer than 64 rows is padded with zero rows.
//!
//! The layouts: [`super::ternary_x64`] (TQ1_0, TQ2_0: the format's own bytes,
//! one 256-entry table per byte position) and [`super::planes_x64`] (the
//! 2-bit i-quants as three sign planes, IQ3_S as four, IQ3_XXS as five; 16-entry tables of four activations).

use super::{BlockQ8K, QuantBlock, WeightBlock};
use crate::{Error, Result};

/// Rows per group.
pub const ROWS: usize = 64;

/// One block position of 64 rows in a lookup-table layout.
pub trait LutLayout: bytemuck::Pod + Send + Sync {
    type Row: WeightBlock<Act = BlockQ8K>;
    /// The row (0..64) whose result the layout's kernels keep in slot `s`.
    fn slot_row(s: usize) -> usize;
    /// Lays out rows `0..64` of one block position: `row(r)` is row `r`'s
    /// block, `None` for a padding row.
    fn pack(row: &dyn Fn(usize) -> Option<Self::Row>) -> Self;
    /// Row `r`'s block (`r < 64`), as the format stores it.
    fn row_block(&self, r: usize) -> Self::Row;
    /// The scalar reference of the layout's lookup-table GEMV: block
    /// positions `blocks` (a range of `0..k / 256`) of every group against
    /// one column `act` (all `k / 256` blocks), added to `out` (64 per group,
    /// in slot order).
    fn gemv_ref(
        x: &[Self],
        ngroups: usize,
        blocks: std::ops::Range<usize>,
        act: &[BlockQ8K],
        out: &mut [f32],
    );
}

/// Groups of 64 rows for `rows` rows.
pub fn groups(rows: usize) -> usize {
    rows.div_ceil(ROWS)
}

/// `rows` rows of `k` values (row after row, GGUF's layout) in a
/// lookup-table layout: block position after block position, groups of 64
/// rows within each.
pub fn interleave<X: LutLayout>(blocks: &[X::Row], rows: usize, k: usize) -> Result<Vec<X>> {
    let per_row = X::Row::FORMAT.blocks_in(k)?;
    if blocks.len() != rows * per_row {
        return Err(Error::LengthMismatch {
            what: "row blocks (rows * k / 256)",
            expected: rows * per_row,
            got: blocks.len(),
        });
    }
    let mut out = vec![X::zeroed(); per_row * groups(rows)];
    for (b, at) in out.chunks_exact_mut(groups(rows).max(1)).enumerate() {
        interleave_position(blocks, rows, per_row, b, at);
    }
    Ok(out)
}

/// Block position `b` of [`interleave`]'s output (`at`: its `groups(rows)`
/// groups), from `rows` rows of `per_row` blocks; panics on other lengths.
/// (Positions are independent: a caller may fill them in parallel.)
pub fn interleave_position<X: LutLayout>(
    blocks: &[X::Row],
    rows: usize,
    per_row: usize,
    b: usize,
    at: &mut [X],
) {
    assert!(blocks.len() == rows * per_row && b < per_row && at.len() == groups(rows));
    for (g, x) in at.iter_mut().enumerate() {
        *x = X::pack(&|r| {
            let row = ROWS * g + r;
            (row < rows).then(|| blocks[row * per_row + b])
        });
    }
}

/// [`interleave`]'s inverse: the rows' blocks, row after row.
pub fn deinterleave<X: LutLayout>(x: &[X], rows: usize, k: usize) -> Result<Vec<X::Row>> {
    let per_row = X::Row::FORMAT.blocks_in(k)?;
    check_len(x.len(), rows, per_row)?;
    let mut out = Vec::with_capacity(rows * per_row);
    for row in 0..rows {
        for b in 0..per_row {
            out.push(x[b * groups(rows) + row / ROWS].row_block(row % ROWS));
        }
    }
    Ok(out)
}

/// Checks that `len` blocks hold `rows` rows of `per_row` block positions.
pub fn check_len(len: usize, rows: usize, per_row: usize) -> Result<()> {
    let expected = groups(rows) * per_row;
    if len != expected {
        return Err(Error::LengthMismatch {
            what: "lookup-table blocks (ceil(rows / 64) * k / 256)",
            expected,
            got: len,
        });
    }
    Ok(())
}

/// Results in `X`'s slot order (64 per group) to row order, `out.len()` rows.
pub fn unslot<X: LutLayout>(slots: &[f32], out: &mut [f32]) {
    for (g, s) in slots.chunks_exact(ROWS).enumerate() {
        for (i, &v) in s.iter().enumerate() {
            if let Some(o) = out.get_mut(ROWS * g + X::slot_row(i)) {
                *o = v;
            }
        }
    }
}
