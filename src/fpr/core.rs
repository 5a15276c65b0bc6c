//! The fixed-point map of the vector-state FP-RNN as plain data (spec §2.1), for the
//! solver that runs outside the graph:
//!
//! ```text
//! F(h) = diag_scan(λ, (1 − λ) ⊙ x̃),   x̃ = Q(p)(b⊙x − h) + h,   p = [x_mix; shift(h)]
//! ```
//!
//! One evaluation is one GEMM of the shifted state with the mixer's state weights (when
//! `Q` depends on `h`; skipped for the zero first iterate), then one pass over memory per
//! sequence that computes each row's coefficients, applies `Q`, gates and takes the scan
//! step with the previous output row as the carry (sequences in parallel).
//!
//! [`FpCore::solve_sequential`] computes the same fixed point token by token with the
//! explicit dense recurrence of §2.2 (in f64): given `h_{t−1}`, `Q_t = M(x_t, h_{t−1})` and
//!
//! ```text
//! (Λ_t + (I − Λ_t) Q_t) h_t = Λ_t h_{t−1} + (I − Λ_t) Q_t b_t x_t .
//! ```

use super::mixer::{MixerKernel, rows_per_task};
use super::solver::{SolveRun, SolveShape, SolveStats, SolverConfig};
use crate::error::{Error, Result};
use crate::ops::scan::{ScanKernel, ScanSpec, scan_forward};
use rayon::prelude::*;

/// `F` of one FP-RNN layer as plain data: everything that does not depend on `h`.
#[derive(Clone, Debug)]
pub struct FpCore {
    pub batch: usize,
    pub time: usize,
    pub dim: usize,
    /// `λ_t`, `[B, T, D]`.
    pub lambda: Vec<f32>,
    /// `b_t ⊙ x_t`, `[B, T, D]`.
    pub bx: Vec<f32>,
    pub mixer: MixerKernel,
    /// Mixer coefficients per row (`coef_len` each) when `Q` does not depend on `h`
    /// (computed once).
    fixed: Option<Vec<f32>>,
    /// With fixed Householder coefficients, each row's `u_i·b⊙x` and Gram entries
    /// ([`super::mixer::householder_row_extras`], `extras_len` each), computed once so
    /// that an iteration's first pass reads only `h` and `u`.
    extras: Option<(Vec<f32>, usize)>,
}

/// Buffers reused across evaluations of [`FpCore::step`].
#[derive(Default, Debug)]
pub struct Workspace {
    hs: Vec<f32>,
    pre: Vec<f32>,
    u_scan: Vec<f32>,
    /// The previous iterate when [`FpCore::steps`] takes its iterations one call at a time.
    prev: Vec<f32>,
}

impl FpCore {
    /// Check the sizes and precompute what does not change between iterations.
    pub fn new(
        batch: usize,
        time: usize,
        dim: usize,
        lambda: Vec<f32>,
        bx: Vec<f32>,
        mixer: MixerKernel,
    ) -> Result<Self> {
        let n = batch * time * dim;
        if lambda.len() != n || bx.len() != n {
            return Err(Error::InvalidArgument {
                op: "FpCore::new",
                message: format!(
                    "lambda ({}) and bx ({}) must hold B·T·D = {batch}·{time}·{dim} = {n} values",
                    lambda.len(),
                    bx.len()
                ),
            });
        }
        if let (Some(kd), Some(rows)) = (mixer.dim(), mixer.rows())
            && (kd != dim || rows != batch * time)
        {
            return Err(Error::InvalidArgument {
                op: "FpCore::new",
                message: format!("the mixer has dim {kd} and {rows} rows but the state is [{batch}, {time}, {dim}]"),
            });
        }
        let fixed = match &mixer {
            MixerKernel::Identity => None,
            k if !k.uses_state() => Some(all_coefficients(k, k_base(k), batch * time)),
            _ => None,
        };
        let extras = match (&mixer, &fixed) {
            (MixerKernel::Householder(hk), Some(f)) => {
                let (r, cl) = (hk.rank, mixer.coef_len());
                let el = super::mixer::householder_extras_len(r);
                let mut ex = vec![0.0f32; batch * time * el];
                for row in 0..batch * time {
                    let (u, bxr) = (&f[row * cl..row * cl + r * dim], &bx[row * dim..(row + 1) * dim]);
                    super::mixer::householder_row_extras(u, r, bxr, &mut ex[row * el..(row + 1) * el]);
                }
                Some((ex, el))
            }
            _ => None,
        };
        Ok(FpCore { batch, time, dim, lambda, bx, mixer, fixed, extras })
    }

