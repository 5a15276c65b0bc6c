//! `fixpoint`: command-line front end of the training jobs.
//!
//! ```text
//! fixpoint mlp [--json] [--seed S] [--steps N] [--quick] ...   train the spirals MLP
//! fixpoint fprnn --task TASK --model MODEL [--quick] ...       Fixed-Point RNN experiments
//! fixpoint reproduce [--quick] [--json]                       run every job, print a table
//! ```
//!
//! Human-readable lines go to stdout; with `--json` the last line of stdout is one JSON
//! object. Errors are one line `error: ...` on stderr and a non-zero exit status.

use clap::error::ErrorKind;
use clap::{Args, Parser, Subcommand};
use fixpoint::fpr::ModelKind;
use fixpoint::nn::Activation;
use fixpoint::run::{Run, RunArgs};
use fixpoint::tasks::Task;
use fixpoint::train::{FprnnConfig, FprnnTrainer, MlpConfig, MlpReport, MlpTrainer, train_mlp_with};
use serde_json::{Value, json};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "fixpoint", version, about = "From-scratch CPU tensor engine: training jobs and reproduction")]
struct Cli {
    /// Worker threads (default: RAYON_NUM_THREADS, else one per core). Results are
    /// bit-identical for every thread count.
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Train an MLP classifier on procedurally generated interleaved spirals.
    Mlp(MlpArgs),
    /// Train a Fixed-Point RNN (or a baseline) on a sequence task and evaluate accuracy vs length.
    Fprnn(FprnnArgs),
    /// Run every job (the quick presets with --quick) and print a summary table.
    Reproduce(ReproduceArgs),
    /// Benchmarks whose figures are ratios against baselines measured in the same run.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Inspect run directories written by training commands.
    #[command(subcommand)]
    Runs(RunsCommand),
}

#[derive(Subcommand, Debug)]
enum RunsCommand {
    /// Print a run's configuration, summary and checkpoints.
    Show { dir: std::path::PathBuf },
    /// Redraw a run's plots from its metrics.jsonl.
    Plot { dir: std::path::PathBuf },
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Core ops: Linear vs raw sgemm, elementwise vs STREAM triad, softmax and layer_norm vs copy.
    Core(BenchCoreArgs),
}

#[derive(Args, Debug)]
struct BenchCoreArgs {
    /// Print one JSON object as the last line of stdout.
    #[arg(long)]
    json: bool,
    /// Repetitions per measurement (the median is reported).
    #[arg(long, default_value_t = 9)]
    reps: usize,
}

#[derive(Args, Debug)]
struct MlpArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Print one JSON object as the last line of stdout (the same as summary.json).
    #[arg(long)]
    json: bool,
    /// Start from the quick preset instead of the full one.
    #[arg(long)]
    quick: bool,
    /// Seed of data, initialisation and batch order.
    #[arg(long)]
    seed: Option<u64>,
    /// Optimiser steps.
    #[arg(long)]
    steps: Option<usize>,
    /// Examples per step.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Hidden layer sizes, comma-separated (e.g. 64,64).
    #[arg(long, value_delimiter = ',')]
    hidden: Option<Vec<usize>>,
    /// relu, gelu, gelu_tanh, silu or tanh.
    #[arg(long)]
    activation: Option<String>,
    /// Peak learning rate.
    #[arg(long)]
    lr: Option<f32>,
    /// Learning rate at the end of the cosine decay.
    #[arg(long)]
    final_lr: Option<f32>,
    /// Linear warmup steps (default: the preset's, at most a tenth of --steps).
    #[arg(long)]
    warmup: Option<usize>,
    /// AdamW weight decay (weights only).
    #[arg(long)]
    weight_decay: Option<f32>,
    /// Global gradient-norm clip (0 turns clipping off).
    #[arg(long)]
    clip: Option<f32>,
    /// Spiral arms (classes).
    #[arg(long)]
    classes: Option<usize>,
    /// Points per class.
    #[arg(long)]
    points_per_class: Option<usize>,
    /// Gaussian jitter of the points.
    #[arg(long)]
    noise: Option<f32>,
    /// Full turns of each spiral arm.
    #[arg(long)]
    turns: Option<f32>,
}

