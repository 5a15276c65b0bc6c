//! VGG11 and ResNet18 encoders (spec §3, §9): parameter counts at width 1, output
//! shapes, the Kaiming fan-out init, BatchNorm running statistics (train vs eval), the
//! α = 0 asymmetry (VGG: zero loss and gradient; ResNet: a positive loss from the
//! student's train-mode BN), and the running-statistics buffers.

mod common;

use common::{assert_close, rand_tensor};
use fixpoint::dino::conv::{BatchNorm2d, scaled};
use fixpoint::dino::method::{distill_loss, init_student, kl_f64, teacher_probs};
use fixpoint::dino::{ConvNetConfig, DinoModel, Encoder, EncoderConfig, HeadConfig, ResNet, Vgg};
use fixpoint::nn::{Module, num_params};
use fixpoint::{Rng, Tensor, no_grad};

fn width(w: f64) -> ConvNetConfig {
    ConvNetConfig { width_mult: w }
}

#[test]
fn parameter_counts_match_the_spec() {
    // Construction only (no forward pass at full size).
    let vgg = Vgg::new(&width(1.0), &mut Rng::new(0)).unwrap();
    assert_eq!(num_params(&vgg), 9_220_480);
    let resnet = ResNet::new(&width(1.0), &mut Rng::new(0)).unwrap();
    assert_eq!(num_params(&resnet), 11_168_832);
    assert_eq!(vgg.params()[0].0, "features.0.weight");
    assert_eq!(vgg.params().last().unwrap().0, "features.18.bias");
    let names: Vec<String> = resnet.params().into_iter().map(|(n, _)| n).collect();
    for n in ["conv1.weight", "bn1.weight", "layer2.0.downsample.0.weight", "layer4.1.bn2.bias"] {
        assert!(names.iter().any(|m| m == n), "missing {n}");
    }
    assert!(!names.iter().any(|m| m.starts_with("layer1.0.downsample")), "layer1 needs no shortcut conv");
}

#[test]
fn outputs_have_the_embedding_size() {
    let x = rand_tensor(&[2, 3, 32, 32], -1.0, 1.0, &mut Rng::new(1));
    for w in [0.125, 0.25] {
        let vgg = Vgg::new(&width(w), &mut Rng::new(2)).unwrap();
        assert_eq!(vgg.forward(&x).unwrap().shape(), [2, scaled(512, w)]);
        let r = ResNet::new(&width(w), &mut Rng::new(3)).unwrap();
        assert_eq!(r.forward(&x).unwrap().shape(), [2, scaled(512, w)]);
    }
    // Full-width VGG11 on one image: 512 features (about 0.15 GMAC).
    let vgg = Vgg::new(&width(1.0), &mut Rng::new(2)).unwrap();
    let y = no_grad(|| vgg.forward(&x.narrow(0, 0, 1).unwrap())).unwrap();
    assert_eq!(y.shape(), [1, 512]);
    // VGG needs 32x32 (its embedding is the 1x1x512 map); a wrong size is an error.
    let e = vgg.forward(&Tensor::zeros([1, 3, 28, 28])).unwrap_err();
    assert!(e.to_string().contains("[1, 3, 28, 28]"), "{e}");
    assert!(Vgg::new(&width(0.0), &mut Rng::new(0)).is_err());
}

#[test]
fn conv_weights_are_kaiming_normal_fan_out() {
    let vgg = Vgg::new(&width(1.0), &mut Rng::new(5)).unwrap();
    for (name, p) in vgg.params() {
        let v = p.to_vec();
        if name.ends_with("bias") {
            assert!(v.iter().all(|&b| b == 0.0), "{name} is not zero");
            continue;
        }
        let c_out = p.shape()[0];
        let want = 2.0 / (c_out * 9) as f64;
        let n = v.len() as f64;
        let mean = v.iter().map(|&a| a as f64).sum::<f64>() / n;
        let var = v.iter().map(|&a| (a as f64 - mean).powi(2)).sum::<f64>() / n;
        // 1728 samples in the first layer: allow 4 standard errors of a variance estimate.
        let tol = 4.0 * (2.0 / n).sqrt();
        assert!((var / want - 1.0).abs() < tol.max(0.01), "{name}: variance {var} vs {want}");
        assert!(mean.abs() < 4.0 * (want / n).sqrt(), "{name}: mean {mean}");
    }
    let r = ResNet::new(&width(0.5), &mut Rng::new(6)).unwrap();
    for (name, p) in r.params() {
        if name.contains("bn") || name.contains("downsample.1") {
            let want = if name.ends_with("weight") { 1.0 } else { 0.0 };
            assert!(p.to_vec().iter().all(|&v| v == want), "{name}");
        }
    }
}

