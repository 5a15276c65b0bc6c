//! The random-teacher method (spec §9): interpolation identities, the loss and its
//! gradient against f64 references and finite differences, the KL, the head and ViT,
//! the teacher cache, the AdamW parameter groups, and the probes.

mod common;

use common::{assert_close, assert_grads, rand_tensor};
use fixpoint::data::noise::gaussian_noise;
use fixpoint::dino::method::{self, Center, LossConfig, delta, distill_loss, init_student, interpolate, kl_f64};
use fixpoint::dino::probes::{self, Features, KnnVote, LinearProbeConfig, knn_predict, linear_probe};
use fixpoint::dino::{DinoHead, DinoModel, EncoderConfig, HeadConfig, MlpEncoderConfig, Vit, VitConfig};
use fixpoint::nn::{Module, num_params};
use fixpoint::optim::{AdamW, AdamWConfig, Optimizer};
use fixpoint::train::dino::teacher_logits_both;
use fixpoint::{Rng, Tensor, no_grad};

fn small_mlp() -> EncoderConfig {
    EncoderConfig::Mlp(MlpEncoderConfig { in_dim: 3 * 8 * 8, hidden: vec![16], embed_dim: 12 })
}

fn small_vit() -> VitConfig {
    VitConfig { image_size: 8, patch: 4, in_channels: 3, dim: 8, depth: 2, heads: 2, mlp_dim: 16 }
}

fn small_head(in_dim: usize, m: usize) -> HeadConfig {
    HeadConfig { in_dim, hidden: vec![24, 24], bottleneck: 10, out_dim: m, last_wn: false }
}

fn bits(m: &dyn Module) -> Vec<Vec<u32>> {
    m.params().iter().map(|(_, p)| p.to_vec().iter().map(|v| v.to_bits()).collect()).collect()
}

#[test]
fn interpolation_endpoints_delta_and_tiny_alpha() {
    for enc in [small_mlp(), EncoderConfig::Vit(small_vit())] {
        let head = small_head(enc.embed_dim(), 32);
        let teacher = DinoModel::new(&enc, &head, &mut Rng::new(1).stream("teacher")).unwrap();
        let fresh = DinoModel::new(&enc, &head, &mut Rng::new(2).stream("student")).unwrap();
        assert_ne!(bits(&teacher), bits(&fresh));
        let mut s0 = fresh.clone();
        init_student(&teacher, &mut s0, 0.0).unwrap();
        assert_eq!(bits(&s0), bits(&teacher), "alpha = 0 gives the teacher");
        let mut s1 = fresh.clone();
        init_student(&teacher, &mut s1, 1.0).unwrap();
        assert_eq!(bits(&s1), bits(&fresh), "alpha = 1 gives the fresh draw");
        // alpha = 1e-10 computed in f64: not the teacher, but almost all of it.
        let mut st = fresh.clone();
        let differ = init_student(&teacher, &mut st, 1e-10).unwrap();
        let total = num_params(&teacher);
        assert!(differ > 0 && differ < total / 20, "{differ} of {total} differ");
        assert_ne!(bits(&st), bits(&teacher));
        // LayerNorm gains (1 in both) become 1/δ; every value matches the f64 formula.
        let a = 0.3;
        let mut s = fresh.clone();
        init_student(&teacher, &mut s, a).unwrap();
        for ((name, t), ((_, f), (_, v))) in teacher.params().iter().zip(fresh.params().iter().zip(s.params().iter())) {
            let want: Vec<f64> = t
                .to_vec()
                .iter()
                .zip(f.to_vec())
                .map(|(&t, f)| ((1.0 - a) * t as f64 + a * f as f64) / (a * a + (1.0 - a) * (1.0 - a)).sqrt())
                .collect();
            assert_close(name, &v.to_vec(), &want, 0.0, 1e-7);
            if name.ends_with("norm1.weight") {
                assert!(v.to_vec().iter().all(|&g| (g as f64 - 1.0 / delta(a)).abs() < 1e-7));
            }
        }
    }
    for a in [0.0, 1e-10, 0.1, 0.3, 0.5, 0.9, 1.0] {
        assert!((delta(a) - (2.0 * a * a - 2.0 * a + 1.0).sqrt()).abs() < 1e-15);
    }
    assert!(
        init_student(
            &fixpoint::nn::Linear::new(2, 2, true, &mut Rng::new(0)),
            &mut fixpoint::nn::Linear::new(2, 2, true, &mut Rng::new(1)),
            1.5
        )
        .is_err()
    );
}