#[derive(Args, Debug)]
struct FprnnArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Print one JSON object as the last line of stdout (the same as summary.json).
    #[arg(long)]
    json: bool,
    /// The quick preset: A4, length 16, 1 layer, d 64, D 128, Householder rank 4, batch 128,
    /// lr 1e-3 (100 warm-up steps, cosine), lmax 16 (other flags override it).
    #[arg(long)]
    quick: bool,
    /// z2 (parity), z60, a4, a5, s5, copy or arith.
    #[arg(long)]
    task: Option<String>,
    /// fp-rnn, diagonal (Q = I), dense-seq, lstm (fp-mamba and mamba: Fixed point II).
    #[arg(long)]
    model: Option<String>,
    /// householder:R (fp-rnn, dense-seq); kronecker and dplr:R come with Fixed point II.
    #[arg(long)]
    mixer: Option<String>,
    /// one-step (implicit and phantom-K come with Fixed point II).
    #[arg(long)]
    backward: Option<String>,
    /// Residual layers.
    #[arg(long)]
    layers: Option<usize>,
    #[arg(long)]
    d_model: Option<usize>,
    /// D of the FP blocks (default 2·d_model).
    #[arg(long)]
    d_inner: Option<usize>,
    /// Optimiser steps (at least 1).
    #[arg(long, allow_hyphen_values = true)]
    steps: Option<i64>,
    /// Sequences per step.
    #[arg(long)]
    batch: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    lr: Option<f32>,
    /// Learning rate at the end of the cosine decay.
    #[arg(long)]
    final_lr: Option<f32>,
    /// Linear warm-up steps.
    #[arg(long)]
    warmup: Option<usize>,
    #[arg(long)]
    weight_decay: Option<f32>,
    /// Gradient-norm clip (0: off).
    #[arg(long)]
    clip: Option<f32>,
    /// Solver iteration cap in training (evaluation uses 4·T).
    #[arg(long)]
    lmax: Option<usize>,
    /// Training length: group elements (word problems), longest string (copy), longest
    /// sequence (arith).
    #[arg(long)]
    train_len: Option<usize>,
    /// Row length of copy / arith sequences (copy needs at least 2·max + 3).
    #[arg(long)]
    context: Option<usize>,
    /// Evaluation lengths, comma-separated (default: the task's, §5).
    #[arg(long, value_delimiter = ',')]
    eval_lengths: Option<Vec<usize>>,
    /// Held-out sequences per evaluation length.
    #[arg(long)]
    eval_count: Option<usize>,
    /// Validate at the training length every N steps (0: never).
    #[arg(long)]
    val_every: Option<usize>,
    /// Held-out sequences per validation.
    #[arg(long)]
    val_count: Option<usize>,
    /// Seed of initialisation and data.
    #[arg(long)]
    seed: Option<u64>,
}

#[derive(Args, Debug)]
struct ReproduceArgs {
    /// Quick presets: the mlp in seconds, then the state-tracking part (the A4 quick preset
    /// for fp-rnn, diagonal and lstm; minutes). FIXPOINT_REPRO_TINY=1 shrinks the latter to a
    /// few steps (for tests).
    #[arg(long)]
    quick: bool,
    /// Print one JSON object as the last line of stdout.
    #[arg(long)]
    json: bool,
}

type CliResult<T> = Result<T, String>;

