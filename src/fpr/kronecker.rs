//! The Kronecker mixer (spec §4.4 K, §8.2, §8.15): `D = m1·m2` with `m1` the largest
//! divisor of `D` that is at most `√D`, and
//!
//! ```text
//! π = SiLU(W_uv p)            fills upper-triangular L1 (m1×m1) and L2 (m2×m2) row by row
//! U0 = L1 L1ᵀ, V0 = L2 L2ᵀ,   each row divided by max(‖row‖, eps)
//! spectral mode:              U0 ← U0/(ρ̂(U0) + eps), V0 likewise
//! U = diag(σ(a_{1:m1})) U0,   V = diag(σ(a_{m1+1:})) V0,   a = W_d p + b_d
//! Q v = v − 2 vec_row(Uᵀ X Vᵀ) = (I − 2 Uᵀ⊗V) v,   X = reshape_row(v, m1×m2)
//! ```
//!
//! `ρ̂` is the power estimate of the dominant eigenvalue: `z_0 = 1`, 16 steps
//! `z_{k+1} = normalize(M z_k)`, and `ρ̂ = z_16ᵀ M z_15` (the last two iterates). With
//! `kron_detach_rho` the estimate is cut from the graph (the reference backpropagates
//! through the power iteration, the default). Both projections are weight-normalised;
//! the `a` bias starts at 0. On the graph it is built from existing ops (index_select,
//! batched matmul, l2_normalize); [`KroneckerKernel`] is the same map as plain data for
//! the solver.

use super::mixer::{MixerInput, zero_bias};
use crate::autograd::no_grad;
use crate::error::{Error, Result};
use crate::nn::{Linear, Module, prefixed};
use crate::ops::fused::row_dot;
use crate::rng::Rng;
use crate::tensor::Tensor;

/// Number of power-iteration steps of the spectral normalisation.
pub const POWER_STEPS: usize = 16;

/// How `U0`, `V0` are normalised (§8.2): rows only, or rows then the power estimate of the
/// dominant eigenvalue (`spectral`, the default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KronNorm {
    Rows,
    #[default]
    Spectral,
}

impl KronNorm {
    pub fn parse(s: &str) -> Result<KronNorm> {
        match s {
            "rows" => Ok(KronNorm::Rows),
            "spectral" => Ok(KronNorm::Spectral),
            _ => Err(Error::InvalidArgument {
                op: "KronNorm::parse",
                message: format!("unknown kron_norm {s:?} (rows, spectral)"),
            }),
        }
    }
}

/// `(m1, m2)` for `D`: `m1` the largest divisor of `D` with `m1² ≤ D`.
pub fn kron_factors(d: usize) -> (usize, usize) {
    let m1 = (1..=d).take_while(|m| m * m <= d).filter(|m| d.is_multiple_of(*m)).last().unwrap_or(1);
    (m1, d / m1.max(1))
}

/// For each entry of an `m×m` factor, where it comes from in `π` (offset by `off`), or
/// `zero` for the strictly lower part.
fn tri_gather(m: usize, off: usize, zero: usize) -> Vec<usize> {
    let mut idx = Vec::with_capacity(m * m);
    let mut k = off;
    for i in 0..m {
        for j in 0..m {
            idx.push(if j >= i {
                k += 1;
                k - 1
            } else {
                zero
            });
        }
    }
    idx
}

/// The Kronecker mixer module.
#[derive(Clone, Debug)]
pub struct KroneckerMixer {
    uv_proj: Linear,
    d_proj: Linear,
    dim: usize,
    m1: usize,
    m2: usize,
    norm: KronNorm,
    detach_rho: bool,
    eps: f32,
}