    pub fn shape(&self) -> SolveShape {
        SolveShape { batch: self.batch, time: self.time, dim: self.dim }
    }

    /// Whether `F` ignores `h` (`Q ≡ I`): then one evaluation is the fixed point.
    pub fn is_diagonal(&self) -> bool {
        matches!(self.mixer, MixerKernel::Identity)
    }

    /// `out = F(h)`.
    ///
    /// One pass over memory per sequence: for each row, the mixer coefficients (from the
    /// pre-activations, or the fixed ones), `Q (b⊙x − h) + h`, the gate `(1 − λ)` and the
    /// scan step `out_t = λ_t ⊙ out_{t−1} + …` run while the row is in cache, with the
    /// previous output row as the carry. Sequences run in parallel; with fewer sequences
    /// than threads, rows are mixed in parallel and then scanned (the same arithmetic,
    /// so the result does not depend on the path or the thread count).
    pub fn step(&self, h: &[f32], out: &mut [f32], ws: &mut Workspace) -> Result<()> {
        self.step_impl(h, out, ws, None)
    }

    /// [`FpCore::step`] and, per sequence, the solver's relative residual
    /// `max_t ‖h_t − out_t‖_∞ / (‖out_t‖_∞ + eps)` into `res` (`B` values), taken row by
    /// row in the same pass while each row is in L1 (bit for bit
    /// [`super::solver::residuals`] of `h` and `out`).
    pub fn step_with_residuals(
        &self,
        h: &[f32],
        out: &mut [f32],
        ws: &mut Workspace,
        eps: f32,
        res: &mut [f32],
    ) -> Result<()> {
        if res.len() != self.batch {
            return Err(Error::InvalidArgument {
                op: "FpCore::step_with_residuals",
                message: format!("res holds {} values for {} sequences", res.len(), self.batch),
            });
        }
        self.step_impl(h, out, ws, Some((eps, res)))
    }

    fn step_impl(&self, h: &[f32], out: &mut [f32], ws: &mut Workspace, res: Option<(f32, &mut [f32])>) -> Result<()> {
        let _p = crate::profile::fwd("fp_step");
        if !self.begin("FpCore::step", h, out, ws)? {
            if let Some((_, r)) = res {
                r.fill(0.0);
            }
            return Ok(());
        }
        if self.batch < crate::cpu::par::threads() {
            self.two_pass(h, out, ws)?;
            if let Some((eps, r)) = res {
                super::solver::residuals(h, out, self.time, self.dim, eps, r);
            }
            return Ok(());
        }
        self.fused_pass(h, out, &ws.pre, 1, res);
        Ok(())
    }

    /// Whether [`FpCore::steps`] can take several iterations in one pass: `Q` must not
    /// depend on `h` (the next iteration's row `t` needs only this iteration's rows up
    /// to `t`).
    pub fn multi_step(&self) -> bool {
        !self.mixer.uses_state()
    }

