//! The vector-state FP-RNN block (spec §4.2, reference `FPRNN`):
//!
//! ```text
//! [x; z] = W_in u                                  (d → 2D, no bias)
//! short conv (optional): x_mix, x_b, x_λ, x = SiLU(conv_k4(x) + bias), four convolutions
//! b = SiLU(W_b x_b)            λ = σ(W_λ x_λ + β_λ)
//! F(h) = diag_scan(λ, (1 − λ) ⊙ x̃),   x̃ = Q(p)(b⊙x − h) + h,   p = [x_mix; shift(h)]
//! h* = solve(F)  (off the graph);   h = F(stopgrad(h*))  (one recorded step, §3.1;
//!                                    or K steps, or one step under the implicit adjoint:
//!                                    [`BackwardMode`])
//! c = SiLU(W_c [x; shift(h)])      (with short conv: SiLU(W_c SiLU(conv([x; h]))))
//! out = W_out RMSNorm(SiLU(z) ⊙ c ⊙ h)
//! ```
//!
//! With the identity mixer this is the diagonal baseline, whose `F` does not depend on
//! `h`: the recorded step alone is exact and the solver is skipped. With
//! [`SolveMethod::Sequential`] (`dense-seq`) `h*` comes from the token-by-token dense
//! solve instead of the parallel iteration; the recorded step and the gradient are the
//! same, so the two differ only in how the fixed point is found.

use super::core::FpCore;
use super::implicit::{AdjointSink, AdjointStats, check_implicit};
use super::mixer::{Mixer, MixerInput, MixerKind, zero_bias};
use super::solver::{SolveRun, SolveStats, SolverConfig};
use crate::autograd::no_grad;
use crate::error::{Error, Result};
use crate::init;
use crate::nn::{Linear, Module, RmsNorm, prefixed};
use crate::ops::scan::ScanOptions;
use crate::rng::Rng;
use crate::tensor::Tensor;
use std::sync::{Arc, Mutex};

/// How the fixed point `h*` is found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SolveMethod {
    /// The parallel iteration of §2.5 (one mixer application and one scan per iteration).
    #[default]
    Parallel,
    /// Token by token with explicit dense matrices (`dense-seq`; exact up to rounding).
    /// Its statistics report `T` iterations (sequential steps) and residual 0.
    Sequential,
}

/// How gradients reach the parameters through the fixed point (§3.1). Selectable per
/// layer ([`BlockConfig::backward`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum BackwardMode {
    /// The paper's: one differentiable step `F(x, stopgrad(h*))` (Jacobian-free).
    #[default]
    OneStep,
    /// The exact implicit-function-theorem gradient: the adjoint `w = ḡ + J_hᵀ w` is
    /// solved by iteration (relative tolerance `tol`, at most `max_iter` vector–Jacobian
    /// products; see [`super::implicit`]), then one vector–Jacobian product of the
    /// recorded step gives the parameter and input gradients.
    Implicit { tol: f32, max_iter: usize },
    /// `K` differentiable steps `F(F(⋯F(stopgrad(h*))))` from the detached fixed point
    /// (`Phantom(1)` is [`BackwardMode::OneStep`]); memory grows with `K`.
    Phantom(usize),
}

impl BackwardMode {
    /// The implicit gradient with tolerance 1e-6 and at most 200 adjoint iterations.
    pub fn implicit() -> BackwardMode {
        BackwardMode::Implicit { tol: 1e-6, max_iter: 200 }
    }
    /// `one-step`, `implicit` (defaults of [`BackwardMode::implicit`]) or `phantom-K`.
    pub fn parse(s: &str) -> Result<BackwardMode> {
        let bad = || Error::InvalidArgument {
            op: "BackwardMode::parse",
            message: format!("unknown backward mode {s:?} (one-step, implicit, phantom-K with K >= 1)"),
        };
        Ok(match s {
            "one-step" | "onestep" => BackwardMode::OneStep,
            "implicit" => BackwardMode::implicit(),
            _ => match s.strip_prefix("phantom-").and_then(|k| k.parse::<usize>().ok()) {
                Some(k) if k >= 1 => BackwardMode::Phantom(k),
                _ => return Err(bad()),
            },
        })
    }
    pub fn name(&self) -> String {
        match self {
            BackwardMode::OneStep => "one-step".to_string(),
            BackwardMode::Implicit { .. } => "implicit".to_string(),
            BackwardMode::Phantom(k) => format!("phantom-{k}"),
        }
    }
    /// Reject `Phantom(0)` and bad adjoint settings.
    pub fn validate(&self) -> Result<()> {
        match *self {
            BackwardMode::OneStep => Ok(()),
            BackwardMode::Implicit { tol, max_iter } => check_implicit(tol, max_iter),
            BackwardMode::Phantom(0) => Err(Error::InvalidArgument {
                op: "BackwardMode::Phantom",
                message: "phantom-K needs K >= 1 differentiable steps".to_string(),
            }),
            BackwardMode::Phantom(_) => Ok(()),
        }
    }
}

