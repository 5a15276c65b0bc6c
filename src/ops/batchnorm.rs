//! Batch normalisation over the channels of NCHW tensors (PyTorch's `BatchNorm2d`
//! arithmetic; the running statistics live in the module, [`crate::dino::conv`]).
//!
//! ```text
//! train:  μ_c, σ²_c = mean and biased variance of x[:, c, :, :]     (f64, two passes)
//! eval:   μ_c, σ²_c = the given running statistics
//! x̂ = (x − μ_c) · r_c,  r_c = 1/√(σ²_c + eps),   y = γ_c · x̂ + β_c
//! ```
//!
//! Backward (N = B·H·W values per channel):
//!
//! ```text
//! dβ_c = Σ dy,   dγ_c = Σ dy · x̂
//! train: dx = γ_c r_c / N · (N·dy − dβ_c − x̂ · dγ_c)    (μ and σ² depend on x)
//! eval:  dx = γ_c r_c · dy                              (statistics are constants)
//! ```
//!
//! Train mode also returns the batch mean and the **unbiased** variance for the
//! running-statistics update. Channel sums run per channel in a fixed order and the
//! elementwise passes over fixed chunks of planes: thread-count independent.

use crate::autograd::Backward;
use crate::error::{Error, Result};
use crate::shape::Shape;
use crate::tensor::Tensor;
use rayon::prelude::*;

/// Which statistics normalise.
#[derive(Clone, Copy, Debug)]
pub enum BnMode<'a> {
    /// Batch statistics (gradient flows through them).
    Train,
    /// Fixed running statistics (`mean`, `var`, one per channel).
    Eval { mean: &'a [f32], var: &'a [f32] },
}

/// Batch statistics of a train-mode pass, for the running averages.
#[derive(Clone, Debug, PartialEq)]
pub struct BnBatchStats {
    pub mean: Vec<f32>,
    /// Unbiased (N − 1) variance; equal to the biased one when N = 1.
    pub var_unbiased: Vec<f32>,
}

/// Per channel `f(plane values)` summed over the batch in f64, channels in parallel.
fn channel_sums(b: usize, c: usize, hw: usize, f: impl Fn(usize, usize) -> f64 + Sync) -> Vec<f64> {
    let one = |ch: usize| (0..b).map(|bi| f(bi * c + ch, ch)).sum::<f64>();
    if b * c * hw >= crate::cpu::par::ELEMWISE_MIN && crate::cpu::par::threads() > 1 {
        (0..c).into_par_iter().map(one).collect()
    } else {
        (0..c).map(one).collect()
    }
}

/// `out[plane] = f(plane index, channel, out plane)` over fixed chunks of planes.
fn for_planes(out: &mut [f32], c: usize, hw: usize, f: impl Fn(usize, usize, &mut [f32]) + Sync + Send) {
    if hw == 0 {
        return;
    }
    let rows = crate::cpu::par::rows_for(hw, crate::cpu::par::ELEMWISE_CHUNK);
    crate::cpu::par::for_row_chunks_mut(out, hw, rows, crate::cpu::par::ELEMWISE_MIN, |p0, chunk| {
        for (i, plane) in chunk.chunks_exact_mut(hw).enumerate() {
            f(p0 + i, (p0 + i) % c, plane);
        }
    });
}

struct BatchNorm2dBackward {
    /// Normalised input x̂.
    xhat: Tensor,
    /// `γ_c · r_c` per channel.
    scale: Vec<f32>,
    train: bool,
    dims: [usize; 4],
}

impl Backward for BatchNorm2dBackward {
    fn name(&self) -> &'static str {
        "batch_norm2d"
    }
    fn backward(&self, g: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let [b, c, h, w] = self.dims;
        let hw = h * w;
        let g = g.contiguous_data();
        let xh = self.xhat.contiguous_data();
        let plane = |p: usize| p * hw..(p + 1) * hw;
        let dbeta = channel_sums(b, c, hw, |p, _| g[plane(p)].iter().map(|&v| v as f64).sum());
        let dgamma = channel_sums(b, c, hw, |p, _| {
            g[plane(p)].iter().zip(&xh[plane(p)]).map(|(&a, &x)| a as f64 * x as f64).sum()
        });
        let dx = needs[0].then(|| {
            let mut dx = crate::storage::buffer(g.len());
            let n = (b * hw) as f64;
            for_planes(&mut dx, c, hw, |p, ch, out| {
                let (gp, xp) = (&g[plane(p)], &xh[plane(p)]);
                let s = self.scale[ch];
                if self.train {
                    let (mb, mg) = ((dbeta[ch] / n) as f32, (dgamma[ch] / n) as f32);
                    for ((o, &gv), &xv) in out.iter_mut().zip(gp).zip(xp) {
                        *o = s * (gv - mb - xv * mg);
                    }
                } else {
                    for (o, &gv) in out.iter_mut().zip(gp) {
                        *o = s * gv;
                    }
                }
            });
            Tensor::from_parts(dx, Shape::new(self.dims))
        });
        let vec_of = |v: Vec<f64>| Tensor::from_parts(v.into_iter().map(|x| x as f32).collect(), Shape::new([c]));
        Ok(vec![dx, needs[1].then(|| vec_of(dgamma)), needs[2].then(|| vec_of(dbeta))])
    }
}

