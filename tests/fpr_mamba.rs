//! FP-Mamba (spec §2.4, §4.3). T3: the selective scan against an f64 reference and its
//! backward (§3.3) against central differences in all six inputs. T2: with LayerNorm
//! off, D_skip = 0.2 and Δ ∈ [0.02, 0.2], the parallel fixed point equals the per-token
//! solve `(I − G_t(I − Q_t)) y_t = r_t + G_t Q_t x_t` (f64, y-dependent normalised B and
//! C). T9: init ranges. Mamba needs one step; the model kinds train end to end.

mod common;

use common::{assert_close, assert_grads, assert_grads_tol, rand_tensor};
use fixpoint::autograd::no_grad;
use fixpoint::fpr::{
    BackwardMode, FpMambaBlock, FpModel, Layer, MambaConfig, MambaInputs, MixerInput, MixerKind, ModelConfig,
    ModelKind, SolveRun, SolverConfig, selective_scan,
};
use fixpoint::nn::Module;
use fixpoint::{Error, Rng, Tensor};

/// f64 reference of the selective scan.
fn scan_ref(x: &[f32], dt: &[f32], a: &[f32], b: &[f32], c: &[f32], ds: &[f32], dims: [usize; 4]) -> Vec<f64> {
    let [bs, t, d, n] = dims;
    let mut y = vec![0.0f64; bs * t * d];
    for s in 0..bs {
        let mut h = vec![0.0f64; d * n];
        for k in 0..t {
            for i in 0..d {
                let o = (s * t + k) * d + i;
                let mut acc = 0.0;
                for m in 0..n {
                    let on = (s * t + k) * n + m;
                    let hv = &mut h[i * n + m];
                    *hv = (dt[o] as f64 * a[i * n + m] as f64).exp() * *hv + dt[o] as f64 * b[on] as f64 * x[o] as f64;
                    acc += c[on] as f64 * *hv;
                }
                y[o] = acc + ds[i] as f64 * x[o] as f64;
            }
        }
    }
    y
}

#[test]
fn t3_selective_scan_forward_and_backward() {
    for dims in [[2, 5, 3, 4], [1, 1, 1, 1], [3, 7, 2, 3]] {
        let [bs, t, d, n] = dims;
        let mut rng = Rng::new(bs as u64 * 7 + t as u64);
        let x = rand_tensor(&[bs, t, d], -1.0, 1.0, &mut rng);
        let dt = rand_tensor(&[bs, t, d], 0.05, 0.8, &mut rng);
        let a = rand_tensor(&[d, n], -2.0, -0.1, &mut rng);
        let b = rand_tensor(&[bs, t, n], -1.0, 1.0, &mut rng);
        let c = rand_tensor(&[bs, t, n], -1.0, 1.0, &mut rng);
        let ds = rand_tensor(&[d], -1.0, 1.0, &mut rng);
        let y = selective_scan(&x, &dt, &a, &b, &c, &ds).unwrap();
        let want = scan_ref(&x.to_vec(), &dt.to_vec(), &a.to_vec(), &b.to_vec(), &c.to_vec(), &ds.to_vec(), dims);
        assert_close(&format!("selective scan {dims:?}"), &y.to_vec(), &want, 1e-5, 1e-5);
        let r = rand_tensor(&[bs, t, d], -1.0, 1.0, &mut rng);
        // Including the softplus / −exp chain of Δ and A (§3.3).
        assert_grads_tol(
            &format!("selective scan {dims:?}"),
            |v| Ok(selective_scan(&v[0], &v[1].softplus(), &v[2].exp().neg(), &v[3], &v[4], &v[5])?.mul(&r)?.sum_all()),
            &[x.clone(), dt.clone(), a.clone(), b.clone(), c.clone(), ds.clone()],
            1e-2,
            2e-3,
            1e-2,
        );
    }
    let z = Tensor::zeros([2, 3, 4]);
    let bad = selective_scan(
        &z,
        &z,
        &Tensor::zeros([5, 2]),
        &Tensor::zeros([2, 3, 2]),
        &Tensor::zeros([2, 3, 2]),
        &Tensor::zeros([4]),
    );
    assert!(matches!(bad, Err(Error::ShapeMismatch { .. })));
}

