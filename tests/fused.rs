//! Fused ops (softmax, log_softmax, cross_entropy, soft_cross_entropy, layer_norm,
//! rms_norm, l2_normalize)
//! and dropout: forward against f64 references written here, forward and gradient
//! against the same function composed from primitive ops, backward against central
//! differences, on random shapes, strided views and extreme values; typed errors.

mod common;
use common::*;
use fixpoint::ops::fused::{CrossEntropyOpts, Reduction};
use fixpoint::{Error, Result, Rng, Shape, Tensor, no_grad};
use proptest::prelude::*;

// ----- f64 references -------------------------------------------------------------------

fn softmax64(x: &[f64]) -> Vec<f64> {
    let m = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = x.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

fn logsumexp64(x: &[f64]) -> f64 {
    let m = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    m + x.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
}

fn log_softmax64(x: &[f64]) -> Vec<f64> {
    let l = logsumexp64(x);
    x.iter().map(|v| v - l).collect()
}

fn layer_norm64(x: &[f64], w: Option<&[f64]>, b: Option<&[f64]>, eps: f64) -> Vec<f64> {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    let r = 1.0 / (var + eps).sqrt();
    (0..x.len()).map(|i| (x[i] - mean) * r * w.map_or(1.0, |w| w[i]) + b.map_or(0.0, |b| b[i])).collect()
}

fn rms_norm64(x: &[f64], w: Option<&[f64]>, eps: f64) -> Vec<f64> {
    let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let r = 1.0 / (ms + eps).sqrt();
    (0..x.len()).map(|i| x[i] * r * w.map_or(1.0, |w| w[i])).collect()
}

fn l2_normalize64(x: &[f64], eps: f64) -> Vec<f64> {
    let n = x.iter().map(|v| v * v).sum::<f64>().sqrt().max(eps);
    x.iter().map(|v| v / n).collect()
}

/// PyTorch's cross-entropy, in f64: per-row losses (ignored rows 0) and the reduction.
fn cross_entropy64(x: &[f32], c: usize, targets: &[usize], opts: CrossEntropyOpts) -> Vec<f64> {
    let eps = opts.label_smoothing as f64;
    let mut losses = Vec::new();
    let mut count = 0usize;
    for (row, &t) in x.chunks(c).zip(targets) {
        if Some(t) == opts.ignore_index {
            losses.push(0.0);
            continue;
        }
        count += 1;
        let r: Vec<f64> = row.iter().map(|&v| v as f64).collect();
        let logp = log_softmax64(&r);
        let nll = -logp[t];
        let smooth = -logp.iter().sum::<f64>() / c as f64;
        losses.push((1.0 - eps) * nll + eps * smooth);
    }
    let total: f64 = losses.iter().sum();
    match opts.reduction {
        Reduction::Mean => vec![if count == 0 { 0.0 } else { total / count as f64 }],
        Reduction::Sum => vec![total],
        Reduction::None => losses,
    }
}

/// Apply a row function along `axis` of row-major `data` of `shape`, in f64.
fn along(data: &[f32], shape: &[usize], axis: usize, f: impl Fn(&[f64]) -> Vec<f64>) -> Vec<f64> {
    let n = shape[axis];
    let stride: usize = shape[axis + 1..].iter().product();
    let mut out = vec![f64::NAN; data.len()];
    for start in 0..data.len() {
        if !(start / stride).is_multiple_of(n) {
            continue; // not the first element of its line along `axis`
        }
        let line: Vec<f64> = (0..n).map(|k| data[start + k * stride] as f64).collect();
        for (k, v) in f(&line).into_iter().enumerate() {
            out[start + k * stride] = v;
        }
    }
    out
}

// ----- helpers --------------------------------------------------------------------------

/// Values with magnitude in [0.25, 2] and random sign: away from the kinks and the
/// steep regions (|x| ≈ 0 with one element per row) where finite differences fail.
fn signed_data(n: usize, rng: &mut Rng) -> Vec<f32> {
    (0..n).map(|_| rng.range(0.25, 2.0) * if rng.bernoulli(0.5) { 1.0 } else { -1.0 }).collect()
}

fn signed(shape: &[usize], rng: &mut Rng) -> Tensor {
    Tensor::from_vec(signed_data(shape.iter().product(), rng), shape).unwrap()
}

/// Gradients of `Σ f(inputs) ⊙ r` for a fixed random `r`, one vector per input.
fn grads_of(f: impl Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor]) -> Vec<Vec<f32>> {
    let leaves: Vec<Tensor> = inputs.iter().map(|t| t.detach().requires_grad_()).collect();
    let y = f(&leaves).unwrap();
    let mut rng = Rng::new(99);
    let r: Vec<f32> = (0..y.numel()).map(|_| rng.normal()).collect();
    y.backward_with(&Tensor::from_vec(r, y.shape_obj().clone()).unwrap()).unwrap();
    leaves.iter().map(|l| l.grad().map(|g| g.to_vec()).unwrap_or_else(|| vec![0.0; l.numel()])).collect()
}

/// Forward values and gradients of a fused op agree with its composition from primitives.
fn assert_same_as_composition(
    what: &str,
    fused: impl Fn(&[Tensor]) -> Result<Tensor>,
    composed: impl Fn(&[Tensor]) -> Result<Tensor>,
    inputs: &[Tensor],
    atol: f64,
    rtol: f64,
) {
    let yf = fused(inputs).unwrap();
    let yc = composed(inputs).unwrap();
    assert_eq!(yf.shape(), yc.shape(), "{what}: shapes");
    assert_close(&format!("{what} forward"), &yf.to_vec(), &f64s(&yc), atol, rtol);
    let gf = grads_of(&fused, inputs);
    let gc = grads_of(&composed, inputs);
    for (k, (a, b)) in gf.iter().zip(&gc).enumerate() {
        let b: Vec<f64> = b.iter().map(|&v| v as f64).collect();
        assert_close(&format!("{what} gradient of input {k}"), a, &b, atol, rtol);
    }
}

fn softmax_composed(x: &Tensor, axis: isize) -> Result<Tensor> {
    let e = x.sub(&x.max(&[axis], true)?.detach())?.exp();
    e.div(&e.sum(&[axis], true)?)
}

fn log_softmax_composed(x: &Tensor, axis: isize) -> Result<Tensor> {
    x.sub(&x.logsumexp(&[axis], true)?)
}

