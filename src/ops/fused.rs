//! Fused ops with hand-written backward: softmax, log_softmax, cross_entropy,
//! soft_cross_entropy, layer_norm, rms_norm and l2_normalize.
//!
//! Each op reduces along one axis. Its kernel sees the data as rows of contiguous f32
//! with that axis last (`[rows, n]`), and runs one pass per row. Within a row, sums use
//! 8 interleaved accumulators (the shape an `f32x8` version will have). Sums across rows
//! (weight and bias gradients) are taken in f32 blocks of [`FLUSH_ROWS`] rows and added
//! into f64 totals. The row helpers ([`row_max`], [`row_dot`], [`exp_sub`], ...) are the
//! places where SIMD goes later.
//!
//! Backward rules keep as little as possible. Softmax, log_softmax and l2_normalize
//! keep their output, which shares storage with the returned tensor (no copy).
//! Cross-entropy keeps the logits and one log-sum-exp per row. The norms keep the input
//! and one mean and rstd per row.

use crate::autograd::{Backward, Node, is_grad_enabled};
use crate::cpu::simd::exp8;
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::ops::reduce::sum_slice;
use crate::shape::Shape;
use crate::tensor::Tensor;
use std::borrow::Cow;
use wide::f32x8;

// ----- row kernels --------------------------------------------------------------------

/// Maximum of a row (`-inf` for an empty one). NaN is skipped here but still reaches
/// every output through `exp(NaN - m)`.
pub fn row_max(x: &[f32]) -> f32 {
    // Four independent accumulators: one chain of dependent max ops would be
    // latency-bound (4 cycles per 8 elements).
    let (quads, rest) = x.as_chunks::<32>();
    let mut acc = [f32x8::splat(f32::NEG_INFINITY); 4];
    for q in quads {
        let (c, _) = q.as_chunks::<8>();
        for k in 0..4 {
            acc[k] = acc[k].fast_max(f32x8::new(c[k]));
        }
    }
    let acc = acc[0].fast_max(acc[1]).fast_max(acc[2].fast_max(acc[3]));
    let mut m = acc.to_array().into_iter().fold(f32::NEG_INFINITY, f32::max);
    for &v in rest {
        m = m.max(v);
    }
    m
}

/// `Σ a_i b_i` with 8 lanes (fixed order, so deterministic).
pub fn row_dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let (ca, ra) = a.as_chunks::<8>();
    let (cb, rb) = b.as_chunks::<8>();
    let mut acc = f32x8::ZERO;
    for (x, y) in ca.iter().zip(cb) {
        acc = f32x8::new(*x).mul_add(f32x8::new(*y), acc);
    }
    let mut s = acc.reduce_add();
    for (&x, &y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// `out_i = exp(x_i - shift)`; returns `Σ out_i` (summed in the same pass).
pub fn exp_sub(x: &[f32], shift: f32, out: &mut [f32]) -> f32 {
    let sh = f32x8::splat(shift);
    let (xc, xt) = x.as_chunks::<8>();
    let (oc, ot) = out.as_chunks_mut::<8>();
    let mut acc = f32x8::ZERO;
    for (o, v) in oc.iter_mut().zip(xc) {
        let e = exp8(f32x8::new(*v) - sh);
        acc += e;
        *o = e.to_array();
    }
    let mut s = acc.reduce_add();
    for (o, &v) in ot.iter_mut().zip(xt) {
        *o = (v - shift).exp();
        s += *o;
    }
    s
}

/// `Σ exp(x_i - shift)` without writing the terms out.
pub fn sum_exp_sub(x: &[f32], shift: f32) -> f32 {
    let (chunks, rest) = x.as_chunks::<8>();
    let sh = f32x8::splat(shift);
    let mut acc = f32x8::ZERO;
    for c in chunks {
        acc += exp8(f32x8::new(*c) - sh);
    }
    let mut s = acc.reduce_add();
    for &v in rest {
        s += (v - shift).exp();
    }
    s
}

/// `Σ (x_i - shift)` with 8 lanes.
pub fn sum_sub(x: &[f32], shift: f32) -> f32 {
    let (chunks, rest) = x.as_chunks::<8>();
    let sh = f32x8::splat(shift);
    let mut acc = f32x8::ZERO;
    for c in chunks {
        acc += f32x8::new(*c) - sh;
    }
    let mut s = acc.reduce_add();
    for &v in rest {
        s += v - shift;
    }
    s
}

/// Rows per parallel task for row-wise kernels on rows of `n`: fixed by the shape
/// (about 32K elements a task), so results do not depend on the thread count.
fn rows_per_task(n: usize) -> usize {
    (crate::cpu::par::ELEMWISE_CHUNK / n.max(1)).max(1)
}

/// Apply a row kernel `f(x_rows, y_rows)` over chunks of whole rows, in parallel when
/// the tensor is large.
fn par_rows(x: &[f32], y: &mut [f32], n: usize, f: impl Fn(&[f32], &mut [f32]) + Sync + Send) {
    let rpt = rows_per_task(n);
    crate::cpu::par::for_row_chunks_mut(y, n, rpt, crate::cpu::par::ELEMWISE_MIN, |r0, yc| {
        f(&x[r0 * n..r0 * n + yc.len()], yc)
    });
}

/// Like [`par_rows`] with two inputs.
fn par_rows2(a: &[f32], b: &[f32], y: &mut [f32], n: usize, f: impl Fn(&[f32], &[f32], &mut [f32]) + Sync + Send) {
    let rpt = rows_per_task(n);
    crate::cpu::par::for_row_chunks_mut(y, n, rpt, crate::cpu::par::ELEMWISE_MIN, |r0, yc| {
        let r = r0 * n..r0 * n + yc.len();
        f(&a[r.clone()], &b[r], yc)
    });
}

/// `log Σ exp(x_i)` split as `(m, log Σ exp(x_i - m))` with `m` the maximum. Callers
/// use `(x - m) - log_sum` rather than `x - (m + log_sum)`: `x - m` is exact for the
/// large entries, while rounding `m + log_sum` to f32 would cost up to half an ulp of
/// `m` (5e-4 at 1e4) in every log-probability.
pub fn row_max_log_sum(x: &[f32]) -> (f32, f32) {
    let m = row_max(x);
    (m, sum_exp_sub(x, m).ln())
}

/// Softmax of each row of length `n`: `y = exp(x - max) / Σ exp(x - max)`.
/// A row that is all `-inf`, or holds `+inf` or NaN, gives NaN (as PyTorch does).
pub fn softmax_rows(x: &[f32], n: usize, y: &mut [f32]) {
    if n == 0 {
        return;
    }
    for (xr, yr) in x.chunks_exact(n).zip(y.chunks_exact_mut(n)) {
        let m = row_max(xr);
        let inv = 1.0 / exp_sub(xr, m, yr);
        for v in yr.iter_mut() {
            *v *= inv;
        }
    }
}

/// Log-softmax of each row: `y = (x - max) - log Σ exp(x - max)`.
pub fn log_softmax_rows(x: &[f32], n: usize, y: &mut [f32]) {
    if n == 0 {
        return;
    }
    for (xr, yr) in x.chunks_exact(n).zip(y.chunks_exact_mut(n)) {
        let (m, ls) = row_max_log_sum(xr);
        for (o, &v) in yr.iter_mut().zip(xr) {
            *o = (v - m) - ls;
        }
    }
}

/// Softmax backward from the output: `dx = y ⊙ (g - Σ g ⊙ y)`.
pub fn softmax_backward_rows(y: &[f32], g: &[f32], n: usize, dx: &mut [f32]) {
    if n == 0 {
        return;
    }
    for ((yr, gr), dr) in y.chunks_exact(n).zip(g.chunks_exact(n)).zip(dx.chunks_exact_mut(n)) {
        let s = row_dot(gr, yr);
        for ((d, &yv), &gv) in dr.iter_mut().zip(yr).zip(gr) {
            *d = yv * (gv - s);
        }
    }
}

/// Log-softmax backward from the output: `dx = g - exp(y) Σ g`.
pub fn log_softmax_backward_rows(y: &[f32], g: &[f32], n: usize, dx: &mut [f32]) {
    if n == 0 {
        return;
    }
    for ((yr, gr), dr) in y.chunks_exact(n).zip(g.chunks_exact(n)).zip(dx.chunks_exact_mut(n)) {
        let s = sum_slice(gr);
        for ((d, &yv), &gv) in dr.iter_mut().zip(yr).zip(gr) {
            *d = gv - yv.exp() * s;
        }
    }
}

// ----- rows along any axis ------------------------------------------------------------

/// The permutation that moves `axis` last and keeps the other axes in order.
fn axis_last_perm(rank: usize, axis: usize) -> Vec<usize> {
    (0..rank).filter(|&i| i != axis).chain([axis]).collect()
}

/// The elements of `t` in row-major order of the shape with `axis` moved last, so that
/// they form rows of length `t.shape()[axis]`. Borrowed when `axis` is last and `t` is
/// contiguous.
fn rows_along(t: &Tensor, axis: usize) -> Cow<'_, [f32]> {
    if axis + 1 == t.rank() {
        return t.contiguous_data();
    }
    let l = t.layout.permute("rows_along", &axis_last_perm(t.rank(), axis)).expect("valid permutation");
    let s = t.storage.cpu();
    let mut v = Vec::with_capacity(t.numel());
    l.for_each_offset(|_, o| v.push(s[o]));
    Cow::Owned(v)
}

