//! Reductions over any set of axes: the kept axes go first and the reduced ones last
//! (a strided copy only when that order is not already dense), then one workgroup
//! reduces each row.

use super::{Kernel, buf, context, dense, u32_of};
use crate::error::Result;
use crate::storage::Storage;
use crate::tensor::Tensor;

const REDUCE: Kernel =
    Kernel { name: "reduce_rows", src: shader!("reduce.wgsl"), entry: "reduce_rows", inputs: 1, outputs: 1 };

/// Which reduction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduce {
    Sum,
    Max,
    Min,
}

/// Reduce `t` over `axes` (resolved, any order), times `scale`; the result is dense in
/// the order of the kept axes.
pub fn reduce(t: &Tensor, axes: &[usize], op: Reduce, scale: f32) -> Result<Storage> {
    let name = match op {
        Reduce::Sum => "sum",
        Reduce::Max => "max",
        Reduce::Min => "min",
    };
    let kept: Vec<usize> = (0..t.rank()).filter(|i| !axes.contains(i)).collect();
    let perm: Vec<usize> = kept.iter().chain(axes).copied().collect();
    let rows: usize = kept.iter().map(|&i| t.shape()[i]).product();
    let n: usize = axes.iter().map(|&i| t.shape()[i]).product();
    let view = t.detach().permute(&perm)?;
    let x = dense(&view)?;
    rows_of(name, &x, rows, n, op, scale)
}

/// Reduce each row of a dense `[rows, n]` GPU tensor.
pub fn rows_of(name: &'static str, x: &Tensor, rows: usize, n: usize, op: Reduce, scale: f32) -> Result<Storage> {
    let ctx = context()?;
    let out = super::alloc(rows)?;
    let code = match op {
        Reduce::Sum => 0,
        Reduce::Max => 1,
        Reduce::Min => 2,
    };
    let p = [u32_of(name, rows)?, u32_of(name, n)?, code, scale.to_bits()];
    ctx.launch(name, &REDUCE, &p, &[buf(x).raw()], &[out.raw()], super::grid(rows, 1))?;
    Ok(Storage::Gpu(out))
}