fn layer_norm_composed(x: &Tensor, w: Option<&Tensor>, b: Option<&Tensor>, eps: f32) -> Result<Tensor> {
    let c = x.sub(&x.mean(&[-1], true)?)?;
    let mut y = c.div(&x.var(&[-1], true, 0)?.add_scalar(eps).sqrt())?;
    if let Some(w) = w {
        y = y.mul(w)?;
    }
    if let Some(b) = b {
        y = y.add(b)?;
    }
    Ok(y)
}

fn rms_norm_composed(x: &Tensor, w: Option<&Tensor>, eps: f32) -> Result<Tensor> {
    let y = x.div(&x.square().mean(&[-1], true)?.add_scalar(eps).sqrt())?;
    match w {
        Some(w) => y.mul(w),
        None => Ok(y),
    }
}

fn l2_normalize_composed(x: &Tensor, axis: isize, eps: f32) -> Result<Tensor> {
    x.div(&x.square().sum(&[axis], true)?.sqrt().maximum(&Tensor::scalar(eps))?)
}

/// Cross-entropy from primitives: `-Σ_c q_c log p_c` per row with the smoothed target
/// distribution `q` (zero for ignored rows), then the reduction.
fn cross_entropy_composed(x: &Tensor, targets: &[usize], opts: CrossEntropyOpts) -> Result<Tensor> {
    let c = *x.shape().last().unwrap();
    let eps = opts.label_smoothing;
    let mut q = Vec::with_capacity(x.numel());
    let mut count = 0;
    for &t in targets {
        let ignored = Some(t) == opts.ignore_index;
        count += usize::from(!ignored);
        for k in 0..c {
            q.push(if ignored { 0.0 } else { (1.0 - eps) * f32::from(k == t) + eps / c as f32 });
        }
    }
    let q = Tensor::from_vec(q, x.shape_obj().clone())?;
    let logp = x.sub(&x.logsumexp(&[-1], true)?)?;
    let per_row = logp.mul(&q)?.sum(&[-1], false)?.neg();
    Ok(match opts.reduction {
        Reduction::Mean => per_row.sum_all().mul_scalar(if count == 0 { 0.0 } else { 1.0 / count as f32 }),
        Reduction::Sum => per_row.sum_all(),
        Reduction::None => per_row,
    })
}

// ----- softmax / log_softmax --------------------------------------------------------------

#[test]
fn softmax_and_log_softmax_forward_every_axis() {
    let mut rng = Rng::new(1);
    for shape in [vec![1], vec![7], vec![3, 65], vec![2, 3, 9], vec![4, 1, 5]] {
        let x = rand_tensor(&shape, -5.0, 5.0, &mut rng);
        let data = x.to_vec();
        for axis in 0..shape.len() {
            let want = along(&data, &shape, axis, softmax64);
            assert_close("softmax", &x.softmax(axis as isize).unwrap().to_vec(), &want, 1e-7, 1e-5);
            let want = along(&data, &shape, axis, log_softmax64);
            assert_close("log_softmax", &x.log_softmax(axis as isize).unwrap().to_vec(), &want, 1e-5, 1e-6);
        }
        // Negative axis: -1 is the last one.
        let want = along(&data, &shape, shape.len() - 1, softmax64);
        assert_close("softmax(-1)", &x.softmax(-1).unwrap().to_vec(), &want, 1e-7, 1e-5);
    }
}

#[test]
fn softmax_and_log_softmax_backward() {
    let mut rng = Rng::new(2);
    for shape in [vec![1], vec![7], vec![3, 65], vec![2, 3, 9]] {
        let x = rand_tensor(&shape, -3.0, 3.0, &mut rng);
        for axis in 0..shape.len() as isize {
            assert_grads("softmax", |v| v[0].softmax(axis), std::slice::from_ref(&x));
            assert_grads("log_softmax", |v| v[0].log_softmax(axis), std::slice::from_ref(&x));
            assert_same_as_composition(
                "softmax",
                |v| v[0].softmax(axis),
                |v| softmax_composed(&v[0], axis),
                std::slice::from_ref(&x),
                1e-6,
                1e-4,
            );
            assert_same_as_composition(
                "log_softmax",
                |v| v[0].log_softmax(axis),
                |v| log_softmax_composed(&v[0], axis),
                std::slice::from_ref(&x),
                1e-5,
                1e-4,
            );
        }
    }
}

#[test]
fn softmax_of_strided_views() {
    let mut rng = Rng::new(3);
    let x = rand_tensor(&[5, 7], -3.0, 3.0, &mut rng);
    // Through a transpose, along both axes, forward and backward.
    let xt = x.t().unwrap();
    let dt = xt.to_vec();
    for axis in [0, 1] {
        let want = along(&dt, &[7, 5], axis, softmax64);
        assert_close("softmax of transpose", &xt.softmax(axis as isize).unwrap().to_vec(), &want, 1e-7, 1e-5);
        assert_grads("softmax of transpose", |v| v[0].t()?.softmax(axis as isize), std::slice::from_ref(&x));
        assert_grads(
            "log_softmax of narrowed",
            |v| v[0].narrow(1, 1, 5)?.log_softmax(axis as isize),
            std::slice::from_ref(&x),
        );
    }
}

#[test]
fn softmax_extreme_values() {
    // ±1e4 logits: the max is subtracted, so nothing overflows.
    let x = Tensor::from_vec(vec![1e4, -1e4, 0.0, 1e4 - 1.0, -1e4, -1e4, -1e4, -1e4 + 2.0], [2, 4]).unwrap();
    let data = x.to_vec();
    let s = x.softmax(-1).unwrap().to_vec();
    let l = x.log_softmax(-1).unwrap().to_vec();
    assert!(s.iter().chain(&l).all(|v| v.is_finite()), "{s:?} {l:?}");
    assert_close("softmax(±1e4)", &s, &along(&data, &[2, 4], 1, softmax64), 1e-7, 1e-5);
    assert_close("log_softmax(±1e4)", &l, &along(&data, &[2, 4], 1, log_softmax64), 1e-6, 1e-6);
    let g = grads_of(|v| v[0].log_softmax(-1), std::slice::from_ref(&x));
    assert!(g[0].iter().all(|v| v.is_finite()));
    // NaN propagates to its row only; a -inf entry just gets probability 0.
    let y =
        Tensor::from_vec(vec![f32::NAN, 1.0, f32::NEG_INFINITY, 1.0], [2, 2]).unwrap().softmax(-1).unwrap().to_vec();
    assert!(y[0].is_nan() && y[1].is_nan());
    assert_eq!(&y[2..], &[0.0, 1.0]);
}

