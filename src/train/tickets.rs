//! Supervised analyses of a (distilled) encoder, against a random initialisation of the
//! same architecture (the paper's lottery-ticket and linear-mode-connectivity findings,
//! spec §1, §7):
//!
//! * **Lottery tickets** ([`lottery_tickets`]): iterative magnitude pruning with
//!   rewinding to the start θ₀. Round r trains `encoder + Linear(E→C)` supervised from
//!   `θ₀ ⊙ mask_r`, records test accuracy, then removes the `prune` fraction (20 %) of
//!   the surviving conv weights with the smallest magnitude (global over layers; biases,
//!   BN and the classifier are never pruned). Each round also probes the rewound sparse
//!   encoder `θ₀ ⊙ mask_r` (k-NN and linear, spec §5): how much of the start's feature
//!   quality survives at that sparsity.
//! * **Linear mode connectivity** ([`linear_mode_connectivity`]): two children of one
//!   parent θ₀ are trained supervised with different data orders; test loss and accuracy
//!   are evaluated along `θ(λ) = (1 − λ)·θ_a + λ·θ_b`. The barrier is
//!   `max_λ [L(λ) − ((1 − λ)·L(0) + λ·L(1))]` (and likewise for the error in %). BN
//!   running statistics are interpolated like the parameters.
//!
//! Training: AdamW (no weight decay), constant lr, batches in a fresh order per epoch from
//! the child's own seed; the classifier's initialisation is the same for every start and
//! round (`Rng::new(seed).stream("classifier")`).

use crate::data::ImageSet;
use crate::dino::probes::{self, Features, ProbeConfig, ProbeResult};
use crate::dino::{Encoder, EncoderConfig};
use crate::error::{Error, Result};
use crate::nn::{Linear, Module, prefixed};
use crate::ops::fused::CrossEntropyOpts;
use crate::optim::{AdamW, AdamWConfig, Optimizer};
use crate::rng::Rng;
use crate::run::Checkpoint;
use crate::tensor::Tensor;
use crate::train::dino::{DataChoice, DinoConfig, load_data, map_batches};
use serde_json::{Value, json};
use std::path::Path;

/// What the analyses train and evaluate on.
#[derive(Clone, Debug, PartialEq)]
pub struct AnalysisConfig {
    pub encoder: EncoderConfig,
    pub data: DataChoice,
    pub data_seed: u64,
    /// Balanced training subset (supervised training and probe fitting).
    pub train_size: Option<usize>,
    /// Balanced test subset.
    pub test_size: Option<usize>,
    /// Supervised epochs per training.
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f32,
    /// Seeds the classifier, the random start and the data orders.
    pub seed: u64,
    pub probe: ProbeConfig,
}

impl AnalysisConfig {
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 || self.batch_size == 0 || !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::InvalidArgument {
                op: "analysis config",
                message: format!(
                    "need epochs, batch size >= 1 and lr > 0, got {}, {}, {}",
                    self.epochs, self.batch_size, self.lr
                ),
            });
        }
        Ok(())
    }
}

/// Training and test images.
pub struct Splits {
    pub train: ImageSet,
    pub test: ImageSet,
}

pub fn load_splits(cfg: &AnalysisConfig) -> Result<Splits> {
    let dc = DinoConfig {
        data: cfg.data.clone(),
        data_seed: cfg.data_seed,
        train_size: cfg.train_size,
        probe_train_size: cfg.train_size,
        probe_test_size: cfg.test_size,
        ..DinoConfig::default()
    };
    let d = load_data(&dc)?;
    Ok(Splits { train: d.probe_train, test: d.probe_test })
}

/// The encoder of a `fixpoint dino` checkpoint (parameters `encoder.*` and, for BN
/// encoders, `encoder.*.running_{mean,var}`), built with the architecture `cfg`.
pub fn encoder_from_checkpoint(cfg: &EncoderConfig, path: &Path) -> Result<Encoder> {
    let ck = Checkpoint::load(path)?;
    let mut enc = Encoder::new(cfg, &mut Rng::new(0))?;
    for (name, p) in enc.params_mut() {
        let t = ck.param(&format!("encoder.{name}"))?;
        if t.shape() != p.shape() {
            return Err(Error::ShapeMismatch {
                op: "encoder_from_checkpoint (saved vs architecture)",
                lhs: t.shape_obj().clone(),
                rhs: p.shape_obj().clone(),
            });
        }
        p.assign(t)?;
    }
    enc.load_buffers(&|n| ck.extra_state(&format!("encoder.{n}")).ok().map(|t| t.to_vec()))?;
    Ok(enc)
}

