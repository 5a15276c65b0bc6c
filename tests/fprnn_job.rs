//! `fixpoint fprnn` and the state-tracking part of `fixpoint reproduce`, end to end on
//! tiny settings: the run files and summary fields, checkpoint round trip, bad input as
//! one-line errors, and the in-process trainer (seeded, lowers the loss).
#![cfg(unix)]

use fixpoint::fpr::ModelKind;
use fixpoint::nn::Module;
use fixpoint::run::Checkpoint;
use fixpoint::tasks::Task;
use fixpoint::train::{FprnnConfig, FprnnTrainer};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_fixpoint");

fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    std::env::temp_dir().join(format!("fixpoint-fprnn-{tag}-{}-{nanos}", std::process::id()))
}

fn tiny(task: &str, model: ModelKind) -> FprnnConfig {
    let mut c = FprnnConfig::new(Task::parse(task).unwrap(), model);
    c.d_model = 16;
    c.d_inner = 32;
    c.rank = 2;
    c.batch = 8;
    c.steps = 6;
    c.warmup = 1;
    c.eval_count = 6;
    c.eval_batch = 4;
    c.val_every = 3;
    c.val_count = 4;
    c
}

#[test]
fn a_run_writes_the_summary_fields_plots_and_a_loadable_checkpoint() {
    let dir = temp_dir("files");
    let out = Command::new(BIN)
        .args(["fprnn", "--task", "a4", "--model", "fp-rnn", "--mixer", "householder:2", "--d-model", "16"])
        .args(["--steps", "5", "--batch", "8", "--warmup", "1", "--eval-lengths", "2,4,8", "--eval-count", "5"])
        .args(["--val-every", "2", "--val-count", "4", "--ckpt-every", "2", "--json", "--threads", "1", "--quiet"])
        .arg("--out")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let line: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let summary: Value = serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(line, summary);
    for k in [
        "task",
        "model",
        "mixer",
        "backward",
        "seed",
        "steps",
        "wall_s",
        "tokens_per_s",
        "seq_acc_by_length",
        "token_acc_by_length",
        "longest_len_over_0_9",
        "median_iterations_by_length",
        "nonconverged_share_by_length",
    ] {
        assert!(summary.get(k).is_some(), "summary lacks {k}: {summary}");
    }
    assert_eq!(summary["task"], "a4");
    assert_eq!(summary["model"], "fp-rnn");
    assert_eq!(summary["mixer"], "householder:2");
    assert_eq!(summary["steps"], 5);
    let accs = summary["seq_acc_by_length"].as_object().unwrap();
    assert_eq!(accs.keys().map(String::as_str).collect::<Vec<_>>(), ["2", "4", "8"]);
    for (_, v) in accs {
        assert!((0.0..=1.0).contains(&v.as_f64().unwrap()));
    }
    for (_, v) in summary["median_iterations_by_length"].as_object().unwrap() {
        assert!(v.as_f64().unwrap() >= 1.0, "an FP model runs at least one iteration");
    }
    assert!(summary["tokens_per_s"].as_f64().unwrap() > 0.0);
    for f in ["config.json", "metrics.jsonl", "accuracy_vs_length.png", "iterations_vs_length.png"] {
        assert!(dir.join(f).exists(), "{f} missing");
    }
    // The final checkpoint holds the parameters of an in-process run with the same config.
    let ck = Checkpoint::load(&Checkpoint::latest(&dir).unwrap().unwrap()).unwrap();
    assert_eq!(ck.step, 5);
    let mut c = tiny("a4", ModelKind::FpRnn);
    (c.d_inner, c.steps, c.eval_lengths, c.eval_count, c.val_every, c.val_count) = (32, 5, vec![2, 4, 8], 5, 2, 4);
    let mut t = FprnnTrainer::new(&c).unwrap();
    while !t.done() {
        t.step().unwrap();
        if t.val_due() {
            t.validate().unwrap();
        }
    }
    for (name, p) in t.model().params() {
        assert_eq!(ck.param(&name).unwrap().to_vec(), p.to_vec(), "{name}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn trainer_is_seeded_and_restores_from_a_checkpoint() {
    for (task, model) in [("z2", ModelKind::FpRnn), ("copy", ModelKind::Diagonal), ("arith", ModelKind::Lstm)] {
        let mut c = tiny(task, model);
        if task == "copy" {
            c.task.set_train_len(6).unwrap();
            c.task.set_context(40).unwrap();
            c.eval_lengths = vec![3, 12];
        }
        if task == "arith" {
            c.task.set_train_len(12).unwrap();
            c.task.set_context(24).unwrap();
            c.eval_lengths = vec![12, 24];
        }
        let run = |c: &FprnnConfig| -> Vec<u32> {
            let mut t = FprnnTrainer::new(c).unwrap();
            (0..c.steps).map(|_| t.step().unwrap().loss.to_bits()).collect()
        };
        let a = run(&c);
        assert_eq!(a, run(&c), "{task}: same seed, same losses");
        assert_ne!(a, run(&FprnnConfig { seed: 1, ..c.clone() }), "{task}: another seed differs");
        // Stop after 3 steps, checkpoint, restore into a fresh trainer: the rest is equal.
        let mut t = FprnnTrainer::new(&c).unwrap();
        for _ in 0..3 {
            t.step().unwrap();
        }
        let ck = t.save_state(Checkpoint::new(3, serde_json::json!({})));
        let ck = Checkpoint::from_bytes(&ck.to_bytes().unwrap(), "test").unwrap();
        let mut u = FprnnTrainer::new(&c).unwrap();
        u.restore(&ck).unwrap();
        let rest: Vec<u32> = (3..c.steps).map(|_| u.step().unwrap().loss.to_bits()).collect();
        assert_eq!(rest, a[3..], "{task}: resumed losses");
        let evals = u.evaluate().unwrap();
        assert_eq!(evals.len(), c.eval_lengths.len());
        for e in &evals {
            assert!((0.0..=1.0).contains(&e.seq_acc) && e.token_acc >= e.seq_acc - 1e-12);
            assert_eq!(e.median_iterations.is_some(), model != ModelKind::Lstm);
            assert_eq!(e.lmax, 4 * if task == "copy" { 2 * e.len + 2 } else { e.len + usize::from(task == "z2") });
        }
    }
}

/// Run `fixpoint fprnn` on a tiny a4 setting with `extra` flags; the summary JSON.
fn tiny_run(tag: &str, extra: &[&str]) -> Value {
    let dir = temp_dir(tag);
    let out = Command::new(BIN)
        .args(["fprnn", "--task", "a4", "--d-model", "8", "--train-len", "4", "--steps", "3", "--batch", "4"])
        .args(["--warmup", "1", "--eval-lengths", "4", "--eval-count", "4", "--val-every", "0", "--lmax", "6"])
        .args(["--json", "--threads", "1", "--quiet"])
        .args(extra)
        .arg("--out")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{extra:?}: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let metrics = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let mut summary = summary;
    summary["metrics"] = Value::String(metrics);
    summary
}

#[test]
fn every_model_mixer_and_backward_runs_end_to_end() {
    let cases: &[(&[&str], &str, &str, &str)] = &[
        (&["--model", "fp-mamba", "--mixer", "householder:2"], "fp-mamba", "householder:2", "one-step"),
        (&["--model", "mamba"], "mamba", "identity", "one-step"),
        (&["--model", "fp-rnn", "--mixer", "kronecker"], "fp-rnn", "kronecker", "one-step"),
        (&["--model", "fp-rnn", "--mixer", "kronecker", "--kron-norm", "rows"], "fp-rnn", "kronecker:rows", "one-step"),
        (&["--model", "fp-mamba", "--mixer", "kronecker"], "fp-mamba", "kronecker", "one-step"),
        (&["--model", "fp-mamba", "--mixer", "dplr:2", "--short-conv"], "fp-mamba", "dplr:2", "one-step"),
        (
            &["--model", "fp-mamba", "--no-bc-y-dependence", "--glu-in-loop", "--d-state", "4"],
            "fp-mamba",
            "householder:4",
            "one-step",
        ),
        (
            &["--model", "fp-rnn", "--backward", "implicit", "--hh-alpha-scale", "1"],
            "fp-rnn",
            "householder:4",
            "implicit",
        ),
        (&["--model", "fp-rnn", "--backward", "phantom-2", "--short-conv"], "fp-rnn", "householder:4", "phantom-2"),
        (
            &["--model", "fp-mamba", "--layers", "2", "--backward", "implicit,phantom-2"],
            "fp-mamba",
            "householder:4",
            "implicit,phantom-2",
        ),
    ];
    for (i, (flags, model, mixer, backward)) in cases.iter().enumerate() {
        let s = tiny_run(&format!("wired{i}"), flags);
        assert_eq!((s["model"].as_str(), s["mixer"].as_str()), (Some(*model), Some(*mixer)), "{flags:?}: {s}");
        assert_eq!(s["backward"], *backward, "{flags:?}");
        assert_eq!(s["steps"], 3, "{flags:?}");
        assert!(s["final_loss"].as_f64().is_some_and(f64::is_finite), "{flags:?}: {s}");
        let implicit = backward.contains("implicit");
        let adj = s["adjoint_iterations_mean"].as_f64();
        assert_eq!(adj.is_some(), implicit, "{flags:?}: adjoint iterations reported iff implicit: {s}");
        if implicit {
            assert!(adj.unwrap() >= 1.0, "{flags:?}");
            assert!(s["metrics"].as_str().unwrap().contains("\"adjoint_iterations\""), "{flags:?}: metrics");
        }
    }
}

#[test]
fn training_lowers_the_parity_loss() {
    let mut c = tiny("z2", ModelKind::FpRnn);
    c.task.set_train_len(6).unwrap();
    c.steps = 60;
    c.warmup = 5;
    c.lr = 3e-3;
    let mut t = FprnnTrainer::new(&c).unwrap();
    let losses: Vec<f32> = (0..c.steps).map(|_| t.step().unwrap().loss).collect();
    let head: f32 = losses[..5].iter().sum::<f32>() / 5.0;
    let tail: f32 = losses[55..].iter().sum::<f32>() / 5.0;
    assert!(tail < 0.8 * head, "loss {head} -> {tail}");
}

fn fails_with(args: &[&str], needle: &str) {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(!out.status.success(), "{args:?} should fail");
    let err = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?}: one line, got {err:?}");
    assert!(lines[0].starts_with("error:") && lines[0].contains(needle), "{args:?}: {err:?}");
}

#[test]
fn bad_input_is_a_one_line_error() {
    let base = ["fprnn", "--out", "/nonexistent/never/used", "--quiet"];
    let cases: &[(&[&str], &str)] = &[
        (&["--task", "a7x", "--model", "fp-rnn"], "unknown task"),
        (&["--task", "a5", "--model", "gru"], "unknown model"),
        (&["--task", "a5", "--model", "fp-rnn", "--steps", "0"], "--steps"),
        (&["--task", "a5", "--model", "fp-rnn", "--steps", "-3"], "--steps"),
        (&["--task", "copy", "--model", "fp-rnn", "--context", "100"], "2·max + 3"),
        (&["--task", "copy", "--model", "fp-rnn", "--train-len", "60", "--context", "120"], "2·max + 3"),
        (&["--task", "a5", "--model", "lstm", "--mixer", "householder:4"], "not allowed"),
        (&["--task", "a5", "--model", "diagonal", "--mixer", "householder:4"], "not allowed"),
        (&["--task", "a5", "--model", "fp-rnn", "--mixer", "dplr:2"], "not contractive"),
        (&["--task", "a5", "--model", "dense-seq", "--mixer", "dplr:2"], "not contractive"),
        (&["--task", "a5", "--model", "mamba", "--mixer", "dplr:2"], "not allowed"),
        (&["--task", "a5", "--model", "mamba", "--mixer", "kronecker"], "not allowed"),
        (&["--task", "a5", "--model", "diagonal", "--mixer", "kronecker"], "not allowed"),
        (&["--task", "a5", "--model", "fp-mamba", "--mixer", "dplr:0"], "rank"),
        (&["--task", "a5", "--model", "fp-mamba", "--mixer", "kronecker:diag"], "Kronecker norm"),
        (&["--task", "a5", "--model", "fp-rnn", "--kron-norm", "rows"], "--mixer kronecker"),
        (&["--task", "a5", "--model", "fp-rnn", "--mixer", "kronecker", "--kron-norm", "max"], "--kron-norm"),
        (&["--task", "a5", "--model", "fp-rnn", "--hh-alpha-scale", "3"], "--hh-alpha-scale"),
        (&["--task", "a5", "--model", "fp-rnn", "--no-bc-y-dependence"], "fp-mamba"),
        (&["--task", "a5", "--model", "fp-rnn", "--glu-in-loop"], "fp-mamba"),
        (&["--task", "a5", "--model", "fp-rnn", "--d-state", "8"], "fp-mamba"),
        (&["--task", "a5", "--model", "fp-mamba", "--d-state", "0"], "d_state"),
        (&["--task", "a5", "--model", "lstm", "--short-conv"], "lstm"),
        (&["--task", "a5", "--model", "fp-rnn", "--backward", "phantom-0"], "unknown backward"),
        (&["--task", "a5", "--model", "fp-rnn", "--backward", "phantom"], "unknown backward"),
        (&["--task", "a5", "--model", "fp-rnn", "--backward", "adjoint"], "unknown backward"),
        (&["--task", "a5", "--model", "fp-rnn", "--backward", "implicit,one-step"], "2 modes for 1 layers"),
        (&["--task", "a5", "--model", "fp-rnn", "--mixer", "householder:0"], "rank"),
        (&["--task", "a5", "--model", "fp-rnn", "--mixer", "cayley"], "unknown mixer"),
        (&["--task", "a5", "--model", "fp-rnn", "--d-model", "0"], "d_model"),
        (&["--task", "a5", "--model", "fp-rnn", "--batch", "0"], "batch"),
        (&["--task", "a5", "--model", "fp-rnn", "--lmax", "0"], "lmax"),
        (&["--task", "a5", "--model", "fp-rnn", "--eval-count", "0"], "evaluation count"),
        (&["--task", "a5"], "--model"),
        (&["--model", "fp-rnn"], "--task"),
    ];
    for (args, needle) in cases {
        let all: Vec<&str> = base.iter().chain(args.iter()).copied().collect();
        fails_with(&all, needle);
    }
}

#[test]
fn reproduce_quick_reports_state_tracking() {
    let out = Command::new(BIN)
        .args(["reproduce", "--quick", "--json", "--threads", "1"])
        .env("FIXPOINT_REPRO_TINY", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let j: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert!(j.get("mlp").is_some(), "the mlp member stays");
    let st = &j["state_tracking"];
    assert_eq!(st["task"], "a4");
    assert_eq!(st["train_length"], 16);
    assert!(st["wall_s"].as_f64().unwrap() > 0.0);
    for m in ["fp_rnn", "diagonal", "lstm"] {
        for k in ["seq_acc_at_train", "seq_acc_at_2x"] {
            let v = st[m][k].as_f64().unwrap_or_else(|| panic!("{m}.{k} missing: {st}"));
            assert!((0.0..=1.0).contains(&v));
        }
    }
}

#[test]
fn quick_preset_is_the_issue_s() {
    let c = FprnnConfig::quick(ModelKind::FpRnn);
    assert_eq!(c.task.name(), "a4");
    assert_eq!(c.task.train_len(), 16);
    assert_eq!((c.n_layers, c.d_model, c.d_inner, c.rank, c.batch, c.lmax), (1, 64, 128, 4, 128, 16));
    assert_eq!((c.lr, c.warmup, c.eval_lmax_factor), (1e-3, 100, 4));
    assert_eq!(c.eval_lengths, vec![2, 4, 8, 12, 16, 20, 24, 32, 40, 50]);
    assert_eq!(c.mixer_name(), "householder:4");
    assert_eq!(FprnnConfig::quick(ModelKind::Diagonal).mixer_name(), "identity");
    let m = c.model_config();
    assert_eq!((m.vocab, m.d_inner, m.rank, m.tie_embeddings), (19, 128, 4, true));
}

/// `FIXPOINT_PROFILE=1` splits the training steps' time into solver, scan, mixer and
/// rest (`step_split_s` in the summary): the parts add up to the training time, an FP
/// model spends time in all three named groups, and the diagonal model (no solve, no
/// mixer) in neither the solver nor the mixer. Without the variable the field is null.
#[test]
fn profile_splits_the_training_step() {
    let run = |model: &str, profile: bool| -> Value {
        let dir = temp_dir(&format!("split-{model}-{profile}"));
        let mut cmd = Command::new(BIN);
        cmd.args(["fprnn", "--task", "a4", "--model", model, "--d-model", "16", "--steps", "3", "--batch", "8"])
            .args(["--warmup", "1", "--eval-lengths", "2", "--eval-count", "2", "--val-every", "0", "--json"])
            .args(["--threads", "1", "--quiet", "--out"])
            .arg(&dir)
            .env_remove("FIXPOINT_PROFILE");
        if profile {
            cmd.env("FIXPOINT_PROFILE", "1");
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert_eq!(stdout.contains("training step time split"), profile, "{stdout}");
        std::fs::remove_dir_all(&dir).ok();
        serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
    };
    for model in ["fp-rnn", "diagonal"] {
        let s = run(model, true);
        let split = s["step_split_s"].as_object().unwrap_or_else(|| panic!("{model}: no split in {s}"));
        let part = |k: &str| split[k].as_f64().unwrap();
        let sum: f64 = ["solver", "scan", "mixer", "rest"].iter().map(|k| part(k)).sum();
        let train = s["train_s"].as_f64().unwrap();
        assert!((sum - train).abs() <= 1e-6 * train.max(1.0), "{model}: parts {sum} vs train_s {train}");
        assert!(part("scan") > 0.0 && part("rest") > 0.0, "{model}: {split:?}");
        if model == "fp-rnn" {
            assert!(part("solver") > 0.0 && part("mixer") > 0.0, "{model}: {split:?}");
        } else {
            assert_eq!((part("solver"), part("mixer")), (0.0, 0.0), "{model}: {split:?}");
        }
    }
    assert!(run("fp-rnn", false)["step_split_s"].is_null());
}
