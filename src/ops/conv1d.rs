//! Depthwise causal 1-D convolution over `(B, T, C)` tensors with channels last (the
//! short convolutions of Mamba-style blocks, `causal_conv1d_fn` without activation):
//!
//! ```text
//! y[b, t, c] = bias[c] + Σ_{k<K} w[c, k] · x[b, t − (K − 1) + k, c]      (x = 0 before t = 0)
//! ```
//!
//! so `w[c, K − 1]` weighs the current step. This is PyTorch's
//! `Conv1d(C, C, K, groups = C, padding = K − 1)` truncated to the first `T` outputs,
//! with its weight `[C, 1, K]` stored as `[C, K]`.
//!
//! Backward:
//!
//! ```text
//! dx[b, s, c] = Σ_k w[c, k] · g[b, s + K − 1 − k, c]      (terms with s + K − 1 − k ≥ T drop)
//! dw[c, k]    = Σ_{b,t} g[b, t, c] · x[b, t − (K − 1) + k, c]
//! dbias[c]    = Σ_{b,t} g[b, t, c]
//! ```

use crate::autograd::Backward;
use crate::error::{Error, Result};
use crate::shape::Shape;
use crate::tensor::Tensor;

/// Sizes of a depthwise causal convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvSpec {
    pub batch: usize,
    pub time: usize,
    pub channels: usize,
    pub kernel: usize,
}

impl ConvSpec {
    fn numel(&self) -> usize {
        self.batch * self.time * self.channels
    }
}

/// `w[c, k]` (row-major `[C, K]`) regrouped as `wt[k, c]`, so that a time step reads
/// one contiguous channel row per tap.
fn taps_by_row(w: &[f32], channels: usize, kernel: usize) -> Vec<f32> {
    let mut wt = vec![0.0; w.len()];
    for c in 0..channels {
        for k in 0..kernel {
            wt[k * channels + c] = w[c * kernel + k];
        }
    }
    wt
}

/// Rows (time steps) per parallel task: fixed by the shape, about 32 Ki elements.
fn rows_per_task(channels: usize) -> usize {
    crate::cpu::par::rows_for(channels, crate::cpu::par::ELEMWISE_CHUNK)
}

/// Forward kernel: `y` (length `B·T·C`) from `x`, `w` (`[C, K]`) and an optional bias.
pub fn causal_conv1d_forward(spec: &ConvSpec, x: &[f32], w: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    let ConvSpec { time: t_len, channels: c_len, kernel, .. } = *spec;
    assert_eq!(x.len(), spec.numel(), "causal_conv1d: x length");
    assert_eq!(y.len(), spec.numel(), "causal_conv1d: y length");
    assert_eq!(w.len(), c_len * kernel, "causal_conv1d: weight length");
    if c_len == 0 || t_len == 0 {
        return;
    }
    let wt = taps_by_row(w, c_len, kernel);
    let rows = rows_per_task(c_len);
    crate::cpu::par::for_row_chunks_mut(y, c_len, rows, crate::cpu::par::ELEMWISE_MIN, |row0, out| {
        for (i, yr) in out.chunks_exact_mut(c_len).enumerate() {
            let row = row0 + i;
            let t = row % t_len;
            match bias {
                Some(b) => yr.copy_from_slice(b),
                None => yr.fill(0.0),
            }
            for k in 0..kernel {
                // Input step t − (K − 1) + k, which must be ≥ 0.
                let back = kernel - 1 - k;
                if back > t {
                    continue;
                }
                let xr = &x[(row - back) * c_len..][..c_len];
                let wr = &wt[k * c_len..][..c_len];
                for c in 0..c_len {
                    yr[c] = wr[c].mul_add(xr[c], yr[c]);
                }
            }
        }
    });
}

/// Input gradient: `dx` from the upstream gradient `g`.
pub fn causal_conv1d_backward_input(spec: &ConvSpec, g: &[f32], w: &[f32], dx: &mut [f32]) {
    let ConvSpec { time: t_len, channels: c_len, kernel, .. } = *spec;
    if c_len == 0 || t_len == 0 {
        return;
    }
    let wt = taps_by_row(w, c_len, kernel);
    let rows = rows_per_task(c_len);
    crate::cpu::par::for_row_chunks_mut(dx, c_len, rows, crate::cpu::par::ELEMWISE_MIN, |row0, out| {
        for (i, dr) in out.chunks_exact_mut(c_len).enumerate() {
            let row = row0 + i;
            let s = row % t_len;
            dr.fill(0.0);
            for k in 0..kernel {
                // Output step s + (K − 1) − k read input s through tap k.
                let ahead = kernel - 1 - k;
                if s + ahead >= t_len {
                    continue;
                }
                let gr = &g[(row + ahead) * c_len..][..c_len];
                let wr = &wt[k * c_len..][..c_len];
                for c in 0..c_len {
                    dr[c] = wr[c].mul_add(gr[c], dr[c]);
                }
            }
        }
    });
}

