//! Indexing and joining: concat, stack, index_select, gather, embedding, shift, where_,
//! masked_fill (and the `causal_mask` helper). Kernels copy contiguous chunks or read
//! by precomputed offsets; the backward rules scatter-add through the same chunks or
//! offsets, so repeated indices accumulate.

use crate::autograd::Backward;
use crate::error::{Error, Result};
use crate::layout::{Layout, for_each_row};
use crate::shape::{Shape, broadcast_shape, resolve_axis};
use crate::storage::{Storage, buffer, zeroed};
use crate::tensor::Tensor;

// ----- kernels ---------------------------------------------------------------------------

/// Join `parts` round by round: in each of `outer` rounds part `i` contributes its next
/// `chunks[i]` elements (concat along an axis whose outer product is `outer`).
pub fn concat_kernel(parts: &[&[f32]], chunks: &[usize], outer: usize) -> Vec<f32> {
    let total: usize = chunks.iter().sum();
    let mut out = buffer(outer * total);
    let mut pos = 0;
    for o in 0..outer {
        for (p, &c) in parts.iter().zip(chunks) {
            out[pos..pos + c].copy_from_slice(&p[o * c..(o + 1) * c]);
            pos += c;
        }
    }
    out
}

/// The inverse of [`concat_kernel`]: part `i` of `data`, for each `i` with `keep[i]`.
pub fn split_kernel(data: &[f32], chunks: &[usize], outer: usize, keep: &[bool]) -> Vec<Option<Vec<f32>>> {
    let total: usize = chunks.iter().sum();
    let mut parts: Vec<Option<Vec<f32>>> =
        chunks.iter().zip(keep).map(|(&c, &k)| k.then(|| Vec::with_capacity(outer * c))).collect();
    for o in 0..outer {
        let mut start = o * total;
        for (part, &c) in parts.iter_mut().zip(chunks) {
            if let Some(p) = part {
                p.extend_from_slice(&data[start..start + c]);
            }
            start += c;
        }
    }
    parts
}

/// `x` viewed as `[outer, size, inner]`; the output is `[outer, indices.len(), inner]`
/// with `out[o, j, :] = x[o, indices[j], :]`. Indices must be `< size`.
pub fn index_select_kernel(x: &[f32], outer: usize, size: usize, inner: usize, indices: &[usize]) -> Vec<f32> {
    let mut out = buffer(outer * indices.len() * inner);
    let mut pos = 0;
    for o in 0..outer {
        let base = o * size * inner;
        for &i in indices {
            out[pos..pos + inner].copy_from_slice(&x[base + i * inner..base + (i + 1) * inner]);
            pos += inner;
        }
    }
    out
}

/// The adjoint of [`index_select_kernel`]: zeros of `[outer, size, inner]` with every
/// row `g[o, j, :]` added into row `indices[j]` (repeated indices accumulate).
pub fn index_add_kernel(g: &[f32], outer: usize, size: usize, inner: usize, indices: &[usize]) -> Vec<f32> {
    let mut out = zeroed(outer * size * inner);
    let n = indices.len();
    for o in 0..outer {
        for (j, &i) in indices.iter().enumerate() {
            let src = &g[(o * n + j) * inner..(o * n + j + 1) * inner];
            let dst = &mut out[(o * size + i) * inner..(o * size + i + 1) * inner];
            for (d, &s) in dst.iter_mut().zip(src) {
                *d += s;
            }
        }
    }
    out
}

/// For every element of `index` (shape `index_shape`, the rank of `x_shape`), the
/// row-major offset into `x` that `gather` along `axis` reads. Entries must be valid.
pub fn gather_offsets(x_shape: &[usize], axis: usize, index: &[usize], index_shape: &[usize]) -> Vec<usize> {
    let strides = Shape::from(x_shape).contiguous_strides();
    let r = x_shape.len();
    let mut out = Vec::with_capacity(index.len());
    let mut coord = vec![0usize; r];
    // Offset of the current position with the `axis` coordinate left out.
    let mut base = 0usize;
    for &ix in index {
        out.push(base + ix * strides[axis]);
        for d in (0..r).rev() {
            coord[d] += 1;
            if d != axis {
                base += strides[d];
            }
            if coord[d] < index_shape[d] {
                break;
            }
            if d != axis {
                base -= strides[d] * index_shape[d];
            }
            coord[d] = 0;
        }
    }
    out
}

