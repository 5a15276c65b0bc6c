//! The diagonal linear recurrence ("scan") `h_t = a_t ⊙ h_{t−1} + u_t` over `(B, T, D)`
//! tensors with channels contiguous, its reverse-time variant, and its backward, which is
//! itself a reverse scan:
//!
//! ```text
//! g_t = dh_t + a_{t+1} ⊙ g_{t+1},   du_t = g_t,   da_t = g_t ⊙ h_{t−1},   dh0 = a_0 ⊙ g_0
//! ```
//!
//! Three kernels compute the same recurrence; each is public so that tests and benchmarks
//! can call it directly, and [`ScanKernel::Auto`] picks one by shape:
//!
//! - [`scan_seq`]: the sequential reference, scalar loops, one thread.
//! - [`scan_simd`]: `wide::f32x8` over channels with the time step outer (each step reads
//!   one contiguous row segment per operand), parallel over batch rows (and over channel
//!   blocks of at least 256 channels when the batch is small). This moves the minimum of
//!   bytes (read `a` and `u` once, write `h` once) and runs at the memory bandwidth.
//! - [`scan_chunked`]: parallel across time for long sequences with few channels. Pass 1
//!   reduces each chunk to its transfer `(∏a, local end state)`; a tiny serial pass
//!   propagates the carries between chunks; pass 2 rescans each chunk from its carry. It
//!   moves 20 bytes per element instead of 12, so it only pays when batch × channels
//!   cannot keep many threads busy (see [`ScanKernel::select`]).
//!
//! Every step is one fused multiply-add `a·h + u` in every kernel, so [`scan_seq`] and
//! [`scan_simd`] agree bit for bit (on targets with FMA), whatever the split into blocks.
//! The chunked kernel differs only in how the carry into each chunk is rounded. Chunk
//! boundaries depend on `T` and `D` only, never on the thread count, so all kernels give
//! bit-identical results at any thread count.
//!
//! NaN or infinity in `a` or `u` propagates like in the sequential recurrence: a NaN at
//! step `t` of a channel makes `h` NaN from step `t` on in that channel (and, in the
//! backward, the gradients that depend on it). No kernel has data-dependent control flow,
//! so bad values never hang or panic. The chunk products `∏a` cannot overflow when
//! `|a| ≤ 1`; with `|a| > 1` over a whole chunk they may, and then the chunked kernel can
//! give ±∞ where the sequential recurrence still has a (huge) finite value.

use crate::autograd::{Backward, is_grad_enabled};
use crate::error::{Error, Result};
use crate::shape::Shape;
use crate::tensor::Tensor;
use rayon::prelude::*;
use wide::f32x8;

/// Sizes and direction of a scan over `(batch, time, channels)` row-major data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanSpec {
    pub batch: usize,
    pub time: usize,
    pub channels: usize,
    /// Time runs backwards: `h_t = a_t ⊙ h_{t+1} + u_t`, with `h0` standing for `h_T`.
    pub reverse: bool,
}

impl ScanSpec {
    pub fn new(batch: usize, time: usize, channels: usize) -> ScanSpec {
        ScanSpec { batch, time, channels, reverse: false }
    }
    /// The same sizes with time running backwards when `reverse`.
    pub fn reversed(self, reverse: bool) -> ScanSpec {
        ScanSpec { reverse, ..self }
    }
    pub fn numel(&self) -> usize {
        self.batch * self.time * self.channels
    }
    pub(crate) fn shape(&self) -> Shape {
        Shape::new([self.batch, self.time, self.channels])
    }
    /// Offset of the row that batch `b` processes at step `f` (steps count in the
    /// direction of the recurrence: `f = 0` is `t = 0` forward and `t = T − 1` reversed).
    #[inline(always)]
    fn row(&self, b: usize, f: usize) -> usize {
        let t = if self.reverse { self.time - 1 - f } else { f };
        (b * self.time + t) * self.channels
    }
    fn check(&self, op: &'static str, name: &str, len: usize, want: usize, shape: Shape) -> Result<()> {
        if len != want {
            return Err(Error::InvalidArgument {
                op,
                message: format!("{name} has {len} values but the scan of shape {} needs {want}", shape),
            });
        }
        Ok(())
    }
    fn check_state(&self, op: &'static str, name: &str, len: usize) -> Result<()> {
        let shape = Shape::new([self.batch, self.channels]);
        self.check(op, name, len, shape.numel(), shape)
    }
    fn check_seq(&self, op: &'static str, name: &str, len: usize) -> Result<()> {
        self.check(op, name, len, self.numel(), self.shape())
    }
}

/// Which kernel computes a scan.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ScanKernel {
    /// Chosen by shape and thread count with [`ScanKernel::select`].
    #[default]
    Auto,
    /// [`scan_seq`]: scalar, one thread (the reference).
    Sequential,
    /// [`scan_simd`]: f32x8 over channels, parallel over batch × channel blocks.
    Simd,
    /// [`scan_chunked`]: parallel across time chunks.
    Chunked,
}

impl ScanKernel {
    pub fn name(&self) -> &'static str {
        match self {
            ScanKernel::Auto => "auto",
            ScanKernel::Sequential => "seq",
            ScanKernel::Simd => "simd",
            ScanKernel::Chunked => "chunked",
        }
    }

    /// The kernel that `Auto` runs for `spec` on `threads` threads.
    ///
    /// The SIMD kernel moves 12 bytes per element and runs at the bandwidth of one core
    /// even for a single channel block; the chunked one moves 20 and does about 2–3× the
    /// work of the SIMD kernel on one core (measured on the 2-core Zen 4 VM for D = 4..64,
    /// T = 16 Ki..64 Ki). So the chunked kernel is chosen only when the batch × channel
    /// blocks leave threads idle, there are enough threads (at least
    /// [`CHUNKED_MIN_THREADS`]) to repay its extra work, the sequence has at least two
    /// chunks per thread, and the data is small enough to stay in the last-level cache
    /// (beyond it, one core already streams at the DRAM limit). On two cores that never
    /// happens: the SIMD kernel on one core is faster for every few-channel shape measured.
    pub fn select(spec: &ScanSpec, threads: usize) -> ScanKernel {
        if threads < CHUNKED_MIN_THREADS || spec.numel() < par_min_elems() {
            return ScanKernel::Simd;
        }
        let blocks = spec.batch * spec.channels.div_ceil(MIN_BLOCK);
        let chunks = spec.time.div_ceil(chunk_len(spec.time, spec.channels));
        if blocks < threads && chunks >= 2 * threads && spec.numel() <= CHUNKED_MAX_ELEMS {
            ScanKernel::Chunked
        } else {
            ScanKernel::Simd
        }
    }

    fn resolve(self, spec: &ScanSpec) -> ScanKernel {
        match self {
            ScanKernel::Auto => ScanKernel::select(spec, rayon::current_num_threads()),
            k => k,
        }
    }
}

/// Options of [`Tensor::scan`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanOptions {
    /// Time runs backwards (`h_t = a_t ⊙ h_{t+1} + u_t`).
    pub reverse: bool,
    /// Kernel for the forward and the backward.
    pub kernel: ScanKernel,
}

impl ScanOptions {
    /// Forward in time, kernel chosen by shape.
    pub fn forward() -> ScanOptions {
        ScanOptions::default()
    }
    /// Backward in time, kernel chosen by shape.
    pub fn reversed() -> ScanOptions {
        ScanOptions { reverse: true, ..Default::default() }
    }
    pub fn with_kernel(self, kernel: ScanKernel) -> ScanOptions {
        ScanOptions { kernel, ..self }
    }
}

// ----- tuning ---------------------------------------------------------------------------

