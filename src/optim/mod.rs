//! Optimisers ([`Sgd`], [`AdamW`]), learning-rate schedules ([`LrSchedule`]) and
//! global gradient-norm clipping ([`clip_grad_norm`]).
//!
//! Optimisers read each parameter's accumulated `grad()` and update its values in
//! place through [`Tensor::update_data`] under `no_grad`; parameters without a gradient
//! are skipped entirely (no weight decay either, as in PyTorch). State is kept by
//! parameter name, so it can be saved and restored with [`Optimizer::state_tensors`] /
//! [`Optimizer::load_state_tensors`] and survives rebuilding the model.

mod adamw;
mod schedule;
mod sgd;

pub use adamw::{AdamW, AdamWConfig};
pub use schedule::LrSchedule;
pub use sgd::{Sgd, SgdConfig};

use crate::autograd::no_grad;
use crate::error::{Error, Result};
use crate::nn::Module;
use crate::tensor::Tensor;
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

/// A first-order optimiser over a [`Module`]'s named parameters.
pub trait Optimizer {
    /// One update of every parameter that has a gradient, with base learning rate `lr`
    /// (each parameter group scales it by its `lr_scale`).
    fn step(&mut self, model: &mut dyn Module, lr: f32) -> Result<()>;
    /// Clear the gradients of every parameter of `model`.
    fn zero_grad(&self, model: &dyn Module) {
        zero_grad(model)
    }
    /// The optimiser state as named tensors (`"{param}.{slot}"`), sorted by name.
    fn state_tensors(&self) -> Vec<(String, Tensor)>;
    /// Replace the state with one produced by [`Optimizer::state_tensors`].
    fn load_state_tensors(&mut self, state: &[(String, Tensor)]) -> Result<()>;
    /// Whether the last [`Optimizer::step`] succeeded and checked every value it wrote
    /// (an update that makes a value non-finite fails with [`Error::Diverged`]). A
    /// training loop may then skip re-reading the values in its divergence guard, as
    /// long as nothing else wrote them since ([`crate::train::guard::check_step_after`]).
    /// False before the first step, after a failed step, after loading a state, when a
    /// parameter lives on the GPU (its update is not checked), and for optimisers that
    /// do not check.
    fn wrote_finite_values(&self) -> bool {
        false
    }
}

/// Clear the gradients of every parameter of `model`.
pub fn zero_grad(model: &dyn Module) {
    model.zero_grad()
}

/// Which parameters a [`ParamGroup`] covers.
#[derive(Clone)]
pub enum ParamSelector {
    /// Exactly these parameter names (each must exist in the model: a typo is an error).
    Names(Vec<String>),
    /// Every parameter whose name satisfies the predicate.
    Predicate(Arc<dyn Fn(&str) -> bool + Send + Sync>),
}

impl fmt::Debug for ParamSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamSelector::Names(n) => f.debug_tuple("Names").field(n).finish(),
            ParamSelector::Predicate(_) => f.write_str("Predicate(..)"),
        }
    }
}

/// Hyper-parameters for a subset of the parameters. A parameter belongs to the first
/// group that selects it; parameters in no group use the optimiser's own weight decay
/// and an lr scale of 1.
#[derive(Clone, Debug)]
pub struct ParamGroup {
    pub select: ParamSelector,
    pub weight_decay: f32,
    /// Multiplies the learning rate passed to `step` (also in the decoupled decay).
    pub lr_scale: f32,
}

impl ParamGroup {
    pub fn names<S: Into<String>>(names: impl IntoIterator<Item = S>, weight_decay: f32, lr_scale: f32) -> Self {
        ParamGroup { select: ParamSelector::Names(names.into_iter().map(Into::into).collect()), weight_decay, lr_scale }
    }
    pub fn predicate(f: impl Fn(&str) -> bool + Send + Sync + 'static, weight_decay: f32, lr_scale: f32) -> Self {
        ParamGroup { select: ParamSelector::Predicate(Arc::new(f)), weight_decay, lr_scale }
    }
    fn selects(&self, name: &str) -> bool {
        match &self.select {
            ParamSelector::Names(n) => n.iter().any(|s| s == name),
            ParamSelector::Predicate(p) => p(name),
        }
    }
}

/// Resolves per-parameter `(weight_decay, lr_scale)`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Groups {
    groups: Vec<ParamGroup>,
}

