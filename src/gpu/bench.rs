//! `fixpoint bench gpu`: GEMM GFLOP/s and scan GB/s on the GPU against the CPU in the
//! same run, with the GPU's largest error relative to the CPU result. On a software
//! adapter (lavapipe) this measures correctness and overhead, not GPU speed.

use super::{AdapterSummary, context};
use crate::bench::median_secs;
use crate::error::Result;
use crate::ops::scan::ScanOptions;
use crate::rng::Rng;
use crate::storage::Device;
use crate::tensor::Tensor;

/// Sizes and repetitions.
#[derive(Clone, Debug)]
pub struct GpuBenchOpts {
    /// GEMM of two `n × n` matrices.
    pub gemm_n: usize,
    /// Scan over `(batch, time, channels)`.
    pub scan_shape: [usize; 3],
    pub reps: usize,
}

impl Default for GpuBenchOpts {
    fn default() -> Self {
        GpuBenchOpts { gemm_n: 512, scan_shape: [8, 4096, 256], reps: 5 }
    }
}

/// One op timed on both devices.
#[derive(Clone, Debug)]
pub struct Timing {
    pub cpu_s: f64,
    pub gpu_s: f64,
    /// Work per call: FLOP (GEMM) or bytes moved (scan).
    pub work: f64,
    /// `max |gpu − cpu| / max |cpu|` over the output.
    pub max_rel_err: f64,
}

impl Timing {
    pub fn cpu_rate(&self) -> f64 {
        self.work / self.cpu_s / 1e9
    }
    pub fn gpu_rate(&self) -> f64 {
        self.work / self.gpu_s / 1e9
    }
}

#[derive(Clone, Debug)]
pub struct GpuBench {
    pub adapter: AdapterSummary,
    pub opts: GpuBenchOpts,
    pub gemm: Timing,
    pub scan: Timing,
}

/// `max |got − want| / max |want|`.
fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    let diff = got.iter().zip(want).fold(0.0f64, |m, (&g, &w)| m.max((g as f64 - w as f64).abs()));
    let scale = want.iter().fold(0.0f64, |m, &w| m.max((w as f64).abs()));
    diff / scale.max(f64::MIN_POSITIVE)
}

/// Median seconds of `f` on the GPU, waiting for the queue after each call (so the
/// time covers launch, execution and completion; no readback).
fn gpu_secs(reps: usize, f: impl Fn() -> Result<Tensor>) -> Result<f64> {
    let ctx = context()?;
    let mut err = None;
    let t = median_secs(reps, || match f().and_then(|_| ctx.wait()) {
        Ok(()) => {}
        Err(e) => err = Some(e),
    });
    err.map_or(Ok(t), Err)
}

pub fn run(opts: &GpuBenchOpts) -> Result<GpuBench> {
    let adapter = super::adapter()?;
    let mut rng = Rng::new(1).stream("bench gpu");
    let rand = |shape: &[usize], lo: f32, hi: f32, rng: &mut Rng| {
        let n: usize = shape.iter().product();
        Tensor::from_vec((0..n).map(|_| rng.range(lo, hi)).collect(), shape)
    };
    let n = opts.gemm_n;
    let (a, b) = (rand(&[n, n], -1.0, 1.0, &mut rng)?, rand(&[n, n], -1.0, 1.0, &mut rng)?);
    let (ag, bg) = (a.to_device(Device::Gpu)?, b.to_device(Device::Gpu)?);
    let want = a.matmul(&b)?.to_vec();
    let got = ag.matmul(&bg)?.try_to_vec()?;
    let cpu_s = median_secs(opts.reps, || {
        std::hint::black_box(a.matmul(&b).expect("shapes checked above"));
    });
    let gemm = Timing {
        cpu_s,
        gpu_s: gpu_secs(opts.reps, || ag.matmul(&bg))?,
        work: 2.0 * (n as f64).powi(3),
        max_rel_err: rel_err(&got, &want),
    };
    let [bs, t, d] = opts.scan_shape;
    let (sa, su) = (rand(&[bs, t, d], 0.9, 1.0, &mut rng)?, rand(&[bs, t, d], -1.0, 1.0, &mut rng)?);
    let (sag, sug) = (sa.to_device(Device::Gpu)?, su.to_device(Device::Gpu)?);
    let want = sa.scan(&su, None, ScanOptions::forward())?.to_vec();
    let got = sag.scan(&sug, None, ScanOptions::forward())?.try_to_vec()?;
    let cpu_s = median_secs(opts.reps, || {
        std::hint::black_box(sa.scan(&su, None, ScanOptions::forward()).expect("shapes checked above"));
    });
    let scan = Timing {
        cpu_s,
        gpu_s: gpu_secs(opts.reps, || sag.scan(&sug, None, ScanOptions::forward()))?,
        // Read a and u once, write h once.
        work: 12.0 * (bs * t * d) as f64,
        max_rel_err: rel_err(&got, &want),
    };
    Ok(GpuBench { adapter, opts: opts.clone(), gemm, scan })
}

impl GpuBench {
    pub fn to_json(&self) -> serde_json::Value {
        let [b, t, d] = self.opts.scan_shape;
        serde_json::json!({
            "adapter": {
                "name": self.adapter.name,
                "backend": self.adapter.backend,
                "device_type": self.adapter.device_type,
                "driver": self.adapter.driver,
            },
            "gemm_max_rel_err": self.gemm.max_rel_err,
            "scan_max_rel_err": self.scan.max_rel_err,
            "gemm": {
                "n": self.opts.gemm_n,
                "cpu_ms": self.gemm.cpu_s * 1e3,
                "gpu_ms": self.gemm.gpu_s * 1e3,
                "cpu_gflops": self.gemm.cpu_rate(),
                "gpu_gflops": self.gemm.gpu_rate(),
                "gpu_over_cpu_speedup": self.gemm.cpu_s / self.gemm.gpu_s,
            },
            "scan": {
                "shape": [b, t, d],
                "cpu_ms": self.scan.cpu_s * 1e3,
                "gpu_ms": self.scan.gpu_s * 1e3,
                "cpu_gbps": self.scan.cpu_rate(),
                "gpu_gbps": self.scan.gpu_rate(),
                "gpu_over_cpu_speedup": self.scan.cpu_s / self.scan.gpu_s,
            },
            "reps": self.opts.reps,
        })
    }
}