/// Hyper-parameters of one block.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockConfig {
    pub d_model: usize,
    /// `D` (the reference uses `2·d_model`).
    pub d_inner: usize,
    pub mixer: MixerKind,
    pub mixer_input: MixerInput,
    /// Guard of the normalisation of the Householder vectors.
    pub mixer_eps: f32,
    /// The four (five with `c`) depthwise causal convolutions of kernel `conv_kernel`.
    pub short_conv: bool,
    pub conv_kernel: usize,
    /// eps of the output RMSNorm.
    pub norm_eps: f32,
    pub solve: SolveMethod,
    pub backward: BackwardMode,
}

impl BlockConfig {
    /// Householder rank 1 (alpha scale 2), `D = 2d`, `p = [x; shift(h)]`, no short conv.
    pub fn new(d_model: usize) -> BlockConfig {
        BlockConfig {
            d_model,
            d_inner: 2 * d_model,
            mixer: MixerKind::Householder { rank: 1, alpha_scale: 2.0 },
            mixer_input: MixerInput::Concat,
            mixer_eps: 1e-6,
            short_conv: false,
            conv_kernel: 4,
            norm_eps: 1e-5,
            solve: SolveMethod::Parallel,
            backward: BackwardMode::OneStep,
        }
    }
}

/// A depthwise causal convolution with bias, `U(±1/√K)` init (PyTorch's `Conv1d` with
/// `groups = C`).
#[derive(Clone, Debug)]
pub struct ShortConv {
    weight: Tensor,
    bias: Tensor,
}

impl ShortConv {
    pub fn new(channels: usize, kernel: usize, rng: &mut Rng) -> ShortConv {
        let bound = 1.0 / (kernel.max(1) as f32).sqrt();
        let weight = init::uniform([channels, kernel], -bound, bound, rng).requires_grad_();
        let bias = init::uniform([channels], -bound, bound, rng).requires_grad_();
        ShortConv { weight, bias }
    }
    /// `SiLU(conv(x) + bias)` for `x` of shape `[B, T, C]`.
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.causal_conv1d(&self.weight, Some(&self.bias))?.silu())
    }
}

impl Module for ShortConv {
    fn params(&self) -> Vec<(String, &Tensor)> {
        vec![("weight".to_string(), &self.weight), ("bias".to_string(), &self.bias)]
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        vec![("weight".to_string(), &mut self.weight), ("bias".to_string(), &mut self.bias)]
    }
}

#[derive(Clone, Debug)]
struct ShortConvs {
    mix: ShortConv,
    b: ShortConv,
    lambda: ShortConv,
    x: ShortConv,
    c: ShortConv,
}

/// What the block computes from its input before the fixed point (all on the graph).
#[derive(Clone, Debug)]
pub struct BlockInputs {
    /// `x` after the optional convolution, `[B, T, D]`.
    pub x: Tensor,
    /// The gate branch `z`, `[B, T, D]`.
    pub z: Tensor,
    /// The mixer's input part, `[B, T, D]`.
    pub x_mix: Tensor,
    pub lambda: Tensor,
    /// `1 − λ`.
    pub one_minus_lambda: Tensor,
    /// `b ⊙ x`.
    pub bx: Tensor,
    /// The Householder mixer's input part of its pre-activations
    /// ([`super::mixer::HouseholderMixer::base`]); None for other mixers.
    pub mix_base: Option<(Tensor, Tensor)>,
}

impl BlockInputs {
    /// The same inputs cut from the graph.
    pub fn detached(&self) -> BlockInputs {
        BlockInputs {
            x: self.x.detach(),
            z: self.z.detach(),
            x_mix: self.x_mix.detach(),
            lambda: self.lambda.detach(),
            one_minus_lambda: self.one_minus_lambda.detach(),
            bx: self.bx.detach(),
            mix_base: self.mix_base.as_ref().map(|(u, a)| (u.detach(), a.detach())),
        }
    }
}

