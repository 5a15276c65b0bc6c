//! Reductions over any set of axes: sum, mean, max, min, argmax, logsumexp, var.
//! Kernels view the input as a `[outer, inner]` matrix whose rows are reduced (kept axes
//! first, reduced axes last, copied into that order only when they are not already).

use crate::autograd::Backward;
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::shape::Shape;
use crate::storage::{Device, Storage};
use crate::tensor::Tensor;
use std::borrow::Cow;

/// The input arranged as `[outer, inner]`, rows to be reduced.
struct Rows<'a> {
    data: Cow<'a, [f32]>,
    outer: usize,
    inner: usize,
}

/// Shapes of a reduction: with reduced axes kept as 1, and as returned to the user.
struct ReducePlan {
    axes: Vec<usize>,
    keep_shape: Shape,
    out_shape: Shape,
}

fn plan(t: &Tensor, op: &'static str, axes: &[isize], keepdim: bool) -> Result<ReducePlan> {
    let axes = t.shape_obj().axes(op, axes)?;
    let keep: Vec<usize> = t.shape().iter().enumerate().map(|(i, &d)| if axes.contains(&i) { 1 } else { d }).collect();
    let out: Vec<usize> = if keepdim {
        keep.clone()
    } else {
        t.shape().iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, &d)| d).collect()
    };
    Ok(ReducePlan { axes, keep_shape: Shape(keep), out_shape: Shape(out) })
}

fn rows<'a>(t: &'a Tensor, axes: &[usize]) -> Rows<'a> {
    let kept: Vec<usize> = (0..t.rank()).filter(|i| !axes.contains(i)).collect();
    let outer: usize = kept.iter().map(|&i| t.shape()[i]).product();
    let inner: usize = axes.iter().map(|&i| t.shape()[i]).product();
    let perm: Vec<usize> = kept.iter().chain(axes).copied().collect();
    let layout = t.layout.permute("reduce", &perm).expect("valid permutation");
    let s = t.storage.cpu();
    let data = match layout.contiguous_range() {
        Some(r) => Cow::Borrowed(&s[r]),
        None => {
            let mut v = Vec::with_capacity(outer * inner);
            layout.for_each_offset(|_, o| v.push(s[o]));
            Cow::Owned(v)
        }
    };
    Rows { data, outer, inner }
}

/// Write per-row values (in the kept-then-reduced order) back to the input's shape:
/// the inverse of [`rows`] for a `[outer, inner]` buffer.
fn unrows(data: Vec<f32>, shape: &Shape, axes: &[usize]) -> Tensor {
    let kept: Vec<usize> = (0..shape.rank()).filter(|i| !axes.contains(i)).collect();
    let perm: Vec<usize> = kept.iter().chain(axes).copied().collect();
    let permuted = Shape(perm.iter().map(|&i| shape.dims()[i]).collect());
    let mut inv = vec![0; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        inv[p] = i;
    }
    let l = Layout::contiguous(permuted).permute("reduce", &inv).expect("valid permutation");
    if l.is_contiguous() {
        return Tensor::from_parts(data, shape.clone());
    }
    let mut out = Vec::with_capacity(data.len());
    l.for_each_offset(|_, o| out.push(data[o]));
    Tensor::from_parts(out, shape.clone())
}

/// Sum of a slice with 8 interleaved accumulators (fixed order, so deterministic).
pub fn sum_slice(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (chunks, rest) = x.as_chunks::<8>();
    for c in chunks {
        for k in 0..8 {
            acc[k] += c[k];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for &v in rest {
        s += v;
    }
    s
}

fn ensure_nonempty(t: &Tensor, op: &'static str, p: &ReducePlan) -> Result<()> {
    if p.axes.iter().any(|&a| t.shape()[a] == 0) || (t.numel() == 0 && p.axes.is_empty()) {
        return Err(Error::Empty { op, shape: t.shape_obj().clone() });
    }
    Ok(())
}

// ----- sum / mean --------------------------------------------------------------------

struct SumBackward {
    input_shape: Shape,
    keep_shape: Shape,
    scale: f32,
}

impl Backward for SumBackward {
    fn name(&self) -> &'static str {
        if self.scale == 1.0 { "sum" } else { "mean" }
    }
    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let g = g.reshape(self.keep_shape.dims())?;
        let g = if self.scale != 1.0 { g.mul_scalar(self.scale) } else { g };
        Ok(vec![Some(g.broadcast_to(self.input_shape.dims())?)])
    }
}

