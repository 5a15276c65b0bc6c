//! Benchmarks behind `fixpoint bench ...`: every figure is a ratio against a baseline
//! measured in the same process, at the same thread count, as medians of repetitions.

pub mod cli;
pub mod conv;
pub mod core;
mod core_rows;
pub mod fixed_point;
mod plot;
pub mod scan;

use std::time::Instant;

/// Warm-up before timing: calls until this much time has passed (at least one call).
/// On these VMs a kernel over fresh buffers of tens of MB runs 2–3× slower for its first
/// ~10 ms of calls (0.8 ms against 0.3 ms per call for the fixed-point iteration at
/// D 128, T 1,024), so one warm-up call measured the cold state, not the steady one.
const WARMUP: std::time::Duration = std::time::Duration::from_millis(50);

fn warm_up(f: &mut impl FnMut()) {
    let t0 = Instant::now();
    f();
    while t0.elapsed() < WARMUP {
        f();
    }
}

/// Median wall time in seconds of `reps` runs of `f` (after [`WARMUP`] of warm-up runs).
pub fn median_secs(reps: usize, mut f: impl FnMut()) -> f64 {
    warm_up(&mut f);
    let mut t: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// Medians of `a` and `b` timed in alternating blocks: `rounds` times, `block` calls of
/// `a` then `block` calls of `b`, each block's first call untimed (it refills the caches
/// the other left). Each side is timed with its own data hot, as when run alone, while
/// slow phases of a shared machine hit both alike.
pub fn block_paired_medians(rounds: usize, block: usize, mut a: impl FnMut(), mut b: impl FnMut()) -> (f64, f64) {
    warm_up(&mut || {
        a();
        b();
    });
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    let timed = |f: &mut dyn FnMut(), t: &mut Vec<f64>| {
        f();
        for _ in 0..block.max(1) {
            let t0 = Instant::now();
            f();
            t.push(t0.elapsed().as_secs_f64());
        }
    };
    for _ in 0..rounds.max(1) {
        timed(&mut a, &mut ta);
        timed(&mut b, &mut tb);
    }
    ta.sort_by(f64::total_cmp);
    tb.sort_by(f64::total_cmp);
    (ta[ta.len() / 2], tb[tb.len() / 2])
}

/// Alternate `a` and `b` for `reps` rounds and return both medians, so that machine
/// noise hits both alike.
pub fn paired_medians(reps: usize, mut a: impl FnMut(), mut b: impl FnMut()) -> (f64, f64) {
    warm_up(&mut || {
        a();
        b();
    });
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for _ in 0..reps.max(1) {
        let t0 = Instant::now();
        a();
        ta.push(t0.elapsed().as_secs_f64());
        let t0 = Instant::now();
        b();
        tb.push(t0.elapsed().as_secs_f64());
    }
    ta.sort_by(f64::total_cmp);
    tb.sort_by(f64::total_cmp);
    (ta[ta.len() / 2], tb[tb.len() / 2])
}

/// STREAM triad `x = y + s·z`, split over the current rayon pool in fixed chunks.
pub fn triad(x: &mut [f32], y: &[f32], z: &[f32], s: f32) {
    use rayon::prelude::*;
    const CH: usize = 1 << 16;
    let body = |(i, xc): (usize, &mut [f32])| {
        let (yc, zc) = (&y[i * CH..i * CH + xc.len()], &z[i * CH..i * CH + xc.len()]);
        for ((x, &y), &z) in xc.iter_mut().zip(yc).zip(zc) {
            *x = y + s * z;
        }
    };
    if rayon::current_num_threads() > 1 && x.len() >= 2 * CH {
        x.par_chunks_mut(CH).enumerate().for_each(body);
    } else {
        x.chunks_mut(CH).enumerate().for_each(body);
    }
}

/// Copy `src` into `dst`, split like [`triad`].
pub fn copy(dst: &mut [f32], src: &[f32]) {
    use rayon::prelude::*;
    const CH: usize = 1 << 16;
    if rayon::current_num_threads() > 1 && dst.len() >= 2 * CH {
        dst.par_chunks_mut(CH).zip(src.par_chunks(CH)).for_each(|(d, s)| d.copy_from_slice(s));
    } else {
        dst.copy_from_slice(src);
    }
}

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
