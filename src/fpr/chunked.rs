//! A time-blocked ("chunked") solve of the same fixed point `h = F(h)` as
//! [`FpCore::solve`], for the CPU's caches.
//!
//! `F` is causal: `F(h)_t` depends on `h_{≤t}` only (through the scan's carry and, for a
//! state-dependent mixer, `shift(h)`). So the fixed point can be found a block of `L`
//! tokens at a time: with `h*_{t0−1}` final, iterate `F` restricted to the rows
//! `t0..t0+L` (carry and shifted state `h*_{t0−1}`) until that block's residual meets
//! the threshold, then move on. This is block Gauss–Seidel in time: the blocks run one
//! after another, everything inside a block (the mixer, the gate, the scan) is the
//! parallel iteration of §2.1, and sequences run in parallel, one task each, with no
//! thread hand-off inside.
//!
//! Why: a block's iterate, inputs and coefficients (`L·(6 + 2r)·D` floats per sequence
//! with Householder rank `r`) stay in L2 across its iterations, where the global
//! iteration streams the whole `[B, T, D]` problem from memory once per iteration. A
//! block also starts from a converged carry, so it needs no more iterations than the
//! global solve (usually fewer).
//!
//! Stopping, per sequence and block, follows §2.5 with quantile 1 (one sample): the
//! relative residual `max_t ‖y_t − y_new,t‖_∞ / (‖y_new,t‖_∞ + eps)` over the block,
//! damping with patience, the cap `lmax` per block, and the last iterate is kept. A
//! solution therefore meets the residual threshold on every block, which bounds the
//! residual of the whole sequence by the same threshold. It is the training semantics
//! of the paper only with `lmax` large enough to converge: a cap applies per block here,
//! per sequence there, so [`super::SolveMethod::Parallel`] stays the default.

use super::core::{FpCore, RowScratch, mix_gate_row};
use super::solver::{SolveRun, SolverConfig, SolverState, row_residual};
use crate::error::{Error, Result};

/// Per (sequence, block): iterations, final best residual, converged.
type BlockStat = (usize, f32, bool);

/// Statistics of [`FpCore::solve_chunked`].
#[derive(Clone, Debug, PartialEq)]
pub struct ChunkedStats {
    /// Tokens per block (the last block may be shorter).
    pub block: usize,
    /// Blocks per sequence.
    pub blocks: usize,
    /// Iterations of every (sequence, block), sequence-major.
    pub iterations: Vec<usize>,
    /// Whether every (sequence, block) met the threshold.
    pub converged: bool,
    /// The largest final best residual over all (sequence, block).
    pub max_residual: f32,
}

impl ChunkedStats {
    /// Evaluations of `F` per row, averaged over every row: the solve's cost in units of
    /// one iteration of the global solve.
    pub fn mean_row_iterations(&self, time: usize) -> f64 {
        if self.blocks == 0 || time == 0 {
            return 0.0;
        }
        let per_seq = self.iterations.len() / self.blocks;
        let mut rows = 0.0;
        for seq in self.iterations.chunks(self.blocks) {
            for (k, &it) in seq.iter().enumerate() {
                let len = self.block.min(time - k * self.block);
                rows += (it * len) as f64;
            }
        }
        rows / (per_seq * time) as f64
    }
    /// The most iterations any block took.
    pub fn max_iterations(&self) -> usize {
        self.iterations.iter().copied().max().unwrap_or(0)
    }
}

impl FpCore {
    /// The fixed point by blocks of `block` tokens (see the module docs), each block
    /// iterated from zeros with at most `lmax` evaluations of `F`. Sequences run in
    /// parallel.
    pub fn solve_chunked(&self, cfg: &SolverConfig, lmax: usize, block: usize) -> Result<(Vec<f32>, ChunkedStats)> {
        let _p = crate::profile::fwd("fp_solve");
        cfg.validate()?;
        if lmax == 0 || block == 0 {
            return Err(Error::InvalidArgument {
                op: "FpCore::solve_chunked",
                message: format!("lmax ({lmax}) and the block length ({block}) must be at least 1"),
            });
        }
        let (t_len, d) = (self.time, self.dim);
        let per = t_len * d;
        let blocks = t_len.div_ceil(block);
        let mut out = vec![0.0f32; self.batch * per];
        let mut stats: Vec<BlockStat> = vec![(0, 0.0, true); self.batch * blocks];
        if per > 0 {
            let mut work: Vec<(&mut [f32], &mut [BlockStat])> =
                out.chunks_mut(per).zip(stats.chunks_mut(blocks.max(1))).collect();
            let one = |b: usize, (hb, sb): &mut (&mut [f32], &mut [BlockStat])| {
                self.solve_sequence(b, cfg, lmax, block, hb, sb)
            };
            if self.batch > 1 && crate::cpu::par::threads() > 1 && self.batch * per >= crate::cpu::par::ELEMWISE_MIN {
                use rayon::prelude::*;
                work.par_iter_mut().enumerate().for_each(|(b, w)| one(b, w));
            } else {
                work.iter_mut().enumerate().for_each(|(b, w)| one(b, w));
            }
        }
        let stats = ChunkedStats {
            block,
            blocks,
            iterations: stats.iter().map(|s| s.0).collect(),
            converged: stats.iter().all(|s| s.2),
            max_residual: stats.iter().map(|s| s.1).fold(0.0, |m: f32, v| if v > m || v.is_nan() { v } else { m }),
        };
        Ok((out, stats))
    }

