//! The fixed-point benchmark on a tiny grid: its JSON has the figures, the Woodbury
//! solve computes the same fixed point, and peak live bytes (own counting allocator) do
//! not grow with the iteration cap under the one-step backward. No timings asserted.

use fixpoint::bench::fixed_point::{FixedPointOpts, PeakProbe, run};
use fixpoint::fpr::BackwardMode;
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
}

#[global_allocator]
static A: Counting = Counting;

fn reset() {
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
}
fn peak() -> usize {
    PEAK.load(Ordering::Relaxed)
}

#[test]
fn tiny_grid_reports_figures_and_memory_does_not_grow_with_iterations() {
    let opts = FixedPointOpts {
        batch: 2,
        dims: vec![8, 16],
        lens: vec![16, 128],
        reps: 1,
        backward_modes: vec![BackwardMode::OneStep, BackwardMode::implicit()],
        peak: Some(PeakProbe { reset, peak }),
        ..FixedPointOpts::default()
    };
    let v = run(&opts).unwrap();
    println!("{v}");
    let points = v["points"].as_array().unwrap();
    assert_eq!(points.len(), 4);
    for p in points {
        for key in ["iterations", "fp_iter_ms", "scan_ms", "diag_fwd_ms", "fp_fwd_ms", "woodbury_ms", "dense_ms"] {
            assert!(p[key].is_number(), "{key} missing in {p}");
        }
        assert!(p["fwd_bwd_ms"]["one-step"].is_number() && p["fwd_bwd_ms"]["implicit"].is_number(), "{p}");
        // (b) computes the same function as the fixed-point solve (measured ≈1e-3, the
        // solver's stopping residual).
        let diff = p["woodbury_max_rel_diff"].as_f64().unwrap();
        assert!(diff < 5e-3, "Woodbury vs fixed point: {diff} at {p}");
        let ratio = p["peak_mem_lmax16_over_lmax2"].as_f64().unwrap();
        assert!(ratio <= 1.05, "peak memory grows with ℓ_max: {ratio} at {p}");
    }
    assert!(v["one_step_peak_mem_over_diagonal"].is_number());
}
