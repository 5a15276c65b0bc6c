//! T4 (spec §9): Householder algebra and backward. The op against an explicit f64
//! product of `I − c·α uuᵀ` factors; reflections (α = 1, c = 2) are orthogonal with
//! determinant −1; α = ½ gives a singular projector; spec(Q) = {1 − 2α, 1, …}; gradients
//! of the op and of the whole mixer (projections, SiLU, normalisation, sigmoid) against
//! central differences; λ = 1/3 with α → 1 gives an eigenvalue of A_t near −1.

mod common;
mod fpr_common;

use common::{assert_close, assert_grads, assert_grads_tol, make_view, rand_tensor, view_kind};
use fixpoint::fpr::{FpCore, HouseholderKernel, HouseholderMixer, MixerKernel, householder, householder_from_pre};
use fixpoint::nn::Module;
use fixpoint::{Error, Rng, Tensor};
use fpr_common::{coefficients_f64, identity, inverse, q_matrix};
use proptest::prelude::*;

/// Unit rows (`r` of length `d`) as f32.
fn unit_rows(r: usize, d: usize, rng: &mut Rng) -> Vec<f32> {
    let mut u: Vec<f32> = (0..r * d).map(|_| rng.normal()).collect();
    for ui in u.chunks_mut(d) {
        let n = ui.iter().map(|v| v * v).sum::<f32>().sqrt();
        ui.iter_mut().for_each(|v| *v /= n);
    }
    u
}

/// `Q` of one set of coefficients built by the library: apply the op to every `e_j`
/// (rows of the identity) and read the columns. Returns row-major `Q` in f64.
fn library_q(u: &[f32], alpha: &[f32], r: usize, d: usize, scale: f32) -> Vec<f64> {
    let ub: Vec<f32> = (0..d).flat_map(|_| u.iter().copied()).collect();
    let ab: Vec<f32> = (0..d).flat_map(|_| alpha.iter().copied()).collect();
    let eye: Vec<f32> = identity(d).into_iter().map(|v| v as f32).collect();
    let ut = Tensor::from_vec(ub, [d, r, d]).unwrap();
    let at = Tensor::from_vec(ab, [d, r]).unwrap();
    let v = Tensor::from_vec(eye, [d, d]).unwrap();
    let qe = householder(&ut, &at, &v, scale).unwrap().to_vec(); // row j = Q e_j
    let mut q = vec![0.0f64; d * d];
    for j in 0..d {
        for i in 0..d {
            q[i * d + j] = qe[j * d + i] as f64;
        }
    }
    q
}

fn det(m: &[f64], d: usize) -> f64 {
    let mut a = m.to_vec();
    let mut det = 1.0;
    for c in 0..d {
        let p = (c..d).max_by(|&x, &y| a[x * d + c].abs().total_cmp(&a[y * d + c].abs())).unwrap();
        if a[p * d + c] == 0.0 {
            return 0.0;
        }
        if p != c {
            for j in 0..d {
                a.swap(p * d + j, c * d + j);
            }
            det = -det;
        }
        det *= a[c * d + c];
        for r in c + 1..d {
            let f = a[r * d + c] / a[c * d + c];
            for j in c..d {
                a[r * d + j] -= f * a[c * d + j];
            }
        }
    }
    det
}

fn matvec(m: &[f64], v: &[f64], d: usize) -> Vec<f64> {
    (0..d).map(|i| (0..d).map(|j| m[i * d + j] * v[j]).sum()).collect()
}

#[test]
fn reflection_is_orthogonal_with_determinant_minus_one() {
    let mut rng = Rng::new(1);
    for d in [1usize, 2, 7, 16] {
        let u = unit_rows(1, d, &mut rng);
        let q = library_q(&u, &[1.0], 1, d, 2.0);
        let mut qtq = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..d {
                qtq[i * d + j] = (0..d).map(|k| q[k * d + i] * q[k * d + j]).sum();
            }
        }
        for (a, b) in qtq.iter().zip(identity(d)) {
            assert!((a - b).abs() < 1e-5, "d {d}: QᵀQ = I fails ({a} vs {b})");
        }
        assert!((det(&q, d) + 1.0).abs() < 1e-5, "d {d}: det {}", det(&q, d));
        // A product of r reflections has determinant (−1)^r.
        for r in 2..4 {
            let u = unit_rows(r, d, &mut rng);
            let q = library_q(&u, &vec![1.0; r], r, d, 2.0);
            let want = if r % 2 == 0 { 1.0 } else { -1.0 };
            assert!((det(&q, d) - want).abs() < 1e-4, "d {d} r {r}: det {}", det(&q, d));
        }
    }
}

