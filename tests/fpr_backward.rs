//! Backward options of the FP-RNN block (spec §3.1): the exact implicit gradient equals
//! backpropagation through the sequential dense RNN (each token's linear system solved
//! by an unrolled contraction on the graph, so autodiff differentiates the sequential
//! recurrence itself, including the state dependence of `Q`) and central finite
//! differences of the f64 dense recurrence, on contractive parameters, for each mixer;
//! the adjoint iteration count is reported and bounded; phantom-K approaches the
//! implicit gradient as K grows; per-layer selection in the model; typed errors.

mod common;

use common::rand_tensor;
use fixpoint::autograd::no_grad;
use fixpoint::fpr::{
    BackwardMode, BlockConfig, BlockInputs, FpModel, FpRnnBlock, Lmax, MixerInput, MixerKind, ModelConfig, ModelKind,
    SolveRun, SolverConfig,
};
use fixpoint::nn::Module;
use fixpoint::{Error, Rng, Tensor};

const HH: MixerKind = MixerKind::Householder { rank: 2, alpha_scale: 2.0 };

fn tight() -> (SolverConfig, SolveRun) {
    (SolverConfig { threshold: 1e-6, ..SolverConfig::default() }, SolveRun { quantile: 1.0, lmax: 1000 })
}

/// A block with `λ ≈ σ(1.5 + …)`: `‖(I − Λ)(I − Q)‖` is well below 1 (contractive).
fn block(mixer: MixerKind, input: MixerInput, backward: BackwardMode, seed: u64) -> FpRnnBlock {
    let cfg = BlockConfig { d_inner: 6, mixer, mixer_input: input, backward, ..BlockConfig::new(4) };
    let mut b = FpRnnBlock::new(&cfg, &mut Rng::new(seed)).unwrap();
    for (n, p) in b.params_mut() {
        if n == "lambda_proj.bias" {
            p.update_data(|d| d.fill(1.5));
        }
    }
    b
}

/// `Σ r ⊙ h` where `h` is the block's recorded state at its fixed point (the gradient
/// path of the block's backward mode).
fn grads(blk: &FpRnnBlock, u: &Tensor, r: &Tensor) -> Vec<f32> {
    blk.zero_grad();
    let ul = u.detach().requires_grad_();
    let inp = blk.prepare(&ul).unwrap();
    let (scfg, run) = tight();
    let (hs, stats) = blk.fixed_point(&inp, &scfg, &run).unwrap();
    assert!(stats.converged, "{stats:?}");
    blk.recorded_state(&inp, &hs).unwrap().mul(r).unwrap().sum_all().backward().unwrap();
    flat_grads(blk, &ul)
}

/// `du` followed by the gradients of every parameter that `h*` depends on.
fn flat_grads(blk: &FpRnnBlock, ul: &Tensor) -> Vec<f32> {
    let mut v = ul.grad().unwrap().to_vec();
    for (n, p) in blk.params() {
        if !(n.starts_with("c_proj") || n.starts_with("out_")) {
            v.extend(p.grad().map(|g| g.to_vec()).unwrap_or_else(|| vec![0.0; p.numel()]));
        }
    }
    v
}

/// The sequential dense RNN on the graph: for each token, given `h_{t−1}`, the linear
/// system `(Λ + (I − Λ)Q_t) h_t = Λ h_{t−1} + (I − Λ) Q_t b x_t` is solved by 80 steps of
/// `h_t ← λ h_{t−1} + (1 − λ)(Q_t(bx_t − h_t) + h_t)` (contraction ‖(1−λ)(I−Q)‖ < 1),
/// all recorded, so backward is backpropagation through the sequential recurrence.
fn dense_rnn(blk: &FpRnnBlock, inp: &BlockInputs) -> Tensor {
    let &[b, t, d] = inp.bx.shape() else { panic!() };
    let mut h_prev = Tensor::zeros([b, 1, d]);
    let mut hs = Vec::new();
    for s in 0..t {
        let nar = |x: &Tensor| x.narrow(1, s, 1).unwrap().contiguous();
        let (lam, oml, bx, xm) = (nar(&inp.lambda), nar(&inp.one_minus_lambda), nar(&inp.bx), nar(&inp.x_mix));
        let p = match blk.config().mixer_input {
            MixerInput::Concat => Tensor::concat(&[&xm, &h_prev], -1).unwrap(),
            MixerInput::Symmetric => xm.add(&h_prev).unwrap(),
            MixerInput::InputOnly => xm,
        };
        let carry = lam.mul(&h_prev).unwrap();
        let mut h = h_prev.clone();
        for _ in 0..80 {
            let xt = blk.mixer().apply(&p, &bx.sub(&h).unwrap()).unwrap().add(&h).unwrap();
            h = carry.add(&oml.mul(&xt).unwrap()).unwrap();
        }
        hs.push(h.clone());
        h_prev = h;
    }
    Tensor::concat(&hs.iter().collect::<Vec<_>>(), 1).unwrap()
}

