//! The FP-Mamba block (spec §2.4, §4.3; Mamba-1 based) and its diagonal baseline `mamba`.
//!
//! ```text
//! [x; z] = W_in u                              (d → 2D; short conv: x = SiLU(conv_k4(x) + bias), else x stays raw)
//! [δ; B^x; C^x] = W_x x   (D → R + 2N, R = ceil(d/16));  Δ = softplus(W_dt δ + b_dt);  A = −exp(A_log)
//! F(y): y_s = shift(y);  x̃ = Q([x; y_s])(x − y) + y
//!       [B^y; C^y] = W_bc y_s  (weight-normed D → 2N; the y-dependence of B and C)
//!       B, C = normalize_N(B^x + B^y), normalize_N(C^x + C^y)     (bc_norm)
//!       return LayerNorm(selective_scan(x̃, Δ, A, B, C, D_skip))    (affine; after every iteration)
//! y* = solve(F) (off the graph, damped: s0 = 0.99, γ = 0.9);  y = F(stopgrad(y*))
//! out = W_out(SiLU(z + W_zy shift(y)) ⊙ y)      (W_zy weight-normed; off for mamba)
//! ```
//!
//! Variant `glu_in_loop` (the reference's LM setting): `F` ends with `⊙ SiLU(z)` (the
//! gate inside every iteration), there is no `W_zy`, and `out = W_out y`.
//!
//! `mamba` is the same block with `Q ≡ I`, no output dependence of B and C, no
//! LayerNorm and no `W_zy`: then `F` does not depend on `y` and one step is exact. The
//! DPLR mixer is allowed here. Backward options as for the FP-RNN block
//! ([`BackwardMode`]). Δ and A do not depend on y (§8.4). `W_out` is initialised
//! `U(±1/√D)` times [`MambaConfig::out_scale`], which the model sets to `1/√n_layer`
//! (§4.1, mamba-ssm's rescaling of the residual projections).

use super::block::{BackwardMode, ShortConv};
use super::implicit::{AdjointSink, AdjointStats};
use super::mixer::{Mixer, MixerInput, MixerKind, zero_bias};
use super::selective::selective_scan;
use super::solver::{SolveRun, SolveShape, SolveStats, SolverConfig, solve};
use crate::autograd::no_grad;
use crate::error::{Error, Result};
use crate::nn::{LayerNorm, Linear, Module, prefixed};
use crate::rng::Rng;
use crate::tensor::Tensor;
use std::sync::{Arc, Mutex};

/// Hyper-parameters of one FP-Mamba (or Mamba) block.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MambaConfig {
    pub d_model: usize,
    /// `D` (2·d_model).
    pub d_inner: usize,
    /// `N`.
    pub d_state: usize,
    /// `R = ceil(d_model/16)`.
    pub dt_rank: usize,
    pub mixer: MixerKind,
    pub mixer_input: MixerInput,
    pub mixer_eps: f32,
    /// B and C depend on the shifted output (`W_bc`).
    pub y_dependence: bool,
    /// L2-normalise B and C over N (`bc_norm`).
    pub bc_norm: bool,
    /// LayerNorm after every iteration.
    pub layer_norm: bool,
    /// The GLU's `W_zy shift(y)` term (§8.5).
    pub glu_y: bool,
    /// The SiLU(z) gate inside every iteration instead of after the solve (drops `W_zy`).
    pub glu_in_loop: bool,
    /// `x = SiLU(conv_k4(x) + bias)` (depthwise causal, kernel `conv_kernel`).
    pub short_conv: bool,
    pub conv_kernel: usize,
    pub norm_eps: f32,
    pub backward: BackwardMode,
    /// Factor on the initial `W_out` (the backbone uses `1/√n_layer`, §4.1).
    pub out_scale: f32,
}

impl MambaConfig {
    /// FP-Mamba with Householder rank 1 (scale 2), N = 16, every flag of §4.3 on.
    pub fn fp_mamba(d_model: usize) -> MambaConfig {
        MambaConfig {
            d_model,
            d_inner: 2 * d_model,
            d_state: 16,
            dt_rank: d_model.div_ceil(16),
            mixer: MixerKind::Householder { rank: 1, alpha_scale: 2.0 },
            mixer_input: MixerInput::Concat,
            mixer_eps: 1e-6,
            y_dependence: true,
            bc_norm: true,
            layer_norm: true,
            glu_y: true,
            glu_in_loop: false,
            short_conv: false,
            conv_kernel: 4,
            norm_eps: 1e-6,
            backward: BackwardMode::OneStep,
            out_scale: 1.0,
        }
    }
    /// Mamba-1: `Q ≡ I`, no y-dependence, no LayerNorm, no `W_zy`.
    pub fn mamba(d_model: usize) -> MambaConfig {
        MambaConfig {
            mixer: MixerKind::Identity,
            y_dependence: false,
            layer_norm: false,
            glu_y: false,
            ..MambaConfig::fp_mamba(d_model)
        }
    }
    /// Whether `F` depends on `y` (otherwise one step is the fixed point).
    pub fn iterates(&self) -> bool {
        self.mixer != MixerKind::Identity || self.y_dependence
    }
    /// Whether the block has the GLU's `W_zy shift(y)` term (not with `glu_in_loop`).
    pub fn has_zy(&self) -> bool {
        self.glu_y && !self.glu_in_loop
    }
}