impl KroneckerMixer {
    pub fn new(in_dim: usize, dim: usize, norm: KronNorm, detach_rho: bool, eps: f32, rng: &mut Rng) -> Result<Self> {
        if dim == 0 || in_dim == 0 || !(eps > 0.0 && eps.is_finite()) {
            return Err(Error::InvalidArgument {
                op: "KroneckerMixer::new",
                message: format!("dim {dim} and input width {in_dim} must be positive and eps {eps} positive"),
            });
        }
        let (m1, m2) = kron_factors(dim);
        let n_tri = m1 * (m1 + 1) / 2 + m2 * (m2 + 1) / 2;
        let uv_proj = Linear::weight_normalized(in_dim, n_tri, false, rng);
        let mut d_proj = Linear::weight_normalized(in_dim, m1 + m2, true, rng);
        zero_bias(&mut d_proj);
        Ok(KroneckerMixer { uv_proj, d_proj, dim, m1, m2, norm, detach_rho, eps })
    }
    pub fn dim(&self) -> usize {
        self.dim
    }
    pub fn factors(&self) -> (usize, usize) {
        (self.m1, self.m2)
    }
    pub fn uv_proj(&self) -> &Linear {
        &self.uv_proj
    }
    pub fn d_proj(&self) -> &Linear {
        &self.d_proj
    }
    pub fn norm(&self) -> KronNorm {
        self.norm
    }
    pub fn detach_rho(&self) -> bool {
        self.detach_rho
    }
    fn n1(&self) -> usize {
        self.m1 * (self.m1 + 1) / 2
    }
    fn n_tri(&self) -> usize {
        self.n1() + self.m2 * (self.m2 + 1) / 2
    }

    /// One normalised factor `[.., m, m]` from its triangular entries.
    fn factor(&self, pi_z: &Tensor, m: usize, off: usize, lead: &[usize]) -> Result<Tensor> {
        let zero = self.n_tri();
        let l = pi_z.index_select(-1, &tri_gather(m, off, zero))?;
        let mut shape = lead.to_vec();
        shape.extend([m, m]);
        let l = l.reshape(&shape)?;
        let g = l.matmul(&l.transpose(-1, -2)?)?.l2_normalize(-1, self.eps)?;
        match self.norm {
            KronNorm::Rows => Ok(g),
            KronNorm::Spectral => {
                let m_rho = if self.detach_rho { g.detach() } else { g.clone() };
                let mut zs = lead.to_vec();
                zs.extend([m, 1]);
                let mut z = Tensor::ones(zs.as_slice());
                let mut prev = z.clone();
                for _ in 0..POWER_STEPS {
                    prev = z;
                    z = m_rho.matmul(&prev)?.l2_normalize(-2, self.eps)?;
                }
                let rho = z.transpose(-1, -2)?.matmul(&m_rho.matmul(&prev)?)?; // [.., 1, 1]
                g.div(&rho.add_scalar(self.eps))
            }
        }
    }

    /// `(U, V)` (`[.., m1, m1]`, `[.., m2, m2]`) for `p` of shape `[.., P]`.
    pub fn coefficients(&self, p: &Tensor) -> Result<(Tensor, Tensor)> {
        let lead = p.shape()[..p.rank() - 1].to_vec();
        let pi = self.uv_proj.forward(p)?.silu();
        let mut zs = lead.clone();
        zs.push(1);
        let pi_z = Tensor::concat(&[&pi, &Tensor::zeros(zs.as_slice())], -1)?;
        let u0 = self.factor(&pi_z, self.m1, 0, &lead)?;
        let v0 = self.factor(&pi_z, self.m2, self.n1(), &lead)?;
        let s = self.d_proj.forward(p)?.sigmoid().unsqueeze(-1)?;
        let u = s.narrow(-2, 0, self.m1)?.mul(&u0)?;
        let v = s.narrow(-2, self.m1, self.m2)?.mul(&v0)?;
        Ok((u, v))
    }

    /// `Q(p) v` for `p` `[.., P]` and `v` `[.., D]`.
    pub fn apply(&self, p: &Tensor, v: &Tensor) -> Result<Tensor> {
        let (u, vm) = self.coefficients(p)?;
        kron_apply(&u, &vm, v)
    }

