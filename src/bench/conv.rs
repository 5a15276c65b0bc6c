//! `fixpoint bench conv`: conv2d forward + backward for the VGG11 layer shapes against
//! the three sgemms of each layer's own im2col shape (M = B·H_out·W_out, K = 9·C_in,
//! N = C_out: forward `[M,K]·[K,N]`, input gradient `[M,N]·[N,K]`, weight gradient
//! `[K,M]·[M,N]`), measured alternately in the same run, medians of repetitions.
//!
//! The headline `conv_over_gemm_throughput` is the worst `t_gemm / t_conv` over the
//! layers with C_in ≥ 64 (equal flops on both sides, so a throughput ratio); the
//! 3-channel first layer (K = 27) is reported separately. Optionally the whole VGG11
//! distillation step (teacher cached) is timed too, in images/s, and compared with the
//! JAX peer's figure (`benches/peers/vgg_jax.py`).

use super::paired_medians;
use crate::dino::conv::{VGG11_CFG, scaled};
use crate::dino::{ConvNetConfig, EncoderConfig};
use crate::ops::conv2d::{Conv2dSpec, conv2d_backward, conv2d_backward_bias, conv2d_forward};
use crate::ops::matmul::{Accum, MatRef, gemm_dense};
use crate::rng::Rng;
use serde_json::{Value, json};
use std::hint::black_box;
use std::path::PathBuf;

/// Arguments of `fixpoint bench conv`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchConvArgs {
    /// Print the figures as one JSON object on the last stdout line.
    #[arg(long)]
    pub json: bool,
    /// Repetitions per figure (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Batch size of the layer benchmarks.
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Channel multiplier of the VGG11 shapes.
    #[arg(long, default_value_t = 1.0)]
    pub width_mult: f64,
    /// Also time this many VGG11 distillation steps (batch 256, m = 4096, teacher
    /// cached; after one warm-up step). 0: skip.
    #[arg(long, default_value_t = 0)]
    pub step_steps: usize,
    /// JSON printed by benches/peers/vgg_jax.py (`jax_images_per_s`), for step_over_jax.
    #[arg(long)]
    pub peer_json: Option<PathBuf>,
}

/// The distinct conv shapes of VGG11 on 32×32 inputs: (C_in, C_out, H = W).
pub fn vgg11_layers(width_mult: f64) -> Vec<(usize, usize, usize)> {
    let (mut c_in, mut size, mut out) = (3, 32, Vec::new());
    for &v in &VGG11_CFG {
        if v == 0 {
            size /= 2;
        } else {
            let c = scaled(v, width_mult);
            if !out.contains(&(c_in, c, size)) {
                out.push((c_in, c, size));
            }
            c_in = c;
        }
    }
    out
}

fn mat(data: &[f32], rows: usize, cols: usize, rs: usize, cs: usize) -> MatRef<'_> {
    MatRef { data, offset: 0, rows, cols, rs, cs }
}

fn randn(n: usize, rng: &mut Rng) -> Vec<f32> {
    (0..n).map(|_| rng.normal()).collect()
}

/// (conv seconds, gemm seconds, conv forward seconds, gemm forward seconds).
fn layer(s: &Conv2dSpec, reps: usize, rng: &mut Rng) -> (f64, f64, f64, f64) {
    let (x, w, b) = (randn(s.in_numel(), rng), randn(s.c_out * s.k(), rng), randn(s.c_out, rng));
    let g = randn(s.out_numel(), rng);
    let (mut y, mut dx, mut dw, mut db) =
        (vec![0.0; s.out_numel()], vec![0.0; s.in_numel()], vec![0.0; s.c_out * s.k()], vec![0.0; s.c_out]);
    let (m, k, n) = (s.batch * s.p(), s.k(), s.c_out);
    let a = randn(m * k, rng);
    let (mut c, mut da, mut dbm) = (vec![0.0; m * n], vec![0.0; m * k], vec![0.0; k * n]);
    let (t_conv, t_gemm) = paired_medians(
        reps,
        || {
            conv2d_forward(s, &x, &w, Some(&b), &mut y);
            conv2d_backward(s, &g, &x, &w, Some(&mut dx), Some(&mut dw));
            conv2d_backward_bias(s, &g, &mut db);
            black_box((&y, &dx, &dw, &db));
        },
        || {
            gemm_dense(mat(&a, m, k, k, 1), mat(&w, k, n, 1, k), &mut c, Accum::Replace);
            gemm_dense(mat(&g, m, n, n, 1), mat(&w, n, k, k, 1), &mut da, Accum::Replace);
            gemm_dense(mat(&a, k, m, 1, k), mat(&g, m, n, n, 1), &mut dbm, Accum::Replace);
            black_box((&c, &da, &dbm));
        },
    );
    let (t_fwd, t_gemm_fwd) = paired_medians(
        reps,
        || {
            conv2d_forward(s, &x, &w, Some(&b), &mut y);
            black_box(&y);
        },
        || {
            gemm_dense(mat(&a, m, k, k, 1), mat(&w, k, n, 1, k), &mut c, Accum::Replace);
            black_box(&c);
        },
    );
    (t_conv, t_gemm, t_fwd, t_gemm_fwd)
}

