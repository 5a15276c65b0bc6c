//! The harness in a real process (`harness_demo`): SIGINT or SIGTERM mid-run leaves a
//! loadable checkpoint and a complete metrics.jsonl and exits non-zero; a second SIGINT
//! exits at once without damaging what was written; unusable `--out`s are one-line errors.
#![cfg(unix)]

use fixpoint::run::{Checkpoint, EXIT_INTERRUPTED};
use serde_json::Value;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

const DEMO: &str = env!("CARGO_BIN_EXE_harness_demo");
/// Only a guard against a hung child; nothing asserts on time.
const HANG: Duration = Duration::from_secs(120);

fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let p = std::env::temp_dir().join(format!("fixpoint-sig-{tag}-{}-{nanos}", std::process::id()));
    fs::create_dir_all(&p).unwrap();
    p
}

/// Spawn the demo with stderr piped (so progress is plain lines) and forward its lines.
fn spawn(args: &[&str]) -> (Child, Receiver<String>) {
    let mut child = Command::new(DEMO)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Collect lines until one satisfies `pred`; panics (after killing the child) on a hang.
fn wait_for(child: &mut Child, rx: &Receiver<String>, seen: &mut Vec<String>, pred: impl Fn(&str) -> bool) {
    loop {
        match rx.recv_timeout(HANG) {
            Ok(line) => {
                let hit = pred(&line);
                seen.push(line);
                if hit {
                    return;
                }
            }
            Err(_) => {
                let _ = child.kill();
                panic!("the demo stopped or hung before the expected line; it printed:\n{}", seen.join("\n"));
            }
        }
    }
}

fn signal(child: &Child, sig: &str) {
    // The shell's built-in `kill`: no dependency on a procps binary or on libc bindings.
    let ok = Command::new("sh").args(["-c", &format!("kill {sig} {}", child.id())]).status().unwrap().success();
    assert!(ok, "kill {sig} failed");
}

fn finish(mut child: Child, rx: Receiver<String>, seen: &mut Vec<String>) -> ExitStatus {
    let status = child.wait().unwrap();
    seen.extend(rx.iter()); // the reader thread ends at EOF
    status
}

/// Every line of metrics.jsonl is a JSON object; returns the train records' steps.
fn train_steps(dir: &Path) -> Vec<u64> {
    let text = fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    assert!(text.ends_with('\n'), "the last metrics line is cut short");
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("bad metrics line {l:?}: {e}")))
        .filter(|r| r["kind"] == "train")
        .map(|r| r["step"].as_u64().unwrap())
        .collect()
}

