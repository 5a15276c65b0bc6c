//! Channel mixers `v ↦ Q(p) v` of the Fixed-Point RNN (spec §4.4). `Q` is never
//! materialised: it is applied row by row.
//!
//! **Householder** (reference code): `u = normalize_rows(SiLU(W_u p))` (shape `(r, D)`),
//! `α = σ(W_α p + b_α)` (shape `r`), and for `i = 1..r`: `v ← v − c·α_i u_i (u_iᵀ v)`, so
//! `Q = H_r ⋯ H_1` with eigenvalue `1 − c·α_i` along `u_i`. `c` is the
//! `hh_alpha_scale` flag (§8.1): 2 is the reference code (`I − 2αuuᵀ`, reflections,
//! eigenvalues in (−1, 1)), 1 the paper (`I − αuuᵀ`, always `‖I − H‖ < 1`). Both
//! projections are weight-normalised (`W = g·V/‖V‖` per output).
//!
//! The op [`householder`] applies given `(u, α)` to `v` and has the backward of §3.4:
//! with `g = dL/dv'` for one step `v' = v − cα u (uᵀv)`,
//!
//! ```text
//! dv = g − cα u (uᵀg),   du = −cα [(uᵀv) g + (uᵀg) v],   dα = −c (uᵀv)(uᵀg)
//! ```
//!
//! The intermediate `v_i` are recomputed in the backward rather than saved (a step with
//! `cα = 1` is a projector and cannot be inverted).
//!
//! For the solver, which runs outside the graph, [`MixerKernel`] holds the mixer as
//! plain data: the part of the pre-activations that depends on the input only, and the
//! weights acting on the shifted state.

use super::kronecker::{KronNorm, KroneckerKernel, KroneckerMixer};
use crate::autograd::{Backward, no_grad};
use crate::cpu::par::SyncPtr;
use crate::error::{Error, Result};
use crate::nn::{Linear, Module, prefixed};
use crate::ops::elementwise::Unary;
use crate::ops::fused::row_dot;
use crate::rng::Rng;
use crate::shape::Shape;
use crate::tensor::Tensor;

// ----- the Householder product op -------------------------------------------------------

/// `v ← H_r ⋯ H_1 v` for one row: `u` holds the `r` unit vectors (`r × d`), `alpha`
/// the `r` coefficients (unscaled; the step uses `scale·α_i`).
///
/// `r + 1` passes over the row instead of `2r`: the update by `u_i` and the dot product
/// with `u_{i+1}` share a pass, and the dot products keep four independent 8-lane
/// accumulators (so a row is not one long chain of dependent FMAs). The mixer op and the
/// backward's recomputation call this, so they agree bit for bit; the solver, outside
/// the graph, uses the two-pass Gram form of [`householder_mix_row`] (equal up to
/// rounding).
#[inline]
pub fn householder_row(u: &[f32], alpha: &[f32], scale: f32, v: &mut [f32]) {
    let d = v.len();
    let r = alpha.len();
    if r == 0 {
        return;
    }
    let mut dot = dot_lanes(&u[..d], v);
    for i in 0..r {
        let coef = scale * alpha[i] * dot;
        let next = (i + 1 < r).then(|| &u[(i + 1) * d..(i + 2) * d]);
        dot = axpy_dot(-coef, &u[i * d..(i + 1) * d], v, next);
    }
}

/// Elements per block of [`dot_lanes`] and [`axpy_dot`]: four 8-lane accumulators.
const DOT_BLOCK: usize = 32;

#[inline(always)]
fn lanes(x: &[f32], o: usize) -> wide::f32x8 {
    wide::f32x8::new(x[o..o + 8].try_into().expect("8 lanes"))
}

/// `a · b` with four 8-lane accumulators over blocks of 32, then one over blocks of 8,
/// then the scalar tail (the order [`axpy_dot`] reproduces).
#[inline(always)]
fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (nb, n8) = (n / DOT_BLOCK * DOT_BLOCK, n / 8 * 8);
    let mut acc = [wide::f32x8::ZERO; 4];
    let mut j = 0;
    while j < nb {
        for (q, a_q) in acc.iter_mut().enumerate() {
            let o = j + 8 * q;
            *a_q = lanes(a, o).mul_add(lanes(b, o), *a_q);
        }
        j += DOT_BLOCK;
    }
    while j < n8 {
        acc[0] = lanes(a, j).mul_add(lanes(b, j), acc[0]);
        j += 8;
    }
    let mut s = ((acc[0] + acc[1]) + (acc[2] + acc[3])).reduce_add();
    while j < n {
        s = a[j].mul_add(b[j], s);
        j += 1;
    }
    s
}

/// `v ← c·u + v` (one FMA per element), and `w · v` of the updated `v` in the same pass
/// with exactly the accumulation order of [`dot_lanes`] (0 when `w` is None).
#[inline(always)]
fn axpy_dot(c: f32, u: &[f32], v: &mut [f32], w: Option<&[f32]>) -> f32 {
    row_pass(v, w, |j, v| wide::f32x8::splat(c).mul_add(lanes(u, j), lanes(v, j)), |j, v| c.mul_add(u[j], v[j]))
}

/// One pass over a row: `v_j ← f(j)` (8 lanes at a time, `f1` for the scalar tail) and
/// `w · v` of the new values, accumulated in the order of [`dot_lanes`].
#[inline(always)]
fn row_pass(
    v: &mut [f32],
    w: Option<&[f32]>,
    f8: impl Fn(usize, &[f32]) -> wide::f32x8,
    f1: impl Fn(usize, &[f32]) -> f32,
) -> f32 {
    let n = v.len();
    let (nb, n8) = (n / DOT_BLOCK * DOT_BLOCK, n / 8 * 8);
    let mut acc = [wide::f32x8::ZERO; 4];
    let mut j = 0;
    let step = |j: usize, acc: &mut wide::f32x8, v: &mut [f32]| {
        let nv = f8(j, v);
        v[j..j + 8].copy_from_slice(&nv.to_array());
        if let Some(w) = w {
            *acc = lanes(w, j).mul_add(nv, *acc);
        }
    };
    while j < nb {
        for (q, a_q) in acc.iter_mut().enumerate() {
            step(j + 8 * q, a_q, v);
        }
        j += DOT_BLOCK;
    }
    while j < n8 {
        step(j, &mut acc[0], v);
        j += 8;
    }
    let mut s = ((acc[0] + acc[1]) + (acc[2] + acc[3])).reduce_add();
    while j < n {
        v[j] = f1(j, v);
        if let Some(w) = w {
            s = w[j].mul_add(v[j], s);
        }
        j += 1;
    }
    s
}

/// The solver's form of `H_r ⋯ H_1 w` (`w = b⊙x − h`): with `H_i = I − s α_i u_i u_iᵀ`,
///
/// ```text
/// H_r ⋯ H_1 w = w − Σ_i c_i u_i,   c_i = s α_i (u_i·w − Σ_{j<i} c_j (u_i·u_j))
/// ```
///
/// so one pass over the row takes the `r` dot products `u_i·w` (with `w` formed on the
/// fly, never stored) and the `r(r−1)/2` Gram entries `u_i·u_j`, and a second pass forms
/// `x̃ = Q w + h = b⊙x − Σ c_i u_i`. Two passes at any rank, against `r + 1` for the
/// reflections one after another, and no scratch row. A `GramFn` writes the `r`
/// coefficients `c` of one row from `(u, α, s, b⊙x, h)`. Ranks 0 to 4 are compiled for
/// their rank (accumulators in registers, loops over `i` unrolled); higher ranks take
/// [`gram_coefficients_any`] and loops over `i`.
///
/// With `extras` (the row's [`householder_row_extras`]: `u_i·b⊙x` and the Gram entries,
/// precomputed once when the coefficients do not depend on `h`), the first pass takes
/// `u_i·w = u_i·b⊙x − u_i·h` and reads neither `b⊙x` nor the Gram products.
type GramFn = fn(&[f32], &[f32], f32, Option<&[f32]>, &[f32], &[f32], &mut [f32]);