    /// `out = F^k(h)`: `k` iterations, and with `res = Some((eps, r))` each one's
    /// per-sequence residual (as [`FpCore::step_with_residuals`]) into `r`,
    /// iteration-major (`r[j·B + b]`, `k·B` values).
    ///
    /// With [`FpCore::multi_step`] and at least as many sequences as threads, the `k`
    /// iterations share one pass over memory: for each row `t`, iteration `j` maps
    /// iteration `j − 1`'s row `t` with its own previous row as the scan's carry, so the
    /// row's `λ`, `b⊙x` and mixer coefficients are read once for all `k`, and only
    /// `F^k(h)` is written. The same arithmetic per row, so `out` and `res` are bit for bit
    /// those of `k` calls of `step_with_residuals`. Otherwise it makes those `k` calls.
    pub fn steps(
        &self,
        h: &[f32],
        out: &mut [f32],
        ws: &mut Workspace,
        k: usize,
        mut res: Option<(f32, &mut [f32])>,
    ) -> Result<()> {
        let b = self.batch;
        if k == 0 || res.as_ref().is_some_and(|r| r.1.len() != k * b) {
            return Err(Error::InvalidArgument {
                op: "FpCore::steps",
                message: format!(
                    "k = {k} iterations need k ≥ 1 and k·B = {} residuals; res holds {}",
                    k * b,
                    res.as_ref().map_or(0, |r| r.1.len())
                ),
            });
        }
        if k == 1 || !self.multi_step() || b < crate::cpu::par::threads() {
            let mut prev = std::mem::take(&mut ws.prev);
            for j in 0..k {
                let r = res.as_mut().map(|(eps, r)| (*eps, &mut r[j * b..(j + 1) * b]));
                if j == 0 {
                    self.step_impl(h, out, ws, r)?;
                } else {
                    prev.clear();
                    prev.extend_from_slice(out);
                    self.step_impl(&prev, out, ws, r)?;
                }
            }
            ws.prev = prev;
            return Ok(());
        }
        let _p = crate::profile::fwd("fp_step");
        if !self.begin("FpCore::steps", h, out, ws)? {
            if let Some((_, r)) = res {
                r.fill(0.0);
            }
            return Ok(());
        }
        match res {
            None => self.fused_pass(h, out, &ws.pre, k, None),
            Some((eps, r)) => {
                // Sequence-major in the pass (each task owns its sequences' residuals).
                let mut by_seq = vec![0.0f32; k * b];
                self.fused_pass(h, out, &ws.pre, k, Some((eps, &mut by_seq)));
                for (s, rs) in by_seq.chunks_exact(k).enumerate() {
                    for (j, &v) in rs.iter().enumerate() {
                        r[j * b + s] = v;
                    }
                }
            }
        }
        Ok(())
    }

