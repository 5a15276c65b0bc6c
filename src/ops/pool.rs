//! Pooling over NCHW tensors.
//!
//! * `max_pool2d(k, s)`: `y[b, c, i, j] = max_{p,q<k} x[b, c, i·s + p, j·s + q]` (no
//!   padding, floor mode). The backward sends each output's gradient to the position of
//!   its maximum (the first one in row-major window order on ties, as PyTorch).
//! * `avg_pool2d(k, s)`: the window mean (no padding, floor mode); backward spreads
//!   `g / k²` over each window.
//! * `global_avg_pool2d()`: `[B, C, H, W] → [B, C]`, the mean over `H, W` (adaptive
//!   average pooling to 1×1 followed by flatten).
//!
//! Planes (`b, c`) are split over fixed chunks, so results do not depend on the thread
//! count.

use crate::autograd::Backward;
use crate::error::{Error, Result};
use crate::shape::Shape;
use crate::tensor::Tensor;

/// Sizes of a max pooling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolSpec {
    /// Planes: batch × channels.
    pub planes: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub stride: usize,
}

impl PoolSpec {
    pub fn h_out(&self) -> usize {
        (self.h - self.k) / self.stride + 1
    }
    pub fn w_out(&self) -> usize {
        (self.w - self.k) / self.stride + 1
    }
}

/// Flat in-plane index of the maximum of window `(i, j)` of plane `xp` (the first in
/// row-major window order on ties; a NaN wins).
#[inline(always)]
fn window_argmax(s: &PoolSpec, xp: &[f32], i: usize, j: usize) -> usize {
    if s.k == 2 && s.stride == 2 {
        // The VGG pool: four candidates, unrolled (3-4x faster than the loops below).
        let r0 = 2 * (i * s.w + j);
        let mut at = r0;
        for c in [r0 + 1, r0 + s.w, r0 + s.w + 1] {
            let (v, best) = (xp[c], xp[at]);
            if v > best || (v.is_nan() && !best.is_nan()) {
                at = c;
            }
        }
        return at;
    }
    let (mut best, mut at) = (f32::NEG_INFINITY, usize::MAX);
    for p in 0..s.k {
        let r = (i * s.stride + p) * s.w + j * s.stride;
        for (q, &v) in xp[r..r + s.k].iter().enumerate() {
            if at == usize::MAX || v > best || (v.is_nan() && !best.is_nan()) {
                best = v;
                at = r + q;
            }
        }
    }
    at
}

/// `y[plane, i, j] = f(x plane, i, j)` over fixed chunks of planes.
fn pool_forward(s: &PoolSpec, x: &[f32], y: &mut [f32], f: impl Fn(&[f32], usize, usize) -> f32 + Sync + Send) {
    let (ho, wo) = (s.h_out(), s.w_out());
    if ho * wo == 0 {
        return;
    }
    let rows = crate::cpu::par::rows_for(ho * wo, crate::cpu::par::ELEMWISE_CHUNK);
    crate::cpu::par::for_row_chunks_mut(y, ho * wo, rows, crate::cpu::par::ELEMWISE_MIN, |p0, out| {
        for (pi, yp) in out.chunks_exact_mut(ho * wo).enumerate() {
            let xp = &x[(p0 + pi) * s.h * s.w..][..s.h * s.w];
            for (o, yv) in yp.iter_mut().enumerate() {
                *yv = f(xp, o / wo, o % wo);
            }
        }
    });
}

/// `dx` (zeroed, then every output's `f(x plane, dx plane, i, j, g)`) over fixed chunks
/// of planes; `x` may be empty when `f` does not read it.
fn pool_backward(
    s: &PoolSpec,
    g: &[f32],
    x: &[f32],
    dx: &mut [f32],
    f: impl Fn(&[f32], &mut [f32], usize, usize, f32) + Sync + Send,
) {
    let (plane_in, ho, wo) = (s.h * s.w, s.h_out(), s.w_out());
    if plane_in == 0 {
        return;
    }
    let rows = crate::cpu::par::rows_for(plane_in, crate::cpu::par::ELEMWISE_CHUNK);
    crate::cpu::par::for_row_chunks_mut(dx, plane_in, rows, crate::cpu::par::ELEMWISE_MIN, |p0, out| {
        out.fill(0.0);
        for (pi, dp) in out.chunks_exact_mut(plane_in).enumerate() {
            let plane = p0 + pi;
            let xp = x.get(plane * plane_in..(plane + 1) * plane_in).unwrap_or(&[]);
            for (o, &gv) in g[plane * ho * wo..][..ho * wo].iter().enumerate() {
                f(xp, dp, o / wo, o % wo, gv);
            }
        }
    });
}

/// Max-pool forward kernel: `y` (`[planes, H_out, W_out]`) from `x` (`[planes, H, W]`).
pub fn max_pool2d_forward(s: &PoolSpec, x: &[f32], y: &mut [f32]) {
    pool_forward(s, x, y, |xp, i, j| xp[window_argmax(s, xp, i, j)]);
}

/// Max-pool backward kernel: `dx` (every element written) from `g` and the input `x`
/// (the argmax is recomputed: no index buffer is kept between the passes).
pub fn max_pool2d_backward(s: &PoolSpec, g: &[f32], x: &[f32], dx: &mut [f32]) {
    pool_backward(s, g, x, dx, |xp, dp, i, j, gv| dp[window_argmax(s, xp, i, j)] += gv);
}

/// Row offsets of the `k` window rows of output `(i, j)` in a plane.
fn window_rows(s: &PoolSpec, i: usize, j: usize) -> impl Iterator<Item = usize> + '_ {
    (0..s.k).map(move |p| (i * s.stride + p) * s.w + j * s.stride)
}