/// Values per row of [`householder_row_extras`] for rank `r`.
pub fn householder_extras_len(r: usize) -> usize {
    r + r * r.saturating_sub(1) / 2
}

/// Index of the Gram entry `u_i·u_j` (`j < i`) in a row's extras.
#[inline(always)]
fn gram_index(r: usize, i: usize, j: usize) -> usize {
    r + i * (i - 1) / 2 + j
}

/// What the solver's row needs of the coefficients and `b⊙x` alone, for `Q` independent
/// of `h`: `out[i] = u_i·b⊙x` (`i < r`), then the Gram entries `u_i·u_j` (`j < i`, row by
/// row). `out` holds [`householder_extras_len`]`(r)` values.
pub fn householder_row_extras(u: &[f32], r: usize, bx: &[f32], out: &mut [f32]) {
    let d = bx.len();
    let ui = |i: usize| &u[i * d..(i + 1) * d];
    for i in 0..r {
        out[i] = dot_lanes(ui(i), bx);
        for j in 0..i {
            out[gram_index(r, i, j)] = dot_lanes(ui(i), ui(j));
        }
    }
}

/// `R` of a row kernel whose rank is known only at run time.
const DYN_RANK: usize = usize::MAX;

/// `$f::<R>(its GramFn, args…)` with `R` the rank when it is 0 to 4, else `DYN_RANK`.
macro_rules! by_rank {
    ($r:expr, $f:ident($($arg:expr),*)) => {
        match $r {
            0 => $f::<0>(gram_coefficients_r::<0>, $($arg),*),
            1 => $f::<1>(gram_coefficients_r::<1>, $($arg),*),
            2 => $f::<2>(gram_coefficients_r::<2>, $($arg),*),
            3 => $f::<3>(gram_coefficients_r::<3>, $($arg),*),
            4 => $f::<4>(gram_coefficients_r::<4>, $($arg),*),
            _ => $f::<DYN_RANK>(gram_coefficients_any, $($arg),*),
        }
    };
}

/// `c_i` in place: on entry `c[i]` holds the dot product `p_i = u_i·w`, and `g(i, j)` gives
/// the Gram entry `u_i·u_j` (each `p_i` is read before `c_i` overwrites it).
#[inline(always)]
fn triangular_coefficients(alpha: &[f32], scale: f32, g: impl Fn(usize, usize) -> f32, c: &mut [f32]) {
    for i in 0..alpha.len() {
        let mut s = c[i];
        for j in 0..i {
            s = (-c[j]).mul_add(g(i, j), s);
        }
        c[i] = scale * alpha[i] * s;
    }
}

/// `f(k, q)` for the 8-lane chunks `k < nb`: pairs of chunks on accumulators `q = 0, 1`,
/// then a last odd chunk on `q = 0` (the order both Gram passes accumulate in).
#[inline(always)]
fn paired_chunks(nb: usize, mut f: impl FnMut(usize, usize)) {
    let mut k = 0;
    while k + 2 <= nb {
        f(k, 0);
        f(k + 1, 1);
        k += 2;
    }
    if k < nb {
        f(k, 0);
    }
}

/// The coefficients `c` (a [`GramFn`]) for rank `R ≤ 4`: two 8-lane accumulators per dot
/// product (blocks of 16), then one over a last block of 8, then the scalar tail.
#[inline(always)]
fn gram_coefficients_r<const R: usize>(
    u: &[f32],
    alpha: &[f32],
    scale: f32,
    extras: Option<&[f32]>,
    bx: &[f32],
    h: &[f32],
    c: &mut [f32],
) {
    use wide::f32x8;
    let d = bx.len();
    let (u, h) = (&u[..R * d], &h[..d]);
    // Whole 8-lane chunks, sliced to one length so that the loop needs no bounds checks.
    let nb = d / 8;
    let (bxc, hc) = (&bx.as_chunks::<8>().0[..nb], &h.as_chunks::<8>().0[..nb]);
    let uc: [&[[f32; 8]]; R] = std::array::from_fn(|i| &u[i * d..(i + 1) * d].as_chunks::<8>().0[..nb]);
    let mut ps = [0.0f32; R];
    let mut gs = [[0.0f32; R]; R];
    if let Some(ex) = extras {
        // `u_i·h` only; `u_i·b⊙x` and the Gram entries are given.
        let mut p = [[f32x8::ZERO; 2]; R];
        paired_chunks(nb, |k, q| {
            let hv = f32x8::new(hc[k]);
            for i in 0..R {
                p[i][q] = f32x8::new(uc[i][k]).mul_add(hv, p[i][q]);
            }
        });
        for i in 0..R {
            ps[i] = (p[i][0] + p[i][1]).reduce_add();
        }
        for k in nb * 8..d {
            for i in 0..R {
                ps[i] = u[i * d + k].mul_add(h[k], ps[i]);
            }
        }
        for i in 0..R {
            c[i] = ex[i] - ps[i];
        }
        triangular_coefficients(alpha, scale, |i, j| ex[gram_index(R, i, j)], c);
        return;
    }
    let mut p = [[f32x8::ZERO; 2]; R];
    let mut g = [[[f32x8::ZERO; 2]; R]; R];
    paired_chunks(nb, |k, q| {
        let w = f32x8::new(bxc[k]) - f32x8::new(hc[k]);
        let us: [f32x8; R] = std::array::from_fn(|i| f32x8::new(uc[i][k]));
        for i in 0..R {
            p[i][q] = us[i].mul_add(w, p[i][q]);
            for j in 0..i {
                g[i][j][q] = us[i].mul_add(us[j], g[i][j][q]);
            }
        }
    });
    let o = nb * 8;
    for i in 0..R {
        ps[i] = (p[i][0] + p[i][1]).reduce_add();
        for j in 0..i {
            gs[i][j] = (g[i][j][0] + g[i][j][1]).reduce_add();
        }
    }
    for k in o..d {
        let w = bx[k] - h[k];
        for i in 0..R {
            let ui = u[i * d + k];
            ps[i] = ui.mul_add(w, ps[i]);
            for j in 0..i {
                gs[i][j] = ui.mul_add(u[j * d + k], gs[i][j]);
            }
        }
    }
    c[..R].copy_from_slice(&ps);
    triangular_coefficients(alpha, scale, |i, j| gs[i][j], c);
}

/// The coefficients `c` (a [`GramFn`]) for any rank (used above rank 4): one product at a
/// time with [`dot_lanes`]'s order, `u_i·w` as `u_i·b⊙x − u_i·h` (the extras' form, so no
/// row is formed), and nothing allocated.
fn gram_coefficients_any(
    u: &[f32],
    alpha: &[f32],
    scale: f32,
    extras: Option<&[f32]>,
    bx: &[f32],
    h: &[f32],
    c: &mut [f32],
) {
    let (d, r) = (bx.len(), alpha.len());
    let ui = |i: usize| &u[i * d..(i + 1) * d];
    for (i, ci) in c.iter_mut().enumerate() {
        let ub = extras.map_or_else(|| dot_lanes(ui(i), bx), |ex| ex[i]);
        *ci = ub - dot_lanes(ui(i), &h[..d]);
    }
    match extras {
        Some(ex) => triangular_coefficients(alpha, scale, |i, j| ex[gram_index(r, i, j)], c),
        None => triangular_coefficients(alpha, scale, |i, j| dot_lanes(ui(i), ui(j)), c),
    }
}

