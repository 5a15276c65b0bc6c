//! The Householder mixer `v ↦ H_r ⋯ H_1 v` on the GPU, forward and backward, one
//! invocation per row (the rank and width of the FP-RNN mixer are small).

use super::{Kernel, buf, context, dense, grid, u32_of};
use crate::autograd::Backward;
use crate::error::Result;
use crate::storage::Storage;
use crate::tensor::Tensor;

const FWD: Kernel =
    Kernel { name: "householder", src: shader!("householder.wgsl"), entry: "householder", inputs: 3, outputs: 1 };
const BWD: Kernel = Kernel {
    name: "householder_backward",
    src: shader!("householder_backward.wgsl"),
    entry: "householder_backward",
    inputs: 4,
    outputs: 3,
};

fn params(dims: (usize, usize, usize), scale: f32) -> Result<[u32; 4]> {
    let (n, r, d) = dims;
    Ok([u32_of("householder", n)?, u32_of("householder", r)?, u32_of("householder", d)?, scale.to_bits()])
}

struct HouseholderBackward {
    u: Tensor,
    alpha: Tensor,
    v: Tensor,
    scale: f32,
    dims: (usize, usize, usize),
}

impl Backward for HouseholderBackward {
    fn name(&self) -> &'static str {
        "householder"
    }
    fn backward(&self, g: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let ctx = context()?;
        let (n, r, d) = self.dims;
        let g = dense(g)?;
        let (du, da, dv) = (super::alloc(n * r * d)?, super::alloc(n * r)?, super::alloc(n * d)?);
        let ins = [buf(&self.u).raw(), buf(&self.alpha).raw(), buf(&self.v).raw(), buf(&g).raw()];
        let p = params(self.dims, self.scale)?;
        ctx.launch("householder backward", &BWD, &p, &ins, &[du.raw(), da.raw(), dv.raw()], grid(n, super::WG))?;
        let t = |b, like: &Tensor| Tensor::from_storage(Storage::Gpu(b), like.shape_obj().clone());
        Ok(vec![
            needs[0].then(|| t(du, &self.u)),
            needs[1].then(|| t(da, &self.alpha)),
            needs[2].then(|| t(dv, &self.v)),
        ])
    }
}

/// `Q v` for GPU operands whose shapes the caller validated into `dims = (n, r, d)`.
pub fn householder(u: &Tensor, alpha: &Tensor, v: &Tensor, scale: f32, dims: (usize, usize, usize)) -> Result<Tensor> {
    let ctx = context()?;
    let (ud, ad, vd) = (dense(u)?, dense(alpha)?, dense(v)?);
    let y = super::alloc(dims.0 * dims.2)?;
    let ins = [buf(&ud).raw(), buf(&ad).raw(), buf(&vd).raw()];
    ctx.launch("householder", &FWD, &params(dims, scale)?, &ins, &[y.raw()], grid(dims.0, super::WG))?;
    Ok(Tensor::from_storage_op(Storage::Gpu(y), v.shape_obj().clone(), &[u, alpha, v], || HouseholderBackward {
        u: ud,
        alpha: ad,
        v: vd,
        scale,
        dims,
    }))
}
