//! `fixpoint bench fixed-point`: the cost of a Fixed-Point RNN layer against a diagonal
//! layer, a dense RNN with materialised transitions and a structured (Woodbury) solve,
//! at the same thread count, medians of repetitions (noisy on shared 2-core machines).
//!
//! Setup per `(D, T)`, `B` sequences: an FP-RNN block with `d_model = D/2`, `d_inner =
//! D`, Householder rank `r` (scale 2) whose mixer sees the input only (`Q_t = M(x_t)`; with
//! the state in `p` every iteration adds a `D × (rD + r)` GEMM, which no iteration budget
//! can hide), random input `u ~ U(±1)`. Figures:
//!
//! - `iterations`: solver iterations to a relative residual of 1e-3 (q = 1);
//! - `fp_iter_ms`: one evaluation of `F` (mixer, gating, scan) as the solver runs it while
//!   undamped: two iterations per pass over memory per sequence (`FpCore::steps`), so
//!   half the time of that pass; `fp_iter_single_pass_ms`: one iteration per pass
//!   (`FpCore::step`), `fp_iter_two_pass_ms`: one iteration in two passes (mix all rows,
//!   then scan), `scan_ms`: one diagonal scan forward of the same `(B, T, D)`, timed in
//!   alternating blocks with the two-iteration pass;
//!   `diag_fwd_ms`: a diagonal layer's `F` (gating and scan);
//!   `fp_solve_ms_per_iteration`: the solve's time over its iterations (with the
//!   residuals and the stopping rule);
//! - `fp_solve_ms`: the fixed-point solve from the layer's prepared inputs (what (a) and
//!   (b) compute; `fp_fwd_speedup_over_dense` = `dense_ms / fp_solve_ms`); `fp_fwd_ms`:
//!   the whole layer forward (projections, mixer coefficients, solve, recorded step),
//!   without a graph;
//!   `fwd_bwd_ms.<mode>`: forward and backward with each backward option;
//! - `dense_ms` (a): `h_t = A_t h_{t−1} + c_t` with materialised `D×D` matrices `A_t`,
//!   one matrix–vector product per token and sequence, sequences in parallel; forming
//!   `A_t` is not timed; only one sequence's `T` matrices are stored, and each sequence
//!   reads them rotated by `s·T/B` tokens, so the `B` sequences read `B` different
//!   matrices per token as with their own (their contents are random contractive
//!   matrices, not the layer's — the cost does not depend on them);
//!   `dense_shared_ms`: the variant with the matrices shared by the batch (each row of
//!   `A_t` loaded once per group of 4 sequences and dotted with all four), which
//!   favours the baseline and was the `dense_ms` of earlier versions;
//! - `woodbury_ms` (b): the same fixed point token by token through
//!   `(Λ + (I − Λ)Q_t) h_t = Λ h_{t−1} + (I − Λ) Q_t b x_t` with `Q_t = I − W T Wᵀ`
//!   (compact WY form of the Householder product) and the Woodbury identity
//!   (`O(Dr + r³)` per token); `woodbury_max_rel_diff` compares it with the FP solve.
//!
//! Peak live bytes need a counting global allocator, which only a binary can install:
//! pass a [`PeakProbe`] (the bench target `benches/fixed_point.rs` does).

use super::{block_paired_medians, median_secs};
use crate::autograd::no_grad;
use crate::fpr::{
    BackwardMode, BlockConfig, FpCore, FpRnnBlock, Lmax, MixerInput, MixerKernel, MixerKind, SolveRun, SolverConfig,
    Workspace, householder_row,
};
use crate::nn::Module;
use crate::ops::scan::{ScanKernel, ScanSpec, scan_forward};
use crate::{Result, Rng, Tensor, init};
use serde_json::{Value, json};
use std::hint::black_box;

/// Reset and read the peak of live heap bytes (from a counting allocator).
#[derive(Clone, Copy, Debug)]
pub struct PeakProbe {
    /// Set the peak to the current live bytes.
    pub reset: fn(),
    /// Peak live bytes since the last reset.
    pub peak: fn() -> usize,
}

