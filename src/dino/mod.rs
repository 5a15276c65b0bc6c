//! Random-teacher distillation ("Random Teachers are Good Teachers", Sarnthein et al.,
//! ICML 2023; spec `shared/docs/random-teachers.md`).
//!
//! * [`DinoModel`]: an encoder `g` ([`MlpEncoder`] or the standard [`Vit`]) followed by
//!   the DINO projection head `h` with its L2 bottleneck ([`DinoHead`]).
//! * [`method`]: the frozen random teacher, the α-interpolated student (computed in
//!   f64), the cross-entropy between the teacher's and the student's softmaxes (DINO
//!   centering and sharpening available, off by default), the KL in f64, and the
//!   reference's AdamW parameter groups.
//! * [`probes`]: k-NN (k = 20) and linear probes on frozen embeddings.
//!
//! The training loop is [`crate::train::dino`].

pub mod head;
pub mod method;
pub mod probes;
pub mod vit;

pub use head::{DinoHead, HeadConfig};
pub use vit::{Vit, VitConfig};

use crate::error::{Error, Result};
use crate::init;
use crate::nn::{Linear, Module, prefixed};
use crate::rng::Rng;
use crate::tensor::Tensor;

/// A fully connected encoder on flattened images: `Linear → ReLU` for every layer,
/// including the last (the embedding is post-activation, as VGG's is). Weights are
/// Kaiming-normal `N(0, 2/fan_in)` and biases 0 (the spec's encoder rule, §3).
/// Parameters `layers.{i}.weight` (`[in, out]`) and `layers.{i}.bias`.
#[derive(Clone, Debug)]
pub struct MlpEncoder {
    layers: Vec<Linear>,
}

/// Sizes of an [`MlpEncoder`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MlpEncoderConfig {
    /// Flattened input size (3·32·32 = 3072).
    pub in_dim: usize,
    /// Hidden layer sizes.
    pub hidden: Vec<usize>,
    /// Embedding size (the probed features).
    pub embed_dim: usize,
}

impl Default for MlpEncoderConfig {
    fn default() -> Self {
        MlpEncoderConfig { in_dim: 3072, hidden: vec![1024], embed_dim: 512 }
    }
}

impl MlpEncoder {
    pub fn new(cfg: &MlpEncoderConfig, rng: &mut Rng) -> Result<MlpEncoder> {
        let dims: Vec<usize> =
            std::iter::once(cfg.in_dim).chain(cfg.hidden.iter().copied()).chain([cfg.embed_dim]).collect();
        if dims.contains(&0) {
            return Err(Error::InvalidArgument { op: "MlpEncoder::new", message: format!("zero size in {dims:?}") });
        }
        let layers = dims
            .windows(2)
            .map(|w| {
                let weight = init::kaiming_normal([w[0], w[1]], w[0], 2f32.sqrt(), rng);
                Linear::from_tensors(weight, Some(Tensor::zeros([w[1]])))
            })
            .collect::<Result<_>>()?;
        Ok(MlpEncoder { layers })
    }
    pub fn embed_dim(&self) -> usize {
        self.layers.last().map_or(0, |l| l.out_features())
    }
    pub fn in_dim(&self) -> usize {
        self.layers[0].in_features()
    }
    /// `x` of shape `[B, ..]` with `in_dim` values per example → `[B, embed_dim]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let b = x.shape().first().copied().unwrap_or(0);
        let mut h = x.reshape(&[b, usize::MAX])?;
        for l in &self.layers {
            h = l.forward(&h)?.relu();
        }
        Ok(h)
    }
}

impl Module for MlpEncoder {
    fn params(&self) -> Vec<(String, &Tensor)> {
        self.layers.iter().enumerate().flat_map(|(i, l)| prefixed(format!("layers.{i}"), l.params())).collect()
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        self.layers.iter_mut().enumerate().flat_map(|(i, l)| prefixed(format!("layers.{i}"), l.params_mut())).collect()
    }
}

