//! Learning-rate schedules, evaluated per 0-based optimiser step.

use crate::error::{Error, Result};

/// A learning rate as a function of the 0-based step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LrSchedule {
    Constant {
        lr: f32,
    },
    /// Linear warmup then cosine decay:
    /// * `step < warmup_steps`: `peak_lr · (step + 1) / warmup_steps` (never 0, reaches
    ///   the peak at `warmup_steps − 1`);
    /// * `warmup_steps <= step <= total_steps`: with `p = (step − warmup) / (total − warmup)`,
    ///   `final_lr + (peak_lr − final_lr) · (1 + cos(π·p)) / 2`;
    /// * after `total_steps`: `final_lr`.
    WarmupCosine {
        peak_lr: f32,
        warmup_steps: usize,
        total_steps: usize,
        final_lr: f32,
    },
}

impl LrSchedule {
    pub fn constant(lr: f32) -> Result<LrSchedule> {
        check_lr("LrSchedule::constant", lr)?;
        Ok(LrSchedule::Constant { lr })
    }
    /// Fails unless the rates are finite and `>= 0` and `warmup_steps <= total_steps`.
    pub fn warmup_cosine(peak_lr: f32, warmup_steps: usize, total_steps: usize, final_lr: f32) -> Result<LrSchedule> {
        check_lr("LrSchedule::warmup_cosine", peak_lr)?;
        check_lr("LrSchedule::warmup_cosine", final_lr)?;
        if warmup_steps > total_steps {
            return Err(Error::InvalidArgument {
                op: "LrSchedule::warmup_cosine",
                message: format!("warmup_steps {warmup_steps} exceeds total_steps {total_steps}"),
            });
        }
        Ok(LrSchedule::WarmupCosine { peak_lr, warmup_steps, total_steps, final_lr })
    }

    /// The learning rate at 0-based `step`.
    pub fn lr_at(&self, step: usize) -> f32 {
        match *self {
            LrSchedule::Constant { lr } => lr,
            LrSchedule::WarmupCosine { peak_lr, warmup_steps, total_steps, final_lr } => {
                if step < warmup_steps {
                    return (peak_lr as f64 * (step + 1) as f64 / warmup_steps as f64) as f32;
                }
                if step >= total_steps {
                    return final_lr;
                }
                let p = (step - warmup_steps) as f64 / (total_steps - warmup_steps) as f64;
                let c = 0.5 * (1.0 + (std::f64::consts::PI * p).cos());
                (final_lr as f64 + (peak_lr as f64 - final_lr as f64) * c) as f32
            }
        }
    }
}

fn check_lr(op: &'static str, lr: f32) -> Result<()> {
    if !lr.is_finite() || lr < 0.0 {
        return Err(Error::InvalidArgument { op, message: format!("learning rate must be finite and >= 0, got {lr}") });
    }
    Ok(())
}
