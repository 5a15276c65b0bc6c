//! The solver of spec §2.5. T6: `Q ≡ I` stops after two iterations with residual 0;
//! damping and patience follow §2.5 on scripted residuals; the training/evaluation
//! quantiles; the stopping rules; the last iterate is returned; random `ℓ_max` follows
//! Γ(4, θ). Theorem 3.1 of the paper (convergence from any start when `‖I − Q‖ < 1`),
//! and the growth of the iteration count with the sequence length.

mod fpr_common;

use fixpoint::Rng;
use fixpoint::fpr::{
    FpCore, Lmax, MixerKernel, SolveRun, SolveShape, SolverConfig, SolverState, quantile, solve, solver::gamma,
};
use fpr_common::{Problem, Ranges, max_err};

fn diag_reference(lambda: &[f32], bx: &[f32], b: usize, t: usize, d: usize) -> Vec<f64> {
    let mut h = vec![0.0f64; b * t * d];
    for bb in 0..b {
        for i in 0..d {
            let mut s = 0.0f64;
            for tt in 0..t {
                let o = (bb * t + tt) * d + i;
                let l = lambda[o] as f64;
                s = l * s + (1.0 - l) * bx[o] as f64;
                h[o] = s;
            }
        }
    }
    h
}

#[test]
fn identity_mixer_stops_after_two_iterations_with_zero_residual() {
    let mut rng = Rng::new(1);
    let (b, t, d) = (3, 17, 9);
    let lambda: Vec<f32> = (0..b * t * d).map(|_| rng.range(0.1, 0.99)).collect();
    let bx: Vec<f32> = (0..b * t * d).map(|_| rng.range(-1.0, 1.0)).collect();
    let core = FpCore::new(b, t, d, lambda.clone(), bx.clone(), MixerKernel::Identity).unwrap();
    for (q, lmax) in [(0.9, 100), (1.0, 1000)] {
        let run = SolveRun { quantile: q, lmax };
        let (h, stats) = core.solve(&SolverConfig::default(), &run, None).unwrap();
        assert_eq!(stats.iterations, 2);
        assert_eq!(stats.residual, vec![0.0; b]);
        assert_eq!(stats.last_residual, vec![0.0; b]);
        assert_eq!(stats.sample_iterations, vec![2; b]);
        assert!(stats.converged);
        let want = diag_reference(&lambda, &bx, b, t, d);
        let (err, _) = max_err(&h, &want);
        assert!(err < 1e-5, "diagonal fixed point off by {err}");
    }
}

#[test]
fn patience_and_damping_follow_the_script() {
    // Two samples, patience 3, decay 0.5, threshold 0.1.
    let cfg = SolverConfig { patience: 3, decay: 0.5, threshold: 0.1, ..SolverConfig::default() };
    let mut st = SolverState::new(2, &cfg);
    let run = SolveRun { quantile: 1.0, lmax: 100 };
    assert!(st.should_continue(&run), "the first iteration always runs");
    // Sample 0 improves, stalls three times (decays), improves, stalls.
    // Sample 1 improves to below the threshold at iteration 3.
    let script: [[f32; 2]; 8] =
        [[1.0, 0.8], [0.5, 0.4], [0.6, 0.05], [0.7, 0.06], [0.55, 0.07], [0.3, 0.08], [0.4, 0.09], [0.4, 0.2]];
    // (best, patience, step) of sample 0 after each iteration, written out by hand.
    let want0: [(f32, usize, f32); 8] = [
        (1.0, 3, 1.0),
        (0.5, 3, 1.0),
        (0.5, 2, 1.0),
        (0.5, 1, 1.0),
        (0.5, 3, 0.5), // patience ran out: reset to 3, step halves
        (0.3, 3, 0.5),
        (0.3, 2, 0.5),
        (0.3, 1, 0.5),
    ];
    let want1: [(f32, usize, f32); 8] = [
        (0.8, 3, 1.0),
        (0.4, 3, 1.0),
        (0.05, 3, 1.0),
        (0.05, 2, 1.0),
        (0.05, 1, 1.0),
        (0.05, 3, 0.5),
        (0.05, 2, 0.5),
        (0.05, 1, 0.5),
    ];
    for (k, res) in script.iter().enumerate() {
        st.update(res);
        assert_eq!((st.best[0], st.patience[0], st.stepsize[0]), want0[k], "sample 0 after iteration {}", k + 1);
        assert_eq!((st.best[1], st.patience[1], st.stepsize[1]), want1[k], "sample 1 after iteration {}", k + 1);
        assert_eq!(st.last, res.to_vec());
        // q = 1 waits for sample 0, q = 0 only for the best sample.
        assert!(st.should_continue(&run));
        assert_eq!(st.should_continue(&SolveRun { quantile: 0.0, lmax: 100 }), k < 2);
    }
    assert_eq!(st.reached, vec![None, Some(3)]);
    assert_eq!(st.iterations, 8);
    let stats = st.stats(&run);
    assert_eq!(stats.sample_iterations, vec![8, 3]);
    assert!(!stats.converged);
    // The cap stops it.
    assert!(!st.should_continue(&SolveRun { quantile: 1.0, lmax: 8 }));
}

