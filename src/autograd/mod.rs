//! Reverse-mode autodiff. The graph is owned by the output tensor (each node holds its
//! parents by `Arc`) and is freed when the last handle drops. Topological sort and drop
//! are iterative, so chains of hundreds of thousands of nodes neither overflow the stack
//! in backward nor in drop. This module never does arithmetic itself: backward rules
//! live beside their forward op in `ops/*` and compute through tensor ops.

mod backward;
pub mod check;
mod no_grad;
mod node;

pub use no_grad::{NoGradGuard, enable_grad, is_grad_enabled, no_grad};
pub use node::Backward;
pub(crate) use node::Node;