#[test]
fn half_alpha_gives_a_singular_projector() {
    let mut rng = Rng::new(2);
    for d in [1usize, 3, 9] {
        let u = unit_rows(1, d, &mut rng);
        let q = library_q(&u, &[0.5], 1, d, 2.0);
        let q2 = fpr_common::matmul(&q, &q, d);
        for (a, b) in q2.iter().zip(&q) {
            assert!((a - b).abs() < 1e-5, "Q² = Q fails");
        }
        assert!(det(&q, d).abs() < 1e-5);
        let u64: Vec<f64> = u.iter().map(|&v| v as f64).collect();
        assert!(matvec(&q, &u64, d).iter().all(|v| v.abs() < 1e-6), "Qu = 0 fails");
        // With the paper's convention (c = 1) α = ½ is not singular: eigenvalue ½ along u.
        let q1 = library_q(&u, &[0.5], 1, d, 1.0);
        assert!((det(&q1, d) - 0.5).abs() < 1e-5);
    }
}

#[test]
fn spectrum_is_one_minus_c_alpha_along_u_and_one_elsewhere() {
    let mut rng = Rng::new(3);
    for &(d, alpha, scale) in &[(5usize, 0.3f32, 2.0f32), (8, 0.9, 2.0), (6, 0.7, 1.0), (2, 0.05, 2.0)] {
        let u = unit_rows(1, d, &mut rng);
        let q = library_q(&u, &[alpha], 1, d, scale);
        let u64: Vec<f64> = u.iter().map(|&v| v as f64).collect();
        let qu = matvec(&q, &u64, d);
        let lam = 1.0 - scale as f64 * alpha as f64;
        for i in 0..d {
            assert!((qu[i] - lam * u64[i]).abs() < 1e-5, "Qu = (1 − cα)u fails");
        }
        // Any w ⊥ u is fixed.
        let mut w: Vec<f64> = (0..d).map(|_| rng.normal() as f64).collect();
        let dot: f64 = w.iter().zip(&u64).map(|(a, b)| a * b).sum();
        w.iter_mut().zip(&u64).for_each(|(a, b)| *a -= dot * b);
        let qw = matvec(&q, &w, d);
        for i in 0..d {
            assert!((qw[i] - w[i]).abs() < 1e-5, "Qw = w fails");
        }
        // Determinant = product of eigenvalues.
        assert!((det(&q, d) - lam).abs() < 1e-5);
    }
}

#[test]
fn op_backward_matches_finite_differences() {
    let mut rng = Rng::new(4);
    for (lead, r, d, scale) in [(vec![2usize, 3], 2usize, 5usize, 2.0f32), (vec![1], 1, 1, 2.0), (vec![4], 3, 9, 1.0)] {
        let mut us = lead.clone();
        us.extend([r, d]);
        let mut als = lead.clone();
        als.push(r);
        let mut vs = lead.clone();
        vs.push(d);
        let u = rand_tensor(&us, -0.6, 0.6, &mut rng);
        let a = rand_tensor(&als, 0.1, 0.9, &mut rng);
        let v = rand_tensor(&vs, -1.0, 1.0, &mut rng);
        assert_grads(
            &format!("householder {lead:?} r {r} d {d}"),
            |x| householder(&x[0], &x[1], &x[2], scale),
            &[u, a, v],
        );
    }
}

