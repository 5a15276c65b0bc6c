//! Training jobs: configuration in, report out. Nothing here prints; the binary
//! formats reports.

pub mod dino;
pub mod fprnn;
pub mod guard;
pub mod mlp;

pub use dino::{DinoConfig, DinoHooks, DinoReport, train_dino};
pub use fprnn::{FprnnConfig, FprnnTrainer, LengthEval, StepInfo};
pub use mlp::{MlpConfig, MlpReport, MlpTrainer, accuracy, train_mlp, train_mlp_with};

/// The checks every training config shares: warm-up within the run, positive finite
/// learning rates, and a positive clip norm. Errors are `InvalidArgument` for `op`.
pub(crate) fn validate_schedule(
    op: &'static str,
    steps: usize,
    warmup: usize,
    lr: f32,
    final_lr: f32,
    clip: Option<f32>,
) -> crate::Result<()> {
    let bad = |message: String| Err(crate::Error::InvalidArgument { op, message });
    if warmup > steps {
        return bad(format!("warmup steps {warmup} exceed steps {steps}"));
    }
    if !(lr.is_finite() && lr > 0.0 && final_lr.is_finite() && final_lr >= 0.0) {
        return bad(format!("need lr > 0 and final lr >= 0, got {lr} and {final_lr}"));
    }
    if let Some(c) = clip
        && !(c.is_finite() && c > 0.0)
    {
        return bad(format!("clip norm must be > 0, got {c}"));
    }
    Ok(())
}
