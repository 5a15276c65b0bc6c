//! The exact implicit-function-theorem gradient of a fixed point (spec §3.1, the
//! "oracle"), as an op.
//!
//! At the fixed point `h* = F(θ, h*)`, `dh*/dθ = (I − J_h)⁻¹ ∂F/∂θ`. Given the upstream
//! gradient `ḡ = dL/dh*`, the adjoint `w = (I − J_hᵀ)⁻¹ ḡ` is the fixed point of
//!
//! ```text
//! w = ḡ + J_hᵀ w
//! ```
//!
//! which [`implicit_grad`] solves by plain iteration in its backward (each `J_hᵀ w` is one
//! vector–Jacobian product of `F` in `h` at the detached `h*`: for the FP-RNN a reverse
//! diagonal scan and a transposed mixer application), with its own relative tolerance and
//! cap. The op is the identity in the forward and sits on top of the one recorded step
//! `F(θ, stopgrad(h*))`, so that the one vector–Jacobian product of that step with `w`
//! gives the parameters and inputs their exact gradients. The iteration converges when
//! the spectral radius of `J_h` is below 1 (a contractive `F`); when it does not within
//! the cap, the last iterate is used and the statistics say so.

use crate::autograd::{Backward, enable_grad};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::sync::{Arc, Mutex};

/// What one adjoint solve did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AdjointStats {
    /// Vector–Jacobian products `J_hᵀ w` evaluated.
    pub iterations: usize,
    /// Relative residual `‖w_new − w‖_∞ / (‖w_new‖_∞ + 1e-12)` of the last iteration.
    pub residual: f32,
    /// Whether the residual fell below the tolerance within the cap.
    pub converged: bool,
}

/// `w ↦ J_hᵀ w` (same shape as `h*`), called with graph recording on.
pub type VjpFn = Arc<dyn Fn(&Tensor) -> Result<Tensor> + Send + Sync>;

/// Where the backward reports its statistics (the latest solve).
pub type AdjointSink = Arc<Mutex<Option<AdjointStats>>>;

struct ImplicitBackward {
    vjp_h: VjpFn,
    tol: f32,
    max_iter: usize,
    sink: AdjointSink,
}

/// Solve `w = ḡ + J_hᵀ w` by iteration from `w = ḡ`.
pub fn solve_adjoint(g: &Tensor, vjp_h: &VjpFn, tol: f32, max_iter: usize) -> Result<(Tensor, AdjointStats)> {
    let _p = crate::profile::fwd("implicit_adjoint");
    let g = g.contiguous().detach();
    let gd = g.to_vec();
    let mut w = g.clone();
    let mut stats = AdjointStats { iterations: 0, residual: f32::INFINITY, converged: false };
    while stats.iterations < max_iter {
        let jw = enable_grad(|| vjp_h(&w))?;
        let jw = jw.contiguous_data();
        let wd = w.contiguous_data();
        let (mut diff, mut norm) = (0.0f32, 0.0f32);
        let new: Vec<f32> = gd
            .iter()
            .zip(jw.iter())
            .zip(wd.iter())
            .map(|((&a, &b), &old)| {
                let v = a + b;
                diff = diff.max((v - old).abs());
                norm = norm.max(v.abs());
                v
            })
            .collect();
        stats.iterations += 1;
        stats.residual = if diff.is_nan() || norm.is_nan() { f32::NAN } else { diff / (norm + 1e-12) };
        w = Tensor::from_vec(new, g.shape_obj().clone())?;
        if stats.residual < tol {
            stats.converged = true;
            break;
        }
        if !stats.residual.is_finite() {
            break;
        }
    }
    Ok((w, stats))
}

impl Backward for ImplicitBackward {
    fn name(&self) -> &'static str {
        "implicit_fixed_point"
    }
    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let (w, stats) = solve_adjoint(g, &self.vjp_h, self.tol, self.max_iter)?;
        *self.sink.lock().unwrap_or_else(|e| e.into_inner()) = Some(stats);
        Ok(vec![Some(w)])
    }
}

