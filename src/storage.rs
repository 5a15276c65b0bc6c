//! Where a tensor's elements live. One variant today; the GPU issue adds `Gpu`
//! here, and ops dispatch on the variant inside `ops/*`, so call sites do not change.

/// The device a tensor's storage lives on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    Cpu,
}

/// Element storage, shared between views by `Arc` and copied on write.
#[derive(Clone, Debug)]
pub enum Storage {
    Cpu(Vec<f32>),
}

impl Storage {
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
        }
    }
    /// The CPU elements (every op today runs on the CPU).
    pub fn cpu(&self) -> &[f32] {
        match self {
            Storage::Cpu(v) => v,
        }
    }
    pub fn cpu_mut(&mut self) -> &mut Vec<f32> {
        match self {
            Storage::Cpu(v) => v,
        }
    }
    pub fn len(&self) -> usize {
        self.cpu().len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        match self {
            Storage::Cpu(v) => pool::give(std::mem::take(v)),
        }
    }
}

/// A buffer of `n` elements whose contents are unspecified (stale values of an earlier
/// tensor): for kernels that write every output element. Large buffers come from the
/// pool, so a training step that allocates the same shapes again reuses memory instead
/// of faulting in fresh pages (a fresh 64 MiB output costs more in page faults than a
/// bandwidth-bound op takes to fill it).
#[inline]
pub fn buffer(n: usize) -> Vec<f32> {
    pool::take(n).unwrap_or_else(|| vec![0.0; n])
}

/// A zero-filled buffer of `n` elements (pooled when large).
#[inline]
pub fn zeroed(n: usize) -> Vec<f32> {
    match pool::take(n) {
        Some(mut v) => {
            v.fill(0.0);
            v
        }
        None => vec![0.0; n],
    }
}

/// A size-keyed free list of large f32 buffers, bounded in total bytes.
pub mod pool {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Buffers smaller than this go back to the allocator (malloc is fast there).
    pub const MIN_ELEMS: usize = 1 << 14;
    static LIMIT_BYTES: AtomicUsize = AtomicUsize::new(512 << 20);
    static POOL: Mutex<Option<Pool>> = Mutex::new(None);

    #[derive(Default)]
    struct Pool {
        free: HashMap<usize, Vec<Vec<f32>>>,
        bytes: usize,
    }

    /// Take a buffer of exactly `n` elements if one is free.
    pub fn take(n: usize) -> Option<Vec<f32>> {
        if n < MIN_ELEMS {
            return None;
        }
        let mut g = POOL.lock().unwrap_or_else(|e| e.into_inner());
        let p = g.as_mut()?;
        let v = p.free.get_mut(&n)?.pop()?;
        p.bytes -= v.capacity() * 4;
        Some(v)
    }

    /// Return a buffer; dropped instead when small or when the pool is full.
    pub fn give(v: Vec<f32>) {
        let bytes = v.capacity() * 4;
        if v.len() < MIN_ELEMS || v.len() != v.capacity() {
            return;
        }
        let mut g = POOL.lock().unwrap_or_else(|e| e.into_inner());
        let p = g.get_or_insert_with(Pool::default);
        if p.bytes + bytes > LIMIT_BYTES.load(Ordering::Relaxed) {
            return;
        }
        p.bytes += bytes;
        p.free.entry(v.len()).or_default().push(v);
    }

    /// Bytes held by free buffers.
    pub fn held_bytes() -> usize {
        POOL.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map_or(0, |p| p.bytes)
    }

    /// Set the pool's limit (0 disables pooling) and drop what exceeds it.
    pub fn set_limit_bytes(limit: usize) {
        LIMIT_BYTES.store(limit, Ordering::Relaxed);
        if limit == 0 {
            clear();
        }
    }

    /// Free every pooled buffer.
    pub fn clear() {
        if let Some(p) = POOL.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            p.free.clear();
            p.bytes = 0;
        }
    }
}