fn mlp_config(a: &MlpArgs) -> CliResult<MlpConfig> {
    let mut c = if a.quick { MlpConfig::quick() } else { MlpConfig::default() };
    if let Some(v) = a.seed {
        c.seed = v;
    }
    if let Some(v) = a.steps {
        c.steps = v;
        // Short runs get a proportionally short warmup unless --warmup says otherwise.
        c.warmup_steps = c.warmup_steps.min(v / 10);
    }
    if let Some(v) = a.batch_size {
        c.batch_size = v;
    }
    if let Some(v) = &a.hidden {
        c.hidden = v.clone();
    }
    if let Some(v) = &a.activation {
        c.activation = Activation::parse(v).map_err(|e| e.to_string())?;
    }
    if let Some(v) = a.lr {
        c.lr = v;
    }
    if let Some(v) = a.final_lr {
        c.final_lr = v;
    }
    if let Some(v) = a.warmup {
        c.warmup_steps = v;
    }
    if let Some(v) = a.weight_decay {
        c.weight_decay = v;
    }
    if let Some(v) = a.clip {
        c.clip_norm = (v != 0.0).then_some(v);
    }
    if let Some(v) = a.classes {
        c.data.classes = v;
    }
    if let Some(v) = a.points_per_class {
        c.data.points_per_class = v;
    }
    if let Some(v) = a.noise {
        c.data.noise = v;
    }
    if let Some(v) = a.turns {
        c.data.turns = v;
    }
    c.validate().map_err(|e| e.to_string())?;
    Ok(c)
}

/// An f32 as the shortest decimal that reads back to it (not its f64 expansion).
fn num(x: f32) -> Value {
    if !x.is_finite() {
        return Value::Null;
    }
    let v: f64 = format!("{x}").parse().expect("f32 display parses");
    json!(v)
}

fn mlp_json(c: &MlpConfig, r: Option<&MlpReport>, preset: &str) -> Value {
    let mut j = json!({
        "preset": preset,
        "seed": c.seed,
        "steps": c.steps,
        "batch_size": c.batch_size,
        "hidden": c.hidden,
        "activation": c.activation.name(),
        "lr": num(c.lr),
        "final_lr": num(c.final_lr),
        "warmup_steps": c.warmup_steps,
        "weight_decay": num(c.weight_decay),
        "clip_norm": c.clip_norm.map(num),
        "data": {
            "kind": "spirals",
            "classes": c.data.classes,
            "points_per_class": c.data.points_per_class,
            "turns": num(c.data.turns),
            "noise": num(c.data.noise),
        },
    });
    if let Some(r) = r {
        let every = (c.steps / 100).max(1);
        let curve: Vec<Value> = r.losses.iter().step_by(every).map(|&l| num(l)).collect();
        j["data"]["train_size"] = json!(r.train_size);
        j["data"]["test_size"] = json!(r.test_size);
        j["num_params"] = json!(r.num_params);
        j["train_accuracy"] = json!(r.train_accuracy);
        j["test_accuracy"] = json!(r.test_accuracy);
        j["first_loss"] = json!(r.losses.first().copied().map(num));
        j["final_loss"] = num(r.final_loss());
        j["loss_curve"] = json!({"every": every, "values": curve});
        j["wall_seconds"] = json!(r.wall_seconds);
    }
    j
}

fn describe(c: &MlpConfig, r: &MlpReport) -> String {
    let dims: Vec<String> =
        std::iter::once(2).chain(c.hidden.iter().copied()).chain([c.data.classes]).map(|d| d.to_string()).collect();
    format!(
        "mlp: {}-class spirals ({} train / {} test), MLP {} ({}), {} params, {} steps of {}",
        c.data.classes,
        r.train_size,
        r.test_size,
        dims.join("-"),
        c.activation.name(),
        r.num_params,
        c.steps,
        c.batch_size
    )
}

fn run_mlp(c: &MlpConfig, progress: bool) -> CliResult<MlpReport> {
    let every = (c.steps / 10).max(1);
    let last = c.steps - 1;
    train_mlp_with(c, |step, loss| {
        if progress && (step % every == 0 || step == last) {
            println!("  step {step:>6}  loss {loss:.4}");
        }
    })
    .map_err(|e| e.to_string())
}