#[test]
fn small_steps_stop_the_solver() {
    let cfg = SolverConfig { patience: 1, decay: 0.1, ..SolverConfig::default() };
    let mut st = SolverState::new(1, &cfg);
    let run = SolveRun { quantile: 1.0, lmax: 1000 };
    st.update(&[1.0]);
    // Every later residual fails to improve: the step decays 1 → 0.1 → 0.01 → 0.001 → 1e-4.
    let mut n = 1;
    while st.should_continue(&run) {
        st.update(&[2.0]);
        n += 1;
        assert!(n < 10);
    }
    assert!(st.stepsize[0] < 1e-3 && st.stepsize[0] > 1e-5, "{}", st.stepsize[0]);
    assert_eq!(n, 5);
}

#[test]
fn nan_residuals_count_as_infinite() {
    let cfg = SolverConfig::default();
    let mut st = SolverState::new(2, &cfg);
    st.update(&[f32::NAN, 0.01]);
    assert_eq!(st.best[0], f32::INFINITY);
    assert!(st.should_continue(&SolveRun { quantile: 1.0, lmax: 10 }));
    assert_eq!(quantile(&[f32::NAN, 0.0], 0.5), f32::INFINITY);
}

#[test]
fn quantiles_interpolate_between_order_statistics() {
    let v = [0.3f32, 0.1, 0.2, 0.4, 0.5];
    assert_eq!(quantile(&v, 0.0), 0.1);
    assert_eq!(quantile(&v, 1.0), 0.5);
    assert!((quantile(&v, 0.5) - 0.3).abs() < 1e-7);
    assert!((quantile(&v, 0.9) - 0.46).abs() < 1e-6); // pos 3.6: 0.4 + 0.6·0.1
    assert!((quantile(&v, 0.75) - 0.4).abs() < 1e-7);
    assert_eq!(quantile(&[0.1, f32::INFINITY], 0.5), f32::INFINITY);
    assert_eq!(quantile(&[0.1, f32::INFINITY], 0.0), 0.1);
    // Nine converged samples and one outlier: training (q = 0.9) stops, evaluation (q = 1)
    // does not; FP-Mamba's q = 0.75 stops too.
    let cfg = SolverConfig::default();
    let mut st = SolverState::new(10, &cfg);
    let mut res = vec![0.01f32; 10];
    res[3] = 0.5;
    st.update(&res);
    let mut rng = Rng::new(0);
    let train = SolveRun::new(&cfg, true, &mut rng);
    let eval = SolveRun::new(&cfg, false, &mut rng);
    assert_eq!((train.quantile, eval.quantile, eval.lmax), (0.9, 1.0, 1000));
    assert!((quantile(&st.best, 0.9) - 0.059).abs() < 1e-6);
    assert!(!st.should_continue(&train));
    assert!(st.should_continue(&eval));
    let mamba = SolverConfig::fp_mamba();
    assert_eq!((mamba.quantile_train, mamba.stepsize, mamba.decay), (0.75, 0.99, 0.9));
    assert!(!st.should_continue(&SolveRun::new(&mamba, true, &mut rng)));
}

fn shape1(dim: usize) -> SolveShape {
    SolveShape { batch: 1, time: 1, dim }
}