#[test]
fn interpolation_preserves_variance() {
    let mut r = Rng::new(5);
    let n = 200_000;
    let s = 0.7f32;
    let t: Vec<f32> = (0..n).map(|_| s * r.normal()).collect();
    let f: Vec<f32> = (0..n).map(|_| s * r.normal()).collect();
    for a in [0.3, 0.5, 0.7] {
        let v = interpolate(&t, &f, a);
        let m = v.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
        let var = v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / n as f64;
        let want = (s * s) as f64;
        assert!((var - want).abs() < 0.01 * want, "alpha {a}: variance {var} vs {want}");
    }
}

fn softmax_f64(x: &[f64]) -> Vec<f64> {
    let m = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = x.iter().map(|v| (v - m).exp()).collect();
    let z: f64 = e.iter().sum();
    e.iter().map(|v| v / z).collect()
}

#[test]
fn loss_is_the_cross_entropy_of_the_two_softmaxes() {
    let mut r = Rng::new(3);
    for (b, m) in [(1usize, 1usize), (3, 7), (5, 65), (2, 1000)] {
        for cfg in
            [LossConfig::default(), LossConfig { teacher_temp: 0.04, student_temp: 0.1, center_momentum: Some(0.9) }]
        {
            let t = rand_tensor(&[b, m], -3.0, 3.0, &mut r);
            let s = rand_tensor(&[b, m], -3.0, 3.0, &mut r);
            let mut center = cfg.center_momentum.map(|mo| Center::new(m, mo));
            if let Some(c) = center.as_mut() {
                c.update(&rand_tensor(&[4, m], -1.0, 1.0, &mut r)).unwrap();
            }
            let p = method::teacher_probs(&t, &cfg, center.as_ref()).unwrap();
            let loss = distill_loss(&s, &p, cfg.student_temp).unwrap().item().unwrap() as f64;
            let (tv, sv) = (t.to_vec(), s.to_vec());
            let cv: Vec<f64> = center.as_ref().map_or(vec![0.0; m], |c| c.values.iter().map(|&v| v as f64).collect());
            let (mut ce, mut kl) = (0.0, 0.0);
            for i in 0..b {
                let pt: Vec<f64> = (0..m).map(|k| (tv[i * m + k] as f64 - cv[k]) / cfg.teacher_temp as f64).collect();
                let qs: Vec<f64> = (0..m).map(|k| sv[i * m + k] as f64 / cfg.student_temp as f64).collect();
                let (p, q) = (softmax_f64(&pt), softmax_f64(&qs));
                ce -= p.iter().zip(&q).map(|(p, q)| p * q.ln()).sum::<f64>() / b as f64;
                kl += p.iter().zip(&q).map(|(p, q)| if *p > 0.0 { p * (p.ln() - q.ln()) } else { 0.0 }).sum::<f64>()
                    / b as f64;
            }
            assert!((loss - ce).abs() <= 1e-5 * ce.abs().max(1.0), "b {b} m {m} {cfg:?}: loss {loss} vs {ce}");
            let got_kl = kl_f64(&t, &s, &cfg, center.as_ref()).unwrap();
            assert!((got_kl - kl).abs() <= 1e-9 * kl.abs().max(1e-6), "KL {got_kl} vs {kl}");
            assert!(got_kl >= 0.0);
        }
    }
}