fn cmd_mlp(a: &MlpArgs) -> CliResult<()> {
    let c = mlp_config(a)?;
    let preset = if a.quick { "quick" } else { "full" };
    let mut config = mlp_json(&c, None, preset);
    config["threads"] = json!(rayon::current_num_threads());
    let mut run = Run::start("mlp", config, c.steps as u64, a.run.options()).map_err(|e| e.to_string())?;
    let mut t = MlpTrainer::new(&c).map_err(|e| e.to_string())?;
    if let Some(ck) = run.take_resumed() {
        t.restore(&ck).map_err(|e| e.to_string())?;
        run.println(&format!("resumed at step {}", t.step_index()));
    }
    let e = |e: fixpoint::Error| e.to_string();
    while !t.done() {
        let lr = t.lr();
        let loss = t.step().map_err(e)?;
        let step = t.step_index() as u64;
        run.log(step, &[("loss", loss as f64), ("lr", lr as f64)]).map_err(e)?;
        if run.checkpoint_due(step) {
            run.save_checkpoint(&t.save_state(run.checkpoint(step))).map_err(e)?;
        }
        if run.interrupted() && !t.done() {
            let ck = t.save_state(run.checkpoint(step));
            let code = run.finish_interrupted(&ck).map_err(e)?;
            std::process::exit(code);
        }
    }
    let r = t.report().map_err(e)?;
    let step = t.step_index() as u64;
    run.log_eval(step, &[("train_accuracy", r.train_accuracy), ("test_accuracy", r.test_accuracy)]).map_err(e)?;
    println!("{}", describe(&c, &r));
    println!(
        "train accuracy {:.2}%  test accuracy {:.2}%  final loss {:.4}  wall {:.2} s",
        100.0 * r.train_accuracy,
        100.0 * r.test_accuracy,
        r.final_loss(),
        r.wall_seconds
    );
    let summary = mlp_json(&c, Some(&r), preset);
    let ck = t.save_state(run.checkpoint(step));
    let line = run.finish(&summary, &ck).map_err(e)?;
    if a.json {
        println!("{line}");
    }
    Ok(())
}

const FP2: &str = "is not available yet (it comes with the Fixed point II issue)";

/// Parse `--model`: the kinds of `fpr::ModelKind`; `fp-mamba` and `mamba` are known but
/// not built yet.
fn parse_model(s: &str) -> CliResult<ModelKind> {
    match s {
        "fp-mamba" | "mamba" => Err(format!("model {s} {FP2}")),
        _ => ModelKind::parse(s)
            .map_err(|_| format!("unknown model {s:?} (fp-rnn, fp-mamba, diagonal, mamba, dense-seq, lstm)")),
    }
}

/// Apply `--mixer` to a config for `model`.
fn apply_mixer(c: &mut FprnnConfig, mixer: &str) -> CliResult<()> {
    let model = c.model;
    let (kind, arg) = mixer.split_once(':').map_or((mixer, None), |(k, a)| (k, Some(a)));
    let rank = |a: Option<&str>| -> CliResult<Option<usize>> {
        a.map(|a| a.parse::<usize>().map_err(|_| format!("bad mixer rank {a:?} in {mixer:?}"))).transpose()
    };
    match kind {
        "householder" | "h" => {
            if !matches!(model, ModelKind::FpRnn | ModelKind::DenseSeq) {
                return Err(format!("mixer {mixer} is not allowed with model {} (it has no mixer)", model.name()));
            }
            match rank(arg)? {
                Some(0) => Err("the Householder rank must be at least 1".into()),
                Some(r) => {
                    c.rank = r;
                    Ok(())
                }
                None => Ok(()),
            }
        }
        "identity" | "none" if model == ModelKind::Diagonal || (kind == "none" && model == ModelKind::Lstm) => Ok(()),
        "identity" | "none" => Err(format!("mixer {mixer} is not allowed with model {}", model.name())),
        "dplr" if matches!(model, ModelKind::FpRnn | ModelKind::DenseSeq) => Err(format!(
            "mixer {mixer} is not allowed with model {}: DPLR is not contractive (spec §4.4)",
            model.name()
        )),
        "kronecker" | "k" | "dplr" if model == ModelKind::FpRnn => Err(format!("mixer {kind} {FP2}")),
        "kronecker" | "k" | "dplr" => Err(format!("mixer {mixer} is not allowed with model {}", model.name())),
        _ => Err(format!("unknown mixer {mixer:?} (householder:R, kronecker, dplr:R)")),
    }
}