/// Narrowest channel block (a multiple of 8) that the SIMD kernel hands to one task
/// when it splits rows between threads (when the batch is too small to share out). A
/// task that owns only part of each row reads strided row segments, which stream well
/// only when the segments are long: B = 1, D = 256 split into 2 × 128 channels ran at
/// half the speed of one thread on whole rows.
const MIN_BLOCK: usize = 256;
/// Fewest threads for which `Auto` considers the chunked kernel (see [`ScanKernel::select`]).
pub const CHUNKED_MIN_THREADS: usize = 4;
/// Below this many elements a kernel stays serial. A rayon fork/join costs about 1–2 µs
/// from inside a pool and 15–20 µs from outside (docs/performance.md §7, where splitting
/// 2 × 2 µs of work from inside a pool already gave 1.4×); 32 Ki elements are 4–15 µs of
/// scan, 256 Ki elements 30–120 µs.
const PAR_MIN_ELEMS_IN_POOL: usize = 32 * 1024;
const PAR_MIN_ELEMS_OUTSIDE: usize = 256 * 1024;
/// Largest scan (elements) for which `Auto` considers the chunked kernel.
const CHUNKED_MAX_ELEMS: usize = 2 * 1024 * 1024;

/// Fewest elements worth a fork/join from the calling thread.
fn par_min_elems() -> usize {
    if rayon::current_thread_index().is_some() { PAR_MIN_ELEMS_IN_POOL } else { PAR_MIN_ELEMS_OUTSIDE }
}

/// Whether `elems` elements of work justify a fork/join on the current pool.
fn worth_parallel(elems: usize) -> bool {
    rayon::current_num_threads() > 1 && elems >= par_min_elems()
}

/// Time steps per chunk of the chunked kernel: a function of `T` and `D` only, so that
/// results never depend on the thread count. At least 64 steps and 16 Ki elements per
/// chunk (a few µs of work), at most about 64 chunks per sequence.
pub fn chunk_len(time: usize, channels: usize) -> usize {
    let min_len = 64usize.max((16 * 1024usize).div_ceil(channels.max(1)));
    min_len.max(time.div_ceil(64)).max(1)
}

/// Run `f(0..n)`, in parallel on the current rayon pool when `parallel`.
fn for_tasks(n: usize, parallel: bool, f: impl Fn(usize) + Sync + Send) {
    if parallel && n > 1 {
        (0..n).into_par_iter().for_each(f);
    } else {
        (0..n).for_each(f);
    }
}

// ----- raw output access ----------------------------------------------------------------

/// A base pointer that tasks use to write disjoint parts of one output buffer (disjoint
/// channel blocks of the same rows cannot be handed out as `&mut` slices).
#[derive(Clone, Copy)]
struct SyncPtr {
    ptr: *mut f32,
    len: usize,
}
// SAFETY: every use writes a region that no other task reads or writes at the same time
// (each task owns a batch × channel block or a time chunk), see the callers.
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}

impl SyncPtr {
    fn new(s: &mut [f32]) -> SyncPtr {
        SyncPtr { ptr: s.as_mut_ptr(), len: s.len() }
    }
    /// # Safety
    /// No other live reference may overlap `off..off + n` while the result lives.
    #[inline(always)]
    unsafe fn slice_mut<'a>(self, off: usize, n: usize) -> &'a mut [f32] {
        assert!(off + n <= self.len, "scan: output range out of bounds");
        // SAFETY: in bounds (checked); exclusivity is the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(off), n) }
    }
    /// # Safety
    /// No live `&mut` may overlap `off..off + n` while the result lives.
    #[inline(always)]
    unsafe fn slice<'a>(self, off: usize, n: usize) -> &'a [f32] {
        assert!(off + n <= self.len, "scan: output range out of bounds");
        // SAFETY: in bounds (checked); no concurrent writer is the caller's promise.
        unsafe { std::slice::from_raw_parts(self.ptr.add(off), n) }
    }
}

// ----- inner loops ---------------------------------------------------------------------------
//
// Two ways to walk a task's block of channels over its steps. Both move through memory
// strictly in the direction of the steps (rows and, within a row, channels), because the
// prefetchers lose track of any other order: rows that descend while each row ascends, or
// rows revisited in several narrower passes, run 2–3× slower from DRAM (measured).
//
// - Narrow blocks (at most 64 channels, at most 4 cache lines per row): the state lives in
//   registers for all the steps, in one loop over up to 8 vectors and a scalar tail. The
//   loop carries only the recurrence: per step one load per input and one store per output.
// - Wider blocks: one row after the other; the state is the previous output row (in L1).

/// Widest block (channels) whose state stays in registers.
const NARROW: usize = 64;

/// A read position: base pointer and element offset (offsets advance with the walk and
/// are only dereferenced in bounds).
#[derive(Clone, Copy)]
struct Src {
    base: *const f32,
    off: isize,
}

/// A write position.
#[derive(Clone, Copy)]
struct Dst {
    base: *mut f32,
    off: isize,
}

impl Src {
    fn new(s: &[f32], off: isize) -> Src {
        Src { base: s.as_ptr(), off }
    }
    /// # Safety
    /// `off + k .. off + k + 8` must lie in the allocation.
    #[inline(always)]
    unsafe fn v(self, k: usize) -> f32x8 {
        // SAFETY: in bounds by the caller's promise; unaligned read of 8 f32.
        f32x8::new(unsafe { self.base.offset(self.off + k as isize).cast::<[f32; 8]>().read_unaligned() })
    }
    /// # Safety
    /// `off + k` must lie in the allocation.
    #[inline(always)]
    unsafe fn s(self, k: usize) -> f32 {
        // SAFETY: in bounds by the caller's promise.
        unsafe { *self.base.offset(self.off + k as isize) }
    }
}

impl Dst {
    fn new(p: SyncPtr, off: isize) -> Dst {
        Dst { base: p.ptr, off }
    }
    /// # Safety
    /// `off + k .. off + k + 8` must lie in the allocation, written by this task alone.
    #[inline(always)]
    unsafe fn set_v(self, k: usize, v: f32x8) {
        // SAFETY: in bounds and exclusive by the caller's promise.
        unsafe { self.base.offset(self.off + k as isize).cast::<[f32; 8]>().write_unaligned(v.to_array()) }
    }
    /// # Safety
    /// `off + k` must lie in the allocation, written by this task alone.
    #[inline(always)]
    unsafe fn set(self, k: usize, v: f32) {
        // SAFETY: in bounds and exclusive by the caller's promise.
        unsafe { *self.base.offset(self.off + k as isize) = v }
    }
}

/// Index `j` of `n` in walk order.
#[inline(always)]
fn ord<const DESC: bool>(j: usize, n: usize) -> usize {
    if DESC { n - 1 - j } else { j }
}

#[inline(always)]
fn load(s: &[f32]) -> f32x8 {
    f32x8::new(s[..8].try_into().unwrap())
}

#[inline(always)]
fn store(d: &mut [f32], v: f32x8) {
    d[..8].copy_from_slice(v.as_array());
}

