//! The Householder mixer `v ↦ H_r ⋯ H_1 v` on the GPU, forward and backward kernels,
//! one invocation per row (the rank and width of the FP-RNN mixer are small). The op
//! and its backward rule are `fpr::mixer::householder`'s, which dispatch here.

use super::{Kernel, buf, context, dense, grid, u32_of};
use crate::error::Result;
use crate::storage::Storage;
use crate::tensor::Tensor;

const FWD: Kernel = Kernel {
    name: "householder",
    src: shader!("householder_steps.wgsl", "householder.wgsl"),
    entry: "householder",
    inputs: 3,
    outputs: 1,
};
const BWD: Kernel = Kernel {
    name: "householder_backward",
    src: shader!("householder_steps.wgsl", "householder_backward.wgsl"),
    entry: "householder_backward",
    inputs: 4,
    outputs: 3,
};

fn params(dims: (usize, usize, usize), scale: f32) -> Result<[u32; 4]> {
    let (n, r, d) = dims;
    Ok([u32_of("householder", n)?, u32_of("householder", r)?, u32_of("householder", d)?, scale.to_bits()])
}

/// Gradients `(du, dalpha, dv)` of [`householder`] from its saved operands
/// `[u, alpha, v]` and the upstream gradient `g` (the rule is `fpr::mixer`'s).
pub fn householder_backward(
    [u, alpha, v]: [&Tensor; 3],
    g: &Tensor,
    scale: f32,
    dims: (usize, usize, usize),
    needs: &[bool],
) -> Result<Vec<Option<Tensor>>> {
    let ctx = context()?;
    let (n, r, d) = dims;
    let (ud, ad, vd, g) = (dense(u)?, dense(alpha)?, dense(v)?, dense(g)?);
    let (du, da, dv) = (super::alloc(n * r * d)?, super::alloc(n * r)?, super::alloc(n * d)?);
    let ins = [buf(&ud).raw(), buf(&ad).raw(), buf(&vd).raw(), buf(&g).raw()];
    ctx.launch(
        "householder backward",
        &BWD,
        &params(dims, scale)?,
        &ins,
        &[du.raw(), da.raw(), dv.raw()],
        grid(n, super::WG),
    )?;
    let t = |b, like: &Tensor| Tensor::from_storage(Storage::Gpu(b), like.shape_obj().clone());
    Ok(vec![needs[0].then(|| t(du, u)), needs[1].then(|| t(da, alpha)), needs[2].then(|| t(dv, v))])
}

/// `Q v` for GPU operands whose shapes the caller validated into `dims = (n, r, d)`.
pub fn householder(u: &Tensor, alpha: &Tensor, v: &Tensor, scale: f32, dims: (usize, usize, usize)) -> Result<Storage> {
    let ctx = context()?;
    let (ud, ad, vd) = (dense(u)?, dense(alpha)?, dense(v)?);
    let y = super::alloc(dims.0 * dims.2)?;
    let ins = [buf(&ud).raw(), buf(&ad).raw(), buf(&vd).raw()];
    ctx.launch("householder", &FWD, &params(dims, scale)?, &ins, &[y.raw()], grid(dims.0, super::WG))?;
    Ok(Storage::Gpu(y))
}