fn fprnn_config(a: &FprnnArgs) -> CliResult<FprnnConfig> {
    let model = match (&a.model, a.quick) {
        (Some(m), _) => parse_model(m)?,
        (None, true) => ModelKind::FpRnn,
        (None, false) => return Err("--model is required (fp-rnn, diagonal, dense-seq, lstm) unless --quick".into()),
    };
    let mut c = match (&a.task, a.quick) {
        (None, true) => FprnnConfig::quick(model),
        (Some(t), quick) => {
            let task = Task::parse(t).map_err(|e| e.to_string())?;
            let base = if quick { FprnnConfig::quick(model) } else { FprnnConfig::new(task.clone(), model) };
            let eval_lengths = task.default_eval_lengths();
            let lmax = if quick { base.lmax } else { task.train_row_len().clamp(1, 100) };
            FprnnConfig { eval_lengths, lmax, task, ..base }
        }
        (None, false) => return Err("--task is required (z2, z60, a4, a5, s5, copy, arith) unless --quick".into()),
    };
    if let Some(b) = &a.backward
        && b != "one-step"
    {
        return Err(if b == "implicit" || b.starts_with("phantom") {
            format!("backward {b} {FP2}")
        } else {
            format!("unknown backward {b:?} (one-step, implicit, phantom-K)")
        });
    }
    if let Some(m) = &a.mixer {
        apply_mixer(&mut c, m)?;
    }
    if let Some(n) = a.train_len {
        c.task.set_train_len(n).map_err(|e| e.to_string())?;
        if a.eval_lengths.is_none() {
            c.eval_lengths = c.task.default_eval_lengths();
        }
        if a.lmax.is_none() && !a.quick {
            c.lmax = c.task.train_row_len().clamp(1, 100);
        }
    }
    if let Some(n) = a.context {
        c.task.set_context(n).map_err(|e| e.to_string())?;
    }
    if let Some(v) = a.steps {
        if v <= 0 {
            return Err(format!("--steps must be at least 1, got {v}"));
        }
        c.steps = v as usize;
        c.warmup = c.warmup.min(c.steps / 10);
    }
    if let Some(v) = a.layers {
        c.n_layers = v;
    }
    if let Some(v) = a.d_model {
        c.d_model = v;
        if a.d_inner.is_none() {
            c.d_inner = 2 * v;
        }
    }
    if let Some(v) = a.d_inner {
        c.d_inner = v;
    }
    if let Some(v) = a.batch {
        c.batch = v;
    }
    if let Some(v) = a.lr {
        c.lr = v;
    }
    if let Some(v) = a.final_lr {
        c.final_lr = v;
    }
    if let Some(v) = a.warmup {
        c.warmup = v;
    }
    if let Some(v) = a.weight_decay {
        c.weight_decay = v;
    }
    if let Some(v) = a.clip {
        c.clip = (v != 0.0).then_some(v);
    }
    if let Some(v) = a.lmax {
        c.lmax = v;
    }
    if let Some(v) = &a.eval_lengths {
        c.eval_lengths = v.clone();
    }
    if let Some(v) = a.eval_count {
        c.eval_count = v;
    }
    if let Some(v) = a.val_every {
        c.val_every = v;
    }
    if let Some(v) = a.val_count {
        c.val_count = v;
    }
    if let Some(v) = a.seed {
        c.seed = v;
    }
    c.validate().map_err(|e| e.to_string())?;
    Ok(c)
}

fn fmt_opt(v: Option<f64>, prec: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.prec$}"))
}