fn sum_kernel(t: &Tensor, axes: &[usize]) -> Vec<f32> {
    // Fast path: contiguous input reduced over its leading axes (bias gradients):
    // accumulate whole rows, no transpose copy.
    let lead = axes.iter().enumerate().all(|(i, &a)| i == a);
    let inner: usize = t.shape()[axes.len()..].iter().product();
    // (A full reduction, inner = 1, goes the row way: one long row summed on 8 lanes,
    // not one dependent add per element.)
    if lead
        && inner >= 8
        && let Some(r) = t.layout.contiguous_range()
    {
        let data = &t.storage.cpu()[r];
        let mut out = vec![0.0; inner];
        if inner > 0 {
            for row in data.chunks_exact(inner) {
                for (o, &v) in out.iter_mut().zip(row) {
                    *o += v;
                }
            }
        }
        return out;
    }
    let r = rows(t, axes);
    if r.inner == 0 {
        return vec![0.0; r.outer];
    }
    map_rows(&r.data, r.inner, sum_slice)
}

impl Tensor {
    /// Sum over `axes` (empty: all axes).
    pub fn sum(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        let _p = crate::profile::fwd("sum");
        let p = plan(self, "sum", axes, keepdim)?;
        let out = match self.device() {
            Device::Cpu => Storage::Cpu(sum_kernel(self, &p.axes)),
            Device::Gpu => on_gpu!("sum", reduce::reduce(self, &p.axes, crate::gpu::reduce::Reduce::Sum, 1.0))?,
        };
        Ok(Tensor::from_storage_op(out, p.out_shape, &[self], || SumBackward {
            input_shape: self.shape_obj().clone(),
            keep_shape: p.keep_shape,
            scale: 1.0,
        }))
    }
    /// Sum of every element, as a scalar tensor.
    pub fn sum_all(&self) -> Tensor {
        self.sum(&[], false).expect("sum over all axes cannot fail")
    }
    /// Mean over `axes` (empty: all axes); fails on an empty reduction.
    pub fn mean(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        let _p = crate::profile::fwd("mean");
        let p = plan(self, "mean", axes, keepdim)?;
        ensure_nonempty(self, "mean", &p)?;
        let n: usize = p.axes.iter().map(|&a| self.shape()[a]).product();
        let scale = 1.0 / n as f32;
        let out = match self.device() {
            Device::Cpu => Storage::Cpu(sum_kernel(self, &p.axes).into_iter().map(|s| s * scale).collect()),
            Device::Gpu => on_gpu!("mean", reduce::reduce(self, &p.axes, crate::gpu::reduce::Reduce::Sum, scale))?,
        };
        Ok(Tensor::from_storage_op(out, p.out_shape, &[self], || SumBackward {
            input_shape: self.shape_obj().clone(),
            keep_shape: p.keep_shape,
            scale,
        }))
    }
    /// Mean of every element, as a scalar tensor.
    pub fn mean_all(&self) -> Result<Tensor> {
        self.mean(&[], false)
    }

    /// Sum a gradient of a broadcast result back to `shape` (the un-broadcast of
    /// binary-op backward): leading extra axes and axes stretched from 1 are summed.
    pub fn sum_to(&self, shape: &Shape) -> Result<Tensor> {
        if self.shape() == shape.dims() {
            return Ok(self.clone());
        }
        let lead = self.rank().checked_sub(shape.rank()).ok_or_else(|| Error::InvalidArgument {
            op: "sum_to",
            message: format!("cannot sum {} down to higher rank {}", self.shape_obj(), shape),
        })?;
        let mut axes: Vec<isize> = (0..lead as isize).collect();
        for (i, &d) in shape.dims().iter().enumerate() {
            let s = self.shape()[lead + i];
            if d == 1 && s != 1 {
                axes.push((lead + i) as isize);
            } else if d != s {
                return Err(Error::Broadcast {
                    op: "sum_to",
                    lhs: self.shape_obj().clone(),
                    rhs: shape.clone(),
                    axis: lead + i,
                    lhs_size: s,
                    rhs_size: d,
                });
            }
        }
        if axes.is_empty() {
            return self.reshape(shape.dims());
        }
        self.sum(&axes, false)?.reshape(shape.dims())
    }
}

// ----- max / min / argmax ------------------------------------------------------------

