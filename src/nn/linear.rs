//! Affine layer `y = x·W + b` with the weight stored `[in, out]`, so the forward pass is
//! a plain matmul with no transposed copy, and optional weight normalisation.

use super::Module;
use crate::error::{Error, Result};
use crate::init;
use crate::rng::Rng;
use crate::tensor::Tensor;

/// How a [`Linear`] stores its weight.
#[derive(Clone, Debug)]
pub enum LinearWeight {
    /// A plain weight `[in, out]` (parameter name `weight`).
    Dense(Tensor),
    /// Weight normalisation (Salimans & Kingma 2016): `W[:, j] = g[j] · v[:, j] / ‖v[:, j]‖`,
    /// one norm per output column. This is `torch.nn.utils.weight_norm(linear, dim=0)`
    /// (PyTorch stores the weight `[out, in]`, so its per-row norm is our per-column
    /// norm). Parameter names `weight_g` (`[out]`) and `weight_v` (`[in, out]`).
    Normalized { g: Tensor, v: Tensor },
}

/// A fully connected layer.
#[derive(Clone, Debug)]
pub struct Linear {
    in_features: usize,
    out_features: usize,
    weight: LinearWeight,
    bias: Option<Tensor>,
}

/// PyTorch's `nn.Linear` init: `kaiming_uniform_(a = √5)`, i.e. `U(-1/√fan_in, 1/√fan_in)`,
/// for the weight and the same bound for the bias.
fn torch_default(in_features: usize, out_features: usize, rng: &mut Rng) -> (Tensor, Tensor) {
    let w = init::kaiming_uniform([in_features, out_features], in_features, (1.0f32 / 3.0).sqrt(), rng);
    let bound = 1.0 / (in_features.max(1) as f32).sqrt();
    let b = init::uniform([out_features], -bound, bound, rng);
    (w, b)
}

impl Linear {
    /// A layer with PyTorch's default initialisation drawn from `rng` (weight first,
    /// then bias).
    pub fn new(in_features: usize, out_features: usize, bias: bool, rng: &mut Rng) -> Linear {
        let (w, b) = torch_default(in_features, out_features, rng);
        Linear {
            in_features,
            out_features,
            weight: LinearWeight::Dense(w.requires_grad_()),
            bias: bias.then(|| b.requires_grad_()),
        }
    }

    /// A weight-normalised layer. `v` gets the default initialisation and `g` the
    /// column norms of `v`, so that the initial weight equals `v` (as PyTorch does).
    pub fn weight_normalized(in_features: usize, out_features: usize, bias: bool, rng: &mut Rng) -> Linear {
        let (v, b) = torch_default(in_features, out_features, rng);
        let vd = v.contiguous_data();
        let g: Vec<f32> = (0..out_features)
            .map(|j| (0..in_features).map(|i| (vd[i * out_features + j] as f64).powi(2)).sum::<f64>().sqrt() as f32)
            .collect();
        drop(vd);
        let g = Tensor::from_vec(g, [out_features]).expect("out_features values");
        Linear {
            in_features,
            out_features,
            weight: LinearWeight::Normalized { g: g.requires_grad_(), v: v.requires_grad_() },
            bias: bias.then(|| b.requires_grad_()),
        }
    }

    /// A layer with the given weight `[in, out]` and bias `[out]` (made parameters).
    pub fn from_tensors(weight: Tensor, bias: Option<Tensor>) -> Result<Linear> {
        if weight.rank() != 2 {
            return Err(Error::InvalidArgument {
                op: "Linear::from_tensors",
                message: format!("weight must be [in, out], got {}", weight.shape_obj()),
            });
        }
        let (i, o) = (weight.shape()[0], weight.shape()[1]);
        if let Some(b) = &bias
            && b.shape() != [o]
        {
            return Err(Error::ShapeMismatch {
                op: "Linear::from_tensors (bias vs [out])",
                lhs: b.shape_obj().clone(),
                rhs: [o].into(),
            });
        }
        Ok(Linear {
            in_features: i,
            out_features: o,
            weight: LinearWeight::Dense(weight.detach().requires_grad_()),
            bias: bias.map(|b| b.detach().requires_grad_()),
        })
    }

    pub fn in_features(&self) -> usize {
        self.in_features
    }
    pub fn out_features(&self) -> usize {
        self.out_features
    }
    pub fn weight_param(&self) -> &LinearWeight {
        &self.weight
    }
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The weight `[in, out]` used by the forward pass (computed, and differentiable,
    /// under weight normalisation).
    pub fn weight(&self) -> Result<Tensor> {
        match &self.weight {
            LinearWeight::Dense(w) => Ok(w.clone()),
            LinearWeight::Normalized { g, v } => {
                let norm = v.square().sum(&[0], true)?.sqrt(); // [1, out]
                v.mul(&g.div(&norm)?)
            }
        }
    }

    /// `x·W + b` for `x` of shape `[.., in]`; returns `[.., out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.rank() == 0 || x.shape()[x.rank() - 1] != self.in_features {
            return Err(Error::MatMul {
                op: "linear",
                lhs: x.shape_obj().clone(),
                rhs: [self.in_features, self.out_features].into(),
                detail: format!("input needs last axis {}", self.in_features),
            });
        }
        let w = self.weight()?;
        let y = if x.rank() == 1 { x.unsqueeze(0)?.matmul(&w)?.squeeze(0)? } else { x.matmul(&w)? };
        match &self.bias {
            Some(b) => y.add(b),
            None => Ok(y),
        }
    }
}

impl Module for Linear {
    fn params(&self) -> Vec<(String, &Tensor)> {
        let mut out = match &self.weight {
            LinearWeight::Dense(w) => vec![("weight".to_string(), w)],
            LinearWeight::Normalized { g, v } => vec![("weight_g".to_string(), g), ("weight_v".to_string(), v)],
        };
        if let Some(b) = &self.bias {
            out.push(("bias".to_string(), b));
        }
        out
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        let mut out = match &mut self.weight {
            LinearWeight::Dense(w) => vec![("weight".to_string(), w)],
            LinearWeight::Normalized { g, v } => vec![("weight_g".to_string(), g), ("weight_v".to_string(), v)],
        };
        if let Some(b) = &mut self.bias {
            out.push(("bias".to_string(), b));
        }
        out
    }
}
