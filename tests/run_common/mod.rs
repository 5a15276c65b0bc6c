//! Helpers of the resume and fault tests: run the binary on tiny settings, read run
//! directories, compare them bit for bit.
#![allow(dead_code)]

use fixpoint::run::{Checkpoint, Record, read_metrics};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_fixpoint");

/// A fresh directory path under the system temp dir (not created).
pub fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    std::env::temp_dir().join(format!("fixpoint-rel-{tag}-{}-{nanos}", std::process::id()))
}

/// Whitespace-separated arguments as owned strings.
pub fn args(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_string).collect()
}

/// A tiny `fprnn` run of `steps` steps (validation every 3).
pub fn fprnn_args(steps: u64) -> Vec<String> {
    args(&format!(
        "fprnn --task a4 --model fp-rnn --mixer householder:2 --d-model 16 --steps {steps} --batch 8 --warmup 1 \
         --eval-lengths 2,4 --eval-count 5 --val-every 3 --val-count 4 --threads 1 --quiet"
    ))
}

/// A tiny `dino` run on the embedded set: 200 images in batches of 64 (4 steps per
/// epoch), DINO centering on (so the center is part of the state).
pub fn dino_args(epochs: u64) -> Vec<String> {
    args(&format!(
        "dino --data embedded --train-size 200 --probe-train-size 200 --probe-test-size 100 --out-dim 64 \
         --epochs {epochs} --mlp-hidden 32 --embed-dim 16 --alpha 0.3 --batch-size 64 --center-momentum 0.9 \
         --threads 1 --quiet"
    ))
}

/// Run the binary with `args` plus `extra`, and `FIXPOINT_FAULT=fault` when given.
pub fn run(args: &[String], extra: &[&str], fault: Option<&str>) -> Output {
    let mut c = Command::new(BIN);
    c.args(args).args(extra).current_dir(std::env::temp_dir()).env_remove("FIXPOINT_FAULT");
    if let Some(f) = fault {
        c.env("FIXPOINT_FAULT", f);
    }
    c.output().expect("run the binary")
}

/// Assert success and return stderr.
pub fn ok(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "exit {:?}: {err}", out.status.code());
    err
}

/// Assert a failure whose stderr has exactly one `error:` line (other lines may only be
/// the notes of a resume: `resuming from ...`, `warning: ...`), holding every needle;
/// returns that line.
pub fn one_line_failure(out: &Output, needles: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
    assert!(!out.status.success(), "expected a failure, got success; stderr: {err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "expected one error line, got: {err}");
    for l in err.lines().filter(|l| !l.trim().is_empty() && !l.starts_with("error:")) {
        assert!(l.starts_with("resuming from") || l.starts_with("warning:"), "unexpected line {l:?} in: {err}");
    }
    for n in needles {
        assert!(errors[0].contains(n), "{n:?} not in: {err}");
    }
    errors[0].to_string()
}

/// `metrics.jsonl` without the wall-clock `time_s` field.
pub fn metrics(dir: &Path) -> Vec<Record> {
    let mut recs = read_metrics(&dir.join("metrics.jsonl")).unwrap();
    for r in &mut recs {
        r.remove("time_s");
    }
    recs
}

/// A checkpoint's contents in comparable form.
#[derive(Debug, PartialEq)]
pub struct CkptBits {
    pub step: u64,
    pub cursor: u64,
    /// Every tensor as (prefixed name, shape, f32 bits).
    pub tensors: Vec<(String, Vec<usize>, Vec<u32>)>,
    pub rng: Vec<(String, [u64; 5])>,
}

/// Every tensor and RNG stream of a checkpoint, bit for bit.
pub fn ckpt_bits(path: &Path) -> CkptBits {
    let ck = Checkpoint::load(path).unwrap_or_else(|e| panic!("{e}"));
    let bits = |list: &[(String, fixpoint::Tensor)], prefix: &str| -> Vec<(String, Vec<usize>, Vec<u32>)> {
        list.iter()
            .map(|(n, t)| {
                (format!("{prefix}{n}"), t.shape().to_vec(), t.to_vec().iter().map(|v| v.to_bits()).collect())
            })
            .collect()
    };
    let mut tensors = bits(&ck.params, "param.");
    tensors.extend(bits(&ck.optim, "optim."));
    tensors.extend(bits(&ck.extra, "extra."));
    CkptBits { step: ck.step, cursor: ck.cursor, tensors, rng: ck.rng.clone() }
}

/// Assert that two run directories hold the same metrics (but `time_s`) and the same
/// final checkpoint `ckpt-<step>` bit for bit.
pub fn assert_same_run(a: &Path, b: &Path, step: u64) {
    let (ma, mb) = (metrics(a), metrics(b));
    assert_eq!(ma.len(), mb.len(), "metrics records differ in number");
    for (i, (x, y)) in ma.iter().zip(&mb).enumerate() {
        assert_eq!(x, y, "metrics record {i} differs");
    }
    let name = format!("ckpt-{step}.safetensors");
    let (ca, cb) = (ckpt_bits(&a.join(&name)), ckpt_bits(&b.join(&name)));
    assert!(!ca.tensors.is_empty());
    assert_eq!(ca, cb, "final checkpoints differ");
}

/// The steps of the checkpoints in `dir`.
pub fn ckpt_steps(dir: &Path) -> Vec<u64> {
    Checkpoint::list(dir).unwrap().into_iter().map(|(s, _)| s).collect()
}
