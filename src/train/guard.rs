//! The divergence guard of every training loop: after the backward pass and before the
//! optimiser step, a NaN or infinite loss or gradient stops the run with
//! [`Error::Diverged`] naming the step and the first parameter affected. The step is
//! not applied and no checkpoint is written, so the last good checkpoint stays intact.
//!
//! Parameter values are checked here too, except after a step whose optimiser checked
//! every value it wrote ([`check_step_after`]; the DINO loop with AdamW). There an
//! update that overflows a value fails inside `AdamW::step` with
//! [`Error::Diverged`] naming it: the run stops at that step (the old guard stopped at
//! the next one) and saves nothing, though the in-memory model is partly updated.

use crate::error::{Error, Result};
use crate::nn::Module;
use crate::run::faults;

/// The first parameter of `model` (in its order) whose value or gradient is not finite,
/// and which of the two.
pub fn first_non_finite(model: &dyn Module) -> Option<(String, &'static str)> {
    first_non_finite_with(model, true)
}

/// [`first_non_finite`], reading the values only if `values` (the gradients always; a
/// model on the GPU always has both summed on the device). Whenever something is not
/// finite, every value and gradient is scanned to name it.
fn first_non_finite_with(model: &dyn Module, values: bool) -> Option<(String, &'static str)> {
    if model.params().iter().any(|(_, p)| p.device() != crate::Device::Cpu) {
        return first_non_finite_on_device(model);
    }
    let params = model.params();
    let grads: Vec<Option<crate::Tensor>> = params.iter().map(|(_, p)| p.grad()).collect();
    {
        // One parallel SIMD pass over every value and gradient; the parameters are
        // named only when it fails (this check ran scalar before and took 6.5 ms of a
        // 60 ms MLP distillation step).
        let data: Vec<std::borrow::Cow<'_, [f32]>> = params
            .iter()
            .filter(|_| values)
            .map(|(_, p)| p.contiguous_data())
            .chain(grads.iter().flatten().map(|g| g.contiguous_data()))
            .collect();
        let slices: Vec<&[f32]> = data.iter().map(|d| &d[..]).collect();
        if crate::cpu::par::all_finite(&slices) {
            return None;
        }
    }
    for (name, p) in params {
        if p.contiguous_data().iter().any(|v| !v.is_finite()) {
            return Some((name, "value"));
        }
        if let Some(g) = p.grad()
            && g.contiguous_data().iter().any(|v| !v.is_finite())
        {
            return Some((name, "gradient"));
        }
    }
    None
}

/// Check step `step` (1-based) after its backward pass: `loss` and every parameter's
/// value and gradient must be finite. Applies the injected `nan-loss` / `nan-grad`
/// faults of [`faults`] first.
pub fn check_step(step: u64, loss: f32, model: &dyn Module) -> Result<()> {
    check_step_with(step, loss, model, true)
}

/// [`check_step`] that reads the parameter values only if `values`. Pass `false` only
/// when the optimiser checked every value it last wrote
/// ([`crate::optim::Optimizer::wrote_finite_values`]) and nothing else wrote them
/// since: each value is then checked once, where it is written, and a healthy step
/// reads only the gradients (1.3 instead of 2.6 ms of the MLP distillation step at 2
/// threads). A failure still names the first bad value or gradient.
pub fn check_step_with(step: u64, loss: f32, model: &dyn Module, values: bool) -> Result<()> {
    let loss = if faults::armed("nan-loss", step) { f32::NAN } else { loss };
    if faults::armed("nan-grad", step)
        && let Some((_, p)) = model.params().into_iter().next()
    {
        let g = crate::Tensor::full(p.shape().to_vec(), f32::NAN).to_device(p.device())?;
        p.set_grad(Some(g))?;
    }
    let bad = first_non_finite_with(model, values || !loss.is_finite());
    if !loss.is_finite() {
        return Err(Error::Diverged {
            step,
            what: format!("the loss is {loss}"),
            param: bad.map(|(n, k)| format!("{n} ({k})")),
        });
    }
    match bad {
        Some((name, kind)) => Err(Error::Diverged {
            step,
            what: format!("a {kind} is not finite"),
            param: Some(format!("{name} ({kind})")),
        }),
        None => Ok(()),
    }
}

/// [`check_step_with`] for a loop whose parameters only `opt` writes: the values are
/// read unless `opt`'s last step checked every value it wrote
/// ([`crate::optim::Optimizer::wrote_finite_values`]), so the first step of a process,
/// fresh or resumed, reads them.
pub fn check_step_after(step: u64, loss: f32, model: &dyn Module, opt: &dyn crate::optim::Optimizer) -> Result<()> {
    check_step_with(step, loss, model, !opt.wrote_finite_values())
}

/// [`first_non_finite`] for a model on the GPU without reading tensors back: `Σ|x|` of
/// every value and gradient is summed on the device (NaN and ±inf propagate through
/// it; finite tensors overflow it only past 3.4e38, itself a divergence) and one scalar
/// is read back; only when it is not finite are the tensors checked one by one.
fn first_non_finite_on_device(model: &dyn Module) -> Option<(String, &'static str)> {
    let checks: Vec<(String, &'static str, crate::Tensor)> = model
        .params()
        .into_iter()
        .flat_map(|(name, p)| {
            let g = p.grad().map(|g| (name.clone(), "gradient", g));
            std::iter::once((name, "value", p.detach())).chain(g)
        })
        .collect();
    let abs_sum = |t: &crate::Tensor| t.abs().sum_all();
    // A failed launch or readback counts as "not finite": the run stops with the error's
    // parameter named instead of training on unchecked values.
    let total = crate::no_grad(|| {
        checks.iter().try_fold(None::<crate::Tensor>, |acc, (_, _, t)| {
            let s = abs_sum(t);
            Ok::<_, crate::Error>(Some(match acc {
                Some(a) => a.add(&s)?,
                None => s,
            }))
        })
    });
    if let Ok(Some(t)) = &total
        && t.item().is_ok_and(f32::is_finite)
    {
        return None;
    }
    crate::no_grad(|| {
        checks
            .iter()
            .find(|(_, _, t)| !abs_sum(t).item().is_ok_and(f32::is_finite))
            .map(|(name, kind, _)| (name.clone(), *kind))
    })
}
