//! Explicit parallelism. Small work stays serial: a rayon fork/join dispatched from
//! outside the pool costs 15–20 µs on these machines (`shared/docs/performance.md` §7),
//! more than a 64K-element elementwise op takes. Chunk boundaries depend only on the
//! data size, never on the thread count, so every result is bit-identical whether it
//! runs on 1 or N threads.
//!
//! Thread count: `--threads N` on the CLI (through [`with_threads`]), otherwise
//! `RAYON_NUM_THREADS`, otherwise one per core. GEMM is parallelised by splitting the
//! rows of the output across rayon tasks, each calling single-threaded sgemm; the
//! `matrixmultiply` `threading` feature stays off so there is never a second pool.

use rayon::prelude::*;

/// Elements per task for bandwidth-bound elementwise kernels: a task below this is
/// cheaper serial than its fork/join (measured with `fixpoint bench core`).
pub const ELEMWISE_CHUNK: usize = 1 << 15;
/// Work (in elements) below which an elementwise op stays serial.
pub const ELEMWISE_MIN: usize = 1 << 16;
/// Multiply-adds below which a GEMM stays serial.
pub const GEMM_MIN_FLOPS: usize = 1 << 21;

/// Number of threads of the current rayon pool.
pub fn threads() -> usize {
    rayon::current_num_threads()
}

/// Run `f` inside a rayon pool of `n` threads (`None`: on the calling thread with the
/// global pool). Running a whole training step inside one pool avoids the cross-thread
/// dispatch per op.
pub fn with_threads<R: Send>(n: Option<usize>, f: impl FnOnce() -> R + Send) -> Result<R, String> {
    match n {
        None => Ok(f()),
        Some(0) => Err("--threads must be at least 1".to_string()),
        Some(n) => {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .map_err(|e| format!("cannot start a pool of {n} threads: {e}"))?;
            Ok(pool.install(f))
        }
    }
}

/// `f(chunk_index, out_chunk)` over fixed-size chunks of `out`, in parallel when the
/// total is at least `min_total` elements and more than one thread is available.
pub fn for_chunks_mut(out: &mut [f32], chunk: usize, min_total: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    if out.len() < min_total || threads() == 1 {
        out.chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c));
    } else {
        out.par_chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c));
    }
}

/// Like [`for_chunks_mut`] over `rows` rows of `row_len` elements, with chunks of whole
/// rows (`rows_per_chunk` fixed by the caller from the shape).
pub fn for_row_chunks_mut(
    out: &mut [f32],
    row_len: usize,
    rows_per_chunk: usize,
    min_total: usize,
    f: impl Fn(usize, &mut [f32]) + Sync + Send,
) {
    let chunk = (row_len * rows_per_chunk.max(1)).max(1);
    for_chunks_mut(out, chunk, min_total, |i, c| f(i * rows_per_chunk.max(1), c));
}

/// Rows per chunk so that a chunk holds about `target` elements.
pub fn rows_for(row_len: usize, target: usize) -> usize {
    (target / row_len.max(1)).max(1)
}

/// Whether every element of every slice is finite ([`crate::cpu::simd::all_finite`]),
/// over fixed chunks of [`ELEMWISE_CHUNK`] in parallel when the total is large.
pub fn all_finite(slices: &[&[f32]]) -> bool {
    let total: usize = slices.iter().map(|s| s.len()).sum();
    if total < ELEMWISE_MIN || threads() == 1 {
        return slices.iter().all(|s| crate::cpu::simd::all_finite(s));
    }
    slices.par_iter().flat_map_iter(|s| s.chunks(ELEMWISE_CHUNK)).all(crate::cpu::simd::all_finite)
}

/// Raw pointer handed to the tasks of a kernel that write disjoint parts of one output
/// (rows of several outputs, or column blocks of one matrix, which cannot be handed out
/// as `&mut` slices).
#[derive(Clone, Copy)]
pub(crate) struct SyncPtr(pub(crate) *mut f32);
// SAFETY: used only for disjoint writes (see the callers).
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}
impl SyncPtr {
    /// The pointer `off` elements on (a method, so that closures capture the `Sync`
    /// wrapper rather than the raw pointer inside it).
    #[inline(always)]
    pub(crate) fn at(self, off: usize) -> *mut f32 {
        self.0.wrapping_add(off)
    }
    /// # Safety
    /// `off..off + n` must lie in the buffer and no other live reference may overlap it.
    #[inline(always)]
    pub(crate) unsafe fn slice<'a>(self, off: usize, n: usize) -> &'a mut [f32] {
        // SAFETY: the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(off), n) }
    }
}