/// The result of [`FpRnnBlock::forward`].
#[derive(Clone, Debug)]
pub struct BlockOutput {
    /// `[B, T, d_model]`.
    pub out: Tensor,
    /// The state the recorded step started from (`h*`, detached), `[B, T, D]`.
    pub state: Tensor,
    pub stats: SolveStats,
}

/// The vector-state FP-RNN block (see the module docs).
#[derive(Clone, Debug)]
pub struct FpRnnBlock {
    cfg: BlockConfig,
    in_proj: Linear,
    convs: Option<ShortConvs>,
    b_proj: Linear,
    lambda_proj: Linear,
    mixer: Mixer,
    c_proj: Linear,
    out_norm: RmsNorm,
    out_proj: Linear,
    /// The latest adjoint solve of the implicit backward (shared by clones).
    adjoint: AdjointSink,
}

impl FpRnnBlock {
    /// A block with the backbone's init: PyTorch default weights, zero biases
    /// (convolutions keep their default bias), RMSNorm weight 1.
    pub fn new(cfg: &BlockConfig, rng: &mut Rng) -> Result<FpRnnBlock> {
        let (d, di) = (cfg.d_model, cfg.d_inner);
        if d == 0 || di == 0 || (cfg.short_conv && cfg.conv_kernel == 0) {
            return Err(Error::InvalidArgument {
                op: "FpRnnBlock::new",
                message: format!(
                    "d_model {d}, d_inner {di} (and conv_kernel {} with short_conv) must be positive",
                    cfg.conv_kernel
                ),
            });
        }
        cfg.backward.validate()?;
        if let MixerKind::Dplr { .. } = cfg.mixer {
            return Err(Error::InvalidArgument {
                op: "FpRnnBlock::new",
                message: "the DPLR mixer is not contractive and is refused for FP-RNN (spec §8.12); \
                          use it with FP-Mamba, or use the Householder or Kronecker mixer"
                    .to_string(),
            });
        }
        let in_proj = Linear::new(d, 2 * di, false, rng);
        let convs = cfg.short_conv.then(|| {
            let k = cfg.conv_kernel;
            ShortConvs {
                mix: ShortConv::new(di, k, rng),
                b: ShortConv::new(di, k, rng),
                lambda: ShortConv::new(di, k, rng),
                x: ShortConv::new(di, k, rng),
                c: ShortConv::new(2 * di, k, rng),
            }
        });
        let b_proj = Linear::new(di, di, false, rng);
        let mut lambda_proj = Linear::new(di, di, true, rng);
        zero_bias(&mut lambda_proj);
        let mixer = Mixer::new(cfg.mixer, cfg.mixer_input.width(di), di, cfg.mixer_eps, rng)?;
        let c_proj = Linear::new(2 * di, di, false, rng);
        let out_norm = RmsNorm::new(di, cfg.norm_eps, true);
        let out_proj = Linear::new(di, d, false, rng);
        Ok(FpRnnBlock {
            cfg: *cfg,
            in_proj,
            convs,
            b_proj,
            lambda_proj,
            mixer,
            c_proj,
            out_norm,
            out_proj,
            adjoint: Arc::new(Mutex::new(None)),
        })
    }

    pub fn config(&self) -> &BlockConfig {
        &self.cfg
    }
    pub fn mixer(&self) -> &Mixer {
        &self.mixer
    }

    /// Everything before the fixed point, for `u` of shape `[B, T, d_model]`.
    pub fn prepare(&self, u: &Tensor) -> Result<BlockInputs> {
        let di = self.cfg.d_inner;
        if u.rank() != 3 || u.shape()[2] != self.cfg.d_model {
            return Err(Error::ShapeMismatch {
                op: "FpRnnBlock (input vs [B, T, d_model])",
                lhs: u.shape_obj().clone(),
                rhs: [
                    u.shape().first().copied().unwrap_or(1),
                    u.shape().get(1).copied().unwrap_or(1),
                    self.cfg.d_model,
                ]
                .into(),
            });
        }
        let xz = self.in_proj.forward(u)?;
        let x0 = xz.narrow(-1, 0, di)?.contiguous();
        let z = xz.narrow(-1, di, di)?.contiguous();
        let (x_mix, x_b, x_l, x) = match &self.convs {
            Some(cv) => (
                cv.mix.forward_silu(&x0)?,
                cv.b.forward_silu(&x0)?,
                cv.lambda.forward_silu(&x0)?,
                cv.x.forward_silu(&x0)?,
            ),
            None => (x0.clone(), x0.clone(), x0.clone(), x0),
        };
        let b = self.b_proj.forward(&x_b)?.silu();
        let lambda = self.lambda_proj.forward(&x_l)?.sigmoid();
        let one_minus_lambda = lambda.rsub_scalar(1.0);
        let bx = b.mul(&x)?;
        let mix_base = match &self.mixer {
            Mixer::Householder(m) => Some(m.base(&x_mix, self.cfg.mixer_input)?),
            _ => None,
        };
        Ok(BlockInputs { x, z, x_mix, lambda, one_minus_lambda, bx, mix_base })
    }

