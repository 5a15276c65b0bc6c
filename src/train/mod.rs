//! Training jobs: configuration in, report out. Nothing here prints; the binary
//! formats reports.

pub mod dino;
pub mod fprnn;
pub mod guard;
pub mod mlp;
pub mod tickets;

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
    if steps > MAX_STEPS {
        return bad(format!("steps {steps} exceed the limit of {MAX_STEPS}"));
    }
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

/// The most steps a run may ask for (a bound that keeps per-step buffers allocatable;
/// at 1,000 steps per second it is 11 days).
pub const MAX_STEPS: usize = 1_000_000_000;

/// The most values one `[batch, length, width]` activation may hold (2^28 f32: 1 GiB;
/// a step holds several per layer).
pub const MAX_ACTIVATION: usize = 1 << 28;

/// The largest batch, width or output size a config may ask for: far beyond what fits
/// a CPU run, small enough that sizes multiplied together cannot overflow `usize`.
pub const MAX_SIZE: usize = 1 << 20;

/// Refuse any `(name, value)` above [`MAX_SIZE`] with one line naming it (found by
/// hand-fuzzing the command line: `--batch 18446744073709551615` overflowed a
/// buffer's capacity and panicked).
pub(crate) fn check_sizes(op: &'static str, sizes: &[(&str, usize)]) -> crate::Result<()> {
    match sizes.iter().find(|(_, v)| *v > MAX_SIZE) {
        Some((name, v)) => {
            Err(crate::Error::InvalidArgument { op, message: format!("{name} {v} exceeds the limit of {MAX_SIZE}") })
        }
        None => Ok(()),
    }
}