/// What to measure.
#[derive(Clone, Debug)]
pub struct FixedPointOpts {
    pub batch: usize,
    pub dims: Vec<usize>,
    pub lens: Vec<usize>,
    pub rank: usize,
    /// Repetitions per timing (median).
    pub reps: usize,
    /// Skip forward+backward timings above this many `B·T·D` elements.
    pub max_bwd_elems: usize,
    /// Skip the dense baseline above this many stored `T·D²` floats.
    pub max_dense_floats: usize,
    pub backward_modes: Vec<BackwardMode>,
    pub peak: Option<PeakProbe>,
    /// Time per iteration of the JAX peer (`benches/peers/fp_iter_jax.py`, D = 128,
    /// T = 1024, same B and rank), in ms: gives `fp_iter_speedup_over_jax`.
    pub peer_jax_iter_ms: Option<f64>,
    pub seed: u64,
}

impl Default for FixedPointOpts {
    /// The grid: B = 8, D ∈ {64, 128, 256}, T ∈ {64, 256, 1024, 4096}, rank 2.
    fn default() -> Self {
        FixedPointOpts {
            batch: 8,
            dims: vec![64, 128, 256],
            lens: vec![64, 256, 1024, 4096],
            rank: 2,
            reps: 5,
            max_bwd_elems: 8 * 1024 * 256,
            max_dense_floats: 1 << 26,
            backward_modes: vec![BackwardMode::OneStep, BackwardMode::Phantom(4), BackwardMode::implicit()],
            peak: None,
            peer_jax_iter_ms: None,
            seed: 0,
        }
    }
}

fn solver(lmax: usize) -> (SolverConfig, SolveRun) {
    (
        SolverConfig { threshold: 1e-3, lmax: Lmax::Fixed(lmax), eval_lmax: lmax, ..SolverConfig::default() },
        SolveRun { quantile: 1.0, lmax },
    )
}

fn block(d: usize, rank: usize, backward: BackwardMode, identity: bool, seed: u64) -> Result<FpRnnBlock> {
    let cfg = BlockConfig {
        d_inner: d,
        mixer: if identity { MixerKind::Identity } else { MixerKind::Householder { rank, alpha_scale: 2.0 } },
        mixer_input: MixerInput::InputOnly,
        backward,
        ..BlockConfig::new((d / 2).max(1))
    };
    FpRnnBlock::new(&cfg, &mut Rng::new(seed))
}

/// Forward and backward of `Σ h` for the block's recorded state (from `u`).
fn fwd_bwd(blk: &FpRnnBlock, u: &Tensor, lmax: usize) -> Result<()> {
    let (cfg, run) = solver(lmax);
    let inp = blk.prepare(u)?;
    let (hs, _) = blk.fixed_point(&inp, &cfg, &run)?;
    blk.recorded_state(&inp, &hs)?.sum_all().backward()?;
    blk.zero_grad();
    Ok(())
}

/// Peak live bytes of `f` above the live bytes at its start.
fn peak_of(probe: &PeakProbe, f: impl FnOnce() -> Result<()>) -> Result<usize> {
    (probe.reset)();
    let base = (probe.peak)();
    f()?;
    Ok((probe.peak)().saturating_sub(base))
}

