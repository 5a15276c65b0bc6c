//! Batched GEMM on the GPU: strided operands (transposed views are read in place, never
//! copied), broadcast batch axes (zero strides), a dense `[batch.., M, N]` output.

use super::{Kernel, MAX_GROUPS, buf, context, u32_of};
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::storage::Storage;
use crate::tensor::Tensor;

const GEMM: Kernel = Kernel { name: "gemm", src: shader!("gemm.wgsl"), entry: "gemm", inputs: 2, outputs: 1 };
/// Output tile edge of one workgroup.
const TILE: usize = 64;
/// Most batch axes the kernel walks (more must be merged by the caller).
const MAX_BATCH_AXES: usize = 4;

/// `lhs[b] · rhs[b]` for every `b` of `batch`, where `l` and `r` are the operands'
/// layouts already broadcast to `batch + [m, k]` and `batch + [k, n]`.
pub fn batched(lhs: &Tensor, l: &Layout, rhs: &Tensor, r: &Layout, batch: &[usize]) -> Result<Storage> {
    const OP: &str = "matmul";
    let ctx = context()?;
    let nb = batch.len();
    if nb > MAX_BATCH_AXES {
        return Err(Error::InvalidArgument {
            op: OP,
            message: format!("the GPU matmul handles at most {MAX_BATCH_AXES} batch axes, got {nb}"),
        });
    }
    let (m, k) = (l.dims()[nb], l.dims()[nb + 1]);
    let n = r.dims()[nb + 1];
    let total: usize = batch.iter().product();
    let out = super::alloc(total * m * n)?;
    if total * m * n == 0 {
        return Ok(Storage::Gpu(out));
    }
    let mut p = vec![0u32; 23];
    p[0] = u32_of(OP, m)?;
    p[1] = u32_of(OP, k)?;
    p[2] = u32_of(OP, n)?;
    p[3] = nb as u32;
    for (i, &d) in batch.iter().enumerate() {
        p[4 + i] = u32_of(OP, d)?;
    }
    for (base, lay) in [(8, l), (15, r)] {
        p[base] = u32_of(OP, lay.offset)?;
        p[base + 1] = u32_of(OP, lay.strides[nb])?;
        p[base + 2] = u32_of(OP, lay.strides[nb + 1])?;
        for i in 0..nb {
            p[base + 3 + i] = u32_of(OP, lay.strides[i])?;
        }
    }
    let (gx, gy) = (u32_of(OP, n.div_ceil(TILE))?, u32_of(OP, m.div_ceil(TILE))?);
    // At most MAX_GROUPS batch entries per launch.
    for start in (0..total).step_by(MAX_GROUPS as usize) {
        p[22] = start as u32;
        let count = (total - start).min(MAX_GROUPS as usize) as u32;
        ctx.launch(OP, &GEMM, &p, &[buf(lhs).raw(), buf(rhs).raw()], &[out.raw()], [gx, gy, count])?;
    }
    Ok(Storage::Gpu(out))
}