/// `x̃ = b⊙x − Σ_i c_i u_i` for the 8 lanes of chunk `k` (`uc[i]`: the chunks of `u_i`;
/// the subtractions in order `i = 1..r`).
#[inline(always)]
fn gram_mix8(uc: &[&[[f32; 8]]], c: &[f32], bx: [f32; 8], k: usize) -> wide::f32x8 {
    let mut x = wide::f32x8::new(bx);
    for (ui, &ci) in uc.iter().zip(c) {
        x = wide::f32x8::splat(-ci).mul_add(wide::f32x8::new(ui[k]), x);
    }
    x
}

/// [`gram_mix8`] for one lane.
#[inline(always)]
fn gram_mix1(u: &[f32], c: &[f32], bx: &[f32], k: usize) -> f32 {
    let d = bx.len();
    c.iter().enumerate().fold(bx[k], |x, (i, &ci)| (-ci).mul_add(u[i * d + k], x))
}

/// One row's Householder data for the solver: `(u, α, scale, extras)`.
type Hh<'a> = (&'a [f32], &'a [f32], f32, Option<&'a [f32]>);

/// Coefficients on the stack up to this rank (a heap buffer above it).
const STACK_RANK: usize = 16;

/// Run `f` with the coefficients `c` of one row (`R` of them, or `alpha.len()` for
/// `DYN_RANK`; a constant length lets the loops over `c` unroll) and the whole 8-lane
/// chunks of each `u_i` (`d / 8` of them).
#[inline(always)]
fn with_gram<const R: usize, T>(
    gram: GramFn,
    (u, alpha, scale, extras): Hh,
    bx: &[f32],
    h: &[f32],
    f: impl FnOnce(&[f32], &[&[[f32; 8]]]) -> T,
) -> T {
    let r = if R == DYN_RANK { alpha.len() } else { R };
    let (d, nb) = (bx.len(), bx.len() / 8);
    let chunks = |i: usize| &u[i * d..(i + 1) * d].as_chunks::<8>().0[..nb];
    if r <= STACK_RANK {
        let mut c = [0.0f32; STACK_RANK];
        gram(u, &alpha[..r], scale, extras, bx, h, &mut c[..r]);
        let mut uc: [&[[f32; 8]]; STACK_RANK] = [&[]; STACK_RANK];
        for (i, x) in uc[..r].iter_mut().enumerate() {
            *x = chunks(i);
        }
        f(&c[..r], &uc[..r])
    } else {
        let mut c = vec![0.0f32; r];
        gram(u, alpha, scale, extras, bx, h, &mut c);
        let uc: Vec<&[[f32; 8]]> = (0..r).map(chunks).collect();
        f(&c, &uc)
    }
}

/// `v = H_r ⋯ H_1 (b⊙x − h) + h` for one row, in the solver's form (see [`GramFn`]):
/// `v = b⊙x − Σ c_i u_i`, two passes at any rank. It equals the reflections applied one
/// after another (`b⊙x − h`, [`householder_row`], `+ h`) up to rounding; every path of
/// the solver (fused, two-pass, time-blocked) uses this form, so they agree bit for bit.
#[inline]
///
/// `extras`: the row's [`householder_row_extras`] when `Q` does not depend on `h` (the
/// same value either way, up to rounding; a solve uses one or the other throughout).
pub fn householder_mix_row(
    (u, alpha, scale): (&[f32], &[f32], f32),
    extras: Option<&[f32]>,
    bx: &[f32],
    h: &[f32],
    v: &mut [f32],
) {
    by_rank!(alpha.len(), mix_row_r((u, alpha, scale, extras), bx, h, v))
}

#[inline(always)]
fn mix_row_r<const R: usize>(gram: GramFn, hh: Hh, bx: &[f32], h: &[f32], v: &mut [f32]) {
    let (d, u) = (v.len(), hh.0);
    let bx = &bx[..d];
    with_gram::<R, ()>(gram, hh, bx, h, |c, uc| {
        let nb = d / 8;
        let (bxc, vc) = (&bx.as_chunks::<8>().0[..nb], &mut v.as_chunks_mut::<8>().0[..nb]);
        for k in 0..nb {
            vc[k] = gram_mix8(uc, c, bxc[k], k).to_array();
        }
        for k in nb * 8..d {
            v[k] = gram_mix1(u, c, bx, k);
        }
    })
}

/// [`householder_mix_row`] followed by the gate and one scan step,
/// `out = λ ⊙ carry + (1 − λ) ⊙ x̃` (carry zero when None), with `x̃`, the gate and the
/// scan step in the second pass. Bit for bit the separate steps (the scan kernel's
/// `λ.mul_add(carry, (1 − λ)·x̃)`).
#[inline]
pub fn householder_mix_gate_row(
    (u, alpha, scale): (&[f32], &[f32], f32),
    extras: Option<&[f32]>,
    (bx, h, lam): (&[f32], &[f32], &[f32]),
    carry: Option<&[f32]>,
    out: &mut [f32],
) {
    by_rank!(alpha.len(), mix_gate_row_r((u, alpha, scale, extras), bx, h, lam, carry, out))
}

#[inline(always)]
fn mix_gate_row_r<const R: usize>(
    gram: GramFn,
    hh: Hh,
    bx: &[f32],
    h: &[f32],
    lam: &[f32],
    carry: Option<&[f32]>,
    out: &mut [f32],
) {
    let (d, u) = (out.len(), hh.0);
    let (bx, lam) = (&bx[..d], &lam[..d]);
    with_gram::<R, ()>(gram, hh, bx, h, |c, uc| {
        let one = wide::f32x8::splat(1.0);
        let nb = d / 8;
        let (bxc, lamc) = (&bx.as_chunks::<8>().0[..nb], &lam.as_chunks::<8>().0[..nb]);
        let outc = &mut out.as_chunks_mut::<8>().0[..nb];
        let gate = |k: usize, carry: wide::f32x8| {
            let l = wide::f32x8::new(lamc[k]);
            l.mul_add(carry, (one - l) * gram_mix8(uc, c, bxc[k], k)).to_array()
        };
        match carry {
            Some(cr) => {
                let crc = &cr[..d].as_chunks::<8>().0[..nb];
                for k in 0..nb {
                    outc[k] = gate(k, wide::f32x8::new(crc[k]));
                }
                for k in nb * 8..d {
                    out[k] = lam[k].mul_add(cr[k], (1.0 - lam[k]) * gram_mix1(u, c, bx, k));
                }
            }
            None => {
                for k in 0..nb {
                    outc[k] = gate(k, wide::f32x8::ZERO);
                }
                for k in nb * 8..d {
                    out[k] = lam[k].mul_add(0.0, (1.0 - lam[k]) * gram_mix1(u, c, bx, k));
                }
            }
        }
    })
}

/// Backward of [`householder_row`] for one row: given the forward input `v` and the
/// upstream gradient `g` (overwritten with `dv`), writes `(du, dalpha)`: `du` (`r × d`) and `dalpha`
/// (`r`). `scratch` must hold `r·d` values (the recomputed step inputs).
#[inline]
pub fn householder_row_backward(
    u: &[f32],
    alpha: &[f32],
    scale: f32,
    v: &[f32],
    g: &mut [f32],
    (du, dalpha): (&mut [f32], &mut [f32]),
    scratch: &mut [f32],
) {
    let d = v.len();
    let r = alpha.len();
    // Inputs of each step: scratch[i] = v_i (v_0 = v).
    scratch[..d].copy_from_slice(v);
    for i in 1..r {
        let (done, rest) = scratch.split_at_mut(i * d);
        let cur = &mut rest[..d];
        cur.copy_from_slice(&done[(i - 1) * d..]);
        householder_row(&u[(i - 1) * d..i * d], &alpha[i - 1..i], scale, cur);
    }
    for i in (0..r).rev() {
        let ui = &u[i * d..(i + 1) * d];
        let vi = &scratch[i * d..(i + 1) * d];
        let s = row_dot(ui, vi);
        let w = row_dot(ui, g);
        let ca = scale * alpha[i];
        dalpha[i] = -scale * s * w;
        let dui = &mut du[i * d..(i + 1) * d];
        for j in 0..d {
            dui[j] = -ca * (s * g[j] + w * vi[j]);
        }
        for j in 0..d {
            g[j] = (-ca * w).mul_add(ui[j], g[j]);
        }
    }
}

