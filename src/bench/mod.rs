//! Benchmarks behind `fixpoint bench ...`. They live in the library so that the binary's
//! command tree only parses arguments and prints; each returns its figures as JSON.

pub mod cli;
mod plot;
pub mod scan;

use std::time::Instant;

/// Median of `xs` (the mean of the two middle values for an even count; NaN when empty).
pub fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 { v[m] } else { 0.5 * (v[m - 1] + v[m]) }
}

/// Seconds per call of `f`, averaged over `iters` back-to-back calls.
pub fn time_per_call(iters: usize, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed().as_secs_f64() / iters.max(1) as f64
}
