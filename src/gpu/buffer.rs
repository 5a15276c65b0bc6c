//! [`GpuBuffer`]: a wgpu storage buffer of `f32` and its length; upload and readback.

use super::{Context, scoped};
use crate::error::{Error, Result};
use std::sync::Arc;

/// `len` f32 elements in a GPU storage buffer. Clones share the buffer: GPU kernels
/// write fresh buffers, except the in-place optimiser update, which first makes sure
/// (`is_exclusive`, else a copy) that no other tensor shares the buffer it writes.
#[derive(Clone)]
pub struct GpuBuffer {
    buffer: Arc<wgpu::Buffer>,
    len: usize,
}

impl std::fmt::Debug for GpuBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuBuffer({} f32)", self.len)
    }
}

const USAGE: wgpu::BufferUsages =
    wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC).union(wgpu::BufferUsages::COPY_DST);

/// Bytes of a buffer holding `n` f32 (at least 4: zero-sized bindings are invalid).
fn bytes(n: usize) -> u64 {
    (n.max(1) * 4) as u64
}

impl GpuBuffer {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn raw(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    /// A zero-filled buffer (wgpu zero-initialises new buffers).
    pub fn zeroed(ctx: &Context, n: usize) -> Result<GpuBuffer> {
        let buffer = scoped(ctx, "gpu alloc", || {
            ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size: bytes(n),
                usage: USAGE,
                mapped_at_creation: false,
            })
        })?;
        Ok(GpuBuffer { buffer: Arc::new(buffer), len: n })
    }

    /// A buffer holding a copy of `data`.
    pub fn from_slice(ctx: &Context, data: &[f32]) -> Result<GpuBuffer> {
        Self::from_words(ctx, bytemuck::cast_slice(data))
    }

    /// A buffer holding a copy of `data` (indices for kernels that bind `array<u32>`).
    pub fn from_u32(ctx: &Context, data: &[u32]) -> Result<GpuBuffer> {
        Self::from_words(ctx, data)
    }

    fn from_words(ctx: &Context, data: &[u32]) -> Result<GpuBuffer> {
        let b = GpuBuffer::zeroed(ctx, data.len())?;
        if !data.is_empty() {
            scoped(ctx, "to_device", || ctx.queue.write_buffer(&b.buffer, 0, bytemuck::cast_slice(data)))?;
        }
        Ok(b)
    }

    /// True when no other `GpuBuffer` shares this buffer (kernels may then write it in
    /// place).
    pub fn is_exclusive(&self) -> bool {
        Arc::strong_count(&self.buffer) == 1
    }

    /// Read `n` elements starting at element `offset` back to the host (blocks until
    /// every kernel writing the buffer has run).
    pub fn read(&self, ctx: &Context, offset: usize, n: usize) -> Result<Vec<f32>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let err = |message: String| Error::Gpu { op: "readback", message };
        let staging = scoped(ctx, "readback", || {
            let staging = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("readback"),
                size: bytes(n),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let mut enc =
                ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("readback") });
            enc.copy_buffer_to_buffer(&self.buffer, (offset * 4) as u64, &staging, 0, bytes(n));
            ctx.queue.submit([enc.finish()]);
            staging
        })?;
        let slice = staging.slice(..);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        ctx.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| err(e.to_string()))?;
        rx.recv().map_err(|e| err(e.to_string()))?.map_err(|e| err(e.to_string()))?;
        let out = {
            let view = slice.get_mapped_range().map_err(|e| err(e.to_string()))?;
            bytemuck::pod_collect_to_vec::<u8, f32>(&view[..n * 4])
        };
        staging.unmap();
        Ok(out)
    }
}