fn bptt_grads(blk: &FpRnnBlock, u: &Tensor, r: &Tensor) -> Vec<f32> {
    blk.zero_grad();
    let ul = u.detach().requires_grad_();
    let inp = blk.prepare(&ul).unwrap();
    dense_rnn(blk, &inp).mul(r).unwrap().sum_all().backward().unwrap();
    flat_grads(blk, &ul)
}

/// `Σ r ⊙ h*` with `h*` from the f64 token-by-token dense solve.
fn dense_loss(blk: &FpRnnBlock, u: &Tensor, r: &[f32]) -> f64 {
    no_grad(|| {
        let core = blk.core(&blk.prepare(u).unwrap()).unwrap();
        let h = core.solve_sequential().unwrap();
        h.iter().zip(r).map(|(&a, &b)| a as f64 * b as f64).sum()
    })
}

fn max_gap(a: &[f32], b: &[f32]) -> (f64, f64) {
    let gap = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).abs()).fold(0.0, f64::max);
    let scale = b.iter().map(|&y| (y as f64).abs()).fold(0.0, f64::max);
    (gap, scale)
}

#[test]
fn implicit_equals_bptt_through_the_dense_rnn_and_finite_differences() {
    // Tolerance: |implicit − bptt| ≤ 1e-6 + 1e-4·|bptt| elementwise (f32; both are exact
    // gradients, the difference is rounding and the adjoint tolerance 1e-6). Measured
    // max gaps ≈ 2e-8–4e-8 with max |g| ≈ 0.2; adjoint iterations 11 (Householder r = 2),
    // 7 (r = 1, paper scale), 1 (diagonal).
    for (mixer, input) in [
        (HH, MixerInput::Concat),
        (HH, MixerInput::Symmetric),
        (HH, MixerInput::InputOnly),
        (MixerKind::Householder { rank: 1, alpha_scale: 1.0 }, MixerInput::Concat),
        (MixerKind::kronecker(), MixerInput::Concat),
        (MixerKind::Kronecker { norm: fixpoint::fpr::KronNorm::Rows, detach_rho: false }, MixerInput::Symmetric),
        (MixerKind::Identity, MixerInput::Concat),
    ] {
        let mut rng = Rng::new(11);
        let (b, t) = (2, 6);
        let u = rand_tensor(&[b, t, 4], -1.0, 1.0, &mut rng);
        let r = rand_tensor(&[b, t, 6], -1.0, 1.0, &mut rng);
        let imp = block(mixer, input, BackwardMode::Implicit { tol: 1e-6, max_iter: 100 }, 4);
        let g_imp = grads(&imp, &u, &r);
        let st = imp.last_adjoint_stats().expect("the implicit backward reports its adjoint solve");
        let g_ref = bptt_grads(&imp, &u, &r);
        let (gap, scale) = max_gap(&g_imp, &g_ref);
        println!("{mixer:?} {input:?}: adjoint {st:?}; max |implicit − bptt| = {gap:.3e} (max |g| {scale:.3e})");
        assert!(st.converged && st.residual < 1e-6, "{st:?}");
        // Bounded: contraction ≲ 0.5 per iteration ⇒ well under 40 products for 1e-6.
        assert!(st.iterations >= 1 && st.iterations <= 40, "{st:?}");
        for (i, (&a, &e)) in g_imp.iter().zip(&g_ref).enumerate() {
            assert!((a - e).abs() as f64 <= 1e-6 + 1e-4 * e.abs() as f64, "{mixer:?} {input:?} [{i}]: {a} vs {e}");
        }
        // The one-step gradient is a different quantity (except for the diagonal mixer).
        let one = block(mixer, input, BackwardMode::OneStep, 4);
        let (jfb_gap, _) = max_gap(&grads(&one, &u, &r), &g_ref);
        if mixer == MixerKind::Identity {
            assert!(jfb_gap <= 1e-5, "diagonal: one-step is exact, gap {jfb_gap}");
        } else {
            assert!(jfb_gap > 1e-2, "{mixer:?} {input:?}: one-step gap {jfb_gap} too small to tell apart");
        }
        // Central differences of the f64 dense recurrence, on a few input entries.
        let rv = r.to_vec();
        let base = u.to_vec();
        let step = 1e-2f32;
        for i in [0, 5, 13, 27, 46] {
            let at = |dlt: f32| {
                let mut v = base.clone();
                v[i] += dlt;
                dense_loss(&imp, &Tensor::from_vec(v, u.shape_obj().clone()).unwrap(), &rv)
            };
            let num = (at(step) - at(-step)) / (2.0 * step as f64);
            let a = g_imp[i] as f64;
            assert!((a - num).abs() <= 2e-3 + 1e-2 * num.abs(), "du[{i}]: implicit {a} vs numeric {num}");
        }
    }
}

