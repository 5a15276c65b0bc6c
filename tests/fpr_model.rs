//! The FP-RNN block and models. T7: the gradient of the one-step objective
//! `F(x, stopgrad(h*))` (what backward computes) equals finite differences of that
//! objective at frozen `h*`, for every parameter of a 1-layer model; on a contractive
//! linear toy the implicit-gradient oracle of §3.1 matches finite differences of the
//! explicit dense recurrence. One training step decreases the loss. The model kinds
//! agree where they must (`fp-rnn` = `dense-seq`, the diagonal block ignores the
//! state), the LSTM against an f64 reference, and the API's errors.

mod common;

use common::{assert_close, assert_grads, rand_tensor};
use fixpoint::autograd::no_grad;
use fixpoint::fpr::{
    BlockConfig, FpModel, FpRnnBlock, Layer, Lmax, MixerInput, MixerKind, ModelConfig, ModelKind, SolveMethod,
    SolveRun, SolverConfig, lstm_recurrence,
};
use fixpoint::nn::Module;
use fixpoint::ops::fused::{CrossEntropyOpts, Reduction};
use fixpoint::optim::{Optimizer, Sgd, SgdConfig};
use fixpoint::{Error, Rng, Tensor};

fn tokens(b: usize, t: usize, vocab: usize, seed: u64) -> Vec<usize> {
    let mut rng = Rng::new(seed);
    (0..b * t).map(|_| rng.below(vocab)).collect()
}

fn tight_solver() -> SolverConfig {
    SolverConfig { threshold: 1e-5, lmax: Lmax::Fixed(500), eval_lmax: 500, ..SolverConfig::default() }
}

fn small_config(kind: ModelKind) -> ModelConfig {
    ModelConfig { d_inner: 12, rank: 2, solver: tight_solver(), seed: 3, ..ModelConfig::new(kind, 7, 1, 8) }
}

fn loss_sum(logits: &Tensor, targets: &[usize]) -> Tensor {
    let opts = CrossEntropyOpts { reduction: Reduction::Sum, ..Default::default() };
    logits.cross_entropy(targets, opts).unwrap()
}

/// Compare every parameter's gradient (a few elements each) with central differences of
/// `loss`, which is evaluated without the graph. The step is `step`, or 2% of the
/// tensor's RMS when that is smaller (the embedding, N(0, 0.02²), sits behind an
/// RMSNorm that is far from linear at its scale).
fn check_param_grads<M: Module>(
    what: &str,
    m: &mut M,
    loss: impl Fn(&M) -> Tensor,
    per_tensor: usize,
    step: f32,
    atol: f64,
    rtol: f64,
) {
    m.zero_grad();
    loss(m).backward().unwrap();
    let names: Vec<String> = m.params().iter().map(|(n, _)| n.clone()).collect();
    let grads: Vec<Vec<f32>> = m
        .params()
        .iter()
        .map(|(n, t)| t.grad().unwrap_or_else(|| panic!("{what}: {n} got no gradient")).to_vec())
        .collect();
    let mut rng = Rng::new(77);
    for (k, name) in names.iter().enumerate() {
        let len = grads[k].len();
        assert!(grads[k].iter().any(|&g| g != 0.0), "{what}: {name} has an all-zero gradient");
        let values = m.params()[k].1.to_vec();
        let rms = (values.iter().map(|v| v * v).sum::<f32>() / len as f32).sqrt();
        let step = if rms > 0.0 { step.min(0.02 * rms) } else { step };
        for _ in 0..per_tensor.min(len) {
            let i = rng.below(len);
            let mut eval = |delta: f32| {
                m.params_mut()[k].1.update_data(|x| x[i] += delta);
                let l = no_grad(|| loss(m)).item().unwrap() as f64;
                m.params_mut()[k].1.update_data(|x| x[i] -= delta);
                l
            };
            let num = (eval(step) - eval(-step)) / (2.0 * step as f64);
            let a = grads[k][i] as f64;
            assert!((a - num).abs() <= atol + rtol * num.abs(), "{what}: {name}[{i}]: analytic {a} vs numeric {num}");
        }
    }
}

