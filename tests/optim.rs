//! Optimisers against hand-written f64 reference updates, parameter groups, state
//! save/load, learning-rate schedules and gradient clipping.

#![allow(clippy::needless_range_loop)] // parallel arrays indexed by parameter number

use fixpoint::optim::{
    AdamW, AdamWConfig, LrSchedule, Optimizer, ParamGroup, Sgd, SgdConfig, clip_grad_norm, zero_grad,
};
use fixpoint::{Error, Rng, Tensor};

mod common;
use common::Bag;

fn bag(rng: &mut Rng, spec: &[(&str, usize)]) -> Bag {
    Bag(spec
        .iter()
        .map(|&(n, len)| {
            let v: Vec<f32> = (0..len).map(|_| rng.range(-1.0, 1.0)).collect();
            (n.to_string(), Tensor::from_vec(v, [len]).unwrap().requires_grad_())
        })
        .collect())
}

/// Replace parameter `t` by a fresh leaf with element `at` set to `x`.
fn set_value(t: &mut Tensor, at: usize, x: f32) {
    let mut v = t.to_vec();
    v[at] = x;
    *t = Tensor::from_vec(v, t.shape()).unwrap().requires_grad_();
}

fn values(m: &Bag) -> Vec<Vec<f64>> {
    m.0.iter().map(|(_, t)| t.to_vec().into_iter().map(f64::from).collect()).collect()
}

/// Random gradients for every parameter; returned as f64 for the reference.
fn set_random_grads(m: &Bag, rng: &mut Rng) -> Vec<Vec<f64>> {
    m.0.iter()
        .map(|(_, t)| {
            let g: Vec<f32> = (0..t.numel()).map(|_| rng.range(-2.0, 2.0)).collect();
            t.set_grad(Some(Tensor::from_vec(g.clone(), t.shape()).unwrap())).unwrap();
            g.into_iter().map(f64::from).collect()
        })
        .collect()
}

fn assert_vec_close(what: &str, got: &[Vec<f64>], want: &[Vec<f64>], tol: f64) {
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        for (i, (a, b)) in g.iter().zip(w).enumerate() {
            assert!((a - b).abs() <= tol * (1.0 + b.abs()), "{what}: param {k}[{i}]: got {a}, reference {b}");
        }
    }
}

// ----- AdamW ---------------------------------------------------------------------------

/// Reference AdamW state for one parameter.
#[derive(Clone)]
struct AdamRef {
    m: Vec<f64>,
    v: Vec<f64>,
    t: i32,
}

#[allow(clippy::too_many_arguments)]
fn adamw_ref(p: &mut [f64], g: &[f64], s: &mut AdamRef, lr: f64, wd: f64, b1: f64, b2: f64, eps: f64) {
    s.t += 1;
    for i in 0..p.len() {
        p[i] -= lr * wd * p[i];
        s.m[i] = b1 * s.m[i] + (1.0 - b1) * g[i];
        s.v[i] = b2 * s.v[i] + (1.0 - b2) * g[i] * g[i];
        let mh = s.m[i] / (1.0 - b1.powi(s.t));
        let vh = s.v[i] / (1.0 - b2.powi(s.t));
        p[i] -= lr * mh / (vh.sqrt() + eps);
    }
}

#[test]
fn adamw_matches_reference_over_steps() {
    let mut rng = Rng::new(1);
    let mut m = bag(&mut rng, &[("a", 7), ("b", 1), ("c", 65)]);
    let cfg = AdamWConfig { beta1: 0.8, beta2: 0.95, eps: 1e-6, weight_decay: 0.1 };
    let mut opt = AdamW::new(cfg).unwrap();
    let mut want = values(&m);
    let mut st: Vec<AdamRef> =
        want.iter().map(|p| AdamRef { m: vec![0.0; p.len()], v: vec![0.0; p.len()], t: 0 }).collect();
    for (step, lr) in [0.01f32, 0.02, 0.005, 0.01, 0.03].into_iter().enumerate() {
        let g = set_random_grads(&m, &mut rng);
        opt.step(&mut m, lr).unwrap();
        for k in 0..want.len() {
            adamw_ref(&mut want[k], &g[k], &mut st[k], lr as f64, 0.1, 0.8, 0.95, 1e-6);
        }
        assert_vec_close(&format!("adamw step {step}"), &values(&m), &want, 1e-5);
    }
}

