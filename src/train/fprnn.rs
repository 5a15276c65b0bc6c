//! The Fixed-Point RNN experiments (spec `fixed-point-rnn.md` §5–§7): train an
//! [`FpModel`] on a [`Task`] generated online, then evaluate accuracy against length.
//!
//! [`FprnnTrainer`] is a state machine like [`MlpTrainer`](super::MlpTrainer): one
//! [`FprnnTrainer::step`] at a time, so that a driver can log, checkpoint and stop in
//! between. Nothing here prints.

use crate::autograd::no_grad;
use crate::error::{Error, Result};
use crate::fpr::{BackwardMode, FpModel, KronNorm, Lmax, MixerKind, ModelConfig, ModelKind};
use crate::nn::{Module, num_params};
use crate::ops::fused::CrossEntropyOpts;
use crate::optim::{AdamW, AdamWConfig, LrSchedule, Optimizer, ParamGroup, clip_grad_norm};
use crate::rng::Rng;
use crate::run::Checkpoint;
use crate::run::plot::{self, LinePlot, Series};
use crate::storage::Device;
use crate::tasks::{Batch, Task};
use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// How `ℓ_max` is chosen per training batch (spec §8.3; the flag `lmax_dist`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LmaxDist {
    /// The configured `lmax` on every batch (the default).
    #[default]
    Fixed,
    /// `⌈Γ(4, 1)⌉` per batch (the paper).
    Paper,
    /// `⌈Γ(shape 4, scale T_train/16 + 1)⌉` per batch (the reference code).
    Code,
}

impl LmaxDist {
    /// `fixed`, `paper` or `code`.
    pub fn parse(s: &str) -> Result<LmaxDist> {
        match s {
            "fixed" => Ok(LmaxDist::Fixed),
            "paper" => Ok(LmaxDist::Paper),
            "code" => Ok(LmaxDist::Code),
            _ => Err(Error::InvalidArgument {
                op: "fprnn config",
                message: format!("unknown --lmax-dist {s:?} (fixed, paper or code)"),
            }),
        }
    }
    pub fn name(&self) -> &'static str {
        match self {
            LmaxDist::Fixed => "fixed",
            LmaxDist::Paper => "paper",
            LmaxDist::Code => "code",
        }
    }
}

/// Everything that determines a run. Equal configs give bit-identical losses.
#[derive(Clone, Debug, PartialEq)]
pub struct FprnnConfig {
    pub task: Task,
    /// `fp-rnn`, `diagonal`, `dense-seq`, `lstm`, `fp-mamba` or `mamba`.
    pub model: ModelKind,
    /// Householder rank `r` (fp-rnn, dense-seq, fp-mamba).
    pub rank: usize,
    /// The mixer when not Householder of rank `rank` (Kronecker; DPLR with fp-mamba).
    pub mixer: Option<MixerKind>,
    /// `hh_alpha_scale` (§8.1): 2 (reference code) or 1 (paper).
    pub alpha_scale: f32,
    /// How `ℓ_max` is drawn in training (§8.3): `fixed` (`lmax` every batch), `paper`
    /// (`⌈Γ(4, 1)⌉` per batch) or `code` (`⌈Γ(4, T_train/16 + 1)⌉` per batch).
    pub lmax_dist: LmaxDist,
    /// Backward mode of every FP layer, or one per layer (§3.1).
    pub backward: Vec<BackwardMode>,
    /// The short depthwise convolutions (§4.2, §4.3).
    pub short_conv: bool,
    /// FP-Mamba: B and C depend on the shifted output (Table 1).
    pub bc_y_dependence: bool,
    /// FP-Mamba / Mamba: the SiLU(z) gate inside the loop.
    pub glu_in_loop: bool,
    /// `N` of the FP-Mamba / Mamba blocks.
    pub d_state: usize,
    pub n_layers: usize,
    pub d_model: usize,
    /// `D` of the FP blocks.
    pub d_inner: usize,
    /// `ℓ_max` in training.
    pub lmax: usize,
    /// Evaluation `ℓ_max = eval_lmax_factor · T` (T: the evaluated row length).
    pub eval_lmax_factor: usize,
    pub steps: usize,
    pub batch: usize,
    pub lr: f32,
    pub final_lr: f32,
    pub warmup: usize,
    /// AdamW weight decay (not on biases and norm weights).
    pub weight_decay: f32,
    pub clip: Option<f32>,
    /// Seeds initialisation (`"init"`), training data (`"data"`) and held-out data (`"eval"`).
    pub seed: u64,
    pub eval_lengths: Vec<usize>,
    /// Held-out sequences per evaluation length.
    pub eval_count: usize,
    /// Rows per evaluation forward pass.
    pub eval_batch: usize,
    /// Every this many steps, the sequence accuracy on `val_count` held-out sequences at the
    /// training length (0: never).
    pub val_every: usize,
    pub val_count: usize,
    /// Where the model trains and evaluates (`--device`). On the GPU: `fp-rnn` with the
    /// Householder mixer, or `diagonal`, one-step backward, no short convolutions;
    /// the data, the solver's stopping rule and the accuracy stay on the host (one
    /// explicit readback of the logits per step and per evaluation batch).
    pub device: Device,
}

