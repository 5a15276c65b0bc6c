//! The fixed-point solver of spec §2.5 (reference code `FixedPointOptimizer`), run
//! outside the autodiff graph on plain `[B, T, D]` buffers.
//!
//! Per sample `b`: `y ← 0`, `best_b ← ∞`, step `s_b ← s0`, patience 15. One iteration:
//!
//! ```text
//! y_new = F(y)
//! res_b = max_t ‖y_t − y_new,t‖_∞ / (‖y_new,t‖_∞ + 1e-8)
//! y     ← s_b·y_new + (1 − s_b)·y
//! res_b < best_b ?  best_b ← res_b, patience ← 15
//!                :  patience −= 1; at 0: patience ← 15, s_b ← γ·s_b
//! ```
//!
//! The first iteration always runs; after it the loop continues while
//! `quantile_q(best) ≥ threshold`, `max_b s_b ≥ 1e-3` and `it < ℓ_max` (q = 0.9 in
//! training, 1 in evaluation; the quantile interpolates linearly between order
//! statistics, as `torch.quantile`). The **last** iterate is returned, although
//! stopping looks at the best residual (§8.9). A NaN residual counts as +∞.

use crate::error::{Error, Result};
use crate::rng::Rng;
use rayon::prelude::*;

/// How `ℓ_max` is chosen in training (§8.3).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Lmax {
    /// Always this many iterations at most.
    Fixed(usize),
    /// `ceil(Γ(4, 1))` per batch (paper).
    Paper,
    /// `ceil(Γ(shape 4, scale T_train/16 + 1))` per batch (reference code; mean
    /// `T_train/4 + 4`).
    Code { t_train: usize },
}

impl Lmax {
    /// Draw `ℓ_max` for one batch (at least 1).
    pub fn sample(&self, rng: &mut Rng) -> usize {
        let g = match *self {
            Lmax::Fixed(n) => return n.max(1),
            Lmax::Paper => gamma(4.0, 1.0, rng),
            Lmax::Code { t_train } => gamma(4.0, t_train as f64 / 16.0 + 1.0, rng),
        };
        (g.ceil() as usize).max(1)
    }
}

/// A Γ(shape, scale) draw for `shape ≥ 1` (Marsaglia and Tsang 2000).
pub fn gamma(shape: f64, scale: f64, rng: &mut Rng) -> f64 {
    debug_assert!(shape >= 1.0);
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = rng.normal() as f64;
        let v = 1.0 + c * x;
        if v <= 0.0 {
            continue;
        }
        let v = v * v * v;
        let u = 1.0 - rng.uniform_f64(); // (0, 1]
        if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v * scale;
        }
    }
}

/// Settings of the solver (defaults: the FP-RNN column of the §2.5 table).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SolverConfig {
    /// Stop when the q-quantile of the per-sample best residuals falls below this.
    pub threshold: f32,
    /// Initial damping step `s0`.
    pub stepsize: f32,
    /// Step decay `γ` applied when patience runs out (1: no damping).
    pub decay: f32,
    /// Iterations without a new best residual before the step decays.
    pub patience: usize,
    /// Stop when every sample's step is below this.
    pub min_stepsize: f32,
    /// Quantile of the residuals that must converge, in training and in evaluation.
    pub quantile_train: f32,
    pub quantile_eval: f32,
    /// `ℓ_max` in training.
    pub lmax: Lmax,
    /// `ℓ_max` in evaluation (§8.8).
    pub eval_lmax: usize,
    /// Added to the norm in the relative residual.
    pub eps: f32,
}

impl Default for SolverConfig {
    fn default() -> Self {
        SolverConfig {
            threshold: 0.1,
            stepsize: 1.0,
            decay: 1.0,
            patience: 15,
            min_stepsize: 1e-3,
            quantile_train: 0.9,
            quantile_eval: 1.0,
            lmax: Lmax::Fixed(100),
            eval_lmax: 1000,
            eps: 1e-8,
        }
    }
}

impl SolverConfig {
    /// The FP-Mamba column of the §2.5 table (`s0 = 0.99`, `γ = 0.9`, `q = 0.75`).
    pub fn fp_mamba() -> Self {
        SolverConfig { stepsize: 0.99, decay: 0.9, quantile_train: 0.75, ..Default::default() }
    }