/// `out[i] = x[offsets[i]]`.
pub fn take_kernel(x: &[f32], offsets: &[usize]) -> Vec<f32> {
    offsets.iter().map(|&o| x[o]).collect()
}

/// The adjoint of [`take_kernel`]: zeros of length `len` with `g[i]` added at `offsets[i]`.
pub fn put_add_kernel(g: &[f32], offsets: &[usize], len: usize) -> Vec<f32> {
    let mut out = zeroed(len);
    for (&o, &v) in offsets.iter().zip(g) {
        out[o] += v;
    }
    out
}

/// `x` viewed as `[outer, n, inner]`, shifted by `k` along the middle axis with zero
/// fill: `out[o, i, :] = x[o, i - k, :]` where `0 <= i - k < n`, else 0.
pub fn shift_kernel(x: &[f32], outer: usize, n: usize, inner: usize, k: isize) -> Vec<f32> {
    let mut out = zeroed(x.len());
    let m = k.unsigned_abs().min(n);
    let len = (n - m) * inner;
    for o in 0..outer {
        let base = o * n * inner;
        if k >= 0 {
            out[base + m * inner..base + m * inner + len].copy_from_slice(&x[base..base + len]);
        } else {
            out[base..base + len].copy_from_slice(&x[base + m * inner..base + m * inner + len]);
        }
    }
    out
}

/// `out = c != 0 ? a : b` over `shape`, each operand a slice read through a layout
/// already broadcast to `shape` (zero strides repeat elements). A NaN condition counts
/// as true.
pub fn select_kernel(shape: &Shape, c: (&[f32], &Layout), a: (&[f32], &Layout), b: (&[f32], &Layout)) -> Vec<f32> {
    let mut out = buffer(shape.numel());
    let mut pos = 0;
    let (cd, ad, bd) = (c.0, a.0, b.0);
    for_each_row(
        shape.dims(),
        &[&c.1.strides, &a.1.strides, &b.1.strides],
        &[c.1.offset, a.1.offset, b.1.offset],
        |base, len, inner| {
            for (k, o) in out[pos..pos + len].iter_mut().enumerate() {
                let cv = cd[base[0] + k * inner[0]];
                *o = if cv != 0.0 { ad[base[1] + k * inner[1]] } else { bd[base[2] + k * inner[2]] };
            }
            pos += len;
        },
    );
    out
}

// ----- concat / stack --------------------------------------------------------------------

struct ConcatBackward {
    op: &'static str,
    outer: usize,
    chunks: Vec<usize>,
    shapes: Vec<Shape>,
}

impl Backward for ConcatBackward {
    fn name(&self) -> &'static str {
        self.op
    }
    fn backward(&self, g: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        if g.device() == crate::Device::Gpu {
            return on_gpu!(self.op, index::split(g, self.outer, &self.chunks, &self.shapes, needs));
        }
        let parts = split_kernel(&g.contiguous_data(), &self.chunks, self.outer, needs);
        Ok(parts.into_iter().zip(&self.shapes).map(|(p, s)| p.map(|p| Tensor::from_parts(p, s.clone()))).collect())
    }
}

/// Shared tail of concat and stack: `tensors` are joined in chunks of `chunks[i]`
/// elements over `outer` rounds into `out_shape`.
fn join(op: &'static str, tensors: &[&Tensor], outer: usize, chunks: Vec<usize>, out_shape: Shape) -> Result<Tensor> {
    let backward = || ConcatBackward {
        op,
        outer,
        chunks: chunks.clone(),
        shapes: tensors.iter().map(|t| t.shape_obj().clone()).collect(),
    };
    if Tensor::common_device(op, tensors)? == crate::Device::Gpu {
        let out = on_gpu!(op, index::join(op, tensors, outer, &chunks, chunks.iter().sum()))?;
        return Ok(Tensor::from_storage_op(out, out_shape, tensors, backward));
    }
    let datas: Vec<_> = tensors.iter().map(|t| t.contiguous_data()).collect();
    let slices: Vec<&[f32]> = datas.iter().map(|d| d.as_ref()).collect();
    let out = concat_kernel(&slices, &chunks, outer);
    drop(datas);
    Ok(Tensor::from_op(out, out_shape, tensors, backward))
}