impl FprnnConfig {
    /// Defaults for a task: 1 layer, d 64, D 128, Householder rank 4, batch 128, AdamW
    /// lr 1e-3 (100 warm-up steps, cosine to 0), wd 0.01, clip 1, `ℓ_max` = training length.
    pub fn new(task: Task, model: ModelKind) -> FprnnConfig {
        let lmax = task.train_row_len().clamp(1, 100);
        let eval_lengths = task.default_eval_lengths();
        FprnnConfig {
            task,
            model,
            rank: 4,
            mixer: None,
            alpha_scale: 2.0,
            lmax_dist: LmaxDist::Fixed,
            backward: vec![BackwardMode::OneStep],
            short_conv: false,
            bc_y_dependence: true,
            glu_in_loop: false,
            d_state: 16,
            n_layers: 1,
            d_model: 64,
            d_inner: 128,
            lmax,
            eval_lmax_factor: 4,
            steps: 2000,
            batch: 128,
            lr: 1e-3,
            final_lr: 0.0,
            warmup: 100,
            weight_decay: 0.01,
            clip: Some(1.0),
            seed: 0,
            eval_lengths,
            eval_count: 1000,
            eval_batch: 250,
            val_every: 100,
            val_count: 256,
            device: Device::Cpu,
        }
    }

    /// The `--quick` preset (issue 8): A4, training length 16, 1 layer, d 64, D 128,
    /// Householder rank 4, batch 128, AdamW lr 1e-3 with 100 warm-up steps then cosine,
    /// `ℓ_max` 16; [`QUICK_STEPS`] steps, validated every 250.
    ///
    /// The Householder steps use the paper's `I − αuuᵀ` (`hh_alpha_scale` 1, §8.1), not
    /// the reference code's `I − 2αuuᵀ`: with scale 2 the training solve ran into its
    /// `ℓ_max` cap from step ≈ 400 on (‖I − Q‖ < 1 is no longer guaranteed, §2.3), the
    /// model learned the truncated iterate and sat at 0.00 sequence accuracy after 1,500
    /// steps; with scale 1 the solve converges (≈ 15 iterations) and the same budget
    /// reaches 0.95 (REPRODUCTION.md).
    pub fn quick(model: ModelKind) -> FprnnConfig {
        let task = Task::parse("a4").expect("a4 is a task");
        FprnnConfig { steps: QUICK_STEPS, lmax: 16, alpha_scale: 1.0, val_every: 250, ..FprnnConfig::new(task, model) }
    }

    /// The model this configuration trains.
    pub fn model_config(&self) -> ModelConfig {
        let mut m = ModelConfig::new(self.model, self.task.vocab(), self.n_layers, self.d_model);
        m.d_inner = self.d_inner;
        m.rank = self.rank;
        m.mixer = self.mixer;
        m.alpha_scale = self.alpha_scale;
        m.short_conv = self.short_conv;
        m.bc_y_dependence = self.bc_y_dependence;
        m.glu_in_loop = self.glu_in_loop;
        m.d_state = self.d_state;
        match self.backward.as_slice() {
            [one] => m.backward = *one,
            per_layer => m.layer_backward = per_layer.to_vec(),
        }
        m.seed = self.seed;
        m.solver_seed = self.seed;
        m.solver.lmax = match self.lmax_dist {
            LmaxDist::Fixed => Lmax::Fixed(self.lmax),
            LmaxDist::Paper => Lmax::Paper,
            LmaxDist::Code => Lmax::Code { t_train: self.task.train_row_len() },
        };
        // The arithmetic configs untie the head (§4.1).
        m.tie_embeddings = !matches!(self.task, Task::Arith(_));
        m
    }