/// A fresh initialisation of `cfg` from `Rng::new(seed).stream("random-start")`.
pub fn random_encoder(cfg: &EncoderConfig, seed: u64) -> Result<Encoder> {
    Encoder::new(cfg, &mut Rng::new(seed).stream("random-start"))
}

/// `encoder → Linear(E → classes)`. Parameters `encoder.*`, `fc.*`.
#[derive(Clone, Debug)]
pub struct Classifier {
    pub encoder: Encoder,
    pub fc: Linear,
}

impl Classifier {
    pub fn new(encoder: Encoder, classes: usize, seed: u64) -> Classifier {
        let fc = Linear::new(encoder.embed_dim(), classes, true, &mut Rng::new(seed).stream("classifier"));
        Classifier { encoder, fc }
    }
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fc.forward(&self.encoder.forward(x)?)
    }
}

impl Module for Classifier {
    fn params(&self) -> Vec<(String, &Tensor)> {
        prefixed("encoder", self.encoder.params()).chain(prefixed("fc", self.fc.params())).collect()
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        prefixed("encoder", self.encoder.params_mut()).chain(prefixed("fc", self.fc.params_mut())).collect()
    }
    fn train(&mut self, training: bool) {
        self.encoder.train(training);
    }
}

/// Per prunable parameter (index into `params()`, ≥2-D encoder weights): a 0/1 mask.
pub type Masks = Vec<(usize, Vec<f32>)>;

/// All-ones masks over the encoder's ≥2-D weights of `model`.
pub fn full_masks(model: &Classifier) -> Masks {
    model
        .params()
        .iter()
        .enumerate()
        .filter(|(_, (n, p))| n.starts_with("encoder.") && p.rank() >= 2)
        .map(|(i, (_, p))| (i, vec![1.0; p.numel()]))
        .collect()
}

/// Zero the masked-out weights of `model`.
pub fn apply_masks(model: &mut Classifier, masks: &Masks) {
    let mut params = model.params_mut();
    for (i, m) in masks {
        params[*i].1.update_data(|d| d.iter_mut().zip(m).for_each(|(v, k)| *v *= k));
    }
}

/// Fraction of masked-out weights.
pub fn sparsity(masks: &Masks) -> f64 {
    let total: usize = masks.iter().map(|(_, m)| m.len()).sum();
    let zeros: usize = masks.iter().map(|(_, m)| m.iter().filter(|&&k| k == 0.0).count()).sum();
    zeros as f64 / total.max(1) as f64
}

/// Remove `frac` of the surviving weights with the smallest |value| in `model` (global
/// over all masks; ties broken by position).
pub fn prune_global(model: &Classifier, masks: &mut Masks, frac: f64) {
    let params = model.params();
    let mut alive: Vec<(f32, usize, usize)> = Vec::new();
    for (mi, (pi, m)) in masks.iter().enumerate() {
        let v = params[*pi].1.to_vec();
        alive.extend(m.iter().zip(&v).enumerate().filter(|(_, (k, _))| **k != 0.0).map(|(j, (_, w))| (w.abs(), mi, j)));
    }
    let k = ((alive.len() as f64) * frac).round() as usize;
    if k == 0 {
        return;
    }
    let by = |a: &(f32, usize, usize), b: &(f32, usize, usize)| a.0.total_cmp(&b.0).then((a.1, a.2).cmp(&(b.1, b.2)));
    alive.select_nth_unstable_by(k - 1, by);
    for &(_, mi, j) in &alive[..k] {
        masks[mi].1[j] = 0.0;
    }
}