/// Rows per parallel task for row-wise mixer kernels (fixed by the shape).
pub(crate) fn rows_per_task(row_work: usize) -> usize {
    crate::cpu::par::rows_for(row_work, crate::cpu::par::ELEMWISE_CHUNK)
}

/// Sizes of a Householder application: `n` rows of dimension `d`, rank `r`.
fn householder_dims(u: &Tensor, alpha: &Tensor, v: &Tensor) -> Result<(usize, usize, usize)> {
    const OP: &str = "householder";
    let vs = v.shape();
    if vs.is_empty() {
        return Err(Error::InvalidArgument { op: OP, message: format!("v must be [.., D], got {}", v.shape_obj()) });
    }
    let lead = &vs[..vs.len() - 1];
    let d = vs[vs.len() - 1];
    let us = u.shape();
    if us.len() != vs.len() + 1 || &us[..lead.len()] != lead || us[us.len() - 1] != d {
        return Err(Error::ShapeMismatch {
            op: "householder (u [.., r, D] vs v [.., D])",
            lhs: u.shape_obj().clone(),
            rhs: v.shape_obj().clone(),
        });
    }
    let r = us[us.len() - 2];
    let mut want = lead.to_vec();
    want.push(r);
    if alpha.shape() != want.as_slice() {
        return Err(Error::ShapeMismatch {
            op: "householder (alpha vs [.., r] of u)",
            lhs: alpha.shape_obj().clone(),
            rhs: Shape::new(want),
        });
    }
    Ok((lead.iter().product(), r, d))
}

struct HouseholderBackward {
    u: Tensor,
    alpha: Tensor,
    v: Tensor,
    scale: f32,
    dims: (usize, usize, usize),
}

impl Backward for HouseholderBackward {
    fn name(&self) -> &'static str {
        "householder"
    }
    fn backward(&self, g: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        if Tensor::common_device("householder backward", &[&self.v, g])? == crate::Device::Gpu {
            let op = "householder backward";
            return on_gpu!(
                op,
                mixer::householder_backward([&self.u, &self.alpha, &self.v], g, self.scale, self.dims, needs)
            );
        }
        let (n, r, d) = self.dims;
        let (u, alpha, v) = (self.u.contiguous_data(), self.alpha.contiguous_data(), self.v.contiguous_data());
        let mut dv = g.contiguous_data().into_owned();
        let mut du = vec![0.0f32; n * r * d];
        let mut da = vec![0.0f32; n * r];
        let rows = rows_per_task(r * d);
        let (du_p, da_p) = (SyncPtr(du.as_mut_ptr()), SyncPtr(da.as_mut_ptr()));
        crate::cpu::par::for_row_chunks_mut(&mut dv, d.max(1), rows, crate::cpu::par::ELEMWISE_MIN, |row0, chunk| {
            let mut scratch = vec![0.0f32; r * d];
            for (k, gr) in chunk.chunks_exact_mut(d.max(1)).enumerate() {
                let row = row0 + k;
                // SAFETY: each task writes only the du / dalpha rows of its own rows.
                let (dur, dar) = unsafe { (du_p.slice(row * r * d, r * d), da_p.slice(row * r, r)) };
                householder_row_backward(
                    &u[row * r * d..][..r * d],
                    &alpha[row * r..][..r],
                    self.scale,
                    &v[row * d..][..d],
                    gr,
                    (dur, dar),
                    &mut scratch,
                );
            }
        });
        Ok(vec![
            needs[0].then(|| Tensor::from_parts(du, self.u.shape_obj().clone())),
            needs[1].then(|| Tensor::from_parts(da, self.alpha.shape_obj().clone())),
            needs[2].then(|| Tensor::from_parts(dv, self.v.shape_obj().clone())),
        ])
    }
}

/// `Q v` with `Q = H_r ⋯ H_1`, `H_i = I − scale·α_i u_i u_iᵀ`, for every row: `u`
/// `[.., r, D]`, `alpha` `[.., r]`, `v` `[.., D]` with the same leading axes. `u` is used
/// as given (the mixer normalises it). Differentiable in all three.
///
/// ```
/// use fixpoint::{Tensor, fpr::householder};
/// let u = Tensor::from_vec(vec![1.0, 0.0], [1, 1, 2])?;
/// let a = Tensor::from_vec(vec![1.0], [1, 1])?;
/// let v = Tensor::from_vec(vec![3.0, 4.0], [1, 2])?;
/// assert_eq!(householder(&u, &a, &v, 2.0)?.to_vec(), vec![-3.0, 4.0]); // a reflection
/// # Ok::<(), fixpoint::Error>(())
/// ```
pub fn householder(u: &Tensor, alpha: &Tensor, v: &Tensor, scale: f32) -> Result<Tensor> {
    let _p = crate::profile::fwd("householder");
    let (n, r, d) = householder_dims(u, alpha, v)?;
    let out = match Tensor::common_device("householder", &[u, alpha, v])? {
        crate::Device::Cpu => crate::storage::Storage::Cpu(householder_cpu(u, alpha, v, scale, (n, r, d))),
        crate::Device::Gpu => on_gpu!("householder", mixer::householder(u, alpha, v, scale, (n, r, d)))?,
    };
    Ok(Tensor::from_storage_op(out, v.shape_obj().clone(), &[u, alpha, v], || HouseholderBackward {
        u: u.contiguous().detach(),
        alpha: alpha.contiguous().detach(),
        v: v.contiguous().detach(),
        scale,
        dims: (n, r, d),
    }))
}

/// The forward of [`householder`] on CPU operands.
fn householder_cpu(u: &Tensor, alpha: &Tensor, v: &Tensor, scale: f32, (_, r, d): (usize, usize, usize)) -> Vec<f32> {
    let (ud, ad) = (u.contiguous_data(), alpha.contiguous_data());
    let mut out = v.to_vec();
    if d > 0 {
        let rows = rows_per_task(r * d);
        crate::cpu::par::for_row_chunks_mut(&mut out, d, rows, crate::cpu::par::ELEMWISE_MIN, |row0, chunk| {
            for (k, vr) in chunk.chunks_exact_mut(d).enumerate() {
                let row = row0 + k;
                householder_row(&ud[row * r * d..][..r * d], &ad[row * r..][..r], scale, vr);
            }
        });
    }
    out
}

/// `u` (`r × D`) and `α` (`r`, unscaled) of one row from its pre-activations:
/// `u_i = SiLU(pre_u,i) / max(‖SiLU(pre_u,i)‖, eps)`, `α = σ(pre_α)`. `norms` (if given,
/// `r` values) receives `‖SiLU(pre_u,i)‖`.
#[inline]
pub fn householder_coefficients_row(
    pre_u: &[f32],
    pre_a: &[f32],
    eps: f32,
    (u, alpha): (&mut [f32], &mut [f32]),
    norms: Option<&mut [f32]>,
) {
    let (r, d) = (alpha.len(), u.len() / alpha.len().max(1));
    Unary::Silu.forward_slice(&pre_u[..r * d], u);
    let mut norms = norms;
    for (i, ui) in u.chunks_exact_mut(d.max(1)).enumerate() {
        let norm = row_dot(ui, ui).sqrt();
        if let Some(n) = norms.as_deref_mut() {
            n[i] = norm;
        }
        let inv = 1.0 / if norm < eps { eps } else { norm };
        for x in ui.iter_mut() {
            *x *= inv;
        }
    }
    Unary::Sigmoid.forward_slice(&pre_a[..r], alpha);
}

