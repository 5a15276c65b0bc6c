//! Live heap bytes must not grow with the number of training steps or of forward passes
//! under no_grad (graphs and saved tensors are freed). Its own test binary so that the
//! counting allocator sees only this work; tests run one at a time through a lock.

use fixpoint::{Rng, Tensor, init, no_grad};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);
/// Bytes handed out by the allocator since start (never decreases).
static TOTAL: AtomicIsize = AtomicIsize::new(0);
static SERIAL: Mutex<()> = Mutex::new(());

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        TOTAL.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        TOTAL.fetch_add(new as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// A two-layer MLP written with raw tensors and a manual SGD update.
struct Net {
    w1: Tensor,
    b1: Tensor,
    w2: Tensor,
    b2: Tensor,
}

impl Net {
    fn new() -> Net {
        let mut r = Rng::new(0);
        Net {
            w1: init::kaiming_uniform([16, 64], 16, 1.0, &mut r).requires_grad_(),
            b1: Tensor::zeros([64]).requires_grad_(),
            w2: init::kaiming_uniform([64, 4], 64, 1.0, &mut r).requires_grad_(),
            b2: Tensor::zeros([4]).requires_grad_(),
        }
    }
    fn forward(&self, x: &Tensor) -> Tensor {
        let h = x.matmul(&self.w1).unwrap().add(&self.b1).unwrap().relu();
        h.matmul(&self.w2).unwrap().add(&self.b2).unwrap()
    }
    fn step(&mut self, x: &Tensor, y: &Tensor) -> f32 {
        let d = self.forward(x).sub(y).unwrap();
        let loss = d.square().mean_all().unwrap();
        loss.backward().unwrap();
        for p in [&mut self.w1, &mut self.b1, &mut self.w2, &mut self.b2] {
            let g = p.grad().unwrap().to_vec();
            p.update_data(|v| v.iter_mut().zip(&g).for_each(|(v, g)| *v -= 0.01 * g));
            p.zero_grad();
        }
        loss.item().unwrap()
    }
}

fn batch(r: &mut Rng) -> (Tensor, Tensor) {
    (init::normal([32, 16], 0.0, 1.0, r), init::normal([32, 4], 0.0, 1.0, r))
}

#[test]
fn training_steps_do_not_leak() {
    let _s = SERIAL.lock().unwrap();
    let mut net = Net::new();
    let mut r = Rng::new(1);
    let mut after = |n: usize, net: &mut Net| {
        for _ in 0..n {
            let (x, y) = batch(&mut r);
            assert!(net.step(&x, &y).is_finite());
        }
        live()
    };
    let at100 = after(100, &mut net);
    let at1000 = after(900, &mut net);
    assert!(at1000 <= at100 + (1 << 20), "live bytes grew from {at100} after 100 steps to {at1000} after 1000");
}

#[test]
fn forward_under_no_grad_does_not_leak() {
    let _s = SERIAL.lock().unwrap();
    let net = Net::new();
    let mut r = Rng::new(2);
    let mut after = |n: usize| {
        for _ in 0..n {
            let (x, _) = batch(&mut r);
            let out = no_grad(|| net.forward(&x));
            assert!(!out.requires_grad());
        }
        live()
    };
    let at100 = after(100);
    let at1000 = after(900);
    assert!(at1000 <= at100 + (1 << 20), "live bytes grew from {at100} to {at1000}");
}

#[test]
fn a_retained_graph_is_what_holds_memory() {
    // The check above can fail: keeping every step's graph alive grows live bytes.
    let _s = SERIAL.lock().unwrap();
    let net = Net::new();
    let mut r = Rng::new(3);
    let before = live();
    let kept: Vec<Tensor> = (0..200).map(|_| net.forward(&batch(&mut r).0).sum_all()).collect();
    assert!(live() > before + (1 << 20), "200 retained graphs should hold > 1 MiB");
    drop(kept);
    assert!(live() <= before + (64 << 10));
}

#[test]
fn the_buffer_pool_removes_most_allocation_per_step() {
    // A step on 256 x 512 tensors (128K elements, above the pool's minimum): bytes
    // requested from the allocator per step, pool on vs off. (GEMMs are left out:
    // matrixmultiply allocates its own packing buffers, which the pool cannot serve.)
    let _s = SERIAL.lock().unwrap();
    let mut r = Rng::new(5);
    let w1 = init::normal([256, 512], 0.0, 1.0, &mut r).requires_grad_();
    let w2 = init::normal([256, 512], 0.0, 1.0, &mut r).requires_grad_();
    let x = init::normal([256, 512], 0.0, 1.0, &mut r);
    let step = || {
        let h = x.mul(&w1).unwrap().gelu().add(&w2).unwrap().tanh().mul(&x).unwrap();
        h.square().sum_all().backward().unwrap();
        w1.zero_grad();
        w2.zero_grad();
    };
    let bytes_per_step = || {
        step(); // warm the pool
        let t0 = TOTAL.load(Ordering::Relaxed);
        for _ in 0..10 {
            step();
        }
        (TOTAL.load(Ordering::Relaxed) - t0) / 10
    };
    let pooled = bytes_per_step();
    fixpoint::storage::pool::set_limit_bytes(0);
    let unpooled = bytes_per_step();
    fixpoint::storage::pool::set_limit_bytes(512 << 20);
    println!("allocated per step: {pooled} B with the pool, {unpooled} B without");
    assert!(unpooled > 4 << 20, "the step should allocate several MiB without a pool: {unpooled}");
    assert!(pooled * 5 < unpooled, "pool: {pooled} B/step vs {unpooled} B/step without");
}
