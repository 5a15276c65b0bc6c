//! Probes of frozen features (spec §5): k-NN and a linear classifier, both trained on
//! training-split features and scored by top-1 accuracy on test-split features.
//!
//! * **k-NN** (k = 20): exact L2 distances `‖a‖² − 2a·b + ‖b‖²` by GEMM on the raw
//!   features, unweighted majority vote, ties broken toward the smallest label
//!   (`KnnVote::L2Majority`, the reference's rule). `KnnVote::CosineWeighted` is DINO's
//!   evaluation: L2-normalised features, the k most similar, votes weighted by
//!   `exp(cos/T)` with T = 0.07. Equal distances are ordered by training index.
//! * **Linear**: `Linear(E → C)` with weight and bias `U(±1/√E)`, AdamW with PyTorch's
//!   defaults (lr 1e-3, β (0.9, 0.999), eps 1e-8, wd 0.01), 10 epochs of cross-entropy
//!   in batches of 256 whose composition and order are shuffled once and then kept.
//!   Optionally on standardised features (train mean and unbiased std per dimension;
//!   a std below 10·ε_f32 counts as 1).

use crate::autograd::no_grad;
use crate::error::{Error, Result};
use crate::nn::{Linear, Module};
use crate::ops::fused::CrossEntropyOpts;
use crate::optim::{AdamW, AdamWConfig, Optimizer};
use crate::rng::Rng;
use crate::tensor::Tensor;
use rayon::prelude::*;

/// How the k nearest neighbours vote.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KnnVote {
    /// L2 distance on raw features, one vote each, ties toward the smallest label.
    L2Majority,
    /// Cosine similarity, votes weighted by `exp(cos / temperature)`.
    CosineWeighted { temperature: f32 },
}

impl KnnVote {
    /// `l2_majority` or `cosine_weighted` (T = 0.07).
    pub fn parse(s: &str) -> Result<KnnVote> {
        match s {
            "l2_majority" | "l2" => Ok(KnnVote::L2Majority),
            "cosine_weighted" | "cosine" => Ok(KnnVote::CosineWeighted { temperature: 0.07 }),
            _ => Err(Error::InvalidArgument {
                op: "KnnVote::parse",
                message: format!("{s:?} is not l2_majority or cosine_weighted"),
            }),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            KnnVote::L2Majority => "l2_majority",
            KnnVote::CosineWeighted { .. } => "cosine_weighted",
        }
    }
}

/// Features of `n` examples (`[n, dim]` row-major) with their labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Features {
    pub data: Vec<f32>,
    pub labels: Vec<usize>,
    pub dim: usize,
}