#[test]
fn one_step_gradient_matches_finite_differences_at_frozen_state() {
    // T7, first part, for every parameter of a 1-layer FP-RNN (and with short convs and
    // the other mixer inputs): backward through the model equals finite differences of
    // the loss of F(x, stopgrad(h*)) with h* held at the solver's output.
    for (short_conv, input) in [
        (false, MixerInput::Concat),
        (true, MixerInput::Concat),
        (false, MixerInput::Symmetric),
        (false, MixerInput::InputOnly),
    ] {
        let cfg = ModelConfig { short_conv, mixer_input: input, ..small_config(ModelKind::FpRnn) };
        let mut model = FpModel::new(cfg).unwrap();
        let (b, t) = (3, 9);
        let ids = tokens(b, t, 7, 1);
        let targets = tokens(b, t, 7, 2);
        let out = model.forward_detailed(&ids, [b, t], None).unwrap();
        assert!(out.stats[0].converged);
        let states = out.states.clone();
        let loss = |m: &FpModel| loss_sum(&m.forward_detailed(&ids, [b, t], Some(&states)).unwrap().logits, &targets);
        // The gradient from a solving forward equals the one at the frozen state.
        model.zero_grad();
        loss_sum(&out.logits, &targets).backward().unwrap();
        let solved: Vec<Vec<f32>> = model.params().iter().map(|(_, p)| p.grad().unwrap().to_vec()).collect();
        model.zero_grad();
        loss(&model).backward().unwrap();
        for ((n, p), g) in model.params().iter().zip(&solved) {
            assert_eq!(&p.grad().unwrap().to_vec(), g, "{n}");
        }
        check_param_grads(&format!("fp-rnn conv {short_conv} {input:?}"), &mut model, loss, 4, 2e-3, 3e-3, 2e-2);
    }
}

#[test]
fn recorded_step_is_at_the_fixed_point() {
    // h = F(h*) ≈ h* to the solver's tolerance; the recorded step from zeros is not.
    let mut rng = Rng::new(5);
    let cfg =
        BlockConfig { d_inner: 10, mixer: MixerKind::Householder { rank: 3, alpha_scale: 2.0 }, ..BlockConfig::new(6) };
    let block = FpRnnBlock::new(&cfg, &mut rng).unwrap();
    let u = rand_tensor(&[2, 30, 6], -1.0, 1.0, &mut rng);
    let scfg = SolverConfig { threshold: 1e-6, ..SolverConfig::default() };
    let run = SolveRun { quantile: 1.0, lmax: 500 };
    let inp = block.prepare(&u).unwrap();
    let (h_star, stats) = block.fixed_point(&inp, &scfg, &run).unwrap();
    assert!(stats.converged && stats.iterations > 2, "{stats:?}");
    let h = block.step(&inp, &h_star).unwrap().to_vec();
    let hs = h_star.to_vec();
    let scale = hs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let err = h.iter().zip(&hs).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(err <= 2e-6 * scale.max(1.0) * 10.0, "F(h*) − h* = {err} (scale {scale})");
    let h0 = block.step(&inp, &Tensor::zeros(h_star.shape())).unwrap().to_vec();
    let err0 = h0.iter().zip(&hs).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(err0 > 100.0 * err, "the mixer must matter: {err0} vs {err}");
    // The graph step and the solver's kernel agree: the dense-seq block's h* too.
    let seq = FpRnnBlock::new(&BlockConfig { solve: SolveMethod::Sequential, ..cfg }, &mut Rng::new(5)).unwrap();
    let (h_seq, _) = seq.fixed_point(&seq.prepare(&u).unwrap(), &scfg, &run).unwrap();
    let want: Vec<f64> = h_seq.to_vec().into_iter().map(|v| v as f64).collect();
    assert_close("parallel vs dense-seq h*", &hs, &want, 2e-5, 1e-4);
}