#[test]
fn adamw_weight_decay_is_decoupled() {
    let mut rng = Rng::new(2);
    let mut m = bag(&mut rng, &[("w", 9), ("frozen", 3)]);
    let before = values(&m);
    // Zero gradient for "w", no gradient at all for "frozen".
    m.0[0].1.set_grad(Some(Tensor::zeros([9]))).unwrap();
    let (lr, wd) = (0.05f32, 0.2f32);
    let mut opt = AdamW::new(AdamWConfig { weight_decay: wd, ..AdamWConfig::default() }).unwrap();
    opt.step(&mut m, lr).unwrap();
    let after = values(&m);
    for (a, b) in after[0].iter().zip(&before[0]) {
        let want = b * (1.0 - lr as f64 * wd as f64);
        assert!((a - want).abs() <= 1e-6 * b.abs(), "decayed {a}, want {want}");
    }
    assert_eq!(after[1], before[1], "a parameter without gradient is untouched");
    // Coupled L2 (as in Adam) would have put wd*p into the moments; here they stay 0.
    let st = opt.state_tensors();
    let m_w = st.iter().find(|(n, _)| n == "w.exp_avg").unwrap().1.to_vec();
    assert!(m_w.iter().all(|&v| v == 0.0));
    assert!(!st.iter().any(|(n, _)| n.starts_with("frozen.")));
}

#[test]
fn parameter_groups_get_their_own_decay_and_lr() {
    let mut rng = Rng::new(3);
    let mut m = bag(&mut rng, &[("layer.weight", 5), ("layer.bias", 4), ("norm.weight", 3)]);
    let groups = vec![
        ParamGroup::predicate(|n: &str| n.ends_with("bias"), 0.0, 2.0),
        ParamGroup::names(["norm.weight"], 0.5, 0.1),
    ];
    let mut opt = AdamW::with_groups(AdamWConfig { weight_decay: 0.05, ..AdamWConfig::default() }, groups).unwrap();
    let mut want = values(&m);
    let settings = [(0.05, 1.0), (0.0, 2.0), (0.5, 0.1)];
    let mut st: Vec<AdamRef> =
        want.iter().map(|p| AdamRef { m: vec![0.0; p.len()], v: vec![0.0; p.len()], t: 0 }).collect();
    for _ in 0..3 {
        let g = set_random_grads(&m, &mut rng);
        opt.step(&mut m, 0.01).unwrap();
        for k in 0..3 {
            let (wd, scale) = settings[k];
            adamw_ref(&mut want[k], &g[k], &mut st[k], 0.01 * scale, wd, 0.9, 0.999, 1e-8);
        }
    }
    assert_vec_close("groups", &values(&m), &want, 1e-5);

    // A name group that names a missing parameter is an error, not silently ignored.
    let mut opt =
        AdamW::with_groups(AdamWConfig::default(), vec![ParamGroup::names(["nrom.weight"], 0.0, 1.0)]).unwrap();
    let e = opt.step(&mut m, 0.01).unwrap_err();
    assert!(e.to_string().contains("nrom.weight"), "{e}");
    assert!(AdamW::with_groups(AdamWConfig::default(), vec![ParamGroup::names(["x"], -1.0, 1.0)]).is_err());
}

#[test]
fn adamw_state_roundtrip_continues_identically() {
    let mut rng = Rng::new(4);
    let mut a = bag(&mut rng, &[("p", 6), ("q", 2)]);
    let mut opt_a = AdamW::new(AdamWConfig::default()).unwrap();
    for _ in 0..3 {
        set_random_grads(&a, &mut rng);
        opt_a.step(&mut a, 0.01).unwrap();
    }
    let saved = opt_a.state_tensors();
    let names: Vec<&str> = saved.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["p.exp_avg", "p.exp_avg_sq", "p.step", "q.exp_avg", "q.exp_avg_sq", "q.step"]);
    assert_eq!(saved[2].1.item().unwrap(), 3.0);
    let mut b = Bag(a
        .0
        .iter()
        .map(|(n, t)| (n.clone(), Tensor::from_vec(t.to_vec(), t.shape()).unwrap().requires_grad_()))
        .collect());
    let mut opt_b = AdamW::new(AdamWConfig::default()).unwrap();
    opt_b.load_state_tensors(&saved).unwrap();
    let g: Vec<Vec<f32>> = (0..2).map(|k| (0..a.0[k].1.numel()).map(|_| rng.range(-1.0, 1.0)).collect()).collect();
    for (m, opt) in [(&mut a, &mut opt_a as &mut dyn Optimizer), (&mut b, &mut opt_b as &mut dyn Optimizer)] {
        for (k, (_, t)) in m.0.iter().enumerate() {
            t.set_grad(Some(Tensor::from_vec(g[k].clone(), t.shape()).unwrap())).unwrap();
        }
        opt.step(m, 0.01).unwrap();
    }
    assert_eq!(values(&a), values(&b), "restored state gives the same update");

    let mut bad = saved.clone();
    bad.retain(|(n, _)| n != "q.step");
    assert!(opt_b.load_state_tensors(&bad).is_err());
    assert!(opt_b.load_state_tensors(&[("p.nonsense".to_string(), Tensor::zeros([6]))]).is_err());
    // State of the wrong size for the parameter is caught at the next step.
    let wrong = vec![
        ("p.exp_avg".to_string(), Tensor::zeros([5])),
        ("p.exp_avg_sq".to_string(), Tensor::zeros([5])),
        ("p.step".to_string(), Tensor::scalar(1.0)),
    ];
    opt_b.load_state_tensors(&wrong).unwrap();
    set_random_grads(&b, &mut rng);
    assert!(opt_b.step(&mut b, 0.01).is_err());
}