fn cmd_fprnn(a: &FprnnArgs) -> CliResult<()> {
    let c = fprnn_config(a)?;
    let mut config = c.to_json();
    config["preset"] = json!(if a.quick { "quick" } else { "custom" });
    config["threads"] = json!(rayon::current_num_threads());
    let wall = std::time::Instant::now();
    let mut run = Run::start("fprnn", config, c.steps as u64, a.run.options()).map_err(|e| e.to_string())?;
    let mut t = FprnnTrainer::new(&c).map_err(|e| e.to_string())?;
    if let Some(ck) = run.take_resumed() {
        t.restore(&ck).map_err(|e| e.to_string())?;
        run.println(&format!("resumed at step {}", t.step_index()));
    }
    run.println(&format!(
        "fprnn: task {} (train length {}), model {} ({}), {} params, {} steps of {}",
        c.task.name(),
        c.task.train_len(),
        c.model.name(),
        c.mixer_name(),
        t.num_params(),
        c.steps,
        c.batch
    ));
    let e = |e: fixpoint::Error| e.to_string();
    let first_step = t.step_index();
    let mut last_loss = f32::NAN;
    while !t.done() {
        let lr = t.lr();
        let info = t.step().map_err(e)?;
        last_loss = info.loss;
        let step = t.step_index() as u64;
        run.log(
            step,
            &[
                ("loss", info.loss as f64),
                ("lr", lr as f64),
                ("token_acc", info.token_acc),
                ("iterations", info.iterations),
            ],
        )
        .map_err(e)?;
        if t.val_due() {
            let v = t.validate().map_err(e)?;
            let mut fields = vec![("val_seq_acc", v.seq_acc), ("val_token_acc", v.token_acc)];
            if let Some(i) = v.median_iterations {
                fields.push(("val_iterations", i));
            }
            run.log_eval(step, &fields).map_err(e)?;
        }
        if run.checkpoint_due(step) {
            run.save_checkpoint(&t.save_state(run.checkpoint(step))).map_err(e)?;
        }
        if run.interrupted() && !t.done() {
            let ck = t.save_state(run.checkpoint(step));
            let code = run.finish_interrupted(&ck).map_err(e)?;
            std::process::exit(code);
        }
    }
    let steps_here = t.step_index() - first_step;
    run.println(&format!(
        "trained {steps_here} steps in {:.1} s: {:.2} steps/s, {:.0} tokens/s; evaluating {} lengths x {} sequences",
        t.train_seconds(),
        t.steps_per_s(steps_here),
        t.tokens_per_s(),
        c.eval_lengths.len(),
        c.eval_count
    ));
    let evals = t.evaluate().map_err(e)?;
    let step = t.step_index() as u64;
    println!(
        "{:>6} {:>8} {:>9} {:>10} {:>12} {:>6}",
        "length", "seq acc", "token acc", "median it", "nonconverged", "lmax"
    );
    for v in &evals {
        println!(
            "{:>6} {:>8.4} {:>9.4} {:>10} {:>12} {:>6}",
            v.len,
            v.seq_acc,
            v.token_acc,
            fmt_opt(v.median_iterations, 1),
            fmt_opt(v.nonconverged_share, 4),
            v.lmax
        );
        let mut fields = vec![("eval_len", v.len as f64), ("seq_acc", v.seq_acc), ("token_acc", v.token_acc)];
        if let Some(i) = v.median_iterations {
            fields.push(("median_iterations", i));
        }
        if let Some(n) = v.nonconverged_share {
            fields.push(("nonconverged_share", n));
        }
        run.log_record("length", step, fields.iter().map(|(k, v)| (k.to_string(), json!(v))).collect()).map_err(e)?;
    }
    if let Err(err) =
        fixpoint::train::fprnn::plot_lengths(run.path(), &format!("{} {}", c.model.name(), c.task.name()), &evals)
    {
        run.println(&format!("warning: length plots not drawn: {err}"));
    }
    let summary = fixpoint::train::fprnn::summary_json(&t, &evals, steps_here, wall.elapsed().as_secs_f64(), last_loss);
    println!(
        "longest length with sequence accuracy > 0.9: {}; crossed 0.9 at step {}",
        summary["longest_len_over_0_9"], summary["crossed_0_9_at_step"]
    );
    let ck = t.save_state(run.checkpoint(step));
    let line = run.finish(&summary, &ck).map_err(e)?;
    if a.json {
        println!("{line}");
    }
    Ok(())
}

/// One state-tracking row of `reproduce`: a quick-preset model trained without a run
/// directory, evaluated at the training length and twice it.
struct StateRow {
    model: ModelKind,
    at_train: f64,
    at_2x: f64,
    crossed: Option<usize>,
    steps: usize,
    steps_per_s: f64,
    tokens_per_s: f64,
    wall_s: f64,
}