/// Train `model` supervised on `set` for `cfg.epochs` epochs (batch order from
/// `order_seed`), keeping `masks` applied after every update.
pub fn train_supervised(
    model: &mut Classifier,
    set: &ImageSet,
    cfg: &AnalysisConfig,
    order_seed: u64,
    masks: Option<&Masks>,
) -> Result<()> {
    let mut opt = AdamW::new(AdamWConfig { weight_decay: 0.0, ..AdamWConfig::default() })?;
    let mut order = Rng::new(order_seed).stream("order");
    if let Some(m) = masks {
        apply_masks(model, m);
    }
    for _ in 0..cfg.epochs {
        for idx in order.permutation(set.len()).chunks(cfg.batch_size) {
            let x = set.batch(idx)?;
            model.train(true);
            let logits = model.forward(&x);
            model.train(false);
            let loss = logits?.cross_entropy(&set.labels_of(idx), CrossEntropyOpts::default())?;
            if !loss.item()?.is_finite() {
                return Err(Error::InvalidArgument {
                    op: "train_supervised",
                    message: "the loss is not finite; lower --lr".into(),
                });
            }
            model.zero_grad();
            loss.backward()?;
            opt.step(model, cfg.lr)?;
            if let Some(m) = masks {
                apply_masks(model, m);
            }
        }
    }
    Ok(())
}

/// (mean cross-entropy, accuracy %) of `model` on `set` (eval mode).
pub fn evaluate(model: &Classifier, set: &ImageSet) -> Result<(f64, f64)> {
    let (logits, c) = map_batches(set, |x| model.forward(x))?;
    let (mut loss, mut correct) = (0.0f64, 0usize);
    for (row, &y) in logits.chunks_exact(c).zip(&set.labels) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = max + row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
        loss += lse - row[y] as f64;
        let arg = row.iter().enumerate().fold(0, |b, (i, &v)| if v > row[b] { i } else { b });
        correct += usize::from(arg == y);
    }
    let n = set.len().max(1) as f64;
    Ok((loss / n, 100.0 * correct as f64 / n))
}

/// k-NN and linear probes of `encoder`'s embeddings.
pub fn probe_encoder(encoder: &Encoder, s: &Splits, cfg: &AnalysisConfig) -> Result<ProbeResult> {
    let feats = |set: &ImageSet| -> Result<Features> {
        let (d, dim) = map_batches(set, |x| encoder.forward(x))?;
        Features::new(d, set.labels.clone(), dim)
    };
    probes::probe(&feats(&s.train)?, &feats(&s.test)?, s.train.classes, &cfg.probe, cfg.seed)
}

/// One IMP round.
#[derive(Clone, Debug, PartialEq)]
pub struct TicketRound {
    pub round: usize,
    /// Percentage of prunable weights removed.
    pub sparsity: f64,
    /// Probes of the rewound sparse encoder θ₀ ⊙ mask.
    pub probe: ProbeResult,
    /// Test accuracy and loss after supervised training of the sparse network.
    pub test_accuracy: f64,
    pub test_loss: f64,
}

/// IMP with rewinding from `start`, `rounds` pruning rounds (so `rounds + 1` trainings).
pub fn lottery_tickets(
    cfg: &AnalysisConfig,
    s: &Splits,
    start: &Encoder,
    rounds: usize,
    prune: f64,
    mut on_round: impl FnMut(&TicketRound),
) -> Result<Vec<TicketRound>> {
    cfg.validate()?;
    if !(0.0..1.0).contains(&prune) {
        return Err(Error::InvalidArgument { op: "lottery_tickets", message: format!("prune {prune} not in [0, 1)") });
    }
    let theta0 = Classifier::new(start.clone(), s.train.classes, cfg.seed);
    let mut masks = full_masks(&theta0);
    let mut out = Vec::new();
    for round in 0..=rounds {
        let mut model = theta0.clone();
        apply_masks(&mut model, &masks);
        let probe = probe_encoder(&model.encoder, s, cfg)?;
        train_supervised(&mut model, &s.train, cfg, cfg.seed.wrapping_add(1000 + round as u64), Some(&masks))?;
        let (test_loss, test_accuracy) = evaluate(&model, &s.test)?;
        let r = TicketRound { round, sparsity: 100.0 * sparsity(&masks), probe, test_accuracy, test_loss };
        on_round(&r);
        out.push(r);
        if round < rounds {
            prune_global(&model, &mut masks, prune);
        }
    }
    Ok(out)
}

