//! Finite-difference gradient checking, used by the tests of every op.
//!
//! The checked scalar is `L(x) = Σ f(x) ⊙ r` for a fixed random `r`, so every output
//! element contributes. The numerical gradient is the central difference
//! `(L(x + h) − L(x − h)) / 2h`, with `L` summed in f64 from the f32 outputs.

use crate::error::Result;
use crate::rng::Rng;
use crate::tensor::Tensor;

/// Largest disagreement found by [`check_gradients`].
#[derive(Debug, Clone)]
pub struct GradReport {
    /// Worst `|analytic − numeric| / (atol + rtol·|numeric|)` over all checked elements:
    /// ≤ 1 means within tolerance.
    pub worst_ratio: f64,
    pub worst_input: usize,
    pub worst_index: usize,
    pub analytic: f64,
    pub numeric: f64,
}

fn weighted_sum(y: &Tensor, r: &[f64]) -> f64 {
    y.contiguous_data().iter().zip(r).map(|(&a, &b)| a as f64 * b).sum()
}

/// Compare the backward of `f` with central differences at `inputs`.
/// Each input is made a leaf that requires grad; `step` is the perturbation.
pub fn check_gradients(
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
    inputs: &[Tensor],
    step: f32,
    atol: f64,
    rtol: f64,
    seed: u64,
) -> Result<GradReport> {
    let leaves: Vec<Tensor> = inputs.iter().map(|t| t.contiguous().detach().requires_grad_()).collect();
    let y = f(&leaves)?;
    let mut rng = Rng::new(seed);
    let r: Vec<f64> = (0..y.numel()).map(|_| rng.normal() as f64).collect();
    let seed_grad = Tensor::from_vec(r.iter().map(|&v| v as f32).collect(), y.shape_obj().clone())?;
    y.backward_with(&seed_grad)?;
    drop(y);
    let mut report = GradReport { worst_ratio: 0.0, worst_input: 0, worst_index: 0, analytic: 0.0, numeric: 0.0 };
    for (k, leaf) in leaves.iter().enumerate() {
        let analytic = leaf.grad().map(|g| g.to_vec()).unwrap_or_else(|| vec![0.0; leaf.numel()]);
        let base = leaf.to_vec();
        for i in 0..base.len() {
            let eval = |x: f32| -> Result<f64> {
                let mut v = base.clone();
                v[i] = x;
                let mut xs: Vec<Tensor> = leaves.iter().map(|t| t.detach()).collect();
                xs[k] = Tensor::from_vec(v, leaf.shape_obj().clone())?;
                let y = crate::autograd::no_grad(|| f(&xs))?;
                Ok(weighted_sum(&y, &r))
            };
            // Divide by the step actually taken in f32, not the nominal one.
            let (hi, lo) = (base[i] + step, base[i] - step);
            let numeric = (eval(hi)? - eval(lo)?) / (hi as f64 - lo as f64);
            let a = analytic[i] as f64;
            let ratio = (a - numeric).abs() / (atol + rtol * numeric.abs());
            if ratio > report.worst_ratio || ratio.is_nan() {
                report = GradReport { worst_ratio: ratio, worst_input: k, worst_index: i, analytic: a, numeric };
                if ratio.is_nan() {
                    return Ok(report);
                }
            }
        }
    }
    Ok(report)
}
