//! Convolutional encoders of the random-teacher paper (spec §3): VGG11 without batch
//! norm and ResNet18 with the CIFAR stem, both on NCHW 3×32×32 images, with a width
//! multiplier for quick runs (every channel count `c` becomes `max(1, round(c·mult))`).
//!
//! * **VGG11** (torchvision list "A"): `[64, M, 128, M, 256, 256, M, 512, 512, M, 512,
//!   512, M]`, each number a 3×3 conv (pad 1, bias) + ReLU, `M` a 2×2 max-pool; the
//!   embedding is the flattened 1×1×512 map. 9,220,480 parameters at width 1.
//! * **ResNet18** ("tiny input"): conv 3×3 (3→64, no bias) + BN + ReLU, no max-pool,
//!   BasicBlocks `[2, 2, 2, 2]` of widths 64/128/256/512 (stride 2 in the first block of
//!   stages 2–4, 1×1 conv + BN shortcut where the shape changes), global average pool:
//!   512 features. 11,168,832 parameters at width 1.
//!
//! Init: conv weights Kaiming-normal fan-out `N(0, 2/(C_out·k²))`, conv biases 0, BN
//! γ = 1, β = 0 (the last BN of a block is not zero-initialised). Parameter names follow
//! torchvision (`features.3.weight`, `layer2.0.downsample.1.bias`, ...).
//!
//! [`BatchNorm2d`] keeps running statistics (momentum 0.1, unbiased batch variance,
//! eps 1e-5). Modules start in eval mode: the frozen teacher normalises with its initial
//! statistics (0, 1), i.e. ≈ identity (spec §8.2); the student is switched to train mode
//! (`Module::train(true)`) for its distillation forward pass only.

use crate::error::{Error, Result};
use crate::init;
use crate::nn::{Module, prefixed};
use crate::ops::batchnorm::BnMode;
use crate::rng::Rng;
use crate::tensor::Tensor;
use std::sync::Mutex;

/// `max(1, round(c·mult))`.
pub fn scaled(c: usize, mult: f64) -> usize {
    ((c as f64 * mult).round() as usize).max(1)
}

/// A conv layer: weight `[O, C, k, k]`, optional bias, stride and padding.
#[derive(Clone, Debug)]
pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub stride: usize,
    pub pad: usize,
}

impl Conv2d {
    /// Kaiming-normal fan-out weights (ReLU gain), zero bias.
    pub fn new(c_in: usize, c_out: usize, k: usize, stride: usize, pad: usize, bias: bool, rng: &mut Rng) -> Conv2d {
        let weight = init::kaiming_normal([c_out, c_in, k, k], c_out * k * k, 2f32.sqrt(), rng).requires_grad_();
        Conv2d { weight, bias: bias.then(|| Tensor::zeros([c_out]).requires_grad_()), stride, pad }
    }
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.conv2d(&self.weight, self.bias.as_ref(), self.stride, self.pad)
    }
}

impl Module for Conv2d {
    fn params(&self) -> Vec<(String, &Tensor)> {
        let mut v = vec![("weight".to_string(), &self.weight)];
        if let Some(b) = &self.bias {
            v.push(("bias".to_string(), b));
        }
        v
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        let mut v = vec![("weight".to_string(), &mut self.weight)];
        if let Some(b) = &mut self.bias {
            v.push(("bias".to_string(), b));
        }
        v
    }
}

/// Batch normalisation over channels with running statistics (see the module docs).
#[derive(Debug)]
pub struct BatchNorm2d {
    pub weight: Tensor,
    pub bias: Tensor,
    /// (running mean, running variance), updated by train-mode forward passes.
    running: Mutex<(Vec<f32>, Vec<f32>)>,
    pub momentum: f32,
    pub eps: f32,
    training: bool,
}

impl Clone for BatchNorm2d {
    fn clone(&self) -> Self {
        BatchNorm2d {
            weight: self.weight.clone(),
            bias: self.bias.clone(),
            running: Mutex::new(self.running_stats()),
            momentum: self.momentum,
            eps: self.eps,
            training: self.training,
        }
    }
}