    /// One sequence, block after block; `hb` is its `[T, D]` output.
    fn solve_sequence(
        &self,
        b: usize,
        cfg: &SolverConfig,
        lmax: usize,
        block: usize,
        hb: &mut [f32],
        stats: &mut [BlockStat],
    ) {
        let (t_len, d, k) = (self.time, self.dim, &self.mixer);
        let run = SolveRun { quantile: 1.0, lmax };
        let mut rs = RowScratch::new(k, d);
        let (w, cl) = (k.width(), k.coef_len());
        let rows = block.min(t_len);
        let stateful = self.fixed_coefficients().is_none() && !matches!(k, super::MixerKernel::Identity);
        let mut pre = vec![0.0f32; if stateful { rows * w } else { 0 }];
        let mut shifted = vec![0.0f32; if stateful { rows * d } else { 0 }];
        let mut coef = vec![0.0f32; cl];
        let mut cur_buf = vec![0.0f32; rows * d];
        let mut nxt_buf = vec![0.0f32; rows * d];
        for (c, st_out) in stats.iter_mut().enumerate() {
            let t0 = c * block;
            let len = block.min(t_len - t0);
            let (done, _) = hb.split_at(t0 * d);
            let carry: Option<&[f32]> = (t0 > 0).then(|| &done[(t0 - 1) * d..t0 * d]);
            // Ping-pong buffers: an undamped iteration swaps them instead of copying.
            let (mut cur, mut nxt) = (&mut cur_buf[..len * d], &mut nxt_buf[..len * d]);
            cur.fill(0.0);
            let mut st = SolverState::new(1, cfg);
            while st.should_continue(&run) {
                if stateful {
                    // The block's pre-activations for `shift(cur)` (carry first): one GEMM.
                    let sh = &mut shifted[..len * d];
                    match carry {
                        Some(h) => sh[..d].copy_from_slice(h),
                        None => sh[..d].fill(0.0),
                    }
                    sh[d..].copy_from_slice(&cur[..(len - 1) * d]);
                    self.block_pre_activations(b * t_len + t0, sh, &mut pre[..len * w]);
                }
                let mut res = 0.0f32;
                for i in 0..len {
                    let row = b * t_len + t0 + i;
                    let o = row * d;
                    let c: &[f32] = match self.fixed_coefficients() {
                        Some(f) => &f[row * cl..][..cl],
                        None if stateful => {
                            k.coefficients_row(&pre[i * w..(i + 1) * w], &mut coef, &mut rs.scratch);
                            &coef
                        }
                        None => &[],
                    };
                    let (prev, rest) = nxt.split_at_mut(i * d);
                    let carry_row = if i == 0 { carry } else { Some(&prev[(i - 1) * d..]) };
                    let (bx, hr, lam) = (&self.bx[o..o + d], &cur[i * d..(i + 1) * d], &self.lambda[o..o + d]);
                    let ex = self.row_extras(row);
                    mix_gate_row(k, (c, ex), (bx, hr, lam), carry_row, (&mut rs.v, &mut rs.scratch), &mut rest[..d]);
                    // The residual of §2.5 row by row while the row is in L1 (the same
                    // per-row terms and maximum as `sample_residual`).
                    res = row_residual(res, &cur[i * d..(i + 1) * d], &rest[..d], cfg.eps);
                }
                let s = st.stepsize[0];
                if s == 1.0 {
                    std::mem::swap(&mut cur, &mut nxt);
                } else {
                    for (a, &v) in cur.iter_mut().zip(nxt.iter()) {
                        *a = s * v + (1.0 - s) * *a;
                    }
                }
                st.update(&[res]);
            }
            let stats = st.stats(&run);
            *st_out = (stats.iterations, stats.residual[0], stats.converged);
            hb[t0 * d..(t0 + len) * d].copy_from_slice(cur);
        }
    }
}