    /// `[W_uv | W_d]` (`[P, width]`) and the bias (zeros for the `π` part), detached.
    fn fused_weights(&self) -> Result<(Tensor, Vec<f32>)> {
        no_grad(|| {
            let w = Tensor::concat(&[&self.uv_proj.weight()?, &self.d_proj.weight()?], 1)?;
            let mut bias = vec![0.0f32; self.n_tri()];
            match self.d_proj.bias() {
                Some(b) => bias.extend(b.to_vec()),
                None => bias.extend(std::iter::repeat_n(0.0, self.m1 + self.m2)),
            }
            Ok((w.detach(), bias))
        })
    }

    /// The mixer as plain data (see [`super::mixer::Mixer::kernel`]).
    pub fn kernel(&self, x_mix: &Tensor, input: MixerInput) -> Result<KroneckerKernel> {
        let d = self.dim;
        let (w, bias) = self.fused_weights()?;
        let width = w.shape()[1];
        let (w_x, w_h) = match input {
            MixerInput::Concat => (w.narrow(0, 0, d)?, Some(w.narrow(0, d, d)?)),
            MixerInput::Symmetric => (w.clone(), Some(w.clone())),
            MixerInput::InputOnly => (w.clone(), None),
        };
        let mut base = no_grad(|| x_mix.detach().matmul(&w_x))?.to_vec();
        for row in base.chunks_exact_mut(width) {
            for (b, c) in row.iter_mut().zip(&bias) {
                *b += c;
            }
        }
        Ok(KroneckerKernel {
            dim: d,
            m1: self.m1,
            m2: self.m2,
            norm: self.norm,
            eps: self.eps,
            base,
            w_h: w_h.map(|w| w.to_vec()),
        })
    }
}

impl Module for KroneckerMixer {
    fn params(&self) -> Vec<(String, &Tensor)> {
        prefixed("uv_proj", self.uv_proj.params()).chain(prefixed("d_proj", self.d_proj.params())).collect()
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        prefixed("uv_proj", self.uv_proj.params_mut()).chain(prefixed("d_proj", self.d_proj.params_mut())).collect()
    }
}

/// `v − 2 vec_row(Uᵀ X Vᵀ)` with `X = reshape_row(v, m1×m2)`, on the graph: `u`
/// `[.., m1, m1]`, `vm` `[.., m2, m2]`, `v` `[.., m1·m2]`.
pub fn kron_apply(u: &Tensor, vm: &Tensor, v: &Tensor) -> Result<Tensor> {
    let (m1, m2) = (u.shape()[u.rank() - 1], vm.shape()[vm.rank() - 1]);
    let mut xs = v.shape()[..v.rank() - 1].to_vec();
    xs.extend([m1, m2]);
    let x = v.reshape(&xs)?;
    let y = u.transpose(-1, -2)?.matmul(&x)?.matmul(&vm.transpose(-1, -2)?)?;
    v.sub(&y.reshape(v.shape())?.mul_scalar(2.0))
}

/// The Kronecker mixer as plain data: a row's pre-activations are
/// `base[row] + W_hᵀ h_{t−1}` (`π` part, then `a`).
#[derive(Clone, Debug)]
pub struct KroneckerKernel {
    pub dim: usize,
    pub m1: usize,
    pub m2: usize,
    pub norm: KronNorm,
    pub eps: f32,
    /// `[N, width]`.
    pub base: Vec<f32>,
    /// `[D, width]`; `None`: `Q` does not depend on `h`.
    pub w_h: Option<Vec<f32>>,
}

impl KroneckerKernel {
    /// Width of a row of pre-activations: `m1(m1+1)/2 + m2(m2+1)/2 + m1 + m2`.
    pub fn width(&self) -> usize {
        self.m1 * (self.m1 + 1) / 2 + self.m2 * (self.m2 + 1) / 2 + self.m1 + self.m2
    }
    pub fn rows(&self) -> usize {
        self.base.len() / self.width().max(1)
    }
    /// Values per row of coefficients: `m1² + m2²` (`U` then `V`).
    pub fn coef_len(&self) -> usize {
        self.m1 * self.m1 + self.m2 * self.m2
    }