#[test]
fn op_backward_on_the_parallel_path_matches_composition() {
    // Large enough for the row-parallel kernels; compare with the same product written
    // with elementwise ops and reductions (independent backward rules).
    let mut rng = Rng::new(5);
    let (n, r, d) = (2000, 3, 40);
    let u = Tensor::from_vec(unit_rows(n * r, d, &mut rng), [n, r, d]).unwrap().requires_grad_();
    let a = rand_tensor(&[n, r], 0.0, 1.0, &mut rng).requires_grad_();
    let v = rand_tensor(&[n, d], -1.0, 1.0, &mut rng).requires_grad_();
    let w = rand_tensor(&[n, d], -1.0, 1.0, &mut rng);
    householder(&u, &a, &v, 2.0).unwrap().mul(&w).unwrap().sum_all().backward().unwrap();
    let (u2, a2, v2) = (u.detach().requires_grad_(), a.detach().requires_grad_(), v.detach().requires_grad_());
    let mut x = v2.clone();
    for i in 0..r {
        let ui = u2.narrow(1, i, 1).unwrap().squeeze(1).unwrap(); // [n, d]
        let ai = a2.narrow(1, i, 1).unwrap(); // [n, 1]
        let dot = ui.mul(&x).unwrap().sum(&[-1], true).unwrap(); // [n, 1]
        x = x.sub(&ui.mul(&dot.mul(&ai).unwrap().mul_scalar(2.0)).unwrap()).unwrap();
    }
    x.mul(&w).unwrap().sum_all().backward().unwrap();
    let f = |t: &Tensor| t.grad().unwrap().to_vec().into_iter().map(|v| v as f64).collect::<Vec<_>>();
    assert_close("du", &u.grad().unwrap().to_vec(), &f(&u2), 1e-4, 1e-4);
    assert_close("dalpha", &a.grad().unwrap().to_vec(), &f(&a2), 1e-4, 1e-4);
    assert_close("dv", &v.grad().unwrap().to_vec(), &f(&v2), 1e-4, 1e-4);
}

#[test]
fn mixer_backward_matches_finite_differences() {
    // The whole mixer: p ↦ (u, α) through weight-normalised projections, SiLU, L2
    // normalisation and the sigmoid, then Q(p)v. Gradients in p and v by autodiff vs
    // central differences (f32 forward, so a moderate step).
    let mut rng = Rng::new(6);
    for &(r, scale) in &[(1usize, 2.0f32), (3, 2.0), (2, 1.0)] {
        let (d, pdim) = (6, 12);
        let m = HouseholderMixer::new(pdim, d, r, scale, 1e-6, &mut rng).unwrap();
        let p = rand_tensor(&[2, 3, pdim], -1.0, 1.0, &mut rng);
        let v = rand_tensor(&[2, 3, d], -1.0, 1.0, &mut rng);
        assert_grads_tol(&format!("mixer r {r}"), |x| m.apply(&x[0], &x[1]), &[p, v], 5e-3, 2e-3, 2e-2);
    }
}

#[test]
fn mixer_parameter_gradients_match_finite_differences() {
    let mut rng = Rng::new(7);
    let (d, pdim, r) = (5, 10, 2);
    let mut m = HouseholderMixer::new(pdim, d, r, 2.0, 1e-6, &mut rng).unwrap();
    // Move α's bias off zero so its gradient is generic.
    for (name, t) in m.params_mut() {
        if name.ends_with("bias") {
            t.update_data(|x| x.iter_mut().enumerate().for_each(|(i, v)| *v = 0.3 * i as f32 - 0.2));
        }
    }
    let p = rand_tensor(&[3, pdim], -1.0, 1.0, &mut rng);
    let v = rand_tensor(&[3, d], -1.0, 1.0, &mut rng);
    let w = rand_tensor(&[3, d], -1.0, 1.0, &mut rng);
    let loss = |m: &HouseholderMixer| m.apply(&p, &v).unwrap().mul(&w).unwrap().sum_all();
    m.zero_grad();
    loss(&m).backward().unwrap();
    let grads: Vec<Vec<f32>> = m.params().iter().map(|(_, t)| t.grad().unwrap().to_vec()).collect();
    let names: Vec<String> = m.params().iter().map(|(n, _)| n.clone()).collect();
    let h = 1e-2f32;
    for (k, name) in names.iter().enumerate() {
        let len = grads[k].len();
        for i in 0..len {
            let eval = |m: &mut HouseholderMixer, delta: f32| {
                m.params_mut()[k].1.update_data(|x| x[i] += delta);
                let l = fixpoint::no_grad(|| loss(m)).item().unwrap() as f64;
                m.params_mut()[k].1.update_data(|x| x[i] -= delta);
                l
            };
            let num = (eval(&mut m, h) - eval(&mut m, -h)) / (2.0 * h as f64);
            let a = grads[k][i] as f64;
            assert!((a - num).abs() <= 2e-3 + 2e-2 * num.abs(), "{name}[{i}]: analytic {a} vs numeric {num}");
        }
    }
}