/// Weight and bias gradients: `dw` (`[C, K]`) and `dbias` (`[C]`), summed over batch
/// and time in a fixed order.
pub fn causal_conv1d_backward_params(
    spec: &ConvSpec,
    g: &[f32],
    x: &[f32],
    dw: Option<&mut [f32]>,
    dbias: Option<&mut [f32]>,
) {
    let ConvSpec { batch, time: t_len, channels: c_len, kernel } = *spec;
    if let Some(dw) = dw {
        // Accumulate per tap row [K, C] (contiguous channels), then regroup to [C, K].
        let mut acc = vec![0.0f64; kernel * c_len];
        for b in 0..batch {
            for t in 0..t_len {
                let row = b * t_len + t;
                let gr = &g[row * c_len..][..c_len];
                for k in 0..kernel {
                    let back = kernel - 1 - k;
                    if back > t {
                        continue;
                    }
                    let xr = &x[(row - back) * c_len..][..c_len];
                    let ar = &mut acc[k * c_len..][..c_len];
                    for c in 0..c_len {
                        ar[c] += gr[c] as f64 * xr[c] as f64;
                    }
                }
            }
        }
        for c in 0..c_len {
            for k in 0..kernel {
                dw[c * kernel + k] = acc[k * c_len + c] as f32;
            }
        }
    }
    if let Some(db) = dbias {
        let mut acc = vec![0.0f64; c_len];
        for gr in g.chunks_exact(c_len.max(1)).take(batch * t_len) {
            for c in 0..c_len {
                acc[c] += gr[c] as f64;
            }
        }
        for c in 0..c_len {
            db[c] = acc[c] as f32;
        }
    }
}

struct CausalConv1dBackward {
    spec: ConvSpec,
    x: Tensor,
    w: Tensor,
    has_bias: bool,
}

impl Backward for CausalConv1dBackward {
    fn name(&self) -> &'static str {
        "causal_conv1d"
    }
    fn backward(&self, g: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let spec = &self.spec;
        let g = g.contiguous_data();
        let x_shape = Shape::new([spec.batch, spec.time, spec.channels]);
        let dx = if needs[0] {
            let w = self.w.contiguous_data();
            let mut dx = crate::storage::buffer(spec.numel());
            causal_conv1d_backward_input(spec, &g, &w, &mut dx);
            Some(Tensor::from_parts(dx, x_shape))
        } else {
            None
        };
        let mut dw = needs[1].then(|| vec![0.0f32; spec.channels * spec.kernel]);
        let mut db = (self.has_bias && needs.get(2) == Some(&true)).then(|| vec![0.0f32; spec.channels]);
        if dw.is_some() || db.is_some() {
            let x = self.x.contiguous_data();
            causal_conv1d_backward_params(spec, &g, &x, dw.as_deref_mut(), db.as_deref_mut());
        }
        let mut out = vec![dx, dw.map(|v| Tensor::from_parts(v, Shape::new([spec.channels, spec.kernel])))];
        if self.has_bias {
            out.push(db.map(|v| Tensor::from_parts(v, Shape::new([spec.channels]))));
        }
        Ok(out)
    }
}

impl Tensor {
    /// Depthwise causal convolution of `self` (`[B, T, C]`, channels last) with
    /// `weight` (`[C, K]`, `weight[c, K − 1]` multiplies the current step) and an
    /// optional `bias` (`[C]`); output `[B, T, C]`. See the module docs for the formula.
    ///
    /// ```
    /// use fixpoint::Tensor;
    /// let x = Tensor::from_vec(vec![1.0, 2.0, 3.0], [1, 3, 1])?;
    /// let w = Tensor::from_vec(vec![10.0, 1.0], [1, 2])?; // y_t = 10·x_{t−1} + x_t
    /// assert_eq!(x.causal_conv1d(&w, None)?.to_vec(), vec![1.0, 12.0, 23.0]);
    /// # Ok::<(), fixpoint::Error>(())
    /// ```
    pub fn causal_conv1d(&self, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        Tensor::cpu_only("causal_conv1d", &[self, weight])?;
        let _p = crate::profile::fwd("causal_conv1d");
        const OP: &str = "causal_conv1d";
        let &[batch, time, channels] = self.shape() else {
            return Err(Error::InvalidArgument {
                op: OP,
                message: format!("input must be [B, T, C], got {}", self.shape_obj()),
            });
        };
        let &[wc, kernel] = weight.shape() else {
            return Err(Error::InvalidArgument {
                op: OP,
                message: format!("weight must be [C, K], got {}", weight.shape_obj()),
            });
        };
        if wc != channels || kernel == 0 {
            return Err(Error::ShapeMismatch {
                op: "causal_conv1d (weight [C, K] vs input [B, T, C], K >= 1)",
                lhs: weight.shape_obj().clone(),
                rhs: self.shape_obj().clone(),
            });
        }
        if let Some(b) = bias
            && b.shape() != [channels]
        {
            return Err(Error::ShapeMismatch {
                op: "causal_conv1d (bias vs [C])",
                lhs: b.shape_obj().clone(),
                rhs: Shape::new([channels]),
            });
        }
        let spec = ConvSpec { batch, time, channels, kernel };
        let x = self.contiguous_data();
        let w = weight.contiguous_data();
        let b = bias.map(|b| b.contiguous_data());
        let mut y = crate::storage::buffer(spec.numel());
        causal_conv1d_forward(&spec, &x, &w, b.as_deref(), &mut y);
        let saved_x = |x: &[f32]| {
            if self.is_contiguous() { self.detach() } else { Tensor::from_parts(x.to_vec(), self.shape_obj().clone()) }
        };
        let inputs: Vec<&Tensor> = [Some(self), Some(weight), bias].into_iter().flatten().collect();
        Ok(Tensor::from_op(y, self.shape_obj().clone(), &inputs, || CausalConv1dBackward {
            spec,
            x: saved_x(&x),
            w: weight.contiguous().detach(),
            has_bias: bias.is_some(),
        }))
    }
}