/// Linear interpolation `(1 − λ)·a + λ·b` of two models (parameters and BN statistics).
pub fn interpolate_models(a: &Classifier, b: &Classifier, lambda: f64) -> Result<Classifier> {
    let mut m = a.clone();
    let bp = b.params();
    let lerp = |x: &[f32], y: &[f32]| -> Vec<f32> {
        x.iter().zip(y).map(|(&p, &q)| ((1.0 - lambda) * p as f64 + lambda * q as f64) as f32).collect()
    };
    for ((_, p), (_, q)) in m.params_mut().into_iter().zip(&bp) {
        let v = lerp(&p.contiguous_data(), &q.contiguous_data());
        let shape = p.shape().to_vec();
        p.assign(&Tensor::from_vec(v, shape)?)?;
    }
    let (ba, bb) = (a.encoder.buffers(), b.encoder.buffers());
    m.encoder.load_buffers(&|n| {
        let x = ba.iter().find(|(k, _)| k == n)?.1.to_vec();
        let y = bb.iter().find(|(k, _)| k == n)?.1.to_vec();
        Some(lerp(&x, &y))
    })?;
    Ok(m)
}

/// Loss and accuracy along the line between two children of one parent.
#[derive(Clone, Debug, PartialEq)]
pub struct LmcReport {
    pub lambdas: Vec<f64>,
    pub test_loss: Vec<f64>,
    pub test_accuracy: Vec<f64>,
    /// `max_λ [L(λ) − ((1 − λ)L(0) + λL(1))]`.
    pub loss_barrier: f64,
    /// The same for the test error in percent.
    pub error_barrier: f64,
}

/// The barrier of `ys` over `xs` ∈ [0, 1] (linear baseline between the end points).
pub fn barrier(xs: &[f64], ys: &[f64]) -> f64 {
    let (y0, y1) = (ys[0], ys[ys.len() - 1]);
    xs.iter().zip(ys).map(|(&l, &y)| y - ((1.0 - l) * y0 + l * y1)).fold(f64::NEG_INFINITY, f64::max)
}

/// Train two children of `parent` (data orders from `seed + 1`, `seed + 2`) and evaluate
/// `points` models along the line between them.
pub fn linear_mode_connectivity(
    cfg: &AnalysisConfig,
    s: &Splits,
    parent: &Encoder,
    points: usize,
) -> Result<LmcReport> {
    cfg.validate()?;
    if points < 2 {
        return Err(Error::InvalidArgument {
            op: "linear_mode_connectivity",
            message: "need at least 2 points".into(),
        });
    }
    let p = Classifier::new(parent.clone(), s.train.classes, cfg.seed);
    let mut children = Vec::new();
    for c in 1..=2u64 {
        let mut m = p.clone();
        train_supervised(&mut m, &s.train, cfg, cfg.seed.wrapping_add(c), None)?;
        children.push(m);
    }
    let lambdas: Vec<f64> = (0..points).map(|i| i as f64 / (points - 1) as f64).collect();
    let (mut test_loss, mut test_accuracy) = (Vec::new(), Vec::new());
    for &l in &lambdas {
        let (loss, acc) = evaluate(&interpolate_models(&children[0], &children[1], l)?, &s.test)?;
        test_loss.push(loss);
        test_accuracy.push(acc);
    }
    let err: Vec<f64> = test_accuracy.iter().map(|a| 100.0 - a).collect();
    Ok(LmcReport {
        loss_barrier: barrier(&lambdas, &test_loss),
        error_barrier: barrier(&lambdas, &err),
        lambdas,
        test_loss,
        test_accuracy,
    })
}

pub fn tickets_json(rounds: &[TicketRound]) -> Value {
    json!(
        rounds
            .iter()
            .map(|r| json!({
                "round": r.round, "sparsity": r.sparsity, "probe_knn": r.probe.knn, "probe_linear": r.probe.linear,
                "test_accuracy": r.test_accuracy, "test_loss": r.test_loss,
            }))
            .collect::<Vec<_>>()
    )
}