    /// Reject settings that cannot train.
    pub fn validate(&self) -> Result<()> {
        let bad = |message: String| Err(Error::InvalidArgument { op: "fprnn config", message });
        if self.steps == 0 {
            return bad("steps must be at least 1".into());
        }
        if self.batch == 0 || self.eval_batch == 0 {
            return bad("batch sizes must be at least 1".into());
        }
        super::check_sizes(
            "fprnn config",
            &[
                ("batch", self.batch),
                ("eval batch", self.eval_batch),
                ("eval count", self.eval_count),
                ("val count", self.val_count),
                ("layers", self.n_layers),
                ("d_model", self.d_model),
                ("d_inner", self.d_inner),
                ("lmax", self.lmax),
                ("eval lmax factor", self.eval_lmax_factor),
                ("train length", self.task.train_len()),
                ("train row length", self.task.train_row_len()),
            ],
        )?;
        if self.n_layers > 1024 {
            return bad(format!("{} layers exceed the limit of 1024", self.n_layers));
        }
        // One [batch, length, width] activation must stay allocatable (found by hand:
        // `--train-len 18446744073709551615` ran the machine out of memory).
        let width = self.d_model.max(self.d_inner);
        let longest_eval = self.eval_lengths.iter().copied().max().unwrap_or(0);
        super::check_sizes("fprnn config", &[("evaluation length", longest_eval)])?;
        for (what, b, t) in [
            ("batch", self.batch, self.task.train_row_len()),
            ("eval batch", self.eval_batch, longest_eval),
            ("val count", self.val_count, self.task.train_len()),
        ] {
            let t = t.max(1);
            let n = b.checked_mul(t).and_then(|n| n.checked_mul(width));
            if n.is_none_or(|n| n > super::MAX_ACTIVATION) {
                return bad(format!(
                    "{what} {b} x length {t} x width {width} exceeds the limit of {} values in one activation; lower one of them",
                    super::MAX_ACTIVATION
                ));
            }
        }
        if self.n_layers == 0 || self.d_model == 0 || self.d_inner == 0 {
            return bad(format!(
                "layers {}, d_model {} and d_inner {} must be positive",
                self.n_layers, self.d_model, self.d_inner
            ));
        }
        if matches!(self.model, ModelKind::FpRnn | ModelKind::DenseSeq | ModelKind::FpMamba) && self.rank == 0 {
            return bad("the Householder rank must be at least 1".into());
        }
        if self.rank > self.d_inner {
            return bad(format!("Householder rank {} exceeds d_inner {}", self.rank, self.d_inner));
        }
        if self.lmax == 0 || self.eval_lmax_factor == 0 {
            return bad("lmax and the evaluation lmax factor must be at least 1".into());
        }
        self.check_device()?;
        super::validate_schedule("fprnn config", self.steps, self.warmup, self.lr, self.final_lr, self.clip)?;
        if self.eval_count == 0 {
            return bad("the evaluation count must be at least 1".into());
        }
        for &l in &self.eval_lengths {
            self.task.check_eval_length(l)?;
        }
        self.model_config().validate()
    }

    /// Refuse, in one line naming it, what has no GPU path when [`FprnnConfig::device`]
    /// is the GPU.
    fn check_device(&self) -> Result<()> {
        if self.device == Device::Cpu {
            return Ok(());
        }
        let bad = |what: String| {
            Err(Error::InvalidArgument {
                op: "fprnn config",
                message: format!(
                    "{what} has no GPU path (on the GPU: --model fp-rnn with the Householder mixer, or --model \
                     diagonal, one-step backward, no short convolutions); use --device cpu"
                ),
            })
        };
        let householder = matches!(self.mixer, None | Some(MixerKind::Householder { .. }));
        match self.model {
            ModelKind::FpRnn if householder => {}
            ModelKind::Diagonal => {}
            ModelKind::FpRnn => return bad(format!("the {} mixer", self.mixer_name())),
            m => return bad(format!("the {} model", m.name())),
        }
        if self.short_conv {
            return bad("--short-conv (the causal convolution)".to_string());
        }
        if let Some(b) = self.backward.iter().find(|b| **b != BackwardMode::OneStep) {
            return bad(format!("the {} backward", b.name()));
        }
        Ok(())
    }

