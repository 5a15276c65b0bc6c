//! TEMP: replaced by ops::fused / ops::index at merge.
//!
//! Minimal stand-ins for the fused and index ops that are being written on other
//! branches, composed from existing primitive ops (elementwise, reduce, matmul) so that
//! `nn` and `train` can be built and tested now. This file is the only place that
//! depends on them: every caller goes through the small wrappers below, whose
//! signatures follow the planned `ops::fused` / `ops::index` ones. At merge each body
//! becomes a call to the real op (or callers switch to it and this file is deleted).
//!
//! Covered: `softmax`, `log_softmax`, `cross_entropy` (+ `CrossEntropyOpts`,
//! `Reduction`), `layer_norm`, `rms_norm`, `dropout`, `embedding`, `mask_future`
//! (the causal mask of attention; `masked_fill(scores, causal_mask(t), -inf)` later).

#![allow(dead_code)] // TEMP: not every stand-in option is used before the merge.

use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::tensor::Tensor;

// TEMP: replaced by ops::fused at merge
/// Softmax along `axis`, as `exp(log_softmax(x))`.
pub(crate) fn softmax(x: &Tensor, axis: isize) -> Result<Tensor> {
    Ok(log_softmax(x, axis)?.exp())
}

// TEMP: replaced by ops::fused at merge
/// `x - logsumexp(x, axis, keepdim)`.
pub(crate) fn log_softmax(x: &Tensor, axis: isize) -> Result<Tensor> {
    x.sub(&x.logsumexp(&[axis], true)?)
}

// TEMP: replaced by ops::fused at merge
/// How per-row losses are combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Reduction {
    /// Mean over the rows that are not ignored.
    #[default]
    Mean,
    Sum,
    /// One loss per row (ignored rows give 0).
    None,
}

// TEMP: replaced by ops::fused at merge
/// Options of [`cross_entropy`], as in `torch.nn.functional.cross_entropy`.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct CrossEntropyOpts {
    pub ignore_index: Option<usize>,
    pub label_smoothing: f32,
    pub reduction: Reduction,
}

// TEMP: replaced by ops::fused at merge
/// Cross-entropy of `logits` `[n, classes]` against class indices, through a constant
/// (smoothed) target distribution: `-Σ_c q_c log_softmax(x)_c` per row.
pub(crate) fn cross_entropy(logits: &Tensor, targets: &[usize], opts: CrossEntropyOpts) -> Result<Tensor> {
    if logits.rank() != 2 || logits.shape()[0] != targets.len() {
        return Err(Error::InvalidArgument {
            op: "cross_entropy",
            message: format!(
                "logits {} need shape [n, classes] with n = {} targets",
                logits.shape_obj(),
                targets.len()
            ),
        });
    }
    let (n, c) = (logits.shape()[0], logits.shape()[1]);
    if !(0.0..=1.0).contains(&opts.label_smoothing) {
        return Err(Error::InvalidArgument {
            op: "cross_entropy",
            message: format!("label_smoothing {} is outside [0, 1]", opts.label_smoothing),
        });
    }
    let eps = opts.label_smoothing;
    let mut q = vec![0.0f32; n * c];
    let mut kept = 0usize;
    for (i, &t) in targets.iter().enumerate() {
        if opts.ignore_index == Some(t) {
            continue;
        }
        if t >= c {
            return Err(Error::Index {
                op: "cross_entropy",
                axis: 1,
                index: t,
                size: c,
                shape: logits.shape_obj().clone(),
            });
        }
        kept += 1;
        for j in 0..c {
            q[i * c + j] = eps / c as f32 + if j == t { 1.0 - eps } else { 0.0 };
        }
    }
    let q = Tensor::from_vec(q, [n, c])?;
    let per_row = log_softmax(logits, -1)?.mul(&q)?.sum(&[-1], false)?.neg();
    match opts.reduction {
        Reduction::None => Ok(per_row),
        Reduction::Sum => Ok(per_row.sum_all()),
        Reduction::Mean => Ok(per_row.sum_all().div_scalar(kept.max(1) as f32)),
    }
}

// TEMP: replaced by ops::fused at merge
/// Layer normalisation over the last axis, with optional affine weight and bias.
pub(crate) fn layer_norm(x: &Tensor, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f32) -> Result<Tensor> {
    let centered = x.sub(&x.mean(&[-1], true)?)?;
    let var = centered.square().mean(&[-1], true)?;
    let mut y = centered.mul(&var.add_scalar(eps).sqrt().recip())?;
    if let Some(w) = weight {
        y = y.mul(w)?;
    }
    if let Some(b) = bias {
        y = y.add(b)?;
    }
    Ok(y)
}