fn first<'a>(op: &'static str, tensors: &[&'a Tensor]) -> Result<&'a Tensor> {
    tensors.first().copied().ok_or_else(|| Error::InvalidArgument { op, message: "needs at least one tensor".into() })
}

impl Tensor {
    /// Join tensors along an existing `axis`; every other axis must agree.
    pub fn concat(tensors: &[&Tensor], axis: isize) -> Result<Tensor> {
        let _p = crate::profile::fwd("concat");
        let op = "concat";
        let t0 = first(op, tensors)?;
        let axis = resolve_axis(op, axis, t0.rank())?;
        for t in &tensors[1..] {
            let fits = t.rank() == t0.rank()
                && t.shape().iter().zip(t0.shape()).enumerate().all(|(i, (a, b))| i == axis || a == b);
            if !fits {
                return Err(Error::Join { op, axis, lhs: t0.shape_obj().clone(), rhs: t.shape_obj().clone() });
            }
        }
        let outer: usize = t0.shape()[..axis].iter().product();
        let chunks: Vec<usize> = tensors.iter().map(|t| t.shape()[axis..].iter().product()).collect();
        let mut out_shape = t0.shape().to_vec();
        out_shape[axis] = tensors.iter().map(|t| t.shape()[axis]).sum();
        join(op, tensors, outer, chunks, Shape(out_shape))
    }

    /// Join equally shaped tensors along a new `axis` (in the output's numbering).
    pub fn stack(tensors: &[&Tensor], axis: isize) -> Result<Tensor> {
        let _p = crate::profile::fwd("stack");
        let op = "stack";
        let t0 = first(op, tensors)?;
        let axis = resolve_axis(op, axis, t0.rank() + 1)?;
        if let Some(t) = tensors.iter().find(|t| t.shape() != t0.shape()) {
            return Err(Error::Join { op, axis, lhs: t0.shape_obj().clone(), rhs: t.shape_obj().clone() });
        }
        let outer: usize = t0.shape()[..axis].iter().product();
        let chunk: usize = t0.shape()[axis..].iter().product();
        let mut out_shape = t0.shape().to_vec();
        out_shape.insert(axis, tensors.len());
        join(op, tensors, outer, vec![chunk; tensors.len()], Shape(out_shape))
    }
}

// ----- index_select / embedding ----------------------------------------------------------

struct IndexSelectBackward {
    op: &'static str,
    input_shape: Shape,
    outer: usize,
    size: usize,
    inner: usize,
    indices: Vec<usize>,
}

impl Backward for IndexSelectBackward {
    fn name(&self) -> &'static str {
        self.op
    }
    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        if g.device() == crate::Device::Gpu {
            // Only the embedding (outer 1) records on the GPU; index_select is CPU-only.
            if self.outer != 1 {
                return Err(Error::Unsupported { op: "index_select backward", device: g.device() });
            }
            return Ok(vec![Some(on_gpu!(
                self.op,
                index::embedding_backward(g, &self.indices, self.size, self.inner)
            )?)]);
        }
        let buf = index_add_kernel(&g.contiguous_data(), self.outer, self.size, self.inner, &self.indices);
        Ok(vec![Some(Tensor::from_parts(buf, self.input_shape.clone()))])
    }
}

/// `Error::Index` for the first index `>= size`, if any.
fn check_indices(op: &'static str, indices: &[usize], axis: usize, size: usize, shape: &Shape) -> Result<()> {
    match indices.iter().find(|&&i| i >= size) {
        Some(&index) => Err(Error::Index { op, axis, index, size, shape: shape.clone() }),
        None => Ok(()),
    }
}

impl Tensor {
    /// The slices `indices[j]` along `axis`, in that order (repeats allowed): the
    /// output has `indices.len()` entries along `axis`. The gradient scatter-adds.
    pub fn index_select(&self, axis: isize, indices: &[usize]) -> Result<Tensor> {
        Tensor::cpu_only("index_select", &[self])?;
        let _p = crate::profile::fwd("index_select");
        let op = "index_select";
        let axis = self.shape_obj().axis(op, axis)?;
        let dims = self.shape();
        let (outer, size, inner) =
            (dims[..axis].iter().product(), dims[axis], dims[axis + 1..].iter().product::<usize>());
        check_indices(op, indices, axis, size, self.shape_obj())?;
        let out = index_select_kernel(&self.contiguous_data(), outer, size, inner, indices);
        let mut out_shape = dims.to_vec();
        out_shape[axis] = indices.len();
        Ok(Tensor::from_op(out, Shape(out_shape), &[self], || IndexSelectBackward {
            op,
            input_shape: self.shape_obj().clone(),
            outer,
            size,
            inner,
            indices: indices.to_vec(),
        }))
    }