pub fn lmc_json(r: &LmcReport) -> Value {
    json!({
        "lambdas": r.lambdas, "test_loss": r.test_loss, "test_accuracy": r.test_accuracy,
        "loss_barrier": r.loss_barrier, "error_barrier": r.error_barrier,
    })
}

/// Arguments of `fixpoint tickets` and `fixpoint lmc`.
#[derive(clap::Args, Debug, Clone)]
pub struct AnalysisArgs {
    /// A `fixpoint dino` checkpoint of the distilled student (`ckpt-<step>.safetensors`);
    /// without it only the random start is analysed.
    #[arg(long)]
    pub checkpoint: Option<std::path::PathBuf>,
    /// Skip the random-initialisation comparison.
    #[arg(long)]
    pub no_random: bool,
    /// vgg11 or resnet18 (the checkpoint's architecture).
    #[arg(long, default_value = "vgg11")]
    pub student: String,
    #[arg(long, default_value_t = 0.25)]
    pub width_mult: f64,
    /// fashion-mnist (default when installed) or embedded (synthetic: no paper claim).
    #[arg(long)]
    pub data: Option<String>,
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
    /// Balanced training subset (supervised training and probes).
    #[arg(long, default_value_t = 10_000)]
    pub train_size: usize,
    #[arg(long, default_value_t = 2_000)]
    pub test_size: usize,
    /// Supervised epochs per training.
    #[arg(long, default_value_t = 2)]
    pub epochs: usize,
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// tickets: pruning rounds (each removes --prune of the surviving conv weights).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    #[arg(long, default_value_t = 0.2)]
    pub prune: f64,
    /// lmc: points on the line between the children (end points included).
    #[arg(long, default_value_t = 11)]
    pub points: usize,
    /// Output directory (JSON and PNG); default runs/tickets or runs/lmc.
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    /// Print one JSON object as the last line of stdout.
    #[arg(long)]
    pub json: bool,
}

impl AnalysisArgs {
    fn config(&self) -> std::result::Result<AnalysisConfig, String> {
        let cc = crate::dino::ConvNetConfig { width_mult: self.width_mult };
        cc.validate("--width-mult").map_err(|e| e.to_string())?;
        let encoder = match self.student.as_str() {
            "vgg11" => EncoderConfig::Vgg11(cc),
            "resnet18" => EncoderConfig::ResNet18(cc),
            other => return Err(format!("unknown --student {other:?} (vgg11, resnet18)")),
        };
        let data = match self.data.as_deref() {
            None => DataChoice::real_or_embedded(self.data_dir.clone()),
            Some("fashion-mnist") => {
                DataChoice::FashionMnist { dir: self.data_dir.clone(), fit28: crate::data::images::Fit28::Resize }
            }
            Some("embedded") => DataChoice::Embedded(Default::default()),
            Some(other) => return Err(format!("unknown --data {other:?} (fashion-mnist, embedded)")),
        };
        let cfg = AnalysisConfig {
            encoder,
            data,
            data_seed: self.seed,
            train_size: Some(self.train_size),
            test_size: Some(self.test_size),
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr: self.lr,
            seed: self.seed,
            probe: ProbeConfig::default(),
        };
        cfg.validate().map_err(|e| e.to_string())?;
        Ok(cfg)
    }
}