#[test]
fn first_iteration_always_runs_and_the_last_iterate_is_returned() {
    let cfg = SolverConfig::default();
    // F ≡ 0 from 0: residual 0/(0 + eps) = 0 after one iteration.
    let (y, st) = solve(shape1(2), &cfg, &SolveRun { quantile: 1.0, lmax: 10 }, None, |_, out| {
        out.fill(0.0);
        Ok(())
    })
    .unwrap();
    assert_eq!((st.iterations, y), (1, vec![0.0, 0.0]));
    // F(y) = 2y + 1 diverges: 1, 3, 7; the cap stops it and the last iterate comes back.
    let (y, st) = solve(shape1(1), &cfg, &SolveRun { quantile: 1.0, lmax: 3 }, None, |y, out| {
        out[0] = 2.0 * y[0] + 1.0;
        Ok(())
    })
    .unwrap();
    assert_eq!((st.iterations, y[0]), (3, 7.0));
    // Residuals 1, 2/3, 4/7: the best is the last here.
    assert!((st.residual[0] - 4.0 / 7.0).abs() < 1e-6);
    assert!(!st.converged);
}

#[test]
fn damping_rescues_a_divergent_iteration() {
    // F(y) = −2y + c oscillates and diverges; once patience runs out the damped map
    // y ← s F(y) + (1 − s) y = (1 − 3s) y + s c contracts (s < 2/3) to y* = c/3.
    let cfg = SolverConfig { patience: 2, decay: 0.5, threshold: 1e-6, ..SolverConfig::default() };
    let c = [3.0f32, -1.5, 0.6];
    let (y, st) = solve(shape1(3), &cfg, &SolveRun { quantile: 1.0, lmax: 500 }, None, |y, out| {
        for i in 0..3 {
            out[i] = -2.0 * y[i] + c[i];
        }
        Ok(())
    })
    .unwrap();
    assert!(st.converged, "{st:?}");
    assert!(st.stepsize[0] < 1.0);
    for i in 0..3 {
        assert!((y[i] - c[i] / 3.0).abs() < 1e-5, "{} vs {}", y[i], c[i] / 3.0);
    }
    // Without damping it never converges.
    let cfg = SolverConfig { threshold: 1e-6, ..SolverConfig::default() };
    let (_, st) = solve(shape1(3), &cfg, &SolveRun { quantile: 1.0, lmax: 50 }, None, |y, out| {
        for i in 0..3 {
            out[i] = -2.0 * y[i] + c[i];
        }
        Ok(())
    })
    .unwrap();
    assert!(!st.converged && st.iterations == 50);
}

#[test]
fn bad_settings_are_typed_errors() {
    let run = SolveRun { quantile: 1.0, lmax: 10 };
    let f = |_: &[f32], _: &mut [f32]| Ok(());
    for cfg in [
        SolverConfig { stepsize: 0.0, ..Default::default() },
        SolverConfig { decay: 1.5, ..Default::default() },
        SolverConfig { patience: 0, ..Default::default() },
        SolverConfig { quantile_train: 1.5, ..Default::default() },
        SolverConfig { lmax: Lmax::Fixed(0), ..Default::default() },
        SolverConfig { threshold: f32::NAN, ..Default::default() },
    ] {
        assert!(matches!(solve(shape1(1), &cfg, &run, None, f), Err(fixpoint::Error::InvalidArgument { .. })));
    }
    let cfg = SolverConfig::default();
    assert!(solve(shape1(2), &cfg, &run, Some(&[0.0]), f).is_err());
    assert!(solve(shape1(1), &cfg, &SolveRun { quantile: 1.0, lmax: 0 }, None, f).is_err());
}

/// `P(Γ(4, θ) ≤ x) = 1 − e^{−x/θ}(1 + x/θ + (x/θ)²/2 + (x/θ)³/6)` (sum of four
/// exponentials).
fn gamma4_cdf(x: f64, theta: f64) -> f64 {
    let z = x / theta;
    1.0 - (-z).exp() * (1.0 + z + z * z / 2.0 + z * z * z / 6.0)
}