/// Solve `m x = rhs` (f64, partial pivoting).
fn lu_solve(mut m: Vec<f64>, mut rhs: Vec<f64>, d: usize) -> Vec<f64> {
    for c in 0..d {
        let p = (c..d).max_by(|&a, &b| m[a * d + c].abs().total_cmp(&m[b * d + c].abs())).unwrap();
        for j in 0..d {
            m.swap(p * d + j, c * d + j);
        }
        rhs.swap(p, c);
        for r in c + 1..d {
            let f = m[r * d + c] / m[c * d + c];
            for j in c..d {
                m[r * d + j] -= f * m[c * d + j];
            }
            rhs[r] -= f * rhs[c];
        }
    }
    for c in (0..d).rev() {
        let s: f64 = (c + 1..d).map(|j| m[c * d + j] * rhs[j]).sum();
        rhs[c] = (rhs[c] - s) / m[c * d + c];
    }
    rhs
}

fn t2_block(mixer: MixerKind, input: MixerInput) -> FpMambaBlock {
    let cfg = MambaConfig {
        d_inner: 6,
        d_state: 3,
        mixer,
        mixer_input: input,
        layer_norm: false,
        ..MambaConfig::fp_mamba(4)
    };
    let mut blk = FpMambaBlock::new(&cfg, &mut Rng::new(2)).unwrap();
    let mut rng = Rng::new(9);
    for (name, p) in blk.params_mut() {
        match name.as_str() {
            "D" => p.update_data(|d| d.fill(0.2)),
            "dt_proj.weight" => p.update_data(|w| w.iter_mut().for_each(|v| *v *= 0.01)),
            // softplus(bias) ∈ [0.025, 0.15]: Δ stays in [0.02, 0.2].
            "dt_proj.bias" => {
                p.update_data(|b| b.iter_mut().for_each(|v| *v = (rng.range(0.025, 0.15) as f64).exp_m1().ln() as f32))
            }
            _ => {}
        }
    }
    blk
}