/// Narrow forward over `n` steps: `K` vectors and `s.len() − 8K < 8` scalars of state,
/// `h = a ⊙ h + u`, rows `step` apart.
///
/// # Safety
/// All `n` rows of the block must lie in `a`, `u` and `h`; `h` there is the task's alone.
#[inline(always)]
unsafe fn fwd_narrow<const K: usize, const DESC: bool>(a: Src, u: Src, h: Dst, step: isize, n: usize, s: &mut [f32]) {
    let r = s.len() - 8 * K;
    let (mut v, mut t) = ([f32x8::ZERO; K], [0.0f32; 8]);
    for k in 0..K {
        v[k] = load(&s[8 * k..]);
    }
    t[..r].copy_from_slice(&s[8 * K..]);
    let (mut a, mut u, mut h) = (a, u, h);
    for _ in 0..n {
        // SAFETY (both closures): the row is in bounds by the caller's promise.
        let vecs = |v: &mut [f32x8; K]| {
            for j in 0..K {
                let k = ord::<DESC>(j, K);
                unsafe {
                    v[k] = a.v(8 * k).mul_add(v[k], u.v(8 * k));
                    h.set_v(8 * k, v[k]);
                }
            }
        };
        let tail = |t: &mut [f32; 8]| {
            for j in 0..r {
                let k = ord::<DESC>(j, r);
                unsafe {
                    t[k] = a.s(8 * K + k).mul_add(t[k], u.s(8 * K + k));
                    h.set(8 * K + k, t[k]);
                }
            }
        };
        if DESC {
            tail(&mut t);
            vecs(&mut v);
        } else {
            vecs(&mut v);
            tail(&mut t);
        }
        (a.off, u.off, h.off) = (a.off + step, u.off + step, h.off + step);
    }
    for k in 0..K {
        store(&mut s[8 * k..], v[k]);
    }
    s[8 * K..].copy_from_slice(&t[..r]);
}

/// Narrow chunk transfer over `n` steps: `e = a ⊙ e + u`, `p = p ⊙ a`.
///
/// # Safety
/// All `n` rows of the block must lie in `a` and `u`.
#[inline(always)]
unsafe fn red_narrow<const K: usize, const DESC: bool>(
    a: Src,
    u: Src,
    step: isize,
    n: usize,
    e: &mut [f32],
    p: &mut [f32],
) {
    let r = e.len() - 8 * K;
    let (mut ev, mut pv) = ([f32x8::ZERO; K], [f32x8::ZERO; K]);
    let (mut et, mut pt) = ([0.0f32; 8], [0.0f32; 8]);
    for k in 0..K {
        (ev[k], pv[k]) = (load(&e[8 * k..]), load(&p[8 * k..]));
    }
    et[..r].copy_from_slice(&e[8 * K..]);
    pt[..r].copy_from_slice(&p[8 * K..8 * K + r]);
    let (mut a, mut u) = (a, u);
    for _ in 0..n {
        // SAFETY (both closures): the row is in bounds by the caller's promise.
        let vecs = |ev: &mut [f32x8; K], pv: &mut [f32x8; K]| {
            for j in 0..K {
                let k = ord::<DESC>(j, K);
                let av = unsafe { a.v(8 * k) };
                ev[k] = av.mul_add(ev[k], unsafe { u.v(8 * k) });
                pv[k] *= av;
            }
        };
        let tail = |et: &mut [f32; 8], pt: &mut [f32; 8]| {
            for j in 0..r {
                let k = ord::<DESC>(j, r);
                let av = unsafe { a.s(8 * K + k) };
                et[k] = av.mul_add(et[k], unsafe { u.s(8 * K + k) });
                pt[k] *= av;
            }
        };
        if DESC {
            tail(&mut et, &mut pt);
            vecs(&mut ev, &mut pv);
        } else {
            vecs(&mut ev, &mut pv);
            tail(&mut et, &mut pt);
        }
        (a.off, u.off) = (a.off + step, u.off + step);
    }
    for k in 0..K {
        store(&mut e[8 * k..], ev[k]);
        store(&mut p[8 * k..], pv[k]);
    }
    e[8 * K..].copy_from_slice(&et[..r]);
    p[8 * K..8 * K + r].copy_from_slice(&pt[..r]);
}

/// The sources and destinations of a narrow backward block, all at the same row.
#[derive(Clone, Copy)]
struct BwdRows {
    a: Src,
    dh: Src,
    /// `h` at the step after in processing order (`h_{t−1}` for a forward scan).
    hp: Src,
    du: Dst,
    da: Dst,
}

impl BwdRows {
    #[inline(always)]
    fn advance(&mut self, step: isize) {
        self.a.off += step;
        self.dh.off += step;
        self.hp.off += step;
        self.du.off += step;
        self.da.off += step;
    }
}

/// Narrow backward over `n` steps (state `g`): `g = c ⊙ g + dh; du = g; da = g ⊙ hp`
/// (`da` only when `DA`), where the coefficient `c` is the previous step's `a` (`c_init`
/// for the first step). Each step loads its own `a` row before it stores anything: a
/// load from the row just stored to (`a` and `du` start at the same offset modulo 4 KiB
/// when both come from the allocator) would wait for the store (4K aliasing, 3–5× slower).
///
/// # Safety
/// All `n` rows of the block must lie in their buffers; `du` and `da` there are the
/// task's alone.
#[inline(always)]
unsafe fn bwd_narrow<const K: usize, const DESC: bool, const DA: bool>(
    r: BwdRows,
    c_init: &[f32],
    step: isize,
    n: usize,
    s: &mut [f32],
) {
    let len = s.len() - 8 * K;
    let (mut g, mut c) = ([f32x8::ZERO; K], [f32x8::ZERO; K]);
    let (mut gt, mut ct) = ([0.0f32; 8], [0.0f32; 8]);
    for k in 0..K {
        (g[k], c[k]) = (load(&s[8 * k..]), load(&c_init[8 * k..]));
    }
    gt[..len].copy_from_slice(&s[8 * K..]);
    ct[..len].copy_from_slice(&c_init[8 * K..8 * K + len]);
    let mut r = r;
    for _ in 0..n {
        // SAFETY (both closures): the row is in bounds by the caller's promise.
        let vecs = |g: &mut [f32x8; K], c: &mut [f32x8; K]| {
            for j in 0..K {
                let k = ord::<DESC>(j, K);
                unsafe {
                    let next = r.a.v(8 * k);
                    g[k] = c[k].mul_add(g[k], r.dh.v(8 * k));
                    r.du.set_v(8 * k, g[k]);
                    if DA {
                        r.da.set_v(8 * k, g[k] * r.hp.v(8 * k));
                    }
                    c[k] = next;
                }
            }
        };
        let tail = |gt: &mut [f32; 8], ct: &mut [f32; 8]| {
            for j in 0..len {
                let k = ord::<DESC>(j, len);
                let i = 8 * K + k;
                unsafe {
                    let next = r.a.s(i);
                    gt[k] = ct[k].mul_add(gt[k], r.dh.s(i));
                    r.du.set(i, gt[k]);
                    if DA {
                        r.da.set(i, gt[k] * r.hp.s(i));
                    }
                    ct[k] = next;
                }
            }
        };
        if DESC {
            tail(&mut gt, &mut ct);
            vecs(&mut g, &mut c);
        } else {
            vecs(&mut g, &mut c);
            tail(&mut gt, &mut ct);
        }
        r.advance(step);
    }
    for k in 0..K {
        store(&mut s[8 * k..], g[k]);
    }
    s[8 * K..].copy_from_slice(&gt[..len]);
}

