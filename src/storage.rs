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

/// A buffer of `n` elements whose contents the caller overwrites entirely (kernels
/// that write every output element). Today a fresh zeroed vector; the hook where a
/// buffer pool plugs in.
#[inline]
pub fn buffer(n: usize) -> Vec<f32> {
    vec![0.0; n]
}