// ----- cross-entropy -------------------------------------------------------------------

fn ce_cases() -> Vec<CrossEntropyOpts> {
    let mut v = Vec::new();
    for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
        for label_smoothing in [0.0, 0.1, 1.0] {
            for ignore_index in [None, Some(2), Some(1000)] {
                v.push(CrossEntropyOpts { ignore_index, label_smoothing, reduction });
            }
        }
    }
    v
}

#[test]
fn cross_entropy_against_f64_and_composition() {
    let mut rng = Rng::new(4);
    for (n, c) in [(1, 1), (6, 7), (9, 65), (3, 3)] {
        let x = rand_tensor(&[n, c], -4.0, 4.0, &mut rng);
        // Targets include the ignore index 2 when it is a valid class, and index 1000
        // (an ignore index beyond C is allowed).
        let targets: Vec<usize> = (0..n).map(|i| if i % 3 == 1 && c > 2 { 2 } else { rng.below(c) }).collect();
        for opts in ce_cases() {
            let targets: Vec<usize> = if opts.ignore_index == Some(1000) && n > 1 {
                targets.iter().enumerate().map(|(i, &t)| if i == 0 { 1000 } else { t }).collect()
            } else {
                targets.clone()
            };
            let what = format!("cross_entropy {n}x{c} {opts:?}");
            let got = x.cross_entropy(&targets, opts).unwrap();
            let want = cross_entropy64(&x.to_vec(), c, &targets, opts);
            let want_shape: &[usize] = if opts.reduction == Reduction::None { &[n] } else { &[] };
            assert_eq!(got.shape(), want_shape, "{what}");
            assert_close(&what, &got.to_vec(), &want, 1e-5, 1e-5);
            assert_grads(&what, |v| v[0].cross_entropy(&targets, opts), std::slice::from_ref(&x));
            assert_same_as_composition(
                &what,
                |v| v[0].cross_entropy(&targets, opts),
                |v| cross_entropy_composed(&v[0], &targets, opts),
                std::slice::from_ref(&x),
                1e-5,
                1e-4,
            );
        }
    }
}

#[test]
fn cross_entropy_leading_axes_and_views() {
    let mut rng = Rng::new(5);
    let x = rand_tensor(&[2, 3, 5], -3.0, 3.0, &mut rng);
    let targets = [0, 4, 2, 1, 3, 3];
    let opts = CrossEntropyOpts { label_smoothing: 0.2, reduction: Reduction::None, ..Default::default() };
    let y = x.cross_entropy(&targets, opts).unwrap();
    assert_eq!(y.shape(), &[2, 3]);
    assert_close("ce [2, 3, 5]", &y.to_vec(), &cross_entropy64(&x.to_vec(), 5, &targets, opts), 1e-5, 1e-5);
    // A single row [C] gives a scalar per-target loss.
    let row = x.narrow(0, 0, 1).unwrap().narrow(1, 0, 1).unwrap().reshape(&[5]).unwrap();
    let r = row.cross_entropy(&[3], opts).unwrap();
    assert_eq!(r.shape(), &[] as &[usize]);
    assert_close("ce [5]", &r.to_vec(), &cross_entropy64(&row.to_vec(), 5, &[3], opts), 1e-5, 1e-5);
    // Logits through a transpose: [5, 6] stored, used as [6, 5].
    let xt = rand_tensor(&[5, 6], -3.0, 3.0, &mut rng);
    let opts = CrossEntropyOpts { ignore_index: Some(3), ..Default::default() };
    let got = xt.t().unwrap().cross_entropy(&targets, opts).unwrap();
    let want = cross_entropy64(&xt.t().unwrap().to_vec(), 5, &targets, opts);
    assert_close("ce of transpose", &got.to_vec(), &want, 1e-5, 1e-5);
    assert_grads("ce of transpose", |v| v[0].t()?.cross_entropy(&targets, opts), std::slice::from_ref(&xt));
}

#[test]
fn cross_entropy_all_ignored_is_zero() {
    let x = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3]).unwrap().requires_grad_();
    let opts = CrossEntropyOpts { ignore_index: Some(1), label_smoothing: 0.3, ..Default::default() };
    let loss = x.cross_entropy(&[1, 1], opts).unwrap();
    assert_eq!(loss.item().unwrap(), 0.0);
    loss.backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec(), vec![0.0; 6]);
    // No rows at all: the mean is 0 too.
    let empty = Tensor::zeros([0, 3]);
    assert_eq!(empty.cross_entropy(&[], CrossEntropyOpts::default()).unwrap().item().unwrap(), 0.0);
}

/// Logits of ±1e4 (a fair coin each) plus noise in [-3, 3]: every row mixes entries 2e4
/// apart, where a softmax that does not shift by the maximum overflows.
fn logits_near_pm_1e4(len: usize, rng: &mut Rng) -> Vec<f32> {
    (0..len).map(|_| if rng.bernoulli(0.5) { 1e4 } else { -1e4 } + rng.range(-3.0, 3.0)).collect()
}

#[test]
fn cross_entropy_large_logits_stay_finite() {
    let mut rng = Rng::new(6);
    let (n, c) = (8, 33);
    let data = logits_near_pm_1e4(n * c, &mut rng);
    let x = Tensor::from_vec(data.clone(), [n, c]).unwrap();
    // Targets on the low logits, so the per-row loss is about 2e4.
    let targets: Vec<usize> =
        (0..n).map(|i| (0..c).find(|&k| data[i * c + k] < 0.0).expect("some low logit")).collect();
    for label_smoothing in [0.0, 0.1] {
        let opts = CrossEntropyOpts { label_smoothing, ..Default::default() };
        let got = x.cross_entropy(&targets, opts).unwrap();
        let want = cross_entropy64(&data, c, &targets, opts);
        assert!(got.item().unwrap().is_finite());
        assert_close("ce(±1e4)", &got.to_vec(), &want, 1e-2, 1e-5);
        let g = grads_of(|v| v[0].cross_entropy(&targets, opts), std::slice::from_ref(&x));
        assert!(g[0].iter().all(|v| v.is_finite()));
        // Each row's gradient sums to 0 (softmax minus a distribution).
        for row in g[0].chunks(c) {
            assert!(row.iter().map(|&v| v as f64).sum::<f64>().abs() < 1e-5);
        }
    }
}

// ----- soft_cross_entropy ---------------------------------------------------------------

