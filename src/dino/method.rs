//! The random-teacher method (spec §2): a frozen teacher at random initialisation, a
//! student initialised by variance-preserving interpolation towards a fresh draw,
//! trained to match the teacher's softmax on the same image.
//!
//! ```text
//! θ_S(α) = ((1 − α)·θ_T + α·θ̃) / δ(α),   δ(α) = √(α² + (1 − α)²)      (computed in f64)
//! p = softmax((t − c)/τ_T),  log q = log_softmax(s/τ_S)
//! L = −(1/B) Σ_b Σ_k p_bk log q_bk          (cross-entropy; same gradient as the KL)
//! KL = (1/B) Σ_b Σ_k p_bk (log p_bk − log q_bk)     logged, in f64
//! ```
//!
//! The paper's run has τ_T = τ_S = 1 and no centering (`c = 0`). DINO's centering
//! (`c ← m·c + (1 − m)·mean_b t_b`, applied before the teacher softmax) and sharpening
//! (τ_T < τ_S) are available for experiments.

use crate::autograd::no_grad;
use crate::error::{Error, Result};
use crate::nn::Module;
use crate::optim::ParamGroup;
use crate::tensor::Tensor;
use rayon::prelude::*;

/// `δ(α) = √(α² + (1 − α)²)`: makes the interpolation variance-preserving for i.i.d.
/// parameters of equal variance.
pub fn delta(alpha: f64) -> f64 {
    (alpha * alpha + (1.0 - alpha) * (1.0 - alpha)).sqrt()
}

/// `((1 − α)·t + α·f) / δ(α)` elementwise, computed in f64 and rounded once to f32.
/// At α = 0 the result is `t`, at α = 1 it is `f`, bit for bit.
pub fn interpolate(teacher: &[f32], fresh: &[f32], alpha: f64) -> Vec<f32> {
    let d = delta(alpha);
    teacher.iter().zip(fresh).map(|(&t, &f)| (((1.0 - alpha) * t as f64 + alpha * f as f64) / d) as f32).collect()
}

/// Overwrite every parameter of `student` (a fresh, independent initialisation θ̃ of
/// the same architecture) with the interpolation between the teacher's value and its
/// own. Applies to every tensor (LayerNorm gains of 1 become 1/δ). Returns the number
/// of elements that differ from the teacher's.
pub fn init_student(teacher: &dyn Module, student: &mut dyn Module, alpha: f64) -> Result<usize> {
    if !(0.0..=1.0).contains(&alpha) {
        return Err(Error::InvalidArgument { op: "init_student", message: format!("alpha {alpha} outside [0, 1]") });
    }
    let tp = teacher.params();
    let mut sp = student.params_mut();
    if tp.len() != sp.len() {
        return Err(Error::InvalidArgument {
            op: "init_student",
            message: format!("teacher has {} parameters, student {}", tp.len(), sp.len()),
        });
    }
    let mut differ = 0;
    for ((tn, t), (sn, s)) in tp.iter().zip(sp.iter_mut()) {
        if tn != sn || t.shape() != s.shape() {
            return Err(Error::InvalidArgument {
                op: "init_student",
                message: format!("teacher {tn} {} vs student {sn} {}", t.shape_obj(), s.shape_obj()),
            });
        }
        let td = t.contiguous_data();
        let v = interpolate(&td, &s.contiguous_data(), alpha);
        differ += v.iter().zip(td.iter()).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        let shape = s.shape().to_vec();
        s.assign(&Tensor::from_vec(v, shape)?)?;
    }
    Ok(differ)
}

/// Temperatures and centering of the distillation loss.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossConfig {
    pub teacher_temp: f32,
    pub student_temp: f32,
    /// DINO centering momentum `m` (None: no centering, the paper's setting).
    pub center_momentum: Option<f32>,
}

impl Default for LossConfig {
    /// The random-teacher setting: τ_T = τ_S = 1, no centering.
    fn default() -> Self {
        LossConfig { teacher_temp: 1.0, student_temp: 1.0, center_momentum: None }
    }
}