    /// The fused per-sequence pass: `out = F^k(h)` (`k > 1` only when `Q` does not depend
    /// on `h`), and with `res = Some((eps, r))` the residual of each iteration per
    /// sequence into `r` (sequence-major, `r[b·k + j]`).
    fn fused_pass(&self, h: &[f32], out: &mut [f32], pre: &[f32], k: usize, res: Option<(f32, &mut [f32])>) {
        let mk = &self.mixer;
        let (per, d) = (self.time * self.dim, self.dim);
        let seqs = rows_per_task(per * (mk.coef_len() + 4 * d).div_ceil(d.max(1)));
        let (eps, want_res) = res.as_ref().map_or((0.0, false), |r| (r.0, true));
        let mut scratch_res = Vec::new();
        let res: &mut [f32] = match res {
            Some((_, r)) => r,
            None => {
                scratch_res.resize(self.batch * k, 0.0);
                &mut scratch_res
            }
        };
        // One task per group of `seqs` sequences (a function of the sizes only).
        let task = |g: usize, (chunk, rg): (&mut [f32], &mut [f32])| {
            let mut rs = RowScratch::new(mk, d);
            // Rows `t` and `t − 1` of the intermediate iterates `1..k` (the last one's are
            // in `out`).
            let (mut cur, mut prev) = (vec![0.0f32; (k - 1) * d], vec![0.0f32; (k - 1) * d]);
            // The residuals stay in the task's own buffer until the sequence ends (the
            // tasks' slices of `res` share cache lines).
            let mut worst_k = vec![0.0f32; k];
            for (i, (seq, r)) in chunk.chunks_exact_mut(per).zip(rg.chunks_exact_mut(k)).enumerate() {
                let row0 = (g * seqs + i) * self.time;
                worst_k.fill(0.0);
                for t in 0..self.time {
                    let (row, o) = (row0 + t, t * d);
                    let (done, rest) = seq.split_at_mut(o);
                    let h_row = &h[row * d..(row + 1) * d];
                    for (j, worst) in worst_k.iter_mut().enumerate() {
                        // Iteration j + 1 maps row t of iteration j (`h` for j = 0).
                        let (before, after) = cur.split_at_mut(j * d);
                        let src: &[f32] = if j == 0 { h_row } else { &before[(j - 1) * d..] };
                        let (dst, carry): (&mut [f32], Option<&[f32]>) = if j + 1 == k {
                            (&mut rest[..d], (t > 0).then(|| &done[o - d..o]))
                        } else {
                            (&mut after[..d], (t > 0).then(|| &prev[j * d..(j + 1) * d]))
                        };
                        self.mixed_gated_row(row, src, pre, &mut rs, carry, dst);
                        if want_res {
                            *worst = super::solver::row_residual(*worst, &src[..d], dst, eps);
                        }
                    }
                    std::mem::swap(&mut cur, &mut prev);
                }
                r.copy_from_slice(&worst_k);
            }
        };
        if out.len() < crate::cpu::par::ELEMWISE_MIN || crate::cpu::par::threads() == 1 {
            out.chunks_mut(per * seqs).zip(res.chunks_mut(seqs * k)).enumerate().for_each(|(g, w)| task(g, w));
        } else {
            use rayon::prelude::*;
            out.par_chunks_mut(per * seqs).zip(res.par_chunks_mut(seqs * k)).enumerate().for_each(|(g, w)| task(g, w));
        }
    }

    /// [`FpCore::step`] in two passes over memory: all rows mixed and gated in parallel
    /// into a buffer, then the diagonal scan. The same arithmetic as the fused pass (the
    /// result is bit for bit the same); `step` uses it when there are fewer sequences
    /// than threads, and the benchmark as the unfused reference.
    pub fn step_two_pass(&self, h: &[f32], out: &mut [f32], ws: &mut Workspace) -> Result<()> {
        if !self.begin("FpCore::step_two_pass", h, out, ws)? {
            return Ok(());
        }
        self.two_pass(h, out, ws)
    }

    /// Check the sizes of `h` and `out` and compute the mixer's pre-activations for `h`
    /// into `ws` (when `Q` depends on the state); false when there is nothing to compute.
    fn begin(&self, op: &'static str, h: &[f32], out: &[f32], ws: &mut Workspace) -> Result<bool> {
        let n = self.batch * self.time * self.dim;
        if h.len() != n || out.len() != n {
            return Err(Error::InvalidArgument {
                op,
                message: format!("h ({}) and out ({}) must hold {n} values", h.len(), out.len()),
            });
        }
        let k = &self.mixer;
        if n > 0 && self.fixed.is_none() && !matches!(k, MixerKernel::Identity) {
            // The first iteration from zeros: shift(h)·W_h vanishes, `pre = base` exactly.
            if k.uses_state() && h.iter().all(|&v| v == 0.0) {
                ws.pre.clear();
                ws.pre.extend_from_slice(k_base(k));
            } else {
                k.pre_activations(h, self.time, &mut ws.hs, &mut ws.pre);
            }
        }
        Ok(n > 0)
    }