#[test]
fn phantom_k_converges_to_implicit() {
    // On the contractive toy the gap ‖phantom-K − implicit‖∞ decreases monotonically as K
    // doubles (down to the f32 floor), phantom-1 equals one-step exactly, and phantom-64 is
    // within 1e-4 relative. Measured: 0.30, 0.084, 7.0e-3, 6.4e-5, 2.0e-7, 2.0e-7, 2.0e-7.
    let mut rng = Rng::new(21);
    let u = rand_tensor(&[2, 8, 4], -1.0, 1.0, &mut rng);
    let r = rand_tensor(&[2, 8, 6], -1.0, 1.0, &mut rng);
    let g_imp = grads(&block(HH, MixerInput::Concat, BackwardMode::Implicit { tol: 1e-7, max_iter: 200 }, 7), &u, &r);
    let g_one = grads(&block(HH, MixerInput::Concat, BackwardMode::OneStep, 7), &u, &r);
    let mut gaps = Vec::new();
    for k in [1, 2, 4, 8, 16, 32, 64] {
        let g = grads(&block(HH, MixerInput::Concat, BackwardMode::Phantom(k), 7), &u, &r);
        if k == 1 {
            assert_eq!(g, g_one, "phantom-1 is one-step");
        }
        let (gap, scale) = max_gap(&g, &g_imp);
        gaps.push(gap / scale);
    }
    println!("phantom-K relative gap to implicit, K = 1, 2, 4, …, 64: {gaps:?}");
    // Strictly decreasing until it reaches the f32 rounding floor (≈2e-7 measured).
    for w in gaps.windows(2) {
        assert!(w[1] < w[0] || w[1] <= 1e-6, "the gap must decrease: {gaps:?}");
    }
    assert!(gaps[0] > 1e-2 && *gaps.last().unwrap() < 1e-4, "{gaps:?}");
}

#[test]
fn per_layer_backward_modes_in_the_model() {
    let cfg = ModelConfig {
        d_inner: 8,
        rank: 2,
        solver: SolverConfig { threshold: 1e-5, lmax: Lmax::Fixed(300), ..SolverConfig::default() },
        layer_backward: vec![BackwardMode::Phantom(3), BackwardMode::implicit()],
        ..ModelConfig::new(ModelKind::FpRnn, 5, 2, 4)
    };
    let model = FpModel::new(cfg.clone()).unwrap();
    assert_eq!(model.last_adjoint_stats(), vec![None, None]);
    let ids: Vec<usize> = (0..2 * 5).map(|i| (i * 3) % 5).collect();
    let logits = model.forward(&ids, [2, 5]).unwrap();
    logits.cross_entropy(&ids, Default::default()).unwrap().backward().unwrap();
    let st = model.last_adjoint_stats();
    assert!(st[0].is_none() && st[1].as_ref().is_some_and(|s| s.iterations >= 1), "{st:?}");
    for (n, p) in model.params() {
        assert!(p.grad().is_some(), "{n} has no gradient");
    }
    // A wrong count of per-layer modes and bad modes are typed errors.
    let bad = ModelConfig { layer_backward: vec![BackwardMode::OneStep], ..cfg.clone() };
    assert!(matches!(FpModel::new(bad), Err(Error::InvalidArgument { .. })));
    for m in [
        BackwardMode::Phantom(0),
        BackwardMode::Implicit { tol: 0.0, max_iter: 5 },
        BackwardMode::Implicit { tol: 1e-6, max_iter: 0 },
    ] {
        let c = ModelConfig { backward: m, layer_backward: Vec::new(), ..cfg.clone() };
        assert!(matches!(FpModel::new(c), Err(Error::InvalidArgument { .. })), "{m:?}");
        let bc = BlockConfig { backward: m, ..BlockConfig::new(4) };
        assert!(matches!(FpRnnBlock::new(&bc, &mut Rng::new(0)), Err(Error::InvalidArgument { .. })));
    }
    assert_eq!(BackwardMode::parse("phantom-4").unwrap(), BackwardMode::Phantom(4));
    assert_eq!(BackwardMode::parse("one-step").unwrap(), BackwardMode::OneStep);
    assert_eq!(BackwardMode::parse("implicit").unwrap(), BackwardMode::implicit());
    assert_eq!(BackwardMode::Phantom(7).name(), "phantom-7");
    for s in ["phantom-0", "phantom-x", "two-step", ""] {
        assert!(matches!(BackwardMode::parse(s), Err(Error::InvalidArgument { .. })), "{s}");
    }
}