/// `-(1/R) Σ_r Σ_k p_rk log_softmax(x_r/τ)_k` in f64 (rows of `c`).
fn soft_cross_entropy64(x: &[f32], p: &[f32], c: usize, temp: f64) -> f64 {
    let rows = x.len() / c;
    let mut total = 0.0;
    for (xr, pr) in x.chunks(c).zip(p.chunks(c)) {
        let z: Vec<f64> = xr.iter().map(|&v| v as f64 / temp).collect();
        total -= log_softmax64(&z).iter().zip(pr).map(|(l, &q)| q as f64 * l).sum::<f64>();
    }
    total / rows as f64
}

fn soft_cross_entropy_composed(x: &Tensor, p: &Tensor, temp: f32) -> Result<Tensor> {
    let rows = x.numel() / x.shape().last().unwrap();
    Ok(p.mul(&x.mul_scalar(1.0 / temp).log_softmax(-1)?)?.sum_all().mul_scalar(-1.0 / rows as f32))
}

/// The DINO loss exactly as `distill_loss` composed it before the fused op (no scaling
/// at τ = 1).
fn soft_cross_entropy_composed_as_before(x: &Tensor, p: &Tensor, temp: f32) -> Result<Tensor> {
    let rows = x.numel() / x.shape().last().unwrap();
    let z = if temp != 1.0 { x.mul_scalar(1.0 / temp) } else { x.clone() };
    Ok(p.mul(&z.log_softmax(-1)?)?.sum_all().mul_scalar(-1.0 / rows as f32))
}

/// Random target rows: a softmax (sums to 1), or, with `normalised` false, that softmax
/// times weights in [0.5, 2] (rows that do not sum to 1: the op does not assume they
/// do, and the loss stays of order 1 so that central differences in f32 resolve it).
fn target_rows(shape: &[usize], normalised: bool, rng: &mut Rng) -> Tensor {
    let t = rand_tensor(shape, -3.0, 3.0, rng).softmax(-1).unwrap();
    if normalised { t } else { t.mul(&rand_tensor(shape, 0.5, 2.0, rng)).unwrap() }
}

#[test]
fn soft_cross_entropy_against_f64_differences_and_composition() {
    let mut rng = Rng::new(12);
    // Row lengths below, at and past the 8 lanes (tails), leading axes, several τ.
    for shape in [vec![1, 1], vec![6, 7], vec![5, 8], vec![9, 65], vec![2, 3, 17]] {
        for temp in [1.0, 0.1, 0.04, 3.0] {
            for normalised in [true, false] {
                let what = format!("soft_cross_entropy {shape:?} tau {temp} normalised {normalised}");
                // Logits of x/τ in [-4, 4] at every τ (a sharper softmax at small τ with
                // logits of the same range would leave central differences in f32 noise).
                let x = rand_tensor(&shape, -4.0, 4.0, &mut rng).mul_scalar(temp);
                let p = target_rows(&shape, normalised, &mut rng);
                let c = *shape.last().unwrap();
                let got = x.soft_cross_entropy(&p, temp).unwrap();
                assert_eq!(got.shape(), &[] as &[usize], "{what}");
                let want = soft_cross_entropy64(&x.to_vec(), &p.to_vec(), c, temp as f64);
                assert_close(&what, &got.to_vec(), &[want], 1e-5, 1e-5);
                // Central differences in both arguments; small τ sharpens the softmax, so
                // the step shrinks with it.
                let step = (1e-2 * temp).min(1e-2);
                assert_grads_tol(
                    &what,
                    |v| v[0].soft_cross_entropy(&v[1], temp),
                    &[x.clone(), p.clone()],
                    step,
                    2e-3,
                    1e-2,
                );
                assert_same_as_composition(
                    &what,
                    |v| v[0].soft_cross_entropy(&v[1], temp),
                    |v| soft_cross_entropy_composed(&v[0], &v[1], temp),
                    &[x.clone(), p.clone()],
                    1e-5,
                    1e-4,
                );
            }
        }
    }
}

#[test]
fn soft_cross_entropy_parallel_rows_match_the_reference_and_views() {
    // 48 × 2,000 = 96,000 elements: past the parallel threshold, rows split over tasks.
    let mut rng = Rng::new(13);
    let (n, c, temp) = (48, 2000, 0.1);
    let x = rand_tensor(&[n, c], -6.0, 6.0, &mut rng);
    let p = target_rows(&[n, c], true, &mut rng);
    let got = x.soft_cross_entropy(&p, temp).unwrap();
    let want = soft_cross_entropy64(&x.to_vec(), &p.to_vec(), c, temp as f64);
    assert_close("soft_cross_entropy 48x2000", &got.to_vec(), &[want], 1e-5, 1e-5);
    // The gradient in x against f64: -(1/R)/τ (p - softmax(x/τ) Σp) per row.
    let g = grads_of(|v| v[0].soft_cross_entropy(&v[1], temp), &[x.clone(), p.clone()]);
    let (xv, pv) = (x.to_vec(), p.to_vec());
    // grads_of's cotangent of the scalar loss: the first normal draw of its Rng(99).
    let scale = Rng::new(99).normal() as f64;
    let mut want_dx = Vec::with_capacity(n * c);
    let mut want_dp = Vec::with_capacity(n * c);
    for (xr, pr) in xv.chunks(c).zip(pv.chunks(c)) {
        let z: Vec<f64> = xr.iter().map(|&v| v as f64 / temp as f64).collect();
        let (sm, ls) = (softmax64(&z), log_softmax64(&z));
        let ps: f64 = pr.iter().map(|&q| q as f64).sum();
        for k in 0..c {
            want_dx.push(-scale / n as f64 / temp as f64 * (pr[k] as f64 - sm[k] * ps));
            want_dp.push(-scale / n as f64 * ls[k]);
        }
    }
    assert_close("soft_cross_entropy 48x2000 dx", &g[0], &want_dx, 1e-9, 1e-4);
    assert_close("soft_cross_entropy 48x2000 dp", &g[1], &want_dp, 1e-7, 1e-4);
    // A transposed view of the logits: [c, n] stored, used as [n, c].
    let xt = rand_tensor(&[9, 6], -3.0, 3.0, &mut rng);
    let pt = target_rows(&[6, 9], true, &mut rng);
    let got = xt.t().unwrap().soft_cross_entropy(&pt, 0.5).unwrap();
    let want = soft_cross_entropy64(&xt.t().unwrap().to_vec(), &pt.to_vec(), 9, 0.5);
    assert_close("soft_cross_entropy of a transpose", &got.to_vec(), &[want], 1e-5, 1e-5);
    assert_grads("soft_cross_entropy of a transpose", |v| v[0].t()?.soft_cross_entropy(&v[1], 0.5), &[xt, pt]);
}

