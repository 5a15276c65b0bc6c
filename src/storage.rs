//! Where a tensor's elements live: `Cpu` always, `Gpu` with the `gpu` feature. Ops
//! dispatch on the variant inside `ops/*` (a small hook at the top of each op that has a
//! GPU kernel), so call sites do not change. Moving between devices is explicit
//! ([`crate::Tensor::to_device`]); nothing copies behind the caller's back.

/// The device a tensor's storage lives on. `Gpu` exists in every build so that
/// `--device gpu` can be parsed and refused with a clear message when the crate was
/// built without the `gpu` feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    Cpu,
    Gpu,
}

impl Device {
    pub fn name(&self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Gpu => "gpu",
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Device, String> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "gpu" => Ok(Device::Gpu),
            _ => Err(format!("unknown device {s:?} (expected cpu or gpu)")),
        }
    }
}

/// Element storage, shared between views by `Arc` and copied on write.
#[derive(Clone, Debug)]
pub enum Storage {
    Cpu(Vec<f32>),
    /// Elements in a GPU buffer (see [`crate::gpu`]).
    #[cfg(feature = "gpu")]
    Gpu(crate::gpu::GpuBuffer),
}

impl Storage {
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
            #[cfg(feature = "gpu")]
            Storage::Gpu(_) => Device::Gpu,
        }
    }
    /// The CPU elements. Panics for GPU storage: an op without a GPU kernel reached a
    /// GPU tensor (ops with a `Result` check the device first and return
    /// `Error::Unsupported`; the message below names the way out).
    #[track_caller]
    pub fn cpu(&self) -> &[f32] {
        match self {
            Storage::Cpu(v) => v,
            #[cfg(feature = "gpu")]
            Storage::Gpu(_) => gpu_on_cpu_path(),
        }
    }
    #[track_caller]
    pub fn cpu_mut(&mut self) -> &mut Vec<f32> {
        match self {
            Storage::Cpu(v) => v,
            #[cfg(feature = "gpu")]
            Storage::Gpu(_) => gpu_on_cpu_path(),
        }
    }
    pub fn len(&self) -> usize {
        match self {
            Storage::Cpu(v) => v.len(),
            #[cfg(feature = "gpu")]
            Storage::Gpu(b) => b.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        match self {
            Storage::Cpu(v) => pool::give(std::mem::take(v)),
            #[cfg(feature = "gpu")]
            Storage::Gpu(_) => {}
        }
    }
}

#[cfg(feature = "gpu")]
#[cold]
#[track_caller]
fn gpu_on_cpu_path() -> ! {
    panic!(
        "a GPU tensor reached an op that has no GPU kernel (see the README's op coverage table); \
         move it explicitly with `to_device(Device::Cpu)`"
    )
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