#[test]
fn implicit_gradient_oracle_matches_the_dense_recurrence() {
    // T7, second part. Contractive linear toy: the mixer sees x only (F affine in h),
    // h* from the explicit dense recurrence. Oracle (§3.1): w = ḡ + J_hᵀ w by iteration,
    // then backpropagate w through one step F(x, stopgrad(h*)). Finite differences of
    // L = Σ r ⊙ h*(θ), with h* recomputed by the dense recurrence for each perturbation.
    let mut rng = Rng::new(8);
    let cfg = BlockConfig {
        d_inner: 6,
        mixer: MixerKind::Householder { rank: 2, alpha_scale: 2.0 },
        mixer_input: MixerInput::InputOnly,
        solve: SolveMethod::Sequential,
        ..BlockConfig::new(4)
    };
    let mut block = FpRnnBlock::new(&cfg, &mut rng).unwrap();
    let (b, t) = (2, 7);
    let u = rand_tensor(&[b, t, 4], -1.0, 1.0, &mut rng);
    let r = rand_tensor(&[b, t, 6], -1.0, 1.0, &mut rng);
    let scfg = SolverConfig::default();
    let run = SolveRun { quantile: 1.0, lmax: 1 };
    let h_star_of =
        |blk: &FpRnnBlock, u: &Tensor| no_grad(|| blk.fixed_point(&blk.prepare(u).unwrap(), &scfg, &run)).unwrap().0;
    let loss_of = |blk: &FpRnnBlock, u: &Tensor| -> f64 {
        let h = h_star_of(blk, u).to_vec();
        h.iter().zip(r.to_vec()).map(|(&a, b)| a as f64 * b as f64).sum()
    };
    // w = r + J_hᵀ w
    let h_star = h_star_of(&block, &u);
    let inp_const = no_grad(|| block.prepare(&u)).unwrap();
    let mut w = r.clone();
    for _ in 0..200 {
        let hv = h_star.detach().requires_grad_();
        block.step(&inp_const, &hv).unwrap().backward_with(&w).unwrap();
        w = r.add(&hv.grad().unwrap()).unwrap();
    }
    let hv = h_star.detach().requires_grad_();
    block.step(&inp_const, &hv).unwrap().backward_with(&w).unwrap();
    let fixed = r.add(&hv.grad().unwrap()).unwrap().to_vec();
    assert!(fixed.iter().zip(w.to_vec()).all(|(a, b)| (a - b).abs() < 1e-5), "w did not converge");
    // Oracle and one-step gradients with respect to the input u and the parameters.
    let grads_for = |blk: &FpRnnBlock, seed: &Tensor| -> (Vec<f32>, Vec<Vec<f32>>) {
        blk.zero_grad();
        let ul = u.detach().requires_grad_();
        let inp = blk.prepare(&ul).unwrap();
        blk.step(&inp, &h_star).unwrap().backward_with(seed).unwrap();
        let gp = blk.params().iter().map(|(_, p)| p.grad().map(|g| g.to_vec()).unwrap_or_default()).collect();
        (ul.grad().unwrap().to_vec(), gp)
    };
    let (oracle_u, oracle_p) = grads_for(&block, &w);
    let (jfb_u, _) = grads_for(&block, &r);
    let step = 1e-2f32;
    let check = |what: &str, a: f64, num: f64| {
        assert!((a - num).abs() <= 2e-3 + 2e-2 * num.abs(), "{what}: oracle {a} vs numeric {num}");
    };
    let base_u = u.to_vec();
    let mut jfb_gap = 0.0f64;
    for i in 0..base_u.len() {
        let shifted = |d: f32| {
            let mut v = base_u.clone();
            v[i] += d;
            Tensor::from_vec(v, u.shape_obj().clone()).unwrap()
        };
        let num = (loss_of(&block, &shifted(step)) - loss_of(&block, &shifted(-step))) / (2.0 * step as f64);
        check(&format!("du[{i}]"), oracle_u[i] as f64, num);
        jfb_gap = jfb_gap.max((jfb_u[i] as f64 - num).abs());
    }
    // The one-step gradient is a different (approximate) quantity.
    assert!(jfb_gap > 1e-2, "the oracle check must distinguish the implicit from the one-step gradient");
    let names: Vec<String> = block.params().iter().map(|(n, _)| n.clone()).collect();
    let mut prng = Rng::new(9);
    for (k, name) in names.iter().enumerate() {
        if name.starts_with("c_proj") || name.starts_with("out") {
            continue; // not part of h*
        }
        let len = oracle_p[k].len();
        for _ in 0..3 {
            let i = prng.below(len);
            let mut eval = |d: f32| {
                block.params_mut()[k].1.update_data(|x| x[i] += d);
                let l = loss_of(&block, &u);
                block.params_mut()[k].1.update_data(|x| x[i] -= d);
                l
            };
            let num = (eval(step) - eval(-step)) / (2.0 * step as f64);
            check(&format!("{name}[{i}]"), oracle_p[k][i] as f64, num);
        }
    }
}

