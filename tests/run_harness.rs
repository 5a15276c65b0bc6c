//! The run harness in-process: files of a short run, summary = JSON line, checkpoints
//! that load back bit for bit, atomic writes under injected failures, resume equal to an
//! uninterrupted run, one-line errors for unusable `--out` directories, `runs show/plot`.

use fixpoint::run::checkpoint::{self, Checkpoint};
use fixpoint::run::dir::{RunDir, write_atomic, write_atomic_with};
use fixpoint::run::metrics::{MetricsWriter, read_metrics};
use fixpoint::run::{EXIT_INTERRUPTED, ProgressMode, Run, RunOptions, replot, show_run};
use fixpoint::{Rng, Tensor};
use serde_json::{Value, json};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A fresh, empty temporary directory, removed on drop.
struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let p = std::env::temp_dir().join(format!("fixpoint-test-{tag}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn join(&self, s: &str) -> PathBuf {
        self.0.join(s)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn opts(out: &Path) -> RunOptions {
    RunOptions {
        out: Some(out.to_path_buf()),
        progress: ProgressMode::Quiet,
        handle_signals: false,
        ..RunOptions::default()
    }
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec().iter().map(|v| v.to_bits()).collect()
}

enum Outcome {
    Finished { line: String, summary: Value, params: Vec<(String, Vec<u32>)> },
    Interrupted { code: i32 },
}

/// A toy regression trained with the harness: minibatches at a cursor, noise from an RNG
/// stream, SGD with momentum. Everything that changes across steps goes in the checkpoint.
fn toy(o: RunOptions, steps: u64, stop_at: Option<u64>) -> Outcome {
    let config = json!({ "seed": 11, "steps": steps, "lr": 0.1 });
    let mut run = Run::start("toy", config, steps, o).unwrap();
    let mut data_rng = Rng::new(11).stream("data");
    let x: Vec<f32> = (0..32).map(|_| data_rng.normal()).collect(); // 16 rows x 2
    let y: Vec<f32> = (0..16).map(|i| 2.0 * x[2 * i] - x[2 * i + 1] + 0.5).collect();
    let mut w = Tensor::zeros([2, 1]).requires_grad_();
    let mut b = Tensor::zeros([1]).requires_grad_();
    let (mut vw, mut vb) = (vec![0f32; 2], vec![0f32; 1]);
    let mut noise = Rng::new(11).stream("noise");
    let (mut cursor, mut step) = (0usize, 0u64);
    if let Some(ck) = run.take_resumed() {
        w.assign(ck.param("w").unwrap()).unwrap();
        b.assign(ck.param("b").unwrap()).unwrap();
        vw = ck.optim_state("w.v").unwrap().to_vec();
        vb = ck.optim_state("b.v").unwrap().to_vec();
        noise = ck.rng("noise").unwrap();
        cursor = ck.cursor as usize;
        step = ck.step;
        assert_eq!(step, run.start_step());
    }
    let ckpt = |run: &Run, step, w: &Tensor, b: &Tensor, vw: &[f32], vb: &[f32], noise: &Rng, cursor: usize| {
        run.checkpoint(step)
            .with_param("w", w)
            .with_param("b", b)
            .with_optim("w.v", &Tensor::from_slice(vw, [2, 1]).unwrap())
            .with_optim("b.v", &Tensor::from_slice(vb, [1]).unwrap())
            .with_rng("noise", noise)
            .with_cursor(cursor as u64)
    };
    let mut last = 0.0;
    while step < steps {
        let rows = 4;
        let xb = Tensor::from_slice(&x[2 * cursor..2 * (cursor + rows)], [rows, 2]).unwrap();
        let yb: Vec<f32> = y[cursor..cursor + rows].iter().map(|v| v + 0.05 * noise.normal()).collect();
        let yb = Tensor::from_vec(yb, [rows, 1]).unwrap();
        cursor = (cursor + rows) % 16;
        w.zero_grad();
        b.zero_grad();
        let l = xb.matmul(&w).unwrap().add(&b).unwrap().sub(&yb).unwrap().square().mean_all().unwrap();
        l.backward().unwrap();
        for (p, v) in [(&mut w, &mut vw), (&mut b, &mut vb)] {
            let g = p.grad().unwrap().to_vec();
            v.iter_mut().zip(&g).for_each(|(vi, gi)| *vi = 0.9 * *vi + gi);
            p.update_data(|d| d.iter_mut().zip(v.iter()).for_each(|(di, vi)| *di -= 0.1 * vi));
        }
        step += 1;
        last = l.item().unwrap() as f64;
        run.log(step, &[("loss", last), ("lr", 0.1)]).unwrap();
        if step.is_multiple_of(4) {
            run.log_eval(step, &[("loss", last * 0.9), ("accuracy", step as f64 / steps as f64)]).unwrap();
        }
        if stop_at == Some(step) {
            run.interrupt().request();
        }
        if run.interrupted() {
            let ck = ckpt(&run, step, &w, &b, &vw, &vb, &noise, cursor);
            return Outcome::Interrupted { code: run.finish_interrupted(&ck).unwrap() };
        }
        if run.checkpoint_due(step) {
            let ck = ckpt(&run, step, &w, &b, &vw, &vb, &noise, cursor);
            run.save_checkpoint(&ck).unwrap();
        }
    }
    let summary = json!({ "final_loss": last, "steps": step, "w": w.to_vec() });
    let ck = ckpt(&run, step, &w, &b, &vw, &vb, &noise, cursor);
    let line = run.finish(&summary, &ck).unwrap();
    Outcome::Finished { line, summary, params: vec![("w".into(), bits(&w)), ("b".into(), bits(&b))] }
}

fn png_size(path: &Path) -> (u32, u32) {
    let b = fs::read(path).unwrap();
    assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n", "{} is not a PNG", path.display());
    assert_eq!(&b[12..16], b"IHDR");
    (u32::from_be_bytes(b[16..20].try_into().unwrap()), u32::from_be_bytes(b[20..24].try_into().unwrap()))
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}

#[test]
fn short_run_writes_every_file_and_summary_equals_json_line() {
    let tmp = TempDir::new("short");
    let out = tmp.join("run");
    let o = RunOptions { ckpt_every: 5, keep: 2, ..opts(&out) };
    let Outcome::Finished { line, summary, params } = toy(o, 12, None) else { panic!("the run was not interrupted") };

    assert_eq!(
        names_in(&out),
        [
            "accuracy.png",
            "ckpt-10.safetensors",
            "ckpt-12.safetensors",
            "config.json",
            "loss.png",
            "lr.png",
            "metrics.jsonl",
            "summary.json"
        ]
    );
    // summary.json is exactly the line a command prints for --json.
    assert_eq!(fs::read_to_string(out.join("summary.json")).unwrap(), format!("{line}\n"));
    assert_eq!(serde_json::from_str::<Value>(&line).unwrap(), summary);

    let config: Value = serde_json::from_str(&fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["seed"], 11);
    assert_eq!(config["command"], "toy");
    assert_eq!(config["crate_version"], env!("CARGO_PKG_VERSION"));

    // One record per step plus one per evaluation, each with step, wall time and fields.
    let records = read_metrics(&out.join("metrics.jsonl")).unwrap();
    let train: Vec<_> = records.iter().filter(|r| r["kind"] == "train").collect();
    let eval: Vec<_> = records.iter().filter(|r| r["kind"] == "eval").collect();
    assert_eq!(train.iter().map(|r| r["step"].as_u64().unwrap()).collect::<Vec<_>>(), (1..=12).collect::<Vec<_>>());
    assert_eq!(eval.len(), 3);
    for r in &records {
        assert!(r["time_s"].as_f64().unwrap() >= 0.0);
        assert!(r["loss"].is_number());
    }
    assert!(train.iter().all(|r| r["lr"] == 0.1));
    let times: Vec<f64> = records.iter().map(|r| r["time_s"].as_f64().unwrap()).collect();
    assert!(times.windows(2).all(|t| t[0] <= t[1]), "{times:?}");

    // The final checkpoint loads back into identical parameters and carries the config.
    let ck = Checkpoint::load(&out.join("ckpt-12.safetensors")).unwrap();
    assert_eq!(ck.step, 12);
    assert_eq!(ck.config, config);
    for (name, want) in &params {
        assert_eq!(&bits(ck.param(name).unwrap()), want, "{name}");
    }
    let mut fresh = Tensor::zeros([2, 1]).requires_grad_();
    fresh.assign(ck.param("w").unwrap()).unwrap();
    assert_eq!(bits(&fresh), params[0].1);
    assert_eq!(ck.cursor, (12 * 4) % 16);

    for p in ["loss.png", "lr.png", "accuracy.png"] {
        assert_eq!(png_size(&out.join(p)), fixpoint::run::plot::SIZE, "{p}");
    }
}

#[test]
fn interrupted_then_resumed_run_equals_an_uninterrupted_one() {
    let tmp = TempDir::new("resume");
    let (a, b) = (tmp.join("a"), tmp.join("b"));
    let Outcome::Finished { line: line_a, params: params_a, .. } = toy(opts(&a), 30, None) else { panic!() };

    let Outcome::Interrupted { code } = toy(RunOptions { ckpt_every: 5, ..opts(&b) }, 30, Some(13)) else {
        panic!("the stop request was ignored")
    };
    assert_eq!(code, EXIT_INTERRUPTED);
    assert!(!b.join("summary.json").exists());
    assert_eq!(Checkpoint::latest(&b).unwrap(), Some(b.join("ckpt-13.safetensors")));
    assert!(b.join("loss.png").exists(), "plots are drawn for an interrupted run too");
    // A run directory is not silently reused.
    let err = Run::start("toy", json!({}), 30, opts(&b)).unwrap_err().to_string();
    assert!(err.contains("--force") && err.contains("--resume") && !err.contains('\n'), "{err}");

    let Outcome::Finished { line: line_b, params: params_b, .. } =
        toy(RunOptions { resume: true, ..opts(&b) }, 30, None)
    else {
        panic!()
    };
    assert_eq!(params_a, params_b, "resumed parameters differ from the uninterrupted run's");
    assert_eq!(line_a, line_b);
    let steps: Vec<u64> = read_metrics(&b.join("metrics.jsonl"))
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "train")
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, (1..=30).collect::<Vec<_>>());
}

