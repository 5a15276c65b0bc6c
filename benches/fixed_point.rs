//! `cargo bench --bench fixed_point [-- quick]`: the fixed-point benchmark with peak live
//! bytes from a counting allocator; prints the JSON object as its last line.

use fixpoint::bench::fixed_point::{FixedPointOpts, PeakProbe, run};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let now = if new >= l.size() {
            LIVE.fetch_add(new - l.size(), Ordering::Relaxed) + new - l.size()
        } else {
            LIVE.fetch_sub(l.size() - new, Ordering::Relaxed) - (l.size() - new)
        };
        PEAK.fetch_max(now, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn reset() {
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
}
/// Peak above the live bytes at the reset is what the callers compare; report the peak.
fn peak() -> usize {
    PEAK.load(Ordering::Relaxed)
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let mut opts = FixedPointOpts { peak: Some(PeakProbe { reset, peak }), ..FixedPointOpts::default() };
    if quick {
        opts.dims = vec![64, 128];
        opts.lens = vec![64, 1024];
        opts.reps = 3;
    }
    let v = run(&opts).expect("fixed-point bench");
    if fixpoint::profile::enabled() {
        eprintln!("{}", fixpoint::profile::report());
    }
    println!("{v}");
}
