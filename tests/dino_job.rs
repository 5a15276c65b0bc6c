//! The random-teacher job end to end: `train_dino` on small embedded data (report,
//! hooks, determinism, cache on/off, early stop, the noise control), the CLI, and a
//! short run on the real Fashion-MNIST (skipped with a message when it is absent,
//! unless FIXPOINT_REQUIRE_DATA=1).

use fixpoint::Error;
use fixpoint::data::idx::{fashion_mnist_available, fashion_mnist_dir};
use fixpoint::data::images::Fit28;
use fixpoint::data::synthetic_images::EmbeddedConfig;
use fixpoint::dino::{DinoModel, EncoderConfig, MlpEncoderConfig};
use fixpoint::train::dino::{DataChoice, DinoConfig, DinoHooks, EpochRecord, RunInfo, StepInfo, train_dino};
use std::process::Command;

fn tiny(data: DataChoice) -> DinoConfig {
    DinoConfig {
        data,
        train_size: Some(300),
        probe_train_size: Some(300),
        probe_test_size: Some(100),
        encoder: EncoderConfig::Mlp(MlpEncoderConfig { in_dim: 3072, hidden: vec![64], embed_dim: 32 }),
        head_hidden: vec![64, 64],
        bottleneck: 16,
        out_dim: 64,
        epochs: 2,
        batch_size: 64,
        ..DinoConfig::default()
    }
}

fn embedded() -> DataChoice {
    DataChoice::Embedded(EmbeddedConfig { train_per_class: 30, test_per_class: 10, noise: 0.5 })
}

#[derive(Default)]
struct Count {
    starts: usize,
    steps: Vec<usize>,
    epochs: Vec<usize>,
    stop_after: Option<usize>,
}

impl DinoHooks for Count {
    fn on_start(&mut self, i: &RunInfo) {
        self.starts += 1;
        assert_eq!(i.steps_per_epoch, 5);
    }
    fn on_step(&mut self, s: &StepInfo) {
        self.steps.push(s.step);
        assert!(s.loss.is_finite() && s.kl.is_finite() && s.lr == 1e-3);
    }
    fn on_epoch(&mut self, r: &EpochRecord, _student: &DinoModel) {
        self.epochs.push(r.epoch);
    }
    fn should_stop(&mut self) -> bool {
        self.stop_after.is_some_and(|n| self.steps.len() >= n)
    }
}

#[test]
fn train_dino_reports_probes_and_is_deterministic() {
    let cfg = tiny(embedded());
    let mut hooks = Count::default();
    let r = train_dino(&cfg, &mut hooks).unwrap();
    assert_eq!(hooks.starts, 1);
    assert_eq!(hooks.steps, (0..10).collect::<Vec<_>>());
    assert_eq!(hooks.epochs, vec![0, 1, 2]);
    assert_eq!((r.epochs, r.history.len(), r.losses.len(), r.kls.len()), (2, 3, 10, 10));
    assert_eq!(r.info.dataset, "embedded");
    assert_eq!(r.info.claim, "synthetic: no paper claim");
    assert!(r.info.student_differs > 0);
    // CE ≈ ln m at init (near-uniform teacher softmax), KL tiny and non-negative.
    assert!((r.losses[0] - (64f32).ln()).abs() < 0.05, "first loss {}", r.losses[0]);
    assert!(r.kls.iter().all(|&k| k > -1e-12 && k < 1.0), "{:?}", r.kls);
    let all = [r.probes.teacher, r.probes.student, r.probes.student_best, r.probes.pixels];
    for p in all.iter().chain(r.history.iter().flat_map(|h| [&h.teacher, &h.student, &h.pixels])) {
        assert!((0.0..=100.0).contains(&p.knn) && (0.0..=100.0).contains(&p.linear), "{p:?}");
    }
    // The teacher's k-NN is the same every epoch (fixed features); the best student is
    // the max over training epochs.
    assert!(r.history.iter().all(|h| h.teacher.knn == r.history[0].teacher.knn));
    let best = r.history[1..].iter().map(|h| h.student.linear).fold(f64::MIN, f64::max);
    assert_eq!(r.probes.student_best.linear, best);
    assert_eq!(r.probes.student, r.history[2].student);
    assert!(r.images_per_s > 0.0 && r.wall_s >= r.train_s);
    // Same config, same bits; the uncached teacher gives the same run.
    let again = train_dino(&cfg, &mut ()).unwrap();
    assert_eq!(r.losses, again.losses);
    assert_eq!(r.history[2].student, again.history[2].student);
    let uncached = train_dino(&DinoConfig { cache_teacher: false, ..cfg.clone() }, &mut ()).unwrap();
    for (a, b) in r.losses.iter().zip(&uncached.losses) {
        assert!((a - b).abs() <= 1e-6 * a.abs(), "cached {a} vs uncached {b}");
    }
    // Another student seed, another run (at α = 1e-10 the CE agrees to f32 precision,
    // the f64 KL does not); the teacher (and its probes) stay.
    let other = train_dino(&DinoConfig { student_seed: 9, ..cfg }, &mut ()).unwrap();
    assert_ne!(other.kls, r.kls);
    assert_eq!(other.history[0].teacher, r.history[0].teacher);
}

