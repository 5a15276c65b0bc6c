//! `fixpoint`: command-line front end of the training jobs.
//!
//! ```text
//! fixpoint mlp [--json] [--seed S] [--steps N] [--quick] ...   train the spirals MLP
//! fixpoint dino [--data D] [--student mlp|vit|vgg11|resnet18] [--quick] [--json] ...  random-teacher distillation
//! fixpoint fprnn --task TASK --model MODEL [--quick] ...       Fixed-Point RNN experiments
//! fixpoint tickets|lmc --checkpoint CKPT [--width-mult 0.25] ...   lottery tickets / mode connectivity
//! fixpoint reproduce [--quick] [--json]                       run every job, print a table
//! ```
//!
//! Human-readable lines go to stdout; with `--json` the last line of stdout is one JSON
//! object. Errors are one line `error: ...` on stderr and a non-zero exit status.

use clap::error::ErrorKind;
use clap::{Args, Parser, Subcommand};
use fixpoint::bench::cli::{BenchScanArgs, bench_scan_cli};
use fixpoint::nn::Activation;
use fixpoint::run::{Run, RunArgs, json_f32 as num};

use fixpoint::data::images::Fit28;
use fixpoint::data::synthetic_images::EmbeddedConfig;
use fixpoint::dino::probes::{KnnVote, ProbeResult};
use fixpoint::dino::{EncoderConfig, MlpEncoderConfig, VitConfig};
use fixpoint::fpr::{BackwardMode, KronNorm, MixerKind, ModelKind};
use fixpoint::tasks::Task;
use fixpoint::train::dino::{
    DataChoice, DinoHooks, EpochRecord, RunInfo, StepBench, StepInfo, bench_distill_step_on, train_dino,
};
use fixpoint::train::{
    DinoConfig, DinoReport, FprnnConfig, FprnnTrainer, MlpConfig, MlpReport, MlpTrainer, train_mlp_with,
};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "fixpoint", version, about = "From-scratch CPU tensor engine: training jobs and reproduction")]
struct Cli {
    /// Worker threads (default: RAYON_NUM_THREADS, else one per core). Results are
    /// bit-identical for every thread count.
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Where the heavy kernels run: cpu, or gpu (needs a build with `--features gpu`
    /// and a wgpu adapter; see the README's GPU section for what runs there).
    #[arg(long, global = true, default_value = "cpu")]
    device: fixpoint::Device,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Train an MLP classifier on procedurally generated interleaved spirals.
    Mlp(MlpArgs),
    /// Random-teacher distillation (Sarnthein et al. 2023): a frozen random teacher,
    /// an α-interpolated student, k-NN and linear probes every epoch.
    Dino(Box<DinoArgs>),
    /// Train a Fixed-Point RNN (or a baseline) on a sequence task and evaluate accuracy vs length.
    Fprnn(FprnnArgs),
    /// Run every job (the quick presets with --quick) and print a summary table. The
    /// random-teacher member uses real Fashion-MNIST when installed (the embedded set
    /// otherwise): the smoke preset with --quick, the `dino --quick` preset (about
    /// 10 minutes on 2 cores) without.
    Reproduce(ReproduceArgs),
    /// Lottery tickets: iterative magnitude pruning with rewinding (20% per round) of a
    /// distilled conv student (--checkpoint) and of a random initialisation.
    Tickets(fixpoint::train::tickets::AnalysisArgs),
    /// Linear mode connectivity: loss and accuracy between two supervised children of a
    /// distilled conv student (--checkpoint) and of a random initialisation.
    Lmc(fixpoint::train::tickets::AnalysisArgs),
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
    /// Fixed-point RNN layer: iterations, time per iteration over a scan, forward and
    /// backward per backward option, dense and Woodbury baselines (peak memory:
    /// `cargo bench --bench fixed_point`, which has a counting allocator).
    FixedPoint(BenchFixedPointArgs),
    /// conv2d forward+backward on the VGG11 layer shapes against the sgemms of each
    /// layer's im2col shape; optionally the VGG11 distillation step (--step-steps).
    Conv(fixpoint::bench::conv::BenchConvArgs),
    /// GEMM GFLOP/s and scan GB/s on the GPU against the CPU in the same run, with the
    /// GPU's error relative to the CPU (needs `--features gpu` and a wgpu adapter).
    Gpu(BenchGpuArgs),
}

#[derive(Args, Debug)]
struct BenchGpuArgs {
    /// Print one JSON object as the last line of stdout.
    #[arg(long)]
    json: bool,
    /// Repetitions per timing (the median is reported).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// GEMM size n (two n×n matrices).
    #[arg(long, default_value_t = 512)]
    gemm_n: usize,
    /// Scan shape B,T,D.
    #[arg(long, default_value = "8,4096,256")]
    scan_shape: String,
}

#[derive(Args, Debug)]
struct BenchFixedPointArgs {
    /// Print one JSON object as the last line of stdout.
    #[arg(long)]
    json: bool,
    /// Repetitions per timing (the median is reported).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// JSON printed by benches/peers/fp_iter_jax.py (`jax_fp_iter_ms`), for fp_iter_speedup_over_jax.
    #[arg(long, conflicts_with = "peer_jax")]
    peer_json: Option<PathBuf>,
    /// State sizes D (comma-separated; default 64,128,256).
    #[arg(long, value_delimiter = ',')]
    dims: Option<Vec<usize>>,
    /// Sequence lengths T (comma-separated; default 64,256,1024,4096).
    #[arg(long, value_delimiter = ',')]
    lens: Option<Vec<usize>>,
    /// Run the JAX peer (python3 benches/peers/fp_iter_jax.py) first, at the same thread
    /// count, and record its time beside ours (needs python3 with jax).
    #[arg(long)]
    peer_jax: bool,
}

/// Run `benches/peers/fp_iter_jax.py` at `threads` threads and return its JSON line.
fn run_jax_peer(threads: usize) -> CliResult<Value> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peers/fp_iter_jax.py");
    let script = if script.exists() { script } else { PathBuf::from("benches/peers/fp_iter_jax.py") };
    let out = std::process::Command::new("python3")
        .arg(&script)
        .args(["--threads", &threads.to_string(), "--batch", "8", "--dim", "128", "--time", "1024", "--rank", "2"])
        .env("JAX_PLATFORMS", "cpu")
        .output()
        .map_err(|e| format!("cannot run python3 {}: {e}", script.display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output");
        return Err(format!("the JAX peer {} failed: {last}", script.display()));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
    serde_json::from_str(line).map_err(|e| format!("the JAX peer printed no JSON line ({e}): {line:?}"))
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
struct DinoArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Print one JSON object as the last line of stdout (the same as summary.json).
    #[arg(long)]
    json: bool,
    /// The quick preset: MLP student, m = 4096, 8 epochs on a 20k subset of real
    /// Fashion-MNIST, probes on 10k train / 10k test images (under 10 minutes on 2 cores).
    #[arg(long)]
    quick: bool,
    /// fashion-mnist, cifar10, embedded (synthetic: no paper claim) or gaussian-noise.
    #[arg(long)]
    data: Option<String>,
    /// Directory of the dataset files (Fashion-MNIST IDX or CIFAR-10 binary batches).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Probe dataset of a gaussian-noise run (default: fashion-mnist when installed,
    /// else embedded).
    #[arg(long)]
    probe_data: Option<String>,
    /// How 28x28 images become 32x32: resize (bilinear) or pad.
    #[arg(long)]
    fit28: Option<String>,
    /// mlp, vit, vgg11 (no BN) or resnet18 (CIFAR stem, BN).
    #[arg(long)]
    student: Option<String>,
    /// Channel multiplier of the vgg11/resnet18 students (e.g. 0.25 for quick runs).
    #[arg(long)]
    width_mult: Option<f64>,
    /// Student interpolation factor: 0 = the teacher, 1 = an independent network.
    #[arg(long)]
    alpha: Option<f64>,
    /// Output dimension m of the head.
    #[arg(long)]
    out_dim: Option<usize>,
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long)]
    batch_size: Option<usize>,
    /// Constant AdamW learning rate.
    #[arg(long)]
    lr: Option<f32>,
    /// Weight decay of 1-D parameters (biases, norms); >=2-D parameters get none.
    #[arg(long)]
    wd_1d: Option<f32>,
    #[arg(long)]
    teacher_seed: Option<u64>,
    #[arg(long)]
    student_seed: Option<u64>,
    /// Seed of data subsets, generated data and batch order.
    #[arg(long)]
    data_seed: Option<u64>,
    #[arg(long)]
    probe_seed: Option<u64>,
    /// Images distilled on (a class-balanced subset; noise images for gaussian-noise).
    #[arg(long)]
    train_size: Option<usize>,
    /// Training images the probes are fitted on.
    #[arg(long)]
    probe_train_size: Option<usize>,
    /// Test images the probes are scored on.
    #[arg(long)]
    probe_test_size: Option<usize>,
    /// Normalise the head's last-layer weight per output unit (the paper's text; the
    /// reference code's layer does not).
    #[arg(long)]
    last_wn: bool,
    /// Run the teacher's full forward pass every step instead of caching its
    /// bottleneck outputs.
    #[arg(long)]
    no_cache_teacher: bool,
    /// The frozen teacher's batch norm (resnet18): eval_init (eval mode with the initial
    /// statistics, about the identity; the default, as in the reference code) or
    /// batch_stats (each batch's statistics; needs --no-cache-teacher).
    #[arg(long)]
    teacher_bn: Option<String>,
    #[arg(long)]
    teacher_temp: Option<f32>,
    #[arg(long)]
    student_temp: Option<f32>,
    /// DINO centering of the teacher logits with this momentum (off by default).
    #[arg(long)]
    center_momentum: Option<f32>,
    /// k-NN vote: l2_majority (default) or cosine_weighted.
    #[arg(long)]
    knn: Option<String>,
    /// Neighbours of the k-NN probe.
    #[arg(long)]
    k: Option<usize>,
    /// Linear probe on standardised features.
    #[arg(long)]
    probe_standardize: bool,
    /// MLP student hidden sizes, comma-separated.
    #[arg(long, value_delimiter = ',')]
    mlp_hidden: Option<Vec<usize>>,
    /// MLP student embedding size.
    #[arg(long)]
    embed_dim: Option<usize>,
    #[arg(long)]
    vit_patch: Option<usize>,
    #[arg(long)]
    vit_dim: Option<usize>,
    #[arg(long)]
    vit_depth: Option<usize>,
    #[arg(long)]
    vit_heads: Option<usize>,
    #[arg(long)]
    vit_mlp_dim: Option<usize>,
    /// Only time this many distillation steps (after 2 warm-up steps) on random images
    /// and print images/s; no data, no probes.
    #[arg(long)]
    bench_steps: Option<usize>,
}