    /// One step `F(h)` on the graph (differentiable in the inputs, the parameters and `h`).
    pub fn step(&self, inp: &BlockInputs, h: &Tensor) -> Result<Tensor> {
        if h.shape() != inp.bx.shape() {
            return Err(Error::ShapeMismatch {
                op: "FpRnnBlock::step (h vs [B, T, D])",
                lhs: h.shape_obj().clone(),
                rhs: inp.bx.shape_obj().clone(),
            });
        }
        let x_tilde = if self.mixer.is_identity() {
            inp.bx.clone()
        } else if let (Mixer::Householder(m), Some(base)) = (&self.mixer, &inp.mix_base) {
            let v = inp.bx.sub(h)?;
            let q = match h.device() {
                crate::Device::Cpu => m.apply_with_base(base, h, self.cfg.mixer_input, &v)?,
                _ => super::gpu_solve::householder_with_base(m, base, h, self.cfg.mixer_input, &v)?,
            };
            q.add(h)?
        } else {
            let p = self.cfg.mixer_input.build(&inp.x_mix, h)?;
            self.mixer.apply(&p, &inp.bx.sub(h)?)?.add(h)?
        };
        inp.lambda.scan(&inp.one_minus_lambda.mul(&x_tilde)?, None, ScanOptions::forward())
    }

    /// `F` as plain data for the solver.
    pub fn core(&self, inp: &BlockInputs) -> Result<FpCore> {
        let &[b, t, d] = inp.bx.shape() else { unreachable!("prepare makes [B, T, D]") };
        let kernel = match (&self.mixer, &inp.mix_base) {
            (Mixer::Householder(m), Some(base)) => {
                super::mixer::MixerKernel::Householder(m.kernel_from_base(base, self.cfg.mixer_input)?)
            }
            (mixer, _) => mixer.kernel(&inp.x_mix, self.cfg.mixer_input)?,
        };
        FpCore::new(b, t, d, inp.lambda.to_vec(), inp.bx.to_vec(), kernel)
    }

    /// `h*` (detached) and the solver statistics.
    pub fn fixed_point(&self, inp: &BlockInputs, cfg: &SolverConfig, run: &SolveRun) -> Result<(Tensor, SolveStats)> {
        let shape = inp.bx.shape_obj().clone();
        let batch = shape.dims()[0];
        let time = shape.dims()[1];
        if inp.bx.device() != crate::Device::Cpu {
            return super::gpu_solve::fixed_point(self, inp, cfg, run);
        }
        if self.mixer.is_identity() {
            // F does not depend on h: the recorded step from any state is the fixed point.
            return Ok((Tensor::zeros(shape), SolveStats::exact(batch, cfg, run)));
        }
        no_grad(|| {
            let core = self.core(inp)?;
            let (h, stats) = match self.cfg.solve {
                SolveMethod::Parallel => core.solve(cfg, run, None)?,
                SolveMethod::Sequential => {
                    let h = core.solve_sequential()?;
                    let stats = SolveStats {
                        iterations: time,
                        lmax: run.lmax,
                        sample_iterations: vec![time; batch],
                        residual: vec![0.0; batch],
                        last_residual: vec![0.0; batch],
                        stepsize: vec![cfg.stepsize; batch],
                        converged: true,
                    };
                    (h, stats)
                }
            };
            Ok((Tensor::from_vec(h, shape)?, stats))
        })
    }

    /// The state the output sees, `F(stopgrad(h*))` on the graph, with the gradient path
    /// of [`BlockConfig::backward`]: one step, `K` steps, or one step under the implicit
    /// adjoint op.
    pub fn recorded_state(&self, inp: &BlockInputs, h_star: &Tensor) -> Result<Tensor> {
        let freeze = || (self.frozen(), inp.detached());
        super::implicit::recorded_state(self.cfg.backward, self, inp, h_star, Self::step, freeze, self.adjoint.clone())
    }

