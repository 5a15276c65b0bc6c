//! `fixpoint bench scan`: effective bandwidth of the scan kernels against a STREAM-style
//! triad `x = y + s·z` over arrays of the same length, measured in the same process at
//! the same thread count, medians of several repetitions.
//!
//! Bytes count each input read once and each output written once (STREAM counting): the
//! forward reads `a`, `u` and writes `h` (12 B per element, the same as the triad); the
//! backward reads `dh`, `a`, `h` and writes `du`, `da` (20 B per element).

use super::{median, time_per_call};
use crate::error::{Error, Result};
use crate::ops::scan::{ScanGrads, ScanKernel, ScanSpec, scan_backward, scan_forward};
use rayon::prelude::*;
use serde_json::{Value, json};
use std::path::PathBuf;

/// The shape whose ratios are the headline figures: B = 8, T = 65,536, D = 256 (512 MiB
/// per array, far beyond the caches).
pub const KEY_SHAPE: [usize; 3] = [8, 65_536, 256];
/// A cache-resident shape: B = 128, T = 16, D = 128 (1 MiB per array).
pub const SMALL_SHAPE: [usize; 3] = [128, 16, 128];

/// What to measure.
#[derive(Clone, Debug)]
pub struct ScanBenchOptions {
    /// Thread counts; each gets its own rayon pool, and everything (the triad too) runs
    /// inside that pool.
    pub threads: Vec<usize>,
    /// Shapes `[B, T, D]`.
    pub shapes: Vec<[usize; 3]>,
    /// Kernels to time. The sequential one runs on one thread only.
    pub kernels: Vec<ScanKernel>,
    /// Repetitions; every figure is the median over them.
    pub reps: usize,
    /// Shortest measurement in seconds: short calls are repeated back to back (data stays
    /// in cache then, as it does for the triad).
    pub min_time: f64,
    /// Write a PNG of time against T here.
    pub plot: Option<PathBuf>,
    /// Print a line per measured shape to stderr.
    pub progress: bool,
}

impl Default for ScanBenchOptions {
    fn default() -> Self {
        ScanBenchOptions {
            threads: vec![1, 2],
            shapes: default_shapes(),
            kernels: vec![ScanKernel::Sequential, ScanKernel::Simd, ScanKernel::Chunked],
            reps: 5,
            min_time: 0.02,
            plot: None,
            progress: false,
        }
    }
}

/// T ∈ {256, 1024, 4096, 16384, 65536} × D ∈ {64, 256, 1024} with B = 8 and
/// B·T·D ≤ 2²⁷, then the cache-resident [`SMALL_SHAPE`].
pub fn default_shapes() -> Vec<[usize; 3]> {
    let mut shapes = Vec::new();
    for d in [64, 256, 1024] {
        for t in [256, 1024, 4096, 16_384, 65_536] {
            if 8 * t * d <= 1 << 27 {
                shapes.push([8, t, d]);
            }
        }
    }
    shapes.push(SMALL_SHAPE);
    shapes
}

/// Median seconds per call of one kernel, and the medians of its per-repetition time
/// ratios to the triad measured just before it (robust to load that drifts during a run).
#[derive(Clone, Copy, Debug)]
pub struct KernelTime {
    pub kernel: ScanKernel,
    pub fwd_s: f64,
    pub bwd_s: f64,
    /// Median over repetitions of `fwd time / triad time`.
    pub fwd_over_triad: f64,
    /// Median over repetitions of `bwd time / triad time`.
    pub bwd_over_triad: f64,
}

/// Everything measured for one shape at one thread count.
#[derive(Clone, Debug)]
pub struct ShapeResult {
    pub shape: [usize; 3],
    pub threads: usize,
    pub triad_s: f64,
    /// The kernel `ScanKernel::Auto` runs for this shape and thread count.
    pub auto: ScanKernel,
    pub kernels: Vec<KernelTime>,
}