#[test]
fn one_training_step_decreases_the_loss() {
    let mut model = FpModel::new(small_config(ModelKind::FpRnn)).unwrap();
    let (b, t) = (4, 12);
    let ids = tokens(b, t, 7, 11);
    let targets = tokens(b, t, 7, 12);
    let opts = CrossEntropyOpts::default();
    let before = model.forward(&ids, [b, t]).unwrap().cross_entropy(&targets, opts).unwrap();
    let l0 = before.item().unwrap();
    model.zero_grad();
    before.backward().unwrap();
    let mut opt = Sgd::new(SgdConfig { momentum: 0.0, dampening: 0.0, nesterov: false, weight_decay: 0.0 }).unwrap();
    opt.step(&mut model, 0.05).unwrap();
    let l1 = no_grad(|| model.forward(&ids, [b, t]).unwrap().cross_entropy(&targets, opts).unwrap()).item().unwrap();
    assert!(l1 < l0 - 1e-3, "loss {l0} -> {l1}");
}

#[test]
fn lstm_and_diagonal_models_train_one_step() {
    for kind in [ModelKind::Lstm, ModelKind::Diagonal, ModelKind::DenseSeq] {
        let mut model = FpModel::new(small_config(kind)).unwrap();
        let (b, t) = (3, 10);
        let ids = tokens(b, t, 7, 21);
        let targets = tokens(b, t, 7, 22);
        let opts = CrossEntropyOpts::default();
        let before = model.forward(&ids, [b, t]).unwrap().cross_entropy(&targets, opts).unwrap();
        let l0 = before.item().unwrap();
        model.zero_grad();
        before.backward().unwrap();
        let mut opt =
            Sgd::new(SgdConfig { momentum: 0.0, dampening: 0.0, nesterov: false, weight_decay: 0.0 }).unwrap();
        opt.step(&mut model, 0.05).unwrap();
        let l1 =
            no_grad(|| model.forward(&ids, [b, t]).unwrap().cross_entropy(&targets, opts).unwrap()).item().unwrap();
        assert!(l1 < l0 - 1e-3, "{kind:?}: loss {l0} -> {l1}");
    }
}

#[test]
fn lstm_and_diagonal_gradients_match_finite_differences() {
    for kind in [ModelKind::Lstm, ModelKind::Diagonal] {
        let mut model = FpModel::new(ModelConfig { n_layers: 2, ..small_config(kind) }).unwrap();
        let (b, t) = (2, 6);
        let ids = tokens(b, t, 7, 31);
        let targets = tokens(b, t, 7, 32);
        let loss = |m: &FpModel| loss_sum(&m.forward(&ids, [b, t]).unwrap(), &targets);
        check_param_grads(&format!("{kind:?}"), &mut model, loss, 4, 2e-3, 3e-3, 2e-2);
    }
}

