//! The selective scan of Mamba-1 (spec §2.4, §3.3), with state `H_t ∈ R^{D×N}`:
//!
//! ```text
//! H_t[i,n] = exp(Δ_t[i]A[i,n]) H_{t−1}[i,n] + Δ_t[i] B_t[n] x_t[i]      (H_{−1} = 0)
//! y_t[i]   = Σ_n C_t[n] H_t[i,n] + D_skip[i] x_t[i]
//! ```
//!
//! Backward (§3.3), with `Ā_t = exp(Δ_t A)` and `dy = dL/dy`:
//!
//! ```text
//! δ_t = dy_t[i]C_t + Ā_{t+1}⊙δ_{t+1}             (reverse scan per (i, n))
//! dC_t[n] = Σ_i dy_t[i]H_t[i,n];   dB_t[n] = Σ_i δ_t[i,n]Δ_t[i]x_t[i]
//! dx_t[i] = Σ_n δ_t[i,n]Δ_t[i]B_t[n] + D_skip[i]dy_t[i];   dĀ_t = δ_t⊙H_{t−1}
//! dΔ_t[i] = Σ_n (dĀ_t Ā_t A + δ_t B_t x_t)[i,n];   dA = Σ_t dĀ_t Ā_t Δ_t;   dD_skip = Σ_t dy_t⊙x_t
//! ```
//!
//! Sequences run in parallel; the backward recomputes one channel's states (`T×N`) at a
//! time instead of saving `B·T·D·N` values.

use crate::autograd::Backward;
use crate::error::{Error, Result};
use crate::shape::Shape;
use crate::tensor::Tensor;
use rayon::prelude::*;

/// Sizes `(B, T, D, N)` after checking `x`, `Δ` `[B, T, D]`, `A` `[D, N]`, `B`, `C`
/// `[B, T, N]`, `D_skip` `[D]`.
fn dims(x: &Tensor, dt: &Tensor, a: &Tensor, b: &Tensor, c: &Tensor, dskip: &Tensor) -> Result<[usize; 4]> {
    let mismatch = |what: &'static str, l: &Tensor, r: Shape| {
        Err(Error::ShapeMismatch { op: what, lhs: l.shape_obj().clone(), rhs: r })
    };
    let &[bs, t, d] = x.shape() else {
        return Err(Error::InvalidArgument {
            op: "selective_scan",
            message: format!("x must be [B, T, D], got {}", x.shape_obj()),
        });
    };
    if dt.shape() != x.shape() {
        return mismatch("selective_scan (delta vs x [B, T, D])", dt, x.shape_obj().clone());
    }
    let &[ad, n] = a.shape() else { return mismatch("selective_scan (A vs [D, N])", a, Shape::new([d, 0])) };
    if ad != d {
        return mismatch("selective_scan (A vs [D, N])", a, Shape::new([d, n]));
    }
    for (what, m) in [("selective_scan (B vs [B, T, N])", b), ("selective_scan (C vs [B, T, N])", c)] {
        if m.shape() != [bs, t, n] {
            return mismatch(what, m, Shape::new([bs, t, n]));
        }
    }
    if dskip.shape() != [d] {
        return mismatch("selective_scan (D_skip vs [D])", dskip, Shape::new([d]));
    }
    Ok([bs, t, d, n])
}

/// Forward for plain data; `y` is `[B, T, D]`.
#[allow(clippy::too_many_arguments)]
pub fn selective_scan_forward(
    [bs, t, d, n]: [usize; 4],
    x: &[f32],
    dt: &[f32],
    a: &[f32],
    b: &[f32],
    c: &[f32],
    dskip: &[f32],
    y: &mut [f32],
) {
    let per = t * d;
    if per == 0 {
        return;
    }
    y.par_chunks_mut(per).enumerate().take(bs).for_each(|(s, ys)| {
        let mut h = vec![0.0f32; d * n];
        for k in 0..t {
            let o = (s * t + k) * d;
            let on = (s * t + k) * n;
            let (bt, ct) = (&b[on..on + n], &c[on..on + n]);
            for i in 0..d {
                let (dti, xi) = (dt[o + i], x[o + i]);
                let hi = &mut h[i * n..(i + 1) * n];
                let ai = &a[i * n..(i + 1) * n];
                let mut acc = 0.0f32;
                for m in 0..n {
                    hi[m] = (dti * ai[m]).exp() * hi[m] + dti * bt[m] * xi;
                    acc += ct[m] * hi[m];
                }
                ys[k * d + i] = acc + dskip[i] * xi;
            }
        }
    });
}

struct SelectiveBackward {
    dims: [usize; 4],
    saved: [Tensor; 6],
}

