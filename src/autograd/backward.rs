use super::Node;
use super::no_grad::NoGradGuard;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Nodes reachable from `root`, parents before children (iterative DFS, no recursion).
fn topo_order(root: &Arc<Node>) -> Vec<Arc<Node>> {
    let mut order = Vec::new();
    let mut visited: HashSet<u64> = HashSet::new();
    let mut stack: Vec<(Arc<Node>, bool)> = vec![(root.clone(), false)];
    while let Some((node, expanded)) = stack.pop() {
        if expanded {
            order.push(node);
            continue;
        }
        if !visited.insert(node.id) {
            continue;
        }
        stack.push((node.clone(), true));
        for p in node.parents.iter().flatten() {
            if !visited.contains(&p.id) {
                stack.push((p.clone(), false));
            }
        }
    }
    order
}

impl Tensor {
    /// Backpropagate from this tensor with a seed gradient of ones (the usual call on a
    /// scalar loss). Leaf gradients accumulate until [`Tensor::zero_grad`].
    pub fn backward(&self) -> Result<()> {
        let seed = Tensor::ones(self.shape()).to_device(self.device())?;
        self.backward_with(&seed)
    }

    /// Backpropagate with an explicit seed gradient of this tensor's shape.
    pub fn backward_with(&self, seed: &Tensor) -> Result<()> {
        let root = self.node.as_ref().ok_or_else(|| Error::NoGraph { shape: self.shape_obj().clone() })?;
        if seed.shape() != self.shape() {
            return Err(Error::ShapeMismatch {
                op: "backward",
                lhs: self.shape_obj().clone(),
                rhs: seed.shape_obj().clone(),
            });
        }
        let _guard = NoGradGuard::new();
        let order = topo_order(root);
        let mut grads: HashMap<u64, Tensor> = HashMap::new();
        grads.insert(root.id, seed.detach());
        for node in order.iter().rev() {
            // Each node's gradient is complete once all its children ran; take it out
            // so that it is freed as soon as it has been propagated.
            let Some(g) = grads.remove(&node.id) else { continue };
            let Some(op) = &node.op else {
                let mut slot = node.grad.lock().unwrap_or_else(|e| e.into_inner());
                *slot = Some(match slot.take() {
                    Some(prev) => prev.add(&g)?,
                    None => g.contiguous(),
                });
                continue;
            };
            let needs: Vec<bool> = node.parents.iter().map(Option::is_some).collect();
            let input_grads = {
                let _p = crate::profile::bwd(op.name());
                op.backward(&g, &needs)?
            };
            drop(g);
            for (i, (parent, ig)) in node.parents.iter().zip(input_grads).enumerate() {
                let (Some(parent), Some(ig)) = (parent, ig) else { continue };
                if ig.shape() != parent.shape.dims() {
                    return Err(Error::GradShape {
                        op: op.name(),
                        input: i,
                        expected: parent.shape.clone(),
                        got: ig.shape_obj().clone(),
                    });
                }
                let acc = match grads.remove(&parent.id) {
                    Some(prev) => prev.add(&ig)?,
                    None => ig,
                };
                grads.insert(parent.id, acc);
            }
        }
        Ok(())
    }
}