/// Run the benchmark in the current rayon pool; prints a line per layer to stderr.
pub fn run(a: &BenchConvArgs) -> crate::Result<Value> {
    let bad = |message: String| crate::Error::InvalidArgument { op: "bench conv", message };
    if a.reps == 0 || a.batch == 0 {
        return Err(bad("--reps and --batch must be at least 1".into()));
    }
    ConvNetConfig { width_mult: a.width_mult }.validate("bench conv --width-mult")?;
    let mut rng = Rng::new(0);
    let mut layers = Vec::new();
    let (mut worst, mut first) = (f64::INFINITY, Value::Null);
    for (c_in, c_out, size) in vgg11_layers(a.width_mult) {
        let s = Conv2dSpec { batch: a.batch, c_in, h: size, w: size, c_out, kh: 3, kw: 3, stride: 1, pad: 1 };
        let (tc, tg, tf, tgf) = layer(&s, a.reps, &mut rng);
        let gflop = 6.0 * s.macs() as f64 / 1e9;
        let ratio = tg / tc;
        eprintln!(
            "conv {c_in:>3}->{c_out:<3} {size:>2}x{size:<2} batch {}: fwd+bwd {:8.2} ms ({:6.1} GFLOP/s) vs 3 sgemm {:8.2} ms ({:6.1}): {ratio:.2}; forward {:.2}",
            a.batch,
            tc * 1e3,
            gflop / tc,
            tg * 1e3,
            gflop / tg,
            tgf / tf
        );
        let entry = json!({
            "c_in": c_in, "c_out": c_out, "size": size, "m": a.batch * s.p(), "k": s.k(), "n": c_out,
            "conv_fwd_bwd_ms": tc * 1e3, "sgemm3_ms": tg * 1e3, "conv_gflops": gflop / tc, "sgemm_gflops": gflop / tg,
            "conv_over_gemm_throughput": ratio, "fwd_over_gemm_throughput": tgf / tf,
        });
        if c_in >= 64 {
            worst = worst.min(ratio);
        } else if c_in == 3 {
            first = entry.clone();
        }
        layers.push(entry);
    }
    let mut out = json!({
        "threads": crate::cpu::par::threads(),
        "batch": a.batch,
        "width_mult": a.width_mult,
        "layers": layers,
        "first_layer": first,
        "conv_over_gemm_throughput": if worst.is_finite() { json!(worst) } else { Value::Null },
    });
    if a.step_steps > 0 {
        let enc = EncoderConfig::Vgg11(ConvNetConfig { width_mult: a.width_mult });
        let b = crate::train::dino::bench_distill_step(&enc, 4096, 256, 1, a.step_steps)?;
        eprintln!("vgg11 distillation step, batch 256, m = 4096: {:.2} s, {:.1} images/s", b.median_s, b.images_per_s);
        out["step_images_per_s"] = json!(b.images_per_s);
        out["step_median_s"] = json!(b.median_s);
        if let Some(p) = &a.peer_json {
            let text = std::fs::read_to_string(p)
                .map_err(|e| crate::Error::Io { path: p.display().to_string(), message: e.to_string() })?;
            let peer = text.lines().rev().find_map(|l| serde_json::from_str::<Value>(l).ok());
            if let Some(j) = peer.as_ref().and_then(|v| v["jax_images_per_s"].as_f64()) {
                out["jax_images_per_s"] = json!(j);
                out["step_over_jax"] = json!(b.images_per_s / j);
            } else {
                return Err(bad(format!("{} has no jax_images_per_s", p.display())));
            }
        }
    }
    Ok(out)
}

/// `fixpoint bench conv`: lines on stderr, the headline ratios on stdout and, with
/// `--json`, the JSON object as the last stdout line.
pub fn bench_conv_cli(a: &BenchConvArgs) -> Result<(), String> {
    let out = run(a).map_err(|e| e.to_string())?;
    for key in ["conv_over_gemm_throughput", "step_images_per_s", "step_over_jax"] {
        if let Some(v) = out.get(key).and_then(|v| v.as_f64()) {
            println!("{key:<30} {v:.3}");
        }
    }
    if let Some(v) = out["first_layer"].get("conv_over_gemm_throughput").and_then(|v| v.as_f64()) {
        println!("{:<30} {v:.3}", "first_layer (C_in = 3)");
    }
    if a.json {
        println!("{out}");
    }
    Ok(())
}
