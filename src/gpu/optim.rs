//! Optimiser kernels: the AdamW update in place on GPU buffers (parameter and both
//! moments), and the squared L2 norm of a set of gradients for clipping. The rules are
//! `optim`'s, which dispatch here for parameters on the GPU.

use super::{Kernel, buf, context, dense, grid, u32_of};
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::storage::Storage;
use crate::tensor::Tensor;
use std::sync::Arc;

const ADAMW: Kernel = Kernel { name: "adamw", src: shader!("adamw.wgsl"), entry: "adamw", inputs: 1, outputs: 3 };

/// The per-step constants of one AdamW update (see `optim::AdamW`).
#[derive(Clone, Copy, Debug)]
pub struct AdamWStep {
    pub decay: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub step_size: f32,
    pub bc2_sqrt: f32,
    pub eps: f32,
}

/// Make `t` the only owner of a dense whole GPU buffer, so a kernel may write it in
/// place: a copy (on the GPU) when the buffer is shared with another tensor (a graph
/// still holding the old values keeps them) or `t` is a view.
pub fn make_exclusive(t: &mut Tensor) -> Result<()> {
    let whole = t.layout.is_contiguous() && t.layout.offset == 0 && t.storage.len() == t.numel();
    let alone = Arc::get_mut(&mut t.storage).is_some_and(|s| match s {
        Storage::Gpu(b) => b.is_exclusive(),
        Storage::Cpu(_) => false,
    });
    if !(whole && alone) {
        t.storage = Arc::new(super::elementwise::copy(t)?);
        t.layout = Layout::contiguous(t.layout.shape.clone());
    }
    Ok(())
}

/// One AdamW update of the GPU parameter `p` (its graph node, and so its gradient
/// slot, is kept) and its moments `m`, `v` (GPU tensors of `p`'s size), from the
/// gradient `g`; every buffer is written in place.
pub fn adamw(p: &mut Tensor, g: &Tensor, m: &mut Tensor, v: &mut Tensor, s: AdamWStep) -> Result<()> {
    const OP: &str = "AdamW::step";
    for t in [&*p, g, &*m, &*v] {
        if t.device() != crate::Device::Gpu {
            return Err(Error::DeviceMismatch { op: OP, lhs: crate::Device::Gpu, rhs: t.device() });
        }
    }
    let n = p.numel();
    let ctx = context()?;
    let g = dense(g)?;
    for t in [&mut *p, &mut *m, &mut *v] {
        make_exclusive(t)?;
    }
    let bits = [s.decay, s.beta1, s.beta2, s.step_size, s.bc2_sqrt, s.eps].map(f32::to_bits);
    let mut params = vec![u32_of(OP, n)?];
    params.extend(bits);
    let outs = [buf(p).raw(), buf(m).raw(), buf(v).raw()];
    ctx.launch(OP, &ADAMW, &params, &[buf(&g).raw()], &outs, grid(n, super::WG))
}

/// `Σ_i Σ x_i²` over GPU tensors, summed on the GPU; one scalar read back.
pub fn sum_of_squares(op: &'static str, ts: &[&Tensor]) -> Result<f32> {
    let mut total: Option<Tensor> = None;
    for t in ts {
        let s = t.detach().square().sum_all();
        total = Some(match total {
            Some(acc) => acc.add(&s)?,
            None => s,
        });
    }
    match total {
        Some(t) => t.item(),
        None => Err(Error::InvalidArgument { op, message: "no tensors".into() }),
    }
}