/// `(Λ + (I − Λ)Q_t) h_t = Λ h_{t−1} + (I − Λ)Q_t b x_t` token by token with the
/// Woodbury identity on `Q_t = I − W T Wᵀ` (`W = [u_1 … u_r]`, `T` lower triangular).
pub fn woodbury_solve(core: &FpCore, coef: &[f32], r: usize, scale: f32) -> Vec<f32> {
    let (b, t, d) = (core.batch, core.time, core.dim);
    let cl = r * d + r;
    let mut out = vec![0.0f32; b * t * d];
    let mut tm = vec![0.0f64; r * r];
    let mut wtw = vec![0.0f64; r * r];
    let mut small = vec![0.0f64; r * r];
    let (mut rhs, mut qbx, mut z) = (vec![0.0f32; d], vec![0.0f32; d], vec![0.0f64; r]);
    for s in 0..b {
        let mut hp = vec![0.0f32; d];
        for k in 0..t {
            let row = s * t + k;
            let (u, alpha) = coef[row * cl..(row + 1) * cl].split_at(r * d);
            let o = row * d;
            let lam = &core.lambda[o..o + d];
            // T of the compact WY form: T_k = [[T, 0], [−c_k (u_kᵀW) T, c_k]].
            for i in 0..r {
                for j in 0..r {
                    wtw[i * r + j] = crate::ops::fused::row_dot(&u[i * d..(i + 1) * d], &u[j * d..(j + 1) * d]) as f64;
                }
            }
            tm.fill(0.0);
            for kk in 0..r {
                let c = (scale * alpha[kk]) as f64;
                tm[kk * r + kk] = c;
                for j in 0..kk {
                    let s: f64 = (0..kk).map(|m| wtw[kk * r + m] * tm[m * r + j]).sum();
                    tm[kk * r + j] = -c * s;
                }
            }
            // rhs = λ h_{t−1} + (1 − λ) Q b x
            qbx.copy_from_slice(&core.bx[o..o + d]);
            householder_row(u, alpha, scale, &mut qbx);
            for i in 0..d {
                rhs[i] = lam[i] * hp[i] + (1.0 - lam[i]) * qbx[i];
            }
            // M = I − Ŵ Vᵀ, Ŵ = (I − Λ)W, Vᵀ = T Wᵀ: M⁻¹b = b + Ŵ (I − VᵀŴ)⁻¹ Vᵀ b.
            // VᵀŴ = T (Wᵀ(I − Λ)W); Vᵀb = T (Wᵀ b).
            let mut wl = vec![0.0f64; r * r];
            let mut wb = vec![0.0f64; r];
            for i in 0..r {
                let ui = &u[i * d..(i + 1) * d];
                wb[i] = crate::ops::fused::row_dot(ui, &rhs) as f64;
                for j in 0..r {
                    let uj = &u[j * d..(j + 1) * d];
                    wl[i * r + j] = (0..d).map(|m| (ui[m] * (1.0 - lam[m]) * uj[m]) as f64).sum();
                }
            }
            for i in 0..r {
                z[i] = (0..r).map(|j| tm[i * r + j] * wb[j]).sum();
                for j in 0..r {
                    small[i * r + j] =
                        if i == j { 1.0 } else { 0.0 } - (0..r).map(|m| tm[i * r + m] * wl[m * r + j]).sum::<f64>();
                }
            }
            solve_small(&mut small, &mut z, r);
            let h = &mut out[o..o + d];
            for i in 0..d {
                let mut acc = rhs[i] as f64;
                for j in 0..r {
                    acc += (1.0 - lam[i] as f64) * u[j * d + i] as f64 * z[j];
                }
                h[i] = acc as f32;
            }
            hp.copy_from_slice(h);
        }
    }
    out
}

fn solve_small(m: &mut [f64], b: &mut [f64], r: usize) {
    for c in 0..r {
        let p = (c..r).max_by(|&x, &y| m[x * r + c].abs().total_cmp(&m[y * r + c].abs())).unwrap_or(c);
        for j in 0..r {
            m.swap(p * r + j, c * r + j);
        }
        b.swap(p, c);
        for i in c + 1..r {
            let f = m[i * r + c] / m[c * r + c];
            for j in c..r {
                m[i * r + j] -= f * m[c * r + j];
            }
            b[i] -= f * b[c];
        }
    }
    for c in (0..r).rev() {
        let s: f64 = (c + 1..r).map(|j| m[c * r + j] * b[j]).sum();
        b[c] = (b[c] - s) / m[c * r + c];
    }
}