// TEMP: replaced by ops::fused at merge
/// RMS normalisation over the last axis: `x / sqrt(mean(x²) + eps) * weight`.
pub(crate) fn rms_norm(x: &Tensor, weight: Option<&Tensor>, eps: f32) -> Result<Tensor> {
    let ms = x.square().mean(&[-1], true)?;
    let y = x.mul(&ms.add_scalar(eps).sqrt().recip())?;
    match weight {
        Some(w) => y.mul(w),
        None => Ok(y),
    }
}

// TEMP: replaced by ops::fused at merge
/// Inverted dropout: zero each element with probability `p`, scale the rest by `1/(1-p)`.
pub(crate) fn dropout(x: &Tensor, p: f32, rng: &mut Rng) -> Result<Tensor> {
    if !(0.0..=1.0).contains(&p) {
        return Err(Error::InvalidArgument { op: "dropout", message: format!("p = {p} is outside [0, 1]") });
    }
    if p == 0.0 {
        return Ok(x.clone());
    }
    let keep = 1.0 - p;
    let scale = if keep > 0.0 { 1.0 / keep } else { 0.0 };
    let mask: Vec<f32> = (0..x.numel()).map(|_| if rng.bernoulli(keep) { scale } else { 0.0 }).collect();
    x.mul(&Tensor::from_vec(mask, x.shape_obj().clone())?)
}

// TEMP: replaced by ops::index at merge
/// Rows of `weight` `[vocab, dim]` picked by `ids` (shaped `ids_shape`), as a one-hot
/// matmul: output shape `ids_shape + [dim]`.
pub(crate) fn embedding(weight: &Tensor, ids: &[usize], ids_shape: &[usize]) -> Result<Tensor> {
    let (v, d) = (weight.shape()[0], weight.shape()[1]);
    let n: usize = ids_shape.iter().product();
    if ids.len() != n {
        return Err(Error::DataLength { op: "embedding", len: ids.len(), shape: ids_shape.into() });
    }
    let mut onehot = vec![0.0f32; n * v];
    for (i, &id) in ids.iter().enumerate() {
        if id >= v {
            return Err(Error::Index {
                op: "embedding",
                axis: 0,
                index: id,
                size: v,
                shape: weight.shape_obj().clone(),
            });
        }
        onehot[i * v + id] = 1.0;
    }
    let rows = Tensor::from_vec(onehot, [n, v])?.matmul(weight)?;
    let out: Vec<usize> = ids_shape.iter().copied().chain([d]).collect();
    rows.reshape(&out)
}

// TEMP: replaced by ops::index (masked_fill + causal_mask) at merge
/// Scores `[.., t, t]` with every entry above the diagonal (key after query) set to
/// -inf, by adding a constant mask.
pub(crate) fn mask_future(scores: &Tensor) -> Result<Tensor> {
    let r = scores.rank();
    let (tq, tk) = (scores.shape()[r - 2], scores.shape()[r - 1]);
    let mask: Vec<f32> = (0..tq * tk).map(|k| if k % tk > k / tk { f32::NEG_INFINITY } else { 0.0 }).collect();
    scores.add(&Tensor::from_vec(mask, [tq, tk])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stand-in cross-entropy (used by the MLP job) against an f64 reference.
    #[test]
    fn cross_entropy_matches_reference() {
        let mut rng = Rng::new(0);
        let (n, c) = (5, 4);
        let x: Vec<f32> = (0..n * c).map(|_| rng.range(-3.0, 3.0)).collect();
        let targets = [0usize, 3, 1, 3, 2];
        let logits = Tensor::from_vec(x.clone(), [n, c]).unwrap();
        for (ignore, eps) in [(None, 0.0f32), (Some(3usize), 0.0), (None, 0.1), (Some(1), 0.2)] {
            let opts = CrossEntropyOpts { ignore_index: ignore, label_smoothing: eps, reduction: Reduction::Mean };
            let got = cross_entropy(&logits, &targets, opts).unwrap().item().unwrap() as f64;
            let (mut total, mut kept) = (0.0f64, 0);
            for (i, &t) in targets.iter().enumerate() {
                if ignore == Some(t) {
                    continue;
                }
                let row: Vec<f64> = x[i * c..(i + 1) * c].iter().map(|&v| v as f64).collect();
                let lse = row.iter().map(|v| v.exp()).sum::<f64>().ln();
                let nll = lse - row[t];
                let smooth = row.iter().map(|v| lse - v).sum::<f64>() / c as f64;
                total += (1.0 - eps as f64) * nll + eps as f64 * smooth;
                kept += 1;
            }
            let want = total / kept as f64;
            assert!((got - want).abs() < 1e-5 * (1.0 + want.abs()), "{ignore:?} {eps}: {got} vs {want}");
        }
        assert!(cross_entropy(&logits, &[0, 1], CrossEntropyOpts::default()).is_err());
        assert!(cross_entropy(&logits, &[0, 1, 2, 3, 4], CrossEntropyOpts::default()).is_err());
    }
}
