//! T1 (spec §9): the fixed point of the parallel iteration (§2.1, solved by the §2.5
//! solver in f32) equals the sequential dense RNN with explicit
//! `A_t = (I + (Λ_t⁻¹ − I) Q_t)⁻¹`, computed token by token in f64 by the test's own
//! oracle, with and without hidden-state dependence of the mixer (then `Q_t` uses
//! `h*_{t−1}`). Parameters are drawn so that `max_t ρ((I − Λ_t)(I − Q_t)) < 0.9`,
//! certified in f64 by an upper bound on ρ.
//!
//! Accuracy: the f32 fixed point (relative residual tolerance 1e-6, ℓ_max 500) must be
//! within `2e-5 · max(1, max|h|)` of the f64 dense recurrence (the tolerance amplified
//! by at most `1/(1 − ρ) = 10`, times 2); the library's own token-by-token dense solve
//! (`dense-seq`, f64 inside, f32 coefficients) within `5e-6 · max(1, max|h|)`. Measured
//! over 120 random cases (λ ∈ (0.4, 0.99), ρ up to 0.9): worst 8.3e-6 and 1.6e-6, with
//! 8 to 168 iterations. The time-blocked solve (`FpCore::solve_chunked`) is not held to
//! this bound: each block stops on its own residual and its error feeds the next
//! block's carry, so on long-memory problems its error can exceed the parallel solve's
//! (a proptest case: D 1, T 121, blocks of 5, 7.4e-5 against a bound of 4.6e-5).

mod fpr_common;

use fixpoint::Rng;
use fixpoint::fpr::{SolveRun, SolverConfig};
use fpr_common::{Problem, Ranges, identity, inverse, matmul, max_err, q_matrix};
use proptest::prelude::*;

/// Error bound of the f32 parallel fixed point, relative to `max(1, max|h|)`.
const PARALLEL_BOUND: f64 = 2e-5;
/// Error bound of the library's sequential dense solve (f64 inside, f32 out).
const SEQUENTIAL_BOUND: f64 = 5e-6;

fn tight_solver() -> (SolverConfig, SolveRun) {
    let cfg = SolverConfig { threshold: 1e-6, eval_lmax: 500, ..SolverConfig::default() };
    (cfg, SolveRun { quantile: 1.0, lmax: 500 })
}

#[test]
fn dense_transition_identity_in_f64() {
    // (Λ + (I − Λ)Q)⁻¹ Λ = (I + (Λ⁻¹ − I)Q)⁻¹ on random data (T1's algebraic identity).
    let mut rng = Rng::new(3);
    for &(d, r) in &[(1usize, 1usize), (5, 2), (6, 3), (9, 4)] {
        let u: Vec<f64> = {
            let mut u: Vec<f64> = (0..r * d).map(|_| rng.normal() as f64).collect();
            for ui in u.chunks_mut(d) {
                let n = ui.iter().map(|v| v * v).sum::<f64>().sqrt();
                ui.iter_mut().for_each(|v| *v /= n);
            }
            u
        };
        let alpha: Vec<f64> = (0..r).map(|_| rng.range(0.05, 0.95) as f64).collect();
        let q = q_matrix(&u, &alpha, 2.0, d);
        let lam: Vec<f64> = (0..d).map(|_| rng.range(0.5, 0.99) as f64).collect();
        let mut m = vec![0.0; d * d];
        let mut n = vec![0.0; d * d];
        let mut l = vec![0.0; d * d];
        for i in 0..d {
            l[i * d + i] = lam[i];
            for j in 0..d {
                m[i * d + j] = (1.0 - lam[i]) * q[i * d + j] + if i == j { lam[i] } else { 0.0 };
                n[i * d + j] = (1.0 / lam[i] - 1.0) * q[i * d + j] + if i == j { 1.0 } else { 0.0 };
            }
        }
        let lhs = matmul(&inverse(&m, d).unwrap(), &l, d);
        let rhs = inverse(&n, d).unwrap();
        for (a, b) in lhs.iter().zip(&rhs) {
            assert!((a - b).abs() < 1e-12, "d {d} r {r}: {a} vs {b}");
        }
        // Sanity of the oracle's Q: QᵀQ = I for α = 1 (reflections).
        let q1 = q_matrix(&u, &vec![1.0; r], 2.0, d);
        let mut qtq = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..d {
                qtq[i * d + j] = (0..d).map(|k| q1[k * d + i] * q1[k * d + j]).sum();
            }
        }
        for (a, b) in qtq.iter().zip(identity(d)) {
            assert!((a - b).abs() < 1e-12);
        }
    }
}