    /// The configuration as JSON (for `config.json` and summaries).
    pub fn to_json(&self) -> Value {
        json!({
            "task": self.task.name(),
            "model": self.model.name(),
            "mixer": self.mixer_name(),
            "backward": self.backward_name(),
            "hh_alpha_scale": self.alpha_scale,
            "short_conv": self.short_conv,
            "bc_y_dependence": self.bc_y_dependence,
            "glu_in_loop": self.glu_in_loop,
            "d_state": self.d_state,
            "train_length": self.task.train_len(),
            "row_length": self.task.train_row_len(),
            "vocab": self.task.vocab(),
            "layers": self.n_layers,
            "d_model": self.d_model,
            "d_inner": self.d_inner,
            "lmax": self.lmax,
            "lmax_dist": self.lmax_dist.name(),
            "eval_lmax": format!("{}*T", self.eval_lmax_factor),
            "steps": self.steps,
            "batch": self.batch,
            "lr": num(self.lr),
            "final_lr": num(self.final_lr),
            "warmup": self.warmup,
            "weight_decay": num(self.weight_decay),
            "clip": self.clip.map(num),
            "seed": self.seed,
            "eval_lengths": self.eval_lengths,
            "eval_count": self.eval_count,
            "val_every": self.val_every,
            "val_count": self.val_count,
        })
    }

    /// `householder:R`, `kronecker` (`kronecker:rows` with row normalisation), `dplr:R`,
    /// `identity` or `none` (LSTM).
    pub fn mixer_name(&self) -> String {
        match (self.model, self.mixer) {
            (ModelKind::Diagonal | ModelKind::Mamba, _) => "identity".into(),
            (ModelKind::Lstm, _) => "none".into(),
            (_, Some(MixerKind::Kronecker { norm: KronNorm::Rows, .. })) => "kronecker:rows".into(),
            (_, Some(MixerKind::Kronecker { .. })) => "kronecker".into(),
            (_, Some(MixerKind::Dplr { rank })) => format!("dplr:{rank}"),
            _ => format!("householder:{}", self.rank),
        }
    }

    /// The backward mode(s): `one-step`, `implicit`, `phantom-K`, or one per layer joined
    /// by commas.
    pub fn backward_name(&self) -> String {
        self.backward.iter().map(BackwardMode::name).collect::<Vec<_>>().join(",")
    }
}

/// Steps of the quick preset.
pub const QUICK_STEPS: usize = 3000;

use crate::run::json_f32 as num;

/// What one training step reports.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepInfo {
    pub loss: f32,
    /// Fraction of supervised positions predicted right (argmax), on the training batch.
    pub token_acc: f64,
    /// Median per-sample iterations of the solver (max over layers); 0 for the LSTM.
    pub iterations: f64,
    /// Adjoint iterations of the implicit backward (max over layers); None without it.
    pub adjoint_iterations: Option<f64>,
}

/// Accuracy at one evaluation length.
#[derive(Clone, Debug, PartialEq)]
pub struct LengthEval {
    pub len: usize,
    pub count: usize,
    /// Sequences whose every supervised position is argmax-correct.
    pub seq_acc: f64,
    pub token_acc: f64,
    /// Median of the per-sample iteration counts (max over layers); None for the LSTM.
    pub median_iterations: Option<f64>,
    /// Share of sequences whose best residual stayed at or above the threshold in some
    /// layer within the evaluation `ℓ_max`; None for the LSTM.
    pub nonconverged_share: Option<f64>,
    pub lmax: usize,
}

/// Median of a list (mean of the middle two for even counts).
fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { 0.5 * (v[n / 2 - 1] + v[n / 2]) }
}

/// Per-row correctness of `logits` against `batch`: (all supervised right, right, supervised).
/// GPU logits are read back here, explicitly (`[B·T, V]`, small beside the step).
fn score(logits: &crate::Tensor, batch: &Batch) -> Result<Vec<(bool, usize, usize)>> {
    let pred = logits.to_device(Device::Cpu)?.argmax_indices(-1)?;
    let [b, t] = batch.shape;
    Ok((0..b)
        .map(|r| {
            let (mut right, mut sup) = (0, 0);
            for i in r * t..(r + 1) * t {
                if batch.targets[i] != batch.ignore {
                    sup += 1;
                    right += usize::from(pred[i] == batch.targets[i]);
                }
            }
            (right == sup, right, sup)
        })
        .collect())
}

