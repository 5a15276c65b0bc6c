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

pub mod conv;
pub mod head;
pub mod method;
pub mod probes;
pub mod vit;

pub use conv::{ConvNetConfig, ResNet, Vgg};
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
    Vgg11(ConvNetConfig),
    ResNet18(ConvNetConfig),
}

impl EncoderConfig {
    /// `"mlp"`, `"vit"`, `"vgg11"` or `"resnet18"`.
    pub fn name(&self) -> &'static str {
        match self {
            EncoderConfig::Mlp(_) => "mlp",
            EncoderConfig::Vit(_) => "vit",
            EncoderConfig::Vgg11(_) => "vgg11",
            EncoderConfig::ResNet18(_) => "resnet18",
        }
    }
    pub fn embed_dim(&self) -> usize {
        match self {
            EncoderConfig::Mlp(c) => c.embed_dim,
            EncoderConfig::Vit(c) => c.dim,
            EncoderConfig::Vgg11(c) | EncoderConfig::ResNet18(c) => c.embed_dim(),
        }
    }
}

/// An encoder of either kind.
#[derive(Clone, Debug)]
pub enum Encoder {
    Mlp(MlpEncoder),
    Vit(Box<Vit>),
    Vgg(Box<Vgg>),
    ResNet(Box<ResNet>),
}

impl Encoder {
    pub fn new(cfg: &EncoderConfig, rng: &mut Rng) -> Result<Encoder> {
        Ok(match cfg {
            EncoderConfig::Mlp(c) => Encoder::Mlp(MlpEncoder::new(c, rng)?),
            EncoderConfig::Vit(c) => Encoder::Vit(Box::new(Vit::new(c, rng)?)),
            EncoderConfig::Vgg11(c) => Encoder::Vgg(Box::new(Vgg::new(c, rng)?)),
            EncoderConfig::ResNet18(c) => Encoder::ResNet(Box::new(ResNet::new(c, rng)?)),
        })
    }
    /// Images `[B, C, H, W]` → embeddings `[B, E]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Encoder::Mlp(m) => m.forward(x),
            Encoder::Vit(v) => v.forward(x),
            Encoder::Vgg(v) => v.forward(x),
            Encoder::ResNet(r) => r.forward(x),
        }
    }
    pub fn embed_dim(&self) -> usize {
        match self {
            Encoder::Mlp(m) => m.embed_dim(),
            Encoder::Vit(v) => v.config().dim,
            Encoder::Vgg(v) => v.config().embed_dim(),
            Encoder::ResNet(r) => r.config().embed_dim(),
        }
    }
    /// Non-trainable state (BatchNorm running statistics) as named tensors:
    /// `{bn}.running_mean`, `{bn}.running_var`. Empty for encoders without BN.
    pub fn buffers(&self) -> Vec<(String, Tensor)> {
        let Encoder::ResNet(r) = self else { return Vec::new() };
        let mut v = Vec::new();
        for (name, bn) in r.norms() {
            let (m, var) = bn.running_stats();
            let c = m.len();
            v.push((format!("{name}.running_mean"), Tensor::from_parts(m, [c].into())));
            v.push((format!("{name}.running_var"), Tensor::from_parts(var, [c].into())));
        }
        v
    }
    /// Restore [`Encoder::buffers`] by name (`get` returns the saved values).
    pub fn load_buffers(&self, get: &dyn Fn(&str) -> Option<Vec<f32>>) -> Result<()> {
        let Encoder::ResNet(r) = self else { return Ok(()) };
        for (name, bn) in r.norms() {
            let (m, v) = (get(&format!("{name}.running_mean")), get(&format!("{name}.running_var")));
            let (Some(m), Some(v)) = (m, v) else {
                return Err(Error::InvalidArgument {
                    op: "Encoder::load_buffers",
                    message: format!("no running statistics for {name}"),
                });
            };
            bn.set_running_stats(m, v)?;
        }
        Ok(())
    }
}

impl Module for Encoder {
    fn params(&self) -> Vec<(String, &Tensor)> {
        match self {
            Encoder::Mlp(m) => m.params(),
            Encoder::Vit(v) => v.params(),
            Encoder::Vgg(v) => v.params(),
            Encoder::ResNet(r) => r.params(),
        }
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        match self {
            Encoder::Mlp(m) => m.params_mut(),
            Encoder::Vit(v) => v.params_mut(),
            Encoder::Vgg(v) => v.params_mut(),
            Encoder::ResNet(r) => r.params_mut(),
        }
    }
    fn train(&mut self, training: bool) {
        if let Encoder::ResNet(r) = self {
            r.train(training);
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
    /// Train mode switches the encoder's BatchNorms to batch statistics (the head has
    /// none).
    fn train(&mut self, training: bool) {
        self.encoder.train(training);
    }
}