#[test]
fn loss_gradient_is_softmax_minus_p_over_b() {
    let mut r = Rng::new(9);
    let (b, m) = (3, 9);
    let t = rand_tensor(&[b, m], -2.0, 2.0, &mut r);
    let cfg = LossConfig::default();
    let p = method::teacher_probs(&t, &cfg, None).unwrap();
    let s = rand_tensor(&[b, m], -2.0, 2.0, &mut r).requires_grad_();
    distill_loss(&s, &p, 1.0).unwrap().backward().unwrap();
    let g = s.grad().unwrap().to_vec();
    let (sv, pv) = (s.to_vec(), p.to_vec());
    let mut want = Vec::new();
    for i in 0..b {
        let q = softmax_f64(&sv[i * m..(i + 1) * m].iter().map(|&v| v as f64).collect::<Vec<_>>());
        want.extend(q.iter().enumerate().map(|(k, q)| (q - pv[i * m + k] as f64) / b as f64));
    }
    assert_close("dL/ds", &g, &want, 1e-7, 1e-5);
    // And by central differences, with temperatures.
    let p2 = method::teacher_probs(&t, &LossConfig { teacher_temp: 0.5, ..cfg }, None).unwrap();
    assert_grads("distill_loss", |x| distill_loss(&x[0], &p2, 0.7), &[rand_tensor(&[b, m], -2.0, 2.0, &mut r)]);
}

#[test]
fn kl_identities() {
    let mut r = Rng::new(11);
    let (b, m) = (4, 256);
    let cfg = LossConfig::default();
    let t = rand_tensor(&[b, m], -0.05, 0.05, &mut r);
    // Adding a constant to every student logit changes neither the KL nor the loss.
    let shifted = t.add_scalar(3.25);
    assert!(kl_f64(&t, &shifted, &cfg, None).unwrap().abs() < 1e-12);
    assert_eq!(kl_f64(&t, &t, &cfg, None).unwrap(), 0.0);
    let s = rand_tensor(&[b, m], -0.05, 0.05, &mut r);
    let p = method::teacher_probs(&t, &cfg, None).unwrap();
    let l1 = distill_loss(&s, &p, 1.0).unwrap().item().unwrap();
    let l2 = distill_loss(&s.add_scalar(5.0), &p, 1.0).unwrap().item().unwrap();
    assert!((l1 - l2).abs() < 1e-5, "{l1} vs {l2}");
    assert!((kl_f64(&t, &s, &cfg, None).unwrap() - kl_f64(&t, &s.add_scalar(5.0), &cfg, None).unwrap()).abs() < 1e-9);
    // Small-logit regime: KL ≈ ½ Var_p(s − t) for ‖s − t‖ ≈ 1e-3.
    let d = rand_tensor(&[b, m], -1.0, 1.0, &mut r);
    let norm = (d.to_vec().iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / b as f64).sqrt();
    let d = d.mul_scalar((1e-3 / norm) as f32);
    let s = t.add(&d).unwrap();
    let (tv, sv) = (t.to_vec(), s.to_vec());
    let mut half_var = 0.0;
    for i in 0..b {
        let pr = softmax_f64(&tv[i * m..(i + 1) * m].iter().map(|&v| v as f64).collect::<Vec<_>>());
        let dl: Vec<f64> = (0..m).map(|k| sv[i * m + k] as f64 - tv[i * m + k] as f64).collect();
        let mean: f64 = pr.iter().zip(&dl).map(|(p, d)| p * d).sum();
        let sq: f64 = pr.iter().zip(&dl).map(|(p, d)| p * d * d).sum();
        half_var += 0.5 * (sq - mean * mean) / b as f64;
    }
    let kl = kl_f64(&t, &s, &cfg, None).unwrap();
    assert!(((kl - half_var) / half_var).abs() < 1e-3, "KL {kl} vs ½Var {half_var}");
}