impl LossConfig {
    pub fn validate(&self) -> Result<()> {
        let temps_ok = |t: f32| t.is_finite() && t > 0.0;
        let m_ok = self.center_momentum.is_none_or(|m| (0.0..=1.0).contains(&m));
        if !(temps_ok(self.teacher_temp) && temps_ok(self.student_temp) && m_ok) {
            return Err(Error::InvalidArgument {
                op: "LossConfig",
                message: format!("need temperatures > 0 and centering momentum in [0, 1], got {self:?}"),
            });
        }
        Ok(())
    }
}

/// The DINO center of the teacher logits (zeros until the first update).
#[derive(Clone, Debug, PartialEq)]
pub struct Center {
    pub values: Vec<f32>,
    pub momentum: f32,
}

impl Center {
    pub fn new(m: usize, momentum: f32) -> Center {
        Center { values: vec![0.0; m], momentum }
    }
    /// `c ← m·c + (1 − m)·mean_b t_b` from teacher logits `[B, m]` (batch mean in f64).
    pub fn update(&mut self, teacher_logits: &Tensor) -> Result<()> {
        let (b, m) = rows_cols("Center::update", teacher_logits, self.values.len())?;
        if teacher_logits.device() != crate::Device::Cpu {
            // Logits on the GPU: the batch mean there (f32), its m values read back.
            let mean = no_grad(|| teacher_logits.mean(&[0], false))?.try_to_vec()?;
            let mo = self.momentum as f64;
            for (c, &mean) in self.values.iter_mut().zip(&mean) {
                *c = (mo * *c as f64 + (1.0 - mo) * mean as f64) as f32;
            }
            return Ok(());
        }
        let t = teacher_logits.contiguous_data();
        for (k, c) in self.values.iter_mut().enumerate() {
            let mean = (0..b).map(|i| t[i * m + k] as f64).sum::<f64>() / b as f64;
            *c = (self.momentum as f64 * *c as f64 + (1.0 - self.momentum as f64) * mean) as f32;
        }
        Ok(())
    }
}

fn rows_cols(op: &'static str, x: &Tensor, m: usize) -> Result<(usize, usize)> {
    if x.rank() != 2 || (m != usize::MAX && x.shape()[1] != m) {
        return Err(Error::ShapeMismatch {
            op,
            lhs: x.shape_obj().clone(),
            rhs: [x.shape().first().copied().unwrap_or(1), if m == usize::MAX { 1 } else { m }].into(),
        });
    }
    Ok((x.shape()[0], x.shape()[1]))
}

/// `softmax((t − c)/τ_T)` without gradient.
pub fn teacher_probs(teacher_logits: &Tensor, cfg: &LossConfig, center: Option<&Center>) -> Result<Tensor> {
    rows_cols("teacher_probs", teacher_logits, usize::MAX)?;
    no_grad(|| {
        let mut t = teacher_logits.detach();
        if let Some(c) = center {
            let m = c.values.len();
            t = t.sub(&Tensor::from_slice(&c.values, [1, m])?.to_device(t.device())?)?;
        }
        if cfg.teacher_temp != 1.0 {
            t = t.mul_scalar(1.0 / cfg.teacher_temp);
        }
        t.softmax(-1)
    })
}

/// `L = −(1/B) Σ_b Σ_k p_bk log_softmax(s_b/τ_S)_k`, differentiable in `s`
/// ([`Tensor::soft_cross_entropy`]).
pub fn distill_loss(student_logits: &Tensor, probs: &Tensor, student_temp: f32) -> Result<Tensor> {
    rows_cols("distill_loss", student_logits, usize::MAX)?;
    if probs.shape() != student_logits.shape() {
        return Err(Error::ShapeMismatch {
            op: "distill_loss (teacher probs vs student logits)",
            lhs: probs.shape_obj().clone(),
            rhs: student_logits.shape_obj().clone(),
        });
    }
    student_logits.soft_cross_entropy(probs, student_temp)
}