/// `FIXPOINT_REPRO_TINY=1` shrinks the state-tracking part to a few steps and sequences
/// (for the test suite); the numbers are then meaningless.
fn state_tracking_config(model: ModelKind) -> FprnnConfig {
    let mut c = FprnnConfig::quick(model);
    if std::env::var("FIXPOINT_REPRO_TINY").is_ok_and(|v| !v.is_empty() && v != "0") {
        c.steps = 3;
        c.warmup = 1;
        c.batch = 8;
        c.eval_count = 8;
        c.val_every = 0;
    } else {
        c.eval_count = 2000;
    }
    c
}

fn run_state_tracking() -> CliResult<(Vec<StateRow>, FprnnConfig, f64)> {
    let start = std::time::Instant::now();
    let e = |e: fixpoint::Error| e.to_string();
    let mut rows = Vec::new();
    let mut last = None;
    for model in [ModelKind::FpRnn, ModelKind::Diagonal, ModelKind::Lstm] {
        let c = state_tracking_config(model);
        let t0 = std::time::Instant::now();
        let mut t = FprnnTrainer::new(&c).map_err(e)?;
        while !t.done() {
            t.step().map_err(e)?;
            if t.val_due() {
                t.validate().map_err(e)?;
            }
        }
        let l = c.task.train_len();
        let at_train = t.evaluate_at(l, c.eval_count).map_err(e)?.seq_acc;
        let at_2x = t.evaluate_at(2 * l, c.eval_count).map_err(e)?.seq_acc;
        rows.push(StateRow {
            model,
            at_train,
            at_2x,
            crossed: t.crossed_0_9(),
            steps: t.step_index(),
            steps_per_s: t.steps_per_s(t.step_index()),
            tokens_per_s: t.tokens_per_s(),
            wall_s: t0.elapsed().as_secs_f64(),
        });
        last = Some(c);
    }
    Ok((rows, last.expect("three models"), start.elapsed().as_secs_f64()))
}

fn cmd_runs(c: &RunsCommand) -> CliResult<()> {
    match c {
        RunsCommand::Show { dir } => print!("{}", fixpoint::run::show_run(dir).map_err(|e| e.to_string())?),
        RunsCommand::Plot { dir } => {
            for p in fixpoint::run::replot(dir).map_err(|e| e.to_string())? {
                println!("{}", p.display());
            }
        }
    }
    Ok(())
}

fn cmd_reproduce(a: &ReproduceArgs) -> CliResult<()> {
    let preset = if a.quick { "quick" } else { "full" };
    let c = if a.quick { MlpConfig::quick() } else { MlpConfig::default() };
    let r = run_mlp(&c, false)?;
    println!(
        "{:<6} {:<6} {:>10} {:>10} {:>11} {:>7} {:>8}",
        "job", "preset", "train acc", "test acc", "final loss", "steps", "wall s"
    );
    println!(
        "{:<6} {:<6} {:>9.2}% {:>9.2}% {:>11.4} {:>7} {:>8.2}",
        "mlp",
        preset,
        100.0 * r.train_accuracy,
        100.0 * r.test_accuracy,
        r.final_loss(),
        c.steps,
        r.wall_seconds
    );
    let (rows, sc, st_wall) = run_state_tracking()?;
    let l = sc.task.train_len();
    println!();
    println!(
        "state tracking: {} word problems, train length {l}, {} steps each, {} held-out sequences per length",
        sc.task.name(),
        sc.steps,
        sc.eval_count
    );
    println!(
        "{:<9} {:>12} {:>12} {:>15} {:>8} {:>9} {:>8}",
        "model",
        format!("seq acc @{l}"),
        format!("seq acc @{}", 2 * l),
        "0.9 at step",
        "steps/s",
        "tokens/s",
        "wall s"
    );
    let mut members = serde_json::Map::new();
    for r in &rows {
        println!(
            "{:<9} {:>12.4} {:>12.4} {:>15} {:>8.2} {:>9.0} {:>8.1}",
            r.model.name(),
            r.at_train,
            r.at_2x,
            r.crossed.map_or("-".into(), |s| s.to_string()),
            r.steps_per_s,
            r.tokens_per_s,
            r.wall_s
        );
        members.insert(
            r.model.name().replace('-', "_"),
            json!({
                "seq_acc_at_train": r.at_train,
                "seq_acc_at_2x": r.at_2x,
                "crossed_0_9_at_step": r.crossed,
                "steps": r.steps,
                "steps_per_s": r.steps_per_s,
                "tokens_per_s": r.tokens_per_s,
                "wall_s": r.wall_s,
            }),
        );
    }
    let mut st = json!({ "task": sc.task.name(), "train_length": l, "wall_s": st_wall, "eval_count": sc.eval_count });
    for (k, v) in members {
        st[k] = v;
    }
    if a.json {
        println!("{}", json!({ "mlp": mlp_json(&c, Some(&r), preset), "state_tracking": st }));
    }
    Ok(())
}

