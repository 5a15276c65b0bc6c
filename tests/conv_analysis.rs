//! Lottery tickets and linear mode connectivity plumbing: global magnitude pruning,
//! masks, the barrier, interpolation end points, checkpoint loading, and a tiny
//! end-to-end run of both analyses on the embedded set.

use fixpoint::data::synthetic_images::EmbeddedConfig;
use fixpoint::dino::{ConvNetConfig, Encoder, EncoderConfig};
use fixpoint::nn::Module;
use fixpoint::run::Checkpoint;
use fixpoint::train::dino::DataChoice;
use fixpoint::train::tickets::*;
use fixpoint::{Rng, Tensor};

fn tiny_cfg(encoder: EncoderConfig) -> AnalysisConfig {
    AnalysisConfig {
        encoder,
        data: DataChoice::Embedded(EmbeddedConfig {
            train_per_class: 4,
            test_per_class: 2,
            ..EmbeddedConfig::default()
        }),
        data_seed: 0,
        train_size: Some(40),
        test_size: Some(20),
        epochs: 1,
        batch_size: 16,
        lr: 1e-3,
        seed: 3,
        probe: Default::default(),
    }
}

fn vgg(w: f64) -> EncoderConfig {
    EncoderConfig::Vgg11(ConvNetConfig { width_mult: w })
}

#[test]
fn global_pruning_removes_the_smallest_surviving_weights() {
    let enc = Encoder::new(&vgg(0.0625), &mut Rng::new(1)).unwrap();
    let model = Classifier::new(enc, 10, 0);
    let mut masks = full_masks(&model);
    // Only conv weights (8 of them), not biases or the classifier.
    assert_eq!(masks.len(), 8);
    let total: usize = masks.iter().map(|(_, m)| m.len()).sum();
    prune_global(&model, &mut masks, 0.2);
    let s1 = sparsity(&masks);
    assert!((s1 - 0.2).abs() < 1.0 / total as f64 + 1e-12, "{s1}");
    // Every pruned weight is no larger than every surviving one.
    let params = model.params();
    let (mut max_pruned, mut min_kept) = (0.0f32, f32::INFINITY);
    for (i, m) in &masks {
        for (w, k) in params[*i].1.to_vec().iter().zip(m) {
            if *k == 0.0 { max_pruned = max_pruned.max(w.abs()) } else { min_kept = min_kept.min(w.abs()) }
        }
    }
    assert!(max_pruned <= min_kept, "{max_pruned} > {min_kept}");
    // A second round removes 20% of the survivors: 36% in total.
    prune_global(&model, &mut masks, 0.2);
    assert!((sparsity(&masks) - 0.36).abs() < 2.0 / total as f64, "{}", sparsity(&masks));
    let mut pruned = model.clone();
    apply_masks(&mut pruned, &masks);
    let zeros: usize =
        masks.iter().map(|(i, _)| pruned.params()[*i].1.to_vec().iter().filter(|v| **v == 0.0).count()).sum();
    assert!(zeros >= (0.36 * total as f64) as usize - 2);
}

#[test]
fn barrier_and_interpolation_end_points() {
    let xs = [0.0, 0.5, 1.0];
    assert!((barrier(&xs, &[1.0, 3.0, 2.0]) - 1.5).abs() < 1e-12);
    assert!(barrier(&xs, &[1.0, 1.5, 2.0]).abs() < 1e-12, "a straight line has no barrier");
    let a = Classifier::new(
        Encoder::new(&EncoderConfig::ResNet18(ConvNetConfig { width_mult: 0.0625 }), &mut Rng::new(1)).unwrap(),
        10,
        0,
    );
    let mut b = Classifier::new(
        Encoder::new(&EncoderConfig::ResNet18(ConvNetConfig { width_mult: 0.0625 }), &mut Rng::new(2)).unwrap(),
        10,
        1,
    );
    b.encoder.train(true);
    b.encoder.forward(&Tensor::ones([2, 3, 8, 8])).unwrap(); // move b's running statistics
    b.encoder.train(false);
    let bits = |m: &Classifier| -> Vec<u32> {
        m.params()
            .iter()
            .flat_map(|(_, p)| p.to_vec())
            .chain(m.encoder.buffers().iter().flat_map(|(_, t)| t.to_vec()))
            .map(f32::to_bits)
            .collect()
    };
    assert_eq!(bits(&interpolate_models(&a, &b, 0.0).unwrap()), bits(&a));
    assert_eq!(bits(&interpolate_models(&a, &b, 1.0).unwrap()), bits(&b));
    let mid = interpolate_models(&a, &b, 0.5).unwrap();
    let (pa, pb, pm) = (a.params()[0].1.to_vec(), b.params()[0].1.to_vec(), mid.params()[0].1.to_vec());
    for ((x, y), z) in pa.iter().zip(&pb).zip(&pm) {
        assert!((0.5 * (x + y) - z).abs() <= 1e-6 * (x.abs() + y.abs()));
    }
}

#[test]
fn encoder_loads_from_a_dino_checkpoint() {
    let cfg = EncoderConfig::ResNet18(ConvNetConfig { width_mult: 0.0625 });
    let mut enc = Encoder::new(&cfg, &mut Rng::new(7)).unwrap();
    enc.train(true);
    enc.forward(&Tensor::ones([2, 3, 8, 8])).unwrap();
    enc.train(false);
    let mut ck = Checkpoint::new(1, serde_json::json!({}));
    for (n, p) in enc.params() {
        ck = ck.with_param(format!("encoder.{n}"), p);
    }
    for (n, b) in enc.buffers() {
        ck = ck.with_extra(format!("encoder.{n}"), &b);
    }
    let dir = std::env::temp_dir().join(format!("fixpoint-conv-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = ck.save_atomic(&dir, 0).unwrap();
    let loaded = encoder_from_checkpoint(&cfg, &path).unwrap();
    let x = fixpoint::init::normal([2, 3, 8, 8], 0.0, 1.0, &mut Rng::new(8));
    assert_eq!(loaded.forward(&x).unwrap().to_vec(), enc.forward(&x).unwrap().to_vec());
    // The wrong architecture is an error, not a panic.
    assert!(encoder_from_checkpoint(&vgg(0.0625), &path).is_err());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn tiny_tickets_and_lmc_run() {
    let cfg = tiny_cfg(vgg(0.0625));
    let s = load_splits(&cfg).unwrap();
    let start = random_encoder(&cfg.encoder, 0).unwrap();
    let mut seen = 0;
    let rounds = lottery_tickets(&cfg, &s, &start, 1, 0.2, |_| seen += 1).unwrap();
    assert_eq!((rounds.len(), seen), (2, 2));
    assert_eq!(rounds[0].sparsity, 0.0);
    assert!((rounds[1].sparsity - 20.0).abs() < 0.1);
    for r in &rounds {
        assert!((0.0..=100.0).contains(&r.test_accuracy) && r.test_loss.is_finite());
    }
    let r = linear_mode_connectivity(&cfg, &s, &start, 3).unwrap();
    assert_eq!(r.lambdas, vec![0.0, 0.5, 1.0]);
    assert!(r.loss_barrier.is_finite() && r.error_barrier.is_finite());
    assert!(lottery_tickets(&cfg, &s, &start, 1, 1.5, |_| {}).is_err());
    assert!(linear_mode_connectivity(&cfg, &s, &start, 1).is_err());
}