#[test]
fn soft_cross_entropy_gradients_are_the_bits_of_the_composition() {
    // The DINO loss was the composition; the fused op must not move a training run by
    // one rounding (at α = 1e-10 the first gradients are rounding noise that AdamW scales
    // up), so its gradients in both arguments are those of the composition bit for bit,
    // at τ = 1 and τ ≠ 1, row tails, and past the parallel threshold.
    let mut rng = Rng::new(16);
    for (shape, temp) in
        [(vec![6, 7], 1.0), (vec![9, 65], 0.1), (vec![3, 4, 33], 3.0), (vec![40, 2000], 1.0), (vec![40, 2000], 0.07)]
    {
        let x = rand_tensor(&shape, -4.0, 4.0, &mut rng).mul_scalar(temp);
        let p = target_rows(&shape, true, &mut rng);
        let fused = grads_of(|v| v[0].soft_cross_entropy(&v[1], temp), &[x.clone(), p.clone()]);
        let composed = grads_of(|v| soft_cross_entropy_composed_as_before(&v[0], &v[1], temp), &[x.clone(), p.clone()]);
        for k in 0..2 {
            let differ = fused[k].iter().zip(&composed[k]).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
            assert_eq!(differ, 0, "{shape:?} tau {temp}: gradient of input {k} differs in {differ} elements");
        }
    }
}

#[test]
fn soft_cross_entropy_gradient_of_the_targets_alone() {
    // Only the targets require a gradient (the logits are constants): dp = -(1/R)
    // log_softmax(x/τ), against f64.
    let mut rng = Rng::new(15);
    let (n, c, temp) = (5, 11, 0.5);
    let x = rand_tensor(&[n, c], -2.0, 2.0, &mut rng);
    let p = target_rows(&[n, c], false, &mut rng).requires_grad_();
    x.soft_cross_entropy(&p, temp).unwrap().backward().unwrap();
    let want: Vec<f64> = x
        .to_vec()
        .chunks(c)
        .flat_map(|r| log_softmax64(&r.iter().map(|&v| v as f64 / temp as f64).collect::<Vec<_>>()))
        .map(|l| -l / n as f64)
        .collect();
    assert_close("soft_cross_entropy dp", &p.grad().unwrap().to_vec(), &want, 1e-6, 1e-5);
    assert!(x.grad().is_none());
}

#[test]
fn soft_cross_entropy_large_logits_stay_finite() {
    let mut rng = Rng::new(14);
    let (n, c) = (8, 33);
    let data = logits_near_pm_1e4(n * c, &mut rng);
    let x = Tensor::from_vec(data.clone(), [n, c]).unwrap();
    let p = target_rows(&[n, c], true, &mut rng);
    for temp in [1.0, 0.1] {
        let got = x.soft_cross_entropy(&p, temp).unwrap();
        let want = soft_cross_entropy64(&data, &p.to_vec(), c, temp as f64);
        assert!(got.item().unwrap().is_finite());
        assert_close("soft_cross_entropy(±1e4)", &got.to_vec(), &[want], 1e-2, 1e-5);
        let g = grads_of(|v| v[0].soft_cross_entropy(&v[1], temp), &[x.clone(), p.clone()]);
        assert!(g[0].iter().chain(&g[1]).all(|v| v.is_finite()));
        // With normalised targets each row's gradient in x sums to 0.
        for row in g[0].chunks(c) {
            assert!(row.iter().map(|&v| v as f64).sum::<f64>().abs() < 1e-5);
        }
    }
}

#[test]
fn soft_cross_entropy_bad_inputs_give_typed_errors() {
    let s = |d: &[usize]| Shape::new(d.to_vec());
    let x = Tensor::zeros([2, 3]);
    let e = x.soft_cross_entropy(&Tensor::zeros([2, 4]), 1.0).unwrap_err();
    assert_eq!(e, Error::ShapeMismatch { op: "soft_cross_entropy", lhs: s(&[2, 3]), rhs: s(&[2, 4]) });
    assert!(e.to_string().contains("[2, 3]") && e.to_string().contains("[2, 4]"), "{e}");
    for temp in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        assert!(
            matches!(x.soft_cross_entropy(&x, temp), Err(Error::InvalidArgument { op: "soft_cross_entropy", .. })),
            "tau {temp}"
        );
    }
    let e0 = Tensor::zeros([3, 0]);
    assert_eq!(
        e0.soft_cross_entropy(&e0, 1.0).unwrap_err(),
        Error::Empty { op: "soft_cross_entropy", shape: s(&[3, 0]) }
    );
    // No rows: the mean over nothing.
    let r0 = Tensor::zeros([0, 5]);
    assert_eq!(
        r0.soft_cross_entropy(&r0, 1.0).unwrap_err(),
        Error::Empty { op: "soft_cross_entropy", shape: s(&[0, 5]) }
    );
    let scalar = Tensor::scalar(1.0);
    assert!(matches!(scalar.soft_cross_entropy(&scalar, 1.0), Err(Error::Axis { op: "soft_cross_entropy", .. })));
}

// ----- norms ------------------------------------------------------------------------------