#[test]
fn fp_rnn_equals_dense_seq_and_diagonal_ignores_the_state() {
    let (b, t) = (2, 40);
    let ids = tokens(b, t, 7, 41);
    let mut fp = FpModel::new(ModelConfig { n_layers: 2, ..small_config(ModelKind::FpRnn) }).unwrap();
    let mut ds = FpModel::new(ModelConfig { n_layers: 2, ..small_config(ModelKind::DenseSeq) }).unwrap();
    fp.train(false);
    ds.train(false);
    let a = fp.forward_detailed(&ids, [b, t], None).unwrap();
    let d = ds.forward_detailed(&ids, [b, t], None).unwrap();
    let want: Vec<f64> = d.logits.to_vec().into_iter().map(|v| v as f64).collect();
    assert_close("fp-rnn vs dense-seq logits", &a.logits.to_vec(), &want, 1e-4, 1e-4);
    for (sa, sd) in a.states.iter().zip(&d.states) {
        let want: Vec<f64> = sd.to_vec().into_iter().map(|v| v as f64).collect();
        assert_close("states", &sa.to_vec(), &want, 1e-4, 1e-4);
    }
    assert_eq!(a.stats.len(), 2);
    assert!(a.stats.iter().all(|s| s.converged && s.iterations > 2 && s.sample_iterations.len() == b));
    // Diagonal: one exact step, any state gives the same output.
    let diag = FpModel::new(small_config(ModelKind::Diagonal)).unwrap();
    let out = diag.forward_detailed(&ids, [b, t], None).unwrap();
    assert_eq!(out.stats[0].iterations, 1);
    let mut rng = Rng::new(1);
    let noise = vec![rand_tensor(&[b, t, 12], -5.0, 5.0, &mut rng)];
    let other = diag.forward_detailed(&ids, [b, t], Some(&noise)).unwrap();
    assert_eq!(out.logits.to_vec(), other.logits.to_vec());
}

#[test]
fn model_api_shapes_names_modes_and_errors() {
    let cfg = ModelConfig {
        solver: SolverConfig { lmax: Lmax::Code { t_train: 16 }, eval_lmax: 7, ..SolverConfig::default() },
        tie_embeddings: false,
        ..small_config(ModelKind::FpRnn)
    };
    assert_eq!(cfg.padded_vocab(), 8);
    let mut model = FpModel::new(cfg.clone()).unwrap();
    let (b, t) = (2, 5);
    let ids = tokens(b, t, 7, 51);
    let logits = model.forward(&ids, [b, t]).unwrap();
    assert_eq!(logits.shape(), &[2, 5, 7]);
    let names: Vec<String> = model.params().iter().map(|(n, _)| n.clone()).collect();
    for want in [
        "embedding.weight",
        "layers.0.norm.weight",
        "layers.0.mixer.in_proj.weight",
        "layers.0.mixer.lambda_proj.bias",
        "layers.0.mixer.mixer.u_proj.weight_g",
        "layers.0.mixer.mixer.alpha_proj.bias",
        "layers.0.mixer.out_norm.weight",
        "norm_f.weight",
        "head.weight",
    ] {
        assert!(names.iter().any(|n| n == want), "missing {want} in {names:?}");
    }
    assert_eq!(model.params()[0].1.shape(), &[8, 8]);
    // Biases start at zero; the embedding is N(0, 0.02²).
    for (n, p) in model.params() {
        if n.ends_with("bias") {
            assert!(p.to_vec().iter().all(|&v| v == 0.0), "{n}");
        }
    }
    let e = model.params()[0].1.to_vec();
    let sd = (e.iter().map(|v| v * v).sum::<f32>() / e.len() as f32).sqrt();
    assert!(sd > 0.01 && sd < 0.03, "{sd}");
    // Random ℓ_max in training, eval_lmax in evaluation.
    let lmaxes: Vec<usize> = (0..20)
        .map(|_| {
            no_grad(|| model.forward(&ids, [b, t])).unwrap();
            model.last_stats()[0].lmax
        })
        .collect();
    assert!(lmaxes.iter().any(|&l| l != lmaxes[0]), "{lmaxes:?}");
    model.train(false);
    no_grad(|| model.forward(&ids, [b, t])).unwrap();
    let st = &model.last_stats()[0];
    assert_eq!(st.lmax, 7);
    assert!(st.iterations <= 7);
    assert_eq!((st.residual.len(), st.last_residual.len(), st.stepsize.len()), (b, b, b));
    // Same seed, same parameters and logits.
    let again = FpModel::new(cfg.clone()).unwrap();
    for ((_, p), (_, q)) in model.params().iter().zip(again.params()) {
        assert_eq!(p.to_vec(), q.to_vec());
    }
    // Errors.
    assert!(matches!(model.forward(&ids, [3, 5]), Err(Error::InvalidArgument { .. })));
    let mut bad = ids.clone();
    bad[3] = 7;
    assert!(matches!(model.forward(&bad, [b, t]), Err(Error::Index { .. })));
    assert!(matches!(model.forward_detailed(&ids, [b, t], Some(&[])), Err(Error::InvalidArgument { .. })));
    for broken in [
        ModelConfig { vocab: 0, ..cfg.clone() },
        ModelConfig { rank: 0, ..cfg.clone() },
        ModelConfig { alpha_scale: 1.5, ..cfg.clone() },
        ModelConfig { solver: SolverConfig { patience: 0, ..SolverConfig::default() }, ..cfg.clone() },
    ] {
        assert!(matches!(FpModel::new(broken), Err(Error::InvalidArgument { .. })));
    }
    assert_eq!(ModelKind::parse("dense-seq").unwrap(), ModelKind::DenseSeq);
    assert!(ModelKind::parse("transformer").is_err()); // ("mamba" is a kind since FP-Mamba)
    let lstm = FpModel::new(small_config(ModelKind::Lstm)).unwrap();
    assert!(matches!(lstm.layers()[0], Layer::Lstm(_)));
    assert!(lstm.forward_detailed(&ids, [b, t], None).unwrap().stats.is_empty());
}

