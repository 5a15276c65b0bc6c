//! The DINO projection head with an L2 bottleneck (random-teachers spec §3):
//!
//! ```text
//! Linear(E→2048) → GELU → Linear(2048→2048) → GELU → Linear(2048→256)
//!   → z / max(‖z‖₂, 1e-12) → Linear(256→m, no bias) → logits
//! ```
//!
//! Every Linear is initialised trunc-normal σ = 0.02 (cut at ±2, effectively
//! untruncated), biases 0. GELU is the exact (erf) form.
//!
//! `last_wn` (spec §8.1): the paper normalises each output unit's weight vector of the
//! last layer to unit norm on every forward pass (weight normalisation with the gain
//! fixed at 1, as DINO's `norm_last_layer`); the reference code's layer ignores that
//! normalised weight, so the published numbers used a plain layer. Default **off**.

use crate::error::{Error, Result};
use crate::init;
use crate::nn::{Linear, Module, prefixed};
use crate::rng::Rng;
use crate::tensor::Tensor;

/// Sizes and flags of a [`DinoHead`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeadConfig {
    /// Embedding size E (input).
    pub in_dim: usize,
    /// Hidden sizes of the MLP before the bottleneck (`[2048, 2048]`).
    pub hidden: Vec<usize>,
    /// Bottleneck size (256).
    pub bottleneck: usize,
    /// Output dimension m (65536 in the paper).
    pub out_dim: usize,
    /// Normalise the last layer's weight per output unit on every forward pass.
    pub last_wn: bool,
}

impl HeadConfig {
    /// The paper's head for embedding size `in_dim` and output dimension `out_dim`.
    pub fn paper(in_dim: usize, out_dim: usize) -> HeadConfig {
        HeadConfig { in_dim, hidden: vec![2048, 2048], bottleneck: 256, out_dim, last_wn: false }
    }
}

/// The head. Parameters `mlp.{i}.weight` (`[in, out]`), `mlp.{i}.bias` and
/// `last_layer.weight` (`[bottleneck, m]`).
#[derive(Clone, Debug)]
pub struct DinoHead {
    mlp: Vec<Linear>,
    last: Tensor,
    last_wn: bool,
}

const TRUNC_STD: f32 = 0.02;

fn trunc_linear(i: usize, o: usize, bias: bool, rng: &mut Rng) -> Result<Linear> {
    let w = init::trunc_normal([i, o], 0.0, TRUNC_STD, -2.0, 2.0, rng);
    Linear::from_tensors(w, bias.then(|| Tensor::zeros([o])))
}

impl DinoHead {
    pub fn new(cfg: &HeadConfig, rng: &mut Rng) -> Result<DinoHead> {
        let dims: Vec<usize> =
            std::iter::once(cfg.in_dim).chain(cfg.hidden.iter().copied()).chain([cfg.bottleneck]).collect();
        if dims.contains(&0) || cfg.out_dim == 0 {
            return Err(Error::InvalidArgument {
                op: "DinoHead::new",
                message: format!("zero size in {dims:?} -> {}", cfg.out_dim),
            });
        }
        let mlp = dims.windows(2).map(|w| trunc_linear(w[0], w[1], true, rng)).collect::<Result<_>>()?;
        let last = init::trunc_normal([cfg.bottleneck, cfg.out_dim], 0.0, TRUNC_STD, -2.0, 2.0, rng).requires_grad_();
        Ok(DinoHead { mlp, last, last_wn: cfg.last_wn })
    }
    pub fn out_dim(&self) -> usize {
        self.last.shape()[1]
    }
    pub fn bottleneck_dim(&self) -> usize {
        self.last.shape()[0]
    }
    pub fn last_wn(&self) -> bool {
        self.last_wn
    }
    /// The last layer's weight `[bottleneck, m]` as used by the forward pass
    /// (column-normalised when `last_wn`).
    pub fn last_weight(&self) -> Result<Tensor> {
        if !self.last_wn {
            return Ok(self.last.clone());
        }
        let norm = self.last.square().sum(&[0], true)?.sqrt().clamp(1e-12, f32::INFINITY)?;
        self.last.div(&norm)
    }
    /// Embeddings `[B, E]` → unit-norm bottleneck outputs `[B, bottleneck]`.
    pub fn bottleneck(&self, e: &Tensor) -> Result<Tensor> {
        let mut h = e.clone();
        let last = self.mlp.len() - 1;
        for (i, l) in self.mlp.iter().enumerate() {
            h = l.forward(&h)?;
            if i < last {
                h = h.gelu();
            }
        }
        h.l2_normalize(-1, 1e-12)
    }
    /// Bottleneck outputs `[B, bottleneck]` → logits `[B, m]`.
    pub fn project(&self, z: &Tensor) -> Result<Tensor> {
        z.matmul(&self.last_weight()?)
    }
    /// Embeddings → logits.
    pub fn forward(&self, e: &Tensor) -> Result<Tensor> {
        self.project(&self.bottleneck(e)?)
    }
}

impl Module for DinoHead {
    fn params(&self) -> Vec<(String, &Tensor)> {
        let mut v: Vec<(String, &Tensor)> =
            self.mlp.iter().enumerate().flat_map(|(i, l)| prefixed(format!("mlp.{i}"), l.params())).collect();
        v.push(("last_layer.weight".to_string(), &self.last));
        v
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        let mut v: Vec<(String, &mut Tensor)> =
            self.mlp.iter_mut().enumerate().flat_map(|(i, l)| prefixed(format!("mlp.{i}"), l.params_mut())).collect();
        v.push(("last_layer.weight".to_string(), &mut self.last));
        v
    }
}