#[test]
fn layer_norm_and_rms_norm_against_f64_and_composition() {
    let mut rng = Rng::new(7);
    for shape in [vec![1], vec![3, 1], vec![4, 7], vec![2, 3, 65]] {
        let d = *shape.last().unwrap();
        let x = signed(&shape, &mut rng);
        let w = rand_tensor(&[d], 0.5, 1.5, &mut rng);
        let b = rand_tensor(&[d], -1.0, 1.0, &mut rng);
        let (xd, wd, bd) = (x.to_vec(), f64s(&w), f64s(&b));
        let last = shape.len() - 1;
        for eps in [1e-5f32, 0.1] {
            for (use_w, use_b) in [(true, true), (true, false), (false, true), (false, false)] {
                let (wo, bo) = (use_w.then_some(&w), use_b.then_some(&b));
                let what = format!("layer_norm {shape:?} eps {eps} w {use_w} b {use_b}");
                let want = along(&xd, &shape, last, |r| {
                    layer_norm64(r, use_w.then_some(&wd[..]), use_b.then_some(&bd[..]), eps as f64)
                });
                assert_close(&what, &x.layer_norm(wo, bo, eps).unwrap().to_vec(), &want, 1e-5, 1e-5);
                let mut inputs = vec![x.clone()];
                inputs.extend(wo.cloned());
                inputs.extend(bo.cloned());
                let split =
                    |v: &[Tensor]| (v[0].clone(), use_w.then(|| v[1].clone()), use_b.then(|| v[v.len() - 1].clone()));
                let fused = |v: &[Tensor]| {
                    let (x, w, b) = split(v);
                    x.layer_norm(w.as_ref(), b.as_ref(), eps)
                };
                assert_grads(&what, fused, &inputs);
                assert_same_as_composition(
                    &what,
                    fused,
                    |v| {
                        let (x, w, b) = split(v);
                        layer_norm_composed(&x, w.as_ref(), b.as_ref(), eps)
                    },
                    &inputs,
                    1e-4,
                    1e-4,
                );
            }
            for use_w in [true, false] {
                let wo = use_w.then_some(&w);
                let what = format!("rms_norm {shape:?} eps {eps} w {use_w}");
                let want = along(&xd, &shape, last, |r| rms_norm64(r, use_w.then_some(&wd[..]), eps as f64));
                assert_close(&what, &x.rms_norm(wo, eps).unwrap().to_vec(), &want, 1e-5, 1e-5);
                let mut inputs = vec![x.clone()];
                inputs.extend(wo.cloned());
                let fused = |v: &[Tensor]| v[0].rms_norm(v.get(1), eps);
                assert_grads(&what, fused, &inputs);
                assert_same_as_composition(
                    &what,
                    fused,
                    |v| rms_norm_composed(&v[0], v.get(1), eps),
                    &inputs,
                    1e-4,
                    1e-4,
                );
            }
        }
    }
}

#[test]
fn norm_weight_grad_when_only_weight_requires_grad() {
    let mut rng = Rng::new(8);
    let x = signed(&[5, 7], &mut rng);
    let w = rand_tensor(&[7], 0.5, 1.5, &mut rng).requires_grad_();
    let b = rand_tensor(&[7], -1.0, 1.0, &mut rng).requires_grad_();
    let y = x.layer_norm(Some(&w), Some(&b), 1e-5).unwrap();
    assert_eq!(y.op_name(), Some("layer_norm"));
    y.sum_all().backward().unwrap();
    // dL/db = Σ_rows 1 = 5; dL/dw = Σ_rows xhat (xhat from the f64 reference).
    assert_close("db", &b.grad().unwrap().to_vec(), &[5.0; 7], 1e-6, 1e-6);
    let xhat = along(&x.to_vec(), &[5, 7], 1, |r| layer_norm64(r, None, None, 1e-5));
    let want: Vec<f64> = (0..7).map(|k| (0..5).map(|i| xhat[i * 7 + k]).sum()).collect();
    assert_close("dw", &w.grad().unwrap().to_vec(), &want, 1e-5, 1e-5);
    assert!(no_grad(|| x.rms_norm(Some(&w), 1e-5)).unwrap().op_name().is_none());
}

#[test]
fn norm_weight_grad_accumulates_over_many_rows() {
    // 4096 rows: the block-wise f32 / f64 column sums stay accurate.
    let mut rng = Rng::new(9);
    let x = signed(&[4096, 3], &mut rng);
    let w = Tensor::ones([3]).requires_grad_();
    x.rms_norm(Some(&w), 1e-5).unwrap().sum_all().backward().unwrap();
    let xhat = along(&x.to_vec(), &[4096, 3], 1, |r| rms_norm64(r, None, 1e-5));
    let want: Vec<f64> = (0..3).map(|k| (0..4096).map(|i| xhat[i * 3 + k]).sum()).collect();
    assert_close("dw over 4096 rows", &w.grad().unwrap().to_vec(), &want, 1e-4, 1e-6);
}

// ----- l2_normalize -----------------------------------------------------------------------

#[test]
fn l2_normalize_against_f64_and_composition() {
    let mut rng = Rng::new(10);
    for shape in [vec![1], vec![7], vec![3, 65], vec![2, 3, 9]] {
        let x = signed(&shape, &mut rng);
        let xd = x.to_vec();
        for axis in 0..shape.len() {
            // eps 1e-12 (PyTorch's default) never clamps here; eps 3 clamps some rows.
            for eps in [1e-12f32, 3.0] {
                let what = format!("l2_normalize {shape:?} axis {axis} eps {eps}");
                let a = axis as isize;
                let want = along(&xd, &shape, axis, |r| l2_normalize64(r, eps as f64));
                assert_close(&what, &x.l2_normalize(a, eps).unwrap().to_vec(), &want, 1e-6, 1e-5);
                assert_grads(&what, |v| v[0].l2_normalize(a, eps), std::slice::from_ref(&x));
                assert_same_as_composition(
                    &what,
                    |v| v[0].l2_normalize(a, eps),
                    |v| l2_normalize_composed(&v[0], a, eps),
                    std::slice::from_ref(&x),
                    1e-6,
                    1e-4,
                );
            }
        }
    }
    // A zero row gives zeros (x / eps), with gradient g / eps.
    let z = Tensor::zeros([2, 3]).requires_grad_();
    let y = z.l2_normalize(-1, 1e-12).unwrap();
    assert_eq!(y.to_vec(), vec![0.0; 6]);
    let g = Tensor::from_vec(vec![1e-12, 0.0, -2e-12, 0.0, 0.0, 1e-12], [2, 3]).unwrap();
    y.backward_with(&g).unwrap();
    assert_close("zero-row grad", &z.grad().unwrap().to_vec(), &[1.0, 0.0, -2.0, 0.0, 0.0, 1.0], 1e-6, 1e-6);
}

// ----- random shapes and views -------------------------------------------------------------

/// The op under test in the proptest, applied to `[x, w, b]`.
fn apply(op: usize, v: &[Tensor]) -> Result<Tensor> {
    match op {
        0 => v[0].softmax(-1),
        1 => v[0].log_softmax(-1),
        2 => v[0].layer_norm(Some(&v[1]), Some(&v[2]), 1e-5),
        3 => v[0].rms_norm(Some(&v[1]), 1e-5),
        _ => v[0].l2_normalize(-1, 1e-12),
    }
}

fn reference(op: usize, row: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
    match op {
        0 => softmax64(row),
        1 => log_softmax64(row),
        2 => layer_norm64(row, Some(w), Some(b), 1e-5),
        3 => rms_norm64(row, Some(w), 1e-5),
        _ => l2_normalize64(row, 1e-12),
    }
}