#[test]
fn t2_fixed_point_equals_per_token_solve() {
    for (mixer, input) in [
        (MixerKind::Householder { rank: 2, alpha_scale: 2.0 }, MixerInput::Concat),
        (MixerKind::kronecker(), MixerInput::Concat),
        (MixerKind::Dplr { rank: 2 }, MixerInput::Symmetric),
    ] {
        let blk = t2_block(mixer, input);
        let (bs, t, d, n) = (2, 6, 6, 3);
        let u = rand_tensor(&[bs, t, 4], -1.0, 1.0, &mut Rng::new(4));
        let inp = no_grad(|| blk.prepare(&u)).unwrap();
        let dv = inp.delta.to_vec();
        assert!(dv.iter().all(|&v| (0.02..=0.2).contains(&v)), "Δ out of [0.02, 0.2]");
        let scfg = SolverConfig { threshold: 1e-6, ..SolverConfig::fp_mamba() };
        let (y, stats) = blk.fixed_point(&inp, &scfg, &SolveRun { quantile: 1.0, lmax: 3000 }).unwrap();
        assert!(stats.converged, "{mixer:?}: {stats:?}");
        // Per-token solve in f64.
        let (xv, av) = (inp.x.to_vec(), inp.a.to_vec());
        let ds = blk.d_skip().to_vec();
        let mut want = vec![0.0f64; bs * t * d];
        for s in 0..bs {
            let mut y_prev = vec![0.0f64; d];
            let mut h = vec![0.0f64; d * n];
            for k in 0..t {
                let sl = |x: &Tensor| x.narrow(0, s, 1).unwrap().narrow(1, k, 1).unwrap().contiguous();
                let inp_t = MambaInputs {
                    x: sl(&inp.x),
                    z: sl(&inp.z),
                    delta: sl(&inp.delta),
                    a: inp.a.clone(),
                    bx: sl(&inp.bx),
                    cx: sl(&inp.cx),
                };
                let yp = Tensor::from_vec(y_prev.iter().map(|&v| v as f32).collect(), [1, 1, d]).unwrap();
                let (bt, ct) = no_grad(|| blk.bc(&inp_t, &yp)).unwrap();
                let (bt, ct): (Vec<f64>, Vec<f64>) =
                    (bt.to_vec().iter().map(|&v| v as f64).collect(), ct.to_vec().iter().map(|&v| v as f64).collect());
                let o = (s * t + k) * d;
                // Q_t column by column, p_t from x_t and y_{t−1}.
                let p = match input {
                    MixerInput::Concat => Tensor::concat(&[&inp_t.x, &yp], -1).unwrap(),
                    MixerInput::Symmetric => inp_t.x.add(&yp).unwrap(),
                    MixerInput::InputOnly => inp_t.x.clone(),
                };
                let mut q = vec![0.0f64; d * d];
                for j in 0..d {
                    let mut e = vec![0.0f32; d];
                    e[j] = 1.0;
                    let col = no_grad(|| blk.mixer().apply(&p, &Tensor::from_vec(e, [1, 1, d]).unwrap())).unwrap();
                    for (i, v) in col.to_vec().into_iter().enumerate() {
                        q[i * d + j] = v as f64;
                    }
                }
                let cb: f64 = bt.iter().zip(&ct).map(|(a, b)| a * b).sum();
                let g: Vec<f64> = (0..d).map(|i| ds[i] as f64 + dv[o + i] as f64 * cb).collect();
                let abar = |i: usize, m: usize| (dv[o + i] as f64 * av[i * n + m] as f64).exp();
                let mut mat = vec![0.0f64; d * d];
                let mut rhs = vec![0.0f64; d];
                for i in 0..d {
                    let r: f64 = (0..n).map(|m| ct[m] * abar(i, m) * h[i * n + m]).sum();
                    let qx: f64 = (0..d).map(|j| q[i * d + j] * xv[o + j] as f64).sum();
                    rhs[i] = r + g[i] * qx;
                    for j in 0..d {
                        let iq = if i == j { 1.0 } else { 0.0 } - q[i * d + j];
                        mat[i * d + j] = if i == j { 1.0 } else { 0.0 } - g[i] * iq;
                    }
                }
                let yt = lu_solve(mat, rhs, d);
                // x̃ = Q(x − y) + y, H_t = Ā H_{t−1} + Δ B x̃.
                for i in 0..d {
                    let xt: f64 = (0..d).map(|j| q[i * d + j] * (xv[o + j] as f64 - yt[j])).sum::<f64>() + yt[i];
                    for m in 0..n {
                        h[i * n + m] = abar(i, m) * h[i * n + m] + dv[o + i] as f64 * bt[m] * xt;
                    }
                }
                want[o..o + d].copy_from_slice(&yt);
                y_prev = yt;
            }
        }
        let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        assert_close(&format!("T2 {mixer:?}"), &y.to_vec(), &want, 2e-5 * scale, 1e-4);
    }
}