    fn two_pass(&self, h: &[f32], out: &mut [f32], ws: &mut Workspace) -> Result<()> {
        let (k, n) = (&self.mixer, self.batch * self.time * self.dim);
        ws.u_scan.resize(n, 0.0);
        let d = self.dim;
        let pre = &ws.pre;
        let rows = rows_per_task(k.coef_len() + 2 * d);
        crate::cpu::par::for_row_chunks_mut(&mut ws.u_scan, d, rows, crate::cpu::par::ELEMWISE_MIN, |row0, chunk| {
            let mut rs = RowScratch::new(k, self.dim);
            for (i, us) in chunk.chunks_exact_mut(d).enumerate() {
                let row = row0 + i;
                self.mixed_row(row, h, pre, &mut rs);
                us.copy_from_slice(&rs.v);
                let lam = &self.lambda[row * d..][..d];
                for j in 0..d {
                    us[j] *= 1.0 - lam[j];
                }
            }
        });
        let spec = ScanSpec::new(self.batch, self.time, self.dim);
        scan_forward(ScanKernel::Auto, &spec, &self.lambda, &ws.u_scan, None, out)
    }

    /// The mixer coefficients of `row`: the fixed ones, or computed from its
    /// pre-activations into `coef` (empty for the identity mixer).
    #[inline]
    fn row_coefficients<'a>(&'a self, row: usize, pre: &[f32], coef: &'a mut [f32], scratch: &mut [f32]) -> &'a [f32] {
        let k = &self.mixer;
        let cl = k.coef_len();
        match (&self.fixed, k) {
            (_, MixerKernel::Identity) => &[],
            (Some(f), _) => &f[row * cl..][..cl],
            (None, _) => {
                k.coefficients_row(&pre[row * k.width()..][..k.width()], coef, scratch);
                coef
            }
        }
    }

    /// `rs.v = Q (b⊙x − h) + h` for one row (`b⊙x` for the identity mixer).
    #[inline]
    fn mixed_row(&self, row: usize, h: &[f32], pre: &[f32], rs: &mut RowScratch) {
        let o = row * self.dim;
        let RowScratch { v, coef, scratch } = rs;
        let c = self.row_coefficients(row, pre, coef, scratch);
        let rows = (&self.bx[o..o + self.dim], &h[o..o + self.dim]);
        mix_row_into(&self.mixer, c, self.row_extras(row), rows, v, scratch);
    }

    /// `out = λ ⊙ carry + (1 − λ) ⊙ (Q (b⊙x − h) + h)` for one row: [`FpCore::mixed_row`]
    /// then [`gate_scan_row`], bit for bit, in one fewer pass for the Householder mixer.
    #[inline]
    fn mixed_gated_row(
        &self,
        row: usize,
        h_row: &[f32],
        pre: &[f32],
        rs: &mut RowScratch,
        carry: Option<&[f32]>,
        out: &mut [f32],
    ) {
        let (o, d) = (row * self.dim, self.dim);
        let RowScratch { v, coef, scratch } = rs;
        let c = self.row_coefficients(row, pre, coef, scratch);
        let rows = (&self.bx[o..o + d], &h_row[..d], &self.lambda[o..o + d]);
        mix_gate_row(&self.mixer, (c, self.row_extras(row)), rows, carry, (v, scratch), out);
    }

    /// The mixer coefficients of every row, when `Q` does not depend on `h`.
    pub(super) fn fixed_coefficients(&self) -> Option<&[f32]> {
        self.fixed.as_deref()
    }

    /// The precomputed Householder extras of `row`, if the coefficients are fixed.
    #[inline]
    pub(super) fn row_extras(&self, row: usize) -> Option<&[f32]> {
        self.extras.as_ref().map(|(ex, el)| &ex[row * el..(row + 1) * el])
    }

    /// `pre = base[rows] + shifted · W_h` for `shifted.len() / D` consecutive rows from
    /// `row0` (one serial GEMM), for a mixer that depends on the state.
    pub(super) fn block_pre_activations(&self, row0: usize, shifted: &[f32], pre: &mut [f32]) {
        use crate::ops::matmul::{Accum, MatRef, gemm};
        let (k, d) = (&self.mixer, self.dim);
        let (w, rows) = (k.width(), shifted.len() / d.max(1));
        pre.copy_from_slice(&k_base(k)[row0 * w..][..rows * w]);
        if let Some(wh) = k_wh(k) {
            let a = MatRef { data: shifted, offset: 0, rows, cols: d, rs: d, cs: 1 };
            let b = MatRef { data: wh, offset: 0, rows: d, cols: w, rs: w, cs: 1 };
            gemm(a, b, pre, 0, w, 1, Accum::Add);
        }
    }

