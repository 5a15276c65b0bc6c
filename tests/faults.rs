//! Faults and bad input, end to end through the binary: a corrupt or truncated newest
//! checkpoint, a full disk during a checkpoint write, SIGKILL during one, a NaN loss or
//! gradient, a checkpoint of another model, missing or malformed data files, unusable
//! flags. Each is a one-line error and a non-zero exit (or, for `--resume`, a fallback
//! that says so), and no existing checkpoint is ever damaged: the run resumed afterwards
//! still equals a straight run bit for bit.
#![cfg(unix)]

mod run_common;
use fixpoint::run::Checkpoint;
use run_common::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// A straight 12-step fprnn run to compare against.
fn straight() -> std::path::PathBuf {
    let d = temp_dir("straight");
    ok(&run(&fprnn_args(12), &["--out", d.to_str().unwrap()], None));
    d
}

/// A 12-step fprnn run with checkpoints every 3 steps, stopped after 6 (ckpt-3, ckpt-6).
fn stopped_at_6(tag: &str) -> std::path::PathBuf {
    let d = temp_dir(tag);
    ok(&run(&fprnn_args(12), &["--out", d.to_str().unwrap(), "--ckpt-every", "3", "--stop-after", "6"], None));
    assert_eq!(ckpt_steps(&d), [3, 6]);
    d
}

fn resume(d: &Path, fault: Option<&str>) -> std::process::Output {
    run(&fprnn_args(12), &["--resume", d.to_str().unwrap(), "--ckpt-every", "3"], fault)
}

/// Resume `d` without faults, check it ends as the straight run `reference` did, and
/// remove it.
fn resume_matches_straight(reference: &Path, d: std::path::PathBuf) {
    ok(&resume(&d, None));
    assert_same_run(reference, &d, 12);
    std::fs::remove_dir_all(d).unwrap();
}