/// Takes the tested view of a stored tensor.
type ViewFn = dyn Fn(&Tensor) -> Result<Tensor>;

const OP_NAMES: [&str; 5] = ["softmax", "log_softmax", "layer_norm", "rms_norm", "l2_normalize"];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn fused_ops_on_random_shapes_and_views(rows in 1usize..=9, d in big_odd_size(), view in view_kind(), seed in 0u64..1000) {
        let mut rng = Rng::new(seed);
        let data = signed_data(rows * d, &mut rng);
        let shape = [rows, d];
        let w = rand_tensor(&[d], 0.5, 1.5, &mut rng);
        let b = rand_tensor(&[d], -1.0, 1.0, &mut rng);
        let (wd, bd) = (f64s(&w), f64s(&b));
        let x = make_view(&data, &shape, view);
        for (op, &name) in OP_NAMES.iter().enumerate() {
            let want = along(&data, &shape, 1, |r| reference(op, r, &wd, &bd));
            let y = apply(op, &[x.clone(), w.clone(), b.clone()]).unwrap();
            assert_close(name, &y.to_vec(), &want, 1e-5, 1e-5);
            // Backward through the same kind of view: the checker perturbs the stored
            // tensor, and the view is taken inside the checked function.
            let (stored, take): (Tensor, Box<ViewFn>) = match view {
                View::Plain => (x.clone(), Box::new(|t: &Tensor| Ok(t.clone()))),
                View::Transposed => (x.t().unwrap().contiguous(), Box::new(|t: &Tensor| t.t())),
                View::Narrowed => {
                    // The same values in the first d columns of a wider tensor.
                    let mut wide = Vec::with_capacity(rows * (d + 1));
                    for r in data.chunks(d) {
                        wide.extend_from_slice(r);
                        wide.push(0.5);
                    }
                    (Tensor::from_vec(wide, [rows, d + 1]).unwrap(), Box::new(move |t: &Tensor| t.narrow(1, 0, d)))
                }
            };
            assert_grads(name, |v| apply(op, &[take(&v[0])?, v[1].clone(), v[2].clone()]), &[stored, w.clone(), b.clone()]);
        }
        // Cross-entropy with a random ignore index and smoothing.
        let targets: Vec<usize> = (0..rows).map(|_| rng.below(d)).collect();
        let opts = CrossEntropyOpts {
            ignore_index: rng.bernoulli(0.5).then(|| rng.below(d)),
            label_smoothing: rng.range(0.0, 0.3),
            reduction: [Reduction::Mean, Reduction::Sum, Reduction::None][rng.below(3)],
        };
        assert_close("cross_entropy", &x.cross_entropy(&targets, opts).unwrap().to_vec(), &cross_entropy64(&data, d, &targets, opts), 1e-5, 1e-5);
        assert_grads("cross_entropy", |v| v[0].cross_entropy(&targets, opts), &[x.contiguous()]);
    }

    #[test]
    fn dropout_on_random_shapes_and_views(rows in 1usize..=9, d in big_odd_size(), view in view_kind(), seed in 0u64..1000, p in 0.05f32..0.95) {
        let mut rng = Rng::new(seed);
        let data = signed_data(rows * d, &mut rng);
        let x = make_view(&data, &[rows, d], view);
        let y = x.dropout(p, &mut Rng::new(seed), true).unwrap();
        let plain = Tensor::from_slice(&data, [rows, d]).unwrap().dropout(p, &mut Rng::new(seed), true).unwrap();
        // The mask depends only on the seed and the element count, not on strides.
        prop_assert_eq!(y.to_vec(), plain.to_vec());
        let scale = 1.0 / (1.0 - p);
        for (&yv, &xv) in y.to_vec().iter().zip(&data) {
            prop_assert!(yv == 0.0 || yv == xv * scale, "{} from {}", yv, xv);
        }
        assert_grads("dropout", |v| v[0].dropout(p, &mut Rng::new(seed), true), &[x.contiguous()]);
    }
}

// ----- dropout ----------------------------------------------------------------------------

#[test]
fn dropout_mask_statistics_and_scaling() {
    let n = 100_000;
    let x = Tensor::ones([n]);
    for p in [0.1f32, 0.5, 0.9] {
        let y = x.dropout(p, &mut Rng::new(11), true).unwrap().to_vec();
        let scale = 1.0 / (1.0 - p);
        assert!(y.iter().all(|&v| v == 0.0 || v == scale), "values are 0 or 1/(1-p)");
        let kept = y.iter().filter(|&&v| v != 0.0).count() as f64 / n as f64;
        let sigma = ((p * (1.0 - p)) as f64 / n as f64).sqrt();
        assert!((kept - (1.0 - p) as f64).abs() < 5.0 * sigma, "p {p}: kept {kept}, sigma {sigma}");
        // The mean is preserved in expectation (inverted dropout).
        let mean = y.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        assert!((mean - 1.0).abs() < 5.0 * sigma * scale as f64, "p {p}: mean {mean}");
        // Neighbouring elements are not correlated.
        let both = y.windows(2).filter(|w| w[0] != 0.0 && w[1] != 0.0).count() as f64 / (n - 1) as f64;
        let want = ((1.0 - p) * (1.0 - p)) as f64;
        assert!((both - want).abs() < 5.0 * (want * (1.0 - want) / n as f64).sqrt() * 2.0, "p {p}: pairs {both}");
    }
}

#[test]
fn dropout_is_deterministic_from_a_seed() {
    let mut rng = Rng::new(12);
    let x = rand_tensor(&[37, 5], 0.5, 1.5, &mut rng);
    let a = x.dropout(0.3, &mut Rng::new(5), true).unwrap().to_vec();
    let b = x.dropout(0.3, &mut Rng::new(5), true).unwrap().to_vec();
    let c = x.dropout(0.3, &mut Rng::new(6), true).unwrap().to_vec();
    assert_eq!(a, b);
    assert_ne!(a, c);
    // Successive calls on one generator draw fresh masks.
    let mut r = Rng::new(5);
    let first = x.dropout(0.3, &mut r, true).unwrap().to_vec();
    let second = x.dropout(0.3, &mut r, true).unwrap().to_vec();
    assert_eq!(first, a);
    assert_ne!(first, second);
}