    /// Solve `h = F(h)` with the §2.5 iteration from `h0` (zeros when `None`). (With
    /// `Q ≡ I` this takes two iterations: the second confirms the first with residual 0.)
    /// While undamped, with `Q` independent of `h`, two iterations share each pass over
    /// memory ([`FpCore::steps`]); the iterates and statistics are those of one
    /// iteration per pass, bit for bit.
    pub fn solve(&self, cfg: &SolverConfig, run: &SolveRun, h0: Option<&[f32]>) -> Result<(Vec<f32>, SolveStats)> {
        let mut ws = Workspace::default();
        let pairs = self.multi_step() && self.batch >= crate::cpu::par::threads();
        super::solver::solve_with_steps(self.shape(), cfg, run, h0, pairs, |h, out, k, res| {
            self.steps(h, out, &mut ws, k, Some((cfg.eps, res)))
        })
    }

    /// The fixed point token by token with explicit dense matrices (f64 inside): for
    /// each `t`, form `Q_t` from `h_{t−1}`, then solve
    /// `(Λ_t + (I − Λ_t)Q_t) h_t = Λ_t h_{t−1} + (I − Λ_t) Q_t b_t x_t` by LU with partial
    /// pivoting. Sequences run in parallel. Fails if a system is singular.
    pub fn solve_sequential(&self) -> Result<Vec<f32>> {
        let _p = crate::profile::fwd("fp_dense_seq");
        let (t_len, d) = (self.time, self.dim);
        let per = t_len * d;
        let mut out = vec![0.0f32; self.batch * per];
        if per == 0 {
            return Ok(out);
        }
        let results: Vec<Result<()>> =
            out.par_chunks_mut(per).enumerate().map(|(b, hb)| self.dense_sequence(b, hb)).collect();
        results.into_iter().collect::<Result<Vec<()>>>()?;
        Ok(out)
    }

    fn dense_sequence(&self, b: usize, hb: &mut [f32]) -> Result<()> {
        let (t_len, d) = (self.time, self.dim);
        let mut h_prev = vec![0.0f64; d];
        let mut m = vec![0.0f64; d * d];
        let mut q = vec![0.0f64; d * d];
        let mut rhs = vec![0.0f64; d];
        let mut col = vec![0.0f32; d];
        for t in 0..t_len {
            let row = b * t_len + t;
            let o = row * d;
            let lam = &self.lambda[o..o + d];
            // Q_t column by column (identity for the diagonal mixer).
            match &self.mixer {
                MixerKernel::Identity => {
                    q.fill(0.0);
                    for i in 0..d {
                        q[i * d + i] = 1.0;
                    }
                }
                k => {
                    let (w, cl) = (k.width(), k.coef_len());
                    let coef: Vec<f32> = match &self.fixed {
                        Some(f) => f[row * cl..][..cl].to_vec(),
                        None => {
                            // pre = base + W_hᵀ h_{t−1}
                            let (base, w_h) = (k_base(k), k_wh(k));
                            let mut pre: Vec<f32> = base[row * w..][..w].to_vec();
                            if let Some(wh) = w_h {
                                for (j, p) in pre.iter_mut().enumerate() {
                                    let s: f64 = (0..d).map(|i| wh[i * w + j] as f64 * h_prev[i]).sum();
                                    *p = (*p as f64 + s) as f32;
                                }
                            }
                            let mut coef = vec![0.0f32; cl];
                            k.coefficients_row(&pre, &mut coef, &mut vec![0.0f32; k.scratch_len()]);
                            coef
                        }
                    };
                    let mut scratch = vec![0.0f32; k.scratch_len()];
                    for j in 0..d {
                        col.fill(0.0);
                        col[j] = 1.0;
                        match k {
                            MixerKernel::Householder(hk) => {
                                let (u, alpha) = coef.split_at(hk.rank * d);
                                householder_row_f64(u, alpha, hk.alpha_scale, &mut col, &mut q, j)
                            }
                            _ => {
                                k.apply_row(&coef, &mut col, &mut scratch);
                                for i in 0..d {
                                    q[i * d + j] = col[i] as f64;
                                }
                            }
                        }
                    }
                }
            }
            // M = Λ + (I − Λ) Q ; rhs = Λ h_{t−1} + (I − Λ) Q (b x)
            for i in 0..d {
                let l = lam[i] as f64;
                for j in 0..d {
                    m[i * d + j] = (1.0 - l) * q[i * d + j];
                }
                m[i * d + i] += l;
                let qbx: f64 = (0..d).map(|j| q[i * d + j] * self.bx[o + j] as f64).sum();
                rhs[i] = l * h_prev[i] + (1.0 - l) * qbx;
            }
            lu_solve(&mut m, &mut rhs, d)?;
            for i in 0..d {
                h_prev[i] = rhs[i];
                hb[t * d + i] = rhs[i] as f32;
            }
        }
        Ok(())
    }
}