fn interrupt_mid_run(sig: &str) {
    let dir = temp_dir(sig.trim_start_matches('-'));
    let out = dir.join("run");
    let args = ["--out", out.to_str().unwrap(), "--steps", "1000000", "--sleep-ms", "2", "--ckpt-every", "25"];
    let (mut child, rx) = spawn(&[&args[..], &["--progress-every", "10"]].concat());
    let mut seen = Vec::new();
    // Three plain progress lines (stderr is not a terminal), so some steps are done.
    for _ in 0..3 {
        wait_for(&mut child, &rx, &mut seen, |l| l.starts_with("step "));
    }
    assert!(seen.iter().any(|l| l.contains("steps/s") && l.contains("ETA")), "{seen:?}");
    signal(&child, sig);
    let status = finish(child, rx, &mut seen);
    let text = seen.join("\n");
    assert_eq!(status.code(), Some(EXIT_INTERRUPTED), "{text}");
    assert!(text.contains("interrupted at step") && text.contains(out.to_str().unwrap()), "{text}");

    let latest = Checkpoint::latest(&out).unwrap().expect("a checkpoint");
    let ck = Checkpoint::load(&latest).unwrap();
    assert!(text.contains(latest.to_str().unwrap()), "the message names the checkpoint: {text}");
    let steps = train_steps(&out);
    assert_eq!(steps, (1..=ck.step).collect::<Vec<_>>(), "metrics end at the checkpoint's step");
    assert!(ck.step >= 30);
    assert_eq!(ck.param("w").unwrap().shape(), [3, 1]);
    assert!(ck.rng("noise").is_ok() && ck.rng("shuffle").is_ok());
    assert!(!out.join("summary.json").exists());
    assert!(out.join("loss.png").exists());
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sigint_mid_run_leaves_a_checkpoint_and_complete_metrics() {
    interrupt_mid_run("-INT");
}

#[test]
fn sigterm_mid_run_leaves_a_checkpoint_and_complete_metrics() {
    interrupt_mid_run("-TERM");
}

#[test]
fn a_second_sigint_exits_at_once_and_keeps_what_was_written() {
    let dir = temp_dir("twice");
    let out = dir.join("run");
    // After the first signal the demo lingers (a slow final step) before its checkpoint.
    let args = ["--out", out.to_str().unwrap(), "--steps", "1000000", "--sleep-ms", "2", "--ckpt-every", "10"];
    let (mut child, rx) = spawn(&[&args[..], &["--progress-every", "10", "--linger-ms", "100000"]].concat());
    let mut seen = Vec::new();
    for _ in 0..3 {
        wait_for(&mut child, &rx, &mut seen, |l| l.starts_with("step "));
    }
    signal(&child, "-INT");
    wait_for(&mut child, &rx, &mut seen, |l| l.starts_with("interrupted: finishing"));
    signal(&child, "-INT");
    let status = finish(child, rx, &mut seen);
    let text = seen.join("\n");
    assert_eq!(status.code(), Some(EXIT_INTERRUPTED), "{text}");
    assert!(text.contains("interrupted again"), "{text}");
    assert!(!text.contains("interrupted at step"), "the run did not stop at once: {text}");
    // The periodic checkpoints and every metrics line written so far are intact.
    let ckpts = Checkpoint::list(&out).unwrap();
    assert!(!ckpts.is_empty());
    for (step, p) in &ckpts {
        assert_eq!(Checkpoint::load(p).unwrap().step, *step);
    }
    let steps = train_steps(&out);
    assert!(steps.len() as u64 >= ckpts.last().unwrap().0);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn stopped_and_resumed_process_matches_an_uninterrupted_one() {
    let dir = temp_dir("resume");
    let (a, b) = (dir.join("a"), dir.join("b"));
    let run = |args: &[&str]| Command::new(DEMO).args(args).stderr(Stdio::null()).output().unwrap();
    let full = run(&["--out", a.to_str().unwrap(), "--steps", "60", "--json"]);
    assert!(full.status.success());
    let stopped = run(&["--out", b.to_str().unwrap(), "--steps", "60", "--stop-at", "17", "--json"]);
    assert_eq!(stopped.status.code(), Some(EXIT_INTERRUPTED));
    assert!(stopped.stdout.is_empty(), "an interrupted run prints no summary");
    let resumed = run(&["--out", b.to_str().unwrap(), "--steps", "60", "--resume", "--json"]);
    assert!(resumed.status.success());
    // The --json line, summary.json and the final parameters agree bit for bit.
    assert_eq!(String::from_utf8_lossy(&full.stdout), String::from_utf8_lossy(&resumed.stdout));
    let line = String::from_utf8(resumed.stdout).unwrap();
    assert_eq!(fs::read_to_string(b.join("summary.json")).unwrap(), line);
    let (ca, cb) = (
        Checkpoint::load(&a.join("ckpt-60.safetensors")).unwrap(),
        Checkpoint::load(&b.join("ckpt-60.safetensors")).unwrap(),
    );
    for name in ["w", "b"] {
        let bits = |c: &Checkpoint| c.param(name).unwrap().to_vec().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&ca), bits(&cb), "{name}");
    }
    assert_eq!(train_steps(&b), (1..=60).collect::<Vec<_>>());
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_killed_run_resumes_from_its_last_periodic_checkpoint() {
    let dir = temp_dir("kill");
    let (a, b) = (dir.join("a"), dir.join("b"));
    let args = ["--out", b.to_str().unwrap(), "--steps", "60", "--sleep-ms", "20", "--ckpt-every", "10"];
    let (mut child, rx) = spawn(&[&args[..], &["--progress-every", "1"]].concat());
    let mut seen = Vec::new();
    wait_for(&mut child, &rx, &mut seen, |l| l.starts_with("step 25/"));
    signal(&child, "-KILL"); // no chance to clean up: metrics run past the last checkpoint
    let status = finish(child, rx, &mut seen);
    assert_eq!(status.code(), None, "killed by a signal");
    let ck_step = Checkpoint::list(&b).unwrap().last().expect("a periodic checkpoint").0;
    assert!(train_steps(&b).len() as u64 >= 25 && ck_step >= 20);

    let run = |args: &[&str]| Command::new(DEMO).args(args).stderr(Stdio::null()).output().unwrap();
    let full = run(&["--out", a.to_str().unwrap(), "--steps", "60", "--json"]);
    let resumed = run(&["--out", b.to_str().unwrap(), "--steps", "60", "--resume", "--json"]);
    assert!(full.status.success() && resumed.status.success());
    assert_eq!(String::from_utf8_lossy(&full.stdout), String::from_utf8_lossy(&resumed.stdout));
    assert_eq!(train_steps(&b), (1..=60).collect::<Vec<_>>(), "records after the checkpoint are redone, not doubled");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unusable_out_is_a_one_line_error_and_exit_status_1() {
    let dir = temp_dir("badout");
    fs::write(dir.join("notes.txt"), "x").unwrap();
    let file = dir.join("notes.txt");
    for (out, needle) in [(dir.clone(), "--force"), (file.join("sub"), "cannot create")] {
        let o = Command::new(DEMO).args(["--out", out.to_str().unwrap(), "--steps", "3"]).output().unwrap();
        let err = String::from_utf8(o.stderr).unwrap();
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("error: ") && err.contains(needle), "{err}");
    }
    assert_eq!(fs::read_to_string(dir.join("notes.txt")).unwrap(), "x");
    fs::remove_dir_all(&dir).unwrap();
}