#[test]
fn mamba_is_one_step_and_models_train() {
    // Mamba: F ignores y, the solver is skipped and the recorded step is exact.
    let blk =
        FpMambaBlock::new(&MambaConfig { d_inner: 6, d_state: 3, ..MambaConfig::mamba(4) }, &mut Rng::new(1)).unwrap();
    let u = rand_tensor(&[2, 5, 4], -1.0, 1.0, &mut Rng::new(2));
    let inp = no_grad(|| blk.prepare(&u)).unwrap();
    let (y0, st) = blk.fixed_point(&inp, &SolverConfig::fp_mamba(), &SolveRun { quantile: 1.0, lmax: 10 }).unwrap();
    assert_eq!(st.iterations, 1);
    let a = no_grad(|| blk.step(&inp, &y0)).unwrap().to_vec();
    let b = no_grad(|| blk.step(&inp, &rand_tensor(&[2, 5, 6], -1.0, 1.0, &mut Rng::new(3)))).unwrap().to_vec();
    assert_eq!(a, b);
    assert_eq!(ModelKind::parse("fp-mamba").unwrap(), ModelKind::FpMamba);
    assert_eq!(ModelKind::parse("mamba").unwrap(), ModelKind::Mamba);
    assert_eq!(ModelKind::FpMamba.name(), "fp-mamba");
    // FP-Mamba (damped solver by default, LayerNorm on) with each backward mode, and
    // Mamba: every parameter gets a gradient; DPLR is accepted here.
    for (kind, mixer, backward) in [
        (ModelKind::FpMamba, None, BackwardMode::OneStep),
        (ModelKind::FpMamba, Some(MixerKind::Dplr { rank: 2 }), BackwardMode::Phantom(2)),
        (ModelKind::FpMamba, Some(MixerKind::kronecker()), BackwardMode::implicit()),
        (ModelKind::Mamba, None, BackwardMode::OneStep),
    ] {
        let cfg = ModelConfig { d_inner: 8, d_state: 4, rank: 2, mixer, backward, ..ModelConfig::new(kind, 6, 1, 4) };
        assert_eq!(cfg.solver.decay, 0.9, "damping on by default");
        let model = FpModel::new(cfg).unwrap();
        assert!(matches!(model.layers()[0], Layer::Mamba(_)));
        let ids: Vec<usize> = (0..2 * 7).map(|i| (i * 5 + 1) % 6).collect();
        let out = model.forward_detailed(&ids, [2, 7], None).unwrap();
        assert!(out.logits.to_vec().iter().all(|v| v.is_finite()));
        out.logits.cross_entropy(&ids, Default::default()).unwrap().backward().unwrap();
        for (name, p) in model.params() {
            assert!(p.grad().is_some_and(|g| g.to_vec().iter().all(|v| v.is_finite())), "{kind:?} {mixer:?}: {name}");
        }
        if matches!(backward, BackwardMode::Implicit { .. }) {
            assert!(model.last_adjoint_stats()[0].as_ref().is_some_and(|s| s.iterations >= 1));
        }
    }
}

#[test]
fn t9_initialisation() {
    let cfg = MambaConfig::fp_mamba(32);
    let blk = FpMambaBlock::new(&cfg, &mut Rng::new(0)).unwrap();
    let params = blk.params();
    let get = |n: &str| params.iter().find(|(k, _)| k == n).unwrap().1.to_vec();
    for b in get("dt_proj.bias") {
        let sp = (b as f64).exp().ln_1p();
        assert!((1e-3 - 1e-7..=0.1 + 1e-7).contains(&sp), "softplus(b_dt) = {sp}");
    }
    let bound = (cfg.dt_rank as f32).powf(-0.5);
    assert!(get("dt_proj.weight").iter().all(|w| w.abs() <= bound));
    let a_log = get("A_log");
    for (k, v) in a_log.iter().enumerate() {
        assert!((v - ((k % cfg.d_state) as f32 + 1.0).ln()).abs() < 1e-6);
    }
    assert!(get("D").iter().all(|&v| v == 1.0));
    // Weight norm leaves W = V at init.
    for (g, v) in [("bc_proj.weight_g", "bc_proj.weight_v"), ("zy_proj.weight_g", "zy_proj.weight_v")] {
        let (gv, vv) = (get(g), get(v));
        let cols = gv.len();
        let rows = vv.len() / cols;
        for j in 0..cols {
            let norm = (0..rows).map(|i| vv[i * cols + j] * vv[i * cols + j]).sum::<f32>().sqrt();
            assert!((gv[j] - norm).abs() <= 1e-5 * norm.max(1.0), "{g}[{j}]");
        }
    }
    assert_eq!(ModelConfig::new(ModelKind::FpMamba, 61, 1, 8).padded_vocab(), 64);
    assert!(matches!(
        FpMambaBlock::new(&MambaConfig { d_state: 0, ..cfg }, &mut Rng::new(0)),
        Err(Error::InvalidArgument { .. })
    ));
}