/// The inverse of [`rows_along`]: rows of `shape` with `axis` moved last, back in the
/// row-major order of `shape`.
fn unrows_along(rows: Vec<f32>, shape: &Shape, axis: usize) -> Vec<f32> {
    let r = shape.rank();
    if axis + 1 == r {
        return rows;
    }
    let perm = axis_last_perm(r, axis);
    let permuted = Shape(perm.iter().map(|&i| shape.dims()[i]).collect());
    let mut inv = vec![0; r];
    for (i, &p) in perm.iter().enumerate() {
        inv[p] = i;
    }
    let l = Layout::contiguous(permuted).permute("rows_along", &inv).expect("valid permutation");
    let mut out = Vec::with_capacity(rows.len());
    l.for_each_offset(|_, o| out.push(rows[o]));
    out
}

/// Like [`Tensor::from_op`], but `make_backward` receives the output itself (detached,
/// sharing its storage), for rules that need only the output: nothing is copied.
fn from_op_keeping_output<B: Backward + 'static>(
    data: Vec<f32>,
    shape: Shape,
    inputs: &[&Tensor],
    make_backward: impl FnOnce(Tensor) -> B,
) -> Tensor {
    keeping_output(Tensor::from_parts(data, shape), inputs, make_backward)
}

/// [`from_op_keeping_output`] for an output tensor already made (on any device).
fn keeping_output<B: Backward + 'static>(
    mut y: Tensor,
    inputs: &[&Tensor],
    make_backward: impl FnOnce(Tensor) -> B,
) -> Tensor {
    if is_grad_enabled() && inputs.iter().any(|t| t.requires_grad()) {
        let rule = make_backward(y.detach());
        let parents = inputs.iter().map(|t| t.node.clone()).collect();
        y.node = Some(Node::op(y.shape_obj().clone(), Box::new(rule), parents));
    }
    y
}

/// Resolve `axis` and check that it is not empty.
fn nonempty_axis(t: &Tensor, op: &'static str, axis: isize) -> Result<(usize, usize)> {
    let ax = t.shape_obj().axis(op, axis)?;
    let n = t.shape()[ax];
    if n == 0 {
        return Err(Error::Empty { op, shape: t.shape_obj().clone() });
    }
    Ok((ax, n))
}