/// Which encoder a [`DinoModel`] uses.
#[derive(Clone, Debug, PartialEq)]
pub enum EncoderConfig {
    Mlp(MlpEncoderConfig),
    Vit(VitConfig),
}

impl EncoderConfig {
    /// `"mlp"` or `"vit"`.
    pub fn name(&self) -> &'static str {
        match self {
            EncoderConfig::Mlp(_) => "mlp",
            EncoderConfig::Vit(_) => "vit",
        }
    }
    pub fn embed_dim(&self) -> usize {
        match self {
            EncoderConfig::Mlp(c) => c.embed_dim,
            EncoderConfig::Vit(c) => c.dim,
        }
    }
}

/// An encoder of either kind.
#[derive(Clone, Debug)]
pub enum Encoder {
    Mlp(MlpEncoder),
    Vit(Box<Vit>),
}

impl Encoder {
    pub fn new(cfg: &EncoderConfig, rng: &mut Rng) -> Result<Encoder> {
        Ok(match cfg {
            EncoderConfig::Mlp(c) => Encoder::Mlp(MlpEncoder::new(c, rng)?),
            EncoderConfig::Vit(c) => Encoder::Vit(Box::new(Vit::new(c, rng)?)),
        })
    }
    /// Images `[B, C, H, W]` → embeddings `[B, E]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Encoder::Mlp(m) => m.forward(x),
            Encoder::Vit(v) => v.forward(x),
        }
    }
    pub fn embed_dim(&self) -> usize {
        match self {
            Encoder::Mlp(m) => m.embed_dim(),
            Encoder::Vit(v) => v.config().dim,
        }
    }
}

impl Module for Encoder {
    fn params(&self) -> Vec<(String, &Tensor)> {
        match self {
            Encoder::Mlp(m) => m.params(),
            Encoder::Vit(v) => v.params(),
        }
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        match self {
            Encoder::Mlp(m) => m.params_mut(),
            Encoder::Vit(v) => v.params_mut(),
        }
    }
}

/// `f = h ∘ g`: encoder then DINO head. Parameters `encoder.*` and `head.*`.
#[derive(Clone, Debug)]
pub struct DinoModel {
    pub encoder: Encoder,
    pub head: DinoHead,
}

impl DinoModel {
    /// Encoder first, then head, both drawn from `rng` (an explicit generator per
    /// model, so teacher and student get distinct seeds).
    pub fn new(encoder: &EncoderConfig, head: &HeadConfig, rng: &mut Rng) -> Result<DinoModel> {
        let enc = Encoder::new(encoder, rng)?;
        if head.in_dim != enc.embed_dim() {
            return Err(Error::InvalidArgument {
                op: "DinoModel::new",
                message: format!("head input {} differs from the embedding size {}", head.in_dim, enc.embed_dim()),
            });
        }
        Ok(DinoModel { encoder: enc, head: DinoHead::new(head, rng)? })
    }
    /// Images → logits `[B, m]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.head.forward(&self.encoder.forward(x)?)
    }
    /// Images → embeddings `[B, E]` (the probed features).
    pub fn embed(&self, x: &Tensor) -> Result<Tensor> {
        self.encoder.forward(x)
    }
    /// Images → unit-norm bottleneck outputs `[B, bottleneck]` (what the teacher cache
    /// stores).
    pub fn bottleneck(&self, x: &Tensor) -> Result<Tensor> {
        self.head.bottleneck(&self.encoder.forward(x)?)
    }
}

impl Module for DinoModel {
    fn params(&self) -> Vec<(String, &Tensor)> {
        prefixed("encoder", self.encoder.params()).chain(prefixed("head", self.head.params())).collect()
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        prefixed("encoder", self.encoder.params_mut()).chain(prefixed("head", self.head.params_mut())).collect()
    }
}