#[test]
fn early_stop_noise_control_and_bad_configs() {
    let mut hooks = Count { stop_after: Some(1), ..Count::default() };
    let r = train_dino(&tiny(embedded()), &mut hooks).unwrap();
    assert!(r.stopped_early);
    assert_eq!((r.losses.len(), r.epochs, hooks.epochs.clone()), (1, 1, vec![0, 1]));

    let noise = DataChoice::GaussianNoise { probe: Box::new(embedded()) };
    let r = train_dino(&DinoConfig { train_size: Some(128), ..tiny(noise) }, &mut ()).unwrap();
    assert_eq!(
        (r.info.dataset.as_str(), r.info.probe_dataset.as_str(), r.info.train_size),
        ("gaussian-noise", "embedded", 128)
    );

    // α so small that the student is the teacher bit for bit: refused, not a silent zero-loss run.
    match train_dino(&DinoConfig { alpha: 1e-30, ..tiny(embedded()) }, &mut ()) {
        Err(Error::InvalidArgument { message, .. }) => assert!(message.contains("bit-identical"), "{message}"),
        other => panic!("{other:?}"),
    }
    for bad in [
        DinoConfig { alpha: 1.5, ..tiny(embedded()) },
        DinoConfig { batch_size: 0, ..tiny(embedded()) },
        DinoConfig { train_size: Some(0), ..tiny(embedded()) },
        DinoConfig { out_dim: 0, ..tiny(embedded()) },
        DinoConfig { lr: f32::NAN, ..tiny(embedded()) },
    ] {
        assert!(matches!(train_dino(&bad, &mut ()), Err(Error::InvalidArgument { .. })), "{bad:?}");
    }
    let missing = DataChoice::FashionMnist { dir: Some("/nonexistent/fixpoint".into()), fit28: Fit28::Resize };
    let e = train_dino(&tiny(missing), &mut ()).unwrap_err().to_string();
    assert!(e.contains("/nonexistent/fixpoint") && e.contains("train-images-idx3-ubyte"), "{e}");
}