// ----- softmax / log_softmax ----------------------------------------------------------

struct SoftmaxBackward {
    out: Tensor,
    axis: usize,
    log: bool,
}

impl Backward for SoftmaxBackward {
    fn name(&self) -> &'static str {
        if self.log { "log_softmax" } else { "softmax" }
    }
    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        if Tensor::common_device(self.name(), &[&self.out, g])? == crate::Device::Gpu {
            return Ok(vec![Some(on_gpu!(self.name(), fused::softmax_backward(&self.out, g, self.axis, self.log))?)]);
        }
        let n = self.out.shape()[self.axis];
        let y = rows_along(&self.out, self.axis);
        let g = rows_along(g, self.axis);
        let mut dx = crate::storage::buffer(y.len());
        if self.log {
            par_rows2(&y, &g, &mut dx, n, |yc, gc, dc| log_softmax_backward_rows(yc, gc, n, dc));
        } else {
            par_rows2(&y, &g, &mut dx, n, |yc, gc, dc| softmax_backward_rows(yc, gc, n, dc));
        }
        let shape = self.out.shape_obj();
        Ok(vec![Some(Tensor::from_parts(unrows_along(dx, shape, self.axis), shape.clone()))])
    }
}

impl Tensor {
    fn softmax_impl(&self, op: &'static str, axis: isize, log: bool) -> Result<Tensor> {
        let (ax, n) = nonempty_axis(self, op, axis)?;
        if self.device() == crate::Device::Gpu {
            let y = on_gpu!(op, fused::softmax(self, ax, log))?;
            return Ok(keeping_output(y, &[self], |out| SoftmaxBackward { out, axis: ax, log }));
        }
        let x = rows_along(self, ax);
        let _p = crate::profile::fwd(op);
        let mut y = crate::storage::buffer(x.len());
        if log {
            par_rows(&x, &mut y, n, |xc, yc| log_softmax_rows(xc, n, yc));
        } else {
            par_rows(&x, &mut y, n, |xc, yc| softmax_rows(xc, n, yc));
        }
        drop(x);
        let shape = self.shape_obj().clone();
        let y = unrows_along(y, &shape, ax);
        Ok(from_op_keeping_output(y, shape, &[self], |out| SoftmaxBackward { out, axis: ax, log }))
    }

    /// Softmax along `axis`, with the maximum subtracted first. The backward rule uses
    /// only the output: `dx = y ⊙ (g - Σ g ⊙ y)`. A row that is all `-inf` gives NaN.
    pub fn softmax(&self, axis: isize) -> Result<Tensor> {
        self.softmax_impl("softmax", axis, false)
    }

    /// Log-softmax along `axis`, with the maximum subtracted first. The backward rule uses
    /// only the output: `dx = g - exp(y) Σ g`.
    pub fn log_softmax(&self, axis: isize) -> Result<Tensor> {
        self.softmax_impl("log_softmax", axis, true)
    }
}

// ----- cross-entropy ------------------------------------------------------------------

/// How per-target losses are combined.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reduction {
    /// The mean over the targets that are not ignored (0 when every target is ignored).
    #[default]
    Mean,
    /// The sum over all targets (ignored ones contribute 0).
    Sum,
    /// One loss per target, with the logits' leading shape (ignored ones are 0).
    None,
}

/// Options of [`Tensor::cross_entropy`]; `Default` is PyTorch's default (no ignored
/// index, no smoothing, mean).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CrossEntropyOpts {
    /// Targets equal to this contribute neither loss nor gradient, and are not counted
    /// by the mean.
    pub ignore_index: Option<usize>,
    /// ε in [0, 1]: the target distribution is `(1 - ε)·onehot + ε/C`.
    pub label_smoothing: f32,
    pub reduction: Reduction,
}

/// Per row of logits `x` (length `c`): the loss `(1 - ε)(lse - x_t) + ε(lse - mean_c x_c)`
/// with `lse = log Σ exp x`, computed from the row's `(max, log_sum)` (see
/// [`row_max_log_sum`]), which are written out for backward. Ignored rows get loss 0.
/// Targets must be valid.
#[allow(clippy::too_many_arguments)]
pub fn cross_entropy_rows(
    x: &[f32],
    c: usize,
    targets: &[usize],
    ignore_index: Option<usize>,
    smoothing: f32,
    loss: &mut [f32],
    max: &mut [f32],
    log_sum: &mut [f32],
) {
    if c == 0 {
        return;
    }
    for (i, xr) in x.chunks_exact(c).enumerate() {
        let t = targets[i];
        if Some(t) == ignore_index {
            loss[i] = 0.0;
            continue;
        }
        let (m, ls) = row_max_log_sum(xr);
        // lse - x_t = (m - x_t) + log_sum, and lse - mean(x) = log_sum - mean(x - m).
        let mut v = (1.0 - smoothing) * ((m - xr[t]) + ls);
        if smoothing != 0.0 {
            v += smoothing * (ls - sum_sub(xr, m) / c as f32);
        }
        loss[i] = v;
        max[i] = m;
        log_sum[i] = ls;
    }
}

/// Cross-entropy backward for one row: `dx = w · (softmax(x) - (1 - ε)·onehot(t) - ε/C)`,
/// with the softmax recomputed as `exp((x - max) - log_sum)`.
pub fn cross_entropy_backward_row(x: &[f32], t: usize, max: f32, log_sum: f32, smoothing: f32, w: f32, dx: &mut [f32]) {
    let off = smoothing / x.len() as f32;
    for (d, &v) in dx.iter_mut().zip(x) {
        *d = w * (((v - max) - log_sum).exp() - off);
    }
    dx[t] -= w * (1.0 - smoothing);
}

struct CrossEntropyBackward {
    logits: Tensor,
    targets: Vec<usize>,
    /// Per row, the maximum and `log Σ exp(x - max)`.
    max: Vec<f32>,
    log_sum: Vec<f32>,
    opts: CrossEntropyOpts,
    /// Targets not ignored (the mean's denominator).
    count: usize,
}

