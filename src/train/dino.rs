//! The random-teacher job: distil a frozen random teacher into an α-interpolated
//! student on un-augmented images, probing teacher, student and raw pixels every epoch
//! (spec `random-teachers.md` §2, §5, §6).
//!
//! [`train_dino`] takes a [`DinoConfig`] and a [`DinoHooks`] implementation (per-step
//! and per-epoch callbacks, and a stop flag for SIGINT handling) and returns a
//! [`DinoReport`]. Nothing here prints.
//!
//! Randomness, each from its own named stream so that changing one leaves the others:
//! * teacher parameters: `Rng::new(teacher_seed).stream("teacher")`;
//! * the fresh student draw θ̃: `Rng::new(student_seed).stream("student")` (independent
//!   of the teacher even when the two seeds are equal; spec §8.14);
//! * data subsets `("subset")`, the batch order per epoch `("batches")` and generated
//!   data: from `data_seed`;
//! * probes: `probe_seed + epoch` for the linear probes (identical for teacher,
//!   student and pixels within an epoch).

use crate::autograd::no_grad;
use crate::data::idx::{fashion_mnist_available, fashion_mnist_dir, load_fashion_mnist};
use crate::data::images::Fit28;
use crate::data::noise::gaussian_noise_images;
use crate::data::synthetic_images::{EmbeddedConfig, embedded_images};
use crate::data::{ImageSet, cifar};
use crate::dino::method::{self, Center, LossConfig};
use crate::dino::probes::{self, Features, ProbeConfig, ProbeResult};
use crate::dino::{DinoModel, EncoderConfig, HeadConfig, MlpEncoderConfig};
use crate::error::{Error, Result};
use crate::nn::{Module, num_params};
use crate::optim::{AdamW, AdamWConfig, Optimizer};
use crate::rng::Rng;
use crate::run::Checkpoint;
use crate::storage::Device;
use crate::tensor::Tensor;
use std::path::PathBuf;
use std::time::Instant;

/// Where the images come from.
#[derive(Clone, Debug, PartialEq)]
pub enum DataChoice {
    /// Real Fashion-MNIST IDX files (`dir`, else `$FIXPOINT_FASHION_MNIST_DIR`, else
    /// `/usr/share/datasets/fashion-mnist`).
    FashionMnist { dir: Option<PathBuf>, fit28: Fit28 },
    /// CIFAR-10 binary batches in `dir` (10,000 records per file required).
    Cifar10 { dir: PathBuf },
    /// The embedded synthetic set: results carry no paper claim.
    Embedded(EmbeddedConfig),
    /// Distil on N(0, 1) noise images (as many as the probe data's training subset,
    /// or `train_size`); probe on `probe` (the control of the paper's Fig. 4).
    GaussianNoise { probe: Box<DataChoice> },
}

impl DataChoice {
    /// `fashion-mnist`, `cifar10`, `embedded` or `gaussian-noise`.
    pub fn name(&self) -> &'static str {
        match self {
            DataChoice::FashionMnist { .. } => "fashion-mnist",
            DataChoice::Cifar10 { .. } => "cifar10",
            DataChoice::Embedded(_) => "embedded",
            DataChoice::GaussianNoise { .. } => "gaussian-noise",
        }
    }
    /// Fashion-MNIST when its files are installed, the embedded set otherwise.
    pub fn real_or_embedded(dir: Option<PathBuf>) -> DataChoice {
        if fashion_mnist_available(&fashion_mnist_dir(dir.as_deref())) {
            DataChoice::FashionMnist { dir, fit28: Fit28::Resize }
        } else {
            DataChoice::Embedded(EmbeddedConfig::default())
        }
    }
    /// The dataset the probes use.
    pub fn probe_data(&self) -> &DataChoice {
        match self {
            DataChoice::GaussianNoise { probe } => probe.probe_data(),
            other => other,
        }
    }
}

/// Everything that determines a run. Equal configs give bit-identical runs on the same
/// thread count (and, with the engine's fixed chunking, on any thread count).
#[derive(Clone, Debug, PartialEq)]
pub struct DinoConfig {
    pub data: DataChoice,
    /// Seeds data subsets, generated data and the batch order.
    pub data_seed: u64,
    /// Images distilled on: a class-balanced subset of the training split (all when
    /// `None`). For Gaussian noise: the number of noise images (default: the probe
    /// training subset's size).
    pub train_size: Option<usize>,
    /// Training-split images the probes are fitted on (a balanced subset; the first
    /// `min(train_size, probe_train_size)` of them are also distilled on).
    pub probe_train_size: Option<usize>,
    /// Test-split images the probes are scored on (a balanced subset).
    pub probe_test_size: Option<usize>,
    pub encoder: EncoderConfig,
    /// Head hidden sizes (`[2048, 2048]`).
    pub head_hidden: Vec<usize>,
    pub bottleneck: usize,
    /// Output dimension m.
    pub out_dim: usize,
    pub last_wn: bool,
    /// Interpolation factor α of the student initialisation.
    pub alpha: f64,
    pub teacher_seed: u64,
    pub student_seed: u64,
    pub loss: LossConfig,
    pub epochs: usize,
    pub batch_size: usize,
    /// Constant AdamW learning rate.
    pub lr: f32,
    /// AdamW decoupled weight decay of parameters with fewer than 2 axes (0.01 in the
    /// reference; ≥2-D parameters get 0).
    pub wd_1d: f32,
    /// Cache the teacher's bottleneck outputs (spec §8.6).
    pub cache_teacher: bool,
    /// How the frozen teacher's batch norms normalise (spec §8.2; ResNet18 only).
    pub teacher_bn: TeacherBn,
    pub probe: ProbeConfig,
    pub probe_seed: u64,
    /// Where the distillation steps run (student and teacher forward, loss, backward,
    /// AdamW). With [`Device::Gpu`] (MLP students only) each batch is uploaded
    /// explicitly, the loss and KL come back as scalars, and the probes run on the CPU
    /// on a copy of the student made once per evaluation.
    pub device: Device,
}