    /// Rows of the `[vocab, dim]` weight `self` picked by `ids` (row-major, shape
    /// `ids_shape`): the output is `[..ids_shape, dim]`. The gradient scatter-adds into
    /// the picked rows.
    pub fn embedding(&self, ids: &[usize], ids_shape: &[usize]) -> Result<Tensor> {
        let _p = crate::profile::fwd("embedding");
        let op = "embedding";
        if self.rank() != 2 {
            return Err(Error::InvalidArgument {
                op,
                message: format!("the weight must be [vocab, dim] but has shape {}", self.shape_obj()),
            });
        }
        if ids.len() != ids_shape.iter().product::<usize>() {
            return Err(Error::DataLength { op, len: ids.len(), shape: Shape::from(ids_shape) });
        }
        let (vocab, dim) = (self.shape()[0], self.shape()[1]);
        check_indices(op, ids, 0, vocab, self.shape_obj())?;
        let out = match self.device() {
            crate::Device::Cpu => Storage::Cpu(index_select_kernel(&self.contiguous_data(), 1, vocab, dim, ids)),
            crate::Device::Gpu => on_gpu!(op, index::embedding(self, ids, dim))?,
        };
        let out_shape = Shape(ids_shape.iter().copied().chain([dim]).collect());
        Ok(Tensor::from_storage_op(out, out_shape, &[self], || IndexSelectBackward {
            op,
            input_shape: self.shape_obj().clone(),
            outer: 1,
            size: vocab,
            inner: dim,
            indices: ids.to_vec(),
        }))
    }
}

// ----- gather ----------------------------------------------------------------------------

struct GatherBackward {
    input_shape: Shape,
    offsets: Vec<usize>,
}

impl Backward for GatherBackward {
    fn name(&self) -> &'static str {
        "gather"
    }
    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let buf = put_add_kernel(&g.contiguous_data(), &self.offsets, self.input_shape.numel());
        Ok(vec![Some(Tensor::from_parts(buf, self.input_shape.clone()))])
    }
}

impl Tensor {
    /// `torch.gather`: `index` (row-major, shape `index_shape`, the same rank as `self`,
    /// no larger than `self` off `axis`) picks along `axis`; for `axis = 1` of a rank-3
    /// input, `out[i][j][k] = self[i][index[i][j][k]][k]`. The output has `index_shape`;
    /// the gradient scatter-adds (repeated picks accumulate).
    pub fn gather(&self, axis: isize, index: &[usize], index_shape: &[usize]) -> Result<Tensor> {
        Tensor::cpu_only("gather", &[self])?;
        let _p = crate::profile::fwd("gather");
        let op = "gather";
        let axis = self.shape_obj().axis(op, axis)?;
        let ishape = Shape::from(index_shape);
        if index.len() != ishape.numel() {
            return Err(Error::DataLength { op, len: index.len(), shape: ishape });
        }
        let fits = ishape.rank() == self.rank()
            && ishape.dims().iter().zip(self.shape()).enumerate().all(|(d, (&i, &s))| d == axis || i <= s);
        if !fits {
            return Err(Error::ShapeMismatch { op, lhs: self.shape_obj().clone(), rhs: ishape });
        }
        check_indices(op, index, axis, self.shape()[axis], self.shape_obj())?;
        let offsets = gather_offsets(self.shape(), axis, index, index_shape);
        let out = take_kernel(&self.contiguous_data(), &offsets);
        Ok(Tensor::from_op(out, ishape, &[self], || GatherBackward { input_shape: self.shape_obj().clone(), offsets }))
    }
}

// ----- shift -----------------------------------------------------------------------------

struct ShiftBackward {
    input_shape: Shape,
    outer: usize,
    n: usize,
    inner: usize,
    k: isize,
}

impl Backward for ShiftBackward {
    fn name(&self) -> &'static str {
        "shift"
    }
    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        if g.device() == crate::Device::Gpu {
            let out = on_gpu!("shift backward", index::shift(g, self.outer, self.n, self.inner, -self.k))?;
            return Ok(vec![Some(Tensor::from_storage(out, self.input_shape.clone()))]);
        }
        let buf = shift_kernel(&g.contiguous_data(), self.outer, self.n, self.inner, -self.k);
        Ok(vec![Some(Tensor::from_parts(buf, self.input_shape.clone()))])
    }
}