#[test]
fn head_shapes_counts_bottleneck_and_last_wn() {
    // The paper's head for E = 512, m = 2^16.
    let head = DinoHead::new(&HeadConfig::paper(512, 1 << 16), &mut Rng::new(0)).unwrap();
    assert_eq!(num_params(&head), 22_548_736);
    let names: Vec<String> = head.params().iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(names.last().unwrap(), "last_layer.weight");
    drop(head);
    let mut r = Rng::new(1);
    for last_wn in [false, true] {
        let cfg = HeadConfig { last_wn, ..small_head(12, 40) };
        let h = DinoHead::new(&cfg, &mut r).unwrap();
        let e = rand_tensor(&[5, 12], -1.0, 1.0, &mut r);
        let z = h.bottleneck(&e).unwrap();
        assert_eq!(z.shape(), &[5, 10]);
        for row in z.to_vec().chunks(10) {
            let n: f64 = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
            assert!((n - 1.0).abs() < 1e-6, "bottleneck norm {n}");
        }
        let w = h.last_weight().unwrap();
        let wv = w.to_vec();
        let col_norm = |j: usize| (0..10).map(|i| (wv[i * 40 + j] as f64).powi(2)).sum::<f64>().sqrt();
        if last_wn {
            assert!((0..40).all(|j| (col_norm(j) - 1.0).abs() < 1e-6));
        } else {
            assert!((0..40).all(|j| col_norm(j) < 0.5), "trunc-normal 0.02 columns are short");
        }
        let logits = h.forward(&e).unwrap();
        assert_eq!(logits.shape(), &[5, 40]);
        // logits = z · W.
        let zv = z.to_vec();
        let want: Vec<f64> = (0..5 * 40)
            .map(|k| (0..10).map(|i| zv[(k / 40) * 10 + i] as f64 * wv[i * 40 + k % 40] as f64).sum())
            .collect();
        assert_close("logits", &logits.to_vec(), &want, 1e-6, 1e-5);
        // Gradients through the whole head (GELU, L2 normalisation, optional weight norm).
        let hh = h.clone();
        assert_grads("dino head", move |x| hh.forward(&x[0]), &[rand_tensor(&[3, 12], -1.0, 1.0, &mut r)]);
    }
}

#[test]
fn vit_patches_shapes_params_and_gradients() {
    let cfg = small_vit();
    let mut r = Rng::new(4);
    let vit = Vit::new(&cfg, &mut r).unwrap();
    let x = rand_tensor(&[2, 3, 8, 8], -1.0, 1.0, &mut r);
    // Patch (gy, gx) of image b holds x[b, c, 4 gy + dy, 4 gx + dx] at c·16 + dy·4 + dx.
    let p = vit.patchify(&x).unwrap();
    assert_eq!(p.shape(), &[2, 4, 48]);
    let (pv, xv) = (p.to_vec(), x.to_vec());
    for b in 0..2 {
        for gy in 0..2 {
            for gx in 0..2 {
                for c in 0..3 {
                    for dy in 0..4 {
                        for dx in 0..4 {
                            let got = pv[(b * 4 + gy * 2 + gx) * 48 + c * 16 + dy * 4 + dx];
                            let want = xv[b * 192 + c * 64 + (4 * gy + dy) * 8 + 4 * gx + dx];
                            assert_eq!(got, want);
                        }
                    }
                }
            }
        }
    }
    assert_eq!(vit.forward(&x).unwrap().shape(), &[2, 8]);
    // Standard ViT count: patch embedding, CLS, positions, per block 2 LNs + attention
    // (qkv and proj) + MLP, final LN.
    let (d, m, n, pd) = (8, 16, 4, 48);
    let block = 2 * 2 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * m + m) + (m * d + d);
    assert_eq!(num_params(&vit), pd * d + d + d + (n + 1) * d + 2 * block + 2 * d);
    // The benchmark ViT (patch 4, dim 192, depth 6, 3 heads).
    let big = Vit::new(&VitConfig::default(), &mut r).unwrap();
    let (d, m, n, pd) = (192, 768, 64, 48);
    let block = 2 * 2 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * m + m) + (m * d + d);
    assert_eq!(num_params(&big), pd * d + d + d + (n + 1) * d + 6 * block + 2 * d);
    assert!(vit.forward(&rand_tensor(&[2, 3, 8, 9], -1.0, 1.0, &mut r)).is_err());
    assert!(Vit::new(&VitConfig { heads: 3, ..cfg.clone() }, &mut r).is_err());
    let v2 = vit.clone();
    assert_grads("vit", move |x| v2.forward(&x[0]), &[rand_tensor(&[1, 3, 8, 8], -1.0, 1.0, &mut r)]);
}