#[test]
fn dropout_gradient_is_mask_times_scale() {
    let mut rng = Rng::new(13);
    let x = rand_tensor(&[64, 9], 0.5, 1.5, &mut rng).requires_grad_();
    let p = 0.4;
    let y = x.dropout(p, &mut Rng::new(1), true).unwrap();
    assert_eq!(y.op_name(), Some("dropout"));
    let g = rand_tensor(&[64, 9], -1.0, 1.0, &mut rng);
    y.backward_with(&g).unwrap();
    let scale = 1.0 / (1.0 - p);
    // x is never 0, so the mask is visible in the output.
    let want: Vec<f64> = y
        .to_vec()
        .iter()
        .zip(g.to_vec())
        .map(|(&yv, gv)| if yv != 0.0 { gv as f64 * scale as f64 } else { 0.0 })
        .collect();
    assert_close("dropout grad", &x.grad().unwrap().to_vec(), &want, 1e-7, 1e-6);
}

#[test]
fn dropout_eval_and_p0_are_identity() {
    let mut rng = Rng::new(14);
    let x = rand_tensor(&[4, 5], -1.0, 1.0, &mut rng).requires_grad_();
    let mut r = Rng::new(3);
    let before = r.state();
    for (p, train) in [(0.5, false), (0.0, true), (0.0, false)] {
        let y = x.dropout(p, &mut r, train).unwrap();
        assert_eq!(y.to_vec(), x.to_vec());
        assert_eq!(y.op_name(), Some("leaf"), "the same tensor comes back");
    }
    assert_eq!(r.state(), before, "no random numbers drawn");
    x.dropout(0.5, &mut r, false).unwrap().sum_all().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec(), vec![1.0; 20]);
}

// ----- errors -----------------------------------------------------------------------------

#[test]
fn bad_inputs_give_typed_errors() {
    let x = Tensor::zeros([2, 3]);
    let s = |d: &[usize]| Shape::new(d.to_vec());
    // Axes.
    assert_eq!(x.softmax(2).unwrap_err(), Error::Axis { op: "softmax", axis: 2, rank: 2 });
    assert_eq!(x.log_softmax(-3).unwrap_err(), Error::Axis { op: "log_softmax", axis: -3, rank: 2 });
    assert_eq!(x.l2_normalize(5, 1e-12).unwrap_err(), Error::Axis { op: "l2_normalize", axis: 5, rank: 2 });
    let scalar = Tensor::scalar(1.0);
    assert!(matches!(scalar.layer_norm(None, None, 1e-5), Err(Error::Axis { op: "layer_norm", rank: 0, .. })));
    assert!(matches!(scalar.cross_entropy(&[0], Default::default()), Err(Error::Axis { op: "cross_entropy", .. })));
    // Empty reduced axis.
    let e = Tensor::zeros([3, 0]);
    for (op, r) in [
        ("softmax", e.softmax(-1)),
        ("log_softmax", e.log_softmax(1)),
        ("layer_norm", e.layer_norm(None, None, 1e-5)),
        ("rms_norm", e.rms_norm(None, 1e-5)),
        ("l2_normalize", e.l2_normalize(-1, 1e-12)),
        ("cross_entropy", e.cross_entropy(&[0, 0, 0], Default::default())),
    ] {
        assert_eq!(r.unwrap_err(), Error::Empty { op, shape: s(&[3, 0]) });
    }
    // Zero rows (but a non-empty reduced axis) are fine.
    assert_eq!(Tensor::zeros([0, 4]).softmax(-1).unwrap().shape(), &[0, 4]);
    assert_eq!(Tensor::zeros([0, 4]).layer_norm(None, None, 1e-5).unwrap().shape(), &[0, 4]);
    // Weight and bias shapes name both shapes.
    let w4 = Tensor::ones([4]);
    let e = x.layer_norm(Some(&w4), None, 1e-5).unwrap_err();
    assert_eq!(e, Error::ShapeMismatch { op: "layer_norm", lhs: s(&[2, 3]), rhs: s(&[4]) });
    assert_eq!(e.to_string(), "layer_norm: shapes differ: [2, 3] vs [4]");
    let w13 = Tensor::ones([1, 3]);
    assert_eq!(
        x.layer_norm(None, Some(&w13), 1e-5).unwrap_err(),
        Error::ShapeMismatch { op: "layer_norm", lhs: s(&[2, 3]), rhs: s(&[1, 3]) }
    );
    assert_eq!(
        x.rms_norm(Some(&w4), 1e-5).unwrap_err(),
        Error::ShapeMismatch { op: "rms_norm", lhs: s(&[2, 3]), rhs: s(&[4]) }
    );
    // eps.
    for eps in [-1.0, f32::NAN, f32::INFINITY] {
        assert!(matches!(x.layer_norm(None, None, eps), Err(Error::InvalidArgument { op: "layer_norm", .. })));
        assert!(matches!(x.rms_norm(None, eps), Err(Error::InvalidArgument { op: "rms_norm", .. })));
        assert!(matches!(x.l2_normalize(-1, eps), Err(Error::InvalidArgument { op: "l2_normalize", .. })));
    }
    // Cross-entropy: target count, target range, smoothing.
    let e = x.cross_entropy(&[0, 1, 2], Default::default()).unwrap_err();
    assert_eq!(e, Error::ShapeMismatch { op: "cross_entropy", lhs: s(&[2, 3]), rhs: s(&[3]) });
    assert!(e.to_string().contains("[2, 3]") && e.to_string().contains("[3]"), "{e}");
    assert_eq!(
        x.cross_entropy(&[0, 3], Default::default()).unwrap_err(),
        Error::Index { op: "cross_entropy", axis: 1, index: 3, size: 3, shape: s(&[2, 3]) }
    );
    let ignore7 = CrossEntropyOpts { ignore_index: Some(7), ..Default::default() };
    assert!(x.cross_entropy(&[7, 2], ignore7).is_ok(), "the ignore index may lie outside [0, C)");
    assert!(matches!(x.cross_entropy(&[8, 2], ignore7), Err(Error::Index { index: 8, .. })));
    for label_smoothing in [-0.1, 1.5, f32::NAN] {
        let opts = CrossEntropyOpts { label_smoothing, ..Default::default() };
        assert!(matches!(x.cross_entropy(&[0, 1], opts), Err(Error::InvalidArgument { op: "cross_entropy", .. })));
    }
    // Dropout probability.
    let mut r = Rng::new(0);
    for p in [1.0, -0.1, 1.5, f32::NAN] {
        for train in [true, false] {
            assert!(matches!(x.dropout(p, &mut r, train), Err(Error::InvalidArgument { op: "dropout", .. })), "p {p}");
        }
    }
}