/// Column `j` of `Q` into `q` (row-major `d × d`) from `e_j` in `col`, computed in f64.
fn householder_row_f64(u: &[f32], alpha: &[f32], scale: f32, col: &mut [f32], q: &mut [f64], j: usize) {
    let d = col.len();
    let mut v: Vec<f64> = col.iter().map(|&x| x as f64).collect();
    for (i, &a) in alpha.iter().enumerate() {
        let ui = &u[i * d..(i + 1) * d];
        let dot: f64 = ui.iter().zip(&v).map(|(&x, &y)| x as f64 * y).sum();
        let coef = scale as f64 * a as f64 * dot;
        for (vk, &uk) in v.iter_mut().zip(ui) {
            *vk -= coef * uk as f64;
        }
    }
    for i in 0..d {
        q[i * d + j] = v[i];
    }
}

/// Solve `m x = rhs` in place (`rhs` becomes `x`) by LU with partial pivoting.
fn lu_solve(m: &mut [f64], rhs: &mut [f64], d: usize) -> Result<()> {
    for c in 0..d {
        let p = (c..d).max_by(|&a, &b| m[a * d + c].abs().total_cmp(&m[b * d + c].abs())).unwrap_or(c);
        let piv = m[p * d + c];
        if piv.abs() < 1e-300 || !piv.is_finite() {
            return Err(Error::InvalidArgument {
                op: "FpCore::solve_sequential",
                message: format!("Λ + (I − Λ)Q is singular (pivot {piv:e} in column {c})"),
            });
        }
        if p != c {
            for j in 0..d {
                m.swap(p * d + j, c * d + j);
            }
            rhs.swap(p, c);
        }
        for r in c + 1..d {
            let f = m[r * d + c] / piv;
            if f != 0.0 {
                for j in c..d {
                    m[r * d + j] -= f * m[c * d + j];
                }
                rhs[r] -= f * rhs[c];
            }
        }
    }
    for c in (0..d).rev() {
        let s: f64 = (c + 1..d).map(|j| m[c * d + j] * rhs[j]).sum();
        rhs[c] = (rhs[c] - s) / m[c * d + c];
    }
    Ok(())
}

/// Per-task buffers of [`FpCore::step`]: one row's mixed input, coefficients and scratch.
pub(super) struct RowScratch {
    pub(super) v: Vec<f32>,
    pub(super) coef: Vec<f32>,
    pub(super) scratch: Vec<f32>,
}