/// What the block computes before the fixed point.
#[derive(Clone, Debug)]
pub struct MambaInputs {
    /// `[B, T, D]`.
    pub x: Tensor,
    pub z: Tensor,
    /// `Δ`, `[B, T, D]`.
    pub delta: Tensor,
    /// `A = −exp(A_log)`, `[D, N]`.
    pub a: Tensor,
    /// `B^x`, `C^x`, `[B, T, N]`.
    pub bx: Tensor,
    pub cx: Tensor,
}

impl MambaInputs {
    pub fn detached(&self) -> MambaInputs {
        MambaInputs {
            x: self.x.detach(),
            z: self.z.detach(),
            delta: self.delta.detach(),
            a: self.a.detach(),
            bx: self.bx.detach(),
            cx: self.cx.detach(),
        }
    }
}

/// The FP-Mamba block (see the module docs).
#[derive(Clone, Debug)]
pub struct FpMambaBlock {
    cfg: MambaConfig,
    in_proj: Linear,
    x_proj: Linear,
    dt_proj: Linear,
    a_log: Tensor,
    d_skip: Tensor,
    conv: Option<ShortConv>,
    mixer: Mixer,
    bc_proj: Option<Linear>,
    norm: Option<LayerNorm>,
    zy_proj: Option<Linear>,
    out_proj: Linear,
    adjoint: AdjointSink,
}

impl FpMambaBlock {
    /// Initialisation of §4.3: `A_log[i, n] = log(n + 1)`, `D_skip = 1`, `W_dt ~ U(±R^{−½})`,
    /// `b_dt = dt + log(1 − e^{−dt})` with `dt = exp(U[ln 1e-3, ln 0.1])` (≥ 1e-4).
    pub fn new(cfg: &MambaConfig, rng: &mut Rng) -> Result<FpMambaBlock> {
        let (d, di, n, r) = (cfg.d_model, cfg.d_inner, cfg.d_state, cfg.dt_rank);
        if d == 0 || di == 0 || n == 0 || r == 0 || (cfg.short_conv && cfg.conv_kernel == 0) {
            return Err(Error::InvalidArgument {
                op: "FpMambaBlock::new",
                message: format!(
                    "d_model {d}, d_inner {di}, d_state {n}, dt_rank {r} (and conv_kernel {} with short_conv) \
                     must be positive",
                    cfg.conv_kernel
                ),
            });
        }
        cfg.backward.validate()?;
        if !(cfg.out_scale > 0.0 && cfg.out_scale.is_finite()) {
            return Err(Error::InvalidArgument {
                op: "FpMambaBlock::new",
                message: format!("out_scale must be finite and positive, got {}", cfg.out_scale),
            });
        }
        let in_proj = Linear::new(d, 2 * di, false, rng);
        let conv = cfg.short_conv.then(|| ShortConv::new(di, cfg.conv_kernel, rng));
        let x_proj = Linear::new(di, r + 2 * n, false, rng);
        let mut dt_proj = Linear::new(r, di, true, rng);
        let bound = (r as f32).powf(-0.5);
        let (lo, hi) = (1e-3f32.ln(), 0.1f32.ln());
        for (name, p) in dt_proj.params_mut() {
            if name == "bias" {
                p.update_data(|b| {
                    for v in b.iter_mut() {
                        let dt = (lo + (hi - lo) * rng.uniform()).exp().max(1e-4);
                        *v = dt + (-(-dt).exp_m1()).ln();
                    }
                });
            } else {
                p.update_data(|w| w.iter_mut().for_each(|v| *v = rng.range(-bound, bound)));
            }
        }
        let a_log =
            Tensor::from_vec((0..di * n).map(|k| ((k % n) as f32 + 1.0).ln()).collect(), [di, n])?.requires_grad_();
        let d_skip = Tensor::ones([di]).requires_grad_();
        let mixer = Mixer::new(cfg.mixer, cfg.mixer_input.width(di), di, cfg.mixer_eps, rng)?;
        let bc_proj = cfg.y_dependence.then(|| Linear::weight_normalized(di, 2 * n, false, rng));
        let norm = cfg.layer_norm.then(|| LayerNorm::new(di, cfg.norm_eps, true));
        let zy_proj = cfg.has_zy().then(|| Linear::weight_normalized(di, di, false, rng));
        let mut out_proj = Linear::new(di, d, false, rng);
        if cfg.out_scale != 1.0 {
            for (_, w) in out_proj.params_mut() {
                w.update_data(|v| v.iter_mut().for_each(|x| *x *= cfg.out_scale));
            }
        }
        let mut blk = FpMambaBlock {
            cfg: *cfg,
            in_proj,
            x_proj,
            dt_proj,
            a_log,
            d_skip,
            conv,
            mixer,
            bc_proj,
            norm,
            zy_proj,
            out_proj,
            adjoint: Arc::new(Mutex::new(None)),
        };
        if let Some(l) = &mut blk.bc_proj {
            zero_bias(l);
        }
        Ok(blk)
    }