/// The frozen teacher's batch norm (spec §8.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TeacherBn {
    /// Eval mode with the initial running statistics (0, 1): about the identity, as in
    /// the reference code (the default).
    EvalInit,
    /// Batch statistics of each forward pass, as a network in train mode would use (the
    /// teacher's output then depends on the rest of its batch, so it cannot be cached;
    /// its running statistics are never read).
    BatchStats,
}

impl TeacherBn {
    pub fn name(self) -> &'static str {
        match self {
            TeacherBn::EvalInit => "eval_init",
            TeacherBn::BatchStats => "batch_stats",
        }
    }
    pub fn parse(s: &str) -> std::result::Result<TeacherBn, String> {
        match s {
            "eval_init" => Ok(TeacherBn::EvalInit),
            "batch_stats" => Ok(TeacherBn::BatchStats),
            _ => Err(format!("unknown --teacher-bn {s:?} (eval_init or batch_stats)")),
        }
    }
}

impl Default for DinoConfig {
    /// The paper's settings (§6) with the MLP student, m = 65536, on real
    /// Fashion-MNIST.
    fn default() -> Self {
        DinoConfig {
            data: DataChoice::FashionMnist { dir: None, fit28: Fit28::Resize },
            data_seed: 0,
            train_size: None,
            probe_train_size: None,
            probe_test_size: None,
            encoder: EncoderConfig::Mlp(MlpEncoderConfig::default()),
            head_hidden: vec![2048, 2048],
            bottleneck: 256,
            out_dim: 65536,
            last_wn: false,
            alpha: 1e-10,
            teacher_seed: 0,
            student_seed: 1,
            loss: LossConfig::default(),
            epochs: 100,
            batch_size: 256,
            lr: 1e-3,
            wd_1d: 0.01,
            cache_teacher: true,
            teacher_bn: TeacherBn::EvalInit,
            probe: ProbeConfig::default(),
            probe_seed: 0,
            device: Device::Cpu,
        }
    }
}

/// Largest `--width-mult` of the conv students (16× VGG11 is about 2.4 G parameters).
const MAX_WIDTH_MULT: f64 = 8.0;
/// Largest student (encoder and head) the config accepts, in parameters.
const MAX_STUDENT_PARAMS: u128 = 1 << 30;

impl DinoConfig {
    /// The `--quick` preset: MLP student, m = 4096, 8 epochs on real Fashion-MNIST,
    /// distilling on a balanced 20,000-image subset (632 steps of 256) and probing on a
    /// balanced 10,000-image training subset and the full 10,000-image test split.
    ///
    /// Sizing: a step costs about 6 × 10.5 M multiply-adds per image (student forward
    /// and backward; the cached teacher adds only its last layer), one evaluation
    /// about 0.25 TFLOP (20k embeddings, a 10k × 10k k-NN, three linear probes), the
    /// one-off teacher cache, teacher/pixel features and pixel k-NN about 1.2 TFLOP.
    /// Measured twice on the 2-core machine while other jobs shared it (load average
    /// 6–11): 568 s and 555 s wall, 386 and 395 images/s (distillation of 20k images ×
    /// 8 epochs 414 s and 406 s, teacher cache 9–13 s, probes 9 × 10–15 s), peak RSS
    /// 1.8 GB. The full 60k images would need about 3× the distillation time.
    pub fn quick() -> Self {
        DinoConfig {
            train_size: Some(20_000),
            probe_train_size: Some(10_000),
            probe_test_size: Some(10_000),
            out_dim: 4096,
            epochs: 8,
            ..DinoConfig::default()
        }
    }

    /// A tiny preset for `reproduce --quick` (seconds): 2 epochs on 1,000 images,
    /// m = 1024, probes on 1,000 / 500 images. It checks the pipeline, not the paper.
    pub fn smoke() -> Self {
        DinoConfig {
            train_size: Some(1000),
            probe_train_size: Some(1000),
            probe_test_size: Some(500),
            out_dim: 1024,
            epochs: 2,
            ..DinoConfig::default()
        }
    }

    /// Weights of the student's linear and attention layers (biases and norms left out),
    /// in u128 so that absurd sizes cannot overflow; the conv students count as at most
    /// `width_mult²` times the full network's 11.2 M.
    fn student_params_estimate(&self) -> u128 {
        let chain = |dims: &[usize]| dims.windows(2).map(|w| w[0] as u128 * w[1] as u128).sum::<u128>();
        let (encoder, embed) = match &self.encoder {
            EncoderConfig::Mlp(m) => {
                let mut dims = vec![m.in_dim];
                dims.extend(&m.hidden);
                dims.push(m.embed_dim);
                (chain(&dims), m.embed_dim)
            }
            EncoderConfig::Vit(v) => {
                let d = v.dim as u128;
                let block = 4 * d * d + 2 * d * v.mlp_dim as u128;
                let patch = (v.patch * v.patch * v.in_channels) as u128 * d;
                (v.depth as u128 * block + patch, v.dim)
            }
            EncoderConfig::Vgg11(c) | EncoderConfig::ResNet18(c) => {
                ((11_200_000.0 * c.width_mult.max(1.0).powi(2)) as u128, self.encoder.embed_dim())
            }
        };
        let mut head = vec![embed];
        head.extend(&self.head_hidden);
        head.extend([self.bottleneck, self.out_dim]);
        encoder + chain(&head)
    }

    pub fn head_config(&self) -> HeadConfig {
        HeadConfig {
            in_dim: self.encoder.embed_dim(),
            hidden: self.head_hidden.clone(),
            bottleneck: self.bottleneck,
            out_dim: self.out_dim,
            last_wn: self.last_wn,
        }
    }