fn check_case(b: usize, t: usize, d: usize, r: usize, state: bool, seed: u64) -> Option<(f64, f64, usize)> {
    let mut rng = Rng::new(seed);
    let ranges = Ranges { lambda: (0.4, 0.99), alpha_pre: (-3.0, 2.0), w_h_gain: state.then_some(0.5) };
    let p = Problem::random(b, t, d, r, 2.0, &ranges, &mut rng);
    let (want, rho) = p.dense_oracle(true);
    if rho >= 0.9 {
        return None;
    }
    let scale = want.iter().map(|w| w.abs()).fold(1.0f64, f64::max);
    // Conditioning: ρ < 0.9 of the parallel iteration does not bound how much the
    // sequential recurrence amplifies rounding (with λ near 1 and a near-orthogonal
    // A_t it remembers hundreds of tokens; with a state-dependent Q it is non-linear).
    // Nudge every input the library rounds to f32 (b⊙x, the mixer pre-activations and
    // λ) by 1e-6 relative with random signs (a few f32 ulps; a uniform scaling would
    // miss the amplification, being exact for a linear problem) and move on when the
    // exact (f64) solution moves by more than 1e-5 relative: no f32 solver can be asked
    // to agree with the oracle better than the problem's own sensitivity to f32-sized
    // changes of its inputs.
    let mut nudged = p.clone();
    let mut signs = Rng::new(seed ^ 0x9e37_79b9_7f4a_7c15);
    for v in nudged.bx.iter_mut().chain(nudged.base.iter_mut()).chain(nudged.lambda.iter_mut()) {
        *v *= 1.0 + if signs.range(0.0, 1.0) < 0.5 { -1e-6 } else { 1e-6 };
    }
    let (moved, _) = nudged.dense_oracle(false);
    let sensitivity = moved.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f64, f64::max) / scale;
    if sensitivity > 1e-5 {
        return None;
    }
    let core = p.core();
    let (cfg, run) = tight_solver();
    let (h, stats) = core.solve(&cfg, &run, None).unwrap();
    let (err, _) = max_err(&h, &want);
    assert!(
        err <= PARALLEL_BOUND * scale,
        "B {b} T {t} D {d} r {r} state {state}: parallel fixed point off by {err:e} (max |h| {scale}, {} iterations, residual {:?})",
        stats.iterations,
        stats.residual
    );
    let seq = core.solve_sequential().unwrap();
    let (err_seq, _) = max_err(&seq, &want);
    assert!(err_seq <= SEQUENTIAL_BOUND * scale, "B {b} T {t} D {d} r {r} state {state}: dense-seq off by {err_seq:e}");
    Some((err / scale, err_seq / scale, stats.iterations))
}