impl Backward for CrossEntropyBackward {
    fn name(&self) -> &'static str {
        "cross_entropy"
    }
    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let x = self.logits.contiguous_data();
        let c = *self.logits.shape().last().expect("rank >= 1");
        let g = g.contiguous_data();
        let mut dx = vec![0.0; x.len()];
        for (i, (xr, dr)) in x.chunks_exact(c).zip(dx.chunks_exact_mut(c)).enumerate() {
            let t = self.targets[i];
            if Some(t) == self.opts.ignore_index {
                continue;
            }
            let w = match self.opts.reduction {
                Reduction::Mean => g[0] / self.count as f32,
                Reduction::Sum => g[0],
                Reduction::None => g[i],
            };
            cross_entropy_backward_row(xr, t, self.max[i], self.log_sum[i], self.opts.label_smoothing, w, dr);
        }
        Ok(vec![Some(Tensor::from_parts(dx, self.logits.shape_obj().clone()))])
    }
}

impl Tensor {
    /// Cross-entropy of logits `[.., C]` (classes last) against one class index per row,
    /// with PyTorch's semantics: per target `(1 - ε)·nll + ε·mean_c(-log p_c)` for label
    /// smoothing ε, `ignore_index` targets contributing nothing, and the mean taken over
    /// the targets that are not ignored. Unlike PyTorch (which gives NaN), the mean is 0
    /// when every target is ignored (or there are none), and so is its gradient.
    ///
    /// Errors: a wrong number of targets is `ShapeMismatch` (logits shape vs `[targets]`);
    /// a target ≥ C that is not the ignore index is `Index`; ε outside [0, 1] is
    /// `InvalidArgument`; C = 0 is `Empty`; rank 0 is `Axis`.
    pub fn cross_entropy(&self, targets: &[usize], opts: CrossEntropyOpts) -> Result<Tensor> {
        let _p = crate::profile::fwd("cross_entropy");
        const OP: &str = "cross_entropy";
        let (ax, c) = nonempty_axis(self, OP, -1)?;
        let lead = &self.shape()[..ax];
        let rows: usize = lead.iter().product();
        if targets.len() != rows {
            return Err(Error::ShapeMismatch {
                op: OP,
                lhs: self.shape_obj().clone(),
                rhs: Shape(vec![targets.len()]),
            });
        }
        let eps = opts.label_smoothing;
        if !(0.0..=1.0).contains(&eps) {
            return Err(Error::InvalidArgument {
                op: OP,
                message: format!("label_smoothing must be in [0, 1], got {eps}"),
            });
        }
        if let Some(&t) = targets.iter().find(|&&t| t >= c && Some(t) != opts.ignore_index) {
            return Err(Error::Index { op: OP, axis: ax, index: t, size: c, shape: self.shape_obj().clone() });
        }
        if self.device() == crate::Device::Gpu {
            return on_gpu!(OP, loss::cross_entropy(self, targets, opts, rows, c));
        }
        let x = self.contiguous_data();
        let mut loss = vec![0.0; rows];
        let mut max = vec![0.0; rows];
        let mut log_sum = vec![0.0; rows];
        cross_entropy_rows(&x, c, targets, opts.ignore_index, eps, &mut loss, &mut max, &mut log_sum);
        drop(x);
        let count = targets.iter().filter(|&&t| Some(t) != opts.ignore_index).count();
        let total = || loss.iter().map(|&v| v as f64).sum::<f64>();
        let (out, shape) = match opts.reduction {
            Reduction::Mean => (vec![if count == 0 { 0.0 } else { (total() / count as f64) as f32 }], Shape(vec![])),
            Reduction::Sum => (vec![total() as f32], Shape(vec![])),
            Reduction::None => (loss, Shape(lead.to_vec())),
        };
        Ok(Tensor::from_op(out, shape, &[self], || CrossEntropyBackward {
            logits: self.detach(),
            targets: targets.to_vec(),
            max,
            log_sum,
            opts,
            count,
        }))
    }
}

// ----- soft_cross_entropy (soft targets, temperature) ----------------------------------

/// Per row of logits `x` and target probabilities `p` (length `c`), with `z = x·inv`
/// (`inv = 1/τ`): the loss `-Σ p_k log_softmax(z)_k = -(Σ p_k (z_k - m) - ls·Σ p_k)`
/// from the row's maximum `m` of `z` and `ls = log Σ exp(z - m)`. Returns
/// `(loss, m, ls)`; `m` and `ls` are what backward needs, bit for bit those of
/// `log_softmax(x·inv)` ([`row_max_log_sum`] of the rounded `z`).
pub fn soft_cross_entropy_row(x: &[f32], p: &[f32], inv: f32) -> [f32; 3] {
    debug_assert_eq!(x.len(), p.len());
    // inv > 0, so fl(inv·max x) is the maximum of the rounded fl(inv·x_k).
    let m = row_max(x) * inv;
    let (iv, mv) = (f32x8::splat(inv), f32x8::splat(m));
    let (xc, xt) = x.as_chunks::<8>();
    let (pc, pt) = p.as_chunks::<8>();
    let (mut se, mut dot, mut ps) = (f32x8::ZERO, f32x8::ZERO, f32x8::ZERO);
    for (xv, pv) in xc.iter().zip(pc) {
        let d = f32x8::new(*xv) * iv - mv;
        let pv = f32x8::new(*pv);
        se += exp8(d);
        dot = pv.mul_add(d, dot);
        ps += pv;
    }
    let (mut se, mut dot, mut ps) = (se.reduce_add(), dot.reduce_add(), ps.reduce_add());
    for (&xv, &pv) in xt.iter().zip(pt) {
        let d = xv * inv - m;
        se += d.exp();
        dot += pv * d;
        ps += pv;
    }
    let ls = se.ln();
    [-(dot - ls * ps), m, ls]
}

