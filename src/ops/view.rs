//! Views: reshape, permute, transpose, narrow, broadcast_to, (un)squeeze, contiguous.
//! Each is O(1) (a new layout over the same storage) except `reshape` of non-contiguous
//! data and `contiguous`, which copy once.

use crate::autograd::Backward;
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::shape::{Shape, resolve_axis};
use crate::tensor::Tensor;

struct ReshapeBackward {
    input_shape: Shape,
}
impl Backward for ReshapeBackward {
    fn name(&self) -> &'static str {
        "reshape"
    }
    fn backward(&self, g: &Tensor, _: &[bool]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.reshape(self.input_shape.dims())?)])
    }
}

struct PermuteBackward {
    inverse: Vec<usize>,
}
impl Backward for PermuteBackward {
    fn name(&self) -> &'static str {
        "permute"
    }
    fn backward(&self, g: &Tensor, _: &[bool]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.permute(&self.inverse)?)])
    }
}

struct NarrowBackward {
    input_shape: Shape,
    axis: usize,
    start: usize,
}
impl Backward for NarrowBackward {
    fn name(&self) -> &'static str {
        "narrow"
    }
    fn backward(&self, g: &Tensor, _: &[bool]) -> Result<Vec<Option<Tensor>>> {
        if g.device() == crate::Device::Gpu {
            let gi = on_gpu!("narrow backward", index::narrow_backward(g, &self.input_shape, self.axis, self.start))?;
            return Ok(vec![Some(gi)]);
        }
        // The gradient in its slice of the input's shape, zeros around it. Per index of
        // the axes before `axis`, the input holds one block of `d × inner` elements and
        // the gradient one of `len × inner`: each element is written once, into a pooled
        // buffer (a fresh zeroed one faulted in 19 MB per ViT q/k/v split).
        let dims = self.input_shape.dims();
        let (d, len) = (dims[self.axis], g.shape()[self.axis]);
        let inner: usize = dims[self.axis + 1..].iter().product();
        let (block, lo, hi) = (d * inner, self.start * inner, (self.start + len) * inner);
        let mut buf = crate::storage::buffer(self.input_shape.numel());
        let gd = g.contiguous_data();
        if block > 0 {
            let per_task = crate::cpu::par::rows_for(block, crate::cpu::par::ELEMWISE_CHUNK);
            crate::cpu::par::for_row_chunks_mut(
                &mut buf,
                block,
                per_task,
                crate::cpu::par::ELEMWISE_MIN,
                |o0, chunk| {
                    for (j, b) in chunk.chunks_exact_mut(block).enumerate() {
                        let o = o0 + j;
                        b[..lo].fill(0.0);
                        b[lo..hi].copy_from_slice(&gd[o * (hi - lo)..(o + 1) * (hi - lo)]);
                        b[hi..].fill(0.0);
                    }
                },
            );
        }
        Ok(vec![Some(Tensor::from_parts(buf, self.input_shape.clone()))])
    }
}

struct BroadcastBackward {
    input_shape: Shape,
}
impl Backward for BroadcastBackward {
    fn name(&self) -> &'static str {
        "broadcast_to"
    }
    fn backward(&self, g: &Tensor, _: &[bool]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.sum_to(&self.input_shape)?)])
    }
}

struct IdentityBackward(&'static str);
impl Backward for IdentityBackward {
    fn name(&self) -> &'static str {
        self.0
    }
    fn backward(&self, g: &Tensor, _: &[bool]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.clone())])
    }
}

