//! f64 oracles for the Fixed-Point RNN tests, written from the spec's formulas and
//! independent of the library's kernels: Householder coefficients and explicit `Q`,
//! matrix inverse, the dense recurrence `h_t = A_t h_{t−1} + (I − A_t) b_t x_t` with
//! `A_t = (I + (Λ_t⁻¹ − I) Q_t)⁻¹`, and a certified upper bound on spectral radii.
#![allow(dead_code)]

use fixpoint::Rng;
use fixpoint::fpr::{FpCore, HouseholderKernel, MixerKernel};

/// Random problem data for [`FpCore`] with a Householder mixer.
#[derive(Clone, Debug)]
pub struct Problem {
    pub b: usize,
    pub t: usize,
    pub d: usize,
    pub r: usize,
    pub scale: f32,
    pub lambda: Vec<f32>,
    pub bx: Vec<f32>,
    /// `[N, r·D + r]` pre-activations from the input.
    pub base: Vec<f32>,
    /// `[D, r·D + r]` weights on the shifted state.
    pub w_h: Option<Vec<f32>>,
}

pub struct Ranges {
    pub lambda: (f32, f32),
    /// Range of the α pre-activations.
    pub alpha_pre: (f32, f32),
    /// Standard deviation of `w_h` entries times √D (None: no state dependence).
    pub w_h_gain: Option<f32>,
}

impl Problem {
    pub fn random(b: usize, t: usize, d: usize, r: usize, scale: f32, ranges: &Ranges, rng: &mut Rng) -> Problem {
        let n = b * t * d;
        let w = r * d + r;
        let lambda = (0..n).map(|_| rng.range(ranges.lambda.0, ranges.lambda.1)).collect();
        let bx = (0..n).map(|_| rng.range(-1.0, 1.0)).collect();
        let mut base = Vec::with_capacity(b * t * w);
        for _ in 0..b * t {
            base.extend((0..r * d).map(|_| rng.normal()));
            base.extend((0..r).map(|_| rng.range(ranges.alpha_pre.0, ranges.alpha_pre.1)));
        }
        let w_h = ranges.w_h_gain.map(|g| (0..d * w).map(|_| g / (d as f32).sqrt() * rng.normal()).collect());
        Problem { b, t, d, r, scale, lambda, bx, base, w_h }
    }

    pub fn core(&self) -> FpCore {
        let k = HouseholderKernel::new(self.r, self.d, self.scale, 1e-6, self.base.clone(), self.w_h.clone()).unwrap();
        FpCore::new(self.b, self.t, self.d, self.lambda.clone(), self.bx.clone(), MixerKernel::Householder(k)).unwrap()
    }

    /// `(u, α)` of row `row` given the previous state (f64).
    pub fn coefficients(&self, row: usize, h_prev: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let (r, d) = (self.r, self.d);
        let w = r * d + r;
        let mut pre: Vec<f64> = self.base[row * w..(row + 1) * w].iter().map(|&v| v as f64).collect();
        if let Some(wh) = &self.w_h {
            for (j, p) in pre.iter_mut().enumerate() {
                *p += (0..d).map(|i| wh[i * w + j] as f64 * h_prev[i]).sum::<f64>();
            }
        }
        coefficients_f64(&pre, r, d, 1e-6)
    }

    /// The dense oracle: `h` (f64, `[B, T, D]`) and, per token, `ρ̂((I − Λ_t)(I − Q_t))`
    /// (an upper bound on the spectral radius).
    pub fn dense_oracle(&self, with_radius: bool) -> (Vec<f64>, f64) {
        let (t_len, d) = (self.t, self.d);
        let mut h = vec![0.0f64; self.b * t_len * d];
        let mut worst = 0.0f64;
        for b in 0..self.b {
            let mut h_prev = vec![0.0f64; d];
            for t in 0..t_len {
                let row = b * t_len + t;
                let (u, alpha) = self.coefficients(row, &h_prev);
                let q = q_matrix(&u, &alpha, self.scale as f64, d);
                let lam: Vec<f64> = self.lambda[row * d..(row + 1) * d].iter().map(|&v| v as f64).collect();
                if with_radius {
                    let mut k = vec![0.0f64; d * d];
                    for i in 0..d {
                        for j in 0..d {
                            let iq = if i == j { 1.0 } else { 0.0 } - q[i * d + j];
                            k[i * d + j] = (1.0 - lam[i]) * iq;
                        }
                    }
                    worst = worst.max(spectral_radius_bound(&k, d));
                }
                // A_t = (I + (Λ⁻¹ − I) Q)⁻¹
                let mut m = vec![0.0f64; d * d];
                for i in 0..d {
                    for j in 0..d {
                        m[i * d + j] = (1.0 / lam[i] - 1.0) * q[i * d + j] + if i == j { 1.0 } else { 0.0 };
                    }
                }
                let a = inverse(&m, d).expect("I + (Λ⁻¹ − I)Q is invertible");
                let bx: Vec<f64> = self.bx[row * d..(row + 1) * d].iter().map(|&v| v as f64).collect();
                let mut next = vec![0.0f64; d];
                for i in 0..d {
                    let mut s = 0.0;
                    for j in 0..d {
                        let ia = if i == j { 1.0 } else { 0.0 } - a[i * d + j];
                        s += a[i * d + j] * h_prev[j] + ia * bx[j];
                    }
                    next[i] = s;
                }
                h[row * d..(row + 1) * d].copy_from_slice(&next);
                h_prev = next;
            }
        }
        (h, worst)
    }
}