/// Backward of [`soft_cross_entropy_row`], `neg_w` being the loss's gradient times
/// `-1/R`. It runs operation for operation what the composition
/// `-(1/R) Σ p ⊙ log_softmax(x·inv)` runs backward, so the two give the same bits:
/// `g_k = p_k·neg_w`, then log_softmax's `g_k - exp(y_k) Σ g` with
/// `y_k = (z_k - m) - ls` (a scalar `exp`), then `·inv`; and, when `dp` is given,
/// `dp_k = neg_w·y_k`. This matters more than it seems: at α = 1e-10 the student starts
/// as the teacher, its first gradients are rounding noise that AdamW scales up to full
/// steps, and a version of this op that recomputed the softmax with the vector `exp`
/// ended the quick preset 0.5 k-NN points lower (REPRODUCTION.md, session 6).
pub fn soft_cross_entropy_backward_row(
    x: &[f32],
    p: &[f32],
    [m, ls]: [f32; 2],
    inv: f32,
    neg_w: f32,
    dx: &mut [f32],
    dp: Option<&mut [f32]>,
) {
    for (d, &pv) in dx.iter_mut().zip(p) {
        *d = neg_w * pv;
    }
    let s = sum_slice(dx);
    for (d, &xv) in dx.iter_mut().zip(x) {
        let y = (xv * inv - m) - ls;
        *d = (*d - y.exp() * s) * inv;
    }
    if let Some(dp) = dp {
        for (d, &xv) in dp.iter_mut().zip(x) {
            *d = neg_w * ((xv * inv - m) - ls);
        }
    }
}

struct SoftCrossEntropyBackward {
    logits: Tensor,
    probs: Tensor,
    /// Per row: the maximum of `x/τ` and `log Σ exp(x/τ - max)`.
    stats: Vec<[f32; 2]>,
    inv: f32,
}

impl Backward for SoftCrossEntropyBackward {
    fn name(&self) -> &'static str {
        "soft_cross_entropy"
    }
    fn backward(&self, g: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let (x, p) = (self.logits.contiguous_data(), self.probs.contiguous_data());
        let c = *self.logits.shape().last().expect("rank >= 1");
        // As the composition's `mul_scalar(-1/R)` passes it back: g·fl(-1/R).
        let neg_w = g.item()? * (-1.0 / self.stats.len() as f32);
        // Every element is written (pooled buffers: no fresh pages to fault in).
        let mut dx = if needs[0] { crate::storage::buffer(x.len()) } else { Vec::new() };
        let mut dp = if needs[1] { crate::storage::buffer(x.len()) } else { Vec::new() };
        let rpt = rows_per_task(c);
        let row = |i: usize, dxr: &mut [f32], dpr: Option<&mut [f32]>| {
            let r = i * c..(i + 1) * c;
            soft_cross_entropy_backward_row(&x[r.clone()], &p[r], self.stats[i], self.inv, neg_w, dxr, dpr);
        };
        if needs[0] {
            let dp_ptr = crate::cpu::par::SyncPtr(dp.as_mut_ptr());
            crate::cpu::par::for_row_chunks_mut(&mut dx, c, rpt, crate::cpu::par::ELEMWISE_MIN, |r0, dc| {
                for (j, dxr) in dc.chunks_exact_mut(c).enumerate() {
                    let i = r0 + j;
                    // SAFETY: `dp` has a row for every row of `dx` when it is needed,
                    // and each task writes only the rows of its own chunk.
                    let dpr = needs[1].then(|| unsafe { std::slice::from_raw_parts_mut(dp_ptr.at(i * c), c) });
                    row(i, dxr, dpr);
                }
            });
        } else if needs[1] {
            let mut unused_dx = vec![0.0; c];
            for (i, dpr) in dp.chunks_exact_mut(c).enumerate() {
                row(i, &mut unused_dx, Some(dpr));
            }
        }
        let shape = self.logits.shape_obj().clone();
        Ok(vec![
            needs[0].then(|| Tensor::from_parts(dx, shape.clone())),
            needs[1].then(|| Tensor::from_parts(dp, shape)),
        ])
    }
}

impl Tensor {
    /// Cross-entropy against soft targets with a temperature, averaged over rows:
    /// `-(1/R) Σ_r Σ_k p_rk log_softmax(x_r/τ)_k` for logits `x = self` and
    /// probabilities `p` of the same shape `[.., C]` (classes last, `R` rows). The DINO
    /// distillation loss. Fused: no temporaries, two passes per row forward and three
    /// backward (four with the targets' gradient); the gradients are those of the
    /// composition `p ⊙ log_softmax(x/τ)`
    /// summed, bit for bit (see [`soft_cross_entropy_backward_row`]). At 128×4096 in
    /// the MLP distillation step: 1.1 ms forward and backward, against 1.65 ms for the
    /// five ops of the composition. Differentiable in both arguments; on the GPU it runs
    /// as that composition.
    ///
    /// Errors: shapes that differ are `ShapeMismatch`; `τ` not finite and > 0 is
    /// `InvalidArgument`; `C = 0`, or no rows (a mean over nothing), is `Empty`; rank 0
    /// is `Axis`.
    pub fn soft_cross_entropy(&self, probs: &Tensor, temp: f32) -> Result<Tensor> {
        let _p = crate::profile::fwd("soft_cross_entropy");
        const OP: &str = "soft_cross_entropy";
        let (_, c) = nonempty_axis(self, OP, -1)?;
        if probs.shape() != self.shape() {
            return Err(Error::ShapeMismatch { op: OP, lhs: self.shape_obj().clone(), rhs: probs.shape_obj().clone() });
        }
        if !(temp.is_finite() && temp > 0.0) {
            return Err(Error::InvalidArgument {
                op: OP,
                message: format!("the temperature must be finite and > 0, got {temp}"),
            });
        }
        let inv = 1.0 / temp;
        let rows = self.numel() / c;
        if rows == 0 {
            return Err(Error::Empty { op: OP, shape: self.shape_obj().clone() });
        }
        if Tensor::common_device(OP, &[self, probs])? == crate::Device::Gpu {
            let z = if temp != 1.0 { self.mul_scalar(inv) } else { self.clone() };
            return Ok(probs.mul(&z.log_softmax(-1)?)?.sum_all().mul_scalar(-1.0 / rows as f32));
        }
        let (x, p) = (self.contiguous_data(), probs.contiguous_data());
        let mut out = vec![[0.0f32; 3]; rows];
        let rpt = rows_per_task(c);
        let stats = |r0: usize, o: &mut [[f32; 3]]| {
            for (j, o) in o.iter_mut().enumerate() {
                let r = (r0 + j) * c..(r0 + j + 1) * c;
                *o = soft_cross_entropy_row(&x[r.clone()], &p[r], inv);
            }
        };
        if x.len() >= crate::cpu::par::ELEMWISE_MIN && crate::cpu::par::threads() > 1 {
            use rayon::prelude::*;
            out.par_chunks_mut(rpt).enumerate().for_each(|(i, o)| stats(i * rpt, o));
        } else {
            stats(0, &mut out);
        }
        drop((x, p));
        let loss = out.iter().map(|o| o[0] as f64).sum::<f64>() / rows as f64;
        let stats: Vec<[f32; 2]> = out.iter().map(|o| [o[1], o[2]]).collect();
        Ok(Tensor::from_op(vec![loss as f32], Shape(vec![]), &[self, probs], || SoftCrossEntropyBackward {
            logits: self.detach(),
            probs: probs.detach(),
            stats,
            inv,
        }))
    }
}