    /// Reject settings the solver cannot run with.
    pub fn validate(&self) -> Result<()> {
        let bad = |message: String| Err(Error::InvalidArgument { op: "SolverConfig", message });
        if !(self.threshold >= 0.0 && self.threshold.is_finite()) {
            return bad(format!("threshold must be finite and >= 0, got {}", self.threshold));
        }
        if !(self.stepsize > 0.0 && self.stepsize <= 1.0) {
            return bad(format!("stepsize must be in (0, 1], got {}", self.stepsize));
        }
        if !(self.decay > 0.0 && self.decay <= 1.0) {
            return bad(format!("decay must be in (0, 1], got {}", self.decay));
        }
        if self.patience == 0 {
            return bad("patience must be at least 1".to_string());
        }
        for (name, q) in [("quantile_train", self.quantile_train), ("quantile_eval", self.quantile_eval)] {
            if !(0.0..=1.0).contains(&q) {
                return bad(format!("{name} must be in [0, 1], got {q}"));
            }
        }
        if self.lmax == Lmax::Fixed(0) || self.eval_lmax == 0 {
            return bad("lmax and eval_lmax must be at least 1".to_string());
        }
        if let Lmax::Code { t_train: 0 } = self.lmax {
            return bad("lmax = code needs the training length T_train >= 1".to_string());
        }
        if !(self.eps >= 0.0 && self.min_stepsize >= 0.0) {
            return bad("eps and min_stepsize must be >= 0".to_string());
        }
        Ok(())
    }
}

/// Quantile mode and iteration cap of one solve.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SolveRun {
    pub quantile: f32,
    pub lmax: usize,
}

impl SolveRun {
    /// Training (`quantile_train`, `ℓ_max` drawn from `cfg.lmax`) or evaluation
    /// (`quantile_eval`, `eval_lmax`).
    pub fn new(cfg: &SolverConfig, training: bool, rng: &mut Rng) -> SolveRun {
        if training {
            SolveRun { quantile: cfg.quantile_train, lmax: cfg.lmax.sample(rng) }
        } else {
            SolveRun { quantile: cfg.quantile_eval, lmax: cfg.eval_lmax }
        }
    }
}

/// What a solve reports, per sample where it says so.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SolveStats {
    /// Iterations run (evaluations of `F`).
    pub iterations: usize,
    /// The cap this solve ran under.
    pub lmax: usize,
    /// Per sample: the iteration at which its residual first fell below the threshold
    /// (the iterations that sample needed), or `iterations` if it never did.
    pub sample_iterations: Vec<usize>,
    /// Per sample: the best residual seen (what stopping looks at).
    pub residual: Vec<f32>,
    /// Per sample: the residual of the last iteration.
    pub last_residual: Vec<f32>,
    /// Per sample: the damping step at the end.
    pub stepsize: Vec<f32>,
    /// Whether the stopping rule's quantile criterion was met (false: stopped by the cap
    /// or by the step sizes).
    pub converged: bool,
}

impl SolveStats {
    /// The statistics of a map that does not depend on its state (`Q ≡ I`): one
    /// evaluation is the fixed point, for each of `batch` samples.
    pub fn exact(batch: usize, cfg: &SolverConfig, run: &SolveRun) -> SolveStats {
        SolveStats {
            iterations: 1,
            lmax: run.lmax,
            sample_iterations: vec![1; batch],
            residual: vec![0.0; batch],
            last_residual: vec![0.0; batch],
            stepsize: vec![cfg.stepsize; batch],
            converged: true,
        }
    }
    /// Median of [`SolveStats::sample_iterations`] (lower middle for even counts).
    pub fn median_iterations(&self) -> usize {
        let mut v = self.sample_iterations.clone();
        v.sort_unstable();
        v.get(v.len().saturating_sub(1) / 2).copied().unwrap_or(0)
    }
}

