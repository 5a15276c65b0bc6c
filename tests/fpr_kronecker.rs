//! T5 (spec §9): the Kronecker mixer `Qv = v − 2 vec_row(Uᵀ X Vᵀ)` equals
//! `(I − 2Uᵀ⊗V)v` with the Kronecker product built explicitly (row-major vec), and its
//! `U`, `V` equal an f64 re-derivation from the pre-activations (triangular fill,
//! `LLᵀ`, row normalisation, 16-step power estimate, σ gates); in spectral mode the
//! dominant eigenvalue of the normalised factor is ≤ 1 up to the power-iteration error.
//! Gradients against finite differences (rows and spectral), `kron_detach_rho` cuts
//! only the gradient; the solver's plain-data kernel equals the graph step; an FP-RNN
//! with the Kronecker mixer reaches the dense token-by-token fixed point. DPLR: refused
//! for FP-RNN with a typed error; its op against an explicit matrix and differences.

mod common;

use common::{assert_close, assert_grads, assert_grads_tol, rand_tensor};
use fixpoint::autograd::no_grad;
use fixpoint::fpr::{
    BlockConfig, FpRnnBlock, KronNorm, KroneckerMixer, Mixer, MixerInput, MixerKind, SolveRun, SolverConfig,
    dplr_apply, kron_factors,
};
use fixpoint::{Error, Rng, Tensor};

fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}
fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// `p·W (+ b)` in f64 for one row (`W` is `[P, n]`).
fn affine(p: &[f32], w: &[f32], b: Option<&[f32]>, n: usize) -> Vec<f64> {
    (0..n)
        .map(|j| {
            p.iter().enumerate().map(|(i, &x)| x as f64 * w[i * n + j] as f64).sum::<f64>()
                + b.map_or(0.0, |b| b[j] as f64)
        })
        .collect()
}

/// Normalised factor (before the σ gate) and the power estimate, from triangular entries.
fn factor_f64(tri: &[f64], m: usize, spectral: bool) -> (Vec<f64>, f64) {
    let mut l = vec![0.0; m * m];
    let mut k = 0;
    for i in 0..m {
        for j in i..m {
            l[i * m + j] = silu(tri[k]);
            k += 1;
        }
    }
    let mut g = vec![0.0; m * m];
    for i in 0..m {
        for j in 0..m {
            g[i * m + j] = (0..m).map(|c| l[i * m + c] * l[j * m + c]).sum();
        }
        let n = (0..m).map(|j| g[i * m + j] * g[i * m + j]).sum::<f64>().sqrt().max(1e-6);
        for j in 0..m {
            g[i * m + j] /= n;
        }
    }
    let mv = |z: &[f64]| -> Vec<f64> { (0..m).map(|i| (0..m).map(|j| g[i * m + j] * z[j]).sum()).collect() };
    let mut rho = 0.0;
    if spectral {
        let mut z = vec![1.0; m];
        let mut prev = z.clone();
        for _ in 0..16 {
            prev = z.clone();
            let y = mv(&prev);
            let n = y.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-6);
            z = y.iter().map(|v| v / n).collect();
        }
        rho = z.iter().zip(mv(&prev)).map(|(a, b)| a * b).sum();
        for v in g.iter_mut() {
            *v /= rho + 1e-6;
        }
    }
    (g, rho)
}

/// Dominant eigenvalue magnitude by a long power iteration (f64).
fn dominant(g: &[f64], m: usize) -> f64 {
    let mut z = vec![1.0; m];
    let mut lam = 0.0;
    for _ in 0..5000 {
        let y: Vec<f64> = (0..m).map(|i| (0..m).map(|j| g[i * m + j] * z[j]).sum()).collect();
        lam = y.iter().map(|v| v * v).sum::<f64>().sqrt();
        z = y.iter().map(|v| v / lam).collect();
    }
    lam
}

