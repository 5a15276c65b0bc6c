//! 2-D convolution over NCHW tensors (PyTorch's `Conv2d` with `groups = 1`,
//! dilation 1), by im2col + GEMM in blocks of whole images:
//!
//! ```text
//! y[b, o, i, j] = bias[o] + Σ_{c, p, q} w[o, c, p, q] · x[b, c, i·s − pad + p, j·s − pad + q]   (x = 0 outside)
//! H_out = (H + 2·pad − KH)/s + 1,   W_out likewise
//! ```
//!
//! Per block of `nb` images, `cols[K, nb·P]` (K = C·KH·KW rows in `(c, p, q)` order,
//! P = H_out·W_out columns per image) is built from the input, `Y = W[O, K] · cols`
//! (`matrixmultiply` through [`gemm_dense`]) and scattered to NCHW. Backward, per block:
//!
//! ```text
//! dcols = Wᵀ · dY             then col2im (scatter-add) into dx
//! dW   += dY · colsᵀ          cols rebuilt from x (cheaper than keeping them)
//! dbias = Σ_{b,i,j} dy
//! ```
//!
//! Blocks hold about [`COLS_PER_BLOCK`] columns (bounding the im2col buffer) and run in
//! parallel; the weight gradient is summed per fixed group of blocks and the group sums
//! are added in order. Every split depends on the shape only, so results are
//! bit-identical for any thread count.

use super::matmul::{Accum, MatRef, gemm_dense};
use crate::autograd::Backward;
use crate::error::{Error, Result};
use crate::shape::Shape;
use crate::tensor::Tensor;
use rayon::prelude::*;

/// Sizes of a 2-D convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dSpec {
    pub batch: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
}

impl Conv2dSpec {
    pub fn h_out(&self) -> usize {
        (self.h + 2 * self.pad - self.kh) / self.stride + 1
    }
    pub fn w_out(&self) -> usize {
        (self.w + 2 * self.pad - self.kw) / self.stride + 1
    }
    /// Output pixels per image.
    pub fn p(&self) -> usize {
        self.h_out() * self.w_out()
    }
    /// Rows of the im2col matrix: `C·KH·KW`.
    pub fn k(&self) -> usize {
        self.c_in * self.kh * self.kw
    }
    pub fn in_numel(&self) -> usize {
        self.batch * self.c_in * self.h * self.w
    }
    pub fn out_numel(&self) -> usize {
        self.batch * self.c_out * self.p()
    }
    /// Multiply-adds of the forward pass.
    pub fn macs(&self) -> usize {
        self.batch * self.p() * self.k() * self.c_out
    }
    /// Images per block: about [`COLS_PER_BLOCK`] im2col columns, at least one image.
    pub fn images_per_block(&self) -> usize {
        (COLS_PER_BLOCK / self.p().max(1)).clamp(1, self.batch.max(1))
    }
    fn valid(&self) -> bool {
        self.stride > 0
            && self.kh > 0
            && self.kw > 0
            && self.h + 2 * self.pad >= self.kh
            && self.w + 2 * self.pad >= self.kw
    }
}

/// Target im2col columns per block (output pixels of the images in one block).
pub const COLS_PER_BLOCK: usize = 512;
/// At most this many weight-gradient partial sums (fixed groups of blocks).
const DW_GROUPS: usize = 8;

/// `cols[K, nb·P]` for the `nb` images of `x` (`[nb, C, H, W]`).
fn im2col(s: &Conv2dSpec, x: &[f32], nb: usize, cols: &mut [f32]) {
    let (ho, wo, p) = (s.h_out(), s.w_out(), s.p());
    let ncols = nb * p;
    for c in 0..s.c_in {
        for ki in 0..s.kh {
            for kj in 0..s.kw {
                let row = (c * s.kh + ki) * s.kw + kj;
                let dst_row = &mut cols[row * ncols..(row + 1) * ncols];
                for b in 0..nb {
                    let plane = &x[(b * s.c_in + c) * s.h * s.w..][..s.h * s.w];
                    for i in 0..ho {
                        let dst = &mut dst_row[b * p + i * wo..][..wo];
                        let y = (i * s.stride + ki) as isize - s.pad as isize;
                        if y < 0 || y >= s.h as isize {
                            dst.fill(0.0);
                            continue;
                        }
                        let src = &plane[y as usize * s.w..][..s.w];
                        fill_row(dst, src, kj, s.stride, s.pad);
                    }
                }
            }
        }
    }
}

