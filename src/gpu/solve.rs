//! The fixed-point solver's residuals on the GPU: per sample
//! `max_t ‖y_t − y_new,t‖_∞ / (‖y_new,t‖_∞ + eps)` (NaN when any value is NaN), reduced
//! on the GPU so that one iteration reads back only `B` scalars. The loop is
//! `fpr::gpu_solve`'s.

use super::{Kernel, buf, context, dense, grid, u32_of};
use crate::error::Result;
use crate::tensor::Tensor;

const RESIDUAL: Kernel = Kernel {
    name: "fp_residual",
    src: shader!("rows.wgsl", "fp_residual.wgsl"),
    entry: "fp_residual",
    inputs: 2,
    outputs: 1,
};

/// Per-sample relative residuals of the GPU iterates `y` and `y_new` (`[B, T, D]`,
/// the same shape, checked by the caller), read back.
pub fn residuals(y: &Tensor, y_new: &Tensor, eps: f32) -> Result<Vec<f32>> {
    const OP: &str = "fp_solve residuals";
    let ctx = context()?;
    let &[b, t, d] = y.shape() else { unreachable!("the solver's iterates are [B, T, D]") };
    let (yd, nd) = (dense(y)?, dense(y_new)?);
    let out = super::alloc(b)?;
    let p = [u32_of(OP, b)?, u32_of(OP, t)?, u32_of(OP, d)?, eps.to_bits()];
    ctx.launch(OP, &RESIDUAL, &p, &[buf(&yd).raw(), buf(&nd).raw()], &[out.raw()], grid(b, 1))?;
    out.read(ctx, 0, b)
}