#[test]
fn random_lmax_follows_gamma_four() {
    let mut rng = Rng::new(11);
    for (dist, theta) in [(Lmax::Paper, 1.0f64), (Lmax::Code { t_train: 16 }, 2.0), (Lmax::Code { t_train: 128 }, 9.0)]
    {
        let n = 20000;
        let mut counts = std::collections::HashMap::new();
        for _ in 0..n {
            let l = dist.sample(&mut rng);
            assert!(l >= 1);
            *counts.entry(l).or_insert(0usize) += 1;
        }
        // P(ceil(X) = k) = F(k) − F(k − 1); compare the most likely values.
        for k in 1..=(3.0 * theta) as usize + 1 {
            let p = gamma4_cdf(k as f64, theta) - gamma4_cdf(k as f64 - 1.0, theta);
            let got = *counts.get(&k).unwrap_or(&0) as f64 / n as f64;
            let sd = (p * (1.0 - p) / n as f64).sqrt();
            assert!((got - p).abs() < 5.0 * sd + 1e-3, "{dist:?}: P(ℓ = {k}) = {got} vs {p}");
        }
    }
    assert_eq!(Lmax::Fixed(7).sample(&mut rng), 7);
    // Mean of Γ(4, 3) is 12.
    let mean: f64 = (0..20000).map(|_| gamma(4.0, 3.0, &mut rng)).sum::<f64>() / 20000.0;
    assert!((mean - 12.0).abs() < 0.2, "{mean}");
}

#[test]
fn theorem_3_1_converges_from_any_start() {
    // ‖I − Q‖ < 1 (paper convention, c = 1; checked in f64) and λ ∈ (0, 1): the
    // iteration converges to the dense fixed point from random (large) starts.
    let mut rng = Rng::new(21);
    let mut checked = 0;
    for case in 0..40 {
        if checked == 10 {
            break;
        }
        let (b, t, d, r) = (2, 1 + rng.below(80), 1 + rng.below(24), 1 + rng.below(3));
        let ranges = Ranges { lambda: (0.01, 0.99), alpha_pre: (-4.0, 4.0), w_h_gain: None };
        let p = Problem::random(b, t, d, r, 1.0, &ranges, &mut rng);
        // ‖I − Q_t‖₂ ≤ ‖I − Q_t‖_F < 1 for every token.
        let contractive = (0..b * t).all(|row| {
            let (u, alpha) = p.coefficients(row, &vec![0.0; d]);
            let q = fpr_common::q_matrix(&u, &alpha, 1.0, d);
            let iq: Vec<f64> = fpr_common::identity(d).iter().zip(&q).map(|(a, b)| a - b).collect();
            fpr_common::frobenius(&iq) < 1.0
        });
        if !contractive {
            continue;
        }
        checked += 1;
        let (want, _) = p.dense_oracle(false);
        let core = p.core();
        let cfg = SolverConfig { threshold: 1e-6, ..SolverConfig::default() };
        let run = SolveRun { quantile: 1.0, lmax: 2000 };
        for scale in [0.0f32, 1.0, 100.0] {
            let start: Vec<f32> = (0..b * t * d).map(|_| scale * rng.normal()).collect();
            let (h, stats) = core.solve(&cfg, &run, Some(&start)).unwrap();
            assert!(stats.converged, "case {case} (T {t}, D {d}, r {r}) start scale {scale}: {stats:?}");
            let (err, mx) = max_err(&h, &want);
            assert!(err < 2e-5 * mx.max(1.0), "case {case} start scale {scale}: error {err}");
        }
    }
    assert_eq!(checked, 10, "only {checked} contractive cases");
}

#[test]
fn iterations_grow_far_slower_than_length() {
    // Random contractive parameters (rank 1, c = 2: ρ((I − Λ)(I − Q)) ≤ 2α·max(1 − λ) ≤
    // 2·σ(1.5)·0.5 < 0.82), state-dependent mixer. Median per-sample iterations to a
    // residual of 1e-5 at T = 1024 against T = 16.
    let cfg = SolverConfig { threshold: 1e-5, ..SolverConfig::default() };
    let run = SolveRun { quantile: 1.0, lmax: 2000 };
    let ranges = Ranges { lambda: (0.5, 0.99), alpha_pre: (-3.0, 1.5), w_h_gain: Some(0.5) };
    let median = |t: usize| {
        let mut rng = Rng::new(31);
        let p = Problem::random(8, t, 16, 1, 2.0, &ranges, &mut rng);
        let (_, stats) = p.core().solve(&cfg, &run, None).unwrap();
        assert!(stats.converged, "T {t}: {stats:?}");
        stats.median_iterations()
    };
    let (m16, m1024) = (median(16), median(1024));
    println!("median iterations: T = 16: {m16}, T = 1024: {m1024}");
    assert!(m1024 < 4 * m16, "T = 1024 needs {m1024} iterations, T = 16 needs {m16}");
}