/// Call `$f::<K, DESC, ..>` for a runtime vector count `K` ∈ 0..=8 and direction.
macro_rules! dispatch {
    ($f:ident, $k:expr, $desc:expr, [$($extra:tt)*], $($arg:expr),*) => {
        match ($k, $desc) {
            (0, false) => $f::<0, false $($extra)*>($($arg),*),
            (0, true) => $f::<0, true $($extra)*>($($arg),*),
            (1, false) => $f::<1, false $($extra)*>($($arg),*),
            (1, true) => $f::<1, true $($extra)*>($($arg),*),
            (2, false) => $f::<2, false $($extra)*>($($arg),*),
            (2, true) => $f::<2, true $($extra)*>($($arg),*),
            (3, false) => $f::<3, false $($extra)*>($($arg),*),
            (3, true) => $f::<3, true $($extra)*>($($arg),*),
            (4, false) => $f::<4, false $($extra)*>($($arg),*),
            (4, true) => $f::<4, true $($extra)*>($($arg),*),
            (5, false) => $f::<5, false $($extra)*>($($arg),*),
            (5, true) => $f::<5, true $($extra)*>($($arg),*),
            (6, false) => $f::<6, false $($extra)*>($($arg),*),
            (6, true) => $f::<6, true $($extra)*>($($arg),*),
            (7, false) => $f::<7, false $($extra)*>($($arg),*),
            (7, true) => $f::<7, true $($extra)*>($($arg),*),
            (8, false) => $f::<8, false $($extra)*>($($arg),*),
            (8, true) => $f::<8, true $($extra)*>($($arg),*),
            _ => unreachable!("scan: no narrow kernel for {} vectors", $k),
        }
    };
}

/// Channel index `j` of a row of `w` (`v = w / 8` vectors, then the scalar tail) in walk
/// order: call `vec(k)` for the vector at channel `k` and `one(k)` for a tail channel.
#[inline(always)]
fn walk_row<const DESC: bool>(w: usize, mut vec: impl FnMut(usize), mut one: impl FnMut(usize)) {
    let v = w / 8;
    if DESC {
        for k in (8 * v..w).rev() {
            one(k);
        }
        for j in (0..v).rev() {
            vec(8 * j);
        }
    } else {
        for j in 0..v {
            vec(8 * j);
        }
        for k in 8 * v..w {
            one(k);
        }
    }
}

/// Wide forward step over `w` channels: `h = a ⊙ p + u` (fused).
///
/// # Safety
/// The `w` channels at every position must lie in their buffers; `h` there is the task's
/// alone and does not overlap `p`.
#[inline(always)]
unsafe fn fwd_row<const DESC: bool>(a: Src, u: Src, p: Src, h: Dst, w: usize) {
    // SAFETY (both closures): in bounds and exclusive by the caller's promise.
    walk_row::<DESC>(
        w,
        |k| unsafe { h.set_v(k, a.v(k).mul_add(p.v(k), u.v(k))) },
        |k| unsafe { h.set(k, a.s(k).mul_add(p.s(k), u.s(k))) },
    );
}

/// Wide transfer step: `e = a ⊙ e + u; p = p ⊙ a` (`e`, `p` of length `w`).
///
/// # Safety
/// The `w` channels of `a` and `u` must lie in their buffers.
#[inline(always)]
unsafe fn reduce_row<const DESC: bool>(a: Src, u: Src, e: &mut [f32], p: &mut [f32]) {
    let w = e.len();
    let p = &mut p[..w];
    let (ev, pv) = (Dst { base: e.as_mut_ptr(), off: 0 }, Dst { base: p.as_mut_ptr(), off: 0 });
    let (es, ps) = (Src { base: ev.base, off: 0 }, Src { base: pv.base, off: 0 });
    // SAFETY (both closures): `e` and `p` hold `w` values; the rest by the caller's promise.
    walk_row::<DESC>(
        w,
        |k| unsafe {
            let av = a.v(k);
            ev.set_v(k, av.mul_add(es.v(k), u.v(k)));
            pv.set_v(k, ps.v(k) * av);
        },
        |k| unsafe {
            let av = a.s(k);
            ev.set(k, av.mul_add(es.s(k), u.s(k)));
            pv.set(k, ps.s(k) * av);
        },
    );
}

/// Wide backward step: `g = c ⊙ gp + dh; du = g; da = g ⊙ hp` (`da` only when `DA`).
///
/// # Safety
/// The `w` channels at every position must lie in their buffers; `du` and `da` there are
/// the task's alone and overlap no source.
#[inline(always)]
unsafe fn bwd_row<const DESC: bool, const DA: bool>(c: Src, gp: Src, dh: Src, hp: Src, du: Dst, da: Dst, w: usize) {
    // SAFETY (both closures): in bounds and exclusive by the caller's promise.
    walk_row::<DESC>(
        w,
        |k| unsafe {
            let g = c.v(k).mul_add(gp.v(k), dh.v(k));
            du.set_v(k, g);
            if DA {
                da.set_v(k, g * hp.v(k));
            }
        },
        |k| unsafe {
            let g = c.s(k).mul_add(gp.s(k), dh.s(k));
            du.set(k, g);
            if DA {
                da.set(k, g * hp.s(k));
            }
        },
    );
}

/// `out = x ⊙ y`.
fn mul_row(x: &[f32], y: &[f32], out: &mut [f32]) {
    for ((o, x), y) in out.iter_mut().zip(x).zip(y) {
        *o = x * y;
    }
}

// ----- spans: one task's rows ------------------------------------------------------------

/// A task's share: batch row `b`, channels `c0..c0 + w`, steps `f0..f1`.
#[derive(Clone, Copy)]
struct Span {
    b: usize,
    c0: usize,
    w: usize,
    f0: usize,
    f1: usize,
}

impl ScanSpec {
    /// Offset between the rows of consecutive steps (`row(f + 1) − row(f)`).
    fn fdir(&self) -> isize {
        let d = self.channels as isize;
        if self.reverse { -d } else { d }
    }
    fn check_span(&self, s: &Span) {
        assert!(s.f0 <= s.f1 && s.f1 <= self.time && s.c0 + s.w <= self.channels && s.b < self.batch, "scan: span");
    }
}

/// Forward over a span, starting from the state `init` (length `w`) before step `f0`.
///
/// # Safety
/// No other task may access `h` in the span's rows and channels meanwhile.
unsafe fn fwd_span(spec: &ScanSpec, a: &[f32], u: &[f32], h: SyncPtr, s: Span, init: &[f32]) {
    spec.check_span(&s);
    let numel = spec.numel();
    assert!(a.len() == numel && u.len() == numel && h.len == numel && init.len() == s.w, "scan: buffers");
    if s.f0 == s.f1 {
        return;
    }
    let desc = spec.reverse;
    if s.w <= NARROW {
        let mut state = [0.0f32; NARROW];
        let state = &mut state[..s.w];
        state.copy_from_slice(init);
        let row = (spec.row(s.b, s.f0) + s.c0) as isize;
        let (ra, ru, rh) = (Src::new(a, row), Src::new(u, row), Dst::new(h, row));
        // SAFETY: rows f0..f1 of channels c0..c0 + w lie in the buffers (checked above);
        // `h` there belongs to this task.
        unsafe { dispatch!(fwd_narrow, s.w / 8, desc, [], ra, ru, rh, spec.fdir(), s.f1 - s.f0, state) };
        return;
    }
    let step = spec.fdir();
    let row = (spec.row(s.b, s.f0) + s.c0) as isize;
    let (mut ra, mut ru, mut rh) = (Src::new(a, row), Src::new(u, row), Dst::new(h, row));
    let mut prev = Src::new(init, 0);
    for _ in s.f0..s.f1 {
        // SAFETY: rows f0..f1 of channels c0..c0 + w lie in the buffers (checked above);
        // `h` there belongs to this task, and the previous row is another row (or `init`).
        unsafe { if desc { fwd_row::<true>(ra, ru, prev, rh, s.w) } else { fwd_row::<false>(ra, ru, prev, rh, s.w) } }
        prev = Src { base: rh.base, off: rh.off };
        (ra.off, ru.off, rh.off) = (ra.off + step, ru.off + step, rh.off + step);
    }
}