/// Range of output columns `j` whose input column `j·s − pad + kj` lies in `0..w`.
fn valid_cols(wo: usize, w: usize, kj: usize, stride: usize, pad: usize) -> (usize, usize) {
    // j·s + kj ≥ pad  and  j·s + kj − pad < w
    let lo = pad.saturating_sub(kj).div_ceil(stride);
    let hi = if w + pad > kj { (w + pad - kj).div_ceil(stride).min(wo) } else { 0 };
    (lo.min(hi), hi)
}

/// One output row of im2col: `dst[j] = src[j·s − pad + kj]` (0 outside).
fn fill_row(dst: &mut [f32], src: &[f32], kj: usize, stride: usize, pad: usize) {
    let (lo, hi) = valid_cols(dst.len(), src.len(), kj, stride, pad);
    dst[..lo].fill(0.0);
    dst[hi..].fill(0.0);
    if hi > lo {
        let x0 = lo * stride + kj - pad;
        if stride == 1 {
            dst[lo..hi].copy_from_slice(&src[x0..x0 + hi - lo]);
        } else {
            for (d, s) in dst[lo..hi].iter_mut().zip(src[x0..].iter().step_by(stride)) {
                *d = *s;
            }
        }
    }
}

/// Scatter-add `cols[K, nb·P]` back into `dx` (`[nb, C, H, W]`, zeroed by the caller).
fn col2im(s: &Conv2dSpec, cols: &[f32], nb: usize, dx: &mut [f32]) {
    let (ho, wo, p) = (s.h_out(), s.w_out(), s.p());
    let ncols = nb * p;
    for c in 0..s.c_in {
        for ki in 0..s.kh {
            for kj in 0..s.kw {
                let row = (c * s.kh + ki) * s.kw + kj;
                let src_row = &cols[row * ncols..(row + 1) * ncols];
                let (lo, hi) = valid_cols(wo, s.w, kj, s.stride, s.pad);
                if hi <= lo {
                    continue;
                }
                for b in 0..nb {
                    let plane = &mut dx[(b * s.c_in + c) * s.h * s.w..][..s.h * s.w];
                    for i in 0..ho {
                        let y = (i * s.stride + ki) as isize - s.pad as isize;
                        if y < 0 || y >= s.h as isize {
                            continue;
                        }
                        let src = &src_row[b * p + i * wo..][lo..hi];
                        let x0 = lo * s.stride + kj - s.pad;
                        let dst = &mut plane[y as usize * s.w..][..s.w];
                        if s.stride == 1 {
                            for (d, v) in dst[x0..x0 + hi - lo].iter_mut().zip(src) {
                                *d += v;
                            }
                        } else {
                            for (d, v) in dst[x0..].iter_mut().step_by(s.stride).zip(src) {
                                *d += v;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `out[nb, O, P]` (NCHW block) from `y[O, nb·P]`.
fn scatter_out(y: &[f32], nb: usize, o: usize, p: usize, out: &mut [f32]) {
    for b in 0..nb {
        for oc in 0..o {
            out[(b * o + oc) * p..][..p].copy_from_slice(&y[oc * nb * p + b * p..][..p]);
        }
    }
}

/// `y[O, nb·P]` from a gradient block `g[nb, O, P]` (inverse of [`scatter_out`]).
fn gather_out(g: &[f32], nb: usize, o: usize, p: usize, y: &mut [f32]) {
    for b in 0..nb {
        for oc in 0..o {
            y[oc * nb * p + b * p..][..p].copy_from_slice(&g[(b * o + oc) * p..][..p]);
        }
    }
}

/// Forward kernel: `y` (`[B, O, H_out, W_out]`) from `x` (`[B, C, H, W]`), `w`
/// (`[O, C, KH, KW]`) and an optional bias (`[O]`).
pub fn conv2d_forward(s: &Conv2dSpec, x: &[f32], w: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    assert_eq!(x.len(), s.in_numel(), "conv2d: x length");
    assert_eq!(y.len(), s.out_numel(), "conv2d: y length");
    assert_eq!(w.len(), s.c_out * s.k(), "conv2d: weight length");
    let (p, k, o) = (s.p(), s.k(), s.c_out);
    if y.is_empty() {
        return;
    }
    let nb = s.images_per_block();
    let in_img = s.c_in * s.h * s.w;
    let wm = MatRef { data: w, offset: 0, rows: o, cols: k, rs: k, cs: 1 };
    let block = |bi: usize, out: &mut [f32]| {
        let n = out.len() / (o * p);
        let mut cols = crate::storage::buffer(k * n * p);
        im2col(s, &x[bi * nb * in_img..][..n * in_img], n, &mut cols);
        let cm = MatRef { data: &cols, offset: 0, rows: k, cols: n * p, rs: n * p, cs: 1 };
        let mut yb = crate::storage::buffer(o * n * p);
        gemm_dense(wm, cm, &mut yb, Accum::Replace);
        if let Some(bias) = bias {
            for (oc, row) in yb.chunks_exact_mut(n * p).enumerate() {
                row.iter_mut().for_each(|v| *v += bias[oc]);
            }
        }
        scatter_out(&yb, n, o, p, out);
    };
    let chunk = nb * o * p;
    if crate::cpu::par::threads() == 1 || y.len() <= chunk {
        y.chunks_mut(chunk).enumerate().for_each(|(i, c)| block(i, c));
    } else {
        y.par_chunks_mut(chunk).enumerate().for_each(|(i, c)| block(i, c));
    }
}

/// Backward kernel: `dx` (when wanted) and `dw` (`[O, K]`, when wanted) from the
/// upstream gradient `g` (`[B, O, H_out, W_out]`).
pub fn conv2d_backward(
    s: &Conv2dSpec,
    g: &[f32],
    x: &[f32],
    w: &[f32],
    dx: Option<&mut [f32]>,
    dw: Option<&mut [f32]>,
) {
    let (p, k, o) = (s.p(), s.k(), s.c_out);
    let nb = s.images_per_block();
    let blocks = s.batch.div_ceil(nb);
    let groups = blocks.clamp(1, DW_GROUPS);
    let blocks_per_group = blocks.div_ceil(groups);
    let imgs_per_group = blocks_per_group * nb;
    let in_img = s.c_in * s.h * s.w;
    let out_img = o * p;
    let want_dw = dw.is_some();
    let wt = MatRef { data: w, offset: 0, rows: k, cols: o, rs: 1, cs: k };
    // One group: its blocks in order; returns the group's partial dW.
    let group = |gi: usize, mut dxg: Option<&mut [f32]>| -> Option<Vec<f32>> {
        let img0 = gi * imgs_per_group;
        let img1 = (img0 + imgs_per_group).min(s.batch);
        let mut part = want_dw.then(|| vec![0.0f32; o * k]);
        let mut b0 = img0;
        while b0 < img1 {
            let n = nb.min(img1 - b0);
            let mut gy = crate::storage::buffer(o * n * p);
            gather_out(&g[b0 * out_img..][..n * out_img], n, o, p, &mut gy);
            let gm = MatRef { data: &gy, offset: 0, rows: o, cols: n * p, rs: n * p, cs: 1 };
            if let Some(part) = part.as_mut() {
                let mut cols = crate::storage::buffer(k * n * p);
                im2col(s, &x[b0 * in_img..][..n * in_img], n, &mut cols);
                let ct = MatRef { data: &cols, offset: 0, rows: n * p, cols: k, rs: 1, cs: n * p };
                gemm_dense(gm, ct, part, Accum::Add);
            }
            if let Some(dxg) = dxg.as_deref_mut() {
                let mut dcols = crate::storage::buffer(k * n * p);
                gemm_dense(wt, gm, &mut dcols, Accum::Replace);
                let d = &mut dxg[(b0 - img0) * in_img..][..n * in_img];
                d.fill(0.0);
                col2im(s, &dcols, n, d);
            }
            b0 += n;
        }
        part
    };
    let serial = crate::cpu::par::threads() == 1 || groups == 1;
    let parts: Vec<Option<Vec<f32>>> = match dx {
        Some(dx) => {
            let chunk = (imgs_per_group * in_img).max(1);
            if serial {
                dx.chunks_mut(chunk).enumerate().map(|(i, c)| group(i, Some(c))).collect()
            } else {
                dx.par_chunks_mut(chunk).enumerate().map(|(i, c)| group(i, Some(c))).collect()
            }
        }
        None => {
            let n_groups = s.batch.div_ceil(imgs_per_group.max(1));
            if serial {
                (0..n_groups).map(|i| group(i, None)).collect()
            } else {
                (0..n_groups).into_par_iter().map(|i| group(i, None)).collect()
            }
        }
    };
    if let Some(dw) = dw {
        dw.fill(0.0);
        for part in parts.into_iter().flatten() {
            dw.iter_mut().zip(&part).for_each(|(d, v)| *d += v);
        }
    }
}

/// Bias gradient: `Σ_{b, i, j} g[b, o, i, j]` per output channel, in a fixed order.
pub fn conv2d_backward_bias(s: &Conv2dSpec, g: &[f32], db: &mut [f32]) {
    let p = s.p();
    let mut acc = vec![0.0f64; s.c_out];
    for (i, plane) in g.chunks_exact(p.max(1)).enumerate() {
        acc[i % s.c_out] += plane.iter().map(|&v| v as f64).sum::<f64>();
    }
    for (d, a) in db.iter_mut().zip(acc) {
        *d = a as f32;
    }
}

struct Conv2dBackward {
    spec: Conv2dSpec,
    x: Tensor,
    w: Tensor,
    has_bias: bool,
}

impl Backward for Conv2dBackward {
    fn name(&self) -> &'static str {
        "conv2d"
    }
    fn backward(&self, g: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let s = &self.spec;
        let g = g.contiguous_data();
        let (x, w) = (self.x.contiguous_data(), self.w.contiguous_data());
        let mut dx = needs[0].then(|| crate::storage::buffer(s.in_numel()));
        let mut dw = needs[1].then(|| crate::storage::buffer(s.c_out * s.k()));
        if dx.is_some() || dw.is_some() {
            conv2d_backward(s, &g, &x, &w, dx.as_deref_mut(), dw.as_deref_mut());
        }
        let mut out = vec![
            dx.map(|v| Tensor::from_parts(v, Shape::new([s.batch, s.c_in, s.h, s.w]))),
            dw.map(|v| Tensor::from_parts(v, Shape::new([s.c_out, s.c_in, s.kh, s.kw]))),
        ];
        if self.has_bias {
            out.push((needs.get(2) == Some(&true)).then(|| {
                let mut db = vec![0.0; s.c_out];
                conv2d_backward_bias(s, &g, &mut db);
                Tensor::from_parts(db, Shape::new([s.c_out]))
            }));
        }
        Ok(out)
    }
}

impl Tensor {
    /// 2-D convolution of `self` (`[B, C, H, W]`) with `weight` (`[O, C, KH, KW]`) and
    /// an optional `bias` (`[O]`), zero padding `pad` on every side, stride `stride`;
    /// output `[B, O, H_out, W_out]`. See the module docs.
    ///
    /// ```
    /// use fixpoint::Tensor;
    /// let x = Tensor::from_vec((0..9).map(|v| v as f32).collect(), [1, 1, 3, 3])?;
    /// let w = Tensor::ones([1, 1, 2, 2]);
    /// assert_eq!(x.conv2d(&w, None, 1, 0)?.to_vec(), vec![8.0, 12.0, 20.0, 24.0]);
    /// # Ok::<(), fixpoint::Error>(())
    /// ```
    pub fn conv2d(&self, weight: &Tensor, bias: Option<&Tensor>, stride: usize, pad: usize) -> Result<Tensor> {
        let _p = crate::profile::fwd("conv2d");
        const OP: &str = "conv2d";
        let &[batch, c_in, h, w] = self.shape() else {
            return Err(Error::InvalidArgument {
                op: OP,
                message: format!("input must be [B, C, H, W], got {}", self.shape_obj()),
            });
        };
        let &[c_out, wc, kh, kw] = weight.shape() else {
            return Err(Error::InvalidArgument {
                op: OP,
                message: format!("weight must be [O, C, KH, KW], got {}", weight.shape_obj()),
            });
        };
        if wc != c_in {
            return Err(Error::ShapeMismatch {
                op: "conv2d (weight [O, C, KH, KW] vs input [B, C, H, W])",
                lhs: weight.shape_obj().clone(),
                rhs: self.shape_obj().clone(),
            });
        }
        let spec = Conv2dSpec { batch, c_in, h, w, c_out, kh, kw, stride, pad };
        if !spec.valid() {
            return Err(Error::InvalidArgument {
                op: OP,
                message: format!(
                    "kernel {kh}x{kw} with stride {stride} and padding {pad} does not fit input {}",
                    self.shape_obj()
                ),
            });
        }
        if let Some(b) = bias
            && b.shape() != [c_out]
        {
            return Err(Error::ShapeMismatch {
                op: "conv2d (bias vs [O])",
                lhs: b.shape_obj().clone(),
                rhs: Shape::new([c_out]),
            });
        }
        let x = self.contiguous_data();
        let wd = weight.contiguous_data();
        let b = bias.map(|b| b.contiguous_data());
        let mut y = crate::storage::buffer(spec.out_numel());
        conv2d_forward(&spec, &x, &wd, b.as_deref(), &mut y);
        let out_shape = Shape::new([batch, c_out, spec.h_out(), spec.w_out()]);
        let saved_x = |x: &[f32]| {
            if self.is_contiguous() { self.detach() } else { Tensor::from_parts(x.to_vec(), self.shape_obj().clone()) }
        };
        let inputs: Vec<&Tensor> = [Some(self), Some(weight), bias].into_iter().flatten().collect();
        Ok(Tensor::from_op(y, out_shape, &inputs, || Conv2dBackward {
            spec,
            x: saved_x(&x),
            w: weight.contiguous().detach(),
            has_bias: bias.is_some(),
        }))
    }
}