/// The FP-RNN job, one step at a time.
pub struct FprnnTrainer {
    cfg: FprnnConfig,
    model: FpModel,
    opt: AdamW,
    schedule: LrSchedule,
    data: Rng,
    step: usize,
    tokens: u64,
    train_seconds: f64,
    /// First validation step whose sequence accuracy reached 0.9.
    crossed: Option<usize>,
    /// Implicit backward: adjoint iterations summed over steps, steps, steps converged.
    adjoint: (f64, usize, usize),
    /// With `FIXPOINT_PROFILE=1`: seconds of training steps in the solver, the scans,
    /// the mixer and the rest ([`STEP_SPLIT`]).
    split: [f64; 4],
}

/// The groups of [`FprnnTrainer::step_split`].
pub const STEP_SPLIT: [&str; 4] = ["solver", "scan", "mixer", "rest"];

/// Which [`STEP_SPLIT`] group an op of a training step belongs to (forward and backward):
/// the off-tape fixed-point solves (and the implicit adjoint solve) are the solver; the
/// scans on the tape are the scan; the mixer ops (Householder, DPLR, Kronecker, their
/// pre-activations) are the mixer; everything else (projections, norms, head, loss,
/// optimiser, data) is the rest.
fn split_group(op: &str) -> Option<usize> {
    match op {
        "fp_solve" | "fp_dense_seq" | "implicit_adjoint" => Some(0),
        "scan" | "selective_scan" | "lstm_recurrence" => Some(1),
        _ if ["householder", "mixer", "kron", "dplr"].iter().any(|p| op.starts_with(p)) => Some(2),
        _ => None,
    }
}

impl FprnnTrainer {
    pub fn new(cfg: &FprnnConfig) -> Result<FprnnTrainer> {
        cfg.validate()?;
        let mut model = FpModel::new(cfg.model_config())?;
        crate::nn::to_device(&mut model, cfg.device)?;
        let no_decay = ParamGroup::predicate(
            |n: &str| n.ends_with("bias") || n.ends_with("norm.weight") || n.starts_with("norm_f."),
            0.0,
            1.0,
        );
        let opt = AdamW::with_groups(
            AdamWConfig { weight_decay: cfg.weight_decay, ..AdamWConfig::default() },
            vec![no_decay],
        )?;
        let last = cfg.steps - 1;
        let schedule = LrSchedule::warmup_cosine(cfg.lr, cfg.warmup.min(last), last, cfg.final_lr)?;
        Ok(FprnnTrainer {
            cfg: cfg.clone(),
            model,
            opt,
            schedule,
            data: Rng::new(cfg.seed).stream("data"),
            step: 0,
            tokens: 0,
            train_seconds: 0.0,
            crossed: None,
            adjoint: (0.0, 0, 0),
            split: [0.0; 4],
        })
    }

    pub fn config(&self) -> &FprnnConfig {
        &self.cfg
    }
    pub fn model(&self) -> &FpModel {
        &self.model
    }
    pub fn step_index(&self) -> usize {
        self.step
    }
    pub fn done(&self) -> bool {
        self.step >= self.cfg.steps
    }
    pub fn lr(&self) -> f32 {
        self.schedule.lr_at(self.step)
    }
    pub fn num_params(&self) -> usize {
        num_params(&self.model)
    }
    /// Seconds spent in training steps (in this process).
    pub fn train_seconds(&self) -> f64 {
        self.train_seconds
    }
    /// Training tokens processed per second of training steps (in this process).
    pub fn tokens_per_s(&self) -> f64 {
        self.tokens as f64 / self.train_seconds.max(1e-9)
    }
    pub fn steps_per_s(&self, steps_here: usize) -> f64 {
        steps_here as f64 / self.train_seconds.max(1e-9)
    }
    /// With `FIXPOINT_PROFILE=1`: seconds of the training steps (in this process) in each
    /// [`STEP_SPLIT`] group; None when profiling is off.
    pub fn step_split(&self) -> Option<[f64; 4]> {
        crate::profile::enabled().then_some(self.split)
    }
    /// The first validation step at which the held-out sequence accuracy at the
    /// training length reached 0.9.
    pub fn crossed_0_9(&self) -> Option<usize> {
        self.crossed
    }
    /// Implicit backward: mean adjoint iterations per step (max over layers) and the
    /// share of steps whose adjoint solves all converged, in this process; None without it.
    pub fn adjoint_summary(&self) -> Option<(f64, f64)> {
        let (sum, n, ok) = self.adjoint;
        (n > 0).then(|| (sum / n as f64, ok as f64 / n as f64))
    }