/// A chunk's transfer over a span: `e` = the end state from a zero start, `p` = ∏a.
fn reduce_span(spec: &ScanSpec, a: &[f32], u: &[f32], s: Span, e: &mut [f32], p: &mut [f32]) {
    spec.check_span(&s);
    assert!(a.len() == spec.numel() && u.len() == spec.numel() && e.len() == s.w && p.len() == s.w);
    e.fill(0.0);
    p.fill(1.0);
    if s.f0 == s.f1 {
        return;
    }
    let desc = spec.reverse;
    if s.w <= NARROW {
        let row = (spec.row(s.b, s.f0) + s.c0) as isize;
        let (ra, ru) = (Src::new(a, row), Src::new(u, row));
        // SAFETY: rows f0..f1 of the block lie in `a` and `u` (checked above).
        unsafe { dispatch!(red_narrow, s.w / 8, desc, [], ra, ru, spec.fdir(), s.f1 - s.f0, e, p) };
        return;
    }
    for f in s.f0..s.f1 {
        let r = (spec.row(s.b, f) + s.c0) as isize;
        let (a, u) = (Src::new(a, r), Src::new(u, r));
        // SAFETY: row f of the block lies in `a` and `u` (checked above).
        unsafe { if desc { reduce_row::<true>(a, u, e, p) } else { reduce_row::<false>(a, u, e, p) } }
    }
}

/// The saved forward inputs a backward reads.
#[derive(Clone, Copy)]
struct BwdIn<'a> {
    a: &'a [f32],
    h: &'a [f32],
    h0: Option<&'a [f32]>,
    dh: &'a [f32],
}

/// The gradient buffers as raw pointers for the tasks.
#[derive(Clone, Copy)]
struct BwdOut {
    du: SyncPtr,
    da: Option<SyncPtr>,
    dh0: Option<SyncPtr>,
}

/// Backward over a span, steps `f1 − 1` down to `f0`, given the gradient `g_{f1}`
/// flowing in from the later steps (`g_in`, zeros at the end of the sequence).
/// `zeros` holds at least `w` zeros.
///
/// # Safety
/// No other task may access the span's rows and channels of `du` and `da`, or the
/// span's channels of `dh0`, meanwhile.
unsafe fn bwd_span(spec: &ScanSpec, x: BwdIn, out: BwdOut, s: Span, g_in: &[f32], zeros: &[f32]) {
    spec.check_span(&s);
    let numel = spec.numel();
    assert!(x.a.len() == numel && x.h.len() == numel && x.dh.len() == numel && out.du.len == numel);
    assert!(out.da.is_none_or(|p| p.len == numel) && g_in.len() == s.w && zeros.len() >= s.w);
    assert!(x.h0.is_none_or(|h0| h0.len() == spec.batch * spec.channels));
    let (w, c0, b) = (s.w, s.c0, s.b);
    let st0 = b * spec.channels + c0;
    let h0_row: &[f32] = match x.h0 {
        Some(h0) => &h0[st0..st0 + w],
        None => &zeros[..w],
    };
    let (fdir, desc) = (spec.fdir(), !spec.reverse);
    let mut narrow_state = [0.0f32; NARROW];
    if w <= NARROW {
        let state = &mut narrow_state[..w];
        state.copy_from_slice(g_in);
        // Steps f_hi − 1 down to f_hi − n, with the coefficient a_{f+1} (or zero at the
        // sequence end) and h_{f−1} (or h0 at the start).
        let mut segment = |f_hi: usize, n: usize, coef_zero: bool, hp_init: bool| {
            let row = (spec.row(b, f_hi - 1) + c0) as isize;
            let c_init: &[f32] = if coef_zero { &zeros[..w] } else { &x.a[(row + fdir) as usize..][..w] };
            let hp = if hp_init { Src::new(h0_row, 0) } else { Src::new(x.h, row - fdir) };
            let da = out.da.map_or(Dst { base: std::ptr::null_mut(), off: 0 }, |p| Dst::new(p, row));
            let r = BwdRows { a: Src::new(x.a, row), dh: Src::new(x.dh, row), hp, du: Dst::new(out.du, row), da };
            // SAFETY: the n rows f_hi − n..f_hi lie in the buffers, their previous rows
            // (down to f_hi − n − 1 ≥ 0) too unless `hp_init` (then n = 1); `du`, `da`
            // there belong to this task.
            unsafe {
                match out.da {
                    Some(_) => dispatch!(bwd_narrow, w / 8, desc, [, true], r, c_init, -fdir, n, state),
                    None => dispatch!(bwd_narrow, w / 8, desc, [, false], r, c_init, -fdir, n, state),
                }
            }
        };
        let mut hi = s.f1;
        if hi > s.f0 && hi == spec.time {
            segment(hi, 1, true, hi == 1);
            hi -= 1;
        }
        if hi > s.f0.max(1) {
            segment(hi, hi - s.f0.max(1), false, false);
            hi = s.f0.max(1);
        }
        if hi == 1 && s.f0 == 0 {
            segment(1, 1, false, true);
        }
    } else {
        let mut coef =
            if s.f1 < spec.time { Src::new(x.a, (spec.row(b, s.f1) + c0) as isize) } else { Src::new(zeros, 0) };
        let mut gprev = Src::new(g_in, 0);
        let null = Dst { base: std::ptr::null_mut(), off: 0 };
        for f in (s.f0..s.f1).rev() {
            let r = (spec.row(b, f) + c0) as isize;
            let hp = if f > 0 { Src::new(x.h, r - fdir) } else { Src::new(h0_row, 0) };
            let (dh, du) = (Src::new(x.dh, r), Dst::new(out.du, r));
            let da = out.da.map_or(null, |p| Dst::new(p, r));
            // SAFETY: row f, its coefficient row f + 1 (or `zeros`), its previous row f − 1
            // (or `h0_row`) lie in the buffers; `du`, `da` at row f belong to this task and
            // `gprev` is another row of `du` (or `g_in`).
            unsafe {
                match (out.da.is_some(), desc) {
                    (true, true) => bwd_row::<true, true>(coef, gprev, dh, hp, du, da, w),
                    (true, false) => bwd_row::<false, true>(coef, gprev, dh, hp, du, da, w),
                    (false, true) => bwd_row::<true, false>(coef, gprev, dh, hp, du, da, w),
                    (false, false) => bwd_row::<false, false>(coef, gprev, dh, hp, du, da, w),
                }
            }
            coef = Src::new(x.a, r);
            gprev = Src { base: du.base, off: r };
        }
    }
    if s.f0 == 0
        && s.f1 > 0
        && let Some(dh0) = out.dh0
    {
        let r = spec.row(b, 0) + c0;
        // SAFETY: row 0 of `du` is this task's (read only now); channels `st0..st0 + w`
        // of `dh0` too.
        let g0 = if w <= NARROW { &narrow_state[..w] } else { unsafe { out.du.slice(r, w) } };
        unsafe { mul_row(&x.a[r..r + w], g0, dh0.slice_mut(st0, w)) };
    }
}