struct HouseholderPreBackward {
    pre_u: Tensor,
    pre_a: Tensor,
    v: Tensor,
    scale: f32,
    eps: f32,
    dims: (usize, usize, usize),
}

impl Backward for HouseholderPreBackward {
    fn name(&self) -> &'static str {
        "householder_from_pre"
    }
    fn backward(&self, g: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let (n, r, d) = self.dims;
        let (pu, pa, v) = (self.pre_u.contiguous_data(), self.pre_a.contiguous_data(), self.v.contiguous_data());
        let mut dv = g.contiguous_data().into_owned();
        let mut dpu = vec![0.0f32; n * r * d];
        let mut dpa = vec![0.0f32; n * r];
        let rows = rows_per_task(4 * r * d);
        let (du_p, da_p) = (SyncPtr(dpu.as_mut_ptr()), SyncPtr(dpa.as_mut_ptr()));
        crate::cpu::par::for_row_chunks_mut(&mut dv, d.max(1), rows, crate::cpu::par::ELEMWISE_MIN, |row0, chunk| {
            let (mut u, mut alpha, mut norms) = (vec![0.0f32; r * d], vec![0.0f32; r], vec![0.0f32; r]);
            let (mut du, mut da, mut scratch) = (vec![0.0f32; r * d], vec![0.0f32; r], vec![0.0f32; r * d]);
            for (k, gr) in chunk.chunks_exact_mut(d.max(1)).enumerate() {
                let row = row0 + k;
                let (pur, par) = (&pu[row * r * d..][..r * d], &pa[row * r..][..r]);
                householder_coefficients_row(pur, par, self.eps, (&mut u, &mut alpha), Some(&mut norms));
                householder_row_backward(
                    &u,
                    &alpha,
                    self.scale,
                    &v[row * d..][..d],
                    gr,
                    (&mut du, &mut da),
                    &mut scratch,
                );
                // SAFETY: each task writes only the rows of its own rows.
                let (dpur, dpar) = unsafe { (du_p.slice(row * r * d, r * d), da_p.slice(row * r, r)) };
                // dα_pre = dα · α(1 − α)
                Unary::Sigmoid.backward_slice(&alpha, &da, dpar);
                // Through the normalisation: ds = (du − u(uᵀdu))/‖s‖ above eps, du/eps below.
                for i in 0..r {
                    let (ui, dui) = (&u[i * d..(i + 1) * d], &mut du[i * d..(i + 1) * d]);
                    let norm = norms[i];
                    if norm < self.eps {
                        let inv = 1.0 / self.eps;
                        dui.iter_mut().for_each(|x| *x *= inv);
                    } else {
                        let (p, inv) = (row_dot(dui, ui), 1.0 / norm);
                        for j in 0..d {
                            dui[j] = (dui[j] - ui[j] * p) * inv;
                        }
                    }
                }
                // Through SiLU.
                Unary::Silu.backward_slice(pur, &du, dpur);
            }
        });
        Ok(vec![
            needs[0].then(|| Tensor::from_parts(dpu, self.pre_u.shape_obj().clone())),
            needs[1].then(|| Tensor::from_parts(dpa, self.pre_a.shape_obj().clone())),
            needs[2].then(|| Tensor::from_parts(dv, self.v.shape_obj().clone())),
        ])
    }
}

/// `Q v` for every row with the Householder coefficients taken from their
/// pre-activations: `u_i = normalize(SiLU(pre_u,i))` (guard `eps`), `α = σ(pre_α)`,
/// `Q = H_r ⋯ H_1`, `H_i = I − scale·α_i u_i u_iᵀ`. `pre_u` is `[.., r·D]`, `pre_a`
/// `[.., r]`, `v` `[.., D]`. The same function as [`householder`] after SiLU, the
/// normalisation and the sigmoid, as one op: it keeps only its three inputs for the
/// backward and recomputes `u` and `α` there (the composite keeps three `r·D` tensors
/// per row).
pub fn householder_from_pre(pre_u: &Tensor, pre_a: &Tensor, v: &Tensor, scale: f32, eps: f32) -> Result<Tensor> {
    let _p = crate::profile::fwd("householder_from_pre");
    const OP: &str = "householder_from_pre";
    let vs = v.shape();
    let bad = || Error::ShapeMismatch { op: OP, lhs: pre_u.shape_obj().clone(), rhs: v.shape_obj().clone() };
    if vs.is_empty() || pre_u.rank() != vs.len() || pre_a.rank() != vs.len() {
        return Err(bad());
    }
    let lead = &vs[..vs.len() - 1];
    let (d, r) = (vs[vs.len() - 1], pre_a.shape()[vs.len() - 1]);
    if &pre_u.shape()[..lead.len()] != lead
        || &pre_a.shape()[..lead.len()] != lead
        || pre_u.shape()[lead.len()] != r * d
    {
        return Err(bad());
    }
    if !(eps > 0.0 && eps.is_finite()) {
        return Err(Error::InvalidArgument { op: OP, message: format!("eps must be positive and finite, got {eps}") });
    }
    let n: usize = lead.iter().product();
    let (pu, pa) = (pre_u.contiguous_data(), pre_a.contiguous_data());
    let mut out = v.to_vec();
    if d > 0 && r > 0 {
        let rows = rows_per_task(3 * r * d);
        crate::cpu::par::for_row_chunks_mut(&mut out, d, rows, crate::cpu::par::ELEMWISE_MIN, |row0, chunk| {
            let (mut u, mut alpha) = (vec![0.0f32; r * d], vec![0.0f32; r]);
            for (k, vr) in chunk.chunks_exact_mut(d).enumerate() {
                let row = row0 + k;
                let (pur, par) = (&pu[row * r * d..][..r * d], &pa[row * r..][..r]);
                householder_coefficients_row(pur, par, eps, (&mut u, &mut alpha), None);
                householder_row(&u, &alpha, scale, vr);
            }
        });
    }
    Ok(Tensor::from_op(out, v.shape_obj().clone(), &[pre_u, pre_a, v], || HouseholderPreBackward {
        pre_u: pre_u.contiguous().detach(),
        pre_a: pre_a.contiguous().detach(),
        v: v.contiguous().detach(),
        scale,
        eps,
        dims: (n, r, d),
    }))
}

// ----- mixer modules ----------------------------------------------------------------------

/// Which mixer a block uses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MixerKind {
    /// `Q ≡ I`: the diagonal baseline (one iteration is exact).
    Identity,
    /// Product of `rank` Householder steps `I − alpha_scale·α uuᵀ`.
    Householder { rank: usize, alpha_scale: f32 },
    /// `I − 2Uᵀ⊗V` (see [`super::kronecker`]); `norm` is `kron_norm`, `detach_rho`
    /// `kron_detach_rho` (§8.2, §8.15).
    Kronecker { norm: KronNorm, detach_rho: bool },
    /// Diagonal plus low rank, `Qv = v − 2Σ_i α_i u_i(u_iᵀv)`. Not contractive: FP-Mamba
    /// only; the FP-RNN block refuses it (§8.12).
    Dplr { rank: usize },
}

impl MixerKind {
    pub fn name(&self) -> &'static str {
        match self {
            MixerKind::Identity => "identity",
            MixerKind::Householder { .. } => "householder",
            MixerKind::Kronecker { .. } => "kronecker",
            MixerKind::Dplr { .. } => "dplr",
        }
    }
    /// The Kronecker mixer with the defaults of §8 (spectral, gradient through `ρ̂`).
    pub fn kronecker() -> MixerKind {
        MixerKind::Kronecker { norm: KronNorm::Spectral, detach_rho: false }
    }
}

