//! `--resume` is bit for bit: a run stopped at step N (`--stop-after N`) and resumed to
//! 2N writes the same metrics (but wall-clock times) and the same final parameters,
//! optimiser state and RNG streams as a straight 2N run with the same seed and threads.
#![cfg(unix)]

mod run_common;
use run_common::*;

fn stopped_then_resumed(args: &[String], tag: &str, stop: u64, total: u64) {
    let straight = temp_dir(&format!("{tag}-straight"));
    ok(&run(args, &["--out", straight.to_str().unwrap()], None));
    let parted = temp_dir(&format!("{tag}-parted"));
    let err = ok(&run(args, &["--out", parted.to_str().unwrap(), "--stop-after", &stop.to_string()], None));
    assert!(!err.contains("error"), "{err}");
    assert_eq!(ckpt_steps(&parted).last(), Some(&stop), "the stop writes a checkpoint");
    assert!(!parted.join("summary.json").exists(), "a stopped run has no summary yet");
    let err = ok(&run(args, &["--resume", parted.to_str().unwrap()], None));
    assert!(err.contains("resuming from") && err.contains(&format!("(step {stop})")), "{err}");
    assert_same_run(&straight, &parted, total);
    for d in [straight, parted] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn fprnn_stopped_at_n_and_resumed_to_2n_equals_a_straight_2n_run() {
    // Step 6 is a validation step (every 3): its eval record is kept exactly once.
    stopped_then_resumed(&fprnn_args(12), "fprnn", 6, 12);
}

#[test]
fn fprnn_stopped_off_the_validation_grid_resumes_bit_for_bit() {
    stopped_then_resumed(&fprnn_args(10), "fprnn-odd", 5, 10);
}

#[test]
fn fprnn_with_a_random_lmax_resumes_bit_for_bit() {
    // The ℓ_max stream is drawn every batch: a resume that restarted it would change the
    // solver's caps, hence the losses, after the stop.
    let mut args = fprnn_args(10);
    args.extend(["--lmax-dist".to_string(), "code".to_string()]);
    stopped_then_resumed(&args, "fprnn-lmax", 5, 10);
}

#[test]
fn dino_stopped_at_an_epoch_end_and_resumed_equals_a_straight_run() {
    // 4 steps per epoch: stop after epoch 2 of 4.
    stopped_then_resumed(&dino_args(4), "dino", 8, 16);
}

#[test]
fn dino_stopped_mid_epoch_resumes_to_the_same_parameters() {
    let args = dino_args(3);
    let straight = temp_dir("dino-mid-straight");
    ok(&run(&args, &["--out", straight.to_str().unwrap()], None));
    let parted = temp_dir("dino-mid-parted");
    ok(&run(&args, &["--out", parted.to_str().unwrap(), "--stop-after", "6"], None));
    ok(&run(&args, &["--out", parted.to_str().unwrap(), "--resume"], None));
    // Parameters, AdamW state, center and streams are bit-identical ...
    let (a, b) = (ckpt_bits(&straight.join("ckpt-12.safetensors")), ckpt_bits(&parted.join("ckpt-12.safetensors")));
    assert_eq!(a, b);
    // ... and the metrics are too, except the evaluation of the partial epoch that the
    // stop itself ran (documented in the README).
    let (ma, mb) = (metrics(&straight), metrics(&parted));
    let extra: Vec<_> = mb.iter().filter(|r| !ma.contains(r)).collect();
    assert_eq!(extra.len(), 1, "{extra:?}");
    assert_eq!((extra[0]["kind"].as_str(), extra[0]["step"].as_u64()), (Some("eval"), Some(6)));
    let without: Vec<_> = mb.iter().filter(|r| ma.contains(r)).cloned().collect();
    assert_eq!(without, ma);
    for d in [straight, parted] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn mlp_stopped_and_resumed_equals_a_straight_run() {
    stopped_then_resumed(&args("mlp --steps 40 --hidden 16 --threads 1 --quiet"), "mlp", 17, 40);
}

#[test]
fn resume_names_one_directory() {
    let a = temp_dir("resume-a");
    let b = temp_dir("resume-b");
    let out = run(&fprnn_args(2), &["--resume", a.to_str().unwrap(), "--out", b.to_str().unwrap()], None);
    one_line_failure(&out, &["--resume", "different directories"]);
    let out = run(&fprnn_args(2), &["--resume"], None);
    one_line_failure(&out, &["--resume", "needs --out DIR"]);
    let out = run(&fprnn_args(2), &["--resume", a.to_str().unwrap(), "--force"], None);
    one_line_failure(&out, &["--force", "--resume"]);
}