#[test]
fn adamw_rejects_bad_hyperparameters() {
    assert!(matches!(
        AdamW::new(AdamWConfig { beta1: 1.0, ..AdamWConfig::default() }),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(AdamW::new(AdamWConfig { eps: -1.0, ..AdamWConfig::default() }).is_err());
    let mut opt = AdamW::new(AdamWConfig::default()).unwrap();
    let mut m = bag(&mut Rng::new(0), &[("p", 2)]);
    assert!(opt.step(&mut m, f32::NAN).is_err());
}

#[test]
fn adamw_reports_a_value_its_update_makes_non_finite() {
    // "p" is large enough for the parallel chunked update, "q" takes the serial one.
    for threads in [1, 2] {
        for (bad, at) in [("p", 99_999usize), ("q", 3)] {
            fixpoint::cpu::par::with_threads(Some(threads), || {
                let mut rng = Rng::new(9);
                let mut m = bag(&mut rng, &[("p", 100_000), ("q", 5)]);
                let cfg = AdamWConfig { weight_decay: 0.0, ..AdamWConfig::default() };
                let mut opt = AdamW::new(cfg).unwrap();
                assert!(!opt.wrote_finite_values(), "nothing written before the first step");
                set_random_grads(&m, &mut rng);
                opt.step(&mut m, 0.01).unwrap();
                assert!(opt.wrote_finite_values(), "a healthy step checked what it wrote");
                // f32::MAX pushed up by a step of about 5e37 (lr 1e37 over 1 - 0.9²)
                // overflows; the other values move by less than that.
                let k = m.0.iter().position(|(n, _)| n == bad).unwrap();
                set_value(&mut m.0[k].1, at, f32::MAX);
                set_random_grads(&m, &mut rng);
                let (_, t) = &m.0[k];
                let mut g = t.grad().unwrap().to_vec();
                g[at] = -1e6; // outweighs the first step's moment, so the step is upward
                t.set_grad(Some(Tensor::from_vec(g, t.shape()).unwrap())).unwrap();
                match opt.step(&mut m, 1e37) {
                    Err(Error::Diverged { param: Some(p), .. }) => assert_eq!(p, format!("{bad} (value)")),
                    other => panic!("{threads} threads, {bad}[{at}]: expected Diverged, got {other:?}"),
                }
                assert!(!opt.wrote_finite_values(), "a failed step vouches for nothing");
            })
            .unwrap();
        }
    }
}

#[test]
fn the_guard_reads_values_until_adamw_has_checked_them() {
    use fixpoint::train::guard::check_step_after;
    let mut rng = Rng::new(10);
    let mut m = bag(&mut rng, &[("p", 70_000), ("q", 5)]);
    let mut opt = AdamW::new(AdamWConfig::default()).unwrap();
    let poison = |m: &mut Bag| set_value(&mut m.0[1].1, 2, f32::NAN);
    let clean = values(&m);
    // First step of a process: the values are read, so a bad one stops the run.
    poison(&mut m);
    set_random_grads(&m, &mut rng);
    match check_step_after(1, 0.5, &m, &opt) {
        Err(Error::Diverged { step: 1, param: Some(p), .. }) => assert_eq!(p, "q (value)"),
        other => panic!("expected Diverged at q's value, got {other:?}"),
    }
    // Restore, step once: AdamW now vouches for what it wrote and the guard skips the
    // values (so a value changed behind the optimiser's back goes unread).
    for ((_, t), c) in m.0.iter_mut().zip(&clean) {
        let v: Vec<f32> = c.iter().map(|&x| x as f32).collect();
        *t = Tensor::from_vec(v, t.shape()).unwrap().requires_grad_();
    }
    set_random_grads(&m, &mut rng);
    check_step_after(1, 0.5, &m, &opt).unwrap();
    opt.step(&mut m, 0.01).unwrap();
    assert!(opt.wrote_finite_values());
    poison(&mut m);
    set_random_grads(&m, &mut rng);
    check_step_after(2, 0.5, &m, &opt).unwrap();
    // Loading a state (a resumed run) makes the guard read the values again.
    opt.load_state_tensors(&opt.state_tensors()).unwrap();
    assert!(!opt.wrote_finite_values());
    assert!(check_step_after(2, 0.5, &m, &opt).is_err());
}

// ----- SGD -------------------------------------------------------------------------------

fn sgd_ref(p: &mut [f64], g: &[f64], buf: &mut Option<Vec<f64>>, lr: f64, cfg: (f64, f64, bool, f64)) {
    let (mu, damp, nesterov, wd) = cfg;
    let mut d: Vec<f64> = g.iter().zip(p.iter()).map(|(g, p)| g + wd * p).collect();
    if mu != 0.0 {
        let b = match buf.take() {
            None => d.clone(),
            Some(b) => b.iter().zip(&d).map(|(b, d)| mu * b + (1.0 - damp) * d).collect(),
        };
        if nesterov {
            d = d.iter().zip(&b).map(|(d, b)| d + mu * b).collect();
        } else {
            d = b.clone();
        }
        *buf = Some(b);
    }
    for (p, d) in p.iter_mut().zip(&d) {
        *p -= lr * d;
    }
}

#[test]
fn sgd_matches_reference_over_steps() {
    for (mu, damp, nesterov, wd) in
        [(0.0, 0.0, false, 0.0), (0.9, 0.0, false, 0.01), (0.9, 0.0, true, 0.0), (0.5, 0.3, false, 0.1)]
    {
        let mut rng = Rng::new(5);
        let mut m = bag(&mut rng, &[("a", 8), ("b", 3)]);
        let cfg = SgdConfig { momentum: mu, dampening: damp, nesterov, weight_decay: wd };
        let mut opt = Sgd::new(cfg).unwrap();
        let mut want = values(&m);
        let mut bufs: Vec<Option<Vec<f64>>> = vec![None, None];
        for lr in [0.1f32, 0.05, 0.2, 0.1] {
            let g = set_random_grads(&m, &mut rng);
            opt.step(&mut m, lr).unwrap();
            for k in 0..2 {
                sgd_ref(&mut want[k], &g[k], &mut bufs[k], lr as f64, (mu as f64, damp as f64, nesterov, wd as f64));
            }
        }
        assert_vec_close(&format!("sgd {cfg:?}"), &values(&m), &want, 1e-5);
        assert_eq!(opt.state_tensors().len(), if mu != 0.0 { 2 } else { 0 });
    }
    assert!(Sgd::new(SgdConfig { nesterov: true, ..SgdConfig::default() }).is_err(), "nesterov needs momentum");
}

#[test]
fn sgd_groups_and_state_roundtrip() {
    let mut rng = Rng::new(6);
    let mut m = bag(&mut rng, &[("w", 4), ("b", 2)]);
    let groups = vec![ParamGroup::names(["b"], 0.0, 0.5)];
    let cfg = SgdConfig { momentum: 0.9, weight_decay: 0.1, ..SgdConfig::default() };
    let mut opt = Sgd::with_groups(cfg, groups.clone()).unwrap();
    let mut want = values(&m);
    let mut bufs: Vec<Option<Vec<f64>>> = vec![None, None];
    for _ in 0..3 {
        let g = set_random_grads(&m, &mut rng);
        opt.step(&mut m, 0.1).unwrap();
        sgd_ref(&mut want[0], &g[0], &mut bufs[0], 0.1, (0.9, 0.0, false, 0.1));
        sgd_ref(&mut want[1], &g[1], &mut bufs[1], 0.05, (0.9, 0.0, false, 0.0));
    }
    assert_vec_close("sgd groups", &values(&m), &want, 1e-5);
    let saved = opt.state_tensors();
    let mut opt2 = Sgd::with_groups(cfg, groups).unwrap();
    opt2.load_state_tensors(&saved).unwrap();
    assert_eq!(
        saved.iter().map(|(n, t)| (n.clone(), t.to_vec())).collect::<Vec<_>>(),
        opt2.state_tensors().iter().map(|(n, t)| (n.clone(), t.to_vec())).collect::<Vec<_>>()
    );
}

#[test]
fn zero_grad_clears_every_gradient() {
    let mut rng = Rng::new(7);
    let m = bag(&mut rng, &[("a", 3), ("b", 2)]);
    set_random_grads(&m, &mut rng);
    assert!(m.0.iter().all(|(_, t)| t.grad().is_some()));
    zero_grad(&m);
    assert!(m.0.iter().all(|(_, t)| t.grad().is_none()));
}

// ----- schedules ---------------------------------------------------------------------------

#[test]
fn warmup_cosine_key_steps() {
    let (peak, fin) = (1e-3f32, 1e-5f32);
    let s = LrSchedule::warmup_cosine(peak, 10, 110, fin).unwrap();
    let close = |a: f32, b: f64| (a as f64 - b).abs() <= 1e-6 * b.abs().max(1e-3);
    assert!(close(s.lr_at(0), peak as f64 / 10.0), "first warmup step is peak/warmup");
    assert!(close(s.lr_at(4), peak as f64 * 5.0 / 10.0));
    assert!(close(s.lr_at(9), peak as f64), "warmup ends at the peak");
    assert!(close(s.lr_at(10), peak as f64), "decay starts at the peak");
    assert!(close(s.lr_at(60), (peak as f64 + fin as f64) / 2.0), "halfway through the decay");
    let quarter = fin as f64 + (peak as f64 - fin as f64) * 0.5 * (1.0 + (std::f64::consts::PI / 4.0).cos());
    assert!(close(s.lr_at(35), quarter));
    assert!(close(s.lr_at(110), fin as f64));
    assert!(close(s.lr_at(10_000), fin as f64), "stays at the final lr");
    // Monotone after warmup.
    assert!((10..110).all(|k| s.lr_at(k + 1) <= s.lr_at(k)));
    // No warmup: starts at the peak.
    let s0 = LrSchedule::warmup_cosine(peak, 0, 50, 0.0).unwrap();
    assert!(close(s0.lr_at(0), peak as f64));
    assert_eq!(LrSchedule::constant(0.3).unwrap().lr_at(12345), 0.3);
    assert!(LrSchedule::warmup_cosine(peak, 20, 10, fin).is_err());
    assert!(LrSchedule::warmup_cosine(-1.0, 0, 10, fin).is_err());
    assert!(LrSchedule::constant(f32::INFINITY).is_err());
}

// ----- clipping ----------------------------------------------------------------------------

#[test]
fn clip_grad_norm_scales_to_max_norm() {
    let mut rng = Rng::new(8);
    let m = bag(&mut rng, &[("a", 5), ("b", 63), ("nograd", 2)]);
    let g = set_random_grads(&m, &mut rng);
    m.0[2].1.zero_grad();
    let norm = (g[0].iter().chain(&g[1]).map(|v| v * v).sum::<f64>()).sqrt();
    // Above the norm: nothing changes.
    let got = clip_grad_norm(&m, (norm * 2.0) as f32).unwrap();
    assert!((got as f64 - norm).abs() <= 1e-6 * norm);
    assert_eq!(m.0[0].1.grad().unwrap().to_vec(), g[0].iter().map(|&v| v as f32).collect::<Vec<_>>());
    // Below: every gradient scaled by max/norm, the global norm becomes max.
    let max = (norm / 3.0) as f32;
    let got = clip_grad_norm(&m, max).unwrap();
    assert!((got as f64 - norm).abs() <= 1e-6 * norm, "returns the norm before clipping");
    let scale = max as f64 / (norm + 1e-6);
    for k in 0..2 {
        let now: Vec<f64> = m.0[k].1.grad().unwrap().to_vec().into_iter().map(f64::from).collect();
        for (a, b) in now.iter().zip(&g[k]) {
            assert!((a - b * scale).abs() <= 1e-6 * (1.0 + b.abs()));
        }
    }
    let after =
        m.0[..2].iter().flat_map(|(_, t)| t.grad().unwrap().to_vec()).map(|v| (v as f64).powi(2)).sum::<f64>().sqrt();
    assert!((after - max as f64).abs() <= 1e-5 * max as f64);
    assert!(m.0[2].1.grad().is_none());
    assert!(clip_grad_norm(&m, 0.0).is_err());
    assert!(clip_grad_norm(&m, f32::NAN).is_err());
}
