//! The user-facing tensor: shared storage, a strided layout and, when it takes part in
//! a graph, a node. Op methods live in `ops/*` (one file per family); each validates,
//! calls a kernel on slices and layouts, and records a backward rule via [`Tensor::from_op`].

use crate::autograd::{Backward, Node, is_grad_enabled};
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::shape::Shape;
use crate::storage::{Device, Storage};
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// An n-dimensional f32 tensor. Cloning is cheap (it shares storage and graph node).
#[derive(Clone)]
pub struct Tensor {
    pub(crate) storage: Arc<Storage>,
    pub(crate) layout: Layout,
    pub(crate) node: Option<Arc<Node>>,
}

impl Tensor {
    // ----- construction -------------------------------------------------------------

    /// A contiguous tensor owning `data`; fails when the length does not match the shape.
    pub fn from_vec(data: Vec<f32>, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if data.len() != shape.numel() {
            return Err(Error::DataLength { op: "from_vec", len: data.len(), shape });
        }
        Ok(Tensor::from_parts(data, shape))
    }

    pub fn from_slice(data: &[f32], shape: impl Into<Shape>) -> Result<Tensor> {
        Tensor::from_vec(data.to_vec(), shape)
    }

    /// Internal constructor for kernels that already produced `shape.numel()` values.
    pub(crate) fn from_parts(data: Vec<f32>, shape: Shape) -> Tensor {
        debug_assert_eq!(data.len(), shape.numel());
        Tensor { storage: Arc::new(Storage::Cpu(data)), layout: Layout::contiguous(shape), node: None }
    }

    pub fn full(shape: impl Into<Shape>, value: f32) -> Tensor {
        let shape = shape.into();
        Tensor::from_parts(vec![value; shape.numel()], shape)
    }
    pub fn zeros(shape: impl Into<Shape>) -> Tensor {
        Tensor::full(shape, 0.0)
    }
    pub fn ones(shape: impl Into<Shape>) -> Tensor {
        Tensor::full(shape, 1.0)
    }
    /// A rank-0 tensor.
    pub fn scalar(value: f32) -> Tensor {
        Tensor::from_parts(vec![value], Shape::new([]))
    }
    /// `0, 1, .., n - 1` as f32.
    pub fn arange(n: usize) -> Tensor {
        Tensor::from_parts((0..n).map(|i| i as f32).collect(), Shape::new([n]))
    }