    /// Whether validation is due after the step just taken.
    pub fn val_due(&self) -> bool {
        self.cfg.val_every > 0 && self.step > 0 && (self.step.is_multiple_of(self.cfg.val_every) || self.done())
    }

    /// One optimisation step on a fresh batch.
    pub fn step(&mut self) -> Result<StepInfo> {
        let t0 = Instant::now();
        let profiled = crate::profile::enabled().then(|| crate::profile::group_totals(3, split_group));
        let batch = self.cfg.task.train_batch(self.cfg.batch, &mut self.data);
        let logits = self.model.forward(&batch.tokens, batch.shape)?;
        let v = self.cfg.task.vocab();
        let flat = logits.reshape(&[batch.shape[0] * batch.shape[1], v])?;
        let opts = CrossEntropyOpts { ignore_index: Some(batch.ignore), ..CrossEntropyOpts::default() };
        let loss = flat.cross_entropy(&batch.targets, opts)?;
        let l = loss.item()?;
        let rows = no_grad(|| score(&logits.detach(), &batch))?;
        let (right, sup) = rows.iter().fold((0, 0), |(a, b), r| (a + r.1, b + r.2));
        let mut iters: Vec<f64> = self.sample_iterations().into_iter().map(|i| i as f64).collect();
        self.model.zero_grad();
        loss.backward()?;
        drop((loss, flat, logits));
        super::guard::check_step(self.step as u64 + 1, l, &self.model)?;
        if let Some(c) = self.cfg.clip {
            clip_grad_norm(&self.model, c)?;
        }
        self.opt.step(&mut self.model, self.schedule.lr_at(self.step))?;
        let adj: Vec<_> = self.model.last_adjoint_stats().into_iter().flatten().collect();
        let adjoint_iterations = adj.iter().map(|a| a.iterations as f64).reduce(f64::max);
        if let Some(i) = adjoint_iterations {
            self.adjoint.0 += i;
            self.adjoint.1 += 1;
            self.adjoint.2 += usize::from(adj.iter().all(|a| a.converged));
        }
        self.step += 1;
        self.tokens += (batch.shape[0] * batch.shape[1]) as u64;
        let dt = t0.elapsed().as_secs_f64();
        self.train_seconds += dt;
        if let Some(before) = profiled {
            let after = crate::profile::group_totals(3, split_group);
            let parts: Vec<f64> = after.iter().zip(&before).map(|(a, b)| (*a - *b).as_secs_f64()).collect();
            for (acc, p) in self.split.iter_mut().zip(&parts) {
                *acc += p;
            }
            self.split[3] += (dt - parts.iter().sum::<f64>()).max(0.0);
        }
        Ok(StepInfo {
            loss: l,
            token_acc: right as f64 / sup.max(1) as f64,
            iterations: if iters.is_empty() { 0.0 } else { median(&mut iters) },
            adjoint_iterations,
        })
    }

    /// Per sample of the last forward pass: the iterations it needed (max over layers).
    fn sample_iterations(&self) -> Vec<usize> {
        let stats = self.model.last_stats();
        let Some(first) = stats.first() else { return Vec::new() };
        (0..first.sample_iterations.len())
            .map(|b| stats.iter().map(|s| s.sample_iterations.get(b).copied().unwrap_or(0)).max().unwrap_or(0))
            .collect()
    }

    /// A copy of the current model in evaluation mode with `eval_lmax = lmax`.
    fn eval_model(&self, lmax: usize) -> Result<FpModel> {
        let mut mc = self.model.config().clone();
        mc.solver.eval_lmax = lmax;
        let mut m = FpModel::new(mc)?;
        crate::nn::to_device(&mut m, self.cfg.device)?;
        let src: std::collections::HashMap<String, &crate::Tensor> = self.model.params().into_iter().collect();
        for (name, p) in m.params_mut() {
            let s = src.get(&name).ok_or_else(|| Error::InvalidArgument {
                op: "fprnn eval",
                message: format!("parameter {name} missing"),
            })?;
            p.assign(&s.detach())?;
        }
        m.train(false);
        Ok(m)
    }