impl ShapeResult {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn fwd_bytes(&self) -> f64 {
        12.0 * self.numel() as f64
    }
    pub fn bwd_bytes(&self) -> f64 {
        20.0 * self.numel() as f64
    }
    pub fn triad_gbps(&self) -> f64 {
        12.0 * self.numel() as f64 / self.triad_s / 1e9
    }
    pub fn time(&self, k: ScanKernel) -> Option<KernelTime> {
        let k = if k == ScanKernel::Auto { self.auto } else { k };
        self.kernels.iter().copied().find(|t| t.kernel == k)
    }

    fn to_json(&self) -> Value {
        let kernels: serde_json::Map<String, Value> = self
            .kernels
            .iter()
            .map(|t| {
                let v = json!({
                    "fwd_s": t.fwd_s,
                    "bwd_s": t.bwd_s,
                    "fwd_gbps": self.fwd_bytes() / t.fwd_s / 1e9,
                    "bwd_gbps": self.bwd_bytes() / t.bwd_s / 1e9,
                    "fwd_time_over_triad": t.fwd_over_triad,
                    "bwd_gbps_over_triad_gbps": (20.0 / 12.0) / t.bwd_over_triad,
                });
                (t.kernel.name().to_string(), v)
            })
            .collect();
        json!({
            "b": self.shape[0],
            "t": self.shape[1],
            "d": self.shape[2],
            "threads": self.threads,
            "triad_s": self.triad_s,
            "triad_gbps": self.triad_gbps(),
            "auto": self.auto.name(),
            "kernels": kernels,
        })
    }
}

/// STREAM triad `x = y + s·z` (fused), one contiguous piece per thread of the current pool.
pub fn triad(x: &mut [f32], y: &[f32], z: &[f32], s: f32) {
    let threads = rayon::current_num_threads();
    let piece = x.len().div_ceil(threads.max(1)).next_multiple_of(64).max(64);
    let serial = |x: &mut [f32], y: &[f32], z: &[f32]| {
        for ((x, y), z) in x.iter_mut().zip(y).zip(z) {
            *x = s.mul_add(*z, *y);
        }
    };
    if threads <= 1 || x.len() <= piece {
        serial(x, y, z);
    } else {
        x.par_chunks_mut(piece)
            .zip(y.par_chunks(piece))
            .zip(z.par_chunks(piece))
            .for_each(|((x, y), z)| serial(x, y, z));
    }
}

