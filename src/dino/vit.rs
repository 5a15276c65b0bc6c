//! A standard Vision Transformer encoder (Dosovitskiy et al. 2021):
//!
//! ```text
//! patches  [B, C, H, W] → [B, N, C·p·p]      N = (H/p)(W/p), each patch flattened (c, dy, dx)
//! tokens   = [cls ; patches·W_pe + b_pe] + pos                  [B, N + 1, D]
//! block ×depth:  x = x + MHSA(LN₁(x));  x = x + fc₂(GELU(fc₁(LN₂(x))))     (pre-norm)
//! output   = LN(x)[:, 0]                                        the CLS token, [B, D]
//! ```
//!
//! Attention is [`MultiHeadSelfAttention`] (mixing tokens, unlike the reference's
//! head-mixing, weight-tied ViT, whose rows are out of scope: spec §3, §8.13).
//! Initialisation follows the reference where it is standard: Linear layers keep
//! PyTorch's default `U(±1/√fan_in)` (patch embedding included, as a Conv2d's default),
//! the CLS token and the position embedding are `N(0, 1)`, LayerNorms are (1, 0) with
//! eps 1e-6.

use crate::error::{Error, Result};
use crate::init;
use crate::nn::{LayerNorm, Linear, Module, MultiHeadSelfAttention, prefixed};
use crate::rng::Rng;
use crate::tensor::Tensor;

/// Sizes of a [`Vit`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VitConfig {
    pub image_size: usize,
    pub patch: usize,
    pub in_channels: usize,
    /// Token width D (also the embedding size).
    pub dim: usize,
    pub depth: usize,
    pub heads: usize,
    /// Hidden width of each block's MLP.
    pub mlp_dim: usize,
}

impl Default for VitConfig {
    /// The benchmark ViT: patch 4 on 32×32, dim 192, depth 6, 3 heads, MLP 768.
    fn default() -> Self {
        VitConfig { image_size: 32, patch: 4, in_channels: 3, dim: 192, depth: 6, heads: 3, mlp_dim: 768 }
    }
}

impl VitConfig {
    pub fn num_patches(&self) -> usize {
        (self.image_size / self.patch).pow(2)
    }
}

#[derive(Clone, Debug)]
struct Block {
    norm1: LayerNorm,
    attn: MultiHeadSelfAttention,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

impl Block {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.add(&self.attn.forward(&self.norm1.forward(x)?)?)?;
        let h = self.fc2.forward(&self.fc1.forward(&self.norm2.forward(&x)?)?.gelu())?;
        x.add(&h)
    }
    fn params(&self) -> Vec<(String, &Tensor)> {
        prefixed("norm1", self.norm1.params())
            .chain(prefixed("attn", self.attn.params()))
            .chain(prefixed("norm2", self.norm2.params()))
            .chain(prefixed("mlp.fc1", self.fc1.params()))
            .chain(prefixed("mlp.fc2", self.fc2.params()))
            .collect()
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        prefixed("norm1", self.norm1.params_mut())
            .chain(prefixed("attn", self.attn.params_mut()))
            .chain(prefixed("norm2", self.norm2.params_mut()))
            .chain(prefixed("mlp.fc1", self.fc1.params_mut()))
            .chain(prefixed("mlp.fc2", self.fc2.params_mut()))
            .collect()
    }
}

/// The encoder. Parameters `patch_embed.{weight,bias}`, `cls_token` `[1, 1, D]`,
/// `pos_embed` `[1, N + 1, D]`, `blocks.{i}.{norm1,attn,norm2,mlp.fc1,mlp.fc2}.*`,
/// `norm.{weight,bias}`.
#[derive(Clone, Debug)]
pub struct Vit {
    cfg: VitConfig,
    patch_embed: Linear,
    cls_token: Tensor,
    pos_embed: Tensor,
    blocks: Vec<Block>,
    norm: LayerNorm,
}

const LN_EPS: f32 = 1e-6;