impl Tensor {
    /// Shift by `k` along `axis` with zero fill: `out[.., i, ..] = self[.., i - k, ..]`.
    /// Positive `k` moves elements to higher indices (`shift(1)` along time gives each
    /// step the previous token); `|k| >= size` gives zeros.
    pub fn shift(&self, axis: isize, k: isize) -> Result<Tensor> {
        let _p = crate::profile::fwd("shift");
        let axis = self.shape_obj().axis("shift", axis)?;
        let dims = self.shape();
        let (outer, n, inner) = (dims[..axis].iter().product(), dims[axis], dims[axis + 1..].iter().product());
        // Clamp so that the backward's `-k` cannot overflow; the result is the same.
        let k = k.clamp(-(n as isize), n as isize);
        let out = match self.device() {
            crate::Device::Cpu => Storage::Cpu(shift_kernel(&self.contiguous_data(), outer, n, inner, k)),
            crate::Device::Gpu => on_gpu!("shift", index::shift(self, outer, n, inner, k))?,
        };
        Ok(Tensor::from_storage_op(out, self.shape_obj().clone(), &[self], || ShiftBackward {
            input_shape: self.shape_obj().clone(),
            outer,
            n,
            inner,
            k,
        }))
    }
}

// ----- where_ / masked_fill / causal_mask ------------------------------------------------

struct WhereBackward {
    cond: Tensor,
    a_shape: Shape,
    b_shape: Shape,
}

impl Backward for WhereBackward {
    fn name(&self) -> &'static str {
        "where"
    }
    fn backward(&self, g: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        // Select rather than multiply by the mask, so that an inf/NaN gradient on the
        // side not taken does not leak through as 0 * inf.
        let zero = Tensor::scalar(0.0);
        let ga = if needs[0] { Some(Tensor::where_(&self.cond, g, &zero)?.sum_to(&self.a_shape)?) } else { None };
        let gb = if needs[1] { Some(Tensor::where_(&self.cond, &zero, g)?.sum_to(&self.b_shape)?) } else { None };
        Ok(vec![ga, gb])
    }
}

struct MaskedFillBackward {
    mask: Tensor,
}

impl Backward for MaskedFillBackward {
    fn name(&self) -> &'static str {
        "masked_fill"
    }
    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(Tensor::where_(&self.mask, &Tensor::scalar(0.0), g)?)])
    }
}

impl Tensor {
    /// `cond != 0 ? a : b` elementwise, the three broadcast together (NumPy rules).
    /// `cond` is a 0/1 mask and gets no gradient; `a` and `b` get the gradient where
    /// they were picked, summed back to their shapes.
    pub fn where_(cond: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        Tensor::cpu_only("where", &[cond, a, b])?;
        let _p = crate::profile::fwd("where");
        let op = "where";
        let shape = broadcast_shape(op, &broadcast_shape(op, cond.shape_obj(), a.shape_obj())?, b.shape_obj())?;
        let (lc, la, lb) = (
            cond.layout.broadcast_to(op, &shape)?,
            a.layout.broadcast_to(op, &shape)?,
            b.layout.broadcast_to(op, &shape)?,
        );
        let out = select_kernel(&shape, (cond.storage.cpu(), &lc), (a.storage.cpu(), &la), (b.storage.cpu(), &lb));
        Ok(Tensor::from_op(out, shape, &[a, b], || WhereBackward {
            cond: cond.detach(),
            a_shape: a.shape_obj().clone(),
            b_shape: b.shape_obj().clone(),
        }))
    }

    /// `value` where `mask != 0`, else `self`; `mask` broadcasts to `self`'s shape.
    pub fn masked_fill(&self, mask: &Tensor, value: f32) -> Result<Tensor> {
        Tensor::cpu_only("masked_fill", &[self, mask])?;
        let _p = crate::profile::fwd("masked_fill");
        let op = "masked_fill";
        let shape = self.shape_obj();
        let lm = mask.layout.broadcast_to(op, shape)?;
        let fill = Tensor::scalar(value);
        let lf = fill.layout.broadcast_to(op, shape)?;
        let out = select_kernel(
            shape,
            (mask.storage.cpu(), &lm),
            (fill.storage.cpu(), &lf),
            (self.storage.cpu(), &self.layout),
        );
        Ok(Tensor::from_op(out, shape.clone(), &[self], || MaskedFillBackward { mask: mask.detach() }))
    }

    /// The `[t, t]` causal mask of attention: 1.0 where key `j <= ` query `i`, else 0.0.
    pub fn causal_mask(t: usize) -> Tensor {
        let data = (0..t * t).map(|p| if p % t <= p / t { 1.0 } else { 0.0 }).collect();
        Tensor::from_parts(data, Shape::new([t, t]))
    }
}