    pub fn config(&self) -> &MambaConfig {
        &self.cfg
    }
    pub fn mixer(&self) -> &Mixer {
        &self.mixer
    }
    pub fn d_skip(&self) -> &Tensor {
        &self.d_skip
    }

    /// Everything before the fixed point, for `u` of shape `[B, T, d_model]`.
    pub fn prepare(&self, u: &Tensor) -> Result<MambaInputs> {
        let (di, n, r) = (self.cfg.d_inner, self.cfg.d_state, self.cfg.dt_rank);
        if u.rank() != 3 || u.shape()[2] != self.cfg.d_model {
            return Err(Error::InvalidArgument {
                op: "FpMambaBlock",
                message: format!("input must be [B, T, {}], got {}", self.cfg.d_model, u.shape_obj()),
            });
        }
        let xz = self.in_proj.forward(u)?;
        let x = xz.narrow(-1, 0, di)?.contiguous();
        let x = match &self.conv {
            Some(c) => c.forward_silu(&x)?,
            None => x,
        };
        let z = xz.narrow(-1, di, di)?.contiguous();
        let xd = self.x_proj.forward(&x)?;
        let delta = self.dt_proj.forward(&xd.narrow(-1, 0, r)?)?.softplus();
        let bx = xd.narrow(-1, r, n)?.contiguous();
        let cx = xd.narrow(-1, r + n, n)?.contiguous();
        let a = self.a_log.exp().neg();
        Ok(MambaInputs { x, z, delta, a, bx, cx })
    }

    /// `B`, `C` (`[B, T, N]`) from the shifted output `y_s` (ignored without y-dependence).
    pub fn bc(&self, inp: &MambaInputs, y_s: &Tensor) -> Result<(Tensor, Tensor)> {
        let n = self.cfg.d_state;
        let (mut b, mut c) = (inp.bx.clone(), inp.cx.clone());
        if let Some(p) = &self.bc_proj {
            let byc = p.forward(y_s)?;
            b = b.add(&byc.narrow(-1, 0, n)?)?;
            c = c.add(&byc.narrow(-1, n, n)?)?;
        }
        if self.cfg.bc_norm {
            b = b.l2_normalize(-1, 1e-6)?;
            c = c.l2_normalize(-1, 1e-6)?;
        }
        Ok((b, c))
    }

    /// `x̃ = Q([x; y_s])(x − y) + y` (`x` itself for `Q ≡ I`).
    pub fn x_tilde(&self, inp: &MambaInputs, y: &Tensor) -> Result<Tensor> {
        if self.mixer.is_identity() {
            return Ok(inp.x.clone());
        }
        let p = self.cfg.mixer_input.build(&inp.x, y)?;
        self.mixer.apply(&p, &inp.x.sub(y)?)?.add(y)
    }

    /// One step `F(y)` on the graph.
    pub fn step(&self, inp: &MambaInputs, y: &Tensor) -> Result<Tensor> {
        if y.shape() != inp.x.shape() {
            return Err(Error::ShapeMismatch {
                op: "FpMambaBlock::step (y vs [B, T, D])",
                lhs: y.shape_obj().clone(),
                rhs: inp.x.shape_obj().clone(),
            });
        }
        let (b, c) = self.bc(inp, &y.shift(1, 1)?)?;
        let xt = self.x_tilde(inp, y)?;
        let yhat = selective_scan(&xt, &inp.delta, &inp.a, &b, &c, &self.d_skip)?;
        let y = match &self.norm {
            Some(ln) => ln.forward(&yhat)?,
            None => yhat,
        };
        if self.cfg.glu_in_loop { y.mul(&inp.z.silu()) } else { Ok(y) }
    }