// ----- layer_norm / rms_norm ----------------------------------------------------------

/// Rows summed into f32 before the partial sums are added into f64 totals.
pub const FLUSH_ROWS: usize = 64;

/// Column sums over many rows: f32 within a block of rows, f64 across blocks.
struct ColumnSums {
    block: Vec<f32>,
    total: Vec<f64>,
    rows: usize,
}

impl ColumnSums {
    fn new(d: usize) -> Self {
        ColumnSums { block: vec![0.0; d], total: vec![0.0; d], rows: 0 }
    }
    /// Add `a ⊙ b` (or `a` alone) as one row.
    fn add_row(&mut self, a: &[f32], b: Option<&[f32]>) {
        match b {
            Some(b) => {
                for ((s, &x), &y) in self.block.iter_mut().zip(a).zip(b) {
                    *s += x * y;
                }
            }
            None => {
                for (s, &x) in self.block.iter_mut().zip(a) {
                    *s += x;
                }
            }
        }
        self.rows += 1;
        if self.rows.is_multiple_of(FLUSH_ROWS) {
            self.flush();
        }
    }
    fn flush(&mut self) {
        for (t, b) in self.total.iter_mut().zip(self.block.iter_mut()) {
            *t += *b as f64;
            *b = 0.0;
        }
    }
    fn into_f64(mut self) -> Vec<f64> {
        self.flush();
        self.total
    }
}

/// Normalise each row of length `d`: with `center`, LayerNorm
/// `xhat = (x - mean) / sqrt(var + eps)` (population variance, two passes); without,
/// RMSNorm `xhat = x / sqrt(mean(x²) + eps)`. Then `y = xhat ⊙ w + b`. Writes the
/// per-row mean (when centring) and rstd `1 / sqrt(.. + eps)`.
#[allow(clippy::too_many_arguments)]
pub fn norm_rows(
    x: &[f32],
    d: usize,
    center: bool,
    w: Option<&[f32]>,
    b: Option<&[f32]>,
    eps: f32,
    y: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
) {
    if d == 0 {
        return;
    }
    let inv_d = 1.0 / d as f32;
    for (i, (xr, yr)) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)).enumerate() {
        let mu = if center { sum_slice(xr) * inv_d } else { 0.0 };
        for (o, &v) in yr.iter_mut().zip(xr) {
            *o = v - mu;
        }
        let rs = 1.0 / (row_dot(yr, yr) * inv_d + eps).sqrt();
        match (w, b) {
            (Some(w), Some(b)) => {
                for ((o, &wv), &bv) in yr.iter_mut().zip(w).zip(b) {
                    *o = *o * rs * wv + bv;
                }
            }
            (Some(w), None) => {
                for (o, &wv) in yr.iter_mut().zip(w) {
                    *o = *o * rs * wv;
                }
            }
            (None, Some(b)) => {
                for (o, &bv) in yr.iter_mut().zip(b) {
                    *o = *o * rs + bv;
                }
            }
            (None, None) => {
                for o in yr.iter_mut() {
                    *o *= rs;
                }
            }
        }
        if center {
            mean[i] = mu;
        }
        rstd[i] = rs;
    }
}

/// Gradients of [`norm_rows`], recomputing `xhat` from `x`, mean and rstd:
/// `dxhat = g ⊙ w`, `dx = rstd · (dxhat - mean(dxhat) - xhat · mean(dxhat ⊙ xhat))`
/// (without the `mean(dxhat)` term for RMSNorm); `dw = Σ_rows g ⊙ xhat`, `db = Σ_rows g`.
#[allow(clippy::too_many_arguments)]
fn norm_backward_rows(
    x: &[f32],
    g: &[f32],
    d: usize,
    center: bool,
    w: Option<&[f32]>,
    mean: &[f32],
    rstd: &[f32],
    mut dx: Option<&mut [f32]>,
    mut dw: Option<&mut ColumnSums>,
    mut db: Option<&mut ColumnSums>,
) {
    if d == 0 {
        return;
    }
    let inv_d = 1.0 / d as f32;
    let mut xhat = vec![0.0; d];
    let mut dxhat = vec![0.0; d];
    for (i, (xr, gr)) in x.chunks_exact(d).zip(g.chunks_exact(d)).enumerate() {
        let mu = if center { mean[i] } else { 0.0 };
        let rs = rstd[i];
        for (h, &v) in xhat.iter_mut().zip(xr) {
            *h = (v - mu) * rs;
        }
        if let Some(dw) = dw.as_deref_mut() {
            dw.add_row(gr, Some(&xhat));
        }
        if let Some(db) = db.as_deref_mut() {
            db.add_row(gr, None);
        }
        let Some(dx) = dx.as_deref_mut() else { continue };
        let dxhat: &[f32] = match w {
            Some(w) => {
                for ((o, &gv), &wv) in dxhat.iter_mut().zip(gr).zip(w) {
                    *o = gv * wv;
                }
                &dxhat
            }
            None => gr,
        };
        let a = if center { sum_slice(dxhat) * inv_d } else { 0.0 };
        let c = row_dot(dxhat, &xhat) * inv_d;
        for ((o, &dh), &h) in dx[i * d..(i + 1) * d].iter_mut().zip(dxhat).zip(&xhat) {
            *o = rs * (dh - a - h * c);
        }
    }
}