/// Fill with cheap deterministic values in `lo..hi` (in parallel; also faults the pages in).
fn fill(x: &mut [f32], seed: u64, lo: f32, hi: f32) {
    x.par_chunks_mut(1 << 16).enumerate().for_each(|(c, chunk)| {
        let mut s = seed ^ (c as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for v in chunk {
            s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            *v = lo + (hi - lo) * ((s >> 40) as f32 / (1u64 << 24) as f32);
        }
    });
}

/// Buffers for the largest shape; smaller shapes use prefixes.
struct Buffers {
    a: Vec<f32>,
    u: Vec<f32>,
    h: Vec<f32>,
    dh: Vec<f32>,
    du: Vec<f32>,
    da: Vec<f32>,
}

impl Buffers {
    fn new(n: usize) -> Buffers {
        let mut b = Buffers {
            a: vec![0.0; n],
            u: vec![0.0; n],
            h: vec![0.0; n],
            dh: vec![0.0; n],
            du: vec![0.0; n],
            da: vec![0.0; n],
        };
        fill(&mut b.a, 1, 0.9, 0.999);
        fill(&mut b.u, 2, -1.0, 1.0);
        fill(&mut b.dh, 3, -1.0, 1.0);
        fill(&mut b.h, 4, -1.0, 1.0);
        fill(&mut b.du, 5, -1.0, 1.0);
        fill(&mut b.da, 6, -1.0, 1.0);
        b
    }
}

fn measure_shape(
    opts: &ScanBenchOptions,
    bufs: &mut Buffers,
    shape: [usize; 3],
    threads: usize,
) -> Result<ShapeResult> {
    let spec = ScanSpec::new(shape[0], shape[1], shape[2]);
    let n = spec.numel();
    let Buffers { a, u, h, dh, du, da } = bufs;
    let (a, u, h, dh, du, da) = (&a[..n], &u[..n], &mut h[..n], &dh[..n], &mut du[..n], &mut da[..n]);
    let kernels: Vec<ScanKernel> =
        opts.kernels.iter().copied().filter(|&k| k != ScanKernel::Sequential || threads == 1).collect();
    let fwd = |k: ScanKernel, h: &mut [f32]| scan_forward(k, &spec, a, u, None, h).expect("scan bench: forward");
    let bwd = |k: ScanKernel, h: &[f32], du: &mut [f32], da: &mut [f32]| {
        let grads = ScanGrads { du, da: Some(da), dh0: None };
        scan_backward(k, &spec, a, h, None, dh, grads).expect("scan bench: backward")
    };
    // Warm up (and calibrate the repeat count on the triad).
    let t_triad = time_per_call(1, || triad(h, a, u, 0.5));
    let iters = ((opts.min_time / t_triad.max(1e-9)).ceil() as usize).clamp(1, 100_000);
    for &k in &kernels {
        fwd(k, h);
        bwd(k, h, du, da);
    }
    let mut triad_s = Vec::new();
    let mut fwd_s = vec![Vec::new(); kernels.len()];
    let mut bwd_s = vec![Vec::new(); kernels.len()];
    let (mut fwd_r, mut bwd_r) = (fwd_s.clone(), bwd_s.clone());
    // Cheap (cache-resident) shapes get more repetitions: they are the noisiest.
    let reps = if iters > 1 { 3 * opts.reps.max(1) } else { opts.reps.max(1) };
    for _ in 0..reps {
        let t = time_per_call(iters, || triad(h, a, u, 0.5));
        triad_s.push(t);
        for (i, &k) in kernels.iter().enumerate() {
            fwd_s[i].push(time_per_call(iters, || fwd(k, h)));
            bwd_s[i].push(time_per_call(iters, || bwd(k, h, du, da)));
            fwd_r[i].push(fwd_s[i].last().unwrap() / t);
            bwd_r[i].push(bwd_s[i].last().unwrap() / t);
        }
    }
    Ok(ShapeResult {
        shape,
        threads,
        triad_s: median(&triad_s),
        auto: ScanKernel::select(&spec, threads),
        kernels: kernels
            .iter()
            .enumerate()
            .map(|(i, &kernel)| KernelTime {
                kernel,
                fwd_s: median(&fwd_s[i]),
                bwd_s: median(&bwd_s[i]),
                fwd_over_triad: median(&fwd_r[i]),
                bwd_over_triad: median(&bwd_r[i]),
            })
            .collect(),
    })
}

/// Run the benchmark; returns every figure as one JSON object (see [`summary`] for the
/// headline ratios it contains).
pub fn run_scan_bench(opts: &ScanBenchOptions) -> Result<Value> {
    let results = measure(opts)?;
    let mut out = summary(&results);
    if let Some(path) = &opts.plot {
        let warning = super::plot::plot_scan(path, &results)
            .map_err(|e| Error::Io { path: path.display().to_string(), message: format!("plot: {e}") })?;
        out["plot"] = json!(path.display().to_string());
        if let Some(w) = warning {
            out["plot_warning"] = json!(w);
        }
    }
    Ok(out)
}

/// Measure every shape at every thread count.
pub fn measure(opts: &ScanBenchOptions) -> Result<Vec<ShapeResult>> {
    let max_n = opts.shapes.iter().map(|s| s.iter().product::<usize>()).max().unwrap_or(0);
    let mut results = Vec::new();
    let mut bufs: Option<Buffers> = None;
    for &threads in &opts.threads {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads.max(1)).build().map_err(|e| {
            Error::InvalidArgument {
                op: "bench scan",
                message: format!("cannot build a pool of {threads} threads: {e}"),
            }
        })?;
        pool.install(|| -> Result<()> {
            let bufs = bufs.get_or_insert_with(|| Buffers::new(max_n));
            for &shape in &opts.shapes {
                let r = measure_shape(opts, bufs, shape, threads)?;
                if opts.progress {
                    eprintln!("{}", progress_line(&r));
                }
                results.push(r);
            }
            Ok(())
        })?;
    }
    Ok(results)
}