/// The `q`-quantile of `v` with linear interpolation between order statistics
/// (`torch.quantile(.., interpolation = "linear")`); NaN counts as +∞. Empty: −∞.
pub fn quantile(v: &[f32], q: f32) -> f32 {
    if v.is_empty() {
        return f32::NEG_INFINITY;
    }
    let mut s: Vec<f32> = v.iter().map(|&x| if x.is_nan() { f32::INFINITY } else { x }).collect();
    s.sort_by(|a, b| a.total_cmp(b));
    let pos = q.clamp(0.0, 1.0) as f64 * (s.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    if lo == hi || frac == 0.0 || s[lo] == s[hi] {
        return s[lo];
    }
    if s[hi].is_infinite() {
        return s[hi];
    }
    (s[lo] as f64 + (s[hi] as f64 - s[lo] as f64) * frac) as f32
}

/// The per-sample bookkeeping of §2.5, separate from the evaluation of `F` so that it
/// can be driven by scripted residuals.
#[derive(Clone, Debug)]
pub struct SolverState {
    cfg: SolverConfig,
    /// Best residual per sample.
    pub best: Vec<f32>,
    /// Residual of the latest iteration per sample.
    pub last: Vec<f32>,
    /// Damping step per sample.
    pub stepsize: Vec<f32>,
    /// Remaining patience per sample.
    pub patience: Vec<usize>,
    /// First iteration (1-based) at which each sample's residual fell below the threshold.
    pub reached: Vec<Option<usize>>,
    /// Iterations done.
    pub iterations: usize,
}

impl SolverState {
    pub fn new(batch: usize, cfg: &SolverConfig) -> SolverState {
        SolverState {
            cfg: *cfg,
            best: vec![f32::INFINITY; batch],
            last: vec![f32::INFINITY; batch],
            stepsize: vec![cfg.stepsize; batch],
            patience: vec![cfg.patience; batch],
            reached: vec![None; batch],
            iterations: 0,
        }
    }

    /// Whether another iteration runs: always before the first, then while the quantile
    /// of the best residuals is at least the threshold, some step is at least
    /// `min_stepsize`, and fewer than `lmax` iterations ran.
    pub fn should_continue(&self, run: &SolveRun) -> bool {
        if self.iterations == 0 {
            return true;
        }
        !self.quantile_met(run) && self.max_stepsize() >= self.cfg.min_stepsize && self.iterations < run.lmax
    }

    /// Whether the quantile criterion holds (the stopping rule's convergence part).
    pub fn quantile_met(&self, run: &SolveRun) -> bool {
        quantile(&self.best, run.quantile) < self.cfg.threshold
    }

    fn max_stepsize(&self) -> f32 {
        self.stepsize.iter().copied().fold(f32::NEG_INFINITY, f32::max)
    }

    /// Record one iteration's residuals: update best, patience and steps. (The damping of
    /// the iterate itself uses the steps from *before* this call, as the reference does.)
    pub fn update(&mut self, residuals: &[f32]) {
        self.iterations += 1;
        for (b, &r) in residuals.iter().enumerate() {
            let r = if r.is_nan() { f32::INFINITY } else { r };
            self.last[b] = r;
            if r < self.cfg.threshold && self.reached[b].is_none() {
                self.reached[b] = Some(self.iterations);
            }
            if r < self.best[b] {
                self.best[b] = r;
                self.patience[b] = self.cfg.patience;
            } else {
                self.patience[b] -= 1;
                if self.patience[b] == 0 {
                    self.patience[b] = self.cfg.patience;
                    self.stepsize[b] *= self.cfg.decay;
                }
            }
        }
    }

    /// The statistics so far.
    pub fn stats(&self, run: &SolveRun) -> SolveStats {
        SolveStats {
            iterations: self.iterations,
            lmax: run.lmax,
            sample_iterations: self.reached.iter().map(|r| r.unwrap_or(self.iterations)).collect(),
            residual: self.best.clone(),
            last_residual: self.last.clone(),
            stepsize: self.stepsize.clone(),
            converged: self.quantile_met(run),
        }
    }
}

/// `m` or `v`, whichever is larger, where a NaN wins (and stays once there).
#[inline(always)]
fn nan_max(m: f32, v: f32) -> f32 {
    if v > m || v.is_nan() { v } else { m }
}

/// `(max_i |a_i − n_i|, max_i |n_i|)`, both NaN when any `a_i` or `n_i` is NaN (the
/// residual is then NaN either way). Eight lanes of AVX max; NaNs are tracked in a
/// separate mask, so the lane maxima need no NaN-aware compare (max is exact, so the
/// lane split does not change the result).
#[inline]
fn row_diff_norm(a: &[f32], n: &[f32]) -> (f32, f32) {
    use wide::f32x8;
    let (ac, ar) = a.as_chunks::<8>();
    let (nc, nr) = n.as_chunks::<8>();
    let (mut dm, mut nm, mut bad) = (f32x8::ZERO, f32x8::ZERO, f32x8::ZERO);
    for (x, y) in ac.iter().zip(nc) {
        let (x, y) = (f32x8::new(*x), f32x8::new(*y));
        let diff = (x - y).abs();
        // A NaN in `y` makes `diff` NaN too, so one test catches both.
        bad |= diff.is_nan();
        dm = dm.fast_max(diff);
        nm = nm.fast_max(y.abs());
    }
    // A tree over the lanes (the maxima are exact, so the order does not matter).
    let lanes_max = |v: f32x8| {
        let a = v.to_array();
        let m: [f32; 4] = std::array::from_fn(|i| a[i].max(a[i + 4]));
        m[0].max(m[2]).max(m[1].max(m[3]))
    };
    let (mut d, mut m) = (lanes_max(dm), lanes_max(nm));
    let mut nan = bad.any();
    for (x, y) in ar.iter().zip(nr) {
        let diff = (x - y).abs();
        nan |= diff.is_nan() || y.is_nan();
        d = d.max(diff);
        m = m.max(y.abs());
    }
    if nan { (f32::NAN, f32::NAN) } else { (d, m) }
}

/// Relative residual of one sample: `max_t ‖y_t − y_new,t‖_∞ / (‖y_new,t‖_∞ + eps)`.
fn sample_residual(y: &[f32], y_new: &[f32], dim: usize, eps: f32) -> f32 {
    y.chunks_exact(dim.max(1)).zip(y_new.chunks_exact(dim.max(1))).fold(0.0, |w, (a, n)| row_residual(w, a, n, eps))
}

/// `max(worst, ‖a − n‖_∞ / (‖n‖_∞ + eps))` for one row, NaN winning.
#[inline]
pub(crate) fn row_residual(worst: f32, a: &[f32], n: &[f32], eps: f32) -> f32 {
    let (diff, norm) = row_diff_norm(a, n);
    nan_max(worst, diff / (norm + eps))
}

/// Per-sample relative residuals `max_t ‖y_t − y_new,t‖_∞ / (‖y_new,t‖_∞ + eps)` of
/// `[B, T, D]` buffers (`B = out.len()`); samples in parallel when large.
pub fn residuals(y: &[f32], y_new: &[f32], time: usize, dim: usize, eps: f32, out: &mut [f32]) {
    let per = time * dim;
    if per == 0 {
        out.fill(0.0);
        return;
    }
    let one = |(b, r): (usize, &mut f32)| {
        *r = sample_residual(&y[b * per..(b + 1) * per], &y_new[b * per..(b + 1) * per], dim, eps)
    };
    if y.len() >= crate::cpu::par::ELEMWISE_MIN && crate::cpu::par::threads() > 1 {
        out.par_iter_mut().enumerate().for_each(one);
    } else {
        out.iter_mut().enumerate().for_each(one);
    }
}

/// `y ← s_b·y_new + (1 − s_b)·y` per sample (a plain copy where `s_b = 1`).
fn damp(y: &mut [f32], y_new: &[f32], steps: &[f32], per: usize) {
    if per == 0 {
        return;
    }
    let one = |(b, yb): (usize, &mut [f32])| {
        let (s, nb) = (steps[b], &y_new[b * per..(b + 1) * per]);
        if s == 1.0 {
            yb.copy_from_slice(nb);
        } else {
            for (a, &v) in yb.iter_mut().zip(nb) {
                *a = s * v + (1.0 - s) * *a;
            }
        }
    };
    if y.len() >= crate::cpu::par::ELEMWISE_MIN && crate::cpu::par::threads() > 1 {
        y.par_chunks_mut(per).enumerate().for_each(one);
    } else {
        y.chunks_mut(per).enumerate().for_each(one);
    }
}

/// Sizes of the iterate: `batch` samples of `time × dim` values each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SolveShape {
    pub batch: usize,
    pub time: usize,
    pub dim: usize,
}

