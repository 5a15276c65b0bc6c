use crate::error::Result;
use crate::shape::Shape;
use crate::tensor::Tensor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The backward rule of one recorded op. Implementations live beside the forward op and
/// hold only what the rule needs (shapes, or detached input/output tensors).
pub trait Backward: Send + Sync {
    /// The op's name, for errors and graph printing.
    fn name(&self) -> &'static str;
    /// Given the gradient of the op's output, return one entry per input (in the order
    /// the inputs were recorded): the gradient, or `None` where `needs[i]` is false.
    /// Runs with graph recording off.
    fn backward(&self, grad: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>>;
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A graph node: either a leaf that requires grad (holding its accumulated gradient)
/// or the output of an op (holding its backward rule and its parents).
pub(crate) struct Node {
    pub(crate) id: u64,
    pub(crate) shape: Shape,
    pub(crate) op: Option<Box<dyn Backward>>,
    /// One entry per op input; `None` where that input does not require grad.
    pub(crate) parents: Vec<Option<Arc<Node>>>,
    /// Accumulated gradient (leaves only).
    pub(crate) grad: Mutex<Option<Tensor>>,
}

impl Node {
    pub(crate) fn leaf(shape: Shape) -> Arc<Node> {
        Arc::new(Node {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            shape,
            op: None,
            parents: Vec::new(),
            grad: Mutex::new(None),
        })
    }
    pub(crate) fn op(shape: Shape, op: Box<dyn Backward>, parents: Vec<Option<Arc<Node>>>) -> Arc<Node> {
        Arc::new(Node {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            shape,
            op: Some(op),
            parents,
            grad: Mutex::new(None),
        })
    }
    pub(crate) fn name(&self) -> &'static str {
        self.op.as_ref().map_or("leaf", |o| o.name())
    }
}

impl Drop for Node {
    /// Iterative drop: a parent whose last owner is this node is unlinked here instead
    /// of recursing, so dropping a 1M-node chain uses constant stack.
    fn drop(&mut self) {
        let mut stack: Vec<Arc<Node>> = self.parents.drain(..).flatten().collect();
        while let Some(n) = stack.pop() {
            if let Ok(mut inner) = Arc::try_unwrap(n) {
                stack.extend(inner.parents.drain(..).flatten());
            }
        }
    }
}