    /// Record the output of an op. `make_backward` runs only when grad is enabled and at
    /// least one input requires grad, so forward-only code saves nothing.
    pub fn from_op<B: Backward + 'static>(
        data: Vec<f32>,
        shape: Shape,
        inputs: &[&Tensor],
        make_backward: impl FnOnce() -> B,
    ) -> Tensor {
        let mut t = Tensor::from_parts(data, shape);
        t.node = Tensor::record(&t.layout.shape, inputs, make_backward);
        t
    }

    /// A view of this tensor's storage with another layout, recorded like an op.
    pub(crate) fn view_op<B: Backward + 'static>(&self, layout: Layout, make_backward: impl FnOnce() -> B) -> Tensor {
        let node = Tensor::record(&layout.shape, &[self], make_backward);
        Tensor { storage: self.storage.clone(), layout, node }
    }

    pub(crate) fn record<B: Backward + 'static>(
        shape: &Shape,
        inputs: &[&Tensor],
        make_backward: impl FnOnce() -> B,
    ) -> Option<Arc<Node>> {
        if !is_grad_enabled() || !inputs.iter().any(|t| t.node.is_some()) {
            return None;
        }
        let parents = inputs.iter().map(|t| t.node.clone()).collect();
        Some(Node::op(shape.clone(), Box::new(make_backward()), parents))
    }

    // ----- inspection ---------------------------------------------------------------

    pub fn shape(&self) -> &[usize] {
        self.layout.dims()
    }
    pub fn shape_obj(&self) -> &Shape {
        &self.layout.shape
    }
    pub fn layout(&self) -> &Layout {
        &self.layout
    }
    pub fn rank(&self) -> usize {
        self.layout.rank()
    }
    pub fn numel(&self) -> usize {
        self.layout.numel()
    }
    /// Size of `axis` (negative counts from the end).
    pub fn dim(&self, axis: isize) -> Result<usize> {
        Ok(self.shape()[self.layout.shape.axis("dim", axis)?])
    }
    pub fn device(&self) -> Device {
        self.storage.device()
    }
    pub fn is_contiguous(&self) -> bool {
        self.layout.is_contiguous()
    }

    /// The elements in row-major order: borrowed when contiguous, gathered otherwise.
    pub fn contiguous_data(&self) -> Cow<'_, [f32]> {
        let s = self.storage.cpu();
        match self.layout.contiguous_range() {
            Some(r) => Cow::Borrowed(&s[r]),
            None => {
                let mut out = crate::storage::buffer(self.numel());
                self.layout.for_each_offset(|i, o| out[i] = s[o]);
                Cow::Owned(out)
            }
        }
    }
    /// The elements in row-major order, copied.
    pub fn to_vec(&self) -> Vec<f32> {
        self.contiguous_data().into_owned()
    }
    /// The single value of a one-element tensor.
    pub fn item(&self) -> Result<f32> {
        if self.numel() != 1 {
            return Err(Error::InvalidArgument {
                op: "item",
                message: format!("needs exactly one element but the shape is {}", self.shape_obj()),
            });
        }
        Ok(self.contiguous_data()[0])
    }

    // ----- autograd -----------------------------------------------------------------

    /// True when gradients flow to this tensor (it is a leaf that requires grad, or the
    /// output of an op on one).
    pub fn requires_grad(&self) -> bool {
        self.node.is_some()
    }
    /// Make this tensor a leaf that collects gradients (a parameter).
    pub fn requires_grad_(mut self) -> Tensor {
        if self.node.is_none() {
            self.node = Some(Node::leaf(self.layout.shape.clone()));
        }
        self
    }
    /// The same values, cut off from the graph.
    pub fn detach(&self) -> Tensor {
        Tensor { storage: self.storage.clone(), layout: self.layout.clone(), node: None }
    }
    /// The accumulated gradient of a leaf (None before any backward, or for non-leaves).
    pub fn grad(&self) -> Option<Tensor> {
        let n = self.node.as_ref()?;
        n.grad.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    /// Forget the accumulated gradient of a leaf.
    pub fn zero_grad(&self) {
        if let Some(n) = &self.node {
            *n.grad.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }
    /// Replace the accumulated gradient of a leaf (e.g. after clipping).
    pub fn set_grad(&self, g: Option<Tensor>) -> Result<()> {
        let Some(n) = &self.node else { return Err(Error::NoGraph { shape: self.shape_obj().clone() }) };
        if let Some(g) = &g
            && g.shape() != self.shape()
        {
            return Err(Error::ShapeMismatch {
                op: "set_grad",
                lhs: self.shape_obj().clone(),
                rhs: g.shape_obj().clone(),
            });
        }
        *n.grad.lock().unwrap_or_else(|e| e.into_inner()) = g.map(|g| g.detach());
        Ok(())
    }
    /// Name of the op that produced this tensor ("leaf" for leaves, None without graph).
    pub fn op_name(&self) -> Option<&'static str> {
        self.node.as_ref().map(|n| n.name())
    }

    /// Mutate the elements in place (optimisers). Copies first when the storage is shared
    /// (a graph still holding the old values keeps them) or the layout is not a dense
    /// whole-buffer view. The graph node (and so a leaf's gradient) is kept.
    pub fn update_data(&mut self, f: impl FnOnce(&mut [f32])) {
        let whole = self.layout.is_contiguous() && self.layout.offset == 0 && self.storage.len() == self.numel();
        if !whole {
            let data = self.to_vec();
            self.storage = Arc::new(Storage::Cpu(data));
            self.layout = Layout::contiguous(self.layout.shape.clone());
        }
        f(Arc::make_mut(&mut self.storage).cpu_mut());
    }

    /// Overwrite the elements with those of `src` (same shape), keeping the graph node.
    pub fn assign(&mut self, src: &Tensor) -> Result<()> {
        if src.shape() != self.shape() {
            return Err(Error::ShapeMismatch {
                op: "assign",
                lhs: self.shape_obj().clone(),
                rhs: src.shape_obj().clone(),
            });
        }
        self.storage = Arc::new(Storage::Cpu(src.to_vec()));
        self.layout = Layout::contiguous(self.layout.shape.clone());
        Ok(())
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let data = self.contiguous_data();
        let shown: Vec<f32> = data.iter().take(8).copied().collect();
        write!(f, "Tensor{} {:?}{}", self.shape_obj(), shown, if data.len() > 8 { " .." } else { "" })?;
        if let Some(n) = self.op_name() {
            write!(f, " (grad_fn: {n})")?;
        }
        Ok(())
    }
}