impl Features {
    pub fn new(data: Vec<f32>, labels: Vec<usize>, dim: usize) -> Result<Features> {
        if dim == 0 || data.len() != labels.len() * dim {
            return Err(Error::InvalidArgument {
                op: "Features::new",
                message: format!("{} values for {} labels of dimension {dim}", data.len(), labels.len()),
            });
        }
        Ok(Features { data, labels, dim })
    }
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// Row `i` (panics when out of range).
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

fn check_pair(op: &'static str, train: &Features, test: &Features, classes: usize) -> Result<()> {
    if train.dim != test.dim || train.is_empty() || classes == 0 {
        return Err(Error::InvalidArgument {
            op,
            message: format!(
                "train ({} x {}) and test ({} x {}) need the same dimension, a non-empty train set and classes > 0",
                train.len(),
                train.dim,
                test.len(),
                test.dim
            ),
        });
    }
    if let Some(&l) = train.labels.iter().chain(&test.labels).find(|&&l| l >= classes) {
        return Err(Error::InvalidArgument { op, message: format!("label {l} outside 0..{classes}") });
    }
    Ok(())
}

fn l2_normalized(f: &Features) -> Vec<f32> {
    let mut out = f.data.clone();
    for r in out.chunks_exact_mut(f.dim) {
        let n = r.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt().max(1e-12);
        r.iter_mut().for_each(|v| *v = (*v as f64 / n) as f32);
    }
    out
}

/// Test rows per GEMM chunk (bounds the `[chunk, n_train]` score matrix).
const KNN_CHUNK: usize = 256;

/// Predicted labels of the `test` rows by their `k` nearest `train` rows.
pub fn knn_predict(train: &Features, test: &Features, k: usize, classes: usize, vote: KnnVote) -> Result<Vec<usize>> {
    check_pair("knn_predict", train, test, classes)?;
    if k == 0 {
        return Err(Error::InvalidArgument { op: "knn_predict", message: "k must be at least 1".into() });
    }
    let k = k.min(train.len());
    let (n, d) = (train.len(), train.dim);
    let (tr, te) = match vote {
        KnnVote::L2Majority => (train.data.clone(), test.data.clone()),
        KnnVote::CosineWeighted { .. } => (l2_normalized(train), l2_normalized(test)),
    };
    let sq_norm = |r: &[f32]| r.iter().map(|&v| v as f64 * v as f64).sum::<f64>();
    let train_sq: Vec<f64> = tr.chunks_exact(d).map(sq_norm).collect();
    let train_t = Tensor::from_vec(tr, [n, d])?.t()?;
    let mut preds = Vec::with_capacity(test.len());
    no_grad(|| -> Result<()> {
        for start in (0..test.len()).step_by(KNN_CHUNK) {
            let rows = KNN_CHUNK.min(test.len() - start);
            let chunk = Tensor::from_slice(&te[start * d..(start + rows) * d], [rows, d])?;
            let scores = chunk.matmul(&train_t)?; // [rows, n] of a·b
            let s = scores.contiguous_data();
            let chunk_preds: Vec<usize> = (0..rows)
                .into_par_iter()
                .map(|r| {
                    let dots = &s[r * n..(r + 1) * n];
                    // Smaller key = nearer: L2 distance, or negated similarity.
                    let mut cand: Vec<(f64, usize)> = match vote {
                        KnnVote::L2Majority => {
                            let a_sq = sq_norm(&te[(start + r) * d..(start + r + 1) * d]);
                            dots.iter().enumerate().map(|(j, &ab)| (a_sq - 2.0 * ab as f64 + train_sq[j], j)).collect()
                        }
                        KnnVote::CosineWeighted { .. } => {
                            dots.iter().enumerate().map(|(j, &ab)| (-(ab as f64), j)).collect()
                        }
                    };
                    let by = |a: &(f64, usize), b: &(f64, usize)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
                    if k < cand.len() {
                        cand.select_nth_unstable_by(k - 1, by);
                        cand.truncate(k);
                    }
                    let mut votes = vec![0.0f64; classes];
                    for &(key, j) in &cand {
                        votes[train.labels[j]] += match vote {
                            KnnVote::L2Majority => 1.0,
                            KnnVote::CosineWeighted { temperature } => (-key / temperature as f64).exp(),
                        };
                    }
                    // First maximum = smallest label among ties.
                    let mut best = 0;
                    for (c, &v) in votes.iter().enumerate() {
                        if v > votes[best] {
                            best = c;
                        }
                    }
                    best
                })
                .collect();
            preds.extend(chunk_preds);
        }
        Ok(())
    })?;
    Ok(preds)
}

/// Percentage of `labels` equal to `preds`.
pub fn accuracy_percent(preds: &[usize], labels: &[usize]) -> f64 {
    if labels.is_empty() {
        return f64::NAN;
    }
    100.0 * preds.iter().zip(labels).filter(|(p, l)| p == l).count() as f64 / labels.len() as f64
}

/// k-NN top-1 test accuracy in percent.
pub fn knn_accuracy(train: &Features, test: &Features, k: usize, classes: usize, vote: KnnVote) -> Result<f64> {
    Ok(accuracy_percent(&knn_predict(train, test, k, classes, vote)?, &test.labels))
}

/// Settings of [`linear_probe`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinearProbeConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f32,
    pub weight_decay: f32,
    /// Standardise features with the training split's statistics first.
    pub standardize: bool,
}

impl Default for LinearProbeConfig {
    fn default() -> Self {
        LinearProbeConfig { epochs: 10, batch_size: 256, lr: 1e-3, weight_decay: 0.01, standardize: false }
    }
}

