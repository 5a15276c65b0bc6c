//! Multi-layer perceptron: a stack of [`Linear`] layers with an activation (and
//! optional dropout) between them.

use super::{Linear, Module, prefixed};
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::tensor::Tensor;

/// Activation applied after every hidden layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Relu,
    /// Exact (erf) GELU.
    Gelu,
    /// Tanh-approximated GELU.
    GeluTanh,
    Silu,
    Tanh,
}

impl Activation {
    pub fn apply(self, x: &Tensor) -> Tensor {
        match self {
            Activation::Relu => x.relu(),
            Activation::Gelu => x.gelu(),
            Activation::GeluTanh => x.gelu_tanh(),
            Activation::Silu => x.silu(),
            Activation::Tanh => x.tanh(),
        }
    }
    /// Parse `relu`, `gelu`, `gelu_tanh`, `silu`, `tanh`.
    pub fn parse(s: &str) -> Result<Activation> {
        Ok(match s {
            "relu" => Activation::Relu,
            "gelu" => Activation::Gelu,
            "gelu_tanh" => Activation::GeluTanh,
            "silu" => Activation::Silu,
            "tanh" => Activation::Tanh,
            _ => {
                return Err(Error::InvalidArgument {
                    op: "Activation::parse",
                    message: format!("unknown activation {s:?} (relu, gelu, gelu_tanh, silu, tanh)"),
                });
            }
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Gelu => "gelu",
            Activation::GeluTanh => "gelu_tanh",
            Activation::Silu => "silu",
            Activation::Tanh => "tanh",
        }
    }
}

/// `Linear → act → [dropout] → … → Linear`. Parameters `layers.{i}.weight`,
/// `layers.{i}.bias`. No activation after the last layer.
#[derive(Clone, Debug)]
pub struct Mlp {
    layers: Vec<Linear>,
    activation: Activation,
    dropout: f32,
    training: bool,
}

impl Mlp {
    /// Layers `dims[0] → dims[1] → … → dims[last]` (at least two sizes), initialised in
    /// order from `rng`.
    pub fn new(dims: &[usize], activation: Activation, rng: &mut Rng) -> Result<Mlp> {
        if dims.len() < 2 {
            return Err(Error::InvalidArgument {
                op: "Mlp::new",
                message: format!("needs at least input and output sizes, got {dims:?}"),
            });
        }
        let layers = dims.windows(2).map(|w| Linear::new(w[0], w[1], true, rng)).collect();
        Ok(Mlp { layers, activation, dropout: 0.0, training: true })
    }
    /// Dropout with probability `p` after each hidden activation (in training mode).
    pub fn with_dropout(mut self, p: f32) -> Result<Mlp> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::InvalidArgument {
                op: "Mlp::with_dropout",
                message: format!("p = {p} is outside [0, 1)"),
            });
        }
        self.dropout = p;
        Ok(self)
    }
    pub fn layers(&self) -> &[Linear] {
        &self.layers
    }
    pub fn activation(&self) -> Activation {
        self.activation
    }

    /// Deterministic forward pass (no dropout, whatever the mode): evaluation.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, None)
    }
    /// Forward pass that applies dropout, drawing masks from `rng`, when in training
    /// mode and `p > 0`; otherwise the same as [`Mlp::forward`].
    pub fn forward_train(&self, x: &Tensor, rng: &mut Rng) -> Result<Tensor> {
        self.run(x, Some(rng))
    }

    fn run(&self, x: &Tensor, mut rng: Option<&mut Rng>) -> Result<Tensor> {
        let mut h = x.clone();
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(&h)?;
            if i < last {
                h = self.activation.apply(&h);
                if let Some(r) = rng.as_deref_mut()
                    && self.training
                    && self.dropout > 0.0
                {
                    h = h.dropout(self.dropout, r, true)?;
                }
            }
        }
        Ok(h)
    }
}

impl Module for Mlp {
    fn params(&self) -> Vec<(String, &Tensor)> {
        self.layers.iter().enumerate().flat_map(|(i, l)| prefixed(format!("layers.{i}"), l.params())).collect()
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        self.layers.iter_mut().enumerate().flat_map(|(i, l)| prefixed(format!("layers.{i}"), l.params_mut())).collect()
    }
    fn train(&mut self, training: bool) {
        self.training = training;
    }
}