    /// Reject settings that cannot run.
    pub fn validate(&self) -> Result<()> {
        let bad = |message: String| Err(Error::InvalidArgument { op: "dino config", message });
        if self.batch_size == 0 || self.out_dim == 0 || self.bottleneck == 0 {
            return bad("batch size, out dim and bottleneck must be at least 1".into());
        }
        let mut sizes =
            vec![("batch size", self.batch_size), ("out dim", self.out_dim), ("bottleneck", self.bottleneck)];
        sizes.extend(self.head_hidden.iter().map(|&h| ("head hidden size", h)));
        match &self.encoder {
            EncoderConfig::Mlp(m) => {
                sizes.extend(m.hidden.iter().map(|&h| ("mlp hidden size", h)));
                sizes.push(("embed dim", m.embed_dim));
            }
            EncoderConfig::Vit(v) => sizes.extend([
                ("vit patch", v.patch),
                ("vit dim", v.dim),
                ("vit depth", v.depth),
                ("vit heads", v.heads),
                ("vit mlp dim", v.mlp_dim),
            ]),
            EncoderConfig::Vgg11(c) | EncoderConfig::ResNet18(c) if c.width_mult > MAX_WIDTH_MULT => {
                return bad(format!("width mult {} exceeds the limit of {MAX_WIDTH_MULT}", c.width_mult));
            }
            _ => {}
        }
        super::check_sizes("dino config", &sizes)?;
        let params = self.student_params_estimate();
        if params > MAX_STUDENT_PARAMS {
            return bad(format!(
                "the student would have about {params} parameters, over the limit of {MAX_STUDENT_PARAMS} \
                 (4 GiB of f32 weights before gradients and AdamW state); lower the encoder or head sizes"
            ));
        }
        if !(0.0..=1.0).contains(&self.alpha) {
            return bad(format!("alpha must be in [0, 1], got {}", self.alpha));
        }
        if !(self.lr.is_finite() && self.lr >= 0.0 && self.wd_1d.is_finite() && self.wd_1d >= 0.0) {
            return bad(format!("need lr >= 0 and wd_1d >= 0, got {} and {}", self.lr, self.wd_1d));
        }
        for (what, v) in
            [("train", self.train_size), ("probe train", self.probe_train_size), ("probe test", self.probe_test_size)]
        {
            if v == Some(0) {
                return bad(format!("{what} size must be at least 1"));
            }
        }
        if self.device != Device::Cpu && !matches!(self.encoder, EncoderConfig::Mlp(_)) {
            return bad(format!(
                "the {} student has no GPU path (on the GPU: the mlp student); use --device cpu",
                self.encoder.name()
            ));
        }
        if self.probe.k == 0 {
            return bad("k-NN k must be at least 1".into());
        }
        if self.teacher_bn == TeacherBn::BatchStats {
            if !matches!(self.encoder, EncoderConfig::ResNet18(_)) {
                return bad(format!(
                    "--teacher-bn batch_stats: the {} student has no batch norm (only resnet18 has)",
                    self.encoder.name()
                ));
            }
            if self.cache_teacher {
                return bad("--teacher-bn batch_stats makes the teacher's output depend on its batch, so it \
                     cannot be cached: add --no-cache-teacher"
                    .into());
            }
        }
        if let DataChoice::GaussianNoise { probe } = &self.data
            && matches!(**probe, DataChoice::GaussianNoise { .. })
        {
            return bad("Gaussian noise cannot be the probe dataset (it has no labels)".into());
        }
        self.loss.validate()
    }
}

/// One distillation step, as reported to [`DinoHooks::on_step`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepInfo {
    /// 0-based step over the whole run.
    pub step: usize,
    /// 1-based epoch.
    pub epoch: usize,
    /// Cross-entropy of the batch (before the update).
    pub loss: f32,
    /// KL(teacher ‖ student) of the batch, in f64.
    pub kl: f64,
    pub lr: f32,
    pub batch_size: usize,
    /// Wall-clock seconds of this step.
    pub seconds: f64,
}

/// One epoch's numbers. Epoch 0 is the evaluation before training.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochRecord {
    pub epoch: usize,
    pub steps: usize,
    /// Mean batch cross-entropy over the epoch (NaN for epoch 0).
    pub mean_loss: f64,
    /// Mean batch KL over the epoch (NaN for epoch 0).
    pub mean_kl: f64,
    pub teacher: ProbeResult,
    pub student: ProbeResult,
    pub pixels: ProbeResult,
    /// Seconds of distillation steps and of probing in this epoch.
    pub train_s: f64,
    pub probe_s: f64,
}

/// Callbacks of [`train_dino`]. All methods have empty defaults; `()` implements it.
pub trait DinoHooks {
    fn on_start(&mut self, _info: &RunInfo) {}
    fn on_step(&mut self, _step: &StepInfo) {}
    /// After each epoch's probes (and once before training, with `epoch == 0`), with
    /// the current student (for checkpoints).
    fn on_epoch(&mut self, _record: &EpochRecord, _student: &DinoModel) {}
    /// Polled after every step: `true` ends the run early after the current step, with
    /// a final evaluation of the partial epoch (SIGINT handling).
    fn should_stop(&mut self) -> bool {
        false
    }
    /// Called once after [`DinoHooks::on_start`]: a checkpoint written from a
    /// [`DinoState`] of the same configuration to continue from (`--resume`).
    fn resume(&mut self) -> Option<Checkpoint> {
        None
    }
    /// The whole training state, after every step inside an epoch (`epoch_end` false)
    /// and after each epoch's evaluation (`epoch_end` true, also for a partial epoch
    /// cut short by [`DinoHooks::should_stop`]); write it with [`DinoState::save`].
    fn on_state(&mut self, _state: &DinoState<'_>, _epoch_end: bool) {}
}

impl DinoHooks for () {}

/// What a run is about to do, given to [`DinoHooks::on_start`].
#[derive(Clone, Debug, PartialEq)]
pub struct RunInfo {
    pub dataset: String,
    pub probe_dataset: String,
    /// `"synthetic: no paper claim"` for generated data, empty otherwise.
    pub claim: String,
    pub train_size: usize,
    pub probe_train_size: usize,
    pub probe_test_size: usize,
    pub steps_per_epoch: usize,
    /// Steps of the whole run (`steps_per_epoch × epochs`): the progress line's total.
    pub total_steps: usize,
    pub encoder_params: usize,
    pub head_params: usize,
    /// Student elements that differ from the teacher's after interpolation.
    pub student_differs: usize,
}

/// Aggregated probe accuracies (percent).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProbeSummary {
    /// Mean over all evaluations (the teacher is fixed; only probe seeds vary).
    pub teacher: ProbeResult,
    /// The last epoch.
    pub student: ProbeResult,
    /// Maximum over training epochs, per probe.
    pub student_best: ProbeResult,
    /// Mean over all evaluations.
    pub pixels: ProbeResult,
}