#[test]
fn mlp_encoder_init_and_embedding() {
    let cfg = MlpEncoderConfig { in_dim: 512, hidden: vec![256], embed_dim: 128 };
    let head = small_head(128, 16);
    let model = DinoModel::new(&EncoderConfig::Mlp(cfg), &head, &mut Rng::new(0)).unwrap();
    // Kaiming normal: weight variance 2 / fan_in; biases 0.
    for (name, p) in model.encoder.params() {
        let v = p.to_vec();
        if name.ends_with("bias") {
            assert!(v.iter().all(|&b| b == 0.0), "{name}");
        } else {
            let fan_in = p.shape()[0] as f64;
            let var = v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / v.len() as f64;
            assert!((var * fan_in / 2.0 - 1.0).abs() < 0.05, "{name}: variance {var}");
        }
    }
    let x = rand_tensor(&[3, 2, 16, 16], -1.0, 1.0, &mut Rng::new(1));
    let e = model.embed(&x).unwrap();
    assert_eq!(e.shape(), &[3, 128]);
    assert!(e.to_vec().iter().all(|&v| v >= 0.0), "post-ReLU embedding");
    assert_eq!(model.forward(&x).unwrap().shape(), &[3, 16]);
}

#[test]
fn teacher_cache_equals_the_full_forward() {
    for (enc, last_wn) in [(small_mlp(), false), (EncoderConfig::Vit(small_vit()), true)] {
        let head = HeadConfig { last_wn, ..small_head(enc.embed_dim(), 64) };
        let teacher = DinoModel::new(&enc, &head, &mut Rng::new(3)).unwrap();
        let set = gaussian_noise(300, [3, 8, 8], 2).unwrap();
        // A batch that mixes images from different cache batches (of 256).
        let idx: Vec<usize> = (0..40).map(|i| (i * 37) % 300).collect();
        let (cached, full) = teacher_logits_both(&teacher, &set, &idx).unwrap();
        assert_eq!(cached.shape(), full.shape());
        let f: Vec<f64> = full.to_vec().iter().map(|&v| v as f64).collect();
        let scale = f.iter().map(|v| v.abs()).fold(0.0, f64::max);
        assert_close("cached teacher logits", &cached.to_vec(), &f, 1e-6 * scale, 1e-6);
        let exact = cached.to_vec().iter().zip(full.to_vec()).all(|(a, b)| a.to_bits() == b.to_bits());
        eprintln!("{} teacher cache bit-exact: {exact}", enc.name());
    }
}

#[test]
fn alpha_zero_student_has_zero_kl_and_vanishing_gradient() {
    let enc = small_mlp();
    let head = small_head(12, 32);
    let teacher = DinoModel::new(&enc, &head, &mut Rng::new(1)).unwrap();
    let x = rand_tensor(&[6, 3, 8, 8], -1.0, 1.0, &mut Rng::new(3));
    let cfg = LossConfig::default();
    let t = no_grad(|| teacher.forward(&x)).unwrap();
    let p = method::teacher_probs(&t, &cfg, None).unwrap();
    // Largest |gradient| per parameter tensor, and the KL, for a student at `alpha`.
    let run = |alpha: f64| -> (f64, Vec<f32>) {
        let mut student = DinoModel::new(&enc, &head, &mut Rng::new(2)).unwrap();
        init_student(&teacher, &mut student, alpha).unwrap();
        let s = student.forward(&x).unwrap();
        let kl = kl_f64(&t, &s.detach(), &cfg, None).unwrap();
        distill_loss(&s, &p, 1.0).unwrap().backward().unwrap();
        let g = student
            .params()
            .iter()
            .map(|(_, p)| p.grad().unwrap().to_vec().iter().fold(0f32, |a, &g| a.max(g.abs())))
            .collect();
        (kl, g)
    };
    let (kl0, g0) = run(0.0);
    let (kl1, g1) = run(0.3);
    // The student computes the teacher's logits bit for bit: the KL is exactly 0 and
    // the gradient is rounding noise of the softmax, orders below a real one.
    assert_eq!(kl0, 0.0);
    assert!(kl1 > 1e-8, "KL at alpha 0.3: {kl1}");
    for (i, (a, b)) in g0.iter().zip(&g1).enumerate() {
        assert!(*a <= 1e-3 * b, "parameter {i}: gradient {a} at alpha 0 vs {b} at alpha 0.3");
    }
}