/// Index of the first maximum (or minimum) of a row; a NaN wins (it propagates).
/// Two passes over the row: the extreme value on 8 lanes, then its first position.
fn arg_extreme(row: &[f32], max: bool) -> usize {
    use wide::f32x8;
    let (chunks, rest) = row.as_chunks::<8>();
    let mut acc = f32x8::splat(if max { f32::NEG_INFINITY } else { f32::INFINITY });
    let mut nan = f32x8::ZERO.simd_ne(f32x8::ZERO); // all false
    for c in chunks {
        let v = f32x8::new(*c);
        nan |= v.is_nan();
        acc = if max { acc.fast_max(v) } else { acc.fast_min(v) };
    }
    if nan.any() || rest.iter().any(|v| v.is_nan()) {
        return row.iter().position(|v| v.is_nan()).expect("a NaN was seen");
    }
    let lanes = acc.to_array();
    let fold = |a: f32, b: f32| if max { a.max(b) } else { a.min(b) };
    let m = lanes.into_iter().chain(rest.iter().copied()).fold(lanes[0], fold);
    row.iter().position(|&v| v == m).unwrap_or(0)
}

/// `f(row) -> value` for each `inner`-long row of `data`, in parallel over chunks of
/// rows (fixed by the shape) when the input is large.
fn map_rows<T: Send + Copy + Default>(data: &[f32], inner: usize, f: impl Fn(&[f32]) -> T + Sync + Send) -> Vec<T> {
    use rayon::prelude::*;
    let rows = data.len() / inner.max(1);
    let mut out = vec![T::default(); rows];
    if inner == 0 {
        return out;
    }
    let per = crate::cpu::par::rows_for(inner, crate::cpu::par::ELEMWISE_CHUNK);
    let body = |(i, o): (usize, &mut [T])| {
        for (k, slot) in o.iter_mut().enumerate() {
            let r = i * per + k;
            *slot = f(&data[r * inner..(r + 1) * inner]);
        }
    };
    if data.len() >= crate::cpu::par::ELEMWISE_MIN && crate::cpu::par::threads() > 1 {
        out.par_chunks_mut(per).enumerate().for_each(body);
    } else {
        out.chunks_mut(per).enumerate().for_each(body);
    }
    out
}

struct ExtremeBackward {
    max: bool,
    input_shape: Shape,
    axes: Vec<usize>,
    /// Per row, the position within the row that was selected.
    picks: Vec<usize>,
    inner: usize,
}

impl Backward for ExtremeBackward {
    fn name(&self) -> &'static str {
        if self.max { "max" } else { "min" }
    }
    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let g = g.contiguous_data();
        let mut buf = vec![0.0; self.picks.len() * self.inner];
        for (row, (&p, &gv)) in self.picks.iter().zip(g.iter()).enumerate() {
            buf[row * self.inner + p] = gv;
        }
        Ok(vec![Some(unrows(buf, &self.input_shape, &self.axes))])
    }
}

impl Tensor {
    fn extreme(&self, op: &'static str, axes: &[isize], keepdim: bool, max: bool) -> Result<Tensor> {
        let _p = crate::profile::fwd(op);
        let p = plan(self, op, axes, keepdim)?;
        ensure_nonempty(self, op, &p)?;
        if self.device() == Device::Gpu {
            // Forward only on the GPU: the backward needs the picked positions.
            if self.requires_grad() && crate::autograd::is_grad_enabled() {
                return Err(Error::Unsupported {
                    op: if max { "max backward" } else { "min backward" },
                    device: Device::Gpu,
                });
            }
            let out = on_gpu!(
                op,
                reduce::reduce(
                    self,
                    &p.axes,
                    if max { crate::gpu::reduce::Reduce::Max } else { crate::gpu::reduce::Reduce::Min },
                    1.0
                )
            )?;
            return Ok(Tensor::from_storage(out, p.out_shape));
        }
        let r = rows(self, &p.axes);
        let picks: Vec<usize> = map_rows(&r.data, r.inner, |row| arg_extreme(row, max));
        let out = picks.iter().enumerate().map(|(i, &k)| r.data[i * r.inner + k]).collect();
        let inner = r.inner;
        drop(r);
        Ok(Tensor::from_op(out, p.out_shape, &[self], || ExtremeBackward {
            max,
            input_shape: self.shape_obj().clone(),
            axes: p.axes,
            picks,
            inner,
        }))
    }
    /// Maximum over `axes`; the gradient goes to the first maximal element.
    pub fn max(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        self.extreme("max", axes, keepdim, true)
    }
    /// Minimum over `axes`; the gradient goes to the first minimal element.
    pub fn min(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        self.extreme("min", axes, keepdim, false)
    }
    /// Index of the first maximum along `axis`.
    pub fn argmax_indices(&self, axis: isize) -> Result<Vec<usize>> {
        Tensor::cpu_only("argmax", &[self])?;
        let p = plan(self, "argmax", &[axis], false)?;
        ensure_nonempty(self, "argmax", &p)?;
        let r = rows(self, &p.axes);
        Ok(map_rows(&r.data, r.inner, |row| arg_extreme(row, true)))
    }
    /// Index of the first maximum along `axis`, as f32 values (not differentiable).
    pub fn argmax(&self, axis: isize, keepdim: bool) -> Result<Tensor> {
        let p = plan(self, "argmax", &[axis], keepdim)?;
        let idx = self.argmax_indices(axis)?;
        Ok(Tensor::from_parts(idx.into_iter().map(|i| i as f32).collect(), p.out_shape))
    }
}