/// What a run produced.
#[derive(Clone, Debug, PartialEq)]
pub struct DinoReport {
    pub info: RunInfo,
    pub student_model: String,
    pub alpha: f64,
    pub out_dim: usize,
    pub teacher_seed: u64,
    pub student_seed: u64,
    /// Epochs completed (fewer than configured when stopped early).
    pub epochs: usize,
    pub stopped_early: bool,
    /// Per-step cross-entropy and KL.
    pub losses: Vec<f32>,
    pub kls: Vec<f64>,
    /// Epoch 0 (before training) and every completed epoch.
    pub history: Vec<EpochRecord>,
    pub probes: ProbeSummary,
    /// Whole run, including data loading and probes.
    pub wall_s: f64,
    /// Seconds inside distillation steps, and images distilled per such second.
    pub train_s: f64,
    pub images_per_s: f64,
    /// Seconds spent building the teacher cache.
    pub cache_s: f64,
}

/// Loaded images: what is distilled on, and the probe splits.
pub struct RunData {
    pub train: ImageSet,
    pub probe_train: ImageSet,
    pub probe_test: ImageSet,
    pub dataset: String,
    pub probe_dataset: String,
}

fn load_split_pair(choice: &DataChoice, seed: u64) -> Result<(ImageSet, ImageSet)> {
    match choice {
        DataChoice::FashionMnist { dir, fit28 } => load_fashion_mnist(&fashion_mnist_dir(dir.as_deref()), *fit28),
        DataChoice::Cifar10 { dir } => cifar::load_cifar10(dir, true),
        DataChoice::Embedded(c) => embedded_images(c, seed),
        DataChoice::GaussianNoise { probe } => load_split_pair(probe, seed),
    }
}

/// Load and subset the data of `cfg`.
pub fn load_data(cfg: &DinoConfig) -> Result<RunData> {
    let (train_all, test_all) = load_split_pair(cfg.data.probe_data(), cfg.data_seed)?;
    let subset = Rng::new(cfg.data_seed).stream("subset");
    // One balanced order of the training split: its prefixes are the probe-train and
    // the distillation subsets.
    let n_probe = cfg.probe_train_size.unwrap_or(train_all.len()).min(train_all.len());
    let probe_train = train_all.balanced_subset(n_probe, &mut subset.stream("train"))?;
    let probe_test = test_all.balanced_subset(
        cfg.probe_test_size.unwrap_or(test_all.len()).min(test_all.len()),
        &mut subset.stream("test"),
    )?;
    let train = match &cfg.data {
        DataChoice::GaussianNoise { .. } => {
            gaussian_noise_images(cfg.train_size.unwrap_or(probe_train.len()), cfg.data_seed)?
        }
        _ => {
            let n = cfg.train_size.unwrap_or(train_all.len()).min(train_all.len());
            if n == probe_train.len() {
                probe_train.clone()
            } else {
                train_all.balanced_subset(n, &mut subset.stream("train"))?
            }
        }
    };
    Ok(RunData {
        train,
        probe_train,
        probe_test,
        dataset: cfg.data.name().to_string(),
        probe_dataset: cfg.data.probe_data().name().to_string(),
    })
}

/// Batch size of no-grad passes (embeddings, teacher cache).
const EVAL_BATCH: usize = 256;