#[test]
fn t5_kronecker_equals_the_explicit_matrix() {
    for (d, norm) in [(12, KronNorm::Spectral), (12, KronNorm::Rows), (7, KronNorm::Spectral), (16, KronNorm::Spectral)]
    {
        let (m1, m2) = kron_factors(d);
        assert_eq!(m1 * m2, d);
        assert!(m1 * m1 <= d && (m1 + 1..=d).all(|m| m * m > d || d % m != 0), "m1 = {m1} for D = {d}");
        let mut rng = Rng::new(d as u64);
        let mixer = KroneckerMixer::new(5, d, norm, false, 1e-6, &mut rng).unwrap();
        let n = 3;
        let p = rand_tensor(&[n, 5], -2.0, 2.0, &mut rng);
        let v = rand_tensor(&[n, d], -1.0, 1.0, &mut rng);
        let (u, vm) = mixer.coefficients(&p).unwrap();
        let got = mixer.apply(&p, &v).unwrap().to_vec();
        let (wuv, wd) = (mixer.uv_proj().weight().unwrap().to_vec(), mixer.d_proj().weight().unwrap().to_vec());
        let bd = mixer.d_proj().bias().unwrap().to_vec();
        let n1 = m1 * (m1 + 1) / 2;
        let n_tri = n1 + m2 * (m2 + 1) / 2;
        let (pv, vv) = (p.to_vec(), v.to_vec());
        let mut want = Vec::new();
        let mut want_u = Vec::new();
        let mut want_v = Vec::new();
        for row in 0..n {
            let pr = &pv[row * 5..(row + 1) * 5];
            let tri = affine(pr, &wuv, None, n_tri);
            let a = affine(pr, &wd, Some(&bd), m1 + m2);
            let spectral = norm == KronNorm::Spectral;
            let (mut uf, rho_u) = factor_f64(&tri[..n1], m1, spectral);
            let (mut vf, rho_v) = factor_f64(&tri[n1..], m2, spectral);
            if spectral {
                // The dominant eigenvalue of the normalised factor is ≤ 1 up to the
                // power-iteration error (measured ≤ 1 + 1e-6 here).
                for (g, m, rho) in [(&uf, m1, rho_u), (&vf, m2, rho_v)] {
                    let lam = dominant(g, m);
                    assert!(lam <= 1.0 + 1e-3, "D {d}: dominant eigenvalue {lam} after dividing by ρ̂ = {rho}");
                }
            }
            for i in 0..m1 {
                for j in 0..m1 {
                    uf[i * m1 + j] *= sigmoid(a[i]);
                }
            }
            for i in 0..m2 {
                for j in 0..m2 {
                    vf[i * m2 + j] *= sigmoid(a[m1 + i]);
                }
            }
            // Q = I − 2 Uᵀ⊗V explicitly: (Uᵀ⊗V)[i·m2 + j, k·m2 + l] = U[k, i] V[j, l].
            let x = &vv[row * d..(row + 1) * d];
            for i in 0..m1 {
                for j in 0..m2 {
                    let mut s = x[i * m2 + j] as f64;
                    for k in 0..m1 {
                        for l in 0..m2 {
                            s -= 2.0 * uf[k * m1 + i] * vf[j * m2 + l] * x[k * m2 + l] as f64;
                        }
                    }
                    want.push(s);
                }
            }
            want_u.extend(uf);
            want_v.extend(vf);
        }
        assert_close(&format!("U, D {d} {norm:?}"), &u.to_vec(), &want_u, 1e-5, 1e-4);
        assert_close(&format!("V, D {d} {norm:?}"), &vm.to_vec(), &want_v, 1e-5, 1e-4);
        assert_close(&format!("Qv, D {d} {norm:?}"), &got, &want, 1e-5, 1e-4);
    }
}

#[test]
fn kronecker_gradients_match_finite_differences() {
    for norm in [KronNorm::Rows, KronNorm::Spectral] {
        let mut rng = Rng::new(3);
        let mixer = KroneckerMixer::new(4, 6, norm, false, 1e-6, &mut rng).unwrap();
        let p = rand_tensor(&[2, 4], -1.0, 1.0, &mut rng);
        let v = rand_tensor(&[2, 6], -1.0, 1.0, &mut rng);
        let r = rand_tensor(&[2, 6], -1.0, 1.0, &mut rng);
        // Step 1e-3: the 16-step power estimate is too curved for the default 1e-2 (there
        // the spectral case misses by 30%, while 1e-3 passes at the usual tolerances).
        let f = |x: &[Tensor]| Ok(mixer.apply(&x[0], &x[1])?.mul(&r)?.sum_all());
        assert_grads_tol(&format!("kron {norm:?}"), f, &[p.clone(), v.clone()], 1e-3, 2e-3, 1e-2);
        // kron_detach_rho: same forward, a different (truncated) gradient in spectral mode.
        let detached = KroneckerMixer::new(4, 6, norm, true, 1e-6, &mut Rng::new(3)).unwrap();
        let grad = |m: &KroneckerMixer| {
            let pl = p.detach().requires_grad_();
            m.apply(&pl, &v).unwrap().mul(&r).unwrap().sum_all().backward().unwrap();
            pl.grad().unwrap().to_vec()
        };
        assert_eq!(
            no_grad(|| mixer.apply(&p, &v)).unwrap().to_vec(),
            no_grad(|| detached.apply(&p, &v)).unwrap().to_vec()
        );
        let (g0, g1) = (grad(&mixer), grad(&detached));
        let gap = g0.iter().zip(&g1).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        match norm {
            KronNorm::Rows => assert_eq!(gap, 0.0),
            KronNorm::Spectral => assert!(gap > 1e-4, "detaching ρ̂ must change the gradient ({gap})"),
        }
    }
}