/// Per-chunk f64 column sums for the weight and bias gradients.
type ChunkSums = (Option<Vec<f64>>, Option<Vec<f64>>);

struct NormBackward {
    center: bool,
    x: Tensor,
    weight: Option<Tensor>,
    has_bias: bool,
    mean: Vec<f32>,
    rstd: Vec<f32>,
}

impl Backward for NormBackward {
    fn name(&self) -> &'static str {
        if self.center { "layer_norm" } else { "rms_norm" }
    }
    fn backward(&self, g: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let d = *self.x.shape().last().expect("rank >= 1");
        let x = self.x.contiguous_data();
        let g = g.contiguous_data();
        let w = self.weight.as_ref().map(|w| w.contiguous_data());
        let w_slot = self.weight.as_ref().map(|_| 1);
        let b_slot = self.has_bias.then(|| 1 + w_slot.unwrap_or(0));
        let rows = x.len() / d;
        // Chunks of whole 64-row flush blocks, fixed by the shape; each chunk sums its
        // own columns and the chunks are added in order, on 1 thread or many.
        let rpt = rows_per_task(d).next_multiple_of(FLUSH_ROWS);
        let (need_w, need_b) = (w_slot.is_some_and(|k| needs[k]), b_slot.is_some_and(|k| needs[k]));
        let mean: &[f32] = &self.mean;
        let work = |c: usize, dxc: Option<&mut [f32]>| {
            let r = c * rpt..((c + 1) * rpt).min(rows);
            let mut dw = need_w.then(|| ColumnSums::new(d));
            let mut db = need_b.then(|| ColumnSums::new(d));
            norm_backward_rows(
                &x[r.start * d..r.end * d],
                &g[r.start * d..r.end * d],
                d,
                self.center,
                w.as_deref(),
                if self.center { &mean[r.clone()] } else { mean },
                &self.rstd[r],
                dxc,
                dw.as_mut(),
                db.as_mut(),
            );
            (dw.map(ColumnSums::into_f64), db.map(ColumnSums::into_f64))
        };
        let chunks = rows.div_ceil(rpt);
        let par = x.len() >= crate::cpu::par::ELEMWISE_MIN && crate::cpu::par::threads() > 1;
        let mut dx = needs[0].then(|| crate::storage::buffer(x.len()));
        let parts: Vec<ChunkSums> = {
            use rayon::prelude::*;
            match (dx.as_deref_mut(), par) {
                (Some(dx), true) => dx.par_chunks_mut(rpt * d).enumerate().map(|(c, dc)| work(c, Some(dc))).collect(),
                (Some(dx), false) => dx.chunks_mut(rpt * d).enumerate().map(|(c, dc)| work(c, Some(dc))).collect(),
                (None, true) => (0..chunks).into_par_iter().map(|c| work(c, None)).collect(),
                (None, false) => (0..chunks).map(|c| work(c, None)).collect(),
            }
        };
        let merge = |pick: fn(&ChunkSums) -> Option<&Vec<f64>>| {
            let mut total = vec![0.0f64; d];
            for p in parts.iter().filter_map(pick) {
                for (t, v) in total.iter_mut().zip(p) {
                    *t += v;
                }
            }
            total.into_iter().map(|v| v as f32).collect::<Vec<f32>>()
        };
        let dw = need_w.then(|| merge(|p| p.0.as_ref()));
        let db = need_b.then(|| merge(|p| p.1.as_ref()));
        let vec_d = || Shape(vec![d]);
        let mut out = vec![dx.map(|v| Tensor::from_parts(v, self.x.shape_obj().clone()))];
        if w_slot.is_some() {
            out.push(dw.map(|s| Tensor::from_parts(s, vec_d())));
        }
        if b_slot.is_some() {
            out.push(db.map(|s| Tensor::from_parts(s, vec_d())));
        }
        Ok(out)
    }
}