impl Groups {
    pub(crate) fn new(op: &'static str, groups: Vec<ParamGroup>) -> Result<Groups> {
        for g in &groups {
            if !g.weight_decay.is_finite() || g.weight_decay < 0.0 || !g.lr_scale.is_finite() || g.lr_scale < 0.0 {
                return Err(Error::InvalidArgument {
                    op,
                    message: format!(
                        "group weight_decay {} and lr_scale {} must be finite and >= 0",
                        g.weight_decay, g.lr_scale
                    ),
                });
            }
        }
        Ok(Groups { groups })
    }
    /// Fails when a name-listed parameter is not in `names`.
    pub(crate) fn check_names(&self, op: &'static str, names: &[String]) -> Result<()> {
        let have: HashSet<&str> = names.iter().map(String::as_str).collect();
        for g in &self.groups {
            if let ParamSelector::Names(n) = &g.select
                && let Some(missing) = n.iter().find(|s| !have.contains(s.as_str()))
            {
                return Err(Error::InvalidArgument {
                    op,
                    message: format!("parameter group names {missing:?}, which the model does not have"),
                });
            }
        }
        Ok(())
    }
    pub(crate) fn settings(&self, name: &str, default_wd: f32) -> (f32, f32) {
        self.groups.iter().find(|g| g.selects(name)).map_or((default_wd, 1.0), |g| (g.weight_decay, g.lr_scale))
    }
}

/// The gradient of a parameter as a contiguous vector, checked against its size.
pub(crate) fn grad_of(op: &'static str, p: &Tensor) -> Result<Option<Vec<f32>>> {
    Ok(grad_tensor_of(op, p)?.map(|g| g.to_vec()))
}

/// The gradient of `p` as a tensor (no copy), checked against `p`'s shape.
pub(crate) fn grad_tensor_of(op: &'static str, p: &Tensor) -> Result<Option<Tensor>> {
    let Some(g) = p.grad() else { return Ok(None) };
    if g.shape() != p.shape() {
        return Err(Error::ShapeMismatch { op, lhs: p.shape_obj().clone(), rhs: g.shape_obj().clone() });
    }
    Ok(Some(g))
}

/// Look up `"{prefix}.{slot}"` in saved state.
pub(crate) fn find<'a>(state: &'a [(String, Tensor)], name: &str) -> Option<&'a Tensor> {
    state.iter().find(|(n, _)| n == name).map(|(_, t)| t)
}

/// Parameter names present in saved state (the part before the last `.`), in order.
pub(crate) fn state_params(state: &[(String, Tensor)], slots: &[&str], op: &'static str) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for (n, _) in state {
        let Some((param, slot)) = n.rsplit_once('.') else {
            return Err(Error::InvalidArgument { op, message: format!("state entry {n:?} is not \"param.slot\"") });
        };
        if !slots.contains(&slot) {
            return Err(Error::InvalidArgument { op, message: format!("unknown state slot {slot:?} in {n:?}") });
        }
        if !out.iter().any(|p| p == param) {
            out.push(param.to_string());
        }
    }
    Ok(out)
}

/// Scale all gradients of `model` so that their global L2 norm is at most `max_norm`;
/// returns the norm before clipping (accumulated in f64). Like PyTorch the scale is
/// `max_norm / (norm + 1e-6)`, applied only when it is below 1. A non-finite norm is
/// returned without touching the gradients.
pub fn clip_grad_norm(model: &dyn Module, max_norm: f32) -> Result<f32> {
    if !(max_norm.is_finite() && max_norm > 0.0) {
        return Err(Error::InvalidArgument {
            op: "clip_grad_norm",
            message: format!("max_norm must be finite and > 0, got {max_norm}"),
        });
    }
    let params = model.params();
    let grads: Vec<(&Tensor, Tensor)> = params.iter().filter_map(|(_, p)| p.grad().map(|g| (*p, g))).collect();
    let on_gpu = grads.iter().any(|(_, g)| g.device() != crate::Device::Cpu);
    let sq: f64 = if on_gpu {
        // Summed on the GPU in f32 (a tree per tensor), one scalar read back.
        let gs: Vec<&Tensor> = grads.iter().map(|(_, g)| g).collect();
        Tensor::common_device("clip_grad_norm", &gs)?;
        gpu_sum_of_squares(&gs)? as f64
    } else {
        grads.iter().map(|(_, g)| g.contiguous_data().iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>()).sum()
    };
    let total = sq.sqrt();
    let coef = max_norm as f64 / (total + 1e-6);
    if total.is_finite() && coef < 1.0 {
        no_grad(|| -> Result<()> {
            for (p, g) in &grads {
                p.set_grad(Some(g.mul_scalar(coef as f32)))?;
            }
            Ok(())
        })?;
    }
    Ok(total as f32)
}

#[cfg(feature = "gpu")]
fn gpu_sum_of_squares(gs: &[&Tensor]) -> Result<f32> {
    crate::gpu::optim::sum_of_squares("clip_grad_norm", gs)
}

#[cfg(not(feature = "gpu"))]
fn gpu_sum_of_squares(gs: &[&Tensor]) -> Result<f32> {
    Err(Error::Unsupported { op: "clip_grad_norm", device: gs[0].device() })
}