/// The identity on `step_out` (the recorded step `F(θ, stopgrad(h*))`) whose backward
/// replaces the upstream gradient `ḡ` by the adjoint `w = (I − J_hᵀ)⁻¹ ḡ`: backward
/// through the result gives the implicit gradient. `vjp_h` computes `J_hᵀ w` at `h*`;
/// `tol` (> 0) and `max_iter` (≥ 1) bound the adjoint iteration, whose statistics go to
/// `sink`.
pub fn implicit_grad(step_out: &Tensor, vjp_h: VjpFn, tol: f32, max_iter: usize, sink: AdjointSink) -> Result<Tensor> {
    check_implicit(tol, max_iter)?;
    Ok(Tensor::from_op(step_out.to_vec(), step_out.shape_obj().clone(), &[step_out], || ImplicitBackward {
        vjp_h,
        tol,
        max_iter,
        sink,
    }))
}

/// Reject an adjoint tolerance that is not positive and finite or a cap of 0.
pub fn check_implicit(tol: f32, max_iter: usize) -> Result<()> {
    if !(tol > 0.0 && tol.is_finite()) || max_iter == 0 {
        return Err(Error::InvalidArgument {
            op: "BackwardMode::Implicit",
            message: format!(
                "tol must be positive and finite and max_iter at least 1, got tol {tol}, max_iter {max_iter}"
            ),
        });
    }
    Ok(())
}

/// `F(stopgrad(h*))` on the graph with the gradient path of `mode`, for any block whose
/// step is `step(block, inputs, h)`: one step, `K` unrolled steps, or one step under the
/// implicit adjoint op. `freeze` gives the block with detached parameters and detached
/// inputs, for the adjoint's vector–Jacobian products (which must not touch the
/// parameters' gradients).
pub fn recorded_state<B: Send + Sync + 'static, I: Send + Sync + 'static>(
    mode: super::block::BackwardMode,
    block: &B,
    inp: &I,
    h_star: &Tensor,
    step: fn(&B, &I, &Tensor) -> Result<Tensor>,
    freeze: impl FnOnce() -> (B, I),
    sink: AdjointSink,
) -> Result<Tensor> {
    use super::block::BackwardMode;
    let h_star = h_star.detach();
    match mode {
        BackwardMode::OneStep => step(block, inp, &h_star),
        BackwardMode::Phantom(k) => {
            let mut h = h_star;
            for _ in 0..k.max(1) {
                h = step(block, inp, &h)?;
            }
            Ok(h)
        }
        BackwardMode::Implicit { tol, max_iter } => {
            let out = step(block, inp, &h_star)?;
            if !out.requires_grad() {
                return Ok(out);
            }
            let (frozen, inp_d) = freeze();
            // The step `y = F(h)` at `h = h*` is recorded once, at the first adjoint
            // iteration, and every iteration backpropagates a new `w` through the same
            // graph (backward leaves a graph intact), so an iteration costs one backward
            // pass instead of a forward and a backward. Bit for bit the per-iteration
            // re-recording: the graph's saved values are the same each time.
            let hv = h_star.detach().requires_grad_();
            let graph: Mutex<Option<Tensor>> = Mutex::new(None);
            let vjp: VjpFn = Arc::new(move |w: &Tensor| {
                let mut slot = graph.lock().unwrap_or_else(|e| e.into_inner());
                if slot.is_none() {
                    *slot = Some(step(&frozen, &inp_d, &hv)?);
                }
                let y = slot.as_ref().expect("recorded above");
                hv.zero_grad();
                if y.requires_grad() {
                    y.backward_with(w)?;
                }
                Ok(hv.grad().unwrap_or_else(|| Tensor::zeros(hv.shape())))
            });
            implicit_grad(&out, vjp, tol, max_iter, sink)
        }
    }
}
