//! Scalar kernels: the references, used as kernels where nothing faster exists.

use crate::formats::WeightBlock;

/// `out[r * acts.len() + j] = dot(row r, acts[j])` with the scalar reference dot product.
///
/// # Safety
/// None beyond the [`crate::table::RowDotFn`] shape contract (checked by the caller);
/// `unsafe` only to share the kernel function type.
pub unsafe fn row_dot<B: WeightBlock>(
    rows: &[B],
    nrows: usize,
    acts: &[&[B::Act]],
    out: &mut [f32],
) {
    let per_row = rows.len() / nrows.max(1);
    for (r, o) in out.chunks_mut(acts.len().max(1)).take(nrows).enumerate() {
        let row = &rows[r * per_row..(r + 1) * per_row];
        for (o, a) in o.iter_mut().zip(acts) {
            *o = B::vec_dot(row, a).expect("shapes checked by the caller");
        }
    }
}