impl Backward for SelectiveBackward {
    fn name(&self) -> &'static str {
        "selective_scan"
    }
    fn backward(&self, g: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let [bs, t, d, n] = self.dims;
        let data: Vec<_> = self.saved.iter().map(|s| s.contiguous_data()).collect();
        let (x, dt, a, b, c, dskip) = (&data[0], &data[1], &data[2], &data[3], &data[4], &data[5]);
        let dy = g.contiguous_data();
        // Per sequence: dx, dΔ ([T, D]), dB, dC ([T, N]), dA ([D, N]), dD ([D]).
        let per: Vec<[Vec<f32>; 6]> = (0..bs)
            .into_par_iter()
            .map(|s| {
                let (mut dx, mut ddt) = (vec![0.0f32; t * d], vec![0.0f32; t * d]);
                let (mut db, mut dc) = (vec![0.0f32; t * n], vec![0.0f32; t * n]);
                let (mut da, mut dd) = (vec![0.0f32; d * n], vec![0.0f32; d]);
                let mut hs = vec![0.0f32; t * n];
                let mut delta = vec![0.0f32; n];
                for i in 0..d {
                    let ai = &a[i * n..(i + 1) * n];
                    // States of channel i: hs[k] = H_k[i, :].
                    let mut prev = vec![0.0f32; n];
                    for k in 0..t {
                        let o = (s * t + k) * d + i;
                        let on = (s * t + k) * n;
                        for m in 0..n {
                            prev[m] = (dt[o] * ai[m]).exp() * prev[m] + dt[o] * b[on + m] * x[o];
                        }
                        hs[k * n..(k + 1) * n].copy_from_slice(&prev);
                    }
                    delta.fill(0.0);
                    for k in (0..t).rev() {
                        let o = (s * t + k) * d + i;
                        let on = (s * t + k) * n;
                        let (dyi, dti, xi) = (dy[o], dt[o], x[o]);
                        if k + 1 < t {
                            let dtn = dt[o + d];
                            for m in 0..n {
                                delta[m] *= (dtn * ai[m]).exp();
                            }
                        }
                        let (mut gx, mut gdt) = (0.0f32, 0.0f32);
                        for m in 0..n {
                            delta[m] += dyi * c[on + m];
                            let hk = hs[k * n + m];
                            dc[k * n + m] += dyi * hk;
                            db[k * n + m] += delta[m] * dti * xi;
                            gx += delta[m] * dti * b[on + m];
                            let hp = if k > 0 { hs[(k - 1) * n + m] } else { 0.0 };
                            let abar = (dti * ai[m]).exp();
                            let dabar = delta[m] * hp * abar;
                            gdt += dabar * ai[m] + delta[m] * b[on + m] * xi;
                            da[i * n + m] += dabar * dti;
                        }
                        dx[k * d + i] = gx + dskip[i] * dyi;
                        ddt[k * d + i] = gdt;
                        dd[i] += dyi * xi;
                    }
                }
                [dx, ddt, db, dc, da, dd]
            })
            .collect();
        let cat = |j: usize| per.iter().flat_map(|p| p[j].iter().copied()).collect::<Vec<f32>>();
        let sum = |j: usize, len: usize| {
            let mut acc = vec![0.0f32; len];
            for p in &per {
                for (a, v) in acc.iter_mut().zip(&p[j]) {
                    *a += v;
                }
            }
            acc
        };
        let shapes: Vec<Shape> = self.saved.iter().map(|s| s.shape_obj().clone()).collect();
        let mk = |j: usize, v: Vec<f32>| needs[j].then(|| Tensor::from_parts(v, shapes[j].clone()));
        Ok(vec![mk(0, cat(0)), mk(1, cat(1)), mk(2, sum(4, d * n)), mk(3, cat(2)), mk(4, cat(3)), mk(5, sum(5, d))])
    }
}

/// The selective scan `y = SSM(x; Δ, A, B, C) + D_skip ⊙ x` (see the module docs):
/// `x`, `delta` `[B, T, D]`, `a` `[D, N]`, `b`, `c` `[B, T, N]`, `dskip` `[D]`.
/// Differentiable in all six.
pub fn selective_scan(
    x: &Tensor,
    delta: &Tensor,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    dskip: &Tensor,
) -> Result<Tensor> {
    let _p = crate::profile::fwd("selective_scan");
    let dm = dims(x, delta, a, b, c, dskip)?;
    let data = [x, delta, a, b, c, dskip].map(|t| t.contiguous_data().into_owned());
    let mut y = vec![0.0f32; x.numel()];
    selective_scan_forward(dm, &data[0], &data[1], &data[2], &data[3], &data[4], &data[5], &mut y);
    Ok(Tensor::from_op(y, x.shape_obj().clone(), &[x, delta, a, b, c, dskip], || SelectiveBackward {
        dims: dm,
        saved: [x, delta, a, b, c, dskip].map(|t| t.contiguous().detach()),
    }))
}
