//! Scalar kernels: the references, used as kernels where nothing faster exists.

use crate::formats::WeightBlock;

/// `out[j] = dot(row, acts[j])` with the scalar reference dot product.
///
/// # Safety
/// None beyond the [`crate::registry::RowDotFn`] shape contract (checked by the caller);
/// `unsafe` only to share the kernel function type.
pub unsafe fn row_dot<B: WeightBlock>(row: &[B], acts: &[&[B::Act]], out: &mut [f32]) {
    for (o, a) in out.iter_mut().zip(acts) {
        *o = B::vec_dot(row, a).expect("shapes checked by the caller");
    }
}