    /// `y*` (detached) by the §2.5 iteration (graph ops under no_grad per evaluation).
    pub fn fixed_point(&self, inp: &MambaInputs, cfg: &SolverConfig, run: &SolveRun) -> Result<(Tensor, SolveStats)> {
        let shape = inp.x.shape_obj().clone();
        let &[b, t, d] = inp.x.shape() else { unreachable!("prepare makes [B, T, D]") };
        if !self.cfg.iterates() {
            return Ok((Tensor::zeros(shape), SolveStats::exact(b, cfg, run)));
        }
        no_grad(|| {
            let inp = inp.detached();
            let (y, stats) = solve(SolveShape { batch: b, time: t, dim: d }, cfg, run, None, |y, out| {
                let yt = Tensor::from_vec(y.to_vec(), shape.clone())?;
                out.copy_from_slice(&self.step(&inp, &yt)?.to_vec());
                Ok(())
            })?;
            Ok((Tensor::from_vec(y, shape.clone())?, stats))
        })
    }

    /// `F(stopgrad(y*))` with the gradient path of the backward mode.
    pub fn recorded_state(&self, inp: &MambaInputs, y_star: &Tensor) -> Result<Tensor> {
        let freeze = || {
            let mut frozen = self.clone();
            frozen.adjoint = Arc::new(Mutex::new(None));
            for (_, p) in frozen.params_mut() {
                *p = p.detach();
            }
            (frozen, inp.detached())
        };
        super::implicit::recorded_state(self.cfg.backward, self, inp, y_star, Self::step, freeze, self.adjoint.clone())
    }

    pub fn last_adjoint_stats(&self) -> Option<AdjointStats> {
        self.adjoint.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// `W_out(SiLU(z + W_zy shift(y)) ⊙ y)` (`W_out y` with `glu_in_loop`, whose `y` is
    /// already gated).
    pub fn output(&self, inp: &MambaInputs, y: &Tensor) -> Result<Tensor> {
        if self.cfg.glu_in_loop {
            return self.out_proj.forward(y);
        }
        let gate = match &self.zy_proj {
            Some(p) => inp.z.add(&p.forward(&y.shift(1, 1)?)?)?,
            None => inp.z.clone(),
        };
        self.out_proj.forward(&gate.silu().mul(y)?)
    }

    /// The block on `u`; with `state`, the solver is skipped (the recorded step starts there).
    pub fn forward(
        &self,
        u: &Tensor,
        cfg: &SolverConfig,
        run: &SolveRun,
        state: Option<&Tensor>,
    ) -> Result<super::block::BlockOutput> {
        let inp = self.prepare(u)?;
        let (y_star, stats) = match state {
            Some(s) => (
                s.detach(),
                SolveStats { lmax: run.lmax, sample_iterations: vec![0; u.shape()[0]], ..Default::default() },
            ),
            None => self.fixed_point(&inp, cfg, run)?,
        };
        let y = self.recorded_state(&inp, &y_star)?;
        Ok(super::block::BlockOutput { out: self.output(&inp, &y)?, state: y_star, stats })
    }
}

impl Module for FpMambaBlock {
    fn params(&self) -> Vec<(String, &Tensor)> {
        let mut v: Vec<(String, &Tensor)> = prefixed("in_proj", self.in_proj.params()).collect();
        if let Some(c) = &self.conv {
            v.extend(prefixed("conv", c.params()));
        }
        v.extend(prefixed("x_proj", self.x_proj.params()));
        v.extend(prefixed("dt_proj", self.dt_proj.params()));
        v.push(("A_log".to_string(), &self.a_log));
        v.push(("D".to_string(), &self.d_skip));
        v.extend(prefixed("mixer", self.mixer.params()));
        if let Some(p) = &self.bc_proj {
            v.extend(prefixed("bc_proj", p.params()));
        }
        if let Some(p) = &self.norm {
            v.extend(prefixed("norm", p.params()));
        }
        if let Some(p) = &self.zy_proj {
            v.extend(prefixed("zy_proj", p.params()));
        }
        v.extend(prefixed("out_proj", self.out_proj.params()));
        v
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        let mut v: Vec<(String, &mut Tensor)> = prefixed("in_proj", self.in_proj.params_mut()).collect();
        if let Some(c) = &mut self.conv {
            v.extend(prefixed("conv", c.params_mut()));
        }
        v.extend(prefixed("x_proj", self.x_proj.params_mut()));
        v.extend(prefixed("dt_proj", self.dt_proj.params_mut()));
        v.push(("A_log".to_string(), &mut self.a_log));
        v.push(("D".to_string(), &mut self.d_skip));
        v.extend(prefixed("mixer", self.mixer.params_mut()));
        if let Some(p) = &mut self.bc_proj {
            v.extend(prefixed("bc_proj", p.params_mut()));
        }
        if let Some(p) = &mut self.norm {
            v.extend(prefixed("norm", p.params_mut()));
        }
        if let Some(p) = &mut self.zy_proj {
            v.extend(prefixed("zy_proj", p.params_mut()));
        }
        v.extend(prefixed("out_proj", self.out_proj.params_mut()));
        v
    }
}