impl BatchNorm2d {
    /// γ = 1, β = 0, running statistics (0, 1), momentum 0.1, eps 1e-5, eval mode.
    pub fn new(c: usize) -> BatchNorm2d {
        BatchNorm2d {
            weight: Tensor::ones([c]).requires_grad_(),
            bias: Tensor::zeros([c]).requires_grad_(),
            running: Mutex::new((vec![0.0; c], vec![1.0; c])),
            momentum: 0.1,
            eps: 1e-5,
            training: false,
        }
    }
    /// (running mean, running variance).
    pub fn running_stats(&self) -> (Vec<f32>, Vec<f32>) {
        self.running.lock().expect("running statistics lock").clone()
    }
    pub fn set_running_stats(&self, mean: Vec<f32>, var: Vec<f32>) -> Result<()> {
        let c = self.weight.numel();
        if mean.len() != c || var.len() != c {
            return Err(Error::InvalidArgument {
                op: "BatchNorm2d::set_running_stats",
                message: format!("{} and {} values for {c} channels", mean.len(), var.len()),
            });
        }
        *self.running.lock().expect("running statistics lock") = (mean, var);
        Ok(())
    }
    pub fn is_training(&self) -> bool {
        self.training
    }
    /// Train mode: batch statistics, and the running statistics move towards them.
    /// Eval mode: the running statistics.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.training {
            let (y, stats) = x.batch_norm2d(&self.weight, &self.bias, BnMode::Train, self.eps)?;
            if let Some(s) = stats {
                let m = self.momentum;
                let mut r = self.running.lock().expect("running statistics lock");
                r.0.iter_mut().zip(&s.mean).for_each(|(a, b)| *a = (1.0 - m) * *a + m * b);
                r.1.iter_mut().zip(&s.var_unbiased).for_each(|(a, b)| *a = (1.0 - m) * *a + m * b);
            }
            Ok(y)
        } else {
            let (mean, var) = self.running_stats();
            Ok(x.batch_norm2d(&self.weight, &self.bias, BnMode::Eval { mean: &mean, var: &var }, self.eps)?.0)
        }
    }
}

impl Module for BatchNorm2d {
    fn params(&self) -> Vec<(String, &Tensor)> {
        vec![("weight".to_string(), &self.weight), ("bias".to_string(), &self.bias)]
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        vec![("weight".to_string(), &mut self.weight), ("bias".to_string(), &mut self.bias)]
    }
    fn train(&mut self, training: bool) {
        self.training = training;
    }
}

/// Sizes of a convolutional encoder.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConvNetConfig {
    /// Channel multiplier (1 = the paper's network).
    pub width_mult: f64,
}

impl Default for ConvNetConfig {
    fn default() -> Self {
        ConvNetConfig { width_mult: 1.0 }
    }
}

impl ConvNetConfig {
    pub fn validate(&self, op: &'static str) -> Result<()> {
        if !(self.width_mult.is_finite() && self.width_mult > 0.0) {
            return Err(Error::InvalidArgument {
                op,
                message: format!("width_mult must be > 0, got {}", self.width_mult),
            });
        }
        Ok(())
    }
    /// Embedding size: the last stage's 512 channels, scaled.
    pub fn embed_dim(&self) -> usize {
        scaled(512, self.width_mult)
    }
}

/// The VGG11 layer list "A" (0 = max-pool).
pub const VGG11_CFG: [usize; 13] = [64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0];

fn check_image(op: &'static str, x: &Tensor, size: Option<usize>) -> Result<()> {
    let ok = x.rank() == 4 && x.shape()[1] == 3 && size.is_none_or(|s| x.shape()[2] == s && x.shape()[3] == s);
    if !ok {
        let s = size.unwrap_or(32);
        return Err(Error::ShapeMismatch {
            op,
            lhs: x.shape_obj().clone(),
            rhs: [x.shape().first().copied().unwrap_or(1), 3, s, s].into(),
        });
    }
    Ok(())
}