/// What the mixer sees (spec §4.2): `p = [x_mix; shift(h)]` (`Concat`, default, `P = 2D`),
/// `x_mix + shift(h)` (`Symmetric`, the reference's `symm_mixer`, `P = D`), or `x_mix`
/// alone (`InputOnly`, no hidden-state dependence, `P = D`: then `F` is affine in `h`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MixerInput {
    #[default]
    Concat,
    Symmetric,
    InputOnly,
}

impl MixerInput {
    /// Width `P` of `p` for channel dimension `d`.
    pub fn width(&self, d: usize) -> usize {
        match self {
            MixerInput::Concat => 2 * d,
            _ => d,
        }
    }
    /// Whether `Q` depends on the state.
    pub fn uses_state(&self) -> bool {
        !matches!(self, MixerInput::InputOnly)
    }
    /// `p` from the mixer input `x_mix` (`[B, T, D]`) and the state `h` (`[B, T, D]`);
    /// the state enters shifted by one step (`p_t` sees `h_{t−1}`, zeros at `t = 0`).
    pub fn build(&self, x_mix: &Tensor, h: &Tensor) -> Result<Tensor> {
        match self {
            MixerInput::Concat => Tensor::concat(&[x_mix, &h.shift(1, 1)?], -1),
            MixerInput::Symmetric => x_mix.add(&h.shift(1, 1)?),
            MixerInput::InputOnly => Ok(x_mix.clone()),
        }
    }
}

/// The Householder mixer: `u_proj` (`P → r·D`, weight-normalised, no bias) and
/// `alpha_proj` (`P → r`, weight-normalised, bias).
#[derive(Clone, Debug)]
pub struct HouseholderMixer {
    u_proj: Linear,
    alpha_proj: Linear,
    rank: usize,
    dim: usize,
    alpha_scale: f32,
    eps: f32,
}

impl HouseholderMixer {
    /// A mixer for `p` of width `in_dim` acting on vectors of dimension `dim`. Weights get
    /// PyTorch's default init (with `g = ‖V‖`, so `W = V` at init) and the α bias is 0.
    /// `alpha_scale` must be 1 (paper) or 2 (reference code); `eps` guards the
    /// normalisation of `u`.
    pub fn new(in_dim: usize, dim: usize, rank: usize, alpha_scale: f32, eps: f32, rng: &mut Rng) -> Result<Self> {
        if rank == 0 || dim == 0 || in_dim == 0 {
            return Err(Error::InvalidArgument {
                op: "HouseholderMixer::new",
                message: format!("rank {rank}, dim {dim} and input width {in_dim} must be positive"),
            });
        }
        if alpha_scale != 1.0 && alpha_scale != 2.0 {
            return Err(Error::InvalidArgument {
                op: "HouseholderMixer::new",
                message: format!("hh_alpha_scale must be 1 (paper) or 2 (reference code), got {alpha_scale}"),
            });
        }
        if !(eps > 0.0 && eps.is_finite()) {
            return Err(Error::InvalidArgument {
                op: "HouseholderMixer::new",
                message: format!("eps must be positive and finite, got {eps}"),
            });
        }
        let u_proj = Linear::weight_normalized(in_dim, rank * dim, false, rng);
        let mut alpha_proj = Linear::weight_normalized(in_dim, rank, true, rng);
        zero_bias(&mut alpha_proj);
        Ok(HouseholderMixer { u_proj, alpha_proj, rank, dim, alpha_scale, eps })
    }
    pub fn rank(&self) -> usize {
        self.rank
    }
    pub fn dim(&self) -> usize {
        self.dim
    }
    pub fn in_dim(&self) -> usize {
        self.u_proj.in_features()
    }
    pub fn alpha_scale(&self) -> f32 {
        self.alpha_scale
    }
    pub fn eps(&self) -> f32 {
        self.eps
    }
    pub fn u_proj(&self) -> &Linear {
        &self.u_proj
    }
    pub fn alpha_proj(&self) -> &Linear {
        &self.alpha_proj
    }

    /// `u = normalize(SiLU(W_u p))` (`[.., r, D]`) and `α = σ(W_α p + b_α)` (`[.., r]`,
    /// unscaled) for `p` of shape `[.., P]`.
    pub fn coefficients(&self, p: &Tensor) -> Result<(Tensor, Tensor)> {
        let pre = self.u_proj.forward(p)?;
        let mut shape = p.shape()[..p.rank() - 1].to_vec();
        shape.extend([self.rank, self.dim]);
        let u = pre.reshape(&shape)?.silu().l2_normalize(-1, self.eps)?;
        let alpha = self.alpha_proj.forward(p)?.sigmoid();
        Ok((u, alpha))
    }

    /// `Q(p) v` for `p` `[.., P]` and `v` `[.., D]`.
    pub fn apply(&self, p: &Tensor, v: &Tensor) -> Result<Tensor> {
        let (pre_u, pre_a) = (self.u_proj.forward(p)?, self.alpha_proj.forward(p)?);
        householder_from_pre(&pre_u, &pre_a, v, self.alpha_scale, self.eps)
    }

    /// The rows of `[W_u, W_α]` acting on the input part of `p` (`x`) and on the state
    /// (`h`; None without state dependence), on the graph.
    fn split_weights(&self, input: MixerInput) -> Result<[(Tensor, Option<Tensor>); 2]> {
        let d = self.dim;
        let split = |w: Tensor| -> Result<(Tensor, Option<Tensor>)> {
            Ok(match input {
                MixerInput::Concat => (w.narrow(0, 0, d)?, Some(w.narrow(0, d, d)?)),
                MixerInput::Symmetric => (w.clone(), Some(w)),
                MixerInput::InputOnly => (w, None),
            })
        };
        Ok([split(self.u_proj.weight()?)?, split(self.alpha_proj.weight()?)?])
    }

    /// The input part of the pre-activations on the graph, `(x_mix·W_ux, x_mix·W_αx + b_α)`
    /// for `x_mix` of shape `[.., D]` (`p = x_mix` when `Q` ignores the state). With
    /// [`HouseholderMixer::apply_with_base`] this is [`HouseholderMixer::apply`] split in
    /// two: the input part is computed once per forward (the solver's kernel takes its
    /// values), the state part once per step.
    pub fn base(&self, x_mix: &Tensor, input: MixerInput) -> Result<(Tensor, Tensor)> {
        let [(wu, _), (wa, _)] = self.split_weights(input)?;
        let bu = x_mix.matmul(&wu)?;
        let ba = x_mix.matmul(&wa)?;
        let ba = match self.alpha_proj.bias() {
            Some(b) => ba.add(b)?,
            None => ba,
        };
        Ok((bu, ba))
    }

    /// `Q(p) v` from the input part of the pre-activations ([`HouseholderMixer::base`])
    /// and the state `h` (`[.., T, D]`; it enters shifted, as in [`MixerInput::build`]).
    pub fn apply_with_base(
        &self,
        base: &(Tensor, Tensor),
        h: &Tensor,
        input: MixerInput,
        v: &Tensor,
    ) -> Result<Tensor> {
        let (pu, pa) = match self.split_weights(input)? {
            [(_, Some(wu)), (_, Some(wa))] => {
                let hs = h.shift(1, 1)?;
                (base.0.add(&hs.matmul(&wu)?)?, base.1.add(&hs.matmul(&wa)?)?)
            }
            _ => base.clone(),
        };
        householder_from_pre(&pu, &pa, v, self.alpha_scale, self.eps)
    }