#[test]
fn adamw_groups_decay_only_one_dimensional_parameters() {
    let enc = EncoderConfig::Vit(small_vit());
    let mut model = DinoModel::new(&enc, &small_head(8, 16), &mut Rng::new(0)).unwrap();
    let before: Vec<(String, Vec<f32>, usize)> =
        model.params().iter().map(|(n, p)| (n.clone(), p.to_vec(), p.rank())).collect();
    for (_, p) in model.params() {
        p.set_grad(Some(Tensor::zeros(p.shape().to_vec()))).unwrap();
    }
    let mut opt = AdamW::with_groups(AdamWConfig::default(), method::param_groups(&model, 0.01)).unwrap();
    let lr = 0.5;
    opt.step(&mut model, lr).unwrap();
    let mut seen = (0, 0);
    for ((name, old, rank), (_, p)) in before.iter().zip(model.params()) {
        // Zero gradient: Adam's step is 0, so only the decoupled decay acts.
        let factor = if *rank >= 2 { 1.0 } else { 1.0 - lr * 0.01 };
        let want: Vec<f64> = old.iter().map(|&v| v as f64 * factor as f64).collect();
        assert_close(name, &p.to_vec(), &want, 0.0, 1e-6);
        if *rank >= 2 { seen.0 += 1 } else { seen.1 += 1 }
    }
    assert!(seen.0 > 0 && seen.1 > 0, "{seen:?}");
}

fn feats(rows: &[[f32; 2]], labels: &[usize]) -> Features {
    Features::new(rows.iter().flatten().copied().collect(), labels.to_vec(), 2).unwrap()
}

#[test]
fn knn_by_hand() {
    let train = feats(
        &[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [10.0, 10.0], [11.0, 10.0], [5.0, 5.0], [5.0, 5.2]],
        &[0, 0, 2, 1, 1, 3, 4],
    );
    let test = feats(&[[0.2, 0.1], [10.4, 10.0], [5.0, 5.1]], &[0, 1, 3]);
    // k = 3: nearest of (0.2, 0.1) are labels 0, 0, 2 → 0; of (10.4, 10) 1, 1, and 3 → 1.
    assert_eq!(knn_predict(&train, &test, 3, 5, KnnVote::L2Majority).unwrap()[..2], [0, 1]);
    // k = 2 at (5, 5.1): labels 3 and 4 tie one vote each → the smaller label, 3.
    assert_eq!(knn_predict(&train, &test, 2, 5, KnnVote::L2Majority).unwrap()[2], 3);
    // The tie rule holds whatever the order in the training set.
    let swapped = feats(&[[5.0, 5.2], [5.0, 5.0]], &[4, 3]);
    assert_eq!(knn_predict(&swapped, &feats(&[[5.0, 5.1]], &[0]), 2, 5, KnnVote::L2Majority).unwrap(), [3]);
    // k = 1 on the training set itself: 100 % (no duplicate points).
    let acc = probes::knn_accuracy(&train, &train, 1, 5, KnnVote::L2Majority).unwrap();
    assert_eq!(acc, 100.0);
    // k larger than the training set uses all of it: labels 0 and 1 tie at two votes.
    let all = knn_predict(&train, &feats(&[[100.0, 100.0]], &[0]), 50, 5, KnnVote::L2Majority).unwrap();
    assert_eq!(all, [0], "the smaller of the tied labels wins");
    // Cosine-weighted: direction matters, not length; weights exp(cos/0.07).
    let tr = feats(&[[1.0, 0.0], [100.0, 1.0], [0.0, 1.0], [0.0, 2.0], [0.1, 3.0]], &[0, 0, 1, 1, 1]);
    let te = feats(&[[3.0, 0.2]], &[0]);
    let cos = KnnVote::CosineWeighted { temperature: 0.07 };
    assert_eq!(knn_predict(&tr, &te, 5, 2, cos).unwrap(), [0]);
    // L2 with k = 3 goes by distance and picks class 1 (two of the three nearest).
    assert_eq!(knn_predict(&tr, &te, 3, 2, KnnVote::L2Majority).unwrap(), [1]);
    assert!(knn_predict(&tr, &te, 0, 2, KnnVote::L2Majority).is_err());
    assert!(knn_predict(&tr, &feats(&[[0.0, 0.0]], &[5]), 1, 2, KnnVote::L2Majority).is_err());
}