impl SolveShape {
    pub fn numel(&self) -> usize {
        self.batch * self.time * self.dim
    }
}

/// Find the fixed point `y = F(y)` by the damped iteration of §2.5, from `y0` (zeros
/// when `None`). `f(y, out)` writes `F(y)`; it runs outside the graph. Returns the last
/// iterate and the statistics. `f` must write every value of `out`.
pub fn solve(
    shape: SolveShape,
    cfg: &SolverConfig,
    run: &SolveRun,
    y0: Option<&[f32]>,
    mut f: impl FnMut(&[f32], &mut [f32]) -> Result<()>,
) -> Result<(Vec<f32>, SolveStats)> {
    solve_with(shape, cfg, run, y0, |y, out, res| {
        f(y, out)?;
        residuals(y, out, shape.time, shape.dim, cfg.eps, res);
        Ok(())
    })
}

/// [`solve`] with a map that also writes the per-sample residuals of its step:
/// `f(y, out, res)` writes `F(y)` into `out` and `residuals(y, out)` (with `cfg.eps`)
/// into `res` (`B` values), e.g. in the same pass over memory.
pub fn solve_with(
    shape: SolveShape,
    cfg: &SolverConfig,
    run: &SolveRun,
    y0: Option<&[f32]>,
    mut f: impl FnMut(&[f32], &mut [f32], &mut [f32]) -> Result<()>,
) -> Result<(Vec<f32>, SolveStats)> {
    solve_with_steps(shape, cfg, run, y0, false, |y, out, _, res| f(y, out, res))
}

