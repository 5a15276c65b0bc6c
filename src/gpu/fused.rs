//! Row kernels: softmax and log-softmax along any axis, LayerNorm / RMSNorm over the
//! last axis, each with its backward on the GPU (the rules live here, beside the
//! kernels, as the CPU ones live beside theirs in `ops/fused.rs`).

use super::{Kernel, buf, context, dense, grid, u32_of};
use crate::autograd::Backward;
use crate::error::Result;
use crate::shape::Shape;
use crate::storage::Storage;
use crate::tensor::Tensor;

const SOFTMAX: Kernel =
    Kernel { name: "softmax", src: shader!("rows.wgsl", "softmax.wgsl"), entry: "softmax", inputs: 1, outputs: 1 };
const SOFTMAX_BWD: Kernel = Kernel {
    name: "softmax_backward",
    src: shader!("rows.wgsl", "softmax_backward.wgsl"),
    entry: "softmax_backward",
    inputs: 2,
    outputs: 1,
};
const NORM: Kernel =
    Kernel { name: "norm", src: shader!("rows.wgsl", "norm.wgsl"), entry: "norm", inputs: 3, outputs: 2 };
const NORM_BWD: Kernel = Kernel {
    name: "norm_backward",
    src: shader!("rows.wgsl", "norm_backward.wgsl"),
    entry: "norm_backward",
    inputs: 4,
    outputs: 2,
};

/// `t` with `axis` moved last, dense, and the inverse permutation.
fn axis_last(t: &Tensor, axis: usize) -> Result<(Tensor, Vec<usize>)> {
    let r = t.rank();
    let perm: Vec<usize> = (0..r).filter(|&i| i != axis).chain([axis]).collect();
    let mut inv = vec![0; r];
    for (i, &p) in perm.iter().enumerate() {
        inv[p] = i;
    }
    Ok((dense(&t.detach().permute(&perm)?)?, inv))
}

/// Run a row kernel over `inputs` (dense, axis last) and put the result back in the
/// original axis order (a view over the fresh buffer).
fn rows_kernel(op: &'static str, k: &Kernel, inputs: &[&Tensor], axis: usize, log: bool) -> Result<Tensor> {
    let ctx = context()?;
    let mut moved = Vec::new();
    let mut inv = Vec::new();
    for t in inputs {
        let (m, i) = axis_last(t, axis)?;
        moved.push(m);
        inv = i;
    }
    let x = &moved[0];
    let n = *x.shape().last().expect("rank >= 1");
    let rows = x.numel() / n.max(1);
    let out = super::alloc(x.numel())?;
    let p = [u32_of(op, rows)?, u32_of(op, n)?, log as u32];
    let bufs: Vec<&wgpu::Buffer> = moved.iter().map(|t| buf(t).raw()).collect();
    ctx.launch(op, k, &p, &bufs, &[out.raw()], grid(rows, 1))?;
    Tensor::from_storage(Storage::Gpu(out), x.shape_obj().clone()).permute(&inv)
}

/// Softmax (or log-softmax) of a GPU tensor along `axis` (resolved, non-empty); the
/// op and its backward rule are `ops::fused`'s, which dispatch here.
pub fn softmax(x: &Tensor, axis: usize, log: bool) -> Result<Tensor> {
    rows_kernel(if log { "log_softmax" } else { "softmax" }, &SOFTMAX, &[x], axis, log)
}

/// The input gradient of softmax (or log-softmax) from its output `y` and `g`.
pub fn softmax_backward(y: &Tensor, g: &Tensor, axis: usize, log: bool) -> Result<Tensor> {
    rows_kernel(if log { "log_softmax backward" } else { "softmax backward" }, &SOFTMAX_BWD, &[y, g], axis, log)
}

struct NormBackward {
    center: bool,
    x: Tensor,
    weight: Option<Tensor>,
    has_bias: bool,
    stats: Tensor,
}