/// Per-dimension mean and unbiased std of the training rows (std < 10·ε → 1).
fn standardizer(f: &Features) -> (Vec<f64>, Vec<f64>) {
    let (n, d) = (f.len(), f.dim);
    let mut mean = vec![0.0f64; d];
    for r in f.data.chunks_exact(d) {
        mean.iter_mut().zip(r).for_each(|(m, &v)| *m += v as f64);
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let mut var = vec![0.0f64; d];
    for r in f.data.chunks_exact(d) {
        var.iter_mut().zip(r).zip(&mean).for_each(|((s, &v), m)| *s += (v as f64 - m).powi(2));
    }
    let tiny = 10.0 * f32::EPSILON as f64;
    let std = var.iter().map(|s| (s / (n.max(2) - 1) as f64).sqrt()).map(|s| if s < tiny { 1.0 } else { s }).collect();
    (mean, std)
}

fn apply_standardizer(data: &[f32], d: usize, (mean, std): &(Vec<f64>, Vec<f64>)) -> Vec<f32> {
    data.chunks_exact(d)
        .flat_map(|r| r.iter().zip(mean.iter().zip(std)).map(|(&v, (m, s))| ((v as f64 - m) / s) as f32))
        .collect()
}

/// Train a linear classifier on `train` and return its top-1 accuracy on `test`, in
/// percent. `seed` draws the initialisation and the batch order.
pub fn linear_probe(
    train: &Features,
    test: &Features,
    classes: usize,
    cfg: &LinearProbeConfig,
    seed: u64,
) -> Result<f64> {
    check_pair("linear_probe", train, test, classes)?;
    if cfg.epochs == 0 || cfg.batch_size == 0 {
        return Err(Error::InvalidArgument {
            op: "linear_probe",
            message: format!("need epochs and batch size >= 1, got {cfg:?}"),
        });
    }
    let d = train.dim;
    let (tr, te) = if cfg.standardize {
        let st = standardizer(train);
        (apply_standardizer(&train.data, d, &st), apply_standardizer(&test.data, d, &st))
    } else {
        (train.data.clone(), test.data.clone())
    };
    let root = Rng::new(seed);
    let mut init = root.stream("linear-probe-init");
    let bound = 1.0 / (d as f32).sqrt();
    let w = crate::init::uniform([d, classes], -bound, bound, &mut init);
    let b = crate::init::uniform([classes], -bound, bound, &mut init);
    let mut model = Linear::from_tensors(w, Some(b))?;
    let mut opt = AdamW::new(AdamWConfig { weight_decay: cfg.weight_decay, ..AdamWConfig::default() })?;
    // Batches are drawn once and kept, composition and order, for every epoch.
    let order = root.stream("linear-probe-batches").permutation(train.len());
    let batches: Vec<(Tensor, Vec<usize>)> = order
        .chunks(cfg.batch_size)
        .map(|idx| {
            let x: Vec<f32> = idx.iter().flat_map(|&i| tr[i * d..(i + 1) * d].iter().copied()).collect();
            Ok((Tensor::from_vec(x, [idx.len(), d])?, idx.iter().map(|&i| train.labels[i]).collect()))
        })
        .collect::<Result<_>>()?;
    for _ in 0..cfg.epochs {
        for (x, y) in &batches {
            let loss = model.forward(x)?.cross_entropy(y, CrossEntropyOpts::default())?;
            model.zero_grad();
            loss.backward()?;
            drop(loss);
            opt.step(&mut model, cfg.lr)?;
        }
    }
    if test.is_empty() {
        return Ok(f64::NAN);
    }
    let preds = no_grad(|| model.forward(&Tensor::from_vec(te, [test.len(), d])?)?.argmax_indices(-1))?;
    Ok(accuracy_percent(&preds, &test.labels))
}

/// Accuracies (percent) of both probes on one kind of features.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProbeResult {
    pub knn: f64,
    pub linear: f64,
}

/// Settings shared by every probe of a run (identical for teacher, student, pixels).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProbeConfig {
    pub k: usize,
    pub vote: KnnVote,
    pub linear: LinearProbeConfig,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig { k: 20, vote: KnnVote::L2Majority, linear: LinearProbeConfig::default() }
    }
}

/// Both probes on one pair of feature sets.
pub fn probe(train: &Features, test: &Features, classes: usize, cfg: &ProbeConfig, seed: u64) -> Result<ProbeResult> {
    Ok(ProbeResult {
        knn: knn_accuracy(train, test, cfg.k, classes, cfg.vote)?,
        linear: linear_probe(train, test, classes, &cfg.linear, seed)?,
    })
}
