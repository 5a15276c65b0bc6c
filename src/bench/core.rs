//! `fixpoint bench core`: the engine's core ops against raw baselines in the same run.

use super::{paired_medians, triad};
use crate::ops::matmul::{Accum, MatRef, gemm_dense};
use crate::{Result, Rng, Tensor, init};
use std::hint::black_box;

/// Figures of `fixpoint bench core` (times in seconds).
#[derive(Debug, Clone)]
pub struct CoreBench {
    pub threads: usize,
    pub linear_fwd_bwd_s: f64,
    pub sgemm3_s: f64,
    pub linear_fwd_bwd_over_sgemm: f64,
    pub mul_s: f64,
    pub triad_s: f64,
    pub elementwise_over_triad: f64,
    /// (name, op seconds, copy seconds) for the normalisation ops.
    pub row_ops: Vec<(String, f64, f64)>,
    /// (elements, serial seconds, parallel seconds) of `exp` around the parallel
    /// threshold, both forced through the same fixed chunks (empty with 1 thread).
    pub threshold_sweep: Vec<(usize, f64, f64)>,
}

impl CoreBench {
    pub fn to_json(&self) -> serde_json::Value {
        let mut j = serde_json::json!({
            "threads": self.threads,
            "linear_fwd_bwd_ms": self.linear_fwd_bwd_s * 1e3,
            "sgemm3_ms": self.sgemm3_s * 1e3,
            "linear_fwd_bwd_over_sgemm": self.linear_fwd_bwd_over_sgemm,
            "mul_16m_ms": self.mul_s * 1e3,
            "triad_16m_ms": self.triad_s * 1e3,
            "elementwise_over_triad": self.elementwise_over_triad,
        });
        for (name, op, copy) in &self.row_ops {
            j[format!("{name}_ms")] = (op * 1e3).into();
            j[format!("{name}_over_copy")] = (op / copy).into();
        }
        let sweep: Vec<serde_json::Value> = self
            .threshold_sweep
            .iter()
            .map(|&(n, s, p)| serde_json::json!({"elements": n, "serial_us": s * 1e6, "parallel_us": p * 1e6, "speedup": s / p}))
            .collect();
        j["parallel_threshold_sweep"] = sweep.into();
        j["parallel_threshold_elements"] = crate::cpu::par::ELEMWISE_MIN.into();
        j
    }
}

fn m(data: &[f32], rows: usize, cols: usize, rs: usize, cs: usize) -> MatRef<'_> {
    MatRef { data, offset: 0, rows, cols, rs, cs }
}

/// Linear forward + backward (batch 256, 784 → 512, bias) over its three raw sgemms.
fn linear_vs_sgemm(reps: usize, rng: &mut Rng) -> Result<(f64, f64)> {
    let (b, i, o) = (256, 784, 512);
    let x = init::normal([b, i], 0.0, 1.0, rng).requires_grad_();
    let w = init::normal([i, o], 0.0, 0.05, rng).requires_grad_();
    let bias = Tensor::zeros([o]).requires_grad_();
    let dy = init::normal([b, o], 0.0, 1.0, rng);
    let (xd, wd, dyd) = (x.to_vec(), w.to_vec(), dy.to_vec());
    let (mut y, mut dx, mut dw) = (vec![0.0; b * o], vec![0.0; b * i], vec![0.0; i * o]);
    let mut err = None;
    let (t_lin, t_raw) = paired_medians(
        reps,
        || {
            let r = (|| -> Result<()> {
                let out = x.matmul(&w)?.add(&bias)?;
                out.backward_with(&dy)?;
                black_box(out);
                x.zero_grad();
                w.zero_grad();
                bias.zero_grad();
                Ok(())
            })();
            if let Err(e) = r {
                err = Some(e);
            }
        },
        || {
            gemm_dense(m(&xd, b, i, i, 1), m(&wd, i, o, o, 1), &mut y, Accum::Replace);
            gemm_dense(m(&dyd, b, o, o, 1), m(&wd, o, i, 1, o), &mut dx, Accum::Replace);
            gemm_dense(m(&xd, i, b, 1, i), m(&dyd, b, o, o, 1), &mut dw, Accum::Replace);
            black_box((&y, &dx, &dw));
        },
    );
    match err {
        Some(e) => Err(e),
        None => Ok((t_lin, t_raw)),
    }
}

/// Run the core benchmark in the current rayon pool.
pub fn run(reps: usize) -> Result<CoreBench> {
    let mut rng = Rng::new(0);
    let (t_lin, t_raw) = linear_vs_sgemm(reps, &mut rng)?;

    let n = 16 << 20;
    let a = init::uniform([n], -1.0, 1.0, &mut rng);
    let b = init::uniform([n], -1.0, 1.0, &mut rng);
    let (yv, zv) = (a.to_vec(), b.to_vec());
    let mut xv = vec![0.0f32; n];
    let (t_mul, t_triad) = paired_medians(
        reps,
        || {
            black_box(a.mul(&b).expect("same shapes"));
        },
        || triad(&mut xv, &yv, &zv, 0.5),
    );

    let row_ops = super::core_rows::row_ops(reps, &mut rng)?;
    let threshold_sweep = if rayon::current_num_threads() > 1 { threshold_sweep(reps, &mut rng) } else { Vec::new() };
    Ok(CoreBench {
        threads: rayon::current_num_threads(),
        linear_fwd_bwd_s: t_lin,
        sgemm3_s: t_raw,
        linear_fwd_bwd_over_sgemm: t_lin / t_raw,
        mul_s: t_mul,
        triad_s: t_triad,
        elementwise_over_triad: t_mul / t_triad,
        row_ops,
        threshold_sweep,
    })
}

/// The exp kernel over `n` elements, serial vs split into the op's fixed chunks on the
/// current pool: where the parallel version starts to win is the threshold to use.
fn threshold_sweep(reps: usize, rng: &mut Rng) -> Vec<(usize, f64, f64)> {
    use crate::ops::elementwise::Unary;
    use rayon::prelude::*;
    let ch = crate::cpu::par::ELEMWISE_CHUNK;
    [1 << 13, 1 << 14, 1 << 15, 1 << 16, 1 << 17, 1 << 18, 1 << 20]
        .into_iter()
        .map(|n| {
            let x: Vec<f32> = (0..n).map(|_| rng.range(-3.0, 3.0)).collect();
            let mut y = vec![0.0f32; n];
            let mut z = vec![0.0f32; n];
            // Chunks at least 4K elements so that small sizes still split in two.
            let chunk = ch.min(n / 2).max(4096);
            let (t_ser, t_par) = paired_medians(
                reps.max(15),
                || Unary::Exp.forward_slice(&x, &mut y),
                || {
                    z.par_chunks_mut(chunk)
                        .enumerate()
                        .for_each(|(i, o)| Unary::Exp.forward_slice(&x[i * chunk..i * chunk + o.len()], o))
                },
            );
            black_box((&y, &z));
            (n, t_ser, t_par)
        })
        .collect()
}