#[test]
fn interruption_after_metrics_past_the_checkpoint_drops_them_on_resume() {
    let tmp = TempDir::new("metrics-resume");
    let path = tmp.join("metrics.jsonl");
    let mut m = MetricsWriter::create(&path).unwrap();
    for s in 1..=10 {
        m.log("train", s, &[("loss", 1.0 / s as f64)]).unwrap();
    }
    m.log("eval", 6, &[("loss", 0.5)]).unwrap();
    drop(m);
    let mut m = MetricsWriter::resume(&path, 6).unwrap();
    assert_eq!(m.records(), 7);
    m.log("train", 7, &[("loss", f64::NAN)]).unwrap();
    let r = read_metrics(&path).unwrap();
    let steps: Vec<u64> = r.iter().map(|r| r["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [1, 2, 3, 4, 5, 6, 6, 7]);
    assert!(r[7]["loss"].is_null(), "NaN must be written as null");
    let t: Vec<f64> = r.iter().map(|r| r["time_s"].as_f64().unwrap()).collect();
    assert!(t[7] >= t[6]);
    // A field may not overwrite what the writer sets.
    assert!(m.log("train", 8, &[("step", 1.0)]).is_err());
}

#[test]
fn read_metrics_skips_only_a_torn_last_line() {
    let tmp = TempDir::new("torn");
    let p = tmp.join("m.jsonl");
    fs::write(&p, "{\"step\":1}\n{\"step\":2}\n{\"step\":3,\"lo").unwrap();
    assert_eq!(read_metrics(&p).unwrap().len(), 2);
    fs::write(&p, "{\"step\":1}\n{\"step\":2,\n{\"step\":3}\n").unwrap();
    let e = read_metrics(&p).unwrap_err().to_string();
    assert!(e.contains("line 2") && !e.contains('\n'), "{e}");
}

fn sample_checkpoint() -> Checkpoint {
    let mut r = Rng::new(5);
    let odd = Tensor::from_vec((0..7 * 65).map(|_| r.normal()).collect(), [7, 65]).unwrap();
    let special = Tensor::from_vec(
        vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, f32::MIN_POSITIVE / 2.0, f32::MAX, 1.0],
        [7, 1, 1],
    )
    .unwrap();
    let transposed = Tensor::from_vec((0..6).map(|i| i as f32).collect(), [2, 3]).unwrap().t().unwrap();
    let mut noise = Rng::new(9).stream("noise");
    noise.normal(); // leaves a cached spare normal in the state
    Checkpoint::new(123, json!({ "seed": 9, "nested": { "a": [1, 2] } }))
        .with_param("layers.0.weight", &odd)
        .with_param("special", &special)
        .with_param("scalar", &Tensor::scalar(-2.5))
        .with_param("view", &transposed)
        .with_param("empty", &Tensor::zeros([0, 3]))
        .with_optim("layers.0.weight.m", &odd.mul_scalar(0.5))
        .with_rng("noise", &noise)
        .with_rng("shuffle", &Rng::new(1))
        .with_cursor(u64::MAX - 1)
        .with_meta("adam_t", "123")
}

#[test]
fn checkpoint_round_trips_bit_for_bit() {
    let tmp = TempDir::new("ckpt");
    let ck = sample_checkpoint();
    let path = ck.save_atomic(&tmp.0, 0).unwrap();
    assert_eq!(path, tmp.join("ckpt-123.safetensors"));
    let back = Checkpoint::load(&path).unwrap();
    assert_eq!(back.step, 123);
    assert_eq!(back.cursor, u64::MAX - 1);
    assert_eq!(back.config, ck.config);
    assert_eq!(back.meta("adam_t").unwrap(), "123");
    let order = |v: &[(String, Tensor)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(order(&back.params), order(&ck.params), "parameter order is kept");
    for (name, t) in ck.params.iter().chain(&ck.optim) {
        let got = back.param(name).or_else(|_| back.optim_state(name)).unwrap();
        assert_eq!(got.shape(), t.shape(), "{name}");
        assert_eq!(bits(got), bits(t), "{name}");
    }
    assert_eq!(back.param("view").unwrap().to_vec(), [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    // RNG streams continue with the same numbers, including a cached normal.
    for (name, _) in &ck.rng {
        let (mut a, mut b) = (ck.rng(name).unwrap(), back.rng(name).unwrap());
        for _ in 0..5 {
            assert_eq!(a.normal().to_bits(), b.normal().to_bits(), "{name}");
        }
    }
    let e = back.param("nope").unwrap_err().to_string();
    assert!(e.contains("nope") && e.contains("layers.0.weight"), "{e}");
    // The file is plain safetensors: a generic reader sees the prefixed names and the metadata.
    let bytes = fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("param.layers.0.weight").unwrap().shape(), [7, 65]);
    assert_eq!(st.tensor("rng.noise").unwrap().dtype(), safetensors::Dtype::U64);
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(meta.metadata().as_ref().unwrap()["format"], checkpoint::FORMAT);
}

#[test]
fn duplicate_names_are_rejected() {
    let t = Tensor::zeros([2]);
    let e = Checkpoint::new(1, Value::Null).with_param("w", &t).with_param("w", &t).to_bytes().unwrap_err();
    assert!(e.to_string().contains("\"w\" appears twice"), "{e}");
}

#[test]
fn damaged_checkpoints_are_errors_not_panics() {
    let bytes = sample_checkpoint().to_bytes().unwrap();
    assert!(Checkpoint::from_bytes(&bytes, "x").is_ok());
    for cut in (0..bytes.len()).step_by(13) {
        let e = Checkpoint::from_bytes(&bytes[..cut], "cut").unwrap_err().to_string();
        assert!(e.starts_with("cut: ") && !e.contains('\n'), "{e}");
    }
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    for i in 0..8 + header_len {
        let mut b = bytes.clone();
        b[i] ^= 0x20;
        let _ = Checkpoint::from_bytes(&b, "flipped"); // Ok or Err, never a panic
    }
    // A safetensors file that is not a checkpoint of ours.
    let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], &[0u8; 4]).unwrap();
    let other = safetensors::serialize([("w", v)], None).unwrap();
    let e = Checkpoint::from_bytes(&other, "other.safetensors").unwrap_err().to_string();
    assert!(e.contains("format"), "{e}");
}

#[test]
fn a_checkpoint_write_failing_part_way_leaves_the_previous_one_intact() {
    let tmp = TempDir::new("fail");
    let old = sample_checkpoint();
    old.save_atomic(&tmp.0, 2).unwrap();
    let before = fs::read(tmp.join("ckpt-123.safetensors")).unwrap();
    let half_then_fail = |f: &mut fs::File, b: &[u8]| {
        f.write_all(&b[..b.len() / 2])?;
        Err(std::io::Error::other("injected failure"))
    };
    // A new step and a rewrite of the same step both fail cleanly.
    for step in [124, 123] {
        let mut new = sample_checkpoint();
        new.step = step;
        new.params[0].1 = Tensor::ones([7, 65]);
        let e = new.save_atomic_with(&tmp.0, 2, half_then_fail).unwrap_err().to_string();
        assert!(e.contains("injected failure") && !e.contains('\n'), "{e}");
        assert_eq!(names_in(&tmp.0), ["ckpt-123.safetensors"], "no partial or temporary file is left");
        assert_eq!(fs::read(tmp.join("ckpt-123.safetensors")).unwrap(), before);
        let back = Checkpoint::load(&tmp.join("ckpt-123.safetensors")).unwrap();
        assert_eq!(bits(back.param("layers.0.weight").unwrap()), bits(&old.params[0].1));
    }
    assert_eq!(Checkpoint::latest(&tmp.0).unwrap(), Some(tmp.join("ckpt-123.safetensors")));
    // The same for the other whole-file writes (summary.json, config.json).
    let s = tmp.join("summary.json");
    write_atomic(&s, b"{\"a\":1}\n").unwrap();
    assert!(
        write_atomic_with(&s, b"{\"a\":2}\n", |f, b| {
            f.write_all(&b[..3])?;
            Err(std::io::Error::other("x"))
        })
        .is_err()
    );
    assert_eq!(fs::read_to_string(&s).unwrap(), "{\"a\":1}\n");
}

#[test]
fn keep_prunes_old_checkpoints_and_latest_ignores_temporaries() {
    let tmp = TempDir::new("keep");
    fs::write(tmp.join(".ckpt-999.tmp.safetensors"), b"partial").unwrap();
    fs::write(tmp.join("ckpt-x.safetensors"), b"not ours").unwrap();
    for step in [5, 10, 15, 20] {
        Checkpoint::new(step, Value::Null).save_atomic(&tmp.0, 2).unwrap();
    }
    let steps: Vec<u64> = Checkpoint::list(&tmp.0).unwrap().into_iter().map(|(s, _)| s).collect();
    assert_eq!(steps, [15, 20]);
    assert_eq!(Checkpoint::latest(&tmp.0).unwrap(), Some(tmp.join("ckpt-20.safetensors")));
    for step in [25, 30] {
        Checkpoint::new(step, Value::Null).save_atomic(&tmp.0, 0).unwrap();
    }
    assert_eq!(Checkpoint::list(&tmp.0).unwrap().len(), 4, "keep = 0 keeps all");
}

fn assert_one_line(e: &fixpoint::Error, needles: &[&str]) {
    let s = e.to_string();
    assert!(!s.contains('\n'), "not one line: {s}");
    for n in needles {
        assert!(s.contains(n), "{s:?} does not mention {n:?}");
    }
}

#[test]
fn unusable_out_directories_are_one_line_errors() {
    let tmp = TempDir::new("out");
    // Non-empty without --force or --resume.
    let full = tmp.join("full");
    fs::create_dir(&full).unwrap();
    fs::write(full.join("config.json"), "{}").unwrap();
    let e = RunDir::create(Some(full.clone()), "mlp", false, false).unwrap_err();
    assert_one_line(&e, &[full.to_str().unwrap(), "not empty", "--force", "--resume"]);
    // --resume without a checkpoint there.
    let e = RunDir::create(Some(full.clone()), "mlp", false, true).unwrap_err();
    assert_one_line(&e, &["no checkpoint"]);
    // --resume needs to know what to resume.
    assert_one_line(&RunDir::create(None, "mlp", false, true).unwrap_err(), &["--resume", "--out"]);
    // Both flags.
    let e = RunDir::create(Some(full.clone()), "mlp", true, true).unwrap_err();
    assert_one_line(&e, &["--force", "--resume"]);
    // A file, and a path below a file: cannot be created, whoever runs the test.
    let file = tmp.join("file");
    fs::write(&file, "x").unwrap();
    assert_one_line(&RunDir::create(Some(file.clone()), "mlp", false, false).unwrap_err(), &["not a directory"]);
    let below = file.join("sub");
    assert_one_line(
        &RunDir::create(Some(below.clone()), "mlp", false, false).unwrap_err(),
        &[below.to_str().unwrap(), "cannot create"],
    );
    // A directory without write permission (root may write anyway; then this case is moot).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let ro = tmp.join("ro");
        fs::create_dir(&ro).unwrap();
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
        if fs::write(ro.join("probe"), "x").is_err() {
            let e = RunDir::create(Some(ro.clone()), "mlp", false, false).unwrap_err();
            assert_one_line(&e, &["not writable"]);
            let e = RunDir::create(Some(ro.join("sub")), "mlp", false, false).unwrap_err();
            assert_one_line(&e, &["cannot create"]);
        }
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o755)).unwrap();
    }
    #[cfg(target_os = "linux")]
    {
        // Not writable even for root.
        let e = RunDir::create(Some(PathBuf::from("/proc/fixpoint-run")), "mlp", false, false).unwrap_err();
        assert_one_line(&e, &["/proc/fixpoint-run"]);
    }
}