    /// Accuracy of `count` held-out sequences at length `len` (the same sequences for
    /// every call with the same seed and length), with `ℓ_max = factor · T`.
    pub fn evaluate_at(&self, len: usize, count: usize) -> Result<LengthEval> {
        self.cfg.task.check_eval_length(len)?;
        let mut rng = Rng::new(self.cfg.seed).stream("eval").stream(&format!("len-{len}"));
        let mut lmax = 0;
        let mut model: Option<FpModel> = None;
        let (mut seq_right, mut right, mut sup, mut nonconv) = (0usize, 0usize, 0usize, 0usize);
        let mut iters = Vec::with_capacity(count);
        let mut done = 0;
        let fp = self.cfg.model != ModelKind::Lstm;
        while done < count {
            let b = self.cfg.eval_batch.min(count - done);
            let batch = self.cfg.task.eval_batch(b, len, &mut rng);
            let want = self.cfg.eval_lmax_factor * batch.shape[1];
            if model.is_none() || want != lmax {
                lmax = want;
                model = Some(self.eval_model(lmax)?);
            }
            let m = model.as_ref().expect("built above");
            let rows = no_grad(|| -> Result<_> {
                let logits = m.forward(&batch.tokens, batch.shape)?;
                score(&logits, &batch)
            })?;
            for r in &rows {
                seq_right += usize::from(r.0);
                right += r.1;
                sup += r.2;
            }
            if fp {
                let stats = m.last_stats();
                let threshold = m.config().solver.threshold;
                for i in 0..b {
                    let mut it = 0;
                    let mut ok = true;
                    for s in &stats {
                        it = it.max(s.sample_iterations.get(i).copied().unwrap_or(0));
                        ok &= s.residual.get(i).is_some_and(|&r| r < threshold);
                    }
                    iters.push(it as f64);
                    nonconv += usize::from(!ok);
                }
            }
            done += b;
        }
        Ok(LengthEval {
            len,
            count,
            seq_acc: seq_right as f64 / count as f64,
            token_acc: right as f64 / sup.max(1) as f64,
            median_iterations: fp.then(|| median(&mut iters)),
            nonconverged_share: fp.then(|| nonconv as f64 / count as f64),
            lmax,
        })
    }

    /// Sequence accuracy at the training length on `val_count` held-out sequences; records
    /// the first step at which it reached 0.9.
    pub fn validate(&mut self) -> Result<LengthEval> {
        let e = self.evaluate_at(self.cfg.task.train_len(), self.cfg.val_count.max(1))?;
        if e.seq_acc >= 0.9 && self.crossed.is_none() {
            self.crossed = Some(self.step);
        }
        Ok(e)
    }

    /// [`FprnnTrainer::evaluate_at`] for every configured length.
    pub fn evaluate(&self) -> Result<Vec<LengthEval>> {
        self.cfg.eval_lengths.iter().map(|&l| self.evaluate_at(l, self.cfg.eval_count)).collect()
    }

    /// Parameters, optimiser state, the data stream, the random-`ℓ_max` stream and the
    /// counters (the cursor is the number of training tokens seen).
    pub fn save_state(&self, mut ckpt: Checkpoint) -> Checkpoint {
        for (name, p) in self.model.params() {
            // GPU parameters are read back here, explicitly (a failed readback panics
            // like `Tensor::to_vec`).
            let host = p.detach().to_device(Device::Cpu).unwrap_or_else(|e| panic!("{name}: {e}"));
            ckpt = ckpt.with_param(name, &host);
        }
        for (name, t) in self.opt.state_tensors() {
            ckpt = ckpt.with_optim(name, &t);
        }
        ckpt = ckpt.with_rng("data", &self.data).with_rng("lmax", &self.model.solver_rng()).with_cursor(self.tokens);
        if let Some(c) = self.crossed {
            ckpt = ckpt.with_meta("crossed_0_9", c.to_string());
        }
        ckpt
    }

    /// Continue from a checkpoint of [`FprnnTrainer::save_state`] for the same config.
    pub fn restore(&mut self, ckpt: &Checkpoint) -> Result<()> {
        // The checkpoint is host data: restore on the host, then move (explicitly) back.
        crate::nn::to_device(&mut self.model, Device::Cpu)?;
        ckpt.restore_params(&mut self.model)?;
        crate::nn::to_device(&mut self.model, self.cfg.device)?;
        self.opt.load_state_tensors(&ckpt.optim)?;
        self.data = ckpt.rng("data")?;
        // Checkpoints from before the random-ℓ_max stream was saved: a fixed ℓ_max
        // never draws from it.
        if let Ok(r) = ckpt.rng("lmax") {
            self.model.set_solver_rng(r);
        }
        self.tokens = ckpt.cursor;
        self.step = ckpt.step as usize;
        self.crossed = ckpt.meta("crossed_0_9").ok().and_then(|s| s.parse().ok());
        Ok(())
    }
}