impl Vit {
    pub fn new(cfg: &VitConfig, rng: &mut Rng) -> Result<Vit> {
        let ok = cfg.patch > 0
            && cfg.image_size > 0
            && cfg.image_size.is_multiple_of(cfg.patch)
            && cfg.in_channels > 0
            && cfg.dim > 0
            && cfg.heads > 0
            && cfg.dim.is_multiple_of(cfg.heads)
            && cfg.mlp_dim > 0;
        if !ok {
            return Err(Error::InvalidArgument {
                op: "Vit::new",
                message: format!("need patch | image size, heads | dim and positive sizes, got {cfg:?}"),
            });
        }
        let (d, n) = (cfg.dim, cfg.num_patches());
        let patch_embed = Linear::new(cfg.in_channels * cfg.patch * cfg.patch, d, true, rng);
        let cls_token = init::normal([1, 1, d], 0.0, 1.0, rng).requires_grad_();
        let pos_embed = init::normal([1, n + 1, d], 0.0, 1.0, rng).requires_grad_();
        let mut blocks = Vec::with_capacity(cfg.depth);
        for _ in 0..cfg.depth {
            blocks.push(Block {
                norm1: LayerNorm::new(d, LN_EPS, true),
                attn: MultiHeadSelfAttention::new(d, cfg.heads, false, rng)?,
                norm2: LayerNorm::new(d, LN_EPS, true),
                fc1: Linear::new(d, cfg.mlp_dim, true, rng),
                fc2: Linear::new(cfg.mlp_dim, d, true, rng),
            });
        }
        Ok(Vit { cfg: cfg.clone(), patch_embed, cls_token, pos_embed, blocks, norm: LayerNorm::new(d, LN_EPS, true) })
    }
    pub fn config(&self) -> &VitConfig {
        &self.cfg
    }

    /// `[B, C, H, W]` → `[B, N, C·p·p]`, patches in row-major order, each flattened
    /// channel-major (as a Conv2d with kernel = stride = p sees it).
    pub fn patchify(&self, x: &Tensor) -> Result<Tensor> {
        let (c, s, p) = (self.cfg.in_channels, self.cfg.image_size, self.cfg.patch);
        if x.rank() != 4 || x.shape()[1..] != [c, s, s] {
            return Err(Error::ShapeMismatch {
                op: "vit patchify (input vs [B, C, H, W])",
                lhs: x.shape_obj().clone(),
                rhs: [x.shape().first().copied().unwrap_or(1), c, s, s].into(),
            });
        }
        let (b, g) = (x.shape()[0], s / p);
        x.reshape(&[b, c, g, p, g, p])?.permute(&[0, 2, 4, 1, 3, 5])?.reshape(&[b, g * g, c * p * p])
    }

    /// Images `[B, C, H, W]` → CLS embeddings `[B, D]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let b = x.shape().first().copied().unwrap_or(0);
        let d = self.cfg.dim;
        let patches = self.patch_embed.forward(&self.patchify(x)?)?;
        let cls = self.cls_token.broadcast_to(&[b, 1, d])?;
        let mut h = Tensor::concat(&[&cls, &patches], 1)?.add(&self.pos_embed)?;
        for blk in &self.blocks {
            h = blk.forward(&h)?;
        }
        self.norm.forward(&h.narrow(1, 0, 1)?.reshape(&[b, d])?)
    }
}

impl Module for Vit {
    fn params(&self) -> Vec<(String, &Tensor)> {
        let mut v: Vec<(String, &Tensor)> = prefixed("patch_embed", self.patch_embed.params()).collect();
        v.push(("cls_token".to_string(), &self.cls_token));
        v.push(("pos_embed".to_string(), &self.pos_embed));
        for (i, blk) in self.blocks.iter().enumerate() {
            v.extend(prefixed(format!("blocks.{i}"), blk.params()));
        }
        v.extend(prefixed("norm", self.norm.params()));
        v
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        let mut v: Vec<(String, &mut Tensor)> = prefixed("patch_embed", self.patch_embed.params_mut()).collect();
        v.push(("cls_token".to_string(), &mut self.cls_token));
        v.push(("pos_embed".to_string(), &mut self.pos_embed));
        for (i, blk) in self.blocks.iter_mut().enumerate() {
            v.extend(prefixed(format!("blocks.{i}"), blk.params_mut()));
        }
        v.extend(prefixed("norm", self.norm.params_mut()));
        v
    }
}