    /// The mixer as plain data from the input part of its pre-activations (`base`, see
    /// [`HouseholderMixer::base`]; its values are used, detached).
    pub fn kernel_from_base(&self, base: &(Tensor, Tensor), input: MixerInput) -> Result<HouseholderKernel> {
        let (r, d) = (self.rank, self.dim);
        let (bu, ba) = (base.0.contiguous_data(), base.1.contiguous_data());
        let rows = ba.len() / r;
        let mut rows_data = Vec::with_capacity(rows * (r * d + r));
        for row in 0..rows {
            rows_data.extend_from_slice(&bu[row * r * d..][..r * d]);
            rows_data.extend_from_slice(&ba[row * r..][..r]);
        }
        let w_h = match self.split_weights(input)? {
            [(_, Some(wu)), (_, Some(wa))] => Some(no_grad(|| Tensor::concat(&[&wu, &wa], 1))?.to_vec()),
            _ => None,
        };
        HouseholderKernel::new(r, d, self.alpha_scale, self.eps, rows_data, w_h)
    }
}

impl Module for HouseholderMixer {
    fn params(&self) -> Vec<(String, &Tensor)> {
        prefixed("u_proj", self.u_proj.params()).chain(prefixed("alpha_proj", self.alpha_proj.params())).collect()
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        prefixed("u_proj", self.u_proj.params_mut())
            .chain(prefixed("alpha_proj", self.alpha_proj.params_mut()))
            .collect()
    }
}

/// Set a layer's bias to zero (the backbone's init: every Linear bias starts at 0).
pub(crate) fn zero_bias(l: &mut Linear) {
    for (name, p) in l.params_mut() {
        if name == "bias" {
            p.update_data(|d| d.fill(0.0));
        }
    }
}

/// A channel mixer `v ↦ Q(p) v`. New mixers (Kronecker, DPLR) add variants.
#[derive(Clone, Debug)]
pub enum Mixer {
    /// `Q ≡ I` on vectors of this dimension.
    Identity {
        dim: usize,
    },
    Householder(Box<HouseholderMixer>),
    Kronecker(Box<KroneckerMixer>),
    /// DPLR: the Householder mixer's `(u, α)` (scale 2) applied as a sum of rank-one terms.
    Dplr(Box<HouseholderMixer>),
}

impl Mixer {
    /// Build the mixer of `kind` for `p` of width `in_dim` and vectors of dimension `dim`.
    pub fn new(kind: MixerKind, in_dim: usize, dim: usize, eps: f32, rng: &mut Rng) -> Result<Mixer> {
        match kind {
            MixerKind::Identity => Ok(Mixer::Identity { dim }),
            MixerKind::Householder { rank, alpha_scale } => {
                Ok(Mixer::Householder(Box::new(HouseholderMixer::new(in_dim, dim, rank, alpha_scale, eps, rng)?)))
            }
            MixerKind::Kronecker { norm, detach_rho } => {
                Ok(Mixer::Kronecker(Box::new(KroneckerMixer::new(in_dim, dim, norm, detach_rho, eps, rng)?)))
            }
            MixerKind::Dplr { rank } => {
                Ok(Mixer::Dplr(Box::new(HouseholderMixer::new(in_dim, dim, rank, 2.0, eps, rng)?)))
            }
        }
    }
    pub fn is_identity(&self) -> bool {
        matches!(self, Mixer::Identity { .. })
    }
    pub fn dim(&self) -> usize {
        match self {
            Mixer::Identity { dim } => *dim,
            Mixer::Householder(m) | Mixer::Dplr(m) => m.dim(),
            Mixer::Kronecker(m) => m.dim(),
        }
    }
    /// `Q(p) v` on the graph.
    pub fn apply(&self, p: &Tensor, v: &Tensor) -> Result<Tensor> {
        match self {
            Mixer::Identity { .. } => Ok(v.clone()),
            Mixer::Householder(m) => m.apply(p, v),
            Mixer::Kronecker(m) => m.apply(p, v),
            Mixer::Dplr(m) => {
                let (u, alpha) = m.coefficients(p)?;
                dplr_apply(&u, &alpha, v)
            }
        }
    }

    /// The mixer as plain data for the off-graph solver, given its input part `x_mix`
    /// (`[B, T, D]`) and how the state enters `p`.
    pub fn kernel(&self, x_mix: &Tensor, input: MixerInput) -> Result<MixerKernel> {
        let _p = crate::profile::fwd("mixer_kernel");
        match self {
            Mixer::Identity { .. } => Ok(MixerKernel::Identity),
            Mixer::Kronecker(m) => Ok(MixerKernel::Kronecker(m.kernel(x_mix, input)?)),
            Mixer::Householder(m) | Mixer::Dplr(m) => {
                let k = no_grad(|| m.kernel_from_base(&m.base(&x_mix.detach(), input)?, input))?;
                Ok(if matches!(self, Mixer::Dplr(_)) { MixerKernel::Dplr(k) } else { MixerKernel::Householder(k) })
            }
        }
    }
}

impl Module for Mixer {
    fn params(&self) -> Vec<(String, &Tensor)> {
        match self {
            Mixer::Identity { .. } => Vec::new(),
            Mixer::Householder(m) | Mixer::Dplr(m) => m.params(),
            Mixer::Kronecker(m) => m.params(),
        }
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        match self {
            Mixer::Identity { .. } => Vec::new(),
            Mixer::Householder(m) | Mixer::Dplr(m) => m.params_mut(),
            Mixer::Kronecker(m) => m.params_mut(),
        }
    }
}

// ----- off-graph mixer data -----------------------------------------------------------------

/// A mixer as plain data, for the solver loop (outside the graph).
#[derive(Clone, Debug)]
pub enum MixerKernel {
    Identity,
    Householder(HouseholderKernel),
    Kronecker(KroneckerKernel),
    /// The DPLR mixer: Householder coefficients applied as `v − scale·Σα_i u_i(u_iᵀv)`.
    Dplr(HouseholderKernel),
}

impl MixerKernel {
    /// Values per row of pre-activations (0 for the identity).
    pub fn width(&self) -> usize {
        match self {
            MixerKernel::Identity => 0,
            MixerKernel::Householder(k) | MixerKernel::Dplr(k) => k.width(),
            MixerKernel::Kronecker(k) => k.width(),
        }
    }
    /// Values per row of coefficients (`u` then `α`; or `U` then `V`).
    pub fn coef_len(&self) -> usize {
        match self {
            MixerKernel::Identity => 0,
            MixerKernel::Householder(k) | MixerKernel::Dplr(k) => k.width(),
            MixerKernel::Kronecker(k) => k.coef_len(),
        }
    }
    /// Scratch values [`MixerKernel::coefficients_row`] and [`MixerKernel::apply_row`] need.
    pub fn scratch_len(&self) -> usize {
        match self {
            MixerKernel::Identity => 0,
            MixerKernel::Householder(k) | MixerKernel::Dplr(k) => k.dim,
            MixerKernel::Kronecker(k) => (2 * k.m1.max(k.m2).pow(2) + 3 * k.m1.max(k.m2)).max(k.dim),
        }
    }
    /// Rows of pre-activations held (`B·T`); None for the identity.
    pub fn rows(&self) -> Option<usize> {
        match self {
            MixerKernel::Identity => None,
            MixerKernel::Householder(k) | MixerKernel::Dplr(k) => Some(k.rows()),
            MixerKernel::Kronecker(k) => Some(k.rows()),
        }
    }
    pub fn dim(&self) -> Option<usize> {
        match self {
            MixerKernel::Identity => None,
            MixerKernel::Householder(k) | MixerKernel::Dplr(k) => Some(k.dim),
            MixerKernel::Kronecker(k) => Some(k.dim),
        }
    }
    fn parts(&self) -> (&[f32], Option<&[f32]>) {
        match self {
            MixerKernel::Identity => (&[], None),
            MixerKernel::Householder(k) | MixerKernel::Dplr(k) => (&k.base, k.w_h.as_deref()),
            MixerKernel::Kronecker(k) => (&k.base, k.w_h.as_deref()),
        }
    }
    /// Whether `Q` depends on the state.
    pub fn uses_state(&self) -> bool {
        self.parts().1.is_some()
    }
    /// A row's coefficients from its pre-activations.
    #[inline]
    pub fn coefficients_row(&self, pre: &[f32], coef: &mut [f32], scratch: &mut [f32]) {
        match self {
            MixerKernel::Identity => {}
            MixerKernel::Householder(k) | MixerKernel::Dplr(k) => {
                let (u, a) = coef.split_at_mut(k.rank * k.dim);
                k.coefficients_row(pre, u, a);
            }
            MixerKernel::Kronecker(k) => k.coefficients_row(pre, coef, scratch),
        }
    }
    /// `v ← Q v` for one row with its coefficients.
    #[inline]
    pub fn apply_row(&self, coef: &[f32], v: &mut [f32], scratch: &mut [f32]) {
        match self {
            MixerKernel::Identity => {}
            MixerKernel::Householder(k) => {
                let (u, a) = coef.split_at(k.rank * k.dim);
                householder_row(u, a, k.alpha_scale, v);
            }
            MixerKernel::Dplr(k) => {
                let (u, a) = coef.split_at(k.rank * k.dim);
                dplr_row(u, a, k.alpha_scale, v, scratch);
            }
            MixerKernel::Kronecker(k) => k.apply_row(coef, v, scratch),
        }
    }
    /// Pre-activations of every row for state `h` (see [`HouseholderKernel::pre_activations`]).
    pub fn pre_activations(&self, h: &[f32], time: usize, hs: &mut Vec<f32>, pre: &mut Vec<f32>) {
        let (base, w_h) = self.parts();
        let (Some(d), n) = (self.dim(), self.width()) else { return };
        pre_activations(base, w_h, d, n, h, time, hs, pre);
    }
}