fn lstm_reference(gx: &[f32], w: &[f32], b: usize, t: usize, h: usize) -> Vec<f64> {
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    let mut out = vec![0.0f64; b * t * h];
    for bb in 0..b {
        let (mut hp, mut cp) = (vec![0.0f64; h], vec![0.0f64; h]);
        for tt in 0..t {
            let row = bb * t + tt;
            let a: Vec<f64> = (0..4 * h)
                .map(|j| gx[row * 4 * h + j] as f64 + (0..h).map(|k| hp[k] * w[k * 4 * h + j] as f64).sum::<f64>())
                .collect();
            for j in 0..h {
                let (i, f, g, o) = (sig(a[j]), sig(a[h + j]), a[2 * h + j].tanh(), sig(a[3 * h + j]));
                cp[j] = f * cp[j] + i * g;
                out[row * h + j] = o * cp[j].tanh();
            }
            hp.copy_from_slice(&out[row * h..(row + 1) * h]);
        }
    }
    out
}

#[test]
fn lstm_recurrence_matches_reference_and_finite_differences() {
    let mut rng = Rng::new(61);
    for &(b, t, h) in &[(2usize, 5usize, 3usize), (1, 1, 1), (3, 9, 8)] {
        let gx = rand_tensor(&[b, t, 4 * h], -1.5, 1.5, &mut rng);
        let w = rand_tensor(&[h, 4 * h], -0.7, 0.7, &mut rng);
        let y = lstm_recurrence(&gx, &w).unwrap();
        let want = lstm_reference(&gx.to_vec(), &w.to_vec(), b, t, h);
        assert_close("lstm", &y.to_vec(), &want, 1e-5, 1e-5);
        assert_grads(&format!("lstm {b}x{t}x{h}"), |v| lstm_recurrence(&v[0], &v[1]), &[gx, w]);
    }
    assert!(matches!(
        lstm_recurrence(&Tensor::zeros([1, 2, 6]), &Tensor::zeros([1, 6])),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        lstm_recurrence(&Tensor::zeros([2, 8]), &Tensor::zeros([2, 8])),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn empty_batches_and_sequences_do_not_panic() {
    for kind in [ModelKind::FpRnn, ModelKind::Diagonal, ModelKind::DenseSeq, ModelKind::Lstm] {
        let model = FpModel::new(small_config(kind)).unwrap();
        for shape in [[2usize, 0usize], [0, 3], [1, 1]] {
            let ids = vec![1usize; shape[0] * shape[1]];
            let logits = model.forward(&ids, shape).unwrap();
            assert_eq!(logits.shape(), &[shape[0], shape[1], 7], "{kind:?} {shape:?}");
        }
    }
}