fn progress_line(r: &ShapeResult) -> String {
    let mut s = format!(
        "B={:<4} T={:<6} D={:<5} {}t  triad {:6.1} GB/s",
        r.shape[0],
        r.shape[1],
        r.shape[2],
        r.threads,
        r.triad_gbps()
    );
    for t in &r.kernels {
        s += &format!(
            " | {} fwd {:6.1} bwd {:6.1}",
            t.kernel.name(),
            r.fwd_bytes() / t.fwd_s / 1e9,
            r.bwd_bytes() / t.bwd_s / 1e9
        );
    }
    s + &format!(" GB/s (auto: {})", r.auto.name())
}

/// The JSON object: every result, and for the auto-selected kernel the headline ratios
/// (worst case over the measured thread counts, and per thread count; each the median
/// over repetitions of the ratio to the triad measured just before):
/// - `fwd_time_over_triad` (target ≤ 1.10), `bwd_gbps_over_triad_gbps` (target ≥ 0.8) and
///   `speedup_2_threads_over_triad_speedup` (forward; target ≥ 0.85) for [`KEY_SHAPE`];
/// - `small_fwd_time_over_triad` (target ≤ 1.5) for [`SMALL_SHAPE`].
pub fn summary(results: &[ShapeResult]) -> Value {
    let mut out = json!({
        "bench": "scan",
        "bytes_per_element": { "fwd": 12, "bwd": 20, "triad": 12 },
        "results": results.iter().map(ShapeResult::to_json).collect::<Vec<_>>(),
    });
    let at = |shape: [usize; 3]| results.iter().filter(move |r| r.shape == shape);
    let worst = |xs: Vec<f64>, higher_is_worse: bool| {
        xs.into_iter().reduce(|x, y| if (x > y) == higher_is_worse { x } else { y })
    };
    let fwd_ratio = |r: &ShapeResult| r.time(ScanKernel::Auto).map(|t| t.fwd_over_triad);
    let bwd_ratio = |r: &ShapeResult| r.time(ScanKernel::Auto).map(|t| (20.0 / 12.0) / t.bwd_over_triad);
    for r in at(KEY_SHAPE) {
        if let Some(x) = fwd_ratio(r) {
            out[format!("fwd_time_over_triad_{}t", r.threads)] = json!(x);
        }
        if let Some(x) = bwd_ratio(r) {
            out[format!("bwd_gbps_over_triad_gbps_{}t", r.threads)] = json!(x);
        }
    }
    for r in at(SMALL_SHAPE) {
        if let Some(x) = fwd_ratio(r) {
            out[format!("small_fwd_time_over_triad_{}t", r.threads)] = json!(x);
        }
    }
    if let Some(x) = worst(at(KEY_SHAPE).filter_map(fwd_ratio).collect(), true) {
        out["fwd_time_over_triad"] = json!(x);
    }
    if let Some(x) = worst(at(KEY_SHAPE).filter_map(bwd_ratio).collect(), false) {
        out["bwd_gbps_over_triad_gbps"] = json!(x);
    }
    if let Some(x) = worst(at(SMALL_SHAPE).filter_map(fwd_ratio).collect(), true) {
        out["small_fwd_time_over_triad"] = json!(x);
    }
    let one = at(KEY_SHAPE).find(|r| r.threads == 1);
    let two = at(KEY_SHAPE).find(|r| r.threads == 2);
    if let (Some(one), Some(two)) = (one, two)
        && let (Some(t1), Some(t2)) = (one.time(ScanKernel::Auto), two.time(ScanKernel::Auto))
    {
        let triad_speedup = one.triad_s / two.triad_s;
        out["speedup_2_threads_over_triad_speedup"] = json!((t1.fwd_s / t2.fwd_s) / triad_speedup);
        out["bwd_speedup_2_threads_over_triad_speedup"] = json!((t1.bwd_s / t2.bwd_s) / triad_speedup);
        out["triad_speedup_2_threads"] = json!(triad_speedup);
    }
    out
}