/// FP-Mamba with the short convolution and `glu_in_loop`: the recorded step at a fixed
/// state has the gradient of central differences in the block input, `glu_in_loop` has
/// no `W_zy`, and the gate sits inside `F` (F changes with z alone).
#[test]
fn short_conv_and_glu_in_loop_have_their_gradients() {
    let cfg = MambaConfig { d_inner: 6, d_state: 3, short_conv: true, glu_in_loop: true, ..MambaConfig::fp_mamba(4) };
    let blk = FpMambaBlock::new(&cfg, &mut Rng::new(5)).unwrap();
    let names: Vec<String> = blk.params().into_iter().map(|(n, _)| n).collect();
    assert!(
        names.iter().any(|n| n.starts_with("conv.")) && !names.iter().any(|n| n.starts_with("zy_proj")),
        "{names:?}"
    );
    let u = rand_tensor(&[2, 5, 4], -1.0, 1.0, &mut Rng::new(6));
    let run = SolveRun { quantile: 1.0, lmax: 50 };
    let y_star = blk.forward(&u, &SolverConfig::fp_mamba(), &run, None).unwrap().state;
    let w = rand_tensor(&[2, 5, 4], -1.0, 1.0, &mut Rng::new(7));
    let f = |x: &[Tensor]| {
        blk.forward(&x[0], &SolverConfig::fp_mamba(), &run, Some(&y_star))?.out.mul(&w).map(|t| t.sum_all())
    };
    assert_grads("fp-mamba short conv + glu_in_loop", f, std::slice::from_ref(&u));
    let inp = no_grad(|| blk.prepare(&u)).unwrap();
    let mut inp2 = inp.clone();
    inp2.z = inp.z.add_scalar(1.0);
    let (a, b) = no_grad(|| (blk.step(&inp, &y_star).unwrap().to_vec(), blk.step(&inp2, &y_star).unwrap().to_vec()));
    assert_ne!(a, b, "the gate is inside F");
    assert!(FpMambaBlock::new(&MambaConfig { conv_kernel: 0, ..cfg }, &mut Rng::new(0)).is_err());
}

/// §4.1: the backbone divides FP-Mamba's (and Mamba's) initial `W_out` by √n_layer, and
/// only that weight: with the same seed, a block built with `out_scale = 0.5` has
/// exactly half the `out_proj` weight and every other parameter unchanged. The model
/// sets the factor from its layer count; a bad factor is refused.
#[test]
fn out_proj_is_scaled_by_one_over_sqrt_n_layer() {
    use fixpoint::fpr::{ModelConfig, ModelKind};
    let cfg = MambaConfig { d_inner: 8, d_state: 3, ..MambaConfig::fp_mamba(4) };
    let one = FpMambaBlock::new(&cfg, &mut Rng::new(5)).unwrap();
    let half = FpMambaBlock::new(&MambaConfig { out_scale: 0.5, ..cfg }, &mut Rng::new(5)).unwrap();
    let (p1, p2) = (one.params(), half.params());
    assert_eq!(p1.len(), p2.len());
    let mut seen = false;
    for ((n1, a), (n2, b)) in p1.iter().zip(&p2) {
        assert_eq!(n1, n2);
        let (a, b) = (a.to_vec(), b.to_vec());
        if n1.starts_with("out_proj") {
            seen = true;
            assert!(a.iter().any(|&v| v != 0.0));
            for (x, y) in a.iter().zip(&b) {
                assert_eq!(*y, 0.5 * x, "{n1}");
            }
        } else {
            assert_eq!(a, b, "{n1}");
        }
    }
    assert!(seen, "no out_proj parameter");
    for kind in [ModelKind::FpMamba, ModelKind::Mamba] {
        let mc = ModelConfig::new(kind, 10, 4, 8).mamba_config_for(2).unwrap();
        assert_eq!(mc.out_scale, 0.5, "{kind:?}");
    }
    for bad in [0.0, -1.0, f32::NAN] {
        assert!(FpMambaBlock::new(&MambaConfig { out_scale: bad, ..cfg }, &mut Rng::new(0)).is_err());
    }
}