#[test]
fn fixed_cases_with_odd_sizes() {
    let mut worst = (0.0f64, 0.0f64, 0usize);
    let mut checked = 0;
    for (i, &(b, t, d, r)) in
        [(1, 1, 1, 1), (2, 7, 5, 2), (1, 300, 8, 3), (3, 65, 64, 1), (2, 63, 17, 4), (1, 300, 64, 2)].iter().enumerate()
    {
        for state in [false, true] {
            if let Some((e, es, it)) = check_case(b, t, d, r, state, 100 + i as u64) {
                worst = (worst.0.max(e), worst.1.max(es), worst.2.max(it));
                checked += 1;
            }
        }
    }
    println!("worst relative error: parallel {:e}, dense-seq {:e}; most iterations {}", worst.0, worst.1, worst.2);
    // The ρ and conditioning filters must leave most of the 12 cases to check.
    assert!(checked >= 9, "only {checked} of 12 cases were well-conditioned enough to check");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn fixed_point_equals_dense_recurrence(
        b in 1usize..4, t in 1usize..=300, d in 1usize..=64, r in 1usize..=4,
        state in any::<bool>(), seed in any::<u64>(),
    ) {
        let res = check_case(b, t, d, r, state, seed);
        prop_assume!(res.is_some());
    }
}

/// One evaluation of `F` (the fused per-sequence pass of `FpCore::step`) against `F`
/// evaluated in f64 from the spec (§2.1: `x̃ = Q(b⊙x − h) + h` with `Q_t` from
/// `shift(h)`, then the diagonal scan); and bit for bit the same as the two-pass
/// evaluation and at 1, 2 and 3 threads (3 sequences < 4 threads takes the two-pass path).
#[test]
fn one_step_is_f_and_the_same_on_every_path() {
    for (i, &(b, t, d, r)) in [(3, 17, 8, 2), (1, 5, 1, 1), (2, 33, 13, 3), (4, 9, 64, 4)].iter().enumerate() {
        for state in [false, true] {
            let ranges = Ranges { lambda: (0.3, 0.95), alpha_pre: (-2.0, 2.0), w_h_gain: state.then_some(0.7) };
            let mut rng = Rng::new(40 + i as u64);
            let p = Problem::random(b, t, d, r, 2.0, &ranges, &mut rng);
            let h: Vec<f32> = (0..b * t * d).map(|_| rng.range(-1.0, 1.0)).collect();
            let core = p.core();
            let run = |threads: usize, two_pass: bool| {
                fixpoint::cpu::par::with_threads(Some(threads), || {
                    let mut out = vec![f32::NAN; h.len()];
                    let mut ws = fixpoint::fpr::Workspace::default();
                    if two_pass { core.step_two_pass(&h, &mut out, &mut ws) } else { core.step(&h, &mut out, &mut ws) }
                        .unwrap();
                    out
                })
                .unwrap()
            };
            let fused = run(1, false);
            for (threads, two_pass) in [(2, false), (4, false), (1, true), (2, true)] {
                assert_eq!(
                    run(threads, two_pass),
                    fused,
                    "case {i} state {state}: {threads} threads, two-pass {two_pass}"
                );
            }
            // f64 reference.
            let mut want = vec![0.0f64; h.len()];
            for s in 0..b {
                let mut carry = vec![0.0f64; d];
                for k in 0..t {
                    let row = s * t + k;
                    let h_prev: Vec<f64> = if k == 0 {
                        vec![0.0; d]
                    } else {
                        h[(row - 1) * d..row * d].iter().map(|&v| v as f64).collect()
                    };
                    let (u, alpha) = p.coefficients(row, &h_prev);
                    let q = q_matrix(&u, &alpha, 2.0, d);
                    for j in 0..d {
                        let o = row * d;
                        let xt: f64 =
                            (0..d).map(|m| q[j * d + m] * (p.bx[o + m] as f64 - h[o + m] as f64)).sum::<f64>()
                                + h[o + j] as f64;
                        let lam = p.lambda[o + j] as f64;
                        carry[j] = lam * carry[j] + (1.0 - lam) * xt;
                        want[o + j] = carry[j];
                    }
                }
            }
            let (e, m) = max_err(&fused, &want);
            assert!(e <= 2e-5 * m.max(1.0), "case {i} state {state}: error {e:e} (scale {m})");
        }
    }
}