/// `f(images of a batch)` for every batch of `set` (no grad), rows concatenated;
/// returns the rows and the row length.
pub fn map_batches(set: &ImageSet, f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<(Vec<f32>, usize)> {
    let mut out = Vec::new();
    let mut dim = 0;
    no_grad(|| -> Result<()> {
        let idx: Vec<usize> = (0..set.len()).collect();
        for chunk in idx.chunks(EVAL_BATCH) {
            let y = f(&set.batch(chunk)?)?;
            dim = y.shape()[1];
            out.extend_from_slice(&y.contiguous_data());
        }
        Ok(())
    })?;
    Ok((out, dim))
}

/// Encoder embeddings of every image of `set`, as probe features.
pub fn embed_set(model: &DinoModel, set: &ImageSet) -> Result<Features> {
    let (data, dim) = map_batches(set, |x| model.embed(x))?;
    Features::new(data, set.labels.clone(), dim)
}

/// Flattened normalised pixels of `set` (3072-d), as probe features.
pub fn pixel_features(set: &ImageSet) -> Result<Features> {
    let idx: Vec<usize> = (0..set.len()).collect();
    Features::new(set.rows(&idx)?, set.labels.clone(), set.dim())
}

/// Teacher logits for a batch: from the cached bottleneck rows (uploaded to `x`'s
/// device with the batch), or a full forward pass.
fn teacher_logits(teacher: &DinoModel, cache: Option<&[f32]>, x: &Tensor, idx: &[usize]) -> Result<Tensor> {
    no_grad(|| match cache {
        Some(z) => {
            let d = teacher.head.bottleneck_dim();
            let rows: Vec<f32> = idx.iter().flat_map(|&i| z[i * d..(i + 1) * d].iter().copied()).collect();
            teacher.head.project(&Tensor::from_vec(rows, [idx.len(), d])?.to_device(x.device())?)
        }
        None => teacher.forward(x),
    })
}

/// The teacher's unit-norm bottleneck outputs for every image of `set` (spec §8.6).
pub fn teacher_cache(teacher: &DinoModel, set: &ImageSet) -> Result<Vec<f32>> {
    Ok(map_batches(set, |x| teacher.bottleneck(x))?.0)
}

/// Teacher logits of the images `idx` of `set` with and without the cache (for tests).
pub fn teacher_logits_both(teacher: &DinoModel, set: &ImageSet, idx: &[usize]) -> Result<(Tensor, Tensor)> {
    let cache = teacher_cache(teacher, set)?;
    let x = set.batch(idx)?;
    Ok((teacher_logits(teacher, Some(&cache), &x, idx)?, teacher_logits(teacher, None, &x, idx)?))
}

/// One student update against fixed teacher logits; returns (CE, KL or NaN, seconds
/// spent in the optimizer update).
#[allow(clippy::too_many_arguments)]
fn distill_step(
    student: &mut DinoModel,
    opt: &mut AdamW,
    x: &Tensor,
    t_logits: &Tensor,
    loss_cfg: &LossConfig,
    center: Option<&mut Center>,
    lr: f32,
    log_kl: bool,
    step: u64,
) -> Result<(f32, f64, f64)> {
    let probs = method::teacher_probs(t_logits, loss_cfg, center.as_deref())?;
    // The student's BatchNorms (if any) use batch statistics in its training pass only;
    // probes and the teacher run in eval mode (spec §2, §8.2).
    student.train(true);
    let s_logits = student.forward(x);
    student.train(false);
    let s_logits = s_logits?;
    let kl = if log_kl {
        no_grad(|| method::kl_f64(t_logits, &s_logits.detach(), loss_cfg, center.as_deref()))?
    } else {
        f64::NAN
    };
    let loss = method::distill_loss(&s_logits, &probs, loss_cfg.student_temp)?;
    drop((probs, s_logits));
    let l = loss.item()?;
    student.zero_grad();
    loss.backward()?;
    drop(loss);
    // Values the last AdamW step wrote were checked there; nothing else writes the
    // student between steps.
    super::guard::check_step_after(step, l, &*student, &*opt)?;
    let t_opt = Instant::now();
    // AdamW counts its own steps per parameter; report the loop's.
    opt.step(student, lr).map_err(|e| match e {
        Error::Diverged { what, param, .. } => Error::Diverged { step, what, param },
        e => e,
    })?;
    let opt_s = t_opt.elapsed().as_secs_f64();
    if let Some(c) = center {
        c.update(t_logits)?;
    }
    Ok((l, kl, opt_s))
}

/// Build the teacher and the α-interpolated student of `cfg`. Returns the number of
/// student elements that differ from the teacher.
pub fn build_models(cfg: &DinoConfig) -> Result<(DinoModel, DinoModel, usize)> {
    let head = cfg.head_config();
    let mut teacher = DinoModel::new(&cfg.encoder, &head, &mut Rng::new(cfg.teacher_seed).stream("teacher"))?;
    // Batch statistics: the teacher stays in train mode for good (spec §8.2).
    teacher.train(cfg.teacher_bn == TeacherBn::BatchStats);
    let mut student = DinoModel::new(&cfg.encoder, &head, &mut Rng::new(cfg.student_seed).stream("student"))?;
    let differs = method::init_student(&teacher, &mut student, cfg.alpha)?;
    Ok((teacher, student, differs))
}

/// `model` with its parameters on `device` (a clone sharing nothing on the new device;
/// the model itself when already there).
fn model_on(model: &DinoModel, device: Device) -> Result<std::borrow::Cow<'_, DinoModel>> {
    if model.params().iter().all(|(_, p)| p.device() == device) {
        return Ok(std::borrow::Cow::Borrowed(model));
    }
    let mut m = model.clone();
    crate::nn::to_device(&mut m, device)?;
    Ok(std::borrow::Cow::Owned(m))
}

fn mean_of(v: &[f64]) -> f64 {
    if v.is_empty() { f64::NAN } else { v.iter().sum::<f64>() / v.len() as f64 }
}