impl Tensor {
    /// Batch normalisation of `[B, C, H, W]` with affine `gamma`, `beta` (`[C]`) and
    /// `eps`; returns the output and, in train mode, the batch statistics. See the
    /// module docs.
    pub fn batch_norm2d(
        &self,
        gamma: &Tensor,
        beta: &Tensor,
        mode: BnMode,
        eps: f32,
    ) -> Result<(Tensor, Option<BnBatchStats>)> {
        let _p = crate::profile::fwd("batch_norm2d");
        const OP: &str = "batch_norm2d";
        let &[b, c, h, w] = self.shape() else {
            return Err(Error::InvalidArgument {
                op: OP,
                message: format!("input must be [B, C, H, W], got {}", self.shape_obj()),
            });
        };
        for (what, t) in [("gamma", gamma.shape()), ("beta", beta.shape())] {
            if t != [c] {
                return Err(Error::ShapeMismatch {
                    op: if what == "gamma" { "batch_norm2d (gamma vs [C])" } else { "batch_norm2d (beta vs [C])" },
                    lhs: Shape::from(t),
                    rhs: Shape::new([c]),
                });
            }
        }
        let hw = h * w;
        let n = b * hw;
        if let BnMode::Eval { mean, var } = mode
            && (mean.len() != c || var.len() != c)
        {
            return Err(Error::InvalidArgument {
                op: OP,
                message: format!("running statistics have {} and {} entries for {c} channels", mean.len(), var.len()),
            });
        }
        if matches!(mode, BnMode::Train) && n == 0 {
            return Err(Error::InvalidArgument {
                op: OP,
                message: "train mode needs at least one value per channel".into(),
            });
        }
        let x = self.contiguous_data();
        let plane = |p: usize| p * hw..(p + 1) * hw;
        let (mean, var, stats): (Vec<f64>, Vec<f64>, Option<BnBatchStats>) = match mode {
            BnMode::Train => {
                let mean: Vec<f64> = channel_sums(b, c, hw, |p, _| x[plane(p)].iter().map(|&v| v as f64).sum())
                    .into_iter()
                    .map(|s| s / n as f64)
                    .collect();
                let ss =
                    channel_sums(b, c, hw, |p, ch| x[plane(p)].iter().map(|&v| (v as f64 - mean[ch]).powi(2)).sum());
                let var: Vec<f64> = ss.iter().map(|s| s / n as f64).collect();
                let unbiased = ss.iter().map(|s| (s / (n.max(2) - 1) as f64) as f32).collect();
                let stats = BnBatchStats { mean: mean.iter().map(|&m| m as f32).collect(), var_unbiased: unbiased };
                (mean, var, Some(stats))
            }
            BnMode::Eval { mean, var } => {
                (mean.iter().map(|&v| v as f64).collect(), var.iter().map(|&v| v as f64).collect(), None)
            }
        };
        let rstd: Vec<f32> = var.iter().map(|&v| (1.0 / (v + eps as f64).sqrt()) as f32).collect();
        let mean32: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
        let (gd, bd) = (gamma.contiguous_data(), beta.contiguous_data());
        let mut xhat = crate::storage::buffer(x.len());
        for_planes(&mut xhat, c, hw, |p, ch, out| {
            let (m, r) = (mean32[ch], rstd[ch]);
            for (o, &v) in out.iter_mut().zip(&x[plane(p)]) {
                *o = (v - m) * r;
            }
        });
        let mut y = crate::storage::buffer(x.len());
        for_planes(&mut y, c, hw, |p, ch, out| {
            let (gm, bt) = (gd[ch], bd[ch]);
            for (o, &v) in out.iter_mut().zip(&xhat[plane(p)]) {
                *o = gm.mul_add(v, bt);
            }
        });
        let dims = [b, c, h, w];
        let train = matches!(mode, BnMode::Train);
        let scale: Vec<f32> = gd.iter().zip(&rstd).map(|(g, r)| g * r).collect();
        let out = Tensor::from_op(y, Shape::new(dims), &[self, gamma, beta], || BatchNorm2dBackward {
            xhat: Tensor::from_parts(xhat, Shape::new(dims)),
            scale,
            train,
            dims,
        });
        Ok((out, stats))
    }
}