#[test]
fn negative_eigenvalue_of_the_dense_transition() {
    // Λ = I/3 and α → 1 (c = 2): A = (I + 2Q)⁻¹ has eigenvalue 1/(3 − 4α) → −1 along u.
    // Two tokens: t = 0 builds h_0, t = 1 has no input, so h_1 = A_1 h_0.
    let d = 4;
    let alpha: f32 = 1.0 - 1e-4;
    let logit = (alpha / (1.0 - alpha)).ln();
    // u_pre large on channel 0 and very negative elsewhere: SiLU gives u ≈ e_0.
    let mut row = vec![-30.0f32; d];
    row[0] = 5.0;
    row.push(logit);
    let base: Vec<f32> = [row.clone(), row].concat();
    let k = HouseholderKernel::new(1, d, 2.0, 1e-6, base, None).unwrap();
    let lambda = vec![1.0 / 3.0; 2 * d];
    let mut bx = vec![0.0f32; 2 * d];
    bx[0] = 1.0;
    bx[1] = 0.5;
    let core = FpCore::new(1, 2, d, lambda, bx, MixerKernel::Householder(k)).unwrap();
    let h = core.solve_sequential().unwrap();
    let ratio = h[d] / h[0];
    let want = 1.0 / (3.0 - 4.0 * alpha);
    assert!((ratio - want).abs() < 1e-3, "h_1/h_0 along u = {ratio}, want {want}");
    assert!(ratio < -0.99);
    // Channels orthogonal to u have eigenvalue 1/(1 + 2) = 1/3.
    assert!((h[d + 1] / h[1] - 1.0 / 3.0).abs() < 1e-4, "{}", h[d + 1] / h[1]);
    // And the test's own f64 A_t agrees.
    let u = [1.0f64, 0.0, 0.0, 0.0];
    let q = q_matrix(&u, &[alpha as f64], 2.0, d);
    let mut m = identity(d);
    for i in 0..d {
        for j in 0..d {
            m[i * d + j] += 2.0 * q[i * d + j];
        }
    }
    let a = inverse(&m, d).unwrap();
    assert!((a[0] - want as f64).abs() < 1e-6);
}

#[test]
fn bad_arguments_are_typed_errors() {
    let u = Tensor::zeros([2, 1, 3]);
    let a = Tensor::zeros([2, 1]);
    let v = Tensor::zeros([2, 3]);
    assert!(householder(&u, &a, &v, 2.0).is_ok());
    assert!(matches!(householder(&Tensor::zeros([2, 1, 4]), &a, &v, 2.0), Err(Error::ShapeMismatch { .. })));
    assert!(matches!(householder(&u, &Tensor::zeros([2, 2]), &v, 2.0), Err(Error::ShapeMismatch { .. })));
    assert!(matches!(householder(&u, &a, &Tensor::zeros([3, 3]), 2.0), Err(Error::ShapeMismatch { .. })));
    assert!(matches!(householder(&u, &a, &Tensor::scalar(1.0), 2.0), Err(Error::InvalidArgument { .. })));
    let mut rng = Rng::new(0);
    assert!(matches!(HouseholderMixer::new(4, 4, 1, 3.0, 1e-6, &mut rng), Err(Error::InvalidArgument { .. })));
    assert!(matches!(HouseholderMixer::new(4, 4, 0, 2.0, 1e-6, &mut rng), Err(Error::InvalidArgument { .. })));
    assert!(matches!(HouseholderKernel::new(1, 3, 2.0, 1e-6, vec![0.0; 5], None), Err(Error::InvalidArgument { .. })));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn op_matches_explicit_product(
        n in prop_oneof![Just(1usize), Just(3), Just(17)], r in 1usize..5,
        d in prop_oneof![Just(1usize), Just(7), Just(8), Just(63), Just(65)],
        scale in prop_oneof![Just(1.0f32), Just(2.0)], view in view_kind(), seed in any::<u64>(),
    ) {
        let mut rng = Rng::new(seed);
        let u = unit_rows(n * r, d, &mut rng);
        let a: Vec<f32> = (0..n * r).map(|_| rng.uniform()).collect();
        let v: Vec<f32> = (0..n * d).map(|_| rng.range(-2.0, 2.0)).collect();
        let ut = make_view(&u, &[n, r, d], view);
        let vt = make_view(&v, &[n, d], view);
        let at = Tensor::from_slice(&a, [n, r]).unwrap();
        let got = householder(&ut, &at, &vt, scale).unwrap().to_vec();
        let mut want = Vec::with_capacity(n * d);
        for row in 0..n {
            let u64: Vec<f64> = u[row * r * d..(row + 1) * r * d].iter().map(|&x| x as f64).collect();
            let a64: Vec<f64> = a[row * r..(row + 1) * r].iter().map(|&x| x as f64).collect();
            let q = q_matrix(&u64, &a64, scale as f64, d);
            let v64: Vec<f64> = v[row * d..(row + 1) * d].iter().map(|&x| x as f64).collect();
            want.extend(matvec(&q, &v64, d));
        }
        assert_close("householder", &got, &want, 1e-5, 1e-5);
    }
}

