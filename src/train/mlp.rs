//! The first job: an MLP classifier on the interleaved spirals (see
//! [`data::spirals`](mod@crate::data::spirals)), trained with AdamW and linear warmup + cosine decay.

use crate::autograd::no_grad;
use crate::data::{Dataset, SpiralsConfig, spirals};
use crate::error::{Error, Result};
use crate::nn::{Activation, Mlp, Module, num_params};
use crate::ops::fused::CrossEntropyOpts;
use crate::optim::{AdamW, AdamWConfig, LrSchedule, Optimizer, ParamGroup, clip_grad_norm};
use crate::rng::Rng;
use crate::run::Checkpoint;
use std::time::Instant;

/// Everything that determines an MLP run. Equal configs give bit-identical loss curves.
#[derive(Clone, Debug, PartialEq)]
pub struct MlpConfig {
    /// Seeds the data (`"spirals"` stream), the initialisation (`"init"`) and the batch
    /// order (`"batches"`).
    pub seed: u64,
    pub data: SpiralsConfig,
    pub hidden: Vec<usize>,
    pub activation: Activation,
    pub steps: usize,
    pub batch_size: usize,
    /// Peak learning rate (after warmup).
    pub lr: f32,
    /// Learning rate at the last step (cosine decay target).
    pub final_lr: f32,
    pub warmup_steps: usize,
    /// AdamW decoupled weight decay of the weights (biases are not decayed).
    pub weight_decay: f32,
    /// Global gradient-norm clip, if any.
    pub clip_norm: Option<f32>,
}

impl Default for MlpConfig {
    /// The full preset.
    fn default() -> Self {
        MlpConfig {
            seed: 0,
            data: SpiralsConfig::default(),
            hidden: vec![64, 64],
            activation: Activation::Gelu,
            steps: 2000,
            batch_size: 128,
            lr: 1e-2,
            final_lr: 1e-4,
            warmup_steps: 100,
            weight_decay: 1e-4,
            clip_norm: Some(1.0),
        }
    }
}

impl MlpConfig {
    /// A shorter preset for `reproduce --quick`.
    pub fn quick() -> Self {
        MlpConfig { steps: 600, warmup_steps: 50, ..MlpConfig::default() }
    }

    /// Reject settings that cannot train.
    pub fn validate(&self) -> Result<()> {
        let bad = |message: String| Err(Error::InvalidArgument { op: "mlp config", message });
        if self.steps == 0 {
            return bad("steps must be at least 1".into());
        }
        if self.batch_size == 0 {
            return bad("batch size must be at least 1".into());
        }
        if self.hidden.contains(&0) {
            return bad(format!("hidden sizes must be positive, got {:?}", self.hidden));
        }
        super::validate_schedule("mlp config", self.steps, self.warmup_steps, self.lr, self.final_lr, self.clip_norm)?;
        Ok(())
    }
}

/// What a run produced.
#[derive(Clone, Debug, PartialEq)]
pub struct MlpReport {
    /// Training loss (mean cross-entropy of the batch) at each step, before its update.
    pub losses: Vec<f32>,
    pub train_accuracy: f64,
    pub test_accuracy: f64,
    pub train_size: usize,
    pub test_size: usize,
    pub num_params: usize,
    /// Wall-clock seconds of data generation, training and evaluation.
    pub wall_seconds: f64,
}

impl MlpReport {
    /// Mean training loss over the last `min(50, steps)` steps.
    pub fn final_loss(&self) -> f32 {
        let k = self.losses.len().clamp(1, 50);
        let tail = &self.losses[self.losses.len().saturating_sub(k)..];
        (tail.iter().map(|&l| l as f64).sum::<f64>() / k as f64) as f32
    }
}

/// Fraction of `data` that `model` classifies correctly (evaluated under `no_grad`).
pub fn accuracy(model: &Mlp, data: &Dataset) -> Result<f64> {
    if data.is_empty() {
        return Ok(f64::NAN);
    }
    no_grad(|| {
        let pred = model.forward(&data.features())?.argmax_indices(-1)?;
        let right = pred.iter().zip(&data.y).filter(|(p, y)| p == y).count();
        Ok(right as f64 / data.len() as f64)
    })
}

/// Train an MLP on the spirals; see [`train_mlp_with`] for progress reporting.
pub fn train_mlp(cfg: &MlpConfig) -> Result<MlpReport> {
    train_mlp_with(cfg, |_, _| {})
}

/// Train with a callback after every step (`step` counted from 0, loss).
pub fn train_mlp_with(cfg: &MlpConfig, mut on_step: impl FnMut(usize, f32)) -> Result<MlpReport> {
    let mut t = MlpTrainer::new(cfg)?;
    while !t.done() {
        let step = t.step_index();
        let l = t.step()?;
        on_step(step, l);
    }
    t.report()
}