/// VGG11 without batch norm. Parameters `features.{i}.{weight,bias}` with torchvision's
/// indices (conv, ReLU and pool layers all count).
#[derive(Clone, Debug)]
pub struct Vgg {
    cfg: ConvNetConfig,
    /// (torchvision index, conv) per conv; pools are implied by the list.
    convs: Vec<(usize, Conv2d)>,
}

impl Vgg {
    pub fn new(cfg: &ConvNetConfig, rng: &mut Rng) -> Result<Vgg> {
        cfg.validate("Vgg::new")?;
        let (mut convs, mut c_in, mut idx) = (Vec::new(), 3, 0);
        for &v in &VGG11_CFG {
            if v == 0 {
                idx += 1;
            } else {
                let c = scaled(v, cfg.width_mult);
                convs.push((idx, Conv2d::new(c_in, c, 3, 1, 1, true, rng)));
                c_in = c;
                idx += 2;
            }
        }
        Ok(Vgg { cfg: *cfg, convs })
    }
    pub fn config(&self) -> &ConvNetConfig {
        &self.cfg
    }
    /// Images `[B, 3, 32, 32]` → `[B, 512·mult]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        check_image("vgg11 (input vs [B, 3, 32, 32])", x, Some(32))?;
        let mut h = x.clone();
        let mut convs = self.convs.iter();
        for &v in &VGG11_CFG {
            h = if v == 0 {
                h.max_pool2d(2, 2)?
            } else {
                convs.next().expect("one conv per entry").1.forward(&h)?.relu()
            };
        }
        h.flatten()
    }
}

impl Module for Vgg {
    fn params(&self) -> Vec<(String, &Tensor)> {
        self.convs.iter().flat_map(|(i, c)| prefixed(format!("features.{i}"), c.params())).collect()
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        self.convs.iter_mut().flat_map(|(i, c)| prefixed(format!("features.{i}"), c.params_mut())).collect()
    }
}

/// A ResNet BasicBlock: `relu(bn2(conv2(relu(bn1(conv1 x)))) + shortcut(x))`.
#[derive(Clone, Debug)]
struct BasicBlock {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    conv2: Conv2d,
    bn2: BatchNorm2d,
    downsample: Option<(Conv2d, BatchNorm2d)>,
}

impl BasicBlock {
    fn new(c_in: usize, c_out: usize, stride: usize, rng: &mut Rng) -> BasicBlock {
        let conv1 = Conv2d::new(c_in, c_out, 3, stride, 1, false, rng);
        let conv2 = Conv2d::new(c_out, c_out, 3, 1, 1, false, rng);
        let downsample = (stride != 1 || c_in != c_out)
            .then(|| (Conv2d::new(c_in, c_out, 1, stride, 0, false, rng), BatchNorm2d::new(c_out)));
        BasicBlock { conv1, bn1: BatchNorm2d::new(c_out), conv2, bn2: BatchNorm2d::new(c_out), downsample }
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.bn1.forward(&self.conv1.forward(x)?)?.relu();
        let h = self.bn2.forward(&self.conv2.forward(&h)?)?;
        let short = match &self.downsample {
            Some((c, bn)) => bn.forward(&c.forward(x)?)?,
            None => x.clone(),
        };
        Ok(h.add(&short)?.relu())
    }
    fn norms(&self) -> Vec<(String, &BatchNorm2d)> {
        let mut v = vec![("bn1".to_string(), &self.bn1), ("bn2".to_string(), &self.bn2)];
        if let Some((_, bn)) = &self.downsample {
            v.push(("downsample.1".to_string(), bn));
        }
        v
    }
}