/// `{ "len": value }` for the by-length summary fields.
fn by_length(evals: &[LengthEval], f: impl Fn(&LengthEval) -> Option<f64>) -> Value {
    let mut m = Map::new();
    for e in evals {
        m.insert(e.len.to_string(), f(e).filter(|v| v.is_finite()).map_or(Value::Null, |v| json!(v)));
    }
    Value::Object(m)
}

/// The longest evaluated length with sequence accuracy above 0.9 (None if none).
pub fn longest_over_0_9(evals: &[LengthEval]) -> Option<usize> {
    evals.iter().filter(|e| e.seq_acc > 0.9).map(|e| e.len).max()
}

/// The summary fields of issue 8 (plus throughput and the 0.9 crossing).
#[allow(clippy::too_many_arguments)]
pub fn summary_json(t: &FprnnTrainer, evals: &[LengthEval], steps_here: usize, wall_s: f64, final_loss: f32) -> Value {
    let c = t.config();
    json!({
        "task": c.task.name(),
        "model": c.model.name(),
        "mixer": c.mixer_name(),
        "backward": c.backward_name(),
        "adjoint_iterations_mean": t.adjoint_summary().map(|a| a.0),
        "adjoint_converged_share": t.adjoint_summary().map(|a| a.1),
        "seed": c.seed,
        "steps": t.step_index(),
        "train_length": c.task.train_len(),
        "wall_s": wall_s,
        "train_s": t.train_seconds(),
        "steps_per_s": t.steps_per_s(steps_here),
        "tokens_per_s": t.tokens_per_s(),
        "num_params": t.num_params(),
        "final_loss": num(final_loss),
        "crossed_0_9_at_step": t.crossed_0_9(),
        "seq_acc_by_length": by_length(evals, |e| Some(e.seq_acc)),
        "token_acc_by_length": by_length(evals, |e| Some(e.token_acc)),
        "longest_len_over_0_9": longest_over_0_9(evals),
        "median_iterations_by_length": by_length(evals, |e| e.median_iterations),
        "nonconverged_share_by_length": by_length(evals, |e| e.nonconverged_share),
        "eval_count": c.eval_count,
        "eval_lmax_factor": c.eval_lmax_factor,
        "step_split_s": t.step_split().map(|s| {
            STEP_SPLIT.iter().zip(s).map(|(k, v)| (k.to_string(), json!(v))).collect::<Map<String, Value>>()
        }),
    })
}

/// Draw `accuracy_vs_length.png` and (for FP models) `iterations_vs_length.png` in `dir`.
pub fn plot_lengths(dir: &Path, label: &str, evals: &[LengthEval]) -> Result<Vec<PathBuf>> {
    let pts = |f: &dyn Fn(&LengthEval) -> Option<f64>| -> Vec<(f64, f64)> {
        evals.iter().filter_map(|e| f(e).map(|v| (e.len as f64, v))).collect()
    };
    let mut out = Vec::new();
    let acc = LinePlot {
        title: format!("{label}: accuracy vs length"),
        x_label: "length".into(),
        y_label: "accuracy".into(),
        log_y: false,
        series: vec![
            Series { label: "sequence accuracy".into(), points: pts(&|e| Some(e.seq_acc)) },
            Series { label: "token accuracy".into(), points: pts(&|e| Some(e.token_acc)) },
        ],
    };
    let p = dir.join("accuracy_vs_length.png");
    plot::lines(&p, &acc)?;
    out.push(p);
    let it = pts(&|e| e.median_iterations);
    if !it.is_empty() {
        let plot = LinePlot {
            title: format!("{label}: solver iterations vs length"),
            x_label: "length".into(),
            y_label: "iterations / percent".into(),
            log_y: false,
            series: vec![
                Series { label: "median iterations".into(), points: it },
                Series {
                    label: "non-converged sequences (%)".into(),
                    points: pts(&|e| e.nonconverged_share.map(|s| 100.0 * s)),
                },
            ],
        };
        let p = dir.join("iterations_vs_length.png");
        plot::lines(&p, &plot)?;
        out.push(p);
    }
    Ok(out)
}