/// Run the job. See the module docs.
pub fn train_dino(cfg: &DinoConfig, hooks: &mut dyn DinoHooks) -> Result<DinoReport> {
    cfg.validate()?;
    let start = Instant::now();
    let data = load_data(cfg)?;
    let (teacher, mut student, differs) = build_models(cfg)?;
    if cfg.alpha > 0.0 && differs == 0 {
        return Err(Error::InvalidArgument {
            op: "train_dino",
            message: format!(
                "alpha = {} leaves the student bit-identical to the teacher (zero loss and gradient); use alpha >= 1e-4",
                cfg.alpha
            ),
        });
    }
    let claim = if matches!(cfg.data.probe_data(), DataChoice::Embedded(_)) {
        "synthetic: no paper claim".to_string()
    } else {
        String::new()
    };
    let n = data.train.len();
    let bs = cfg.batch_size.min(n);
    let steps_per_epoch = n.div_ceil(bs);
    let info = RunInfo {
        dataset: data.dataset.clone(),
        probe_dataset: data.probe_dataset.clone(),
        claim,
        train_size: n,
        probe_train_size: data.probe_train.len(),
        probe_test_size: data.probe_test.len(),
        steps_per_epoch,
        total_steps: steps_per_epoch * cfg.epochs,
        encoder_params: num_params(&student.encoder),
        head_params: num_params(&student.head),
        student_differs: differs,
    };
    hooks.on_start(&info);

    let t_cache = Instant::now();
    let cache = if cfg.cache_teacher { Some(teacher_cache(&teacher, &data.train)?) } else { None };
    let cache_s = t_cache.elapsed().as_secs_f64();

    // Fixed features: teacher embeddings and pixels (k-NN on them is deterministic).
    let classes = data.probe_train.classes;
    let teacher_tr = embed_set(&teacher, &data.probe_train)?;
    let teacher_te = embed_set(&teacher, &data.probe_test)?;
    let pix_tr = pixel_features(&data.probe_train)?;
    let pix_te = pixel_features(&data.probe_test)?;
    let pc = &cfg.probe;
    let teacher_knn = probes::knn_accuracy(&teacher_tr, &teacher_te, pc.k, classes, pc.vote)?;
    let pixels_knn = probes::knn_accuracy(&pix_tr, &pix_te, pc.k, classes, pc.vote)?;
    let evaluate = |student: &DinoModel, epoch: usize| -> Result<(ProbeResult, ProbeResult, ProbeResult)> {
        let seed = cfg.probe_seed.wrapping_add(epoch as u64);
        let student = &*model_on(student, Device::Cpu)?;
        let s_tr = embed_set(student, &data.probe_train)?;
        let s_te = embed_set(student, &data.probe_test)?;
        let student_r = probes::probe(&s_tr, &s_te, classes, pc, seed)?;
        let teacher_r = ProbeResult {
            knn: teacher_knn,
            linear: probes::linear_probe(&teacher_tr, &teacher_te, classes, &pc.linear, seed)?,
        };
        let pixels_r =
            ProbeResult { knn: pixels_knn, linear: probes::linear_probe(&pix_tr, &pix_te, classes, &pc.linear, seed)? };
        Ok((teacher_r, student_r, pixels_r))
    };

    let mut opt = AdamW::with_groups(AdamWConfig::default(), method::param_groups(&student, cfg.wd_1d))?;
    let mut center = cfg.loss.center_momentum.map(|m| Center::new(cfg.out_dim, m));
    let mut ls = match hooks.resume() {
        Some(ck) => LoopState::restore(&ck, &mut student, &mut opt, center.as_mut())?,
        None => {
            let t0 = Instant::now();
            let (teacher_r, student_r, pixels_r) = evaluate(&student, 0)?;
            let rec = EpochRecord {
                epoch: 0,
                steps: 0,
                mean_loss: f64::NAN,
                mean_kl: f64::NAN,
                teacher: teacher_r,
                student: student_r,
                pixels: pixels_r,
                train_s: 0.0,
                probe_s: t0.elapsed().as_secs_f64(),
            };
            hooks.on_epoch(&rec, &student);
            LoopState::new(cfg.data_seed, rec)
        }
    };
    // The distillation steps run on cfg.device; the teacher's embeddings, the cache and
    // the probes stay on the CPU.
    crate::nn::to_device(&mut student, cfg.device)?;
    let teacher_dev = model_on(&teacher, cfg.device)?;
    let (mut train_s, mut images) = (0.0f64, 0usize);
    let mut stopped_early = false;
    let mut partial = None;
    while ls.epoch <= cfg.epochs {
        let epoch = ls.epoch;
        let mut next_rng = ls.epoch_rng.clone();
        let order = next_rng.permutation(n);
        let mut ep_train = 0.0f64;
        for idx in order.chunks(bs).skip(ls.cursor) {
            let ts = Instant::now();
            let x = data.train.batch(idx)?.to_device(cfg.device)?;
            let t_logits = teacher_logits(&teacher_dev, cache.as_deref(), &x, idx)?;
            let (l, kl, _) = distill_step(
                &mut student,
                &mut opt,
                &x,
                &t_logits,
                &cfg.loss,
                center.as_mut(),
                cfg.lr,
                true,
                ls.step as u64 + 1,
            )?;
            let secs = ts.elapsed().as_secs_f64();
            ep_train += secs;
            images += idx.len();
            ls.ep_loss += l as f64;
            ls.ep_kl += kl;
            ls.losses.push(l);
            ls.kls.push(kl);
            let step = ls.step;
            ls.step += 1;
            ls.cursor += 1;
            hooks.on_step(&StepInfo { step, epoch, loss: l, kl, lr: cfg.lr, batch_size: idx.len(), seconds: secs });
            if hooks.should_stop() {
                stopped_early = true;
                break;
            }
            if ls.cursor < steps_per_epoch {
                hooks.on_state(&DinoState { student: &student, opt: &opt, center: center.as_ref(), ls: &ls }, false);
            }
        }
        train_s += ep_train;
        let tp = Instant::now();
        let (teacher_r, student_r, pixels_r) = evaluate(&student, epoch)?;
        let rec = EpochRecord {
            epoch,
            steps: ls.cursor,
            mean_loss: ls.ep_loss / ls.cursor.max(1) as f64,
            mean_kl: ls.ep_kl / ls.cursor.max(1) as f64,
            teacher: teacher_r,
            student: student_r,
            pixels: pixels_r,
            train_s: ep_train,
            probe_s: tp.elapsed().as_secs_f64(),
        };
        hooks.on_epoch(&rec, &*model_on(&student, Device::Cpu)?);
        if ls.cursor >= steps_per_epoch {
            ls.history.push(rec);
            ls.epoch += 1;
            ls.cursor = 0;
            ls.epoch_rng = next_rng;
            ls.ep_loss = 0.0;
            ls.ep_kl = 0.0;
        } else {
            partial = Some(rec);
        }
        hooks.on_state(&DinoState { student: &student, opt: &opt, center: center.as_ref(), ls: &ls }, true);
        if stopped_early {
            break;
        }
    }
    // A stop after the last step is no early stop.
    stopped_early &= ls.epoch <= cfg.epochs;
    let LoopState { mut history, losses, kls, .. } = ls;
    history.extend(partial);

    let pick = |f: &dyn Fn(&EpochRecord) -> ProbeResult| -> Vec<ProbeResult> { history.iter().map(f).collect() };
    let teachers = pick(&|r| r.teacher);
    let pixels = pick(&|r| r.pixels);
    let trained: Vec<ProbeResult> = history.iter().skip(1).map(|r| r.student).collect();
    let trained = if trained.is_empty() { vec![history[0].student] } else { trained };
    let probes_summary = ProbeSummary {
        teacher: ProbeResult {
            knn: mean_of(&teachers.iter().map(|r| r.knn).collect::<Vec<_>>()),
            linear: mean_of(&teachers.iter().map(|r| r.linear).collect::<Vec<_>>()),
        },
        student: *trained.last().expect("at least one record"),
        student_best: ProbeResult {
            knn: trained.iter().map(|r| r.knn).fold(f64::NEG_INFINITY, f64::max),
            linear: trained.iter().map(|r| r.linear).fold(f64::NEG_INFINITY, f64::max),
        },
        pixels: ProbeResult {
            knn: mean_of(&pixels.iter().map(|r| r.knn).collect::<Vec<_>>()),
            linear: mean_of(&pixels.iter().map(|r| r.linear).collect::<Vec<_>>()),
        },
    };
    Ok(DinoReport {
        info,
        student_model: cfg.encoder.name().to_string(),
        alpha: cfg.alpha,
        out_dim: cfg.out_dim,
        teacher_seed: cfg.teacher_seed,
        student_seed: cfg.student_seed,
        epochs: history.len() - 1,
        stopped_early,
        losses,
        kls,
        history,
        probes: probes_summary,
        wall_s: start.elapsed().as_secs_f64(),
        train_s,
        images_per_s: if train_s > 0.0 { images as f64 / train_s } else { f64::NAN },
        cache_s,
    })
}