/// Log-softmax of one row in f64.
fn log_softmax_f64(x: &[f32], shift: &[f32], temp: f64, out: &mut [f64]) {
    for (k, o) in out.iter_mut().enumerate() {
        *o = (x[k] as f64 - shift.get(k).copied().unwrap_or(0.0) as f64) / temp;
    }
    let max = out.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = max + out.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
    out.iter_mut().for_each(|v| *v -= lse);
}

/// Mean KL(p ‖ q) over the batch, computed in f64 directly from the two log-softmaxes
/// (not as CE − H in f32, which is noise at KL ≈ 1e-5: spec §8.5). Rows are reduced in
/// parallel, each in a fixed order, and summed in row order (deterministic).
pub fn kl_f64(
    teacher_logits: &Tensor,
    student_logits: &Tensor,
    cfg: &LossConfig,
    center: Option<&Center>,
) -> Result<f64> {
    let (b, m) = rows_cols("kl_f64", teacher_logits, usize::MAX)?;
    rows_cols("kl_f64 (student vs teacher)", student_logits, m)?;
    if student_logits.shape()[0] != b {
        return Err(Error::ShapeMismatch {
            op: "kl_f64 (student vs teacher)",
            lhs: student_logits.shape_obj().clone(),
            rhs: teacher_logits.shape_obj().clone(),
        });
    }
    if Tensor::common_device("kl_f64", &[teacher_logits, student_logits])? != crate::Device::Cpu {
        return kl_on_device(teacher_logits, student_logits, cfg, center);
    }
    let (t, s) = (teacher_logits.contiguous_data(), student_logits.contiguous_data());
    let c: &[f32] = center.map_or(&[], |c| &c.values);
    let (tt, ts) = (cfg.teacher_temp as f64, cfg.student_temp as f64);
    let per_row: Vec<f64> = (0..b)
        .into_par_iter()
        .with_min_len(16)
        .map(|i| {
            let (mut lp, mut lq) = (vec![0.0; m], vec![0.0; m]);
            log_softmax_f64(&t[i * m..(i + 1) * m], c, tt, &mut lp);
            log_softmax_f64(&s[i * m..(i + 1) * m], &[], ts, &mut lq);
            lp.iter().zip(&lq).map(|(&a, &q)| a.exp() * (a - q)).sum::<f64>()
        })
        .collect();
    Ok(per_row.iter().sum::<f64>() / b as f64)
}

/// [`kl_f64`] for logits on the GPU: `Σ p (log p − log q) / B` from the two
/// log-softmaxes, computed there in f32 (not f64: the GPU has no f64; still a direct
/// KL, not CE − H), one scalar read back.
fn kl_on_device(t: &Tensor, s: &Tensor, cfg: &LossConfig, center: Option<&Center>) -> Result<f64> {
    let b = t.shape()[0];
    no_grad(|| {
        let mut t = t.detach();
        if let Some(c) = center {
            t = t.sub(&Tensor::from_slice(&c.values, [1, c.values.len()])?.to_device(t.device())?)?;
        }
        let lp = t.mul_scalar(1.0 / cfg.teacher_temp).log_softmax(-1)?;
        let lq = s.detach().mul_scalar(1.0 / cfg.student_temp).log_softmax(-1)?;
        let kl = lp.exp().mul(&lp.sub(&lq)?)?.sum_all().item()?;
        Ok(kl as f64 / b as f64)
    })
}

/// The reference's AdamW parameter groups (spec §8.3): weight decay 0 for parameters
/// with at least two axes, `wd_1d` (0.01 in the reference, AdamW's default) for the
/// others (biases, LayerNorm affine parameters).
pub fn param_groups(model: &dyn Module, wd_1d: f32) -> Vec<ParamGroup> {
    let (mut multi, mut one): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
    for (name, p) in model.params() {
        if p.rank() >= 2 { multi.push(name) } else { one.push(name) }
    }
    vec![ParamGroup::names(multi, 0.0, 1.0), ParamGroup::names(one, wd_1d, 1.0)]
}
