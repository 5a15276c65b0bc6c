//! Index ops on the GPU: strided placement (narrow backward, concat / stack and their
//! split, shift both ways) and the embedding's row gather and its scatter-add (without
//! atomics: the host, which holds the ids, groups the positions by id). The ops, their
//! validation and their backward rules are `ops::index`'s and `ops::view`'s, which
//! dispatch here.

use super::{GpuBuffer, Kernel, buf, context, dense, grid, strided_header, u32_of};
use crate::error::Result;
use crate::layout::Layout;
use crate::shape::Shape;
use crate::storage::Storage;
use crate::tensor::Tensor;

const PLACE: Kernel = Kernel { name: "place", src: shader!("place.wgsl"), entry: "place", inputs: 1, outputs: 1 };
const GATHER: Kernel =
    Kernel { name: "gather_rows", src: shader!("gather_rows.wgsl"), entry: "gather_rows", inputs: 2, outputs: 1 };
const SCATTER: Kernel =
    Kernel { name: "scatter_rows", src: shader!("scatter_rows.wgsl"), entry: "scatter_rows", inputs: 2, outputs: 1 };

/// Write the elements of `src` (any view) to the positions `dst` of `out` (a layout of
/// `src`'s shape over `out`'s buffer).
fn place(op: &'static str, src: &Tensor, out: &GpuBuffer, dst: &Layout) -> Result<()> {
    let p = strided_header(op, src.shape(), &[&src.layout, dst])?;
    context()?.launch(op, &PLACE, &p, &[buf(src).raw()], &[out.raw()], grid(src.numel(), super::WG))
}

/// The gradient of `narrow(axis, start, len)` of an input of `shape`: `g` in its slot,
/// zeros elsewhere.
pub fn narrow_backward(g: &Tensor, shape: &Shape, axis: usize, start: usize) -> Result<Tensor> {
    const OP: &str = "narrow backward";
    let out = super::alloc(shape.numel())?;
    let dst = Layout::contiguous(shape.clone()).narrow(OP, axis, start, g.shape()[axis])?;
    place(OP, g, &out, &dst)?;
    Ok(Tensor::from_storage(Storage::Gpu(out), shape.clone()))
}

/// `tensors` joined in chunks of `chunks[i]` elements over `outer` rounds (concat and
/// stack: each input viewed as `[outer, chunks[i]]`, placed side by side).
pub fn join(op: &'static str, tensors: &[&Tensor], outer: usize, chunks: &[usize], total: usize) -> Result<Storage> {
    let out = super::alloc(outer * total)?;
    let whole = Layout::contiguous(Shape::new([outer, total]));
    let mut off = 0;
    for (t, &c) in tensors.iter().zip(chunks) {
        let src = t.detach().reshape(&[outer, c])?;
        place(op, &src, &out, &whole.narrow(op, 1, off, c)?)?;
        off += c;
    }
    Ok(Storage::Gpu(out))
}

/// The backward of [`join`]: `g` viewed as `[outer, Σ chunks]`, cut into dense parts
/// of the inputs' `shapes` (only those `needs` asks for).
pub fn split(
    g: &Tensor,
    outer: usize,
    chunks: &[usize],
    shapes: &[Shape],
    needs: &[bool],
) -> Result<Vec<Option<Tensor>>> {
    let total = chunks.iter().sum();
    let g2 = g.detach().reshape(&[outer, total])?;
    let mut off = 0;
    let mut out = Vec::with_capacity(chunks.len());
    for (i, (&c, shape)) in chunks.iter().zip(shapes).enumerate() {
        out.push(needs[i].then(|| dense(&g2.narrow(1, off, c)?)?.reshape(shape.dims())).transpose()?);
        off += c;
    }
    Ok(out)
}

/// `x` (viewed as `[outer, n, inner]`) shifted by `k` along the middle axis with zero
/// fill (`|k| <= n`, as `Tensor::shift` clamps it).
pub fn shift(x: &Tensor, outer: usize, n: usize, inner: usize, k: isize) -> Result<Storage> {
    const OP: &str = "shift";
    let out = super::alloc(outer * n * inner)?;
    let m = n - k.unsigned_abs();
    if m > 0 {
        let (from, to) = if k >= 0 { (0, k as usize) } else { (k.unsigned_abs(), 0) };
        let src = x.detach().reshape(&[outer, n, inner])?.narrow(1, from, m)?;
        let dst = Layout::contiguous(Shape::new([outer, n, inner])).narrow(OP, 1, to, m)?;
        place(OP, &src, &out, &dst)?;
    }
    Ok(Storage::Gpu(out))
}

/// Rows `ids` of the GPU `[vocab, dim]` table `w` (ids validated by the caller).
pub fn embedding(w: &Tensor, ids: &[usize], dim: usize) -> Result<Storage> {
    const OP: &str = "embedding";
    let ctx = context()?;
    let wd = dense(w)?;
    let idb = GpuBuffer::from_u32(ctx, &ids.iter().map(|&i| u32_of(OP, i)).collect::<Result<Vec<_>>>()?)?;
    let n = ids.len() * dim;
    let out = super::alloc(n)?;
    let p = [u32_of(OP, n)?, u32_of(OP, dim)?];
    ctx.launch(OP, &GATHER, &p, &[buf(&wd).raw(), idb.raw()], &[out.raw()], grid(n, super::WG))?;
    Ok(Storage::Gpu(out))
}

/// The gradient of [`embedding`] for a `[vocab, dim]` table: the rows of `g`
/// (`[ids.len(), dim]`) summed into the rows their ids name.
pub fn embedding_backward(g: &Tensor, ids: &[usize], vocab: usize, dim: usize) -> Result<Tensor> {
    const OP: &str = "embedding backward";
    let ctx = context()?;
    // CSR on the host: offsets per id, then the positions grouped by id (ascending).
    let mut offsets = vec![0u32; vocab + 1];
    for &i in ids {
        offsets[i + 1] += 1;
    }
    for v in 0..vocab {
        offsets[v + 1] += offsets[v];
    }
    let mut fill = offsets.clone();
    let mut idx = offsets;
    idx.resize(vocab + 1 + ids.len(), 0);
    for (p, &i) in ids.iter().enumerate() {
        idx[vocab + 1 + fill[i] as usize] = u32_of(OP, p)?;
        fill[i] += 1;
    }
    let idb = GpuBuffer::from_u32(ctx, &idx)?;
    let gd = dense(g)?;
    let n = vocab * dim;
    let out = super::alloc(n)?;
    let p = [u32_of(OP, n)?, u32_of(OP, dim)?, u32_of(OP, vocab)?];
    ctx.launch(OP, &SCATTER, &p, &[buf(&gd).raw(), idb.raw()], &[out.raw()], grid(n, super::WG))?;
    Ok(Tensor::from_storage(Storage::Gpu(out), Shape::new([vocab, dim])))
}
