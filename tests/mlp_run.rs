//! `fixpoint mlp --out DIR` end to end: every file of the run harness, summary.json equal
//! to the `--json` line, a checkpoint that loads into the same parameters as an
//! in-process run, and SIGINT mid-run leaving a loadable checkpoint and whole metrics.
#![cfg(unix)]

use fixpoint::nn::Module;
use fixpoint::run::Checkpoint;
use fixpoint::train::{MlpConfig, MlpTrainer};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_fixpoint");

fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    std::env::temp_dir().join(format!("fixpoint-mlp-{tag}-{}-{nanos}", std::process::id()))
}

fn metrics(dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad metrics line {l:?}: {e}"))).collect()
}

#[test]
fn a_run_writes_every_file_and_its_checkpoint_matches_an_in_process_run() {
    let dir = temp_dir("files");
    let out = Command::new(BIN)
        .args(["mlp", "--quick", "--steps", "120", "--warmup", "10", "--ckpt-every", "50", "--json", "--threads", "1"])
        .arg("--out")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let line: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let summary: Value = serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(line, summary, "summary.json must equal the --json line");
    assert!((0.0..=1.0).contains(&summary["train_accuracy"].as_f64().unwrap()));
    let config: Value = serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["seed"], 0);
    assert_eq!(config["crate_version"], env!("CARGO_PKG_VERSION"));
    for f in ["loss.png", "ckpt-50.safetensors", "ckpt-100.safetensors", "ckpt-120.safetensors"] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let m = metrics(&dir);
    let train: Vec<&Value> = m.iter().filter(|r| r["kind"] == "train").collect();
    assert_eq!(train.len(), 120);
    assert!(train.iter().all(|r| r["loss"].is_number() && r["lr"].is_number()));

    let ck = Checkpoint::load(&dir.join("ckpt-120.safetensors")).unwrap();
    assert_eq!(ck.step, 120);
    let cfg = MlpConfig { steps: 120, warmup_steps: 10, ..MlpConfig::quick() };
    let mut t = MlpTrainer::new(&cfg).unwrap();
    while !t.done() {
        t.step().unwrap();
    }
    for (name, p) in t.model().params() {
        let saved = ck.param(&name).unwrap();
        assert_eq!(saved.shape(), p.shape(), "{name}");
        let (a, b): (Vec<u32>, Vec<u32>) =
            (saved.to_vec().iter().map(|v| v.to_bits()).collect(), p.to_vec().iter().map(|v| v.to_bits()).collect());
        assert_eq!(a, b, "parameter {name} differs from an in-process run");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sigint_mid_run_leaves_a_checkpoint_and_whole_metrics() {
    let dir = temp_dir("sigint");
    let child = Command::new(BIN)
        .args(["mlp", "--steps", "10000000", "--quiet"])
        .arg("--out")
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait (bounded) until training has logged some steps.
    let t0 = Instant::now();
    while std::fs::read_to_string(dir.join("metrics.jsonl")).map_or(0, |s| s.lines().count()) < 20 {
        assert!(t0.elapsed() < Duration::from_secs(120), "no metrics after 120 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let kill = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "an interrupted run must exit non-zero");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&dir.display().to_string()), "it should say where the files are: {stderr}");
    let latest = Checkpoint::latest(&dir).unwrap().expect("a checkpoint after SIGINT");
    let ck = Checkpoint::load(&latest).unwrap();
    let m = metrics(&dir);
    let last_train = m.iter().rfind(|r| r["kind"] == "train").unwrap();
    assert_eq!(last_train["step"].as_u64().unwrap(), ck.step, "metrics end at the checkpoint's step");
    assert!(ck.param("layers.0.weight").is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unusable_out_directories_are_one_line_errors() {
    let dir = temp_dir("busy");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), "mine").unwrap();
    let out = Command::new(BIN).args(["mlp", "--steps", "5"]).arg("--out").arg(&dir).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.starts_with("error:") && err.contains("--force"), "{err}");
    let file = dir.join("notes.txt");
    let out = Command::new(BIN).args(["mlp", "--steps", "5"]).arg("--out").arg(&file).output().unwrap();
    assert!(!out.status.success());
    assert_eq!(String::from_utf8(out.stderr).unwrap().trim().lines().count(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}