fn bytes_of(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

fn no_temp_files(d: &Path) {
    let tmp: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(tmp.is_empty(), "temporary files left: {tmp:?}");
}

#[test]
fn a_corrupt_or_truncated_newest_checkpoint_falls_back_to_the_previous_one() {
    let reference = straight();
    for damage in ["flip", "truncate"] {
        let d = stopped_at_6(damage);
        let p = d.join("ckpt-6.safetensors");
        let mut b = bytes_of(&p);
        match damage {
            // A byte of tensor data: safetensors cannot see it, the checksum does.
            "flip" => {
                let n = b.len();
                b[n - 100] ^= 0x40;
            }
            _ => b.truncate(b.len() / 2),
        }
        std::fs::write(&p, &b).unwrap();
        let e = Checkpoint::load(&p).unwrap_err().to_string();
        assert!(e.contains("ckpt-6.safetensors") && !e.contains('\n'), "{e}");
        if damage == "flip" {
            assert!(e.contains("checksum"), "{e}");
        }
        let err = ok(&resume(&d, None));
        assert!(err.contains("skipping") && err.contains("ckpt-6.safetensors"), "{err}");
        assert!(err.contains("falling back to") && err.contains("ckpt-3.safetensors"), "{err}");
        assert!(err.contains("(step 3)"), "{err}");
        assert_same_run(&reference, &d, 12);
        std::fs::remove_dir_all(d).unwrap();
    }
    std::fs::remove_dir_all(reference).unwrap();
}

#[test]
fn no_valid_checkpoint_is_a_one_line_error() {
    let d = stopped_at_6("none-valid");
    for s in [3, 6] {
        std::fs::write(d.join(format!("ckpt-{s}.safetensors")), b"not a checkpoint").unwrap();
    }
    one_line_failure(
        &resume(&d, None),
        &["no valid checkpoint", "ckpt-6.safetensors", "ckpt-3.safetensors", "--force"],
    );
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn a_full_disk_during_a_checkpoint_write_loses_nothing() {
    let reference = straight();
    let d = stopped_at_6("enospc");
    let before: Vec<Vec<u8>> = [3, 6].iter().map(|s| bytes_of(&d.join(format!("ckpt-{s}.safetensors")))).collect();
    // The resumed run fails writing ckpt-9.
    let out = resume(&d, Some("ckpt-enospc@9"));
    one_line_failure(&out, &["ckpt-9.safetensors", "No space left on device"]);
    assert_eq!(ckpt_steps(&d), [3, 6]);
    let after: Vec<Vec<u8>> = [3, 6].iter().map(|s| bytes_of(&d.join(format!("ckpt-{s}.safetensors")))).collect();
    assert!(before == after, "an existing checkpoint changed");
    no_temp_files(&d);
    // Space again: the run resumes from ckpt-6 and ends as the straight run does.
    resume_matches_straight(&reference, d);
    std::fs::remove_dir_all(reference).unwrap();
}

#[test]
fn sigkill_during_a_checkpoint_write_loses_nothing() {
    let reference = straight();
    let d = stopped_at_6("sigkill");
    let before = bytes_of(&d.join("ckpt-6.safetensors"));
    // The write of ckpt-9 stops half-way for 30 s; kill the process then.
    let mut child = std::process::Command::new(BIN)
        .args(fprnn_args(12))
        .args(["--resume", d.to_str().unwrap(), "--ckpt-every", "3"])
        .env("FIXPOINT_FAULT", "ckpt-slow@9")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let tmp = d.join(".ckpt-9.tmp.safetensors");
    let t0 = Instant::now();
    while !tmp.exists() {
        assert!(t0.elapsed() < Duration::from_secs(120), "the checkpoint write never started");
        assert!(child.try_wait().unwrap().is_none(), "the run ended before the write");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert_eq!(ckpt_steps(&d), [3, 6], "a half-written checkpoint must not count");
    assert!(before == bytes_of(&d.join("ckpt-6.safetensors")));
    // The resume ignores (and later removes) the temporary file.
    resume_matches_straight(&reference, d);
    std::fs::remove_dir_all(reference).unwrap();
}

#[test]
fn a_nan_gradient_or_loss_stops_the_run_naming_step_and_parameter() {
    for (fault, what, param) in [
        ("nan-grad@8", "gradient is not finite", "first parameter affected: embedding.weight (gradient)"),
        ("nan-loss@8", "the loss is NaN", "every parameter and gradient is finite"),
    ] {
        let d = stopped_at_6(&format!("nan-{}", &fault[..8]));
        let before = bytes_of(&d.join("ckpt-6.safetensors"));
        let out = resume(&d, Some(fault));
        one_line_failure(&out, &["diverged at step 8", what, param, "lower the learning rate"]);
        assert_eq!(ckpt_steps(&d), [3, 6], "no checkpoint of the diverged state");
        assert!(before == bytes_of(&d.join("ckpt-6.safetensors")));
        let steps: Vec<u64> = metrics(&d).iter().filter_map(|r| r["step"].as_u64()).collect();
        assert_eq!(steps.iter().max(), Some(&7), "step 8 is not logged");
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn a_checkpoint_of_another_model_is_refused_naming_the_tensor() {
    let d = stopped_at_6("other-model");
    let mut args = fprnn_args(12);
    let i = args.iter().position(|a| a == "16").unwrap();
    args[i] = "24".into(); // --d-model 24
    let out = run(&args, &["--resume", d.to_str().unwrap()], None);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let last = e.lines().last().unwrap();
    assert!(last.contains("ckpt-6.safetensors") && last.contains("parameter \"embedding.weight\""), "{e}");
    assert!(last.contains("[24, 16] in the checkpoint but [24, 24] in the model"), "{e}");
    assert!(e.contains("warning: the configuration differs") && e.contains("d_model"), "{e}");
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn missing_unreadable_and_malformed_data_are_one_line_errors() {
    let d = temp_dir("data");
    std::fs::create_dir_all(&d).unwrap();
    let dino = |data: &str, dir: &Path| {
        let mut a = dino_args(1);
        a.splice(1..3, ["--data".to_string(), data.to_string(), "--data-dir".into(), dir.display().to_string()]);
        run(&a, &["--out", d.join(format!("run-{data}")).to_str().unwrap()], None)
    };
    // Missing directory.
    one_line_failure(&dino("fashion-mnist", Path::new("/nonexistent/fixpoint")), &["/nonexistent/fixpoint"]);
    // Files that are not what they claim: garbage IDX (gzip) and CIFAR-10 batches.
    for f in ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz"] {
        std::fs::write(d.join(f), b"\x1f\x8b garbage").unwrap();
    }
    std::fs::write(d.join("t10k-labels-idx1-ubyte.gz"), b"").unwrap();
    one_line_failure(&dino("fashion-mnist", &d), &["idx"]);
    // CIFAR-10: a batch that is a directory (unreadable), then one cut short.
    std::fs::create_dir_all(d.join("data_batch_1.bin")).unwrap();
    for i in 2..=5 {
        std::fs::write(d.join(format!("data_batch_{i}.bin")), vec![7u8; 3073 * 3]).unwrap();
    }
    std::fs::write(d.join("test_batch.bin"), vec![7u8; 3073]).unwrap();
    one_line_failure(&dino("cifar10", &d), &["data_batch_1.bin", "directory"]);
    std::fs::remove_dir(d.join("data_batch_1.bin")).unwrap();
    std::fs::write(d.join("data_batch_1.bin"), vec![7u8; 3073 * 2 + 5]).unwrap();
    one_line_failure(&dino("cifar10", &d), &["data_batch_1.bin", "6151"]);
    assert!(!d.join("run-fashion-mnist").exists() && !d.join("run-cifar10").exists(), "no run dir for bad data");
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn invalid_flags_are_one_line_errors() {
    let d = temp_dir("flags");
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec!["--force", "--resume"], vec!["--force"]),
        (vec!["--stop-after", "x"], vec!["--stop-after"]),
        (vec!["--ckpt-every", "x"], vec!["--ckpt-every"]),
        (vec!["--steps", "0"], vec!["steps"]),
        (vec!["--lr", "nan"], vec!["lr"]),
        // Found by hand-fuzzing the command line: these overflowed a buffer's capacity
        // and panicked before the limits in src/train/mod.rs.
        (vec!["--d-inner", "4294967296"], vec!["d_inner 4294967296 exceeds the limit"]),
        // ... and these ran the machine out of memory.
        (vec!["--train-len", "18446744073709551615"], vec!["train length 18446744073709551615 exceeds"]),
        (vec!["--eval-lengths", "4,18446744073709551615"], vec!["evaluation length 18446744073709551615 exceeds"]),
        (
            vec!["--train-len", "1000000", "--d-inner", "128"],
            vec!["batch 8 x length 1000001 x width 128", "lower one of"],
        ),
    ];
    for (extra, needles) in cases {
        let mut e = extra.clone();
        e.extend(["--out", d.to_str().unwrap()]);
        one_line_failure(&run(&fprnn_args(4), &e, None), &needles);
    }
    // --out is a file; --resume of a directory without checkpoints.
    std::fs::write(std::env::temp_dir().join("fixpoint-rel-a-file"), b"x").unwrap();
    one_line_failure(
        &run(&fprnn_args(4), &["--out", std::env::temp_dir().join("fixpoint-rel-a-file").to_str().unwrap()], None),
        &["not a directory"],
    );
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("notes.txt"), b"x").unwrap();
    one_line_failure(&run(&fprnn_args(4), &["--resume", d.to_str().unwrap()], None), &["no checkpoint", "--force"]);
    let huge = [
        (args("mlp --steps 18446744073709551615 --quiet"), "steps 18446744073709551615 exceed the limit"),
        (
            args("fprnn --task a4 --model fp-rnn --batch 18446744073709551615 --quiet"),
            "batch 18446744073709551615 exceeds",
        ),
        (args("mlp --hidden 8,18446744073709551615 --quiet"), "hidden size 18446744073709551615 exceeds"),
        (args("dino --data embedded --out-dim 18446744073709551615 --quiet"), "out dim 18446744073709551615 exceeds"),
        // Each size under the per-size limit, the student over the parameter limit.
        (args("dino --data embedded --mlp-hidden 1000000,1000000 --quiet"), "the student would have about"),
        (
            args("dino --data embedded --student vit --vit-dim 18446744073709551615 --quiet"),
            "vit dim 18446744073709551615 exceeds",
        ),
        (args("dino --data embedded --student vgg11 --width-mult 100 --quiet"), "width mult 100 exceeds"),
    ];
    let fresh = temp_dir("flags-huge");
    for (a, needle) in huge {
        one_line_failure(&run(&a, &["--out", fresh.to_str().unwrap()], None), &[needle]);
    }
    assert!(!fresh.exists(), "a refused config leaves no run directory");
    std::fs::remove_dir_all(d).unwrap();
}

mod validation {
    use fixpoint::nn::{Linear, Module};
    use fixpoint::rng::Rng;
    use fixpoint::run::Checkpoint;
    use fixpoint::{Error, Tensor};

    fn model(out: usize) -> Linear {
        Linear::new(3, out, true, &mut Rng::new(1).stream("init"))
    }

    fn ckpt_of(m: &Linear) -> Checkpoint {
        let mut ck = Checkpoint::new(5, serde_json::json!({}));
        for (n, p) in m.params() {
            ck = ck.with_param(n, p);
        }
        ck
    }

    fn refused(ck: &Checkpoint, needles: &[&str]) {
        let mut m = model(2);
        let before: Vec<Vec<f32>> = m.params().iter().map(|(_, p)| p.to_vec()).collect();
        let e = ck.restore_params(&mut m).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { op: "checkpoint", .. }), "{e:?}");
        let text = e.to_string();
        for n in needles {
            assert!(text.contains(n), "{n:?} not in {text}");
        }
        let after: Vec<Vec<f32>> = m.params().iter().map(|(_, p)| p.to_vec()).collect();
        assert_eq!(before, after, "a refused checkpoint must leave the model untouched");
    }

    #[test]
    fn a_missing_extra_or_mismatched_tensor_is_named() {
        let src = model(2);
        let good = Checkpoint::from_bytes(&ckpt_of(&src).to_bytes().unwrap(), "good.safetensors").unwrap();
        let mut m = Linear::new(3, 2, true, &mut Rng::new(9).stream("init"));
        good.restore_params(&mut m).unwrap();
        let values = |l: &Linear| l.params().iter().map(|(_, p)| p.to_vec()).collect::<Vec<_>>();
        assert_eq!(values(&m), values(&src));

        let mut missing = good.clone();
        missing.params.retain(|(n, _)| n != "bias");
        refused(&missing, &["good.safetensors", "\"bias\" is missing"]);
        let mut extra = good.clone();
        extra.params.push(("head.weight".into(), Tensor::zeros([2, 2])));
        refused(&extra, &["\"head.weight\" is not in the model"]);
        let other = ckpt_of(&model(4));
        refused(&other, &["\"weight\" has shape [3, 4] in the checkpoint but [3, 2] in the model"]);
        let mut optim = good.clone();
        optim.optim.push(("weight.exp_avg".into(), Tensor::zeros([5])));
        refused(&optim, &["optimiser state \"weight.exp_avg\" has 5 values but parameter \"weight\" has 6"]);
    }

    #[test]
    fn a_tensor_of_another_dtype_is_refused_with_its_name() {
        use safetensors::tensor::{Dtype, TensorView};
        let ck = ckpt_of(&model(2));
        let bytes = ck.to_bytes().unwrap();
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let mut meta = header.metadata().clone().unwrap();
        meta.remove("checksum");
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let f64s: Vec<u8> = [0f64; 6].iter().flat_map(|v| v.to_le_bytes()).collect();
        let bias = st.tensor("param.bias").unwrap();
        let views = vec![
            ("param.weight".to_string(), TensorView::new(Dtype::F64, vec![3, 2], &f64s).unwrap()),
            ("param.bias".to_string(), bias),
        ];
        let bad = safetensors::serialize(views, Some(meta)).unwrap();
        let e = Checkpoint::from_bytes(&bad, "f64.safetensors").unwrap_err().to_string();
        assert!(e.contains("f64.safetensors") && e.contains("param.weight") && e.contains("F64"), "{e}");
    }
}