#[test]
fn knn_agrees_with_brute_force_on_random_data() {
    let mut r = Rng::new(21);
    let (n, m, d, c) = (300, 70, 9, 4);
    let train =
        Features::new((0..n * d).map(|_| r.normal()).collect(), (0..n).map(|_| r.below(c)).collect(), d).unwrap();
    let test =
        Features::new((0..m * d).map(|_| r.normal()).collect(), (0..m).map(|_| r.below(c)).collect(), d).unwrap();
    let got = knn_predict(&train, &test, 20, c, KnnVote::L2Majority).unwrap();
    for (i, &pred) in got.iter().enumerate() {
        let mut dist: Vec<(f64, usize)> = (0..n)
            .map(|j| {
                let dd: f64 = (0..d).map(|k| (test.row(i)[k] as f64 - train.row(j)[k] as f64).powi(2)).sum();
                (dd, j)
            })
            .collect();
        dist.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut votes = vec![0; c];
        dist[..20].iter().for_each(|&(_, j)| votes[train.labels[j]] += 1);
        let best = (0..c).fold(0, |b, k| if votes[k] > votes[b] { k } else { b });
        assert_eq!(pred, best, "test row {i}: votes {votes:?}");
    }
}

#[test]
fn linear_probe_separates_separable_data() {
    let mut r = Rng::new(8);
    let (n, d, c) = (600, 5, 3);
    // Class k sits around 4·e_k: linearly separable with a wide margin.
    let make = |n: usize, r: &mut Rng| {
        let labels: Vec<usize> = (0..n).map(|i| i % c).collect();
        let data = labels
            .iter()
            .flat_map(|&k| (0..d).map(move |j| if j == k { 4.0 } else { 0.0 }).collect::<Vec<f32>>())
            .map(|v| v + 0.3 * r.normal())
            .collect();
        Features::new(data, labels, d).unwrap()
    };
    let (train, test) = (make(n, &mut r), make(200, &mut r));
    // The protocol's 10 epochs of lr 1e-3 are 30 steps here, too few for any data: give
    // this small set the steps a 10k-image probe gets.
    for standardize in [false, true] {
        let cfg = LinearProbeConfig { standardize, epochs: 100, lr: 1e-2, ..LinearProbeConfig::default() };
        let acc = linear_probe(&train, &test, c, &cfg, 1).unwrap();
        assert_eq!(acc, 100.0, "standardize {standardize}");
    }
    assert_eq!(
        linear_probe(&train, &test, c, &LinearProbeConfig::default(), 1).unwrap(),
        linear_probe(&train, &test, c, &LinearProbeConfig::default(), 1).unwrap()
    );
    // Labels that carry no linear signal stay near chance.
    let noise =
        Features::new((0..n * d).map(|_| r.normal()).collect(), (0..n).map(|_| r.below(2)).collect(), d).unwrap();
    let noise_test =
        Features::new((0..400 * d).map(|_| r.normal()).collect(), (0..400).map(|_| r.below(2)).collect(), d).unwrap();
    let acc = linear_probe(&noise, &noise_test, 2, &LinearProbeConfig::default(), 2).unwrap();
    assert!((35.0..65.0).contains(&acc), "chance-level data gave {acc}%");
    assert!(
        linear_probe(&train, &Features::new(vec![0.0; 4], vec![0], 4).unwrap(), c, &LinearProbeConfig::default(), 0)
            .is_err()
    );
}