/// The fused op from pre-activations: forward against `Q v` built in f64 from the spec's
/// coefficients (`u = normalize(SiLU(pre))`, `α = σ(pre_α)`), and its recomputing
/// backward against central differences in all three inputs, for both α scales, a
/// row whose `u` pre-activations are all very negative (norm below eps: the `du/eps`
/// branch), odd sizes and a strided `v`.
#[test]
fn householder_from_pre_is_the_composite_and_has_its_gradient() {
    for (lead, r, d, scale) in [(vec![3usize], 2usize, 5usize, 2.0f32), (vec![2, 3], 1, 7, 1.0), (vec![1], 3, 1, 2.0)] {
        let mut rng = Rng::new(7 + d as u64);
        let mut su = lead.clone();
        su.push(r * d);
        let mut sa = lead.clone();
        sa.push(r);
        let mut sv = lead.clone();
        sv.push(d);
        let mut pre_u = rand_tensor(&su, -2.0, 2.0, &mut rng);
        if d == 7 {
            // Row 0: SiLU(−30) ≈ −3e-12 per entry, norm below eps = 1e-6.
            let mut v = pre_u.to_vec();
            v[..r * d].iter_mut().for_each(|x| *x = -30.0);
            pre_u = Tensor::from_vec(v, su.clone()).unwrap();
        }
        let pre_a = rand_tensor(&sa, -2.0, 2.0, &mut rng);
        let v = rand_tensor(&sv, -1.0, 1.0, &mut rng);
        let got = householder_from_pre(&pre_u, &pre_a, &v, scale, 1e-6).unwrap().to_vec();
        let (pu, pa, vv) = (pre_u.to_vec(), pre_a.to_vec(), v.to_vec());
        let mut want = Vec::new();
        for row in 0..vv.len() / d {
            let mut pre: Vec<f64> = pu[row * r * d..(row + 1) * r * d].iter().map(|&x| x as f64).collect();
            pre.extend(pa[row * r..(row + 1) * r].iter().map(|&x| x as f64));
            let (u, alpha) = coefficients_f64(&pre, r, d, 1e-6);
            let q = q_matrix(&u, &alpha, scale as f64, d);
            for i in 0..d {
                want.push((0..d).map(|j| q[i * d + j] * vv[row * d + j] as f64).sum::<f64>());
            }
        }
        assert_close(&format!("householder_from_pre {lead:?} r{r} d{d}"), &got, &want, 1e-5, 1e-5);
        let f = |x: &[Tensor]| householder_from_pre(&x[0], &x[1], &x[2], scale, 1e-6);
        if d == 7 {
            // The tiny-norm row sits at a kink of max(‖s‖, eps): check v and α only.
            assert_grads_tol(
                "householder_from_pre (v, α)",
                |x| f(&[pre_u.clone(), x[0].clone(), x[1].clone()]),
                &[pre_a.clone(), v.clone()],
                1e-2,
                2e-3,
                1e-2,
            );
        } else {
            assert_grads(
                &format!("householder_from_pre {lead:?} r{r} d{d}"),
                f,
                &[pre_u.clone(), pre_a.clone(), v.clone()],
            );
        }
        // A transposed (strided) v gives the same values.
        if lead.len() == 2 {
            let vt = v.transpose(0, 1).unwrap().contiguous().transpose(0, 1).unwrap();
            assert_eq!(householder_from_pre(&pre_u, &pre_a, &vt, scale, 1e-6).unwrap().to_vec(), got);
        }
    }
    let (u, a, v) = (Tensor::zeros([2, 6]), Tensor::zeros([2, 2]), Tensor::zeros([2, 4]));
    assert!(householder_from_pre(&u, &a, &v, 2.0, 1e-6).is_err(), "r·D = 8 expected for u");
    assert!(householder_from_pre(&Tensor::zeros([2, 8]), &a, &v, 2.0, 0.0).is_err(), "eps must be positive");
}