/// [`solve_with`] for a map that can take several iterations per call:
/// `f(y, out, k, res)` writes `F^k(y)` into `out` and each iteration's residuals into
/// `res` (iteration-major, `k·B` values). With `pairs`, while every sample is undamped and
/// two iterations fit the budget, it asks for two at a time; when the first of them
/// ends the run or decays a step, it recomputes that one alone and goes on as
/// [`solve_with`]. The iterates and statistics are those of [`solve_with`], bit for bit,
/// whenever `F^2` is `F` applied twice with the same arithmetic.
pub fn solve_with_steps(
    shape: SolveShape,
    cfg: &SolverConfig,
    run: &SolveRun,
    y0: Option<&[f32]>,
    pairs: bool,
    mut f: impl FnMut(&[f32], &mut [f32], usize, &mut [f32]) -> Result<()>,
) -> Result<(Vec<f32>, SolveStats)> {
    let _p = crate::profile::fwd("fp_solve");
    let mut y = start(shape, cfg, run, y0)?;
    let b = shape.batch;
    let mut y_new = vec![0.0f32; y.len()];
    let mut res = vec![0.0f32; 2 * b];
    let mut st = SolverState::new(b, cfg);
    let per = shape.time * shape.dim;
    let undamped = |st: &SolverState| st.stepsize.iter().all(|&s| s == 1.0);
    while st.should_continue(run) {
        if pairs && undamped(&st) && st.iterations + 2 <= run.lmax {
            f(&y, &mut y_new, 2, &mut res)?;
            st.update(&res[..b]);
            if st.should_continue(run) && undamped(&st) {
                st.update(&res[b..]);
            } else {
                // The second iteration would not run (or would be damped): the first alone.
                f(&y, &mut y_new, 1, &mut res[..b])?;
            }
            std::mem::swap(&mut y, &mut y_new);
            continue;
        }
        f(&y, &mut y_new, 1, &mut res[..b])?;
        if undamped(&st) {
            std::mem::swap(&mut y, &mut y_new);
        } else {
            damp(&mut y, &y_new, &st.stepsize, per);
        }
        st.update(&res[..b]);
    }
    Ok((y, st.stats(run)))
}

/// Check the configuration and the start, and return the first iterate (zeros when
/// `y0` is None).
fn start(shape: SolveShape, cfg: &SolverConfig, run: &SolveRun, y0: Option<&[f32]>) -> Result<Vec<f32>> {
    cfg.validate()?;
    if run.lmax == 0 {
        return Err(Error::InvalidArgument { op: "solve", message: "lmax must be at least 1".to_string() });
    }
    let n = shape.numel();
    match y0 {
        Some(v) if v.len() != n => Err(Error::InvalidArgument {
            op: "solve",
            message: format!("start has {} values but the iterate has {n}", v.len()),
        }),
        Some(v) => Ok(v.to_vec()),
        None => Ok(vec![0.0f32; n]),
    }
}