pub fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}
pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// `u_i = normalize(SiLU(pre_i))`, `α_i = σ(pre_α,i)`.
pub fn coefficients_f64(pre: &[f64], r: usize, d: usize, eps: f64) -> (Vec<f64>, Vec<f64>) {
    let mut u: Vec<f64> = pre[..r * d].iter().map(|&v| silu(v)).collect();
    for ui in u.chunks_mut(d) {
        let n = ui.iter().map(|v| v * v).sum::<f64>().sqrt().max(eps);
        ui.iter_mut().for_each(|v| *v /= n);
    }
    let alpha = pre[r * d..r * d + r].iter().map(|&v| sigmoid(v)).collect();
    (u, alpha)
}

/// `Q = H_r ⋯ H_1`, `H_i = I − scale·α_i u_i u_iᵀ`, row-major `d × d`.
pub fn q_matrix(u: &[f64], alpha: &[f64], scale: f64, d: usize) -> Vec<f64> {
    let mut q = identity(d);
    for (i, &a) in alpha.iter().enumerate() {
        let ui = &u[i * d..(i + 1) * d];
        let mut h = identity(d);
        for x in 0..d {
            for y in 0..d {
                h[x * d + y] -= scale * a * ui[x] * ui[y];
            }
        }
        q = matmul(&h, &q, d);
    }
    q
}

pub fn identity(d: usize) -> Vec<f64> {
    let mut m = vec![0.0; d * d];
    for i in 0..d {
        m[i * d + i] = 1.0;
    }
    m
}

pub fn matmul(a: &[f64], b: &[f64], d: usize) -> Vec<f64> {
    let mut c = vec![0.0; d * d];
    for i in 0..d {
        for k in 0..d {
            let aik = a[i * d + k];
            if aik == 0.0 {
                continue;
            }
            for j in 0..d {
                c[i * d + j] += aik * b[k * d + j];
            }
        }
    }
    c
}

/// Gauss–Jordan inverse with partial pivoting (None when singular).
pub fn inverse(m: &[f64], d: usize) -> Option<Vec<f64>> {
    let mut a = m.to_vec();
    let mut inv = identity(d);
    for c in 0..d {
        let p = (c..d).max_by(|&x, &y| a[x * d + c].abs().total_cmp(&a[y * d + c].abs()))?;
        if a[p * d + c].abs() < 1e-14 {
            return None;
        }
        for j in 0..d {
            a.swap(p * d + j, c * d + j);
            inv.swap(p * d + j, c * d + j);
        }
        let piv = a[c * d + c];
        for j in 0..d {
            a[c * d + j] /= piv;
            inv[c * d + j] /= piv;
        }
        for r in 0..d {
            if r != c {
                let f = a[r * d + c];
                if f != 0.0 {
                    for j in 0..d {
                        a[r * d + j] -= f * a[c * d + j];
                        inv[r * d + j] -= f * inv[c * d + j];
                    }
                }
            }
        }
    }
    Some(inv)
}

pub fn frobenius(m: &[f64]) -> f64 {
    m.iter().map(|v| v * v).sum::<f64>().sqrt()
}

/// An upper bound on the spectral radius: `‖M^(2^k)‖_F^(1/2^k)` with `k = 8` (Gelfand;
/// always ≥ ρ(M)), computed with rescaling so that nothing under- or overflows.
pub fn spectral_radius_bound(m: &[f64], d: usize) -> f64 {
    let s = frobenius(m);
    if s == 0.0 {
        return 0.0;
    }
    let mut n: Vec<f64> = m.iter().map(|v| v / s).collect();
    let mut log = s.ln();
    let k = 8;
    for _ in 0..k {
        n = matmul(&n, &n, d);
        let s = frobenius(&n);
        if s == 0.0 {
            return 0.0;
        }
        n.iter_mut().for_each(|v| *v /= s);
        log = 2.0 * log + s.ln();
    }
    (log / (1u64 << k) as f64).exp()
}

/// Largest `|got − want|` and largest `|want|`.
pub fn max_err(got: &[f32], want: &[f64]) -> (f64, f64) {
    let e = got.iter().zip(want).map(|(&g, &w)| (g as f64 - w).abs()).fold(0.0, f64::max);
    let m = want.iter().map(|w| w.abs()).fold(0.0, f64::max);
    (e, m)
}