/// The solver's row `H_r ⋯ H_1 (b⊙x − h) + h` in its Gram form (`householder_mix_row`:
/// `b⊙x − Σ c_i u_i` with the `c_i` from the dot products and the Gram matrix, two
/// passes), with the products computed in the pass and with the row's precomputed
/// extras (`u_i·b⊙x` and the Gram entries), against an f64 evaluation of the
/// reflections one after another, for every length around the 8- and 16-lane block
/// edges and ranks 0 to 6 (ranks above 4 take the general loop); the extras against
/// f64 dot products; `householder_row` (the graph op's row) against the same f64
/// reference; and the fused gate row (`householder_mix_gate_row`) bit for bit the mixed
/// row followed by the scan's gate step.
#[test]
fn solver_householder_row_is_the_reflections() {
    use fixpoint::fpr::mixer::{
        householder_extras_len, householder_mix_gate_row, householder_mix_row, householder_row, householder_row_extras,
    };
    let mut rng = Rng::new(21);
    for &d in &[1usize, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 128, 131] {
        for r in 0..=6 {
            let u = unit_rows(r, d, &mut rng);
            let alpha: Vec<f32> = (0..r).map(|_| rng.range(0.05, 0.95)).collect();
            let bx: Vec<f32> = (0..d).map(|_| rng.range(-1.0, 1.0)).collect();
            let h: Vec<f32> = (0..d).map(|_| rng.range(-1.0, 1.0)).collect();
            // f64 reference: the reflections on b⊙x − h, then + h.
            let mut v64: Vec<f64> = bx.iter().zip(&h).map(|(a, b)| (*a - *b) as f64).collect();
            for i in 0..r {
                let ui = &u[i * d..(i + 1) * d];
                let dot: f64 = ui.iter().zip(&v64).map(|(&x, y)| x as f64 * y).sum();
                let c = 2.0 * alpha[i] as f64 * dot;
                v64.iter_mut().zip(ui).for_each(|(v, &x)| *v -= c * x as f64);
            }
            let mut refl: Vec<f32> = bx.iter().zip(&h).map(|(a, b)| a - b).collect();
            householder_row(&u, &alpha, 2.0, &mut refl);
            for (a, b) in refl.iter().zip(&v64) {
                assert!((*a as f64 - b).abs() < 1e-5, "householder_row d {d} r {r}: {a} vs {b}");
            }
            v64.iter_mut().zip(&h).for_each(|(v, &b)| *v += b as f64);
            let el = householder_extras_len(r);
            assert_eq!(el, r * (r + 1) / 2);
            let mut ex = vec![f32::NAN; el];
            householder_row_extras(&u, r, &bx, &mut ex);
            let dot64 = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum::<f64>();
            let mut at = r;
            for i in 0..r {
                let ui = &u[i * d..(i + 1) * d];
                assert!((ex[i] as f64 - dot64(ui, &bx)).abs() < 1e-5, "u·bx d {d} r {r} i {i}");
                for j in 0..i {
                    let g = dot64(ui, &u[j * d..(j + 1) * d]);
                    assert!((ex[at] as f64 - g).abs() < 1e-5, "gram d {d} r {r} ({i}, {j}): {} vs {g}", ex[at]);
                    at += 1;
                }
            }
            for extras in [None, Some(&ex[..])] {
                let mut got = vec![f32::NAN; d];
                householder_mix_row((&u, &alpha, 2.0), extras, &bx, &h, &mut got);
                for (j, (a, b)) in got.iter().zip(&v64).enumerate() {
                    assert!(
                        (*a as f64 - b).abs() < 1e-5,
                        "householder_mix_row d {d} r {r} extras {} [{j}]: {a} vs {b}",
                        extras.is_some()
                    );
                }
                // The fused gate row: `λ·carry + (1 − λ)·x̃` with the scan's rounding.
                let lam: Vec<f32> = (0..d).map(|_| rng.range(0.05, 0.99)).collect();
                let carry: Vec<f32> = (0..d).map(|_| rng.range(-1.0, 1.0)).collect();
                for with_carry in [false, true] {
                    let want: Vec<u32> = (0..d)
                        .map(|j| {
                            let c = if with_carry { carry[j] } else { 0.0 };
                            lam[j].mul_add(c, (1.0 - lam[j]) * got[j]).to_bits()
                        })
                        .collect();
                    let mut out = vec![f32::NAN; d];
                    let rows = (&bx[..], &h[..], &lam[..]);
                    householder_mix_gate_row(
                        (&u, &alpha, 2.0),
                        extras,
                        rows,
                        with_carry.then_some(&carry[..]),
                        &mut out,
                    );
                    let bits: Vec<u32> = out.iter().map(|v| v.to_bits()).collect();
                    assert_eq!(bits, want, "gate row d {d} r {r} carry {with_carry} extras {}", extras.is_some());
                }
            }
        }
    }
}