/// The backward transfer of steps `f1 − 1` down to `f0` (coefficients `a_{f+1}`;
/// `f1 < T`).
fn bwd_reduce_span(spec: &ScanSpec, x: BwdIn, s: Span, e: &mut [f32], p: &mut [f32]) {
    spec.check_span(&s);
    assert!(s.f1 < spec.time && x.a.len() == spec.numel() && x.dh.len() == spec.numel());
    assert!(e.len() == s.w && p.len() == s.w);
    e.fill(0.0);
    p.fill(1.0);
    if s.f0 == s.f1 {
        return;
    }
    let (fdir, desc) = (spec.fdir(), !spec.reverse);
    if s.w <= NARROW {
        let row = (spec.row(s.b, s.f1 - 1) + s.c0) as isize;
        let (coef, dh) = (Src::new(x.a, row + fdir), Src::new(x.dh, row));
        // SAFETY: rows f0..f1 and their coefficient rows (up to f1 < T) lie in the buffers.
        unsafe { dispatch!(red_narrow, s.w / 8, desc, [], coef, dh, -fdir, s.f1 - s.f0, e, p) };
        return;
    }
    for f in (s.f0..s.f1).rev() {
        let r = (spec.row(s.b, f) + s.c0) as isize;
        let (c, dh) = (Src::new(x.a, r + fdir), Src::new(x.dh, r));
        // SAFETY: row f and its coefficient row f + 1 < T lie in the buffers.
        unsafe { if desc { reduce_row::<true>(c, dh, e, p) } else { reduce_row::<false>(c, dh, e, p) } }
    }
}

// ----- forward kernels --------------------------------------------------------------------

fn check_fwd(op: &'static str, spec: &ScanSpec, a: &[f32], u: &[f32], h0: Option<&[f32]>, h: &[f32]) -> Result<()> {
    spec.check_seq(op, "a", a.len())?;
    spec.check_seq(op, "u", u.len())?;
    spec.check_seq(op, "h", h.len())?;
    if let Some(h0) = h0 {
        spec.check_state(op, "h0", h0.len())?;
    }
    Ok(())
}

/// Sequential reference: `h_t = a_t ⊙ h_{t−1} + u_t` (fused), scalar, one thread.
/// `h0` (shape `(B, D)`) is the state before the first step; zeros when `None`.
pub fn scan_seq(spec: &ScanSpec, a: &[f32], u: &[f32], h0: Option<&[f32]>, h: &mut [f32]) -> Result<()> {
    check_fwd("scan_seq", spec, a, u, h0, h)?;
    let d = spec.channels;
    let mut state = vec![0.0f32; d];
    for b in 0..spec.batch {
        match h0 {
            Some(h0) => state.copy_from_slice(&h0[b * d..(b + 1) * d]),
            None => state.fill(0.0),
        }
        for f in 0..spec.time {
            let r = spec.row(b, f);
            for c in 0..d {
                state[c] = a[r + c].mul_add(state[c], u[r + c]);
                h[r + c] = state[c];
            }
        }
    }
    Ok(())
}

/// Channel block width for the SIMD kernel: whole rows when the batch alone gives every
/// thread a couple of tasks, else rows split into blocks of a multiple of 8 channels
/// (at least [`MIN_BLOCK`]). The values never depend on the split.
fn simd_block(spec: &ScanSpec, parallel: bool) -> usize {
    let d = spec.channels.max(1);
    if !parallel {
        return d;
    }
    let want = 2 * rayon::current_num_threads();
    if spec.batch >= want {
        return d;
    }
    let per_row = want.div_ceil(spec.batch.max(1));
    d.div_ceil(per_row).next_multiple_of(8).max(MIN_BLOCK).min(d)
}

/// SIMD kernel: f32x8 over channels, time step outer, parallel over batch × channel
/// blocks on the current rayon pool (serial below a measured size threshold).
pub fn scan_simd(spec: &ScanSpec, a: &[f32], u: &[f32], h0: Option<&[f32]>, h: &mut [f32]) -> Result<()> {
    check_fwd("scan_simd", spec, a, u, h0, h)?;
    let parallel = worth_parallel(spec.numel());
    let (d, bw) = (spec.channels, simd_block(spec, parallel));
    let nblk = d.div_ceil(bw);
    let hp = SyncPtr::new(h);
    let zeros = if h0.is_none() { vec![0.0f32; bw] } else { Vec::new() };
    for_tasks(spec.batch * nblk, parallel, |task| {
        let (b, k) = (task / nblk, task % nblk);
        let c0 = k * bw;
        let w = bw.min(d - c0);
        let init: &[f32] = match h0 {
            Some(h0) => &h0[b * d + c0..][..w],
            None => &zeros[..w],
        };
        // SAFETY: task (b, k) alone touches batch b, channels c0..c0 + w of `h`.
        unsafe { fwd_span(spec, a, u, hp, Span { b, c0, w, f0: 0, f1: spec.time }, init) };
    });
    Ok(())
}

/// Chunked kernel: parallel across time chunks of [`chunk_len`] steps. Pass 1 scans the
/// first chunk of each sequence outright and reduces each middle chunk to its transfer
/// `(∏a, end state from zero)`; a serial pass chains the transfers into the state
/// entering every chunk; pass 2 rescans each remaining chunk from that state.
pub fn scan_chunked(spec: &ScanSpec, a: &[f32], u: &[f32], h0: Option<&[f32]>, h: &mut [f32]) -> Result<()> {
    check_fwd("scan_chunked", spec, a, u, h0, h)?;
    let (bsz, t, d) = (spec.batch, spec.time, spec.channels);
    let len = chunk_len(t, d);
    let nc = t.div_ceil(len);
    if nc <= 1 || d == 0 {
        return scan_simd(spec, a, u, h0, h);
    }
    let parallel = worth_parallel(spec.numel());
    let span = |b: usize, c: usize| Span { b, c0: 0, w: d, f0: c * len, f1: ((c + 1) * len).min(t) };
    // Transfers (e, p) of chunk c of batch b at ((b·nc + c)·2 + {0, 1})·d.
    let mut transfer = vec![0.0f32; bsz * nc * 2 * d];
    let hp = SyncPtr::new(h);
    let tp = SyncPtr::new(&mut transfer);
    let zeros = vec![0.0f32; d];
    // Pass 1: chunks 0..nc − 1 (the last chunk's transfer is never needed).
    for_tasks(bsz * (nc - 1), parallel, |task| {
        let (b, c) = (task / (nc - 1), task % (nc - 1));
        if c == 0 {
            let init: &[f32] = match h0 {
                Some(h0) => &h0[b * d..(b + 1) * d],
                None => &zeros,
            };
            // SAFETY: this task alone touches chunk 0 of batch b.
            unsafe { fwd_span(spec, a, u, hp, span(b, 0), init) };
        } else {
            // SAFETY: this task alone touches transfer slot (b, c).
            let ep = unsafe { tp.slice_mut((b * nc + c) * 2 * d, 2 * d) };
            let (e, p) = ep.split_at_mut(d);
            reduce_span(spec, a, u, span(b, c), e, p);
        }
    });
    // The state entering chunk c (1 ≤ c < nc) of batch b, at (b·nc + c)·d.
    let mut carry = vec![0.0f32; bsz * nc * d];
    for b in 0..bsz {
        let base = b * nc * d;
        // SAFETY: the tasks are done; nothing else accesses `h`.
        carry[base + d..base + 2 * d].copy_from_slice(unsafe { hp.slice(spec.row(b, len - 1), d) });
        for c in 1..nc - 1 {
            let (e, p) = transfer[(b * nc + c) * 2 * d..][..2 * d].split_at(d);
            let (prev, next) = carry[base + c * d..base + (c + 2) * d].split_at_mut(d);
            chain_carry(e, p, prev, next);
        }
    }
    // Pass 2: rescan chunks 1..nc from their carries.
    for_tasks(bsz * (nc - 1), parallel, |task| {
        let (b, c) = (task / (nc - 1), task % (nc - 1) + 1);
        let init = &carry[(b * nc + c) * d..][..d];
        // SAFETY: this task alone touches chunk c of batch b.
        unsafe { fwd_span(spec, a, u, hp, span(b, c), init) };
    });
    Ok(())
}

