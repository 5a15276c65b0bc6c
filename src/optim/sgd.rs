//! Stochastic gradient descent with momentum, as `torch.optim.SGD`.

use super::{Groups, Optimizer, ParamGroup, find, grad_of, state_params};
use crate::error::{Error, Result};
use crate::nn::Module;
use crate::tensor::Tensor;
use std::collections::BTreeMap;

/// Hyper-parameters of [`Sgd`] (PyTorch's defaults: all off).
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct SgdConfig {
    pub momentum: f32,
    pub dampening: f32,
    pub nesterov: bool,
    /// L2 penalty of parameters in no group (added to the gradient, not decoupled).
    pub weight_decay: f32,
}

/// SGD. Per parameter with gradient `g`, learning rate `η = lr · lr_scale`:
///
/// ```text
/// g ← g + wd·p                                   (coupled L2, as PyTorch's SGD)
/// b ← g on the first step, else μ·b + (1 − dampening)·g      (when μ > 0)
/// g ← g + μ·b if nesterov, else b                            (when μ > 0)
/// p ← p − η·g
/// ```
///
/// State slot per parameter: `momentum_buffer` (only when μ > 0).
#[derive(Clone, Debug)]
pub struct Sgd {
    cfg: SgdConfig,
    groups: Groups,
    state: BTreeMap<String, Vec<f32>>,
}

impl Sgd {
    pub fn new(cfg: SgdConfig) -> Result<Sgd> {
        Self::with_groups(cfg, Vec::new())
    }
    pub fn with_groups(cfg: SgdConfig, groups: Vec<ParamGroup>) -> Result<Sgd> {
        let ok = cfg.momentum.is_finite()
            && cfg.momentum >= 0.0
            && cfg.dampening.is_finite()
            && cfg.weight_decay.is_finite()
            && cfg.weight_decay >= 0.0
            && (!cfg.nesterov || (cfg.momentum > 0.0 && cfg.dampening == 0.0));
        if !ok {
            return Err(Error::InvalidArgument {
                op: "Sgd::new",
                message: format!(
                    "need momentum >= 0, weight_decay >= 0, and nesterov only with momentum > 0 and no dampening; got {cfg:?}"
                ),
            });
        }
        Ok(Sgd { cfg, groups: Groups::new("Sgd::new", groups)?, state: BTreeMap::new() })
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, model: &mut dyn Module, lr: f32) -> Result<()> {
        if !lr.is_finite() || lr < 0.0 {
            return Err(Error::InvalidArgument { op: "Sgd::step", message: format!("lr must be >= 0, got {lr}") });
        }
        let mut params = model.params_mut();
        let names: Vec<String> = params.iter().map(|(n, _)| n.clone()).collect();
        self.groups.check_names("Sgd::step", &names)?;
        let SgdConfig { momentum: mu, dampening, nesterov, weight_decay } = self.cfg;
        let _ng = crate::autograd::NoGradGuard::new();
        for (name, p) in params.iter_mut() {
            let Some(mut g) = grad_of("Sgd::step (param vs grad)", p)? else { continue };
            let (wd, scale) = self.groups.settings(name, weight_decay);
            let eta = lr * scale;
            if wd != 0.0 {
                let pd = p.contiguous_data();
                for (gi, &pi) in g.iter_mut().zip(pd.iter()) {
                    *gi += wd * pi;
                }
            }
            if mu != 0.0 {
                match self.state.get_mut(name.as_str()) {
                    None => {
                        self.state.insert(name.clone(), g.clone());
                    }
                    Some(b) => {
                        if b.len() != g.len() {
                            return Err(Error::InvalidArgument {
                                op: "Sgd::step",
                                message: format!("state of {name:?} has {} values, parameter {}", b.len(), g.len()),
                            });
                        }
                        for (bi, &gi) in b.iter_mut().zip(&g) {
                            *bi = mu * *bi + (1.0 - dampening) * gi;
                        }
                    }
                }
                let b = &self.state[name.as_str()];
                if nesterov {
                    for (gi, &bi) in g.iter_mut().zip(b) {
                        *gi += mu * bi;
                    }
                } else {
                    g.copy_from_slice(b);
                }
            }
            p.update_data(|d| {
                for (di, &gi) in d.iter_mut().zip(&g) {
                    *di -= eta * gi;
                }
            });
        }
        Ok(())
    }

    fn state_tensors(&self) -> Vec<(String, Tensor)> {
        self.state
            .iter()
            .map(|(n, b)| (format!("{n}.momentum_buffer"), Tensor::from_vec(b.clone(), [b.len()]).expect("len values")))
            .collect()
    }

    fn load_state_tensors(&mut self, state: &[(String, Tensor)]) -> Result<()> {
        let mut new = BTreeMap::new();
        for param in state_params(state, &["momentum_buffer"], "Sgd::load_state_tensors")? {
            let b = find(state, &format!("{param}.momentum_buffer")).expect("listed");
            new.insert(param, b.to_vec());
        }
        self.state = new;
        Ok(())
    }
}
