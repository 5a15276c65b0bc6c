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
    /// The moments on the GPU, for a parameter that lives there (then they are the
    /// state and `exp_avg`/`exp_avg_sq` are stale until read back).
    device: Option<[Tensor; 2]>,
}

impl Slot {
    /// The moments as host vectors (read back from the GPU when they live there).
    fn moments(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        match &self.device {
            Some([m, v]) => Ok((m.try_to_vec()?, v.try_to_vec()?)),
            None => Ok((self.exp_avg.clone(), self.exp_avg_sq.clone())),
        }
    }
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
///
/// Every value a step writes is checked: an update that makes one non-finite fails with
/// [`Error::Diverged`] naming the parameter (its `step` is that parameter's update
/// count). The parameters and moments updated before it keep their new values, so a
/// caller stops the run there, as after a failed guard.
#[derive(Clone, Debug)]
pub struct AdamW {
    cfg: AdamWConfig,
    groups: Groups,
    state: BTreeMap<String, Slot>,
    /// The last step updated every parameter on the CPU and checked each value it
    /// wrote ([`Optimizer::wrote_finite_values`]).
    wrote_finite: bool,
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
        Ok(AdamW { cfg, groups: Groups::new("AdamW::new", groups)?, state: BTreeMap::new(), wrote_finite: false })
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
        self.wrote_finite = false;
        let mut all_checked = true;
        for (name, p) in params.iter_mut() {
            let Some(g) = grad_tensor_of("AdamW::step (param vs grad)", p)? else { continue };
            let n = g.numel();
            let (wd, scale) = self.groups.settings(name, weight_decay);
            let slot = self.state.entry(name.clone()).or_insert_with(|| Slot {
                exp_avg: vec![0.0; n],
                exp_avg_sq: vec![0.0; n],
                step: 0,
                device: None,
            });
            if slot.exp_avg.len() != n {
                return Err(Error::InvalidArgument {
                    op: "AdamW::step",
                    message: format!("state of {name:?} has {} values, parameter {n}", slot.exp_avg.len()),
                });
            }
            slot.step += 1;
            let eta = lr * scale;
            let bc1 = 1.0 - (b1 as f64).powi(slot.step as i32);
            let bc2 = 1.0 - (b2 as f64).powi(slot.step as i32);
            let step_size = (eta as f64 / bc1) as f32;
            let bc2_sqrt = bc2.sqrt() as f32;
            let decay = 1.0 - eta * wd;
            if p.device() != crate::Device::Cpu {
                gpu_step(p, &g, slot, [decay, b1, b2, step_size, bc2_sqrt, eps])?;
                all_checked = false;
                continue;
            }
            if slot.device.is_some() {
                // The parameter came back from the GPU: so do its moments.
                (slot.exp_avg, slot.exp_avg_sq) = slot.moments()?;
                slot.device = None;
            }
            let g = g.contiguous_data();
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
            // Each chunk's new values are checked while they are still in cache, which
            // costs next to nothing here and spares the guard a pass over memory.
            let mut finite = true;
            p.update_data(|d| {
                use rayon::prelude::*;
                const CH: usize = crate::cpu::par::ELEMWISE_CHUNK;
                let update_checked = |d: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32]| {
                    update(d, m, v, g);
                    crate::cpu::simd::all_finite(d)
                };
                finite = if d.len() >= crate::cpu::par::ELEMWISE_MIN && crate::cpu::par::threads() > 1 {
                    d.par_chunks_mut(CH)
                        .zip(m.par_chunks_mut(CH))
                        .zip(v.par_chunks_mut(CH))
                        .zip(g.par_chunks(CH))
                        .map(|(((d, m), v), g)| update_checked(d, m, v, g))
                        .reduce(|| true, |a, b| a && b)
                } else {
                    // The same chunks serially: each is checked while it is in cache.
                    let chunks = d.chunks_mut(CH).zip(m.chunks_mut(CH)).zip(v.chunks_mut(CH)).zip(g.chunks(CH));
                    chunks.fold(true, |ok, (((d, m), v), g)| update_checked(d, m, v, g) && ok)
                };
            });
            if !finite {
                return Err(Error::Diverged {
                    step: slot.step,
                    what: "the AdamW update made a value not finite".to_string(),
                    param: Some(format!("{name} (value)")),
                });
            }
        }
        self.wrote_finite = all_checked;
        Ok(())
    }

    fn wrote_finite_values(&self) -> bool {
        self.wrote_finite
    }

    fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(3 * self.state.len());
        for (name, s) in &self.state {
            let n = s.exp_avg.len();
            // GPU moments are read back here, explicitly (checkpoints); a failed
            // readback panics like `Tensor::to_vec`.
            let (m, v) = s.moments().unwrap_or_else(|e| panic!("AdamW state of {name}: {e}"));
            out.push((format!("{name}.exp_avg"), Tensor::from_vec(m, [n]).expect("n values")));
            out.push((format!("{name}.exp_avg_sq"), Tensor::from_vec(v, [n]).expect("n values")));
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
            new.insert(param, Slot { exp_avg: m.to_vec(), exp_avg_sq: v.to_vec(), step: t as u64, device: None });
        }
        self.state = new;
        self.wrote_finite = false;
        Ok(())
    }
}

/// The AdamW update of a parameter on the GPU, in place on its buffer and the slot's
/// GPU moments (uploaded from the host moments on the first GPU step: explicit, once).
#[cfg(feature = "gpu")]
fn gpu_step(p: &mut Tensor, g: &Tensor, slot: &mut Slot, k: [f32; 6]) -> Result<()> {
    use crate::Device;
    let [decay, beta1, beta2, step_size, bc2_sqrt, eps] = k;
    if slot.device.is_none() {
        let n = slot.exp_avg.len();
        let up = |v: &[f32]| Tensor::from_slice(v, [n])?.to_device(Device::Gpu);
        slot.device = Some([up(&slot.exp_avg)?, up(&slot.exp_avg_sq)?]);
    }
    let [m, v] = slot.device.as_mut().expect("set above");
    let s = crate::gpu::optim::AdamWStep { decay, beta1, beta2, step_size, bc2_sqrt, eps };
    crate::gpu::optim::adamw(p, g, m, v, s)
}

#[cfg(not(feature = "gpu"))]
fn gpu_step(p: &mut Tensor, _g: &Tensor, _slot: &mut Slot, _k: [f32; 6]) -> Result<()> {
    Err(Error::Unsupported { op: "AdamW::step", device: p.device() })
}
