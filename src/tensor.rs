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

    /// Internal constructor from any storage (GPU kernels produce `Storage::Gpu`).
    pub(crate) fn from_storage(storage: Storage, shape: Shape) -> Tensor {
        debug_assert_eq!(storage.len(), shape.numel());
        Tensor { storage: Arc::new(storage), layout: Layout::contiguous(shape), node: None }
    }

    /// [`Tensor::from_op`] for an output in any storage.
    pub fn from_storage_op<B: Backward + 'static>(
        storage: Storage,
        shape: Shape,
        inputs: &[&Tensor],
        make_backward: impl FnOnce() -> B,
    ) -> Tensor {
        let mut t = Tensor::from_storage(storage, shape);
        t.node = Tensor::record(&t.layout.shape, inputs, make_backward);
        t
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
    /// The device shared by all `tensors` (an op's operands), or
    /// [`Error::DeviceMismatch`] naming `op` and the first two devices that differ.
    pub(crate) fn common_device(op: &'static str, tensors: &[&Tensor]) -> Result<Device> {
        let first = tensors.first().map_or(Device::Cpu, |t| t.device());
        match tensors.iter().find(|t| t.device() != first) {
            Some(t) => Err(Error::DeviceMismatch { op, lhs: first, rhs: t.device() }),
            None => Ok(first),
        }
    }
    /// For ops without a GPU kernel: `Ok` when every operand is on the CPU,
    /// [`Error::Unsupported`] (or [`Error::DeviceMismatch`]) otherwise. Never copies.
    pub(crate) fn cpu_only(op: &'static str, tensors: &[&Tensor]) -> Result<()> {
        match Tensor::common_device(op, tensors)? {
            Device::Cpu => Ok(()),
            device => Err(Error::Unsupported { op, device }),
        }
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
                self.layout.gather_into(s, &mut out);
                Cow::Owned(out)
            }
        }
    }
    /// The elements in row-major order, copied (read back from the GPU for a GPU
    /// tensor, an explicit host copy; panics if the readback fails, see
    /// [`Tensor::try_to_vec`]).
    pub fn to_vec(&self) -> Vec<f32> {
        self.try_to_vec().unwrap_or_else(|e| panic!("{e}"))
    }
    /// [`Tensor::to_vec`] with GPU readback errors returned.
    pub fn try_to_vec(&self) -> Result<Vec<f32>> {
        #[cfg(feature = "gpu")]
        if self.device() == Device::Gpu {
            return crate::gpu::to_host(self);
        }
        Ok(self.contiguous_data().into_owned())
    }
    /// The single value of a one-element tensor.
    pub fn item(&self) -> Result<f32> {
        if self.numel() != 1 {
            return Err(Error::InvalidArgument {
                op: "item",
                message: format!("needs exactly one element but the shape is {}", self.shape_obj()),
            });
        }
        Ok(self.try_to_vec()?[0])
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
        if self.device() != Device::Cpu {
            // Stay on this tensor's device (the caller moves `src` if it lives elsewhere).
            if src.device() != self.device() {
                return Err(Error::DeviceMismatch { op: "assign", lhs: self.device(), rhs: src.device() });
            }
            let c = crate::autograd::no_grad(|| src.contiguous());
            self.storage = c.storage.clone();
            self.layout = c.layout.clone();
            return Ok(());
        }
        self.storage = Arc::new(Storage::Cpu(src.to_vec()));
        self.layout = Layout::contiguous(self.layout.shape.clone());
        Ok(())
    }
}

/// Backward of [`Tensor::to_device`]: the gradient moves back to the input's device.
struct ToDeviceBackward {
    from: Device,
}

impl Backward for ToDeviceBackward {
    fn name(&self) -> &'static str {
        "to_device"
    }
    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.to_device(self.from)?)])
    }
}

impl Tensor {
    /// The same values on `device`: the one explicit way to move data between the CPU and
    /// the GPU (ops never copy across devices themselves; mixed operands are an
    /// [`Error::DeviceMismatch`]). Differentiable: the gradient moves back. A no-op
    /// (a cheap clone) when the tensor is already there. Without the `gpu` feature, asking
    /// for [`Device::Gpu`] is an [`Error::GpuUnavailable`].
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        if self.device() == device {
            return Ok(self.clone());
        }
        let storage = match device {
            #[cfg(feature = "gpu")]
            Device::Gpu => crate::gpu::upload(&self.contiguous_data())?,
            #[cfg(not(feature = "gpu"))]
            Device::Gpu => {
                return Err(Error::GpuUnavailable {
                    message: "this build has no GPU support (rebuild with `--features gpu`)".into(),
                });
            }
            Device::Cpu => Storage::Cpu(self.try_to_vec()?),
        };
        let from = self.device();
        Ok(Tensor::from_storage_op(storage, self.shape_obj().clone(), &[self], || ToDeviceBackward { from }))
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let data = self.try_to_vec().unwrap_or_default();
        let shown: Vec<f32> = data.iter().take(8).copied().collect();
        write!(f, "Tensor{} {:?}{}", self.shape_obj(), shown, if data.len() > 8 { " .." } else { "" })?;
        if let Some(n) = self.op_name() {
            write!(f, " (grad_fn: {n})")?;
        }
        Ok(())
    }
}
