//! A toy training run on the run harness (linear regression, minibatch SGD with momentum),
//! used by `tests/run_signals.rs` to exercise signals, checkpoints and `--resume` in a
//! real process. Deterministic: the same arguments give bit-identical parameters, also
//! when the run is interrupted and resumed.

use clap::Parser;
use fixpoint::run::{Run, RunArgs};
use fixpoint::{Result, Rng, Tensor};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(about = "Train a toy linear regression with the run harness")]
struct Args {
    #[command(flatten)]
    run: RunArgs,
    #[arg(long, default_value_t = 120)]
    steps: u64,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    #[arg(long, default_value_t = 0.02)]
    lr: f64,
    /// Sleep this long in every step (so that a test can signal the run mid-way)
    #[arg(long, default_value_t = 0)]
    sleep_ms: u64,
    /// Ask the run to stop after this step, as a first Ctrl-C would
    #[arg(long)]
    stop_at: Option<u64>,
    /// After a stop request, wait this long before writing the checkpoint (tests a second signal)
    #[arg(long, default_value_t = 0)]
    linger_ms: u64,
    /// Plain progress lines every N steps
    #[arg(long, default_value_t = 0)]
    progress_every: u64,
    /// Evaluate on the whole data set every N steps
    #[arg(long, default_value_t = 25)]
    eval_every: u64,
    /// Print the summary as one JSON line
    #[arg(long)]
    json: bool,
}

const N: usize = 48;
const D: usize = 3;
const BATCH: usize = 8;

struct Data {
    x: Vec<f32>,
    y: Vec<f32>,
}

fn make_data(root: &Rng) -> Data {
    let mut r = root.stream("data");
    let w_true = [1.5f32, -2.0, 0.5];
    let x: Vec<f32> = (0..N * D).map(|_| r.normal()).collect();
    let y = (0..N).map(|i| (0..D).map(|j| x[i * D + j] * w_true[j]).sum::<f32>() + 0.3 + 0.1 * r.normal()).collect();
    Data { x, y }
}

fn loss(x: &[f32], y: &[f32], rows: usize, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    let xt = Tensor::from_slice(x, [rows, D])?;
    let yt = Tensor::from_slice(y, [rows, 1])?;
    xt.matmul(w)?.add(b)?.sub(&yt)?.square().mean_all()
}

fn main() {
    let args = Args::parse();
    match train(&args) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}

fn train(args: &Args) -> Result<i32> {
    let mut opts = args.run.options();
    opts.log_every = args.progress_every;
    let config = json!({ "steps": args.steps, "seed": args.seed, "lr": args.lr, "batch": BATCH });
    let mut run = Run::start("harness-demo", config, args.steps, opts)?;

    let root = Rng::new(args.seed);
    let data = make_data(&root);
    let mut init = root.stream("init");
    let mut w = Tensor::from_vec((0..D).map(|_| 0.1 * init.normal()).collect(), [D, 1])?.requires_grad_();
    let mut b = Tensor::zeros([1]).requires_grad_();
    let (mut vw, mut vb) = (vec![0f32; D], vec![0f32; 1]);
    // `shuffle` is stored as it was at the start of the epoch, so that the epoch's
    // permutation can be drawn again on resume; `noise` advances every step.
    let mut shuffle = root.stream("shuffle");
    let mut noise = root.stream("noise");
    let mut epoch_start = shuffle.clone();
    let mut perm = shuffle.permutation(N);
    let mut cursor = 0usize;
    let mut step = 0u64;

    if let Some(ck) = run.take_resumed() {
        w.assign(ck.param("w")?)?;
        b.assign(ck.param("b")?)?;
        vw = ck.optim_state("w.momentum")?.to_vec();
        vb = ck.optim_state("b.momentum")?.to_vec();
        shuffle = ck.rng("shuffle")?;
        epoch_start = shuffle.clone();
        perm = shuffle.permutation(N);
        noise = ck.rng("noise")?;
        cursor = ck.cursor as usize;
        step = ck.step;
    }
    let checkpoint =
        |run: &Run, step, w: &Tensor, b: &Tensor, vw: &[f32], vb: &[f32], ep: &Rng, noise: &Rng, cursor| {
            Ok::<_, fixpoint::Error>(
                run.checkpoint(step)
                    .with_param("w", w)
                    .with_param("b", b)
                    .with_optim("w.momentum", &Tensor::from_slice(vw, [D, 1])?)
                    .with_optim("b.momentum", &Tensor::from_slice(vb, [1])?)
                    .with_rng("shuffle", ep)
                    .with_rng("noise", noise)
                    .with_cursor(cursor as u64),
            )
        };

    let mut last_loss = f32::NAN;
    while step < args.steps {
        if cursor + BATCH > N {
            epoch_start = shuffle.clone();
            perm = shuffle.permutation(N);
            cursor = 0;
        }
        let idx = &perm[cursor..cursor + BATCH];
        cursor += BATCH;
        let mut xb = Vec::with_capacity(BATCH * D);
        let mut yb = Vec::with_capacity(BATCH);
        for &i in idx {
            xb.extend(data.x[i * D..(i + 1) * D].iter().map(|v| v + 0.01 * noise.normal()));
            yb.push(data.y[i]);
        }
        w.zero_grad();
        b.zero_grad();
        let l = loss(&xb, &yb, BATCH, &w, &b)?;
        l.backward()?;
        last_loss = l.item()?;
        for (p, v) in [(&mut w, &mut vw), (&mut b, &mut vb)] {
            let g = p.grad().expect("a parameter gets a gradient").to_vec();
            for (vi, gi) in v.iter_mut().zip(&g) {
                *vi = 0.9 * *vi + gi;
            }
            let lr = args.lr as f32;
            p.update_data(|d| d.iter_mut().zip(v.iter()).for_each(|(di, vi)| *di -= lr * vi));
        }
        step += 1;
        if args.sleep_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(args.sleep_ms));
        }
        run.log(step, &[("loss", last_loss as f64), ("lr", args.lr)])?;
        if args.eval_every > 0 && step.is_multiple_of(args.eval_every) {
            let full = loss(&data.x, &data.y, N, &w.detach(), &b.detach())?.item()?;
            run.log_eval(step, &[("loss", full as f64)])?;
        }
        if args.stop_at == Some(step) {
            run.interrupt().request();
        }
        if run.interrupted() {
            if args.linger_ms > 0 {
                std::thread::sleep(std::time::Duration::from_millis(args.linger_ms));
            }
            let ck = checkpoint(&run, step, &w, &b, &vw, &vb, &epoch_start, &noise, cursor)?;
            return run.finish_interrupted(&ck);
        }
        if run.checkpoint_due(step) {
            let ck = checkpoint(&run, step, &w, &b, &vw, &vb, &epoch_start, &noise, cursor)?;
            run.save_checkpoint(&ck)?;
        }
    }
    let full = loss(&data.x, &data.y, N, &w.detach(), &b.detach())?.item()?;
    let summary = json!({
        "steps": step,
        "train_loss": last_loss,
        "full_loss": full,
        "w": w.to_vec(),
        "b": b.to_vec(),
    });
    let ck = checkpoint(&run, step, &w, &b, &vw, &vb, &epoch_start, &noise, cursor)?;
    let line = run.finish(&summary, &ck)?;
    if args.json {
        println!("{line}");
    }
    Ok(0)
}
