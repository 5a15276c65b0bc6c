//! Normalisation layers over the last axis: [`LayerNorm`] and [`RmsNorm`].

use super::Module;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

fn check_last(op: &'static str, x: &Tensor, dim: usize) -> Result<()> {
    if x.rank() == 0 || x.shape()[x.rank() - 1] != dim {
        return Err(Error::ShapeMismatch { op, lhs: x.shape_obj().clone(), rhs: [dim].into() });
    }
    Ok(())
}

/// `(x - mean) / sqrt(var + eps) · weight + bias` over the last axis (biased variance,
/// as `torch.nn.LayerNorm`). Parameters `weight` (ones) and `bias` (zeros), `[dim]`,
/// when affine.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    dim: usize,
    eps: f32,
    weight: Option<Tensor>,
    bias: Option<Tensor>,
}

impl LayerNorm {
    pub fn new(dim: usize, eps: f32, affine: bool) -> LayerNorm {
        LayerNorm {
            dim,
            eps,
            weight: affine.then(|| Tensor::ones([dim]).requires_grad_()),
            bias: affine.then(|| Tensor::zeros([dim]).requires_grad_()),
        }
    }
    pub fn dim(&self) -> usize {
        self.dim
    }
    pub fn eps(&self) -> f32 {
        self.eps
    }
    /// Normalise `x` of shape `[.., dim]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        check_last("layer_norm (input vs [dim])", x, self.dim)?;
        x.layer_norm(self.weight.as_ref(), self.bias.as_ref(), self.eps)
    }
}

impl Module for LayerNorm {
    fn params(&self) -> Vec<(String, &Tensor)> {
        let mut v = Vec::new();
        if let (Some(w), Some(b)) = (&self.weight, &self.bias) {
            v.push(("weight".to_string(), w));
            v.push(("bias".to_string(), b));
        }
        v
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        let mut v = Vec::new();
        if let (Some(w), Some(b)) = (&mut self.weight, &mut self.bias) {
            v.push(("weight".to_string(), w));
            v.push(("bias".to_string(), b));
        }
        v
    }
}

/// `x / sqrt(mean(x²) + eps) · weight` over the last axis (`torch.nn.RMSNorm`).
/// Parameter `weight` (ones, `[dim]`) when affine.
#[derive(Clone, Debug)]
pub struct RmsNorm {
    dim: usize,
    eps: f32,
    weight: Option<Tensor>,
}

impl RmsNorm {
    pub fn new(dim: usize, eps: f32, affine: bool) -> RmsNorm {
        RmsNorm { dim, eps, weight: affine.then(|| Tensor::ones([dim]).requires_grad_()) }
    }
    pub fn dim(&self) -> usize {
        self.dim
    }
    /// Normalise `x` of shape `[.., dim]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        check_last("rms_norm (input vs [dim])", x, self.dim)?;
        x.rms_norm(self.weight.as_ref(), self.eps)
    }
}

impl Module for RmsNorm {
    fn params(&self) -> Vec<(String, &Tensor)> {
        self.weight.iter().map(|w| ("weight".to_string(), w)).collect()
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        self.weight.iter_mut().map(|w| ("weight".to_string(), w)).collect()
    }
}