impl Module for BasicBlock {
    fn params(&self) -> Vec<(String, &Tensor)> {
        let mut v: Vec<(String, &Tensor)> = prefixed("conv1", self.conv1.params())
            .chain(prefixed("bn1", self.bn1.params()))
            .chain(prefixed("conv2", self.conv2.params()))
            .chain(prefixed("bn2", self.bn2.params()))
            .collect();
        if let Some((c, bn)) = &self.downsample {
            v.extend(prefixed("downsample.0", c.params()).chain(prefixed("downsample.1", bn.params())));
        }
        v
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        let mut v: Vec<(String, &mut Tensor)> = prefixed("conv1", self.conv1.params_mut())
            .chain(prefixed("bn1", self.bn1.params_mut()))
            .chain(prefixed("conv2", self.conv2.params_mut()))
            .chain(prefixed("bn2", self.bn2.params_mut()))
            .collect();
        if let Some((c, bn)) = &mut self.downsample {
            v.extend(prefixed("downsample.0", c.params_mut()).chain(prefixed("downsample.1", bn.params_mut())));
        }
        v
    }
    fn train(&mut self, training: bool) {
        self.bn1.train(training);
        self.bn2.train(training);
        if let Some((_, bn)) = &mut self.downsample {
            bn.train(training);
        }
    }
}

/// ResNet18 with the CIFAR stem. Parameters `conv1.weight`, `bn1.*`,
/// `layer{1..4}.{0,1}.{conv1,bn1,conv2,bn2,downsample.0,downsample.1}.*`.
#[derive(Clone, Debug)]
pub struct ResNet {
    cfg: ConvNetConfig,
    conv1: Conv2d,
    bn1: BatchNorm2d,
    /// `layers[stage][block]`.
    layers: Vec<Vec<BasicBlock>>,
}

impl ResNet {
    pub fn new(cfg: &ConvNetConfig, rng: &mut Rng) -> Result<ResNet> {
        cfg.validate("ResNet::new")?;
        let widths: Vec<usize> = [64, 128, 256, 512].iter().map(|&c| scaled(c, cfg.width_mult)).collect();
        let conv1 = Conv2d::new(3, widths[0], 3, 1, 1, false, rng);
        let mut c_in = widths[0];
        let mut layers = Vec::new();
        for (s, &w) in widths.iter().enumerate() {
            let stride = if s == 0 { 1 } else { 2 };
            let blocks = vec![BasicBlock::new(c_in, w, stride, rng), BasicBlock::new(w, w, 1, rng)];
            c_in = w;
            layers.push(blocks);
        }
        Ok(ResNet { cfg: *cfg, conv1, bn1: BatchNorm2d::new(widths[0]), layers })
    }
    pub fn config(&self) -> &ConvNetConfig {
        &self.cfg
    }
    /// Images `[B, 3, H, W]` → `[B, 512·mult]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        check_image("resnet18 (input vs [B, 3, H, W])", x, None)?;
        let mut h = self.bn1.forward(&self.conv1.forward(x)?)?.relu();
        for blk in self.layers.iter().flatten() {
            h = blk.forward(&h)?;
        }
        h.global_avg_pool2d()
    }
    /// Every BatchNorm2d with its dotted name.
    pub fn norms(&self) -> Vec<(String, &BatchNorm2d)> {
        let mut v = vec![("bn1".to_string(), &self.bn1)];
        for (s, blocks) in self.layers.iter().enumerate() {
            for (b, blk) in blocks.iter().enumerate() {
                v.extend(prefixed(format!("layer{}.{b}", s + 1), blk.norms()));
            }
        }
        v
    }
}

impl Module for ResNet {
    fn params(&self) -> Vec<(String, &Tensor)> {
        let mut v: Vec<(String, &Tensor)> =
            prefixed("conv1", self.conv1.params()).chain(prefixed("bn1", self.bn1.params())).collect();
        for (s, blocks) in self.layers.iter().enumerate() {
            for (b, blk) in blocks.iter().enumerate() {
                v.extend(prefixed(format!("layer{}.{b}", s + 1), blk.params()));
            }
        }
        v
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        let mut v: Vec<(String, &mut Tensor)> =
            prefixed("conv1", self.conv1.params_mut()).chain(prefixed("bn1", self.bn1.params_mut())).collect();
        for (s, blocks) in self.layers.iter_mut().enumerate() {
            for (b, blk) in blocks.iter_mut().enumerate() {
                v.extend(prefixed(format!("layer{}.{b}", s + 1), blk.params_mut()));
            }
        }
        v
    }
    fn train(&mut self, training: bool) {
        self.bn1.train(training);
        self.layers.iter_mut().flatten().for_each(|b| b.train(training));
    }
}