    /// `U` then `V` (row-major) of one row from its pre-activations; `scratch` holds at
    /// least `2·max(m1, m2)²` values.
    pub fn coefficients_row(&self, pre: &[f32], coef: &mut [f32], scratch: &mut [f32]) {
        let (m1, m2) = (self.m1, self.m2);
        let n1 = m1 * (m1 + 1) / 2;
        let n2 = m2 * (m2 + 1) / 2;
        let (uc, vc) = coef.split_at_mut(m1 * m1);
        let a = &pre[n1 + n2..n1 + n2 + m1 + m2];
        self.factor_row(&pre[..n1], m1, &a[..m1], uc, scratch);
        self.factor_row(&pre[n1..n1 + n2], m2, &a[m1..], vc, scratch);
    }

    fn factor_row(&self, tri: &[f32], m: usize, a: &[f32], out: &mut [f32], scratch: &mut [f32]) {
        let (l, z) = scratch.split_at_mut(m * m);
        l.fill(0.0);
        let mut k = 0;
        for i in 0..m {
            for j in i..m {
                l[i * m + j] = silu(tri[k]);
                k += 1;
            }
        }
        for i in 0..m {
            for j in 0..m {
                out[i * m + j] = row_dot(&l[i * m..(i + 1) * m], &l[j * m..(j + 1) * m]);
            }
            let row = &mut out[i * m..(i + 1) * m];
            let n = row_dot(row, row).sqrt();
            let inv = 1.0 / if n < self.eps { self.eps } else { n };
            row.iter_mut().for_each(|x| *x *= inv);
        }
        if self.norm == KronNorm::Spectral {
            let (z, rest) = z.split_at_mut(m);
            let (prev, mz) = rest.split_at_mut(m);
            z.fill(1.0);
            for _ in 0..POWER_STEPS {
                prev.copy_from_slice(z);
                for i in 0..m {
                    z[i] = row_dot(&out[i * m..(i + 1) * m], prev);
                }
                let n = row_dot(z, z).sqrt();
                let inv = 1.0 / if n < self.eps { self.eps } else { n };
                z.iter_mut().for_each(|x| *x *= inv);
            }
            for i in 0..m {
                mz[i] = row_dot(&out[i * m..(i + 1) * m], &prev[..m]);
            }
            let rho = row_dot(z, &mz[..m]);
            let inv = 1.0 / (rho + self.eps);
            out.iter_mut().for_each(|x| *x *= inv);
        }
        for i in 0..m {
            let s = sigmoid(a[i]);
            out[i * m..(i + 1) * m].iter_mut().for_each(|x| *x *= s);
        }
    }

    /// `v ← v − 2 vec_row(Uᵀ X Vᵀ)` for one row (`coef` = `U` then `V`); `tmp` holds `D`.
    pub fn apply_row(&self, coef: &[f32], v: &mut [f32], tmp: &mut [f32]) {
        let (m1, m2) = (self.m1, self.m2);
        let (u, vm) = coef.split_at(m1 * m1);
        // tmp = Uᵀ X  (m1 × m2)
        tmp[..m1 * m2].fill(0.0);
        for k in 0..m1 {
            let xk = &v[k * m2..(k + 1) * m2];
            for i in 0..m1 {
                let c = u[k * m1 + i];
                let ti = &mut tmp[i * m2..(i + 1) * m2];
                for j in 0..m2 {
                    ti[j] = c.mul_add(xk[j], ti[j]);
                }
            }
        }
        // v −= 2 tmp Vᵀ
        for i in 0..m1 {
            let ti = &tmp[i * m2..(i + 1) * m2];
            for j in 0..m2 {
                v[i * m2 + j] -= 2.0 * row_dot(ti, &vm[j * m2..(j + 1) * m2]);
            }
        }
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

fn silu(x: f32) -> f32 {
    x * sigmoid(x)
}