impl Backward for NormBackward {
    fn name(&self) -> &'static str {
        if self.center { "layer_norm" } else { "rms_norm" }
    }
    fn backward(&self, g: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let ctx = context()?;
        let op = self.name();
        let g = dense(g)?;
        let d = *self.x.shape().last().expect("rank >= 1");
        let rows = self.x.numel() / d.max(1);
        let dx = super::alloc(self.x.numel())?;
        let gx = super::alloc(self.x.numel())?;
        let w = self.weight.as_ref().unwrap_or(&g);
        let p = [u32_of(op, rows)?, u32_of(op, d)?, self.center as u32, self.weight.is_some() as u32];
        let ins = [buf(&self.x).raw(), buf(&g).raw(), buf(w).raw(), buf(&self.stats).raw()];
        ctx.launch(op, &NORM_BWD, &p, &ins, &[dx.raw(), gx.raw()], grid(rows, 1))?;
        let shape = self.x.shape_obj().clone();
        let vec_d = Shape::new([d]);
        // Weight and bias gradients: column sums over every row.
        let col_sum = |t: &Tensor| -> Result<Tensor> {
            let flat = t.reshape(&[rows, d])?;
            Ok(Tensor::from_storage(
                super::reduce::reduce(&flat, &[0], super::reduce::Reduce::Sum, 1.0)?,
                vec_d.clone(),
            ))
        };
        let mut out = vec![needs[0].then(|| Tensor::from_storage(Storage::Gpu(dx), shape.clone()))];
        if self.weight.is_some() {
            let gxt = Tensor::from_storage(Storage::Gpu(gx), shape.clone());
            out.push(if needs[1] { Some(col_sum(&gxt)?) } else { None });
        }
        if self.has_bias {
            let k = out.len();
            out.push(if needs[k] { Some(col_sum(&g)?) } else { None });
        }
        Ok(out)
    }
}

/// LayerNorm (`center`) or RMSNorm over the last axis of a GPU tensor (validated by
/// the caller).
pub fn norm(x: &Tensor, center: bool, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f32) -> Result<Tensor> {
    let op = if center { "layer_norm" } else { "rms_norm" };
    let ctx = context()?;
    let xd = dense(x)?;
    let wd = weight.map(dense).transpose()?;
    let bd = bias.map(dense).transpose()?;
    let d = *x.shape().last().expect("rank >= 1");
    let rows = x.numel() / d.max(1);
    let y = super::alloc(x.numel())?;
    let stats = super::alloc(2 * rows)?;
    let p = [
        u32_of(op, rows)?,
        u32_of(op, d)?,
        center as u32,
        weight.is_some() as u32,
        bias.is_some() as u32,
        eps.to_bits(),
    ];
    let xb = buf(&xd).raw();
    let ins = [xb, wd.as_ref().map_or(xb, |w| buf(w).raw()), bd.as_ref().map_or(xb, |b| buf(b).raw())];
    ctx.launch(op, &NORM, &p, &ins, &[y.raw(), stats.raw()], grid(rows, 1))?;
    let mut inputs = vec![x];
    inputs.extend(weight);
    inputs.extend(bias);
    let stats = Tensor::from_storage(Storage::Gpu(stats), Shape::new([rows, 2]));
    Ok(Tensor::from_storage_op(Storage::Gpu(y), x.shape_obj().clone(), &inputs, || NormBackward {
        center,
        x: xd,
        weight: wd,
        has_bias: bias.is_some(),
        stats,
    }))
}

/// `x / max(‖x‖, eps)` along `axis` of a GPU tensor, composed from GPU ops (so autograd
/// comes with them). The gradient through the `max` is that of `clamp`: 0 where the
/// norm is below `eps`.
pub fn l2_normalize(x: &Tensor, axis: usize, eps: f32) -> Result<Tensor> {
    let norm = x.square().sum(&[axis as isize], true)?.sqrt().clamp(eps, f32::MAX)?;
    x.div(&norm)
}