/// Tokens per block of the time-blocked solve: a block's working set (iterate, next
/// iterate, `b⊙x`, `λ`, `r` Householder vectors: `(4 + r)·D` floats per token) for one
/// sequence at a time per core fits in about half of a 1 MiB L2; at least 8 tokens.
pub fn chunk_block(d: usize, rank: usize) -> usize {
    let per_token = (4 + rank) * d.max(1) * 4;
    ((512 * 1024) / per_token).clamp(8, 1024)
}

/// Sequences per task of the shared-matrix dense variant (a function of the batch only).
const DENSE_GROUP: usize = 4;

/// `h_t = A_t h_{t−1} + c_t` for every sequence, each with its own matrix per token (one
/// `D×D` matrix–vector product per token and sequence), sequences in parallel. Only the
/// `T` matrices `a` of one sequence are stored: sequence `s` reads them rotated by
/// `s·T/B` tokens (`A_{(t + s·T/B) mod T}`), so at every token the `B` sequences read `B`
/// different matrices, as they would with their own. Stored matrices larger than the
/// last-level cache are re-read from memory by each sequence, as `B` separate sets would be.
fn dense_rnn(a: &[f32], c: &[f32], t: usize, d: usize, out: &mut [f32]) {
    use crate::ops::fused::row_dot;
    out.copy_from_slice(c);
    let per = t * d;
    if per == 0 {
        return;
    }
    let rot = t / (out.len() / per).max(1);
    crate::cpu::par::for_chunks_mut(out, per, 0, |s, seq| {
        for k in 1..t {
            let (done, rest) = seq.split_at_mut(k * d);
            let prev = &done[(k - 1) * d..];
            let m = (k + s * rot) % t;
            let ak = &a[m * d * d..(m + 1) * d * d];
            for (hi, ar) in rest[..d].iter_mut().zip(ak.chunks_exact(d)) {
                *hi += row_dot(ar, prev);
            }
        }
    });
}

/// [`dense_rnn`] with the `T` matrices `a` shared by the batch (the variant earlier
/// sessions timed): per token, the matrix–vector products of a group of sequences
/// together (each row of `A_t` loaded once and dotted with every sequence's `h_{t−1}`; a
/// hand-written batched matvec, as a general sgemm call per token costs more than the
/// product, docs/performance.md §4), groups in parallel. It reads each `A_t` once per
/// group, not once per sequence, which favours the baseline; reported as `dense_shared_ms`.
fn dense_rnn_shared(a: &[f32], c: &[f32], t: usize, d: usize, out: &mut [f32]) {
    use crate::ops::fused::row_dot;
    out.copy_from_slice(c);
    let per = t * d;
    if per == 0 {
        return;
    }
    crate::cpu::par::for_chunks_mut(out, DENSE_GROUP * per, 0, |_, grp| {
        let rows = grp.len() / per;
        let mut prev = vec![0.0f32; rows * d];
        for k in 1..t {
            // h_{k−1} of the group, contiguous (the loop below writes row k of `grp`).
            for s in 0..rows {
                prev[s * d..(s + 1) * d].copy_from_slice(&grp[s * per + (k - 1) * d..][..d]);
            }
            let ak = &a[k * d * d..(k + 1) * d * d];
            for (i, ar) in ak.chunks_exact(d).enumerate() {
                for s in 0..rows {
                    grp[s * per + k * d + i] += row_dot(ar, &prev[s * d..(s + 1) * d]);
                }
            }
        }
    });
}

