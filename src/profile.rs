//! `FIXPOINT_PROFILE=1`: time and count every op, forward and backward separately.
//! Only the outermost op on a thread is timed (a backward rule that calls forward ops
//! counts as backward time of its op), so the rows add up to the time spent in ops.
//! When the variable is unset the cost is one relaxed atomic load per op.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

static STATE: AtomicU8 = AtomicU8::new(0); // 0 unknown, 1 off, 2 on
type Table = HashMap<(&'static str, bool), (Duration, u64)>;
static TABLE: OnceLock<Mutex<Table>> = OnceLock::new();

thread_local! {
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Whether profiling is on (`FIXPOINT_PROFILE=1`, or [`set_enabled`]).
pub fn enabled() -> bool {
    match STATE.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            let on = std::env::var("FIXPOINT_PROFILE").is_ok_and(|v| v == "1");
            STATE.store(if on { 2 } else { 1 }, Ordering::Relaxed);
            on
        }
    }
}

/// Turn profiling on or off for this process.
pub fn set_enabled(on: bool) {
    STATE.store(if on { 2 } else { 1 }, Ordering::Relaxed);
}

/// Records the time until dropped, if it is the outermost scope on its thread.
pub struct Scope {
    key: Option<(&'static str, bool, Instant)>,
}

impl Drop for Scope {
    fn drop(&mut self) {
        if let Some((name, bwd, t0)) = self.key.take() {
            let dt = t0.elapsed();
            DEPTH.with(|d| d.set(d.get() - 1));
            let mut t = TABLE.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
            let e = t.entry((name, bwd)).or_default();
            e.0 += dt;
            e.1 += 1;
        } else if enabled() {
            DEPTH.with(|d| d.set(d.get() - 1));
        }
    }
}

fn scope(name: &'static str, bwd: bool) -> Scope {
    if !enabled() {
        return Scope { key: None };
    }
    let outer = DEPTH.with(|d| {
        let v = d.get();
        d.set(v + 1);
        v == 0
    });
    Scope { key: outer.then(|| (name, bwd, Instant::now())) }
}

/// Time a forward op.
#[inline]
pub fn fwd(name: &'static str) -> Scope {
    scope(name, false)
}

/// Time a backward rule.
#[inline]
pub fn bwd(name: &'static str) -> Scope {
    scope(name, true)
}

/// One row of the profile.
#[derive(Clone, Debug)]
pub struct Row {
    pub op: &'static str,
    pub backward: bool,
    pub total: Duration,
    pub calls: u64,
}

/// The rows so far, largest total first.
pub fn rows() -> Vec<Row> {
    let t = TABLE.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    let mut v: Vec<Row> =
        t.iter().map(|(&(op, backward), &(total, calls))| Row { op, backward, total, calls }).collect();
    v.sort_by(|a, b| b.total.cmp(&a.total).then(a.op.cmp(b.op)));
    v
}

/// Forget everything recorded.
pub fn reset() {
    TABLE.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner()).clear();
}

/// A printable table (op, direction, total ms, share, calls, µs per call).
pub fn report() -> String {
    let rows = rows();
    let total: f64 = rows.iter().map(|r| r.total.as_secs_f64()).sum();
    let mut s =
        format!("{:<18} {:>4} {:>11} {:>6} {:>9} {:>10}\n", "op", "dir", "total ms", "share", "calls", "us/call");
    for r in &rows {
        let ms = r.total.as_secs_f64() * 1e3;
        s += &format!(
            "{:<18} {:>4} {:>11.2} {:>5.1}% {:>9} {:>10.2}\n",
            r.op,
            if r.backward { "bwd" } else { "fwd" },
            ms,
            100.0 * r.total.as_secs_f64() / total.max(1e-12),
            r.calls,
            ms * 1e3 / r.calls.max(1) as f64
        );
    }
    s + &format!("{:<18} {:>4} {:>11.2}\n", "total", "", total * 1e3)
}

/// Total time recorded so far per group: `classify` maps an op name (forward and
/// backward rows alike) to a group index below `groups`, or None to leave it out.
/// Differences of two calls give the time of what ran in between (outermost ops only).
pub fn group_totals(groups: usize, classify: impl Fn(&str) -> Option<usize>) -> Vec<Duration> {
    let mut out = vec![Duration::ZERO; groups];
    let t = TABLE.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    for (&(op, _), &(total, _)) in t.iter() {
        if let Some(g) = classify(op).filter(|&g| g < groups) {
            out[g] += total;
        }
    }
    out
}