/// The time-blocked solve: the same bits at 1, 2 and 3 threads (each sequence is one
/// task), statistics that add up (mean evaluations per row between the fewest and the
/// most a block took), and bad arguments as errors.
#[test]
fn chunked_solve_is_thread_independent_and_checks_its_arguments() {
    let ranges = Ranges { lambda: (0.4, 0.95), alpha_pre: (-2.0, 2.0), w_h_gain: Some(0.5) };
    let p = Problem::random(3, 37, 12, 2, 2.0, &ranges, &mut Rng::new(9));
    let core = p.core();
    let (cfg, _) = tight_solver();
    let runs: Vec<_> = [1, 2, 3]
        .iter()
        .map(|&n| fixpoint::cpu::par::with_threads(Some(n), || core.solve_chunked(&cfg, 500, 8)).unwrap().unwrap())
        .collect();
    for r in &runs[1..] {
        assert_eq!(
            r.0.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            runs[0].0.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        assert_eq!(r.1, runs[0].1);
    }
    let s = &runs[0].1;
    assert_eq!((s.block, s.blocks, s.iterations.len()), (8, 5, 15));
    let mean = s.mean_row_iterations(37);
    let (lo, hi) = (*s.iterations.iter().min().unwrap() as f64, s.max_iterations() as f64);
    assert!(lo <= mean && mean <= hi, "{mean} outside [{lo}, {hi}]");
    assert!(core.solve_chunked(&cfg, 0, 8).is_err());
    assert!(core.solve_chunked(&cfg, 10, 0).is_err());
}

/// `steps(h, k)` (k iterations in one pass over memory when `Q` ignores `h`) gives
/// the bits of `k` calls of `step_with_residuals`, and the same residuals, on the fused
/// path, the two-pass path (3 sequences at 4 threads) and with a state-dependent mixer
/// (one call per iteration); bad arguments are errors. The solve, which takes its
/// iterations two at a time while undamped, gives the iterates and statistics of one
/// iteration per call: undamped, damped from the start, with steps that decay mid-run
/// (patience 1, decay ½), with budgets that end on either iteration of a pair, and at
/// several thresholds (so that some solve converges on the first iteration of a pair).
#[test]
fn multi_iteration_steps_and_solve_match_single_steps() {
    use fixpoint::fpr::solver::solve_with;
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let (mut odd_converged, mut decayed) = (false, false);
    for (b, state) in [(5, false), (5, true), (3, false), (6, false)] {
        let ranges = Ranges { lambda: (0.3, 0.95), alpha_pre: (-2.0, 2.0), w_h_gain: state.then_some(0.7) };
        let mut rng = Rng::new(91 + b as u64);
        let p = Problem::random(b, 23, 17, 2, 2.0, &ranges, &mut rng);
        let h: Vec<f32> = (0..b * 23 * 17).map(|_| rng.range(-1.0, 1.0)).collect();
        let core = p.core();
        assert_eq!(core.multi_step(), !state);
        for threads in [1, 2, 4] {
            fixpoint::cpu::par::with_threads(Some(threads), || {
                let mut ws = fixpoint::fpr::Workspace::default();
                for k in 1..=3 {
                    let (mut want, mut cur) = (vec![0.0f32; h.len()], h.clone());
                    let mut want_res = vec![0.0f32; k * b];
                    for j in 0..k {
                        core.step_with_residuals(&cur, &mut want, &mut ws, 1e-8, &mut want_res[j * b..(j + 1) * b])
                            .unwrap();
                        cur.copy_from_slice(&want);
                    }
                    let (mut got, mut res) = (vec![f32::NAN; h.len()], vec![f32::NAN; k * b]);
                    core.steps(&h, &mut got, &mut ws, k, Some((1e-8, &mut res))).unwrap();
                    let at = format!("b {b} state {state} threads {threads} k {k}");
                    assert_eq!(bits(&got), bits(&want), "{at}");
                    assert_eq!(bits(&res), bits(&want_res), "{at}");
                    let mut plain = vec![f32::NAN; h.len()];
                    core.steps(&h, &mut plain, &mut ws, k, None).unwrap();
                    assert_eq!(bits(&plain), bits(&want), "{at}");
                }
                let mut out = vec![0.0f32; h.len()];
                assert!(core.steps(&h, &mut out, &mut ws, 0, None).is_err());
                assert!(core.steps(&h, &mut out, &mut ws, 2, Some((1e-8, &mut vec![0.0; b]))).is_err());
                assert!(core.steps(&h[1..], &mut out[1..], &mut ws, 2, None).is_err());
                let (base, _) = tight_solver();
                let p = base.patience;
                let t = base.threshold;
                let settings = [
                    (1.0f32, p, 1.0, 500, t),
                    (0.7, p, 1.0, 500, t),
                    (1.0, 1, 0.5, 500, t),
                    (1.0, p, 1.0, 7, t),
                    (1.0, p, 1.0, 8, t),
                    (1.0, p, 1.0, 500, 1e-3),
                    (1.0, p, 1.0, 500, 1e-4),
                    (1.0, p, 1.0, 500, 1e-5),
                ];
                for (stepsize, patience, decay, lmax, threshold) in settings {
                    let cfg = SolverConfig { stepsize, patience, decay, threshold, eval_lmax: lmax, ..base };
                    let run = SolveRun { quantile: 1.0, lmax };
                    let (ours, st) = core.solve(&cfg, &run, None).unwrap();
                    let mut ws2 = fixpoint::fpr::Workspace::default();
                    let (theirs, st2) = solve_with(core.shape(), &cfg, &run, None, |y, out, r| {
                        core.step_with_residuals(y, out, &mut ws2, cfg.eps, r)
                    })
                    .unwrap();
                    let at = format!(
                        "b {b} state {state} threads {threads} step {stepsize} patience {patience} lmax {lmax}"
                    );
                    assert_eq!(bits(&ours), bits(&theirs), "{at}");
                    assert_eq!(st, st2, "{at}");
                    assert!(st.iterations > 3, "{at}: {st:?}");
                    odd_converged |= st.converged && st.iterations % 2 == 1;
                    decayed |= stepsize == 1.0 && st.stepsize.iter().any(|&s| s < 1.0);
                }
            })
            .unwrap();
        }
    }
    assert!(odd_converged, "no solve converged on the first iteration of a pair");
    assert!(decayed, "no undamped solve decayed a step mid-run");
}

/// The solver's step with its residuals taken in the same pass: the same `F(h)` as
/// `step` and the same per-sequence residuals as the solver's separate residual pass,
/// bit for bit, at 1, 2 and 3 threads (3 sequences take the two-pass path at 4+), and a
/// wrong residual length is an error.
#[test]
fn step_with_residuals_matches_step_and_residuals() {
    for state in [false, true] {
        let ranges = Ranges { lambda: (0.3, 0.95), alpha_pre: (-2.0, 2.0), w_h_gain: state.then_some(0.7) };
        let mut rng = Rng::new(77);
        let p = Problem::random(5, 29, 19, 2, 2.0, &ranges, &mut rng);
        let h: Vec<f32> = (0..5 * 29 * 19).map(|_| rng.range(-1.0, 1.0)).collect();
        let core = p.core();
        for threads in [1, 2, 3] {
            fixpoint::cpu::par::with_threads(Some(threads), || {
                let mut ws = fixpoint::fpr::Workspace::default();
                let mut want = vec![0.0f32; h.len()];
                core.step(&h, &mut want, &mut ws).unwrap();
                let mut want_res = vec![0.0f32; 5];
                fixpoint::fpr::solver::residuals(&h, &want, 29, 19, 1e-8, &mut want_res);
                let mut got = vec![f32::NAN; h.len()];
                let mut res = vec![f32::NAN; 5];
                core.step_with_residuals(&h, &mut got, &mut ws, 1e-8, &mut res).unwrap();
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "state {state} threads {threads}");
                assert_eq!(bits(&res), bits(&want_res), "state {state} threads {threads}");
                assert!(want_res.iter().all(|&r| r > 0.0 && r.is_finite()));
                assert!(core.step_with_residuals(&h, &mut got, &mut ws, 1e-8, &mut [0.0; 4]).is_err());
            })
            .unwrap();
        }
    }
}