fn kron_block(input: MixerInput, seed: u64) -> FpRnnBlock {
    let cfg = BlockConfig { d_inner: 9, mixer: MixerKind::kronecker(), mixer_input: input, ..BlockConfig::new(5) };
    FpRnnBlock::new(&cfg, &mut Rng::new(seed)).unwrap()
}

#[test]
fn kernel_equals_graph_step_and_dense_fixed_point() {
    for input in [MixerInput::Concat, MixerInput::Symmetric, MixerInput::InputOnly] {
        let block = kron_block(input, 5);
        let mut rng = Rng::new(6);
        let u = rand_tensor(&[2, 7, 5], -1.0, 1.0, &mut rng);
        let h = rand_tensor(&[2, 7, 9], -1.0, 1.0, &mut rng);
        let inp = no_grad(|| block.prepare(&u)).unwrap();
        let want: Vec<f64> = no_grad(|| block.step(&inp, &h)).unwrap().to_vec().into_iter().map(|x| x as f64).collect();
        let core = block.core(&inp).unwrap();
        let mut out = vec![0.0f32; h.numel()];
        core.step(&h.to_vec(), &mut out, &mut Default::default()).unwrap();
        assert_close(&format!("kernel vs graph {input:?}"), &out, &want, 1e-5, 1e-4);
        // The parallel fixed point equals the token-by-token dense solve.
        let scfg = SolverConfig { threshold: 1e-6, ..SolverConfig::default() };
        let (hp, stats) = core.solve(&scfg, &SolveRun { quantile: 1.0, lmax: 1000 }, None).unwrap();
        assert!(stats.converged, "{stats:?}");
        let hs: Vec<f64> = core.solve_sequential().unwrap().into_iter().map(|x| x as f64).collect();
        let scale = hs.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        assert_close(&format!("parallel vs dense {input:?}"), &hp, &hs, 2e-5 * scale * 10.0, 1e-4);
    }
}

#[test]
fn dplr_is_refused_for_fp_rnn_and_correct_as_an_op() {
    let cfg = BlockConfig { mixer: MixerKind::Dplr { rank: 2 }, ..BlockConfig::new(4) };
    match FpRnnBlock::new(&cfg, &mut Rng::new(0)) {
        Err(Error::InvalidArgument { message, .. }) => assert!(message.contains("DPLR"), "{message}"),
        other => panic!("DPLR must be refused for FP-RNN, got {:?}", other.map(|_| ())),
    }
    // Qv = v − 2Σ α_i u_i (u_iᵀ v) against the explicit matrix and differences.
    let mut rng = Rng::new(4);
    let (n, r, d) = (3, 2, 5);
    let u = rand_tensor(&[n, r, d], -1.0, 1.0, &mut rng);
    let a = rand_tensor(&[n, r], 0.0, 1.0, &mut rng);
    let v = rand_tensor(&[n, d], -1.0, 1.0, &mut rng);
    let got = dplr_apply(&u, &a, &v).unwrap().to_vec();
    let (uv, av, vv) = (u.to_vec(), a.to_vec(), v.to_vec());
    let mut want = Vec::new();
    for row in 0..n {
        for i in 0..d {
            let mut q_v = 0.0f64;
            for j in 0..d {
                let mut q = if i == j { 1.0 } else { 0.0 };
                for k in 0..r {
                    q -= 2.0 * av[row * r + k] as f64 * (uv[(row * r + k) * d + i] * uv[(row * r + k) * d + j]) as f64;
                }
                q_v += q * vv[row * d + j] as f64;
            }
            want.push(q_v);
        }
    }
    assert_close("dplr", &got, &want, 1e-5, 1e-5);
    let w = rand_tensor(&[n, d], -1.0, 1.0, &mut rng);
    assert_grads("dplr", |x| Ok(dplr_apply(&x[0], &x[1], &x[2])?.mul(&w)?.sum_all()), &[u, a, v]);
    // The mixer module applies the same op.
    let m = Mixer::new(MixerKind::Dplr { rank: 2 }, 3, d, 1e-6, &mut rng).unwrap();
    assert_eq!(m.dim(), d);
    assert!(m.apply(&rand_tensor(&[2, 3], -1.0, 1.0, &mut rng), &rand_tensor(&[2, d], -1.0, 1.0, &mut rng)).is_ok());
}