/// Where the distillation loop is: everything beyond the student, optimiser and center
/// that a checkpoint must hold to continue bit for bit.
struct LoopState {
    /// The 1-based epoch in progress (`cursor` steps of it done).
    epoch: usize,
    cursor: usize,
    /// Steps done in all.
    step: usize,
    /// The batch-order stream before the permutation of `epoch` was drawn.
    epoch_rng: Rng,
    /// Sums over the steps of `epoch` so far.
    ep_loss: f64,
    ep_kl: f64,
    /// Per-step losses and KLs, and the records of every completed epoch (and epoch 0).
    losses: Vec<f32>,
    kls: Vec<f64>,
    history: Vec<EpochRecord>,
}

/// The training state handed to [`DinoHooks::on_state`].
pub struct DinoState<'a> {
    pub student: &'a DinoModel,
    pub opt: &'a AdamW,
    pub center: Option<&'a Center>,
    ls: &'a LoopState,
}

/// f64s as JSON integers (their bits), so that they read back bit for bit (NaN too).
fn bits_json(v: impl Iterator<Item = f64>) -> String {
    serde_json::to_string(&v.map(f64::to_bits).collect::<Vec<u64>>()).expect("integers serialise")
}

fn bits_from_json(ck: &Checkpoint, key: &str) -> Result<Vec<f64>> {
    let v: Vec<u64> = serde_json::from_str(ck.meta(key)?).map_err(|e| Error::InvalidArgument {
        op: "checkpoint",
        message: format!("{}: metadata {key:?} is not a list of f64 bit patterns: {e}", ck.source),
    })?;
    Ok(v.into_iter().map(f64::from_bits).collect())
}

/// An [`EpochRecord`]'s numbers, in a fixed order.
fn record_numbers(r: &EpochRecord) -> [f64; 12] {
    [
        r.epoch as f64,
        r.steps as f64,
        r.mean_loss,
        r.mean_kl,
        r.teacher.knn,
        r.teacher.linear,
        r.student.knn,
        r.student.linear,
        r.pixels.knn,
        r.pixels.linear,
        r.train_s,
        r.probe_s,
    ]
}

fn record_from_numbers(v: &[f64]) -> EpochRecord {
    let p = |i: usize| ProbeResult { knn: v[i], linear: v[i + 1] };
    EpochRecord {
        epoch: v[0] as usize,
        steps: v[1] as usize,
        mean_loss: v[2],
        mean_kl: v[3],
        teacher: p(4),
        student: p(6),
        pixels: p(8),
        train_s: v[10],
        probe_s: v[11],
    }
}

impl LoopState {
    fn new(data_seed: u64, epoch0: EpochRecord) -> LoopState {
        LoopState {
            epoch: 1,
            cursor: 0,
            step: 0,
            epoch_rng: Rng::new(data_seed).stream("batches"),
            ep_loss: 0.0,
            ep_kl: 0.0,
            losses: Vec::new(),
            kls: Vec::new(),
            history: vec![epoch0],
        }
    }

    /// Restore the student, optimiser and center from `ck` (validated against the
    /// student) and return the loop's position.
    fn restore(
        ck: &Checkpoint,
        student: &mut DinoModel,
        opt: &mut AdamW,
        center: Option<&mut Center>,
    ) -> Result<LoopState> {
        ck.restore_params(student)?;
        opt.load_state_tensors(&ck.optim)?;
        student.encoder.load_buffers(&|n| ck.extra_state(&format!("encoder.{n}")).ok().map(|t| t.to_vec()))?;
        if let Some(c) = center {
            let t = ck.extra_state("center")?;
            if t.numel() != c.values.len() {
                return Err(Error::InvalidArgument {
                    op: "checkpoint",
                    message: format!("{}: center has {} values, the run {}", ck.source, t.numel(), c.values.len()),
                });
            }
            c.values = t.to_vec();
        }
        let num = |key: &str| -> Result<usize> {
            ck.meta(key)?.parse().map_err(|_| Error::InvalidArgument {
                op: "checkpoint",
                message: format!("{}: metadata {key:?} is not a whole number", ck.source),
            })
        };
        let sums = bits_from_json(ck, "epoch_sums")?;
        let hist = bits_from_json(ck, "history")?;
        let losses = bits_from_json(ck, "losses")?;
        let kls = bits_from_json(ck, "kls")?;
        if sums.len() != 2 || hist.len() % 12 != 0 || losses.len() != kls.len() || losses.len() != ck.step as usize {
            return Err(Error::InvalidArgument {
                op: "checkpoint",
                message: format!("{}: inconsistent DINO loop state", ck.source),
            });
        }
        Ok(LoopState {
            epoch: num("epoch")?,
            cursor: ck.cursor as usize,
            step: ck.step as usize,
            epoch_rng: ck.rng("batches")?,
            ep_loss: sums[0],
            ep_kl: sums[1],
            losses: losses.into_iter().map(|l| l as f32).collect(),
            kls,
            history: hist.chunks(12).map(record_from_numbers).collect(),
        })
    }
}