#[test]
fn batchnorm_running_statistics() {
    let mut bn = BatchNorm2d::new(2);
    let x = rand_tensor(&[4, 2, 3, 3], -1.0, 3.0, &mut Rng::new(7));
    // Eval mode with initial statistics: x / sqrt(1 + eps), no update.
    let y = bn.forward(&x).unwrap();
    let want: Vec<f64> = x.to_vec().iter().map(|&v| v as f64 / (1.0f64 + 1e-5).sqrt()).collect();
    assert_close("eval with initial stats", &y.to_vec(), &want, 1e-7, 1e-6);
    assert_eq!(bn.running_stats(), (vec![0.0; 2], vec![1.0; 2]));
    // Train mode: running ← 0.9·running + 0.1·(batch mean, unbiased batch variance).
    bn.train(true);
    bn.forward(&x).unwrap();
    let v = x.to_vec();
    let (rm, rv) = bn.running_stats();
    for c in 0..2 {
        let vals: Vec<f64> = (0..4).flat_map(|b| v[(b * 2 + c) * 9..][..9].iter().map(|&a| a as f64)).collect();
        let n = vals.len() as f64;
        let mean = vals.iter().sum::<f64>() / n;
        let unbiased = vals.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / (n - 1.0);
        assert!((rm[c] as f64 - 0.1 * mean).abs() < 1e-6, "running mean {c}");
        assert!((rv[c] as f64 - (0.9 + 0.1 * unbiased)).abs() < 1e-5, "running var {c}");
    }
    // Eval mode now normalises with the updated statistics.
    bn.train(false);
    let y = bn.forward(&x).unwrap().to_vec();
    for (i, &yv) in y.iter().enumerate() {
        let c = (i / 9) % 2;
        let want = (v[i] as f64 - rm[c] as f64) / (rv[c] as f64 + 1e-5).sqrt();
        assert!((yv as f64 - want).abs() < 1e-5, "eval element {i}");
    }
    // Clones own their statistics.
    let c = bn.clone();
    bn.set_running_stats(vec![5.0; 2], vec![2.0; 2]).unwrap();
    assert_eq!(c.running_stats(), (rm, rv));
    assert!(bn.set_running_stats(vec![0.0], vec![1.0; 2]).is_err());
}

fn tiny_pair(enc: &EncoderConfig, alpha: f64) -> (DinoModel, DinoModel) {
    let head = HeadConfig { in_dim: enc.embed_dim(), hidden: vec![32], bottleneck: 16, out_dim: 64, last_wn: false };
    let teacher = DinoModel::new(enc, &head, &mut Rng::new(1).stream("teacher")).unwrap();
    let mut student = DinoModel::new(enc, &head, &mut Rng::new(2).stream("student")).unwrap();
    init_student(&teacher, &mut student, alpha).unwrap();
    (teacher, student)
}

/// (KL in f64, max |gradient|) of one student train-mode step at `alpha`.
fn distill_step(enc: &EncoderConfig, alpha: f64) -> (f64, f32) {
    let (teacher, mut student) = tiny_pair(enc, alpha);
    let x = rand_tensor(&[4, 3, 32, 32], -1.0, 1.0, &mut Rng::new(3));
    let t = no_grad(|| teacher.forward(&x)).unwrap();
    let p = teacher_probs(&t, &Default::default(), None).unwrap();
    if alpha == 0.0 {
        // Before any train-mode pass (which moves the running statistics).
        let s_eval = no_grad(|| student.forward(&x)).unwrap();
        assert_eq!(s_eval.to_vec(), t.to_vec(), "eval-mode student at alpha = 0 equals the teacher");
    }
    student.train(true);
    let s = student.forward(&x).unwrap();
    student.train(false);
    let kl = kl_f64(&t, &s.detach(), &Default::default(), None).unwrap();
    distill_loss(&s, &p, 1.0).unwrap().backward().unwrap();
    let gmax = student
        .params()
        .iter()
        .filter_map(|(_, p)| p.grad())
        .flat_map(|g| g.to_vec())
        .fold(0.0f32, |m, v| m.max(v.abs()));
    (kl, gmax)
}