fn cmd_bench_core(a: &BenchCoreArgs) -> CliResult<()> {
    if a.reps == 0 {
        return Err("--reps must be at least 1".into());
    }
    let r = fixpoint::bench::core::run(a.reps).map_err(|e| e.to_string())?;
    println!("bench core: {} thread(s), medians of {} repetitions", r.threads, a.reps);
    println!(
        "  Linear 256x784->512 fwd+bwd {:.3} ms vs 3 raw sgemm {:.3} ms",
        r.linear_fwd_bwd_s * 1e3,
        r.sgemm3_s * 1e3
    );
    println!("  mul 16M {:.3} ms vs STREAM triad {:.3} ms", r.mul_s * 1e3, r.triad_s * 1e3);
    let mut ratios = vec![
        ("linear_fwd_bwd_over_sgemm".to_string(), r.linear_fwd_bwd_over_sgemm, 1.25),
        ("elementwise_over_triad".to_string(), r.elementwise_over_triad, 1.5),
    ];
    for (name, op, copy) in &r.row_ops {
        println!("  {name} (4096, 768) {:.3} ms vs copy {:.3} ms", op * 1e3, copy * 1e3);
        ratios.push((format!("{name}_over_copy"), op / copy, 2.0));
    }
    for (name, ratio, target) in ratios {
        let verdict = if ratio <= target { "meets" } else { "MISSES" };
        println!("  {name:<28} {ratio:>6.3}  (target <= {target}: {verdict})");
    }
    if a.json {
        println!("{}", r.to_json());
    }
    Ok(())
}

/// The first line of a clap error (it starts with `error:`), without usage text.
fn clap_one_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("invalid arguments").trim();
    if first.starts_with("error:") { first.to_string() } else { format!("error: {first}") }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => match e.kind() {
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand | ErrorKind::MissingSubcommand => {
                eprintln!("error: no subcommand given (mlp, fprnn, reproduce, bench, runs); see `fixpoint --help`");
                return ExitCode::from(2);
            }
            _ => {
                eprintln!("{}", clap_one_line(&e));
                return ExitCode::from(2);
            }
        },
    };
    let threads = cli.threads.or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()));
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|_| cli.threads.is_none())
        .or(threads);
    // The whole job runs inside one pool: an op dispatched from outside the pool pays a
    // cross-thread wake-up (15-20 us) every time.
    let result = fixpoint::cpu::par::with_threads(threads, || match &cli.command {
        Command::Mlp(a) => cmd_mlp(a),
        Command::Fprnn(a) => cmd_fprnn(a),
        Command::Reproduce(a) => cmd_reproduce(a),
        Command::Bench(BenchCommand::Core(a)) => cmd_bench_core(a),
        Command::Runs(c) => cmd_runs(c),
    })
    .and_then(|r| r);
    if fixpoint::profile::enabled() {
        eprintln!("FIXPOINT_PROFILE: time per op (outermost ops only; forward and backward separately)");
        eprint!("{}", fixpoint::profile::report());
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}