/// Average-pool forward kernel: `y` (`[planes, H_out, W_out]`) from `x`.
pub fn avg_pool2d_forward(s: &PoolSpec, x: &[f32], y: &mut [f32]) {
    let inv = 1.0 / (s.k * s.k) as f32;
    pool_forward(s, x, y, |xp, i, j| {
        window_rows(s, i, j).map(|r| xp[r..r + s.k].iter().sum::<f32>()).sum::<f32>() * inv
    });
}

/// Average-pool backward kernel: `dx` (every element written) from `g`.
pub fn avg_pool2d_backward(s: &PoolSpec, g: &[f32], dx: &mut [f32]) {
    let inv = 1.0 / (s.k * s.k) as f32;
    pool_backward(s, g, &[], dx, |_, dp, i, j, gv| {
        for r in window_rows(s, i, j) {
            dp[r..r + s.k].iter_mut().for_each(|d| *d += gv * inv);
        }
    });
}

/// Validated spec and output shape of a `k×k`, stride-`stride` pooling of `x`.
fn pool_spec(op: &'static str, x: &Tensor, k: usize, stride: usize) -> Result<(PoolSpec, Shape)> {
    let &[b, c, h, w] = x.shape() else {
        return Err(Error::InvalidArgument {
            op,
            message: format!("input must be [B, C, H, W], got {}", x.shape_obj()),
        });
    };
    if k == 0 || stride == 0 || k > h || k > w {
        return Err(Error::InvalidArgument {
            op,
            message: format!("window {k} with stride {stride} does not fit input {}", x.shape_obj()),
        });
    }
    let spec = PoolSpec { planes: b * c, h, w, k, stride };
    Ok((spec, Shape::new([b, c, spec.h_out(), spec.w_out()])))
}

/// Backward of both poolings: max pooling keeps its input (the argmax is recomputed),
/// average pooling needs the shape only.
struct Pool2dBackward {
    spec: PoolSpec,
    /// The max-pool input; `None` for average pooling.
    x: Option<Tensor>,
    in_shape: Shape,
}

impl Backward for Pool2dBackward {
    fn name(&self) -> &'static str {
        if self.x.is_some() { "max_pool2d" } else { "avg_pool2d" }
    }
    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let g = g.contiguous_data();
        let mut dx = crate::storage::buffer(self.in_shape.numel());
        match &self.x {
            Some(x) => max_pool2d_backward(&self.spec, &g, &x.contiguous_data(), &mut dx),
            None => avg_pool2d_backward(&self.spec, &g, &mut dx),
        }
        Ok(vec![Some(Tensor::from_parts(dx, self.in_shape.clone()))])
    }
}

impl Tensor {
    /// Max pooling of `[B, C, H, W]` with a `k×k` window and stride `stride` (no
    /// padding); output `[B, C, (H − k)/s + 1, (W − k)/s + 1]`.
    ///
    /// ```
    /// use fixpoint::Tensor;
    /// let x = Tensor::from_vec(vec![1.0, 5.0, 2.0, 0.0, 3.0, 4.0, 7.0, 6.0], [1, 2, 2, 2])?;
    /// assert_eq!(x.max_pool2d(2, 2)?.to_vec(), vec![5.0, 7.0]);
    /// # Ok::<(), fixpoint::Error>(())
    /// ```
    pub fn max_pool2d(&self, k: usize, stride: usize) -> Result<Tensor> {
        let _p = crate::profile::fwd("max_pool2d");
        self.pool2d(k, stride, true)
    }

    /// Average pooling of `[B, C, H, W]` with a `k×k` window and stride `stride` (no
    /// padding); output `[B, C, (H − k)/s + 1, (W − k)/s + 1]`.
    pub fn avg_pool2d(&self, k: usize, stride: usize) -> Result<Tensor> {
        let _p = crate::profile::fwd("avg_pool2d");
        self.pool2d(k, stride, false)
    }

    fn pool2d(&self, k: usize, stride: usize, max: bool) -> Result<Tensor> {
        let op = if max { "max_pool2d" } else { "avg_pool2d" };
        let (spec, out_shape) = pool_spec(op, self, k, stride)?;
        let x = self.contiguous_data();
        let mut y = crate::storage::buffer(out_shape.numel());
        if max {
            max_pool2d_forward(&spec, &x, &mut y);
        } else {
            avg_pool2d_forward(&spec, &x, &mut y);
        }
        // Max pooling keeps its input for the backward (a view when contiguous).
        let saved = || {
            max.then(|| {
                if self.is_contiguous() {
                    self.detach()
                } else {
                    Tensor::from_parts(x.to_vec(), self.shape_obj().clone())
                }
            })
        };
        Ok(Tensor::from_op(y, out_shape, &[self], || Pool2dBackward {
            spec,
            x: saved(),
            in_shape: self.shape_obj().clone(),
        }))
    }

    /// Global average pooling `[B, C, H, W] → [B, C]` (the mean over the spatial axes).
    pub fn global_avg_pool2d(&self) -> Result<Tensor> {
        if self.rank() != 4 {
            return Err(Error::InvalidArgument {
                op: "global_avg_pool2d",
                message: format!("input must be [B, C, H, W], got {}", self.shape_obj()),
            });
        }
        let (b, c) = (self.shape()[0], self.shape()[1]);
        self.reshape(&[b, c, usize::MAX])?.mean(&[2], false)
    }

    /// `[B, ..] → [B, rest]` (a reshape).
    pub fn flatten(&self) -> Result<Tensor> {
        let b = self.shape().first().copied().unwrap_or(1);
        self.reshape(&[b, usize::MAX])
    }
}
