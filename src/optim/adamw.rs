//! Adam with decoupled weight decay (Loshchilov & Hutter), as `torch.optim.AdamW`.

use super::{Groups, Optimizer, ParamGroup, find, grad_tensor_of, state_params};
use crate::error::{Error, Result};
use crate::nn::Module;
use crate::tensor::Tensor;
use std::collections::BTreeMap;

/// Hyper-parameters of [`AdamW`] (PyTorch's defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Decay of parameters in no group.
    pub weight_decay: f32,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    }
}

#[derive(Clone, Debug)]
struct Slot {
    exp_avg: Vec<f32>,
    exp_avg_sq: Vec<f32>,
    step: u64,
}

/// AdamW. Per parameter with gradient `g` and learning rate `η = lr · lr_scale`, at its
/// own step count `t` (1-based):
///
/// ```text
/// p ← p · (1 − η·wd)                         decoupled decay
/// m ← β1·m + (1 − β1)·g
/// v ← β2·v + (1 − β2)·g²
/// p ← p − η/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + eps)
/// ```
///
/// State slots per parameter: `exp_avg`, `exp_avg_sq`, `step` (a scalar, exact up to 2²⁴).
#[derive(Clone, Debug)]
pub struct AdamW {
    cfg: AdamWConfig,
    groups: Groups,
    state: BTreeMap<String, Slot>,
}

impl AdamW {
    pub fn new(cfg: AdamWConfig) -> Result<AdamW> {
        Self::with_groups(cfg, Vec::new())
    }
    /// With parameter groups (first match wins; others use `cfg.weight_decay`).
    pub fn with_groups(cfg: AdamWConfig, groups: Vec<ParamGroup>) -> Result<AdamW> {
        let ok = (0.0..1.0).contains(&cfg.beta1)
            && (0.0..1.0).contains(&cfg.beta2)
            && cfg.eps.is_finite()
            && cfg.eps >= 0.0
            && cfg.weight_decay.is_finite()
            && cfg.weight_decay >= 0.0;
        if !ok {
            return Err(Error::InvalidArgument {
                op: "AdamW::new",
                message: format!("need betas in [0, 1), eps >= 0 and weight_decay >= 0, got {cfg:?}"),
            });
        }
        Ok(AdamW { cfg, groups: Groups::new("AdamW::new", groups)?, state: BTreeMap::new() })
    }
    pub fn config(&self) -> AdamWConfig {
        self.cfg
    }
}

impl Optimizer for AdamW {
    fn step(&mut self, model: &mut dyn Module, lr: f32) -> Result<()> {
        if !lr.is_finite() || lr < 0.0 {
            return Err(Error::InvalidArgument { op: "AdamW::step", message: format!("lr must be >= 0, got {lr}") });
        }
        let mut params = model.params_mut();
        let names: Vec<String> = params.iter().map(|(n, _)| n.clone()).collect();
        self.groups.check_names("AdamW::step", &names)?;
        let AdamWConfig { beta1: b1, beta2: b2, eps, weight_decay } = self.cfg;
        let _ng = crate::autograd::NoGradGuard::new();
        for (name, p) in params.iter_mut() {
            let Some(g) = grad_tensor_of("AdamW::step (param vs grad)", p)? else { continue };
            let g = g.contiguous_data();
            let (wd, scale) = self.groups.settings(name, weight_decay);
            let slot = self.state.entry(name.clone()).or_insert_with(|| Slot {
                exp_avg: vec![0.0; g.len()],
                exp_avg_sq: vec![0.0; g.len()],
                step: 0,
            });
            if slot.exp_avg.len() != g.len() {
                return Err(Error::InvalidArgument {
                    op: "AdamW::step",
                    message: format!("state of {name:?} has {} values, parameter {}", slot.exp_avg.len(), g.len()),
                });
            }
            slot.step += 1;
            let eta = lr * scale;
            let bc1 = 1.0 - (b1 as f64).powi(slot.step as i32);
            let bc2 = 1.0 - (b2 as f64).powi(slot.step as i32);
            let step_size = (eta as f64 / bc1) as f32;
            let bc2_sqrt = bc2.sqrt() as f32;
            let decay = 1.0 - eta * wd;
            let (m, v) = (&mut slot.exp_avg, &mut slot.exp_avg_sq);
            let update = |d: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32]| {
                for (((d, m), v), &g) in d.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
                    *d *= decay;
                    *m = b1 * *m + (1.0 - b1) * g;
                    *v = b2 * *v + (1.0 - b2) * g * g;
                    *d -= step_size * *m / (v.sqrt() / bc2_sqrt + eps);
                }
            };
            // Elementwise, so any split gives the same bits; large tensors in parallel.
            p.update_data(|d| {
                use rayon::prelude::*;
                const CH: usize = crate::cpu::par::ELEMWISE_CHUNK;
                if d.len() >= crate::cpu::par::ELEMWISE_MIN && crate::cpu::par::threads() > 1 {
                    d.par_chunks_mut(CH)
                        .zip(m.par_chunks_mut(CH))
                        .zip(v.par_chunks_mut(CH))
                        .zip(g.par_chunks(CH))
                        .for_each(|(((d, m), v), g)| update(d, m, v, g));
                } else {
                    update(d, m, v, &g);
                }
            });
        }
        Ok(())
    }

    fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(3 * self.state.len());
        for (name, s) in &self.state {
            let n = s.exp_avg.len();
            out.push((format!("{name}.exp_avg"), Tensor::from_vec(s.exp_avg.clone(), [n]).expect("n values")));
            out.push((format!("{name}.exp_avg_sq"), Tensor::from_vec(s.exp_avg_sq.clone(), [n]).expect("n values")));
            out.push((format!("{name}.step"), Tensor::scalar(s.step as f32)));
        }
        out
    }

    fn load_state_tensors(&mut self, state: &[(String, Tensor)]) -> Result<()> {
        const OP: &str = "AdamW::load_state_tensors";
        let mut new = BTreeMap::new();
        for param in state_params(state, &["exp_avg", "exp_avg_sq", "step"], OP)? {
            let get = |slot: &str| {
                find(state, &format!("{param}.{slot}"))
                    .ok_or_else(|| Error::InvalidArgument { op: OP, message: format!("missing {param}.{slot}") })
            };
            let (m, v, t) = (get("exp_avg")?, get("exp_avg_sq")?, get("step")?.item()?);
            if m.numel() != v.numel() {
                return Err(Error::ShapeMismatch { op: OP, lhs: m.shape_obj().clone(), rhs: v.shape_obj().clone() });
            }
            if !(t >= 0.0 && t.fract() == 0.0) {
                return Err(Error::InvalidArgument { op: OP, message: format!("{param}.step = {t} is not a count") });
            }
            new.insert(param, Slot { exp_avg: m.to_vec(), exp_avg_sq: v.to_vec(), step: t as u64 });
        }
        self.state = new;
        Ok(())
    }
}
