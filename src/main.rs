//! `fixpoint`: command-line front end of the training jobs.
//!
//! ```text
//! fixpoint mlp [--json] [--seed S] [--steps N] [--quick] ...   train the spirals MLP
//! fixpoint reproduce [--quick] [--json]                       run every job, print a table
//! ```
//!
//! Human-readable lines go to stdout; with `--json` the last line of stdout is one JSON
//! object. Errors are one line `error: ...` on stderr and a non-zero exit status.

use clap::error::ErrorKind;
use clap::{Args, Parser, Subcommand};
use fixpoint::bench::cli::{BenchScanArgs, bench_scan_cli};
use fixpoint::nn::Activation;
use fixpoint::run::{Run, RunArgs};
use fixpoint::train::{MlpConfig, MlpReport, MlpTrainer, train_mlp_with};
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
    /// The diagonal scan's kernels against a STREAM triad, per shape and thread count
    /// (--threads N measures N only; default 1 and 2).
    Scan(BenchScanArgs),
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
struct ReproduceArgs {
    /// Quick presets (well under a minute in total).
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
    if a.json {
        println!("{}", json!({ "mlp": mlp_json(&c, Some(&r), preset) }));
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
    for (n, ser, par) in &r.threshold_sweep {
        println!(
            "  exp over {n:>8} elements: serial {:>9.1} us, split {:>9.1} us ({:.2}x)",
            ser * 1e6,
            par * 1e6,
            ser / par
        );
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
                eprintln!("error: no subcommand given (mlp, reproduce, bench, runs); see `fixpoint --help`");
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
        Command::Reproduce(a) => cmd_reproduce(a),
        Command::Bench(BenchCommand::Core(a)) => cmd_bench_core(a),
        Command::Bench(BenchCommand::Scan(a)) => bench_scan_cli(a.clone(), cli.threads).map_err(|e| e.to_string()),
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
