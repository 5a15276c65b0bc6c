//! The first job end to end: the spirals data, `train_mlp`, determinism, and the CLI.

use fixpoint::data::{SpiralsConfig, spirals};
use fixpoint::train::{MlpConfig, train_mlp};
use std::process::Command;

#[test]
fn spirals_follow_the_documented_generator() {
    let cfg = SpiralsConfig { classes: 4, points_per_class: 50, turns: 1.5, noise: 0.0, test_fraction: 0.2 };
    let (train, test) = spirals(&cfg, 3).unwrap();
    assert_eq!((train.len(), test.len()), (160, 40));
    assert_eq!((train.dim, train.classes), (2, 4));
    let mut counts = [0usize; 4];
    for d in [&train, &test] {
        for (i, &k) in d.y.iter().enumerate() {
            counts[k] += 1;
            // Without noise every point lies on its arm: r = 0.1 + 0.9 s and
            // θ = 2π·turns·s + 2πk/K (mod 2π).
            let (x, y) = (d.x[2 * i] as f64, d.x[2 * i + 1] as f64);
            let r = x.hypot(y);
            assert!((0.1 - 1e-6..=1.0 + 1e-6).contains(&r), "radius {r}");
            let s = (r - 0.1) / 0.9;
            let tau = std::f64::consts::TAU;
            let want = tau * 1.5 * s + tau * k as f64 / 4.0;
            let diff = (y.atan2(x) - want).rem_euclid(tau);
            assert!(diff.min(tau - diff) < 1e-4, "point {i} of class {k} is off its arm by {diff}");
        }
    }
    assert_eq!(counts, [50; 4]);
    // Seeded: same seed, same data; another seed, other data.
    assert_eq!(spirals(&cfg, 3).unwrap(), (train.clone(), test));
    assert_ne!(spirals(&cfg, 4).unwrap().0, train);
    assert!(spirals(&SpiralsConfig { classes: 1, ..cfg.clone() }, 0).is_err());
    assert!(spirals(&SpiralsConfig { test_fraction: 1.0, ..cfg }, 0).is_err());
}

#[test]
fn default_config_fits_the_training_set() {
    let cfg = MlpConfig::default();
    let r = train_mlp(&cfg).unwrap();
    eprintln!(
        "default mlp: train accuracy {:.4}, test accuracy {:.4}, final loss {:.5}, {:.2} s",
        r.train_accuracy,
        r.test_accuracy,
        r.final_loss(),
        r.wall_seconds
    );
    assert_eq!(r.losses.len(), cfg.steps);
    assert!(r.losses.iter().all(|l| l.is_finite()));
    assert!(r.train_accuracy >= 0.99, "train accuracy {}", r.train_accuracy);
    // Untrained, the 3-class loss is about ln 3; it must have come down a long way.
    assert!(r.losses[0] > 0.8 && r.final_loss() < 0.1, "first {} final {}", r.losses[0], r.final_loss());
    assert!(r.test_accuracy > 0.9, "test accuracy {}", r.test_accuracy);
}

#[test]
fn same_seed_same_loss_bits_other_seed_differs() {
    let cfg = MlpConfig { steps: 150, warmup_steps: 20, ..MlpConfig::default() };
    let bits = |c: &MlpConfig| -> Vec<u32> { train_mlp(c).unwrap().losses.iter().map(|l| l.to_bits()).collect() };
    let a = bits(&cfg);
    assert_eq!(a, bits(&cfg), "same seed, bit-identical loss curve");
    let b = bits(&MlpConfig { seed: 1, ..cfg });
    assert_eq!(a.len(), b.len());
    assert_ne!(a, b, "another seed gives another curve");
}

#[test]
fn bad_config_is_an_error() {
    assert!(train_mlp(&MlpConfig { steps: 0, ..MlpConfig::default() }).is_err());
    assert!(train_mlp(&MlpConfig { batch_size: 0, ..MlpConfig::default() }).is_err());
    assert!(train_mlp(&MlpConfig { hidden: vec![8, 0], ..MlpConfig::default() }).is_err());
    assert!(train_mlp(&MlpConfig { lr: -1.0, ..MlpConfig::default() }).is_err());
}

fn run(args: &[&str]) -> (i32, String, String) {
    // Run in the temp dir: training commands write runs/<command>-<time>/ under the cwd.
    let out = Command::new(env!("CARGO_BIN_EXE_fixpoint"))
        .args(args)
        .current_dir(std::env::temp_dir())
        // reproduce: a tiny state-tracking part (its real run takes minutes; tests/fprnn_job.rs).
        .env("FIXPOINT_REPRO_TINY", "1")
        .output()
        .expect("run the binary");
    (out.status.code().unwrap_or(-1), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

fn last_json(stdout: &str) -> serde_json::Value {
    let last = stdout.lines().last().expect("some output");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}"))
}

#[test]
fn cli_mlp_json_last_line() {
    let (code, out, err) = run(&["mlp", "--json", "--steps", "30", "--seed", "5"]);
    assert_eq!(code, 0, "stderr: {err}");
    assert!(out.lines().count() > 1, "human summary before the JSON");
    let v = last_json(&out);
    assert_eq!(v["steps"], 30);
    assert_eq!(v["seed"], 5);
    assert_eq!(v["hidden"], serde_json::json!([64, 64]));
    for key in ["train_accuracy", "test_accuracy", "final_loss", "wall_seconds"] {
        let x = v[key].as_f64().unwrap_or_else(|| panic!("{key} missing: {v}"));
        assert!(x.is_finite() && x >= 0.0, "{key} = {x}");
    }
    assert!(v["train_accuracy"].as_f64().unwrap() <= 1.0);
    assert_eq!(v["loss_curve"]["values"].as_array().unwrap().len(), 30);
    // Without --json the last line is the human summary.
    let (code, out, _) = run(&["mlp", "--steps", "5"]);
    assert_eq!(code, 0);
    assert!(out.lines().last().unwrap().contains("train accuracy"));
}

#[test]
fn cli_reproduce_quick_json() {
    let (code, out, err) = run(&["reproduce", "--quick", "--json"]);
    assert_eq!(code, 0, "stderr: {err}");
    assert!(out.contains("mlp") && out.contains("quick"), "table: {out}");
    let v = last_json(&out);
    assert_eq!(v["mlp"]["preset"], "quick");
    assert!(v["mlp"]["train_accuracy"].as_f64().unwrap() >= 0.95, "{v}");
}

#[test]
fn cli_bad_input_is_one_line_and_nonzero() {
    for args in [
        &["mlp", "--steps", "0"][..],
        &["frobnicate"],
        &["mlp", "--steps", "abc"],
        &["mlp", "--activation", "swish2"],
        &["mlp", "--hidden", "8,0"],
        &["mlp", "--bogus-flag"],
        &[],
    ] {
        let (code, out, err) = run(args);
        assert_ne!(code, 0, "{args:?} should fail");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line on stderr, got {err:?}");
        assert!(err.starts_with("error: "), "{args:?}: {err:?}");
        assert!(out.is_empty(), "{args:?}: nothing on stdout, got {out:?}");
    }
}