fn run(args: &[&str]) -> (i32, String, String) {
    // In the temp dir: training commands write runs/<command>-<time>/ under the cwd.
    let out = Command::new(env!("CARGO_BIN_EXE_fixpoint"))
        .args(args)
        .current_dir(std::env::temp_dir())
        .output()
        .expect("run the binary");
    (out.status.code().unwrap_or(-1), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

fn last_json(stdout: &str) -> serde_json::Value {
    let last = stdout.lines().last().expect("some output");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}"))
}

#[test]
fn cli_dino_json_last_line() {
    let (code, out, err) = run(&[
        "dino",
        "--data",
        "embedded",
        "--train-size",
        "200",
        "--probe-train-size",
        "200",
        "--probe-test-size",
        "100",
        "--out-dim",
        "64",
        "--epochs",
        "1",
        "--mlp-hidden",
        "32",
        "--embed-dim",
        "16",
        "--alpha",
        "0.3",
        "--teacher-seed",
        "4",
        "--student-seed",
        "5",
        "--json",
    ]);
    assert_eq!(code, 0, "stderr: {err}");
    assert!(out.contains("synthetic: no paper claim"), "{out}");
    let v = last_json(&out);
    assert_eq!(v["dataset"], "embedded");
    assert_eq!(v["student_model"], "mlp");
    assert_eq!(v["alpha"], 0.3);
    assert_eq!(v["out_dim"], 64);
    assert_eq!(v["epochs"], 1);
    assert_eq!((v["teacher_seed"].as_u64(), v["student_seed"].as_u64()), (Some(4), Some(5)));
    assert!(v["wall_s"].as_f64().unwrap() > 0.0 && v["images_per_s"].as_f64().unwrap() > 0.0);
    for who in ["teacher", "student", "student_best", "pixels"] {
        for probe in ["knn", "linear"] {
            let x = v["probes"][who][probe].as_f64().unwrap_or_else(|| panic!("probes.{who}.{probe}: {v}"));
            assert!((0.0..=100.0).contains(&x));
        }
    }
    assert_eq!(v["history"].as_array().unwrap().len(), 2);
    // The bench mode times steps only.
    let (code, out, err) = run(&["dino", "--bench-steps", "1", "--out-dim", "64", "--batch-size", "8", "--json"]);
    assert_eq!(code, 0, "stderr: {err}");
    assert!(last_json(&out)["images_per_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn cli_dino_bad_input_is_one_line_and_nonzero() {
    for args in [
        &["dino", "--student", "resnet"][..],
        &["dino", "--data", "mnist"],
        &["dino", "--data", "cifar10"],
        &["dino", "--data", "cifar10", "--data-dir", "/nonexistent/cifar"],
        &["dino", "--alpha", "2"],
        &["dino", "--knn", "manhattan"],
        &["dino", "--fit28", "crop"],
        &["dino", "--data", "gaussian-noise", "--probe-data", "gaussian-noise"],
        &["dino", "--data", "embedded", "--epochs", "1", "--vit-heads", "5", "--student", "vit"],
        &["dino", "--data", "embedded", "--teacher-bn", "running"],
        &["dino", "--data", "embedded", "--student", "vgg11", "--teacher-bn", "batch_stats", "--no-cache-teacher"],
        &["dino", "--data", "embedded", "--student", "resnet18", "--teacher-bn", "batch_stats"],
    ] {
        let (code, out, err) = run(args);
        assert_ne!(code, 0, "{args:?} should fail");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line on stderr, got {err:?}");
        assert!(err.starts_with("error: "), "{args:?}: {err:?}");
        assert!(!out.contains('{'), "{args:?}: no JSON on failure, got {out:?}");
    }
}

#[test]
fn real_fashion_mnist_short_run() {
    let dir = fashion_mnist_dir(None);
    if !fashion_mnist_available(&dir) {
        let msg = format!("real Fashion-MNIST not found in {} (apt-get install dataset-fashion-mnist)", dir.display());
        if std::env::var("FIXPOINT_REQUIRE_DATA").is_ok_and(|v| v == "1") {
            panic!("FIXPOINT_REQUIRE_DATA=1 but {msg}");
        }
        eprintln!("SKIPPED: {msg}");
        return;
    }
    let cfg = DinoConfig {
        train_size: Some(1000),
        probe_train_size: Some(1000),
        probe_test_size: Some(500),
        epochs: 1,
        out_dim: 256,
        ..tiny(DataChoice::FashionMnist { dir: None, fit28: Fit28::Resize })
    };
    let r = train_dino(&cfg, &mut ()).unwrap();
    assert_eq!((r.info.dataset.as_str(), r.info.claim.as_str()), ("fashion-mnist", ""));
    assert_eq!((r.info.train_size, r.info.probe_train_size, r.info.probe_test_size), (1000, 1000, 500));
    // Real images: raw pixels and a random network both sit far above chance (10 %).
    assert!(r.probes.pixels.knn > 60.0, "pixel k-NN {}", r.probes.pixels.knn);
    assert!(r.probes.teacher.knn > 50.0 && r.probes.student.knn > 50.0, "{:?}", r.probes);
}

#[test]
fn cli_dino_out_dir_has_every_harness_file() {
    let dir = std::env::temp_dir().join(format!("fixpoint-dino-out-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_str().unwrap();
    let (code, out, err) = run(&[
        "dino",
        "--data",
        "embedded",
        "--train-size",
        "200",
        "--probe-train-size",
        "200",
        "--probe-test-size",
        "100",
        "--out-dim",
        "64",
        "--epochs",
        "2",
        "--mlp-hidden",
        "32",
        "--embed-dim",
        "16",
        "--json",
        "--out",
        d,
    ]);
    assert_eq!(code, 0, "stderr: {err}");
    // 200 images in one batch: one step per epoch, two in all; the progress lines count
    // against that total (it read "step 2/0 (100%)" before the total was passed on).
    assert!(err.contains("step 2/2 (100%)") && !err.contains("/0 ("), "progress lines: {err}");
    let line = last_json(&out);
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(line, summary, "summary.json equals the --json line");
    for f in ["config.json", "metrics.jsonl", "probe_accuracy.png", "loss.png", "ckpt-2.safetensors"] {
        assert!(dir.join(f).is_file(), "{f} missing in {}", dir.display());
    }
    let metrics = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = metrics.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(records.iter().any(|r| r["kind"] == "train" && r["kl"].is_number()));
    let evals: Vec<_> = records.iter().filter(|r| r["kind"] == "eval").collect();
    assert_eq!(evals.len(), 3, "epoch 0 (before training) and two epochs");
    let ck = fixpoint::run::Checkpoint::load(&dir.join("ckpt-2.safetensors")).unwrap();
    assert!(!ck.params.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Spec §8.2: with `batch_stats` the ResNet teacher normalises with each batch's
/// statistics (its output for an image depends on the rest of the batch and differs from
/// eval mode with the initial statistics); with `eval_init` it does not. The run itself
/// goes through end to end without the teacher cache.
#[test]
fn teacher_batch_norm_batch_stats_against_eval_init() {
    use fixpoint::dino::ConvNetConfig;
    use fixpoint::train::dino::{TeacherBn, build_models};
    use fixpoint::{Rng, Tensor, init, no_grad};
    let resnet = |bn: TeacherBn| DinoConfig {
        encoder: EncoderConfig::ResNet18(ConvNetConfig { width_mult: 0.0625 }),
        teacher_bn: bn,
        cache_teacher: bn == TeacherBn::EvalInit,
        train_size: Some(64),
        probe_train_size: Some(64),
        probe_test_size: Some(20),
        epochs: 1,
        batch_size: 32,
        ..tiny(embedded())
    };
    let x = init::uniform([6, 3, 32, 32], -1.0, 1.0, &mut Rng::new(9));
    let first = x.narrow(0, 0, 3).unwrap().contiguous();
    let out = |bn: TeacherBn, x: &Tensor| {
        let (teacher, _, _) = build_models(&resnet(bn)).unwrap();
        no_grad(|| teacher.forward(x)).unwrap().to_vec()
    };
    let rows = |v: Vec<f32>| v[..3 * 64].to_vec();
    let (e_all, e_first) = (rows(out(TeacherBn::EvalInit, &x)), out(TeacherBn::EvalInit, &first));
    let (b_all, b_first) = (rows(out(TeacherBn::BatchStats, &x)), out(TeacherBn::BatchStats, &first));
    assert_eq!(e_all, e_first, "eval_init: an image's output does not depend on its batch");
    let gap = |a: &[f32], b: &[f32]| a.iter().zip(b).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
    assert!(gap(&b_all, &b_first) > 1e-3, "batch_stats: the output depends on the batch");
    assert!(gap(&b_first, &e_first) > 1e-3, "batch_stats differs from eval_init");
    let r = train_dino(&resnet(TeacherBn::BatchStats), &mut ()).unwrap();
    assert!(r.losses.iter().all(|l| l.is_finite()) && r.probes.teacher.knn > 0.0);
    let e = train_dino(&DinoConfig { cache_teacher: true, ..resnet(TeacherBn::BatchStats) }, &mut ()).unwrap_err();
    assert!(e.to_string().contains("--no-cache-teacher"), "{e}");
}