    /// A copy whose parameters are detached (for vector–Jacobian products in `h` that
    /// must not touch the parameters' gradients).
    fn frozen(&self) -> FpRnnBlock {
        let mut f = self.clone();
        f.adjoint = Arc::new(Mutex::new(None));
        for (_, p) in f.params_mut() {
            *p = p.detach();
        }
        f
    }

    /// The statistics of the latest implicit adjoint solve (None before the first
    /// backward with [`BackwardMode::Implicit`]).
    pub fn last_adjoint_stats(&self) -> Option<AdjointStats> {
        self.adjoint.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Everything after the fixed point: `W_out RMSNorm(SiLU(z) ⊙ c ⊙ h)`.
    pub fn output(&self, inp: &BlockInputs, h: &Tensor) -> Result<Tensor> {
        let xc = match &self.convs {
            Some(cv) => cv.c.forward_silu(&Tensor::concat(&[&inp.x, h], -1)?)?,
            None => Tensor::concat(&[&inp.x, &h.shift(1, 1)?], -1)?,
        };
        let c = self.c_proj.forward(&xc)?.silu();
        let y = inp.z.silu().mul(&c)?.mul(h)?;
        self.out_proj.forward(&self.out_norm.forward(&y)?)
    }

    /// The block on `u` (`[B, T, d_model]`). With `state`, the solver is skipped and the
    /// recorded step starts from it (to evaluate `F(x, stopgrad(h*))` at a fixed `h*`).
    pub fn forward(
        &self,
        u: &Tensor,
        cfg: &SolverConfig,
        run: &SolveRun,
        state: Option<&Tensor>,
    ) -> Result<BlockOutput> {
        let inp = self.prepare(u)?;
        let (h_star, stats) = match state {
            Some(s) => {
                let batch = u.shape()[0];
                (s.detach(), SolveStats { lmax: run.lmax, sample_iterations: vec![0; batch], ..Default::default() })
            }
            None => self.fixed_point(&inp, cfg, run)?,
        };
        let h = self.recorded_state(&inp, &h_star)?;
        let out = self.output(&inp, &h)?;
        Ok(BlockOutput { out, state: h_star, stats })
    }
}

impl Module for FpRnnBlock {
    fn params(&self) -> Vec<(String, &Tensor)> {
        let mut v: Vec<(String, &Tensor)> = prefixed("in_proj", self.in_proj.params()).collect();
        if let Some(cv) = &self.convs {
            v.extend(prefixed("conv_mix", cv.mix.params()));
            v.extend(prefixed("conv_b", cv.b.params()));
            v.extend(prefixed("conv_lambda", cv.lambda.params()));
            v.extend(prefixed("conv_x", cv.x.params()));
            v.extend(prefixed("conv_c", cv.c.params()));
        }
        v.extend(prefixed("b_proj", self.b_proj.params()));
        v.extend(prefixed("lambda_proj", self.lambda_proj.params()));
        v.extend(prefixed("mixer", self.mixer.params()));
        v.extend(prefixed("c_proj", self.c_proj.params()));
        v.extend(prefixed("out_norm", self.out_norm.params()));
        v.extend(prefixed("out_proj", self.out_proj.params()));
        v
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        let mut v: Vec<(String, &mut Tensor)> = prefixed("in_proj", self.in_proj.params_mut()).collect();
        if let Some(cv) = &mut self.convs {
            v.extend(prefixed("conv_mix", cv.mix.params_mut()));
            v.extend(prefixed("conv_b", cv.b.params_mut()));
            v.extend(prefixed("conv_lambda", cv.lambda.params_mut()));
            v.extend(prefixed("conv_x", cv.x.params_mut()));
            v.extend(prefixed("conv_c", cv.c.params_mut()));
        }
        v.extend(prefixed("b_proj", self.b_proj.params_mut()));
        v.extend(prefixed("lambda_proj", self.lambda_proj.params_mut()));
        v.extend(prefixed("mixer", self.mixer.params_mut()));
        v.extend(prefixed("c_proj", self.c_proj.params_mut()));
        v.extend(prefixed("out_norm", self.out_norm.params_mut()));
        v.extend(prefixed("out_proj", self.out_proj.params_mut()));
        v
    }
}