impl DinoState<'_> {
    /// Steps done in all (the checkpoint's step).
    pub fn step(&self) -> u64 {
        self.ls.step as u64
    }
    /// The 1-based epoch in progress (the next one at an epoch boundary).
    pub fn epoch(&self) -> usize {
        self.ls.epoch
    }
    /// Add everything needed to continue the run to `ck`: student parameters, AdamW
    /// moments and step, the center, the batch-order stream with the epoch and the
    /// position in it (cursor), the per-step losses and the epoch records.
    pub fn save(&self, mut ck: Checkpoint) -> Checkpoint {
        use crate::nn::Module;
        for (name, p) in self.student.params() {
            // GPU parameters are read back here, explicitly (a failed readback panics
            // like `Tensor::to_vec`).
            let host = if p.device() == Device::Cpu {
                p.clone()
            } else {
                p.detach().to_device(Device::Cpu).unwrap_or_else(|e| panic!("{name}: {e}"))
            };
            ck = ck.with_param(name, &host);
        }
        for (name, t) in self.opt.state_tensors() {
            ck = ck.with_optim(name, &t);
        }
        // Batch-norm running statistics (ResNet students): state, not parameters.
        for (name, b) in self.student.encoder.buffers() {
            ck = ck.with_extra(format!("encoder.{name}"), &b);
        }
        if let Some(c) = self.center {
            let n = c.values.len();
            ck = ck.with_extra("center", &Tensor::from_vec(c.values.clone(), [n]).expect("n values"));
        }
        let ls = self.ls;
        ck.with_rng("batches", &ls.epoch_rng)
            .with_cursor(ls.cursor as u64)
            .with_meta("epoch", ls.epoch.to_string())
            .with_meta("epoch_sums", bits_json([ls.ep_loss, ls.ep_kl].into_iter()))
            .with_meta("losses", bits_json(ls.losses.iter().map(|&l| l as f64)))
            .with_meta("kls", bits_json(ls.kls.iter().copied()))
            .with_meta("history", bits_json(ls.history.iter().flat_map(record_numbers)))
    }
}

impl DinoReport {
    /// The largest batch KL of the run and its step (the student starts at the teacher,
    /// so the KL first grows, then falls as the student fits).
    pub fn kl_peak(&self) -> Option<(usize, f64)> {
        self.kls.iter().copied().enumerate().filter(|(_, k)| k.is_finite()).max_by(|a, b| a.1.total_cmp(&b.1))
    }
    /// Mean batch KL of the last completed epoch.
    pub fn kl_final(&self) -> f64 {
        self.history.last().map_or(f64::NAN, |h| h.mean_kl)
    }
}

/// Timing of the distillation step alone, on random images.
#[derive(Clone, Debug, PartialEq)]
pub struct StepBench {
    pub student_model: String,
    pub batch_size: usize,
    pub out_dim: usize,
    pub params: usize,
    /// Per timed step, seconds.
    pub step_s: Vec<f64>,
    pub median_s: f64,
    pub images_per_s: f64,
    /// Median seconds of the AdamW update inside a step.
    pub median_optimizer_s: f64,
}

/// Time `steps` distillation steps (after `warmup` untimed ones) of the `encoder`
/// student with the paper's head and output dimension `out_dim`, batch `batch`, on
/// N(0, 1) images. The step is what [`train_dino`] runs with the teacher cache on:
/// teacher logits from cached bottleneck outputs, student forward and backward through
/// the cross-entropy, one AdamW update; the f64 KL log is left out (as in the JAX peer).
pub fn bench_distill_step(
    encoder: &EncoderConfig,
    out_dim: usize,
    batch: usize,
    warmup: usize,
    steps: usize,
) -> Result<StepBench> {
    bench_distill_step_on(Device::Cpu, encoder, out_dim, batch, warmup, steps)
}

/// [`bench_distill_step`] with the step on `device` (the batch is uploaded once).
pub fn bench_distill_step_on(
    device: Device,
    encoder: &EncoderConfig,
    out_dim: usize,
    batch: usize,
    warmup: usize,
    steps: usize,
) -> Result<StepBench> {
    let cfg = DinoConfig { encoder: encoder.clone(), out_dim, alpha: 0.5, device, ..DinoConfig::default() };
    cfg.validate()?;
    let (teacher, mut student, _) = build_models(&cfg)?;
    let set = gaussian_noise_images(batch, 7)?;
    let idx: Vec<usize> = (0..batch).collect();
    let cache = teacher_cache(&teacher, &set)?;
    let x = set.batch(&idx)?.to_device(device)?;
    let teacher = model_on(&teacher, device)?;
    crate::nn::to_device(&mut student, device)?;
    let mut opt = AdamW::with_groups(AdamWConfig::default(), method::param_groups(&student, cfg.wd_1d))?;
    let (mut step_s, mut opt_s) = (Vec::with_capacity(steps), Vec::with_capacity(steps));
    for i in 0..warmup + steps {
        let t = Instant::now();
        let t_logits = teacher_logits(&teacher, Some(&cache), &x, &idx)?;
        let (_, _, o) =
            distill_step(&mut student, &mut opt, &x, &t_logits, &cfg.loss, None, 1e-4, false, i as u64 + 1)?;
        if i >= warmup {
            step_s.push(t.elapsed().as_secs_f64());
            opt_s.push(o);
        }
    }
    let median = |v: &[f64]| {
        let mut sorted = v.to_vec();
        sorted.sort_by(f64::total_cmp);
        if sorted.is_empty() { f64::NAN } else { sorted[sorted.len() / 2] }
    };
    let median_s = median(&step_s);
    Ok(StepBench {
        student_model: encoder.name().to_string(),
        batch_size: batch,
        out_dim,
        params: num_params(&student),
        step_s,
        median_s,
        images_per_s: batch as f64 / median_s,
        median_optimizer_s: median(&opt_s),
    })
}