/// The MLP job as a state machine, one [`MlpTrainer::step`] at a time, so that a driver
/// (the CLI with the run harness) can log, checkpoint and stop between steps.
pub struct MlpTrainer {
    cfg: MlpConfig,
    model: Mlp,
    opt: AdamW,
    schedule: LrSchedule,
    train: Dataset,
    test: Dataset,
    /// The batch-order stream as it was when the current epoch's order was drawn.
    epoch_rng: Rng,
    /// The stream after drawing it (draws the next epoch's order).
    batches: Rng,
    order: Vec<usize>,
    pos: usize,
    step: usize,
    losses: Vec<f32>,
    start: Instant,
}

impl MlpTrainer {
    pub fn new(cfg: &MlpConfig) -> Result<MlpTrainer> {
        cfg.validate()?;
        let root = Rng::new(cfg.seed);
        let (train, test) = spirals(&cfg.data, cfg.seed)?;
        let dims: Vec<usize> =
            std::iter::once(train.dim).chain(cfg.hidden.iter().copied()).chain([train.classes]).collect();
        let model = Mlp::new(&dims, cfg.activation, &mut root.stream("init"))?;
        let no_decay = ParamGroup::predicate(|n: &str| n.ends_with("bias"), 0.0, 1.0);
        let opt = AdamW::with_groups(
            AdamWConfig { weight_decay: cfg.weight_decay, ..AdamWConfig::default() },
            vec![no_decay],
        )?;
        // The last step (index steps - 1) runs at final_lr.
        let last = cfg.steps - 1;
        let schedule = LrSchedule::warmup_cosine(cfg.lr, cfg.warmup_steps.min(last), last, cfg.final_lr)?;
        let epoch_rng = root.stream("batches");
        let mut batches = epoch_rng.clone();
        let order = batches.permutation(train.len());
        Ok(MlpTrainer {
            cfg: cfg.clone(),
            model,
            opt,
            schedule,
            train,
            test,
            epoch_rng,
            batches,
            order,
            pos: 0,
            step: 0,
            losses: Vec::with_capacity(cfg.steps),
            start: Instant::now(),
        })
    }

    /// Steps taken so far (the index of the next step).
    pub fn step_index(&self) -> usize {
        self.step
    }
    pub fn done(&self) -> bool {
        self.step >= self.cfg.steps
    }
    /// Learning rate of the next step.
    pub fn lr(&self) -> f32 {
        self.schedule.lr_at(self.step)
    }
    pub fn model(&self) -> &Mlp {
        &self.model
    }
    /// Losses of the steps taken in this process.
    pub fn losses(&self) -> &[f32] {
        &self.losses
    }

    /// One optimisation step; returns its loss.
    pub fn step(&mut self) -> Result<f32> {
        let bs = self.cfg.batch_size.min(self.train.len());
        if self.pos + bs > self.order.len() {
            self.epoch_rng = self.batches.clone();
            self.order = self.batches.permutation(self.train.len());
            self.pos = 0;
        }
        let (x, y) = self.train.batch(&self.order[self.pos..self.pos + bs])?;
        self.pos += bs;
        let loss = self.model.forward(&x)?.cross_entropy(&y, CrossEntropyOpts::default())?;
        let l = loss.item()?;
        self.model.zero_grad();
        loss.backward()?;
        drop(loss);
        super::guard::check_step(self.step as u64 + 1, l, &self.model)?;
        if let Some(c) = self.cfg.clip_norm {
            clip_grad_norm(&self.model, c)?;
        }
        self.opt.step(&mut self.model, self.schedule.lr_at(self.step))?;
        self.losses.push(l);
        self.step += 1;
        Ok(l)
    }

    /// Final accuracies and the loss curve so far.
    pub fn report(&self) -> Result<MlpReport> {
        Ok(MlpReport {
            losses: self.losses.clone(),
            train_accuracy: accuracy(&self.model, &self.train)?,
            test_accuracy: accuracy(&self.model, &self.test)?,
            train_size: self.train.len(),
            test_size: self.test.len(),
            num_params: num_params(&self.model),
            wall_seconds: self.start.elapsed().as_secs_f64(),
        })
    }

    /// Add everything needed to continue this run to `ckpt`: parameters, optimiser
    /// state, the batch-order stream and the position in the epoch.
    pub fn save_state(&self, mut ckpt: Checkpoint) -> Checkpoint {
        for (name, p) in self.model.params() {
            ckpt = ckpt.with_param(name, p);
        }
        for (name, t) in self.opt.state_tensors() {
            ckpt = ckpt.with_optim(name, &t);
        }
        ckpt.with_rng("batches", &self.epoch_rng).with_cursor(self.pos as u64)
    }

    /// Continue from a checkpoint written by [`MlpTrainer::save_state`] for the same
    /// configuration.
    pub fn restore(&mut self, ckpt: &Checkpoint) -> Result<()> {
        ckpt.restore_params(&mut self.model)?;
        self.opt.load_state_tensors(&ckpt.optim)?;
        self.epoch_rng = ckpt.rng("batches")?;
        self.batches = self.epoch_rng.clone();
        self.order = self.batches.permutation(self.train.len());
        self.pos = ckpt.cursor as usize;
        self.step = ckpt.step as usize;
        Ok(())
    }
}