/// `v ← v − scale·Σ_i α_i u_i (u_iᵀ v)` (all dot products with the input `v`); `tmp`
/// holds `D` values.
#[inline]
pub fn dplr_row(u: &[f32], alpha: &[f32], scale: f32, v: &mut [f32], tmp: &mut [f32]) {
    let d = v.len();
    let tmp = &mut tmp[..d];
    tmp.copy_from_slice(v);
    for (i, &a) in alpha.iter().enumerate() {
        let ui = &u[i * d..(i + 1) * d];
        let coef = scale * a * row_dot(ui, tmp);
        for j in 0..d {
            v[j] = (-coef).mul_add(ui[j], v[j]);
        }
    }
}

/// `v − 2 Σ_i α_i u_i (u_iᵀ v)` on the graph: `u` `[.., r, D]`, `alpha` `[.., r]`, `v` `[.., D]`.
pub fn dplr_apply(u: &Tensor, alpha: &Tensor, v: &Tensor) -> Result<Tensor> {
    let uv = u.matmul(&v.unsqueeze(-1)?)?; // [.., r, 1]
    let c = alpha.unsqueeze(-1)?.mul(&uv)?;
    let s = u.transpose(-1, -2)?.matmul(&c)?.squeeze(-1)?; // [.., D]
    v.sub(&s.mul_scalar(2.0))
}

/// `pre = base + shift(h)·W_h` (`[B·T, n]`; `pre = base` without `W_h`).
#[allow(clippy::too_many_arguments)]
fn pre_activations(
    base: &[f32],
    w_h: Option<&[f32]>,
    d: usize,
    n: usize,
    h: &[f32],
    time: usize,
    hs: &mut Vec<f32>,
    pre: &mut Vec<f32>,
) {
    let _p = crate::profile::fwd("mixer_pre");
    pre.clear();
    pre.extend_from_slice(base);
    let Some(w) = w_h else { return };
    let rows = base.len() / n.max(1);
    shift_rows(h, time, d, hs);
    use crate::ops::matmul::{Accum, MatRef, gemm_dense};
    let a = MatRef { data: hs, offset: 0, rows, cols: d, rs: d, cs: 1 };
    let b = MatRef { data: w, offset: 0, rows: d, cols: n, rs: n, cs: 1 };
    gemm_dense(a, b, pre, Accum::Add);
}

/// The Householder mixer as plain data. A row's pre-activations are
/// `pre = base[row] + W_hᵀ h_{t−1}` (`r·D` values for `u`, then `r` for `α`), and
/// `u_i = normalize(SiLU(pre_u,i))`, `α_i = σ(pre_α,i)`.
#[derive(Clone, Debug)]
pub struct HouseholderKernel {
    pub rank: usize,
    pub dim: usize,
    pub alpha_scale: f32,
    pub eps: f32,
    /// Input-only part of the pre-activations (bias included), `[N, r·D + r]`.
    pub base: Vec<f32>,
    /// Weights on the shifted state, `[D, r·D + r]`; `None`: `Q` does not depend on `h`.
    pub w_h: Option<Vec<f32>>,
}

impl HouseholderKernel {
    /// Check the sizes (`base` must hold whole rows of `r·D + r`, `w_h` be `D × (r·D + r)`).
    pub fn new(
        rank: usize,
        dim: usize,
        alpha_scale: f32,
        eps: f32,
        base: Vec<f32>,
        w_h: Option<Vec<f32>>,
    ) -> Result<Self> {
        let width = rank * dim + rank;
        let bad = |message: String| Err(Error::InvalidArgument { op: "HouseholderKernel::new", message });
        if rank == 0 || dim == 0 {
            return bad(format!("rank {rank} and dim {dim} must be positive"));
        }
        if !base.len().is_multiple_of(width) {
            return bad(format!("base has {} values, not a multiple of r·D + r = {width}", base.len()));
        }
        if let Some(w) = &w_h
            && w.len() != dim * width
        {
            return bad(format!("w_h has {} values but D × (r·D + r) = {}", w.len(), dim * width));
        }
        Ok(HouseholderKernel { rank, dim, alpha_scale, eps, base, w_h })
    }
    /// Width `r·D + r` of a row of pre-activations.
    pub fn width(&self) -> usize {
        self.rank * self.dim + self.rank
    }
    /// Number of rows (`B·T`).
    pub fn rows(&self) -> usize {
        self.base.len() / self.width()
    }

    /// `u` (`r × D`) and `α` (`r`, unscaled) of one row from its pre-activations.
    #[inline]
    pub fn coefficients_row(&self, pre: &[f32], u: &mut [f32], alpha: &mut [f32]) {
        let rd = self.rank * self.dim;
        householder_coefficients_row(&pre[..rd], &pre[rd..rd + self.rank], self.eps, (u, alpha), None);
    }

    /// The pre-activations of every row for state `h` (`[B, T, D]` with `time` steps per
    /// sequence): `base + shift(h)·W_h`, written to `pre` (resized as needed). Without
    /// state dependence `pre` is `base`.
    pub fn pre_activations(&self, h: &[f32], time: usize, hs: &mut Vec<f32>, pre: &mut Vec<f32>) {
        pre_activations(&self.base, self.w_h.as_deref(), self.dim, self.width(), h, time, hs, pre);
    }
}

/// `hs[b, t] = h[b, t − 1]`, `hs[b, 0] = 0`, for `[B, T, D]` data (`hs` resized).
pub fn shift_rows(h: &[f32], time: usize, d: usize, hs: &mut Vec<f32>) {
    hs.resize(h.len(), 0.0);
    if time == 0 || d == 0 {
        return;
    }
    for (src, dst) in h.chunks_exact(time * d).zip(hs.chunks_exact_mut(time * d)) {
        dst[..d].fill(0.0);
        dst[d..].copy_from_slice(&src[..(time - 1) * d]);
    }
}