#[test]
fn alpha_zero_vgg_has_zero_loss_gap_and_gradient_resnet_does_not() {
    let vgg = EncoderConfig::Vgg11(width(0.125));
    let (kl, g0) = distill_step(&vgg, 0.0);
    assert_eq!(kl, 0.0, "VGG11 (no BN) at alpha = 0: student = teacher");
    // The gradient is softmax rounding noise (softmax vs log_softmax kernels), orders
    // below a real one.
    let (_, g3) = distill_step(&vgg, 0.3);
    assert!(g0 <= 1e-3 * g3, "VGG11 gradient {g0} at alpha 0 vs {g3} at alpha 0.3");
    let (kl, g) = distill_step(&EncoderConfig::ResNet18(width(0.125)), 0.0);
    assert!(kl > 1e-8, "ResNet18 at alpha = 0: train-mode BN differs from the teacher's eval BN ({kl})");
    assert!(g > 1e3 * g0, "ResNet18 gradient at alpha 0: {g}");
}

#[test]
fn buffers_round_trip() {
    let enc = Encoder::new(&EncoderConfig::ResNet18(width(0.125)), &mut Rng::new(4)).unwrap();
    let bufs = enc.buffers();
    // Stem BN + 2 per block + 3 shortcut BNs = 20 BNs, two buffers each.
    assert_eq!(bufs.len(), 2 * (1 + 8 * 2 + 3));
    let mut e2 = enc.clone();
    e2.train(true);
    let x = rand_tensor(&[2, 3, 8, 8], -1.0, 1.0, &mut Rng::new(5));
    e2.forward(&x).unwrap();
    let moved = e2.buffers();
    assert_ne!(moved[0].1.to_vec(), bufs[0].1.to_vec());
    let get = |n: &str| moved.iter().find(|(m, _)| m == n).map(|(_, t)| t.to_vec());
    enc.load_buffers(&get).unwrap();
    for ((n, a), (_, b)) in enc.buffers().iter().zip(&moved) {
        assert_eq!(a.to_vec(), b.to_vec(), "{n}");
    }
    assert!(enc.load_buffers(&|_| None).is_err());
    let vgg = Encoder::new(&EncoderConfig::Vgg11(width(0.125)), &mut Rng::new(4)).unwrap();
    assert!(vgg.buffers().is_empty());
}

#[test]
fn dino_job_runs_with_conv_students() {
    use fixpoint::data::synthetic_images::EmbeddedConfig;
    use fixpoint::train::dino::{DataChoice, DinoConfig, train_dino};
    for enc in [EncoderConfig::Vgg11(width(0.0625)), EncoderConfig::ResNet18(width(0.0625))] {
        let cfg = DinoConfig {
            data: DataChoice::Embedded(EmbeddedConfig { train_per_class: 10, test_per_class: 5, noise: 0.5 }),
            train_size: Some(100),
            probe_train_size: Some(100),
            probe_test_size: Some(50),
            encoder: enc.clone(),
            head_hidden: vec![32],
            bottleneck: 16,
            out_dim: 64,
            epochs: 1,
            batch_size: 50,
            ..DinoConfig::default()
        };
        let r = train_dino(&cfg, &mut ()).unwrap();
        assert_eq!(r.losses.len(), 2, "{}", enc.name());
        assert!(r.kls.iter().all(|k| k.is_finite() && *k >= 0.0));
        assert!(r.kls[1] > 0.0, "{}: the student moved away from the teacher", enc.name());
        // Same config, same run (the BN running statistics included).
        let again = train_dino(&cfg, &mut ()).unwrap();
        assert_eq!(again.kls, r.kls);
        let probes = |r: &fixpoint::train::DinoReport| -> Vec<_> {
            r.history.iter().map(|e| (e.teacher, e.student, e.pixels, e.mean_kl.to_bits())).collect()
        };
        assert_eq!(probes(&again), probes(&r));
    }
}