/// Run the benchmark; the result is one JSON object (see the module docs for the keys).
pub fn run(opts: &FixedPointOpts) -> Result<Value> {
    let b = opts.batch;
    let mut points = Vec::new();
    let mut summary = json!({ "threads": rayon::current_num_threads(), "batch": b, "rank": opts.rank });
    let mut worst_mem_ratio: Option<f64> = None;
    for &d in &opts.dims {
        for &t in &opts.lens {
            let mut rng = Rng::new(opts.seed ^ (d * 131 + t) as u64);
            let u = init::uniform([b, t, (d / 2).max(1)], -1.0, 1.0, &mut rng);
            let fp = block(d, opts.rank, BackwardMode::OneStep, false, opts.seed)?;
            let inp = no_grad(|| fp.prepare(&u))?;
            let core = fp.core(&inp)?;
            let (scfg, run) = solver(200);
            let (h_fp, stats) = core.solve(&scfg, &run, None)?;
            let n = b * t * d;
            let h = vec![0.1f32; n];
            let mut out = vec![0.0f32; n];
            let mut ws = Workspace::default();
            let spec = ScanSpec::new(b, t, d);
            // The solver's iteration while undamped: two per pass over memory
            // (`steps(.., 2, ..)`), timed against the scan in alternating blocks (both
            // medians from the same stretch of machine time); one per pass beside it.
            let u_scan = vec![0.01f32; n];
            let mut scan_out = vec![0.0f32; n];
            let (fp_pair, scan) = block_paired_medians(
                opts.reps,
                5,
                || core.steps(black_box(&h), &mut out, &mut ws, 2, None).unwrap(),
                || {
                    scan_forward(ScanKernel::Auto, &spec, &core.lambda, black_box(&u_scan), None, &mut scan_out)
                        .unwrap()
                },
            );
            let fp_iter = fp_pair / 2.0;
            let fp_iter_single = median_secs(opts.reps, || {
                core.step(black_box(&h), &mut out, &mut ws).unwrap();
            });
            let fp_iter_two_pass = median_secs(opts.reps, || {
                core.step_two_pass(black_box(&h), &mut out, &mut ws).unwrap();
            });
            let diag = FpCore::new(b, t, d, core.lambda.clone(), core.bx.clone(), MixerKernel::Identity)?;
            let diag_fwd = median_secs(opts.reps, || {
                diag.step(black_box(&h), &mut out, &mut ws).unwrap();
            });
            let fp_solve = median_secs(opts.reps, || {
                black_box(core.solve(&scfg, &run, None).unwrap());
            });
            // The time-blocked solve of the same fixed point (per block: the same
            // threshold, cap 200), and its cost per evaluation of F over every row.
            let blk_len = chunk_block(d, opts.rank);
            let (h_ch, ch_stats) = core.solve_chunked(&scfg, 200, blk_len)?;
            let fp_chunked = median_secs(opts.reps, || {
                black_box(core.solve_chunked(&scfg, 200, blk_len).unwrap());
            });
            let ch_iters = ch_stats.mean_row_iterations(t);
            let fp_scale = h_fp.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
            let ch_diff = h_ch.iter().zip(&h_fp).fold(0.0f32, |m, (a, b)| m.max((a - b).abs())) / fp_scale;
            let (cfg_s, run_s) = solver(200);
            let fp_fwd = median_secs(opts.reps, || {
                no_grad(|| {
                    let inp = fp.prepare(&u).unwrap();
                    let (hs, _) = fp.fixed_point(&inp, &cfg_s, &run_s).unwrap();
                    black_box(fp.recorded_state(&inp, &hs).unwrap());
                })
            });
            let mut p = json!({
                "D": d, "T": t, "iterations": stats.iterations, "converged": stats.converged,
                "fp_iter_ms": fp_iter * 1e3, "scan_ms": scan * 1e3, "fp_iter_over_scan": fp_iter / scan,
                "fp_iter_single_pass_ms": fp_iter_single * 1e3, "fp_iter_single_pass_over_scan": fp_iter_single / scan,
                "fp_solve_ms_per_iteration": fp_solve * 1e3 / stats.iterations.max(1) as f64,
                "fp_iter_two_pass_ms": fp_iter_two_pass * 1e3, "fused_speedup_over_two_pass": fp_iter_two_pass / fp_iter,
                "diag_fwd_ms": diag_fwd * 1e3, "fp_fwd_ms": fp_fwd * 1e3, "fp_solve_ms": fp_solve * 1e3,
                "chunked": {
                    "block": blk_len, "solve_ms": fp_chunked * 1e3, "mean_row_iterations": ch_iters,
                    "max_iterations": ch_stats.max_iterations(), "converged": ch_stats.converged,
                    "iter_ms": fp_chunked * 1e3 / ch_iters.max(1e-9),
                    "iter_over_scan": fp_chunked / ch_iters.max(1e-9) / scan,
                    "max_rel_diff_from_parallel": ch_diff as f64,
                },
            });
            if n <= opts.max_bwd_elems {
                for &mode in &opts.backward_modes {
                    let blk = block(d, opts.rank, mode, false, opts.seed)?;
                    let s = median_secs(opts.reps.min(3), || fwd_bwd(&blk, &u, 200).unwrap());
                    p["fwd_bwd_ms"][mode.name()] = (s * 1e3).into();
                }
                let dblk = block(d, opts.rank, BackwardMode::OneStep, true, opts.seed)?;
                let s = median_secs(opts.reps.min(3), || fwd_bwd(&dblk, &u, 200).unwrap());
                p["fwd_bwd_ms"]["diagonal"] = (s * 1e3).into();
                if let Some(probe) = &opts.peak {
                    let one = peak_of(probe, || fwd_bwd(&fp, &u, 200))?;
                    let diag_peak = peak_of(probe, || fwd_bwd(&dblk, &u, 200))?;
                    let (c16, r16) = solver(16);
                    let (c2, r2) = solver(2);
                    let at = |c: SolverConfig, r: SolveRun| {
                        peak_of(probe, || {
                            let inp = fp.prepare(&u)?;
                            let (hs, _) = fp.fixed_point(&inp, &c, &r)?;
                            fp.recorded_state(&inp, &hs)?.sum_all().backward()?;
                            fp.zero_grad();
                            Ok(())
                        })
                    };
                    let (p16, p2) = (at(c16, r16)?, at(c2, r2)?);
                    let ratio = one as f64 / diag_peak.max(1) as f64;
                    worst_mem_ratio = Some(worst_mem_ratio.map_or(ratio, |w: f64| w.max(ratio)));
                    p["peak_bytes"] = json!({ "one_step": one, "diagonal": diag_peak, "lmax16": p16, "lmax2": p2 });
                    p["one_step_peak_mem_over_diagonal"] = ratio.into();
                    p["peak_mem_lmax16_over_lmax2"] = (p16 as f64 / p2.max(1) as f64).into();
                }
            }
            // (b) Woodbury, on the layer's own coefficients.
            if let MixerKernel::Householder(k) = &core.mixer {
                let rows = b * t;
                let (w, cl) = (k.width(), k.width());
                let mut coef = vec![0.0f32; rows * cl];
                for row in 0..rows {
                    let (uu, aa) = coef[row * cl..(row + 1) * cl].split_at_mut(k.rank * d);
                    k.coefficients_row(&k.base[row * w..(row + 1) * w], uu, aa);
                }
                let mut hw = Vec::new();
                let wood = median_secs(opts.reps.min(3), || hw = woodbury_solve(&core, &coef, k.rank, k.alpha_scale));
                let scale = h_fp.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
                let diff = hw.iter().zip(&h_fp).fold(0.0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
                p["woodbury_ms"] = (wood * 1e3).into();
                p["woodbury_max_rel_diff"] = (diff as f64).into();
            }
            // (a) dense RNN with materialised A_t (one sequence's matrices, shared).
            if t * d * d <= opts.max_dense_floats {
                let mut r2 = Rng::new(7);
                let sc = 0.9 / (d as f32).sqrt();
                let a: Vec<f32> = (0..t * d * d).map(|_| r2.range(-sc, sc)).collect();
                let mut hd = vec![0.0f32; n];
                let dense = median_secs(opts.reps.min(3), || dense_rnn(&a, &core.bx, t, d, &mut hd));
                let mut hs = vec![0.0f32; n];
                let shared = median_secs(opts.reps.min(3), || dense_rnn_shared(&a, &core.bx, t, d, &mut hs));
                p["dense_ms"] = (dense * 1e3).into();
                p["dense_shared_ms"] = (shared * 1e3).into();
                p["fp_fwd_speedup_over_dense_shared"] = (shared / fp_solve).into();
                p["fp_fwd_speedup_over_dense"] = (dense / fp_solve).into();
                p["chunked"]["fwd_speedup_over_dense"] = (dense / fp_chunked).into();
                if d == 256 && t == 1024 {
                    summary["fp_fwd_speedup_over_dense_d256_t1024"] = (dense / fp_solve).into();
                    summary["fp_chunked_fwd_speedup_over_dense_d256_t1024"] = (dense / fp_chunked).into();
                    summary["fp_fwd_speedup_over_dense_shared_d256_t1024"] = (shared / fp_solve).into();
                }
            }
            if d == 128 && t == 1024 {
                summary["fp_iter_time_over_scan"] = (fp_iter / scan).into();
                summary["fp_chunked_iter_time_over_scan"] = (fp_chunked / ch_iters.max(1e-9) / scan).into();
                summary["fp_iter_ms_d128_t1024"] = (fp_iter * 1e3).into();
                if let Some(j) = opts.peer_jax_iter_ms {
                    summary["jax_fp_iter_ms"] = j.into();
                    summary["fp_iter_speedup_over_jax"] = (j / (fp_iter * 1e3)).into();
                }
                if let Some(w) = p.get("woodbury_ms") {
                    summary["woodbury_ms_d128_t1024"] = w.clone();
                }
            }
            if let Some(v) = p.get("peak_mem_lmax16_over_lmax2") {
                let prev = summary.get("peak_mem_lmax16_over_lmax2").and_then(Value::as_f64).unwrap_or(0.0);
                summary["peak_mem_lmax16_over_lmax2"] = prev.max(v.as_f64().unwrap_or(0.0)).into();
            }
            points.push(p);
        }
    }
    if let Some(w) = worst_mem_ratio {
        summary["one_step_peak_mem_over_diagonal"] = w.into();
    }
    summary["points"] = Value::Array(points);
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// f64 recurrence `h_t = A_{m(s,t)} h_{t−1} + c_t` with sequence `s` reading matrix
    /// `m(s, t) = (t + s·rot) mod T`.
    fn reference(a: &[f32], c: &[f32], b: usize, t: usize, d: usize, rot: usize) -> Vec<f64> {
        let mut h: Vec<f64> = c.iter().map(|&v| v as f64).collect();
        for s in 0..b {
            for k in 1..t {
                let m = (k + s * rot) % t;
                for i in 0..d {
                    let dot: f64 =
                        (0..d).map(|j| a[m * d * d + i * d + j] as f64 * h[s * t * d + (k - 1) * d + j]).sum();
                    h[s * t * d + k * d + i] += dot;
                }
            }
        }
        h
    }

    #[test]
    fn dense_baselines_compute_the_recurrence() {
        let (b, t, d) = (6, 12, 37);
        let mut rng = Rng::new(3);
        let sc = 0.9 / (d as f32).sqrt();
        let a: Vec<f32> = (0..t * d * d).map(|_| rng.range(-sc, sc)).collect();
        let c: Vec<f32> = (0..b * t * d).map(|_| rng.range(-1.0, 1.0)).collect();
        for (name, rot) in [("per sequence", t / b), ("shared", 0)] {
            let mut got = vec![0.0f32; b * t * d];
            if rot == 0 {
                dense_rnn_shared(&a, &c, t, d, &mut got);
            } else {
                dense_rnn(&a, &c, t, d, &mut got);
            }
            let want = reference(&a, &c, b, t, d, rot);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!((*g as f64 - w).abs() <= 1e-4 * (1.0 + w.abs()), "{name}: element {i}: {g} vs {w}");
            }
        }
    }
}
