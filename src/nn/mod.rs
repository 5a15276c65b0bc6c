//! Neural-network modules built from tensor ops: [`Linear`], [`LayerNorm`],
//! [`RmsNorm`], [`Embedding`], [`Mlp`] and [`MultiHeadSelfAttention`].
//!
//! A module owns its parameters as leaf tensors (`requires_grad_()`) and exposes them
//! through [`Module::params`] / [`Module::params_mut`] with hierarchical dotted names
//! (`"layers.0.weight"`), always in the same order. Optimisers and checkpoints address
//! parameters by these names. Forward methods are inherent (`forward(&self, x)`), since
//! their inputs differ from module to module.

mod attention;
mod embedding;
mod linear;
mod mlp;
mod norm;

pub use attention::MultiHeadSelfAttention;
pub use embedding::Embedding;
pub use linear::{Linear, LinearWeight};
pub use mlp::{Activation, Mlp};
pub use norm::{LayerNorm, RmsNorm};

use crate::tensor::Tensor;

/// A collection of named parameters.
pub trait Module {
    /// Every parameter with its dotted name, in a fixed order.
    fn params(&self) -> Vec<(String, &Tensor)>;
    /// The same parameters in the same order, mutable (for optimisers and loading).
    fn params_mut(&mut self) -> Vec<(String, &mut Tensor)>;
    /// Switch between training (dropout active) and evaluation behaviour. Modules
    /// without such behaviour ignore it.
    fn train(&mut self, _training: bool) {}
    /// Forget the accumulated gradients of every parameter.
    fn zero_grad(&self) {
        for (_, p) in self.params() {
            p.zero_grad();
        }
    }
}

/// Move every parameter of `m` to `device` (explicitly, once, before training): each
/// becomes a leaf on `device` that requires grad, with the same values. Gradients and
/// optimiser state are not moved (call it before the first step).
pub fn to_device(m: &mut dyn Module, device: crate::Device) -> crate::Result<()> {
    for (_, p) in m.params_mut() {
        if p.device() != device {
            *p = p.to_device(device)?.detach().requires_grad_();
        }
    }
    Ok(())
}

/// Total number of scalar parameters of a module.
pub fn num_params(m: &dyn Module) -> usize {
    m.params().iter().map(|(_, t)| t.numel()).sum()
}

/// `"{prefix}.{name}"` for each entry (helper for composite modules).
pub fn prefixed<T>(prefix: impl Into<String>, items: Vec<(String, T)>) -> impl Iterator<Item = (String, T)> {
    let prefix = prefix.into();
    items.into_iter().map(move |(n, t)| (format!("{prefix}.{n}"), t))
}
