//! Command-line wiring of `fixpoint bench scan`, kept apart so that it can be mounted in
//! any clap command tree: `#[command(subcommand)]` an enum with a `Scan(BenchScanArgs)`
//! variant and call [`bench_scan_cli`].

use super::scan::{ScanBenchOptions, default_shapes, run_scan_bench};
use crate::ops::scan::ScanKernel;
use std::path::PathBuf;

/// Arguments of `fixpoint bench scan`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchScanArgs {
    /// Print the figures as one JSON object on the last stdout line.
    #[arg(long)]
    pub json: bool,
    /// Write a PNG of time against T (log-log) to this file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Measure only these shapes, `B,T,D` (repeatable); default the full sweep.
    #[arg(long, value_parser = parse_shape)]
    pub shape: Vec<[usize; 3]>,
    /// Kernels to time (seq, simd, chunked; comma-separated); default all three.
    #[arg(long, value_delimiter = ',', value_parser = parse_kernel)]
    pub kernels: Vec<ScanKernel>,
    /// Repetitions per figure (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
}

fn parse_shape(s: &str) -> Result<[usize; 3], String> {
    let parts: Vec<&str> = s.split([',', 'x']).map(str::trim).collect();
    let dims: Vec<usize> =
        parts.iter().map(|p| p.parse::<usize>()).collect::<Result<_, _>>().map_err(|e| e.to_string())?;
    match dims.as_slice() {
        &[b, t, d] => Ok([b, t, d]),
        _ => Err(format!("expected B,T,D (three sizes), got {s:?}")),
    }
}

fn parse_kernel(s: &str) -> Result<ScanKernel, String> {
    match s {
        "seq" | "sequential" => Ok(ScanKernel::Sequential),
        "simd" => Ok(ScanKernel::Simd),
        "chunked" => Ok(ScanKernel::Chunked),
        _ => Err(format!("unknown scan kernel {s:?} (seq, simd, chunked)")),
    }
}

/// Run the benchmark, print a line per shape (stderr), a table of the headline ratios
/// and, with `--json`, the JSON object as the last stdout line.
/// `threads`: the global `--threads`; measure that count only (default 1 and 2).
pub fn bench_scan_cli(args: BenchScanArgs, threads: Option<usize>) -> Result<(), Box<dyn std::error::Error>> {
    let mut opts = ScanBenchOptions { plot: args.plot, reps: args.reps, progress: true, ..Default::default() };
    if let Some(n) = threads {
        opts.threads = vec![n];
    }
    opts.shapes = if args.shape.is_empty() { default_shapes() } else { args.shape };
    if !args.kernels.is_empty() {
        opts.kernels = args.kernels;
    }
    let out = run_scan_bench(&opts)?;
    for key in [
        "fwd_time_over_triad",
        "bwd_gbps_over_triad_gbps",
        "speedup_2_threads_over_triad_speedup",
        "small_fwd_time_over_triad",
    ] {
        if let Some(v) = out.get(key).and_then(|v| v.as_f64()) {
            println!("{key:<40} {v:.3}");
        }
    }
    if args.json {
        println!("{}", serde_json::to_string(&out)?);
    }
    Ok(())
}
