//! Multi-head self-attention with a fused q/k/v projection.

use super::{Linear, Module, prefixed};
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::tensor::Tensor;

/// `proj(softmax(q·kᵀ / √d_head [+ causal mask]) · v)` with `q, k, v` from one fused
/// projection `qkv: d_model → 3·d_model` whose output columns are `[q | k | v]`, each
/// split into `n_heads` consecutive blocks of `d_head = d_model / n_heads` columns.
/// Heads are reshape/permute views of the projection, not copies. Parameters
/// `qkv.weight`, `qkv.bias`, `proj.weight`, `proj.bias`.
#[derive(Clone, Debug)]
pub struct MultiHeadSelfAttention {
    qkv: Linear,
    proj: Linear,
    n_heads: usize,
    causal: bool,
}

impl MultiHeadSelfAttention {
    /// `d_model` must be a positive multiple of `n_heads`. With `causal`, position `t`
    /// attends only to positions `<= t`.
    pub fn new(d_model: usize, n_heads: usize, causal: bool, rng: &mut Rng) -> Result<Self> {
        if n_heads == 0 || d_model == 0 || !d_model.is_multiple_of(n_heads) {
            return Err(Error::InvalidArgument {
                op: "MultiHeadSelfAttention::new",
                message: format!("d_model {d_model} must be a positive multiple of n_heads {n_heads}"),
            });
        }
        let qkv = Linear::new(d_model, 3 * d_model, true, rng);
        let proj = Linear::new(d_model, d_model, true, rng);
        Ok(MultiHeadSelfAttention { qkv, proj, n_heads, causal })
    }
    /// Build from explicit projections (`qkv: d → 3d`, `proj: d → d`).
    pub fn from_linears(qkv: Linear, proj: Linear, n_heads: usize, causal: bool) -> Result<Self> {
        let d = proj.in_features();
        if n_heads == 0
            || d == 0
            || !d.is_multiple_of(n_heads)
            || proj.out_features() != d
            || qkv.in_features() != d
            || qkv.out_features() != 3 * d
        {
            return Err(Error::InvalidArgument {
                op: "MultiHeadSelfAttention::from_linears",
                message: format!(
                    "need qkv {d} -> {}, proj {d} -> {d} and {n_heads} heads dividing {d}; got qkv {} -> {}, proj {} -> {}",
                    3 * d,
                    qkv.in_features(),
                    qkv.out_features(),
                    proj.in_features(),
                    proj.out_features()
                ),
            });
        }
        Ok(MultiHeadSelfAttention { qkv, proj, n_heads, causal })
    }
    pub fn d_model(&self) -> usize {
        self.proj.in_features()
    }
    pub fn n_heads(&self) -> usize {
        self.n_heads
    }
    pub fn causal(&self) -> bool {
        self.causal
    }
    pub fn qkv(&self) -> &Linear {
        &self.qkv
    }
    pub fn proj(&self) -> &Linear {
        &self.proj
    }

    /// Attend over `x` of shape `[batch, t, d_model]` (or `[t, d_model]`); same shape out.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let d = self.d_model();
        if x.rank() == 2 {
            return self.forward(&x.unsqueeze(0)?)?.squeeze(0);
        }
        if x.rank() != 3 || x.shape()[2] != d {
            return Err(Error::ShapeMismatch {
                op: "attention (input vs [batch, t, d_model])",
                lhs: x.shape_obj().clone(),
                rhs: [x.shape().first().copied().unwrap_or(1), x.shape().get(1).copied().unwrap_or(1), d].into(),
            });
        }
        let (b, t) = (x.shape()[0], x.shape()[1]);
        let (h, dh) = (self.n_heads, d / self.n_heads);
        // [b, t, 3d] -> [b, t, 3, h, dh] -> [3, b, h, t, dh] (views)
        let qkv = self.qkv.forward(x)?.reshape(&[b, t, 3, h, dh])?.permute(&[2, 0, 3, 1, 4])?;
        let part = |i: usize| -> Result<Tensor> { qkv.narrow(0, i, 1)?.squeeze(0) };
        let (q, k, v) = (part(0)?, part(1)?, part(2)?);
        let mut scores = q.matmul(&k.transpose(-1, -2)?)?.mul_scalar(1.0 / (dh as f32).sqrt()); // [b, h, t, t]
        if self.causal {
            // Keys after the query get -inf before the softmax.
            let future = Tensor::causal_mask(t).rsub_scalar(1.0);
            scores = scores.masked_fill(&future, f32::NEG_INFINITY)?;
        }
        let attn = scores.softmax(-1)?;
        let out = attn.matmul(&v)?.permute(&[0, 2, 1, 3])?.reshape(&[b, t, d])?;
        self.proj.forward(&out)
    }
}

impl Module for MultiHeadSelfAttention {
    fn params(&self) -> Vec<(String, &Tensor)> {
        prefixed("qkv", self.qkv.params()).chain(prefixed("proj", self.proj.params())).collect()
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        prefixed("qkv", self.qkv.params_mut()).chain(prefixed("proj", self.proj.params_mut())).collect()
    }
}