/// `next = p ⊙ prev + e`, where a zero `prev` contributes nothing even if `p` overflowed.
fn chain_carry(e: &[f32], p: &[f32], prev: &[f32], next: &mut [f32]) {
    for i in 0..next.len() {
        next[i] = if prev[i] == 0.0 { e[i] } else { p[i].mul_add(prev[i], e[i]) };
    }
}

/// Forward with the given kernel (`Auto` picks one with [`ScanKernel::select`]).
pub fn scan_forward(
    kernel: ScanKernel,
    spec: &ScanSpec,
    a: &[f32],
    u: &[f32],
    h0: Option<&[f32]>,
    h: &mut [f32],
) -> Result<()> {
    match kernel.resolve(spec) {
        ScanKernel::Sequential => scan_seq(spec, a, u, h0, h),
        ScanKernel::Chunked => scan_chunked(spec, a, u, h0, h),
        _ => scan_simd(spec, a, u, h0, h),
    }
}

// ----- backward kernels -------------------------------------------------------------------

/// Gradient buffers a backward kernel fills: `du` (shape `(B, T, D)`, always; it equals
/// the reverse-scan state `g`), `da` (same shape, when wanted; skipping it saves reading
/// `h`) and `dh0` (shape `(B, D)`, when wanted).
pub struct ScanGrads<'a> {
    pub du: &'a mut [f32],
    pub da: Option<&'a mut [f32]>,
    pub dh0: Option<&'a mut [f32]>,
}

fn check_bwd(
    op: &'static str,
    spec: &ScanSpec,
    a: &[f32],
    h: &[f32],
    h0: Option<&[f32]>,
    dh: &[f32],
    grads: &ScanGrads,
) -> Result<()> {
    check_fwd(op, spec, a, dh, h0, h)?;
    spec.check_seq(op, "du", grads.du.len())?;
    if let Some(da) = &grads.da {
        spec.check_seq(op, "da", da.len())?;
    }
    if let Some(dh0) = &grads.dh0 {
        spec.check_state(op, "dh0", dh0.len())?;
    }
    Ok(())
}

/// Sequential reference backward: `g_t = dh_t + a_{t+1} ⊙ g_{t+1}` (fused) run against
/// the direction of the forward, `du = g`, `da_t = g_t ⊙ h_{t−1}`, `dh0 = a_0 ⊙ g_0`
/// (with "t + 1" and "t − 1" taken in the forward's direction). `h` is the forward's
/// output and `h0` its initial state (zeros when `None`).
pub fn scan_backward_seq(
    spec: &ScanSpec,
    a: &[f32],
    h: &[f32],
    h0: Option<&[f32]>,
    dh: &[f32],
    grads: ScanGrads,
) -> Result<()> {
    check_bwd("scan_backward_seq", spec, a, h, h0, dh, &grads)?;
    let ScanGrads { du, mut da, mut dh0 } = grads;
    let d = spec.channels;
    let (mut g, mut coef) = (vec![0.0f32; d], vec![0.0f32; d]);
    for b in 0..spec.batch {
        g.fill(0.0);
        coef.fill(0.0);
        for f in (0..spec.time).rev() {
            let r = spec.row(b, f);
            for c in 0..d {
                g[c] = coef[c].mul_add(g[c], dh[r + c]);
                du[r + c] = g[c];
                if let Some(da) = da.as_deref_mut() {
                    let hp = if f > 0 { h[spec.row(b, f - 1) + c] } else { h0.map_or(0.0, |h0| h0[b * d + c]) };
                    da[r + c] = g[c] * hp;
                }
                coef[c] = a[r + c];
            }
        }
        if let Some(dh0) = dh0.as_deref_mut() {
            mul_row(&coef, &g, &mut dh0[b * d..(b + 1) * d]);
        }
    }
    Ok(())
}

impl<'a> ScanGrads<'a> {
    fn ptrs(self) -> BwdOut {
        BwdOut { du: SyncPtr::new(self.du), da: self.da.map(SyncPtr::new), dh0: self.dh0.map(SyncPtr::new) }
    }
}

/// SIMD backward: the same split and vectorisation as [`scan_simd`].
pub fn scan_backward_simd(
    spec: &ScanSpec,
    a: &[f32],
    h: &[f32],
    h0: Option<&[f32]>,
    dh: &[f32],
    mut grads: ScanGrads,
) -> Result<()> {
    check_bwd("scan_backward_simd", spec, a, h, h0, dh, &grads)?;
    if spec.time == 0 {
        if let Some(dh0) = grads.dh0.as_deref_mut() {
            dh0.fill(0.0);
        }
        return Ok(());
    }
    let parallel = worth_parallel(spec.numel());
    let (d, bw) = (spec.channels, simd_block(spec, parallel));
    let nblk = d.div_ceil(bw);
    let (x, out) = (BwdIn { a, h, h0, dh }, grads.ptrs());
    let zeros = vec![0.0f32; d];
    for_tasks(spec.batch * nblk, parallel, |task| {
        let (b, k) = (task / nblk, task % nblk);
        let c0 = k * bw;
        let w = bw.min(d - c0);
        let z = &zeros[..w];
        // SAFETY: task (b, k) alone touches batch b, channels c0..c0 + w of the gradients.
        unsafe { bwd_span(spec, x, out, Span { b, c0, w, f0: 0, f1: spec.time }, z, z) };
    });
    Ok(())
}

/// Chunked backward: the mirror image of [`scan_chunked`] (the last chunk is scanned
/// outright, the middle ones reduced, carries chained backwards, the rest rescanned).
pub fn scan_backward_chunked(
    spec: &ScanSpec,
    a: &[f32],
    h: &[f32],
    h0: Option<&[f32]>,
    dh: &[f32],
    grads: ScanGrads,
) -> Result<()> {
    check_bwd("scan_backward_chunked", spec, a, h, h0, dh, &grads)?;
    let (bsz, t, d) = (spec.batch, spec.time, spec.channels);
    let len = chunk_len(t, d);
    let nc = t.div_ceil(len);
    if nc <= 1 || d == 0 {
        return scan_backward_simd(spec, a, h, h0, dh, grads);
    }
    let parallel = worth_parallel(spec.numel());
    let span = |b: usize, c: usize| Span { b, c0: 0, w: d, f0: c * len, f1: ((c + 1) * len).min(t) };
    let (x, out) = (BwdIn { a, h, h0, dh }, grads.ptrs());
    let zeros = vec![0.0f32; d];
    let mut transfer = vec![0.0f32; bsz * nc * 2 * d];
    let tp = SyncPtr::new(&mut transfer);
    // Pass 1: chunks 1..nc (chunk 0's transfer is never needed); the last one outright.
    for_tasks(bsz * (nc - 1), parallel, |task| {
        let (b, c) = (task / (nc - 1), task % (nc - 1) + 1);
        if c == nc - 1 {
            // SAFETY: this task alone touches the last chunk of batch b.
            unsafe { bwd_span(spec, x, out, span(b, c), &zeros, &zeros) };
        } else {
            // SAFETY: this task alone touches transfer slot (b, c).
            let ep = unsafe { tp.slice_mut((b * nc + c) * 2 * d, 2 * d) };
            let (e, p) = ep.split_at_mut(d);
            bwd_reduce_span(spec, x, span(b, c), e, p);
        }
    });
    // The gradient entering chunk c (0 ≤ c < nc − 1) from the later steps, at (b·nc + c)·d.
    let mut carry = vec![0.0f32; bsz * nc * d];
    for b in 0..bsz {
        let base = b * nc * d;
        // SAFETY: the tasks are done; nothing else accesses `du`.
        let g_last = unsafe { out.du.slice(spec.row(b, (nc - 1) * len), d) };
        carry[base + (nc - 2) * d..base + (nc - 1) * d].copy_from_slice(g_last);
        for c in (1..nc - 1).rev() {
            let (e, p) = transfer[(b * nc + c) * 2 * d..][..2 * d].split_at(d);
            let (next, prev) = carry[base + (c - 1) * d..base + (c + 1) * d].split_at_mut(d);
            chain_carry(e, p, prev, next);
        }
    }
    // Pass 2: rescan chunks 0..nc − 1 from their carries.
    for_tasks(bsz * (nc - 1), parallel, |task| {
        let (b, c) = (task / (nc - 1), task % (nc - 1));
        let g_in = &carry[(b * nc + c) * d..][..d];
        // SAFETY: this task alone touches chunk c of batch b (and dh0 of batch b for c = 0).
        unsafe { bwd_span(spec, x, out, span(b, c), g_in, &zeros) };
    });
    Ok(())
}