// ----- logsumexp ---------------------------------------------------------------------

struct LogSumExpBackward {
    input: Tensor,
    out_keep: Tensor,
    keep_shape: Shape,
}

impl Backward for LogSumExpBackward {
    fn name(&self) -> &'static str {
        "logsumexp"
    }
    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        // d lse / dx = exp(x - lse)
        let w = self.input.sub(&self.out_keep)?.exp();
        Ok(vec![Some(w.mul(&g.reshape(self.keep_shape.dims())?)?)])
    }
}

impl Tensor {
    /// `log(sum(exp(x)))` over `axes`, computed stably (max subtracted first).
    pub fn logsumexp(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        Tensor::cpu_only("logsumexp", &[self])?;
        let _p = crate::profile::fwd("logsumexp");
        let p = plan(self, "logsumexp", axes, keepdim)?;
        ensure_nonempty(self, "logsumexp", &p)?;
        let r = rows(self, &p.axes);
        let out: Vec<f32> = map_rows(&r.data, r.inner, |row| {
            let m = crate::ops::fused::row_max(row);
            if m.is_infinite() {
                return m;
            }
            m + crate::ops::fused::sum_exp_sub(row, m).ln()
        });
        drop(r);
        let keep = p.keep_shape.clone();
        let out_keep = (self.requires_grad() && crate::autograd::is_grad_enabled())
            .then(|| Tensor::from_parts(out.clone(), keep.clone()));
        Ok(Tensor::from_op(out, p.out_shape, &[self], || LogSumExpBackward {
            input: self.detach(),
            out_keep: out_keep.expect("saved when recording"),
            keep_shape: keep,
        }))
    }
}

// ----- var ---------------------------------------------------------------------------

struct VarBackward {
    centered: Tensor,
    keep_shape: Shape,
    denom: f32,
}

impl Backward for VarBackward {
    fn name(&self) -> &'static str {
        "var"
    }
    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let g = g.reshape(self.keep_shape.dims())?.mul_scalar(2.0 / self.denom);
        Ok(vec![Some(self.centered.mul(&g)?)])
    }
}

impl Tensor {
    /// Variance over `axes` with `correction` subtracted from the count in the
    /// denominator (0: population variance, 1: unbiased sample variance).
    pub fn var(&self, axes: &[isize], keepdim: bool, correction: usize) -> Result<Tensor> {
        Tensor::cpu_only("var", &[self])?;
        let _p = crate::profile::fwd("var");
        let p = plan(self, "var", axes, keepdim)?;
        ensure_nonempty(self, "var", &p)?;
        let n: usize = p.axes.iter().map(|&a| self.shape()[a]).product();
        if n <= correction {
            return Err(Error::InvalidArgument {
                op: "var",
                message: format!(
                    "{n} elements per reduction with correction {correction} (shape {})",
                    self.shape_obj()
                ),
            });
        }
        let denom = (n - correction) as f32;
        let r = rows(self, &p.axes);
        let mut centered = Vec::with_capacity(r.data.len());
        let out: Vec<f32> = r
            .data
            .chunks_exact(r.inner)
            .map(|row| {
                let mean = sum_slice(row) / n as f32;
                let start = centered.len();
                centered.extend(row.iter().map(|&v| v - mean));
                let sq: Vec<f32> = centered[start..].iter().map(|c| c * c).collect();
                sum_slice(&sq) / denom
            })
            .collect();
        drop(r);
        Ok(Tensor::from_op(out, p.out_shape, &[self], || VarBackward {
            centered: unrows(centered, self.shape_obj(), &p.axes),
            keep_shape: p.keep_shape,
            denom,
        }))
    }
}