impl Tensor {
    /// A new shape with the same number of elements; one entry may be `usize::MAX`
    /// to infer it. A view when contiguous; otherwise the data is copied once.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let to = infer_shape(self.shape_obj(), shape)?;
        if to.dims() == self.shape() {
            return Ok(self.clone());
        }
        let input_shape = self.shape_obj().clone();
        if let Some(l) = self.layout.reshape_view(&to) {
            return Ok(self.view_op(l, || ReshapeBackward { input_shape }));
        }
        let _p = crate::profile::fwd("reshape_copy");
        let data = self.copy_storage("reshape")?;
        Ok(Tensor::from_storage_op(data, to, &[self], || ReshapeBackward { input_shape }))
    }
    /// Merge all axes into one.
    pub fn flatten_all(&self) -> Result<Tensor> {
        self.reshape(&[self.numel()])
    }
    /// Reorder axes: output axis `i` is input axis `axes[i]`.
    pub fn permute(&self, axes: &[usize]) -> Result<Tensor> {
        let l = self.layout.permute("permute", axes)?;
        let mut inverse = vec![0; axes.len()];
        for (i, &a) in axes.iter().enumerate() {
            inverse[a] = i;
        }
        Ok(self.view_op(l, || PermuteBackward { inverse }))
    }
    /// Swap two axes (negative counts from the end).
    pub fn transpose(&self, a: isize, b: isize) -> Result<Tensor> {
        let r = self.rank();
        let (a, b) = (resolve_axis("transpose", a, r)?, resolve_axis("transpose", b, r)?);
        let mut perm: Vec<usize> = (0..r).collect();
        perm.swap(a, b);
        self.permute(&perm)
    }
    /// Transpose of a matrix (the last two axes).
    pub fn t(&self) -> Result<Tensor> {
        self.transpose(-2, -1)
    }
    /// Elements `start..start + len` along `axis`, as a view.
    pub fn narrow(&self, axis: isize, start: usize, len: usize) -> Result<Tensor> {
        let axis = self.shape_obj().axis("narrow", axis)?;
        let l = self.layout.narrow("narrow", axis, start, len)?;
        let input_shape = self.shape_obj().clone();
        Ok(self.view_op(l, || NarrowBackward { input_shape, axis, start }))
    }
    /// Broadcast to `shape` (NumPy rules) as a view with zero strides.
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Tensor> {
        let target = Shape::from(shape);
        if target.dims() == self.shape() {
            return Ok(self.clone());
        }
        let l = self.layout.broadcast_to("broadcast_to", &target)?;
        let input_shape = self.shape_obj().clone();
        Ok(self.view_op(l, || BroadcastBackward { input_shape }))
    }
    /// Insert a size-1 axis at `axis` (in the output's numbering).
    pub fn unsqueeze(&self, axis: isize) -> Result<Tensor> {
        let a = resolve_axis("unsqueeze", axis, self.rank() + 1)?;
        let mut d = self.shape().to_vec();
        d.insert(a, 1);
        self.reshape_keep_strides(d)
    }
    /// Remove the size-1 axis `axis`.
    pub fn squeeze(&self, axis: isize) -> Result<Tensor> {
        let a = self.shape_obj().axis("squeeze", axis)?;
        if self.shape()[a] != 1 {
            return Err(Error::InvalidArgument {
                op: "squeeze",
                message: format!("axis {a} of {} has size {}, not 1", self.shape_obj(), self.shape()[a]),
            });
        }
        let mut d = self.shape().to_vec();
        d.remove(a);
        self.reshape_keep_strides(d)
    }
    /// Add or remove size-1 axes without copying, whatever the strides.
    fn reshape_keep_strides(&self, dims: Vec<usize>) -> Result<Tensor> {
        let mut strides = Vec::with_capacity(dims.len());
        let mut src = self.shape().iter().zip(&self.layout.strides).filter(|(d, _)| **d != 1);
        for &d in &dims {
            strides.push(if d == 1 { 0 } else { *src.next().expect("same non-1 axes").1 });
        }
        let l = Layout { shape: Shape(dims), strides, offset: self.layout.offset };
        let input_shape = self.shape_obj().clone();
        Ok(self.view_op(l, || ReshapeBackward { input_shape }))
    }
    /// A contiguous tensor with the same values (a copy only when needed).
    pub fn contiguous(&self) -> Tensor {
        if self.is_contiguous() {
            return self.clone();
        }
        let _p = crate::profile::fwd("contiguous");
        // Infallible signature: a GPU error (out of memory) panics with its message.
        let data = self.copy_storage("contiguous").unwrap_or_else(|e| panic!("{e}"));
        Tensor::from_storage_op(data, self.shape_obj().clone(), &[self], || IdentityBackward("contiguous"))
    }

    /// The elements in row-major order, in a new storage on this tensor's device.
    fn copy_storage(&self, op: &'static str) -> Result<crate::storage::Storage> {
        match self.device() {
            crate::Device::Cpu => Ok(crate::storage::Storage::Cpu(self.to_vec())),
            crate::Device::Gpu => on_gpu!(op, elementwise::copy(self)),
        }
    }
}

/// Resolve a target shape with at most one `usize::MAX` (inferred) entry.
fn infer_shape(from: &Shape, to: &[usize]) -> Result<Shape> {
    let unknown: Vec<usize> = to.iter().enumerate().filter(|(_, d)| **d == usize::MAX).map(|(i, _)| i).collect();
    let err = || Error::Reshape { from: from.clone(), to: Shape(to.to_vec()) };
    match unknown.as_slice() {
        [] => {
            let s = Shape(to.to_vec());
            if s.numel() != from.numel() {
                return Err(err());
            }
            Ok(s)
        }
        [i] => {
            let known: usize = to.iter().filter(|d| **d != usize::MAX).product();
            if known == 0 || !from.numel().is_multiple_of(known) {
                return Err(err());
            }
            let mut d = to.to_vec();
            d[*i] = from.numel() / known;
            Ok(Shape(d))
        }
        _ => Err(Error::InvalidArgument { op: "reshape", message: "at most one axis can be inferred".into() }),
    }
}