/// Optimiser flags shared by the training commands (each overrides the preset).
#[derive(Args, Debug)]
struct OptimArgs {
    /// Peak learning rate.
    #[arg(long)]
    lr: Option<f32>,
    /// Learning rate at the end of the cosine decay.
    #[arg(long)]
    final_lr: Option<f32>,
    /// Linear warm-up steps (default: the preset's, at most a tenth of --steps).
    #[arg(long)]
    warmup: Option<usize>,
    /// AdamW weight decay (weights only).
    #[arg(long)]
    weight_decay: Option<f32>,
    /// Global gradient-norm clip (0 turns clipping off).
    #[arg(long)]
    clip: Option<f32>,
}

impl OptimArgs {
    fn apply(&self, lr: &mut f32, final_lr: &mut f32, warmup: &mut usize, wd: &mut f32, clip: &mut Option<f32>) {
        if let Some(v) = self.lr {
            *lr = v;
        }
        if let Some(v) = self.final_lr {
            *final_lr = v;
        }
        if let Some(v) = self.warmup {
            *warmup = v;
        }
        if let Some(v) = self.weight_decay {
            *wd = v;
        }
        if let Some(v) = self.clip {
            *clip = (v != 0.0).then_some(v);
        }
    }
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
    #[command(flatten)]
    optim: OptimArgs,
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
    /// The quick preset: A4, length 16, 1 layer, d 64, D 128, Householder rank 4 with the
    /// paper's alpha scale 1, batch 128, lr 1e-3 (100 warm-up steps, cosine), lmax 16, 3000
    /// steps (other flags override it).
    #[arg(long)]
    quick: bool,
    /// z2 (parity), z60, a4, a5, s5, copy or arith.
    #[arg(long)]
    task: Option<String>,
    /// fp-rnn, diagonal (Q = I), dense-seq, lstm, fp-mamba, mamba (Q = I, no y-dependence).
    #[arg(long)]
    model: Option<String>,
    /// householder:R (fp-rnn, dense-seq, fp-mamba), kronecker (fp-rnn, dense-seq, fp-mamba),
    /// dplr:R (fp-mamba only: DPLR is not contractive, spec §8.12).
    #[arg(long)]
    mixer: Option<String>,
    /// one-step, implicit or phantom-K (K >= 1): one for every layer, or one per layer
    /// separated by commas.
    #[arg(long)]
    backward: Option<String>,
    /// Kronecker normalisation (§8.2): spectral (default) or rows.
    #[arg(long)]
    kron_norm: Option<String>,
    /// Householder alpha scale (§8.1): 2 (reference code, default) or 1 (paper).
    #[arg(long)]
    hh_alpha_scale: Option<f32>,
    /// The short depthwise causal convolutions (kernel 4) of §4.2 / §4.3.
    #[arg(long)]
    short_conv: bool,
    /// FP-Mamba: B and C do not depend on the shifted output (the Table 1 ablation).
    #[arg(long)]
    no_bc_y_dependence: bool,
    /// FP-Mamba / Mamba: apply the SiLU(z) gate inside every iteration (glu_in_loop).
    #[arg(long)]
    glu_in_loop: bool,
    /// N of the FP-Mamba / Mamba blocks.
    #[arg(long)]
    d_state: Option<usize>,
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
    #[command(flatten)]
    optim: OptimArgs,
    /// Solver iteration cap in training (evaluation uses 4·T).
    #[arg(long)]
    lmax: Option<usize>,
    /// How the training cap is drawn per batch (§8.3): fixed (--lmax), paper (ceil Γ(4, 1))
    /// or code (ceil Γ(4, T/16 + 1)).
    #[arg(long)]
    lmax_dist: Option<String>,
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
    a.optim.apply(&mut c.lr, &mut c.final_lr, &mut c.warmup_steps, &mut c.weight_decay, &mut c.clip_norm);
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

fn cmd_bench_fixed_point(a: &BenchFixedPointArgs) -> CliResult<()> {
    let mut opts = fixpoint::bench::fixed_point::FixedPointOpts { reps: a.reps.max(1), ..Default::default() };
    if let Some(v) = &a.dims {
        if v.contains(&0) {
            return Err("--dims must be positive".into());
        }
        opts.dims = v.clone();
    }
    if let Some(v) = &a.lens {
        if v.contains(&0) {
            return Err("--lens must be positive".into());
        }
        opts.lens = v.clone();
    }
    let peer = match (&a.peer_json, a.peer_jax) {
        (Some(p), _) => {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            Some(serde_json::from_str::<Value>(&text).map_err(|e| format!("{}: not JSON: {e}", p.display()))?)
        }
        (None, true) => Some(run_jax_peer(rayon::current_num_threads())?),
        (None, false) => None,
    };
    if let Some(v) = &peer {
        opts.peer_jax_iter_ms = Some(
            v["jax_fp_iter_ms"].as_f64().ok_or_else(|| format!("the JAX peer gave no number jax_fp_iter_ms: {v}"))?,
        );
    }
    let mut out = fixpoint::bench::fixed_point::run(&opts).map_err(|e| e.to_string())?;
    if let Some(v) = peer {
        out["jax_peer"] = v;
        out["jax_peer"]["source"] =
            json!(if a.peer_jax { "run by --peer-jax in this invocation" } else { "--peer-json" });
    }
    for key in ["fp_iter_time_over_scan", "fp_fwd_speedup_over_dense_d256_t1024", "fp_iter_speedup_over_jax"] {
        if let Some(v) = out.get(key).and_then(Value::as_f64) {
            println!("{key:<40} {v:.3}");
        }
    }
    if a.json {
        println!("{out}");
    }
    Ok(())
}

/// Parse `--model`: the kinds of `fpr::ModelKind`.
fn parse_model(s: &str) -> CliResult<ModelKind> {
    ModelKind::parse(s).map_err(|_| format!("unknown model {s:?} (fp-rnn, fp-mamba, diagonal, mamba, dense-seq, lstm)"))
}

/// Parse `--backward`: one mode, or one per layer separated by commas.
fn parse_backward(s: &str, layers: usize) -> CliResult<Vec<BackwardMode>> {
    let modes = s
        .split(',')
        .map(|m| {
            BackwardMode::parse(m.trim())
                .map_err(|_| format!("unknown backward {m:?} (one-step, implicit, phantom-K with K >= 1)"))
        })
        .collect::<CliResult<Vec<_>>>()?;
    if modes.len() != 1 && modes.len() != layers {
        return Err(format!("--backward names {} modes for {layers} layers (give one, or one per layer)", modes.len()));
    }
    Ok(modes)
}

/// Apply `--mixer` to a config for `model`.
fn apply_mixer(c: &mut FprnnConfig, mixer: &str) -> CliResult<()> {
    let model = c.model;
    let (kind, arg) = mixer.split_once(':').map_or((mixer, None), |(k, a)| (k, Some(a)));
    let rank = |a: Option<&str>| -> CliResult<Option<usize>> {
        a.map(|a| a.parse::<usize>().map_err(|_| format!("bad mixer rank {a:?} in {mixer:?}"))).transpose()
    };
    let with_mixer = matches!(model, ModelKind::FpRnn | ModelKind::DenseSeq | ModelKind::FpMamba);
    match kind {
        "householder" | "h" => {
            if !with_mixer {
                return Err(format!("mixer {mixer} is not allowed with model {} (it has no mixer)", model.name()));
            }
            c.mixer = None;
            match rank(arg)? {
                Some(0) => Err("the Householder rank must be at least 1".into()),
                Some(r) => {
                    c.rank = r;
                    Ok(())
                }
                None => Ok(()),
            }
        }
        "kronecker" | "k" if with_mixer => {
            let norm = match arg {
                None => KronNorm::Spectral,
                Some(a) => {
                    KronNorm::parse(a).map_err(|_| format!("bad Kronecker norm {a:?} in {mixer:?} (rows, spectral)"))?
                }
            };
            c.mixer = Some(MixerKind::Kronecker { norm, detach_rho: false });
            Ok(())
        }
        "dplr" if model == ModelKind::FpMamba => match rank(arg)? {
            Some(0) => Err("the DPLR rank must be at least 1".into()),
            r => {
                c.mixer = Some(MixerKind::Dplr { rank: r.unwrap_or(c.rank) });
                Ok(())
            }
        },
        "identity" | "none" if model == ModelKind::Diagonal || (kind == "none" && model == ModelKind::Lstm) => Ok(()),
        "identity" | "none" => Err(format!("mixer {mixer} is not allowed with model {}", model.name())),
        "dplr" if matches!(model, ModelKind::FpRnn | ModelKind::DenseSeq) => Err(format!(
            "mixer {mixer} is not allowed with model {}: DPLR is not contractive (spec §4.4)",
            model.name()
        )),
        "kronecker" | "k" | "dplr" => Err(format!("mixer {mixer} is not allowed with model {}", model.name())),
        _ => Err(format!("unknown mixer {mixer:?} (householder:R, kronecker, dplr:R)")),
    }
}

fn fprnn_config(a: &FprnnArgs) -> CliResult<FprnnConfig> {
    let model = match (&a.model, a.quick) {
        (Some(m), _) => parse_model(m)?,
        (None, true) => ModelKind::FpRnn,
        (None, false) => {
            return Err(
                "--model is required (fp-rnn, fp-mamba, diagonal, mamba, dense-seq, lstm) unless --quick".into()
            );
        }
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
    if let Some(v) = a.layers {
        c.n_layers = v;
    }
    if let Some(b) = &a.backward {
        c.backward = parse_backward(b, c.n_layers)?;
    }
    if let Some(v) = a.hh_alpha_scale {
        if v != 1.0 && v != 2.0 {
            return Err(format!("--hh-alpha-scale must be 1 (paper) or 2 (reference code), got {v}"));
        }
        c.alpha_scale = v;
    }
    if let Some(m) = &a.mixer {
        apply_mixer(&mut c, m)?;
    }
    if let Some(n) = &a.kron_norm {
        let norm = KronNorm::parse(n).map_err(|_| format!("unknown --kron-norm {n:?} (rows, spectral)"))?;
        match &mut c.mixer {
            Some(MixerKind::Kronecker { norm: m, .. }) => *m = norm,
            _ => return Err("--kron-norm needs --mixer kronecker".into()),
        }
    }
    let mamba = matches!(c.model, ModelKind::FpMamba | ModelKind::Mamba);
    if a.no_bc_y_dependence {
        if c.model != ModelKind::FpMamba {
            return Err(format!("--no-bc-y-dependence is for fp-mamba, not {}", c.model.name()));
        }
        c.bc_y_dependence = false;
    }
    if a.glu_in_loop && !mamba {
        return Err(format!("--glu-in-loop is for fp-mamba and mamba, not {}", c.model.name()));
    }
    c.glu_in_loop = a.glu_in_loop;
    if a.short_conv && matches!(c.model, ModelKind::Lstm) {
        return Err("--short-conv is not allowed with model lstm".into());
    }
    c.short_conv = a.short_conv;
    if let Some(v) = a.d_state {
        if !mamba {
            return Err(format!("--d-state is for fp-mamba and mamba, not {}", c.model.name()));
        }
        c.d_state = v;
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
    a.optim.apply(&mut c.lr, &mut c.final_lr, &mut c.warmup, &mut c.weight_decay, &mut c.clip);
    if let Some(v) = a.lmax {
        c.lmax = v;
    }
    if let Some(v) = &a.lmax_dist {
        c.lmax_dist = fixpoint::train::fprnn::LmaxDist::parse(v).map_err(|e| e.to_string())?;
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

fn cmd_fprnn(a: &FprnnArgs, device: fixpoint::Device) -> CliResult<()> {
    let c = FprnnConfig { device, ..fprnn_config(a)? };
    // Before the run directory exists (a model without a GPU path is refused here).
    c.validate().map_err(|e| e.to_string())?;
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
        let mut fields = vec![
            ("loss", info.loss as f64),
            ("lr", lr as f64),
            ("token_acc", info.token_acc),
            ("iterations", info.iterations),
        ];
        if let Some(i) = info.adjoint_iterations {
            fields.push(("adjoint_iterations", i));
        }
        run.log(step, &fields).map_err(e)?;
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
    if let Some(split) = t.step_split() {
        let total: f64 = split.iter().sum();
        let parts: Vec<String> = fixpoint::train::fprnn::STEP_SPLIT
            .iter()
            .zip(split)
            .map(|(k, v)| format!("{k} {:.1} s ({:.1}%)", v, 100.0 * v / total.max(1e-12)))
            .collect();
        println!("training step time split (FIXPOINT_PROFILE): {}", parts.join(", "));
    }
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

fn data_choice(name: &str, dir: &Option<PathBuf>, fit28: Fit28, probe: Option<&str>) -> CliResult<DataChoice> {
    Ok(match name {
        "fashion-mnist" => DataChoice::FashionMnist { dir: dir.clone(), fit28 },
        "cifar10" => DataChoice::Cifar10 {
            dir: dir.clone().ok_or("--data cifar10 needs --data-dir (the cifar-10-batches-bin directory)")?,
        },
        "embedded" => DataChoice::Embedded(EmbeddedConfig::default()),
        "gaussian-noise" => {
            let probe = match probe {
                Some("gaussian-noise") => return Err("--probe-data cannot be gaussian-noise".into()),
                Some(p) => data_choice(p, dir, fit28, None)?,
                None => DataChoice::real_or_embedded(dir.clone()),
            };
            DataChoice::GaussianNoise { probe: Box::new(probe) }
        }
        other => return Err(format!("unknown --data {other:?} (fashion-mnist, cifar10, embedded, gaussian-noise)")),
    })
}

fn dino_config(a: &DinoArgs) -> CliResult<DinoConfig> {
    let mut c = if a.quick { DinoConfig::quick() } else { DinoConfig::default() };
    let fit28 = a.fit28.as_deref().map(Fit28::parse).transpose().map_err(|e| e.to_string())?.unwrap_or_default();
    if a.data.is_some() || a.data_dir.is_some() || a.fit28.is_some() || a.probe_data.is_some() {
        c.data =
            data_choice(a.data.as_deref().unwrap_or("fashion-mnist"), &a.data_dir, fit28, a.probe_data.as_deref())?;
    }
    match a.student.as_deref() {
        None | Some("mlp") => {
            let mut m = MlpEncoderConfig::default();
            if let Some(h) = &a.mlp_hidden {
                m.hidden = h.clone();
            }
            if let Some(e) = a.embed_dim {
                m.embed_dim = e;
            }
            c.encoder = EncoderConfig::Mlp(m);
        }
        Some("vit") => {
            let mut v = VitConfig::default();
            v.patch = a.vit_patch.unwrap_or(v.patch);
            v.dim = a.vit_dim.unwrap_or(v.dim);
            v.depth = a.vit_depth.unwrap_or(v.depth);
            v.heads = a.vit_heads.unwrap_or(v.heads);
            v.mlp_dim = a.vit_mlp_dim.unwrap_or(4 * v.dim);
            c.encoder = EncoderConfig::Vit(v);
        }
        Some(name @ ("vgg11" | "resnet18")) => {
            let cc = fixpoint::dino::ConvNetConfig { width_mult: a.width_mult.unwrap_or(1.0) };
            cc.validate("--width-mult").map_err(|e| e.to_string())?;
            c.encoder = if name == "vgg11" { EncoderConfig::Vgg11(cc) } else { EncoderConfig::ResNet18(cc) };
        }
        Some(other) => return Err(format!("unknown --student {other:?} (mlp, vit, vgg11, resnet18)")),
    }
    macro_rules! set {
        ($($field:ident),*) => { $( if let Some(v) = a.$field { c.$field = v; } )* };
    }
    set!(alpha, out_dim, epochs, batch_size, lr, wd_1d, teacher_seed, student_seed, data_seed, probe_seed);
    if a.train_size.is_some() {
        c.train_size = a.train_size;
    }
    if a.probe_train_size.is_some() {
        c.probe_train_size = a.probe_train_size;
    }
    if a.probe_test_size.is_some() {
        c.probe_test_size = a.probe_test_size;
    }
    c.last_wn |= a.last_wn;
    c.cache_teacher &= !a.no_cache_teacher;
    if let Some(v) = &a.teacher_bn {
        c.teacher_bn = fixpoint::train::dino::TeacherBn::parse(v)?;
    }
    if let Some(v) = a.teacher_temp {
        c.loss.teacher_temp = v;
    }
    if let Some(v) = a.student_temp {
        c.loss.student_temp = v;
    }
    if a.center_momentum.is_some() {
        c.loss.center_momentum = a.center_momentum;
    }
    if let Some(v) = &a.knn {
        c.probe.vote = KnnVote::parse(v).map_err(|e| e.to_string())?;
    }
    if let Some(k) = a.k {
        c.probe.k = k;
    }
    c.probe.linear.standardize |= a.probe_standardize;
    c.validate().map_err(|e| e.to_string())?;
    Ok(c)
}

fn f64num(x: f64) -> Value {
    if x.is_finite() { json!(x) } else { Value::Null }
}

fn probe_json(p: &ProbeResult) -> Value {
    json!({ "knn": f64num(p.knn), "linear": f64num(p.linear) })
}

fn dino_json(c: &DinoConfig, r: &DinoReport, preset: &str) -> Value {
    let history: Vec<Value> = r
        .history
        .iter()
        .map(|e| {
            json!({
                "epoch": e.epoch,
                "mean_loss": f64num(e.mean_loss),
                "mean_kl": f64num(e.mean_kl),
                "teacher": probe_json(&e.teacher),
                "student": probe_json(&e.student),
                "pixels": probe_json(&e.pixels),
                "train_s": e.train_s,
                "probe_s": e.probe_s,
            })
        })
        .collect();
    let mut v = json!({
        "dataset": r.info.dataset,
        "probe_dataset": r.info.probe_dataset,
        "claim": r.info.claim,
        "preset": preset,
        "student_model": r.student_model,
        "alpha": r.alpha,
        "out_dim": r.out_dim,
        "epochs": r.epochs,
        "stopped_early": r.stopped_early,
        "teacher_seed": r.teacher_seed,
        "student_seed": r.student_seed,
        "data_seed": c.data_seed,
        "train_size": r.info.train_size,
        "probe_train_size": r.info.probe_train_size,
        "probe_test_size": r.info.probe_test_size,
        "batch_size": c.batch_size,
        "lr": num(c.lr),
        "wd_1d": num(c.wd_1d),
        "last_wn": c.last_wn,
        "cache_teacher": c.cache_teacher,
        "teacher_bn": c.teacher_bn.name(),
        "teacher_temp": num(c.loss.teacher_temp),
        "student_temp": num(c.loss.student_temp),
        "center_momentum": c.loss.center_momentum.map(num),
        "knn": c.probe.vote.name(),
        "k": c.probe.k,
        "encoder_params": r.info.encoder_params,
        "head_params": r.info.head_params,
        "student_differs": r.info.student_differs,
        "wall_s": r.wall_s,
        "train_s": r.train_s,
        "cache_s": r.cache_s,
        "images_per_s": f64num(r.images_per_s),
        "final_loss": r.losses.last().copied().map(num),
        "probes": {
            "teacher": probe_json(&r.probes.teacher),
            "student": probe_json(&r.probes.student),
            "student_best": probe_json(&r.probes.student_best),
            "pixels": probe_json(&r.probes.pixels),
        },
        "history": history,
    });
    // KL trace (spec §8.5: logged in f64): the student starts at the teacher (KL ~ 0),
    // the KL peaks after the first updates and then falls as the student fits.
    v["first_kl"] = r.kls.first().copied().map_or(Value::Null, f64num);
    v["kl_peak"] = r.kl_peak().map_or(Value::Null, |(_, k)| f64num(k));
    v["kl_peak_step"] = r.kl_peak().map_or(Value::Null, |(s, _)| json!(s));
    v["kl_final"] = f64num(r.kl_final());
    v
}

/// Plain progress lines on stdout.
struct PrintHooks {
    every: usize,
    print: bool,
}

/// `PrintHooks` plus the run harness: metrics per step and per epoch, a checkpoint of
/// the student after every epoch (and on SIGINT), stop on SIGINT/SIGTERM.
struct HarnessHooks {
    print: PrintHooks,
    /// Started in `on_start`, once the data has loaded, so that bad data leaves no run
    /// directory behind and prints one line.
    run: Option<Run>,
    start: Option<(Value, fixpoint::run::RunOptions)>,
    error: Option<String>,
    last_step: u64,
    epochs: Vec<EpochRecord>,
    last_ckpt: Option<fixpoint::run::Checkpoint>,
}

impl HarnessHooks {
    fn keep(&mut self, r: fixpoint::Result<impl Sized>) {
        if let Err(e) = r
            && self.error.is_none()
        {
            self.error = Some(e.to_string());
        }
    }
}

impl DinoHooks for HarnessHooks {
    fn on_start(&mut self, i: &RunInfo) {
        if let Some((config, opts)) = self.start.take() {
            match Run::start("dino", config, i.total_steps as u64, opts) {
                Ok(run) => self.run = Some(run),
                Err(e) => self.error = Some(e.to_string()),
            }
        }
        self.print.on_start(i);
    }
    fn on_step(&mut self, st: &StepInfo) {
        self.last_step = st.step as u64 + 1;
        let Some(run) = self.run.as_mut() else { return };
        let r = run.log(
            self.last_step,
            &[("loss", st.loss as f64), ("kl", st.kl), ("lr", st.lr as f64), ("epoch", st.epoch as f64)],
        );
        self.keep(r);
    }
    fn on_epoch(&mut self, e: &EpochRecord, student: &fixpoint::dino::DinoModel) {
        self.print.on_epoch(e, student);
        let fields = [
            ("epoch", e.epoch as f64),
            ("teacher_knn", e.teacher.knn),
            ("teacher_linear", e.teacher.linear),
            ("student_knn", e.student.knn),
            ("student_linear", e.student.linear),
            ("pixels_knn", e.pixels.knn),
            ("pixels_linear", e.pixels.linear),
        ];
        self.epochs.push(e.clone());
        let Some(run) = self.run.as_mut() else { return };
        let r = run.log_eval(self.last_step, &fields);
        self.keep(r);
    }
    fn should_stop(&mut self) -> bool {
        self.run.as_ref().is_some_and(|r| r.interrupted()) || self.error.is_some()
    }
    fn resume(&mut self) -> Option<fixpoint::run::Checkpoint> {
        let ck = self.run.as_mut()?.take_resumed()?;
        self.last_step = ck.step;
        Some(ck)
    }
    /// A checkpoint after every epoch and every --ckpt-every steps.
    fn on_state(&mut self, state: &fixpoint::train::dino::DinoState<'_>, epoch_end: bool) {
        let Some(run) = self.run.as_mut() else { return };
        if !epoch_end && !run.checkpoint_due(state.step()) {
            return;
        }
        let ck = state.save(run.checkpoint(state.step()));
        let saved = run.save_checkpoint(&ck).map(|_| ());
        self.keep(saved);
        self.last_ckpt = Some(ck);
    }
}

/// `probe_accuracy.png`: teacher, student and pixels, k-NN and linear, per epoch.
fn plot_probes(dir: &std::path::Path, epochs: &[EpochRecord]) -> fixpoint::Result<()> {
    use fixpoint::run::plot::{LinePlot, Series, lines};
    type Pick = fn(&EpochRecord) -> f64;
    let curves: [(&str, Pick); 6] = [
        ("teacher k-NN", |e| e.teacher.knn),
        ("student k-NN", |e| e.student.knn),
        ("pixels k-NN", |e| e.pixels.knn),
        ("teacher linear", |e| e.teacher.linear),
        ("student linear", |e| e.student.linear),
        ("pixels linear", |e| e.pixels.linear),
    ];
    let series = curves
        .iter()
        .map(|(label, f)| Series {
            label: label.to_string(),
            points: epochs.iter().map(|e| (e.epoch as f64, f(e))).collect(),
        })
        .collect();
    let plot = LinePlot {
        title: "Probe accuracy".into(),
        x_label: "epoch".into(),
        y_label: "accuracy (%)".into(),
        log_y: false,
        series,
    };
    lines(&dir.join("probe_accuracy.png"), &plot).map(|_| ())
}

impl DinoHooks for PrintHooks {
    fn on_start(&mut self, i: &RunInfo) {
        self.every = (i.steps_per_epoch / 4).max(1);
        if self.print {
            let claim = if i.claim.is_empty() { String::new() } else { format!(" [{}]", i.claim) };
            println!(
                "dino: distil on {} ({} images), probe on {} ({} train / {} test){claim}; encoder {} + head {} params; student differs from teacher in {} values",
                i.dataset,
                i.train_size,
                i.probe_dataset,
                i.probe_train_size,
                i.probe_test_size,
                i.encoder_params,
                i.head_params,
                i.student_differs
            );
        }
    }
    fn on_step(&mut self, s: &StepInfo) {
        if self.print && s.step.is_multiple_of(self.every) {
            println!(
                "  epoch {:>3} step {:>6}  loss {:.6}  kl {:.3e}  {:.0} img/s",
                s.epoch,
                s.step,
                s.loss,
                s.kl,
                s.batch_size as f64 / s.seconds
            );
        }
    }
    fn on_epoch(&mut self, e: &EpochRecord, _student: &fixpoint::dino::DinoModel) {
        if self.print {
            println!(
                "epoch {:>3}  kl {:.3e}  knn/linear %: teacher {:.2}/{:.2}  student {:.2}/{:.2}  pixels {:.2}/{:.2}  ({:.1} s train, {:.1} s probes)",
                e.epoch,
                e.mean_kl,
                e.teacher.knn,
                e.teacher.linear,
                e.student.knn,
                e.student.linear,
                e.pixels.knn,
                e.pixels.linear,
                e.train_s,
                e.probe_s
            );
        }
    }
}

fn bench_json(b: &StepBench) -> Value {
    json!({
        "student_model": b.student_model,
        "batch_size": b.batch_size,
        "out_dim": b.out_dim,
        "params": b.params,
        "median_step_s": b.median_s,
        "median_optimizer_s": b.median_optimizer_s,
        "images_per_s": b.images_per_s,
        "step_s": b.step_s,
    })
}

fn cmd_dino(a: &DinoArgs, device: fixpoint::Device) -> CliResult<()> {
    let c = DinoConfig { device, ..dino_config(a)? };
    // Runs inside the pool that main built from the global --threads.
    if let Some(steps) = a.bench_steps {
        let batch = a.batch_size.unwrap_or(128);
        let b = bench_distill_step_on(device, &c.encoder, c.out_dim, batch, 2, steps).map_err(|e| e.to_string())?;
        println!(
            "dino step bench: {} student ({} params), batch {}, m = {}: median {:.1} ms/step ({:.1} ms AdamW), {:.1} images/s ({} threads)",
            b.student_model,
            b.params,
            b.batch_size,
            b.out_dim,
            1e3 * b.median_s,
            1e3 * b.median_optimizer_s,
            b.images_per_s,
            rayon::current_num_threads()
        );
        if a.json {
            println!("{}", bench_json(&b));
        }
        return Ok(());
    }
    let preset = if a.quick { "quick" } else { "full" };
    let mut config = json!({"command": "dino", "preset": preset, "config": format!("{c:?}")});
    config["threads"] = json!(rayon::current_num_threads());
    let mut hooks = HarnessHooks {
        print: PrintHooks { every: 1, print: !a.run.quiet },
        run: None,
        start: Some((config, a.run.options())),
        error: None,
        last_step: 0,
        epochs: Vec::new(),
        last_ckpt: None,
    };
    let r = train_dino(&c, &mut hooks).map_err(|e| e.to_string());
    let (error, epochs, last_ckpt) = (hooks.error.take(), std::mem::take(&mut hooks.epochs), hooks.last_ckpt.take());
    if let Some(e) = error {
        return Err(e);
    }
    let r = r?;
    let run = hooks.run.take().ok_or("dino: training ended before its run directory was created")?;
    let p = &r.probes;
    println!(
        "dino {} ({}): teacher {:.2}/{:.2}  student last {:.2}/{:.2}  best {:.2}/{:.2}  pixels {:.2}/{:.2} (knn/linear %)",
        r.student_model,
        r.info.dataset,
        p.teacher.knn,
        p.teacher.linear,
        p.student.knn,
        p.student.linear,
        p.student_best.knn,
        p.student_best.linear,
        p.pixels.knn,
        p.pixels.linear
    );
    println!("wall {:.1} s, distillation {:.1} s at {:.1} images/s", r.wall_s, r.train_s, r.images_per_s);
    let ck = last_ckpt.unwrap_or_else(|| run.checkpoint(0));
    if let Err(e) = plot_probes(run.path(), &epochs) {
        eprintln!("warning: probe_accuracy.png not drawn: {e}");
    }
    if run.interrupted() && r.stopped_early {
        let code = run.finish_interrupted(&ck).map_err(|e| e.to_string())?;
        std::process::exit(code);
    }
    let line = run.finish(&dino_json(&c, &r, preset), &ck).map_err(|e| e.to_string())?;
    if a.json {
        println!("{line}");
    }
    Ok(())
}

fn cmd_reproduce(a: &ReproduceArgs) -> CliResult<()> {
    let preset = if a.quick { "quick" } else { "full" };
    let c = if a.quick { MlpConfig::quick() } else { MlpConfig::default() };
    let r = run_mlp(&c, false)?;
    // Random teacher: the smoke preset with --quick, the dino --quick preset otherwise,
    // on real Fashion-MNIST when installed and the embedded set otherwise.
    let base = if a.quick { DinoConfig::smoke() } else { DinoConfig::quick() };
    let dc = DinoConfig { data: DataChoice::real_or_embedded(None), ..base };
    let mut quiet = PrintHooks { every: 1, print: false };
    let dr = train_dino(&dc, &mut quiet).map_err(|e| e.to_string())?;
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
    let p = &dr.probes;
    let claim = if dr.info.claim.is_empty() { String::new() } else { format!(" [{}]", dr.info.claim) };
    println!(
        "random_teacher {preset} on {}{claim}: knn/linear % teacher {:.2}/{:.2}, student {:.2}/{:.2} (best {:.2}/{:.2}), pixels {:.2}/{:.2}; {} epochs, {:.1} s",
        dr.info.dataset,
        p.teacher.knn,
        p.teacher.linear,
        p.student.knn,
        p.student.linear,
        p.student_best.knn,
        p.student_best.linear,
        p.pixels.knn,
        p.pixels.linear,
        dr.epochs,
        dr.wall_s
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
        println!(
            "{}",
            json!({ "mlp": mlp_json(&c, Some(&r), preset), "random_teacher": dino_json(&dc, &dr, preset), "state_tracking": st })
        );
    }
    Ok(())
}

#[cfg(feature = "gpu")]
fn cmd_bench_gpu(a: &BenchGpuArgs) -> CliResult<()> {
    let dims: Vec<usize> = a
        .scan_shape
        .split(',')
        .map(|v| v.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("--scan-shape: expected B,T,D, got {:?}", a.scan_shape))?;
    let [b, t, d] = dims[..] else { return Err(format!("--scan-shape: expected B,T,D, got {:?}", a.scan_shape)) };
    let opts = fixpoint::gpu::bench::GpuBenchOpts { gemm_n: a.gemm_n, scan_shape: [b, t, d], reps: a.reps.max(1) };
    let r = fixpoint::gpu::bench::run(&opts).map_err(|e| e.to_string())?;
    println!("bench gpu: adapter {}; medians of {} repetitions", r.adapter, opts.reps);
    let n = opts.gemm_n;
    let line = |what: String, t: &fixpoint::gpu::bench::Timing, unit: &str| {
        println!(
            "  {what:<18} cpu {:8.2} ms ({:7.1} {unit})   gpu {:8.2} ms ({:7.1} {unit})   max rel err {:.2e}",
            t.cpu_s * 1e3,
            t.cpu_rate(),
            t.gpu_s * 1e3,
            t.gpu_rate(),
            t.max_rel_err
        )
    };
    line(format!("gemm {n}x{n}x{n}:"), &r.gemm, "GFLOP/s");
    line(format!("scan {b}x{t}x{d}:"), &r.scan, "GB/s");
    if a.json {
        println!("{}", r.to_json());
    }
    Ok(())
}

#[cfg(not(feature = "gpu"))]
fn cmd_bench_gpu(_: &BenchGpuArgs) -> CliResult<()> {
    Err(no_gpu_build())
}

#[cfg(not(feature = "gpu"))]
fn no_gpu_build() -> String {
    "this build has no GPU support: rebuild with `cargo build --release --features gpu`".into()
}

/// `--device gpu` for a training job: which jobs have no GPU path and why; the adapter
/// check comes first, so a missing adapter is reported as such.
fn check_device(device: fixpoint::Device, command: &Command) -> CliResult<()> {
    if device == fixpoint::Device::Cpu {
        return Ok(());
    }
    let job = match command {
        // The jobs check their models (on the GPU: the MLP student; fp-rnn and diagonal).
        Command::Dino(_) | Command::Fprnn(_) => None,
        Command::Mlp(_) => Some("mlp"),
        Command::Reproduce(_) => Some("reproduce"),
        Command::Tickets(_) => Some("tickets"),
        Command::Lmc(_) => Some("lmc"),
        Command::Runs(_) | Command::Bench(_) => return Ok(()),
    };
    // No feature, or no adapter: that error, naming what was looked for.
    fixpoint::Tensor::zeros([1]).to_device(device).map_err(|e| format!("--device gpu: {e}"))?;
    match job {
        None => Ok(()),
        Some(job) => Err(format!(
            "--device gpu: the `{job}` job does not run on the GPU yet (on the GPU: `fixpoint dino --student mlp`, \
             `fixpoint fprnn --model fp-rnn|diagonal`, `fixpoint bench gpu`, and the library's ops through \
             Tensor::to_device / nn::to_device)"
        )),
    }
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

/// Parse a command line (`args[0]` is the program name) and build the configuration of
/// a training command, without running anything: what `fuzz/fuzz_targets/cli.rs`
/// exercises (it includes this file as a module). A bad command line is an `Err` with
/// one line, never a panic.
#[allow(dead_code)]
pub fn check_command_line(args: &[String]) -> CliResult<()> {
    let cli = Cli::try_parse_from(args).map_err(|e| clap_one_line(&e))?;
    match &cli.command {
        Command::Mlp(a) => mlp_config(a).map(drop),
        Command::Fprnn(a) => fprnn_config(a).map(drop),
        Command::Dino(a) => dino_config(a).map(drop),
        _ => Ok(()),
    }
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
                eprintln!(
                    "error: no subcommand given (mlp, fprnn, dino, reproduce, bench, runs); see `fixpoint --help`"
                );
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
    if let Err(msg) = check_device(cli.device, &cli.command) {
        eprintln!("error: {msg}");
        return ExitCode::FAILURE;
    }
    let result = fixpoint::cpu::par::with_threads(threads, || match &cli.command {
        Command::Mlp(a) => cmd_mlp(a),
        Command::Dino(a) => cmd_dino(a, cli.device),
        Command::Fprnn(a) => cmd_fprnn(a, cli.device),
        Command::Reproduce(a) => cmd_reproduce(a),
        Command::Tickets(a) => fixpoint::train::tickets::analysis_cli(a, false),
        Command::Lmc(a) => fixpoint::train::tickets::analysis_cli(a, true),
        Command::Bench(BenchCommand::Core(a)) => cmd_bench_core(a),
        Command::Bench(BenchCommand::Scan(a)) => bench_scan_cli(a.clone(), cli.threads).map_err(|e| e.to_string()),
        Command::Runs(c) => cmd_runs(c),
        Command::Bench(BenchCommand::FixedPoint(a)) => cmd_bench_fixed_point(a),
        Command::Bench(BenchCommand::Conv(a)) => fixpoint::bench::conv::bench_conv_cli(a),
        Command::Bench(BenchCommand::Gpu(a)) => cmd_bench_gpu(a),
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