#[test]
fn force_removes_only_run_files_and_resume_of_nothing_starts_fresh() {
    let tmp = TempDir::new("force");
    let d = tmp.join("d");
    fs::create_dir(&d).unwrap();
    for f in ["config.json", "metrics.jsonl", "summary.json", "ckpt-3.safetensors", "loss.png", "notes.txt"] {
        fs::write(d.join(f), "x").unwrap();
    }
    let rd = RunDir::create(Some(d.clone()), "mlp", true, false).unwrap();
    assert!(!rd.is_resume());
    assert_eq!(names_in(&d), ["notes.txt"]);
    let fresh = RunDir::create(Some(tmp.join("new")), "mlp", false, true).unwrap();
    assert!(!fresh.is_resume() && tmp.join("new").is_dir());
}

#[test]
fn default_directories_are_unique_and_named_by_command_and_time() {
    let tmp = TempDir::new("default");
    let a = RunDir::create_default(&tmp.join("runs"), "mlp").unwrap();
    let b = RunDir::create_default(&tmp.join("runs"), "mlp").unwrap();
    assert_ne!(a.path(), b.path());
    for d in [&a, &b] {
        let name = d.path().file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("mlp-20"), "{name}");
        assert!(d.path().is_dir());
    }
}

#[test]
fn runs_show_and_runs_plot() {
    let tmp = TempDir::new("show");
    let out = tmp.join("run");
    let Outcome::Finished { .. } = toy(opts(&out), 8, None) else { panic!() };
    let text = show_run(&out).unwrap();
    assert!(text.contains("\"seed\": 11"), "{text}");
    assert!(text.contains("\"final_loss\""), "{text}");
    assert!(text.contains("ckpt-8.safetensors"), "{text}");
    assert!(text.contains("metrics: 10 records"), "{text}");

    fs::remove_file(out.join("loss.png")).unwrap();
    let files = replot(&out).unwrap();
    assert!(files.contains(&out.join("loss.png")));
    assert_eq!(png_size(&out.join("loss.png")), fixpoint::run::plot::SIZE);

    let stopped = tmp.join("stopped");
    let Outcome::Interrupted { .. } = toy(opts(&stopped), 8, Some(3)) else { panic!() };
    assert!(show_run(&stopped).unwrap().contains("summary: none"));

    let e = show_run(&tmp.join("missing")).unwrap_err().to_string();
    assert!(!e.contains('\n') && e.contains("missing"), "{e}");
    assert!(replot(&tmp.0).is_err(), "a directory without metrics.jsonl");
}

#[test]
fn plots_get_labels_when_a_system_font_is_found() {
    use fixpoint::run::plot::{Drawn, LinePlot, Series, ensure_font, lines};
    let tmp = TempDir::new("font");
    let plot = LinePlot {
        title: "t".into(),
        x_label: "x".into(),
        y_label: "y".into(),
        log_y: false,
        series: vec![
            Series { label: "a".into(), points: vec![(0.0, f64::INFINITY), (1.0, 1.0)] },
            Series { label: "b".into(), points: vec![(0.0, -1.0), (1.0, -1.0)] },
        ],
    };
    let drawn = lines(&tmp.join("p.png"), &plot).unwrap();
    let expected = if ensure_font().is_some() { Drawn::WithLabels } else { Drawn::WithoutLabels };
    assert_eq!(drawn, expected);
    assert_eq!(png_size(&tmp.join("p.png")), fixpoint::run::plot::SIZE);
}
