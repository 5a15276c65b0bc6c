//! Cross-entropy on the GPU, forward and backward: one workgroup per row of logits
//! (classes last). The op, its validation and its backward rule are
//! `ops::fused::cross_entropy`'s, which dispatches here.

use super::{GpuBuffer, Kernel, buf, context, dense, grid, u32_of};
use crate::autograd::Backward;
use crate::error::Result;
use crate::ops::fused::{CrossEntropyOpts, Reduction};
use crate::shape::Shape;
use crate::storage::Storage;
use crate::tensor::Tensor;

const FWD: Kernel = Kernel {
    name: "cross_entropy",
    src: shader!("rows.wgsl", "cross_entropy.wgsl"),
    entry: "cross_entropy",
    inputs: 2,
    outputs: 2,
};
const BWD: Kernel = Kernel {
    name: "cross_entropy_backward",
    src: shader!("rows.wgsl", "cross_entropy_backward.wgsl"),
    entry: "cross_entropy_backward",
    inputs: 4,
    outputs: 1,
};

/// Target of an ignored row in the kernels.
const IGNORED: u32 = u32::MAX;

struct CrossEntropyBackward {
    logits: Tensor,
    targets: GpuBuffer,
    stats: GpuBuffer,
    opts: CrossEntropyOpts,
    count: usize,
}

impl Backward for CrossEntropyBackward {
    fn name(&self) -> &'static str {
        "cross_entropy"
    }
    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        const OP: &str = "cross_entropy backward";
        let ctx = context()?;
        Tensor::common_device(OP, &[&self.logits, g])?;
        let g = dense(g)?;
        let c = *self.logits.shape().last().expect("rank >= 1");
        let rows = self.logits.numel() / c;
        let (mode, scale) = match self.opts.reduction {
            Reduction::Mean => (0, if self.count == 0 { 0.0 } else { 1.0 / self.count as f32 }),
            Reduction::Sum => (0, 1.0),
            Reduction::None => (1, 1.0),
        };
        let p = [u32_of(OP, rows)?, u32_of(OP, c)?, self.opts.label_smoothing.to_bits(), mode, scale.to_bits()];
        let dx = super::alloc(self.logits.numel())?;
        let ins = [buf(&self.logits).raw(), self.targets.raw(), self.stats.raw(), buf(&g).raw()];
        ctx.launch(OP, &BWD, &p, &ins, &[dx.raw()], grid(rows, 1))?;
        Ok(vec![Some(Tensor::from_storage(Storage::Gpu(dx), self.logits.shape_obj().clone()))])
    }
}

/// Cross-entropy of GPU logits `x` (`rows` rows of `c` classes, validated by the
/// caller) against `targets` (uploaded: host data, like a batch).
pub fn cross_entropy(x: &Tensor, targets: &[usize], opts: CrossEntropyOpts, rows: usize, c: usize) -> Result<Tensor> {
    const OP: &str = "cross_entropy";
    let ctx = context()?;
    let xd = dense(x)?;
    let t: Vec<u32> = targets
        .iter()
        .map(|&t| if Some(t) == opts.ignore_index { Ok(IGNORED) } else { u32_of(OP, t) })
        .collect::<Result<_>>()?;
    let tb = GpuBuffer::from_u32(ctx, &t)?;
    let (loss, stats) = (super::alloc(rows)?, super::alloc(2 * rows)?);
    let p = [u32_of(OP, rows)?, u32_of(OP, c)?, opts.label_smoothing.to_bits()];
    ctx.launch(OP, &FWD, &p, &[buf(&xd).raw(), tb.raw()], &[loss.raw(), stats.raw()], grid(rows, 1))?;
    let count = targets.iter().filter(|&&t| Some(t) != opts.ignore_index).count();
    let lead = Shape::new(&x.shape()[..x.rank() - 1]);
    let per_row = Tensor::from_storage(Storage::Gpu(loss), Shape::new([1, rows]));
    let (out, shape) = match opts.reduction {
        Reduction::Mean => {
            let scale = if count == 0 { 0.0 } else { 1.0 / count as f32 };
            (super::reduce::rows_of(OP, &per_row, 1, rows, super::reduce::Reduce::Sum, scale)?, Shape::new([]))
        }
        Reduction::Sum => {
            (super::reduce::rows_of(OP, &per_row, 1, rows, super::reduce::Reduce::Sum, 1.0)?, Shape::new([]))
        }
        Reduction::None => (Storage::Gpu(buf(&per_row).clone()), lead),
    };
    Ok(Tensor::from_storage_op(out, shape, &[x], || CrossEntropyBackward {
        logits: xd,
        targets: tb,
        stats,
        opts,
        count,
    }))
}