/// `fixpoint tickets` (`lmc = false`) or `fixpoint lmc`: each start (the checkpoint's
/// encoder, a random initialisation), lines on stdout, `tickets.{json,png}` or
/// `lmc.json`, `lmc_loss.png`, `lmc_accuracy.png` in the output directory.
pub fn analysis_cli(a: &AnalysisArgs, lmc: bool) -> std::result::Result<(), String> {
    use crate::run::plot::{LinePlot, Series, lines};
    let e = |e: Error| e.to_string();
    let cfg = a.config()?;
    let mut starts: Vec<(String, Encoder)> = Vec::new();
    if let Some(p) = &a.checkpoint {
        starts.push(("distilled".into(), encoder_from_checkpoint(&cfg.encoder, p).map_err(e)?));
    }
    if !a.no_random {
        starts.push(("random".into(), random_encoder(&cfg.encoder, cfg.seed).map_err(e)?));
    }
    if starts.is_empty() {
        return Err("nothing to analyse: give --checkpoint or drop --no-random".into());
    }
    let kind = if lmc { "lmc" } else { "tickets" };
    let out = a.out.clone().unwrap_or_else(|| Path::new("runs").join(kind));
    std::fs::create_dir_all(&out).map_err(|err| format!("{}: {err}", out.display()))?;
    let t0 = std::time::Instant::now();
    let s = load_splits(&cfg).map_err(e)?;
    println!(
        "{kind}: {} {} on {} train / {} test images, {} epochs per training",
        cfg.encoder.name(),
        a.width_mult,
        s.train.len(),
        s.test.len(),
        cfg.epochs
    );
    let mut results = serde_json::Map::new();
    let (mut p1, mut p2) = (Vec::new(), Vec::new());
    for (name, enc) in &starts {
        if lmc {
            let r = linear_mode_connectivity(&cfg, &s, enc, a.points).map_err(e)?;
            println!(
                "lmc {name}: children {:.2}% / {:.2}%, loss barrier {:.4}, error barrier {:.2} points",
                r.test_accuracy[0],
                r.test_accuracy[r.test_accuracy.len() - 1],
                r.loss_barrier,
                r.error_barrier
            );
            let pts = |ys: &[f64]| r.lambdas.iter().copied().zip(ys.iter().copied()).collect();
            p1.push(Series { label: name.clone(), points: pts(&r.test_loss) });
            p2.push(Series { label: name.clone(), points: pts(&r.test_accuracy) });
            results.insert(name.clone(), lmc_json(&r));
        } else {
            let rounds = lottery_tickets(&cfg, &s, enc, a.rounds, a.prune, |r| {
                println!(
                    "tickets {name} round {}: sparsity {:.1}%  rewound probe knn/linear {:.2}/{:.2}%  trained test {:.2}%",
                    r.round, r.sparsity, r.probe.knn, r.probe.linear, r.test_accuracy
                )
            })
            .map_err(e)?;
            p1.push(Series {
                label: format!("{name}: supervised"),
                points: rounds.iter().map(|r| (r.sparsity, r.test_accuracy)).collect(),
            });
            p1.push(Series {
                label: format!("{name}: linear probe (rewound)"),
                points: rounds.iter().map(|r| (r.sparsity, r.probe.linear)).collect(),
            });
            p1.push(Series {
                label: format!("{name}: k-NN probe (rewound)"),
                points: rounds.iter().map(|r| (r.sparsity, r.probe.knn)).collect(),
            });
            results.insert(name.clone(), tickets_json(&rounds));
        }
    }
    let plot = |file: &str, title: &str, x: &str, y: &str, series: Vec<Series>| -> std::result::Result<(), String> {
        let lp = LinePlot { title: title.into(), x_label: x.into(), y_label: y.into(), log_y: false, series };
        lines(&out.join(file), &lp).map(|_| ()).map_err(e)
    };
    if lmc {
        plot("lmc_loss.png", "linear mode connectivity", "lambda", "test loss", p1)?;
        plot("lmc_accuracy.png", "linear mode connectivity", "lambda", "test accuracy %", p2)?;
    } else {
        plot("tickets.png", "IMP with rewinding", "sparsity % (conv weights)", "accuracy %", p1)?;
    }
    let summary = json!({
        "command": kind, "student": cfg.encoder.name(), "width_mult": a.width_mult, "train_size": s.train.len(),
        "test_size": s.test.len(), "epochs": cfg.epochs, "lr": cfg.lr, "seed": cfg.seed, "rounds": a.rounds,
        "prune": a.prune, "checkpoint": a.checkpoint.as_ref().map(|p| p.display().to_string()),
        "threads": crate::cpu::par::threads(), "wall_s": t0.elapsed().as_secs_f64(), "results": results,
    });
    let file = out.join(format!("{kind}.json"));
    std::fs::write(&file, format!("{summary}\n")).map_err(|err| format!("{}: {err}", file.display()))?;
    println!("{kind}: wrote {} ({:.1} s)", out.display(), t0.elapsed().as_secs_f64());
    if a.json {
        println!("{summary}");
    }
    Ok(())
}