impl Tensor {
    fn norm_impl(
        &self,
        op: &'static str,
        center: bool,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f32,
    ) -> Result<Tensor> {
        let (_, d) = nonempty_axis(self, op, -1)?;
        for p in [weight, bias].into_iter().flatten() {
            if p.shape() != [d] {
                return Err(Error::ShapeMismatch { op, lhs: self.shape_obj().clone(), rhs: p.shape_obj().clone() });
            }
        }
        if !(eps >= 0.0 && eps.is_finite()) {
            return Err(Error::InvalidArgument { op, message: format!("eps must be finite and >= 0, got {eps}") });
        }
        let operands: Vec<&Tensor> = [Some(self), weight, bias].into_iter().flatten().collect();
        if Tensor::common_device(op, &operands)? == crate::Device::Gpu {
            return on_gpu!(op, fused::norm(self, center, weight, bias, eps));
        }
        let x = self.contiguous_data();
        let w = weight.map(|w| w.contiguous_data());
        let b = bias.map(|b| b.contiguous_data());
        let _p = crate::profile::fwd(op);
        let rows = x.len() / d;
        let mut y = crate::storage::buffer(x.len());
        let mut mean = vec![0.0; rows];
        let mut rstd = vec![0.0; rows];
        let rpt = rows_per_task(d);
        let (w, b) = (w.as_deref(), b.as_deref());
        let work = |((yc, mc), rc): ((&mut [f32], &mut [f32]), &mut [f32]), r0: usize| {
            norm_rows(&x[r0 * d..r0 * d + yc.len()], d, center, w, b, eps, yc, mc, rc)
        };
        if x.len() >= crate::cpu::par::ELEMWISE_MIN && crate::cpu::par::threads() > 1 {
            use rayon::prelude::*;
            y.par_chunks_mut(rpt * d)
                .zip(mean.par_chunks_mut(rpt))
                .zip(rstd.par_chunks_mut(rpt))
                .enumerate()
                .for_each(|(i, c)| work(c, i * rpt));
        } else {
            y.chunks_mut(rpt * d)
                .zip(mean.chunks_mut(rpt))
                .zip(rstd.chunks_mut(rpt))
                .enumerate()
                .for_each(|(i, c)| work(c, i * rpt));
        }
        if !center {
            mean = Vec::new();
        }
        drop(x);
        let mut inputs = vec![self];
        inputs.extend(weight);
        inputs.extend(bias);
        Ok(Tensor::from_op(y, self.shape_obj().clone(), &inputs, || NormBackward {
            center,
            x: self.detach(),
            weight: weight.map(Tensor::detach),
            has_bias: bias.is_some(),
            mean,
            rstd,
        }))
    }

    /// Layer normalisation over the last axis:
    /// `y = (x - mean) / sqrt(var + eps) ⊙ weight + bias` (population variance), with
    /// optional `weight` and `bias` of shape `[D]`. Gradients flow to all three.
    pub fn layer_norm(&self, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f32) -> Result<Tensor> {
        self.norm_impl("layer_norm", true, weight, bias, eps)
    }

    /// RMS normalisation over the last axis: `y = x / sqrt(mean(x²) + eps) ⊙ weight`,
    /// with an optional `weight` of shape `[D]`.
    pub fn rms_norm(&self, weight: Option<&Tensor>, eps: f32) -> Result<Tensor> {
        self.norm_impl("rms_norm", false, weight, None, eps)
    }
}

// ----- l2_normalize -------------------------------------------------------------------

/// `y = x / max(‖x‖, eps)` per row; writes each row's norm `‖x‖`. A NaN norm
/// propagates (it is not replaced by `eps`).
pub fn l2_normalize_rows(x: &[f32], n: usize, eps: f32, y: &mut [f32], norms: &mut [f32]) {
    if n == 0 {
        return;
    }
    for (i, (xr, yr)) in x.chunks_exact(n).zip(y.chunks_exact_mut(n)).enumerate() {
        let norm = row_dot(xr, xr).sqrt();
        let inv = 1.0 / l2_denominator(norm, eps);
        for (o, &v) in yr.iter_mut().zip(xr) {
            *o = v * inv;
        }
        norms[i] = norm;
    }
}

/// `max(norm, eps)`, but NaN stays NaN.
fn l2_denominator(norm: f32, eps: f32) -> f32 {
    if norm < eps { eps } else { norm }
}

struct L2NormalizeBackward {
    out: Tensor,
    axis: usize,
    norms: Vec<f32>,
    eps: f32,
}

impl Backward for L2NormalizeBackward {
    fn name(&self) -> &'static str {
        "l2_normalize"
    }
    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let n = self.out.shape()[self.axis];
        let y = rows_along(&self.out, self.axis);
        let g = rows_along(g, self.axis);
        let mut dx = vec![0.0; y.len()];
        for (i, ((yr, gr), dr)) in y.chunks_exact(n).zip(g.chunks_exact(n)).zip(dx.chunks_exact_mut(n)).enumerate() {
            let norm = self.norms[i];
            let inv = 1.0 / l2_denominator(norm, self.eps);
            // ‖x‖ ≥ eps: dx = (g - y (g·y)) / ‖x‖; below eps the denominator is the
            // constant eps and dx = g / eps.
            let s = if norm < self.eps { 0.0 } else { row_dot(gr, yr) };
            for ((d, &yv), &gv) in dr.iter_mut().zip(yr).zip(gr) {
                *d = (gv - yv * s) * inv;
            }
        }
        let shape = self.out.shape_obj();
        Ok(vec![Some(Tensor::from_parts(unrows_along(dx, shape, self.axis), shape.clone()))])
    }
}

impl Tensor {
    /// `x / max(‖x‖₂, eps)` along `axis`, as `torch.nn.functional.normalize`. The
    /// backward rule uses the output and the per-row norms.
    pub fn l2_normalize(&self, axis: isize, eps: f32) -> Result<Tensor> {
        let _p = crate::profile::fwd("l2_normalize");
        const OP: &str = "l2_normalize";
        let (ax, n) = nonempty_axis(self, OP, axis)?;
        if !(eps >= 0.0 && eps.is_finite()) {
            return Err(Error::InvalidArgument { op: OP, message: format!("eps must be finite and >= 0, got {eps}") });
        }
        if self.device() == crate::Device::Gpu {
            return on_gpu!(OP, fused::l2_normalize(self, ax, eps));
        }
        let x = rows_along(self, ax);
        let rows = x.len() / n;
        let mut y = vec![0.0; x.len()];
        let mut norms = vec![0.0; rows];
        l2_normalize_rows(&x, n, eps, &mut y, &mut norms);
        drop(x);
        let shape = self.shape_obj().clone();
        let y = unrows_along(y, &shape, ax);
        Ok(from_op_keeping_output(y, shape, &[self], |out| L2NormalizeBackward { out, axis: ax, norms, eps }))
    }
}