/// `out = λ ⊙ carry + (1 − λ) ⊙ (Q (b⊙x − h) + h)` for one row with coefficients `c`
/// (the same arithmetic as [`FpCore::step`]'s row).
#[inline]
pub(super) fn mix_gate_row(
    k: &MixerKernel,
    (c, extras): (&[f32], Option<&[f32]>),
    (bx, hr, lam): (&[f32], &[f32], &[f32]),
    carry: Option<&[f32]>,
    (v, scratch): (&mut [f32], &mut [f32]),
    out: &mut [f32],
) {
    if let MixerKernel::Householder(hk) = k {
        let (u, a) = c.split_at(hk.rank * out.len());
        return super::mixer::householder_mix_gate_row((u, a, hk.alpha_scale), extras, (bx, hr, lam), carry, out);
    }
    mix_row_into(k, c, extras, (bx, hr), v, scratch);
    gate_scan_row(lam, v, carry, out);
}

/// `v = Q (b⊙x − h) + h` for one row (`extras`: the row's precomputed Householder
/// extras, if any).
#[inline]
fn mix_row_into(
    k: &MixerKernel,
    c: &[f32],
    extras: Option<&[f32]>,
    (bx, hr): (&[f32], &[f32]),
    v: &mut [f32],
    scratch: &mut [f32],
) {
    if let MixerKernel::Identity = k {
        v.copy_from_slice(bx);
        return;
    }
    let d = v.len();
    if let MixerKernel::Householder(hk) = k {
        let (u, a) = c.split_at(hk.rank * d);
        return super::mixer::householder_mix_row((u, a, hk.alpha_scale), extras, bx, hr, v);
    }
    let (bx, hr) = (&bx[..d], &hr[..d]);
    for j in 0..d {
        v[j] = bx[j] - hr[j];
    }
    k.apply_row(c, v, scratch);
    for j in 0..d {
        v[j] += hr[j];
    }
}

impl RowScratch {
    pub(super) fn new(k: &MixerKernel, d: usize) -> RowScratch {
        RowScratch { v: vec![0.0; d], coef: vec![0.0; k.coef_len()], scratch: vec![0.0; k.scratch_len()] }
    }
}

/// One scan step on a gated row: `out = λ ⊙ carry + (1 − λ) ⊙ x̃` (carry zero at `t = 0`),
/// with the scan kernel's rounding (`λ.mul_add(carry, (1 − λ)·x̃)`).
#[inline]
pub(super) fn gate_scan_row(lam: &[f32], xt: &[f32], carry: Option<&[f32]>, out: &mut [f32]) {
    let d = out.len();
    let (lam, xt) = (&lam[..d], &xt[..d]);
    match carry {
        Some(c) => {
            let c = &c[..d];
            for j in 0..d {
                out[j] = lam[j].mul_add(c[j], (1.0 - lam[j]) * xt[j]);
            }
        }
        None => {
            for j in 0..d {
                out[j] = lam[j].mul_add(0.0, (1.0 - lam[j]) * xt[j]);
            }
        }
    }
}

/// The coefficients of every row from fixed pre-activations.
fn all_coefficients(k: &MixerKernel, pre: &[f32], rows: usize) -> Vec<f32> {
    let (w, cl) = (k.width(), k.coef_len());
    let mut coef = vec![0.0f32; rows * cl];
    let mut scratch = vec![0.0f32; k.scratch_len()];
    for row in 0..rows {
        k.coefficients_row(&pre[row * w..][..w], &mut coef[row * cl..][..cl], &mut scratch);
    }
    coef
}

fn k_base(k: &MixerKernel) -> &[f32] {
    match k {
        MixerKernel::Identity => &[],
        MixerKernel::Householder(h) | MixerKernel::Dplr(h) => &h.base,
        MixerKernel::Kronecker(h) => &h.base,
    }
}

fn k_wh(k: &MixerKernel) -> Option<&[f32]> {
    match k {
        MixerKernel::Identity => None,
        MixerKernel::Householder(h) | MixerKernel::Dplr(h) => h.w_h.as_deref(),
        MixerKernel::Kronecker(h) => h.w_h.as_deref(),
    }
}