/// The two-iterations-per-pass path with the other mixers whose `Q` ignores `h`: an
/// input-only Kronecker mixer (rows and spectral norm) and the identity. `steps(h, k)`
/// is bit for bit `k` single steps, and the solve (pairs while undamped) is bit for bit
/// the one-iteration-per-call solve, at 1 and 2 threads.
#[test]
fn multi_iteration_steps_with_kronecker_and_identity_mixers() {
    use fixpoint::fpr::solver::solve_with;
    use fixpoint::fpr::{FpCore, KronNorm, Mixer, MixerInput, MixerKernel, MixerKind};
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let (b, t, d, in_dim) = (4, 19, 12, 5);
    for kind in [
        MixerKind::Kronecker { norm: KronNorm::Rows, detach_rho: false },
        MixerKind::Kronecker { norm: KronNorm::Spectral, detach_rho: false },
        MixerKind::Identity,
    ] {
        let mut rng = Rng::new(5);
        let mixer = Mixer::new(kind, in_dim, d, 1e-6, &mut rng).unwrap();
        let x_mix = fixpoint::init::uniform([b, t, in_dim], -1.0, 1.0, &mut rng);
        let kernel = mixer.kernel(&x_mix, MixerInput::InputOnly).unwrap();
        assert_eq!(matches!(kernel, MixerKernel::Identity), matches!(kind, MixerKind::Identity));
        let lambda: Vec<f32> = (0..b * t * d).map(|_| rng.range(0.3, 0.95)).collect();
        let bx: Vec<f32> = (0..b * t * d).map(|_| rng.range(-1.0, 1.0)).collect();
        let core = FpCore::new(b, t, d, lambda, bx, kernel).unwrap();
        assert!(core.multi_step(), "{kind:?}");
        let h: Vec<f32> = (0..b * t * d).map(|_| rng.range(-1.0, 1.0)).collect();
        for threads in [1, 2] {
            fixpoint::cpu::par::with_threads(Some(threads), || {
                let mut ws = fixpoint::fpr::Workspace::default();
                let (mut once, mut twice) = (vec![0.0f32; h.len()], vec![0.0f32; h.len()]);
                let mut want_res = vec![0.0f32; 2 * b];
                core.step_with_residuals(&h, &mut once, &mut ws, 1e-8, &mut want_res[..b]).unwrap();
                core.step_with_residuals(&once, &mut twice, &mut ws, 1e-8, &mut want_res[b..]).unwrap();
                let (mut got, mut res) = (vec![f32::NAN; h.len()], vec![f32::NAN; 2 * b]);
                core.steps(&h, &mut got, &mut ws, 2, Some((1e-8, &mut res))).unwrap();
                assert_eq!(bits(&got), bits(&twice), "{kind:?} threads {threads}");
                assert_eq!(bits(&res), bits(&want_res), "{kind:?} threads {threads}");
                let (cfg, run) = tight_solver();
                let (ours, st) = core.solve(&cfg, &run, None).unwrap();
                let mut ws2 = fixpoint::fpr::Workspace::default();
                let (theirs, st2) = solve_with(core.shape(), &cfg, &run, None, |y, out, r| {
                    core.step_with_residuals(y, out, &mut ws2, cfg.eps, r)
                })
                .unwrap();
                assert_eq!(bits(&ours), bits(&theirs), "{kind:?} threads {threads}");
                assert_eq!(st, st2, "{kind:?} threads {threads}");
                assert!(st.converged, "{kind:?}: {st:?}");
            })
            .unwrap();
        }
    }
}