/// Backward with the given kernel (`Auto` picks one with [`ScanKernel::select`]).
pub fn scan_backward(
    kernel: ScanKernel,
    spec: &ScanSpec,
    a: &[f32],
    h: &[f32],
    h0: Option<&[f32]>,
    dh: &[f32],
    grads: ScanGrads,
) -> Result<()> {
    match kernel.resolve(spec) {
        ScanKernel::Sequential => scan_backward_seq(spec, a, h, h0, dh, grads),
        ScanKernel::Chunked => scan_backward_chunked(spec, a, h, h0, dh, grads),
        _ => scan_backward_simd(spec, a, h, h0, dh, grads),
    }
}

// ----- the op -----------------------------------------------------------------------------

struct ScanBackward {
    spec: ScanSpec,
    kernel: ScanKernel,
    a: Tensor,
    h: Tensor,
    h0: Option<Tensor>,
}

impl Backward for ScanBackward {
    fn name(&self) -> &'static str {
        "scan"
    }
    fn backward(&self, g: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let spec = &self.spec;
        if Tensor::common_device("scan backward", &[&self.a, g])? == crate::Device::Gpu {
            return on_gpu!("scan backward", scan::scan_backward(spec, [&self.a, &self.h], self.h0.as_ref(), g, needs));
        }
        let (dh, a, h) = (g.contiguous_data(), self.a.contiguous_data(), self.h.contiguous_data());
        let h0 = self.h0.as_ref().map(|t| t.contiguous_data());
        let mut du = vec![0.0f32; spec.numel()];
        let mut da = needs[0].then(|| vec![0.0f32; spec.numel()]);
        let mut dh0 = (needs.get(2) == Some(&true)).then(|| vec![0.0f32; spec.batch * spec.channels]);
        let grads = ScanGrads { du: &mut du, da: da.as_deref_mut(), dh0: dh0.as_deref_mut() };
        scan_backward(self.kernel, spec, &a, &h, h0.as_deref(), &dh, grads)?;
        let mut out = vec![da.map(|v| Tensor::from_parts(v, spec.shape())), Some(Tensor::from_parts(du, spec.shape()))];
        if self.h0.is_some() {
            out.push(dh0.map(|v| Tensor::from_parts(v, Shape::new([spec.batch, spec.channels]))));
        }
        Ok(out)
    }
}

/// Validate the operands of a scan and return its sizes.
fn scan_spec(a: &Tensor, u: &Tensor, h0: Option<&Tensor>) -> Result<ScanSpec> {
    if a.shape() != u.shape() {
        return Err(Error::ShapeMismatch { op: "scan", lhs: a.shape_obj().clone(), rhs: u.shape_obj().clone() });
    }
    let &[b, t, d] = a.shape() else {
        return Err(Error::InvalidArgument {
            op: "scan",
            message: format!("a and u must have shape (B, T, D), got {}", a.shape_obj()),
        });
    };
    if let Some(h0) = h0
        && h0.shape() != [b, d]
    {
        return Err(Error::InvalidArgument {
            op: "scan",
            message: format!(
                "h0 has shape {} but a and u of shape {} need h0 of shape {}",
                h0.shape_obj(),
                a.shape_obj(),
                Shape::new([b, d])
            ),
        });
    }
    Ok(ScanSpec::new(b, t, d))
}

impl Tensor {
    /// The diagonal linear recurrence `h_t = self_t ⊙ h_{t−1} + u_t` over `(B, T, D)`
    /// tensors (`self` is `a`), from the initial state `h0` of shape `(B, D)` (zeros when
    /// `None`); with `opts.reverse`, time runs backwards (`h_t = a_t ⊙ h_{t+1} + u_t`).
    /// Differentiable in `a`, `u` and `h0`. NaN in `a` or `u` propagates forward in time
    /// within its channel (see the module docs).
    ///
    /// ```
    /// use fixpoint::{Tensor, ops::scan::ScanOptions};
    /// let a = Tensor::full([1, 3, 1], 0.5);
    /// let u = Tensor::ones([1, 3, 1]);
    /// let h = a.scan(&u, None, ScanOptions::forward())?;
    /// assert_eq!(h.to_vec(), vec![1.0, 1.5, 1.75]);
    /// # Ok::<(), fixpoint::Error>(())
    /// ```
    pub fn scan(&self, u: &Tensor, h0: Option<&Tensor>, opts: ScanOptions) -> Result<Tensor> {
        let _p = crate::profile::fwd("scan");
        let spec = scan_spec(self, u, h0)?.reversed(opts.reverse);
        let inputs: Vec<&Tensor> = [Some(self), Some(u), h0].into_iter().flatten().collect();
        if Tensor::common_device("scan", &inputs)? == crate::Device::Gpu {
            let out = Tensor::from_storage(on_gpu!("scan", scan::scan(self, u, h0, &spec))?, spec.shape());
            return Ok(record_scan(out, spec, opts.kernel, &inputs, || (self.detach(), h0.map(Tensor::detach))));
        }
        let (a_data, u_data) = (self.contiguous_data(), u.contiguous_data());
        let h0_data = h0.map(|t| t.contiguous_data());
        let mut h = vec![0.0f32; spec.numel()];
        scan_forward(opts.kernel, &spec, &a_data, &u_data, h0_data.as_deref(), &mut h)?;
        let saved = |t: &Tensor, data: &[f32]| {
            if t.is_contiguous() { t.detach() } else { Tensor::from_parts(data.to_vec(), t.shape_obj().clone()) }
        };
        let out = Tensor::from_parts(h, spec.shape());
        Ok(record_scan(out, spec, opts.kernel, &inputs, || {
            (saved(self, &a_data), h0.zip(h0_data.as_deref()).map(|(t, d)| saved(t, d)))
        }))
    }
}

/// Attach the scan's backward rule to its output `out` when recording; `saved` gives
/// the `a` and `h0` the rule keeps.
fn record_scan(
    mut out: Tensor,
    spec: ScanSpec,
    kernel: ScanKernel,
    inputs: &[&Tensor],
    saved: impl FnOnce() -> (Tensor, Option<Tensor>),
) -> Tensor {
    if is_grad_enabled() && inputs.iter().any(|t| t.requires_grad()) {
        let (a, h0) = saved();
        let backward = ScanBackward { spec, kernel, a, h: out.detach(), h0 };
        out.node = Tensor::record(&spec.shape(), inputs, || backward);
    }
    out
}

/// `a.scan(u, h0, opts)` as a free function.
pub fn scan(a: &Tensor, u: &Tensor, h0: Option<&Tensor>, opts: ScanOptions) -> Result<Tensor> {
    a.scan(u, h0, opts)
}
