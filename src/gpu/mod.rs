//! Optional GPU offload through wgpu (feature `gpu`): compute shaders in WGSL
//! (`shaders/*.wgsl`), one file per kernel family beside the Rust that launches them.
//!
//! - One lazily created global context ([`context`]): the first adapter wgpu finds on
//!   the Vulkan backend (a real GPU, or Mesa's lavapipe software driver), its device and
//!   queue, and a cache of compute pipelines.
//! - Tensors on the GPU hold a [`GpuBuffer`] (`Storage::Gpu`) and keep their strided
//!   [`Layout`] like CPU tensors: views are free; kernels read strided operands.
//! - Every launch runs inside wgpu error scopes (validation, out of memory), so a bad
//!   launch is an [`Error::Gpu`] naming the op instead of a panic in wgpu's default
//!   handler. Ops whose signature is infallible (`unary`) panic with that message.
//! - Nothing moves between devices by itself: [`crate::Tensor::to_device`] is the only
//!   way in or out (plus `to_vec` / `item`, which read back explicitly).

/// A WGSL module: `common.wgsl` followed by the named files of `shaders/`.
macro_rules! shader {
    ($($f:literal),*) => {
        concat!(include_str!("shaders/common.wgsl"), $(include_str!(concat!("shaders/", $f))),*)
    };
}

pub mod bench;
pub mod buffer;
pub mod elementwise;
pub mod fused;
pub mod gemm;
pub mod index;
pub mod loss;
pub mod mixer;
pub mod optim;
pub mod reduce;
pub mod scan;
pub mod solve;

pub use buffer::GpuBuffer;

use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::storage::Storage;
use crate::tensor::Tensor;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Workgroup size of the 1-D kernels (elementwise, copy, scan).
pub const WG: u32 = 256;
/// Most workgroups per grid dimension (WebGPU's default limit).
pub const MAX_GROUPS: u32 = 65_535;
/// Largest rank a strided kernel handles.
pub const MAX_RANK: usize = 8;
/// Operands a strided kernel describes in its parameter header.
const MAX_OPERANDS: usize = 3;
/// Length of the strided parameter header: `n, rank, dims[8]`, then per operand
/// `offset, strides[8]`. Kernel-specific parameters follow it.
pub const HDR: usize = 2 + MAX_RANK + MAX_OPERANDS * (1 + MAX_RANK);

/// The adapter in use, for reports (`bench gpu`).
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
}

impl std::fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}, {})", self.name, self.backend, self.device_type)
    }
}

/// The device, queue and pipeline cache.
pub struct Context {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub adapter: AdapterSummary,
    pipelines: Mutex<HashMap<&'static str, Arc<Pipeline>>>,
}

struct Pipeline {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
}

/// A compute kernel: a WGSL module, its entry point and how many read-only inputs and
/// read-write outputs it binds (binding 0 is always the `u32` parameter array, then the
/// inputs, then the outputs).
pub struct Kernel {
    pub name: &'static str,
    pub src: &'static str,
    pub entry: &'static str,
    pub inputs: usize,
    pub outputs: usize,
}

static CONTEXT: OnceLock<std::result::Result<Context, String>> = OnceLock::new();

/// The global GPU context, created on first use. Fails with
/// [`Error::GpuUnavailable`] naming what was looked for when no adapter exists.
pub fn context() -> Result<&'static Context> {
    CONTEXT.get_or_init(create).as_ref().map_err(|m| Error::GpuUnavailable { message: m.clone() })
}

/// The adapter in use (creates the context).
pub fn adapter() -> Result<AdapterSummary> {
    Ok(context()?.adapter.clone())
}

fn create() -> std::result::Result<Context, String> {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    if std::env::var_os("WGPU_BACKEND").is_none() {
        desc.backends = wgpu::Backends::VULKAN;
    }
    let backends = desc.backends;
    let instance = wgpu::Instance::new(desc);
    let opts =
        wgpu::RequestAdapterOptions { power_preference: wgpu::PowerPreference::HighPerformance, ..Default::default() };
    let adapter = pollster::block_on(instance.request_adapter(&opts)).map_err(|e| {
        format!(
            "no wgpu adapter on the {backends:?} backend(s) ({e}); a GPU driver with Vulkan support, or Mesa's \
             lavapipe software driver (Debian/Ubuntu: `apt-get install mesa-vulkan-drivers`), provides one; \
             WGPU_BACKEND selects other backends"
        )
    })?;
    let info = adapter.get_info();
    let limits = adapter.limits();
    let dd = wgpu::DeviceDescriptor {
        label: Some("fixpoint"),
        required_limits: wgpu::Limits {
            max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
            max_buffer_size: limits.max_buffer_size,
            max_storage_buffers_per_shader_stage: limits.max_storage_buffers_per_shader_stage.min(10),
            ..wgpu::Limits::default()
        },
        ..Default::default()
    };
    let (device, queue) = pollster::block_on(adapter.request_device(&dd))
        .map_err(|e| format!("the adapter {} refused a device: {e}", info.name))?;
    // Errors outside our error scopes are logged, not fatal (wgpu's default panics).
    device.on_uncaptured_error(Arc::new(|e| eprintln!("fixpoint: uncaptured GPU error: {e}")));
    Ok(Context {
        device,
        queue,
        adapter: AdapterSummary {
            name: info.name.clone(),
            backend: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
            driver: format!("{} {}", info.driver, info.driver_info),
        },
        pipelines: Mutex::new(HashMap::new()),
    })
}

/// Run `f` inside validation and out-of-memory error scopes; a captured error becomes
/// [`Error::Gpu`] naming `op`.
pub fn scoped<T>(ctx: &Context, op: &'static str, f: impl FnOnce() -> T) -> Result<T> {
    let oom = ctx.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let val = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
    let out = f();
    let e1 = pollster::block_on(val.pop());
    let e2 = pollster::block_on(oom.pop());
    match e1.or(e2) {
        Some(e) => Err(Error::Gpu { op, message: e.to_string() }),
        None => Ok(out),
    }
}

impl Context {
    fn pipeline(&self, k: &Kernel) -> Arc<Pipeline> {
        let mut cache = self.pipelines.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = cache.get(k.name) {
            return p.clone();
        }
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(k.name),
            source: wgpu::ShaderSource::Wgsl(k.src.into()),
        });
        let entry = |binding: u32, read_only: bool| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage { read_only },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let entries: Vec<_> = (0..=(k.inputs + k.outputs) as u32).map(|b| entry(b, b as usize <= k.inputs)).collect();
        let layout = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(k.name), entries: &entries });
        let pl = self.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(k.name),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(k.name),
            layout: Some(&pl),
            module: &module,
            entry_point: Some(k.entry),
            compilation_options: Default::default(),
            cache: None,
        });
        let p = Arc::new(Pipeline { pipeline, layout });
        cache.insert(k.name, p.clone());
        p
    }

    /// Launch `k` over `groups` workgroups with `params` at binding 0.
    pub fn launch(
        &self,
        op: &'static str,
        k: &Kernel,
        params: &[u32],
        inputs: &[&wgpu::Buffer],
        outputs: &[&wgpu::Buffer],
        groups: [u32; 3],
    ) -> Result<()> {
        debug_assert_eq!((inputs.len(), outputs.len()), (k.inputs, k.outputs), "{}", k.name);
        if groups.contains(&0) {
            return Ok(());
        }
        scoped(self, op, || {
            use wgpu::util::DeviceExt;
            let p = self.pipeline(k);
            let pbuf = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("params"),
                contents: bytemuck::cast_slice(if params.is_empty() { &[0u32] } else { params }),
                usage: wgpu::BufferUsages::STORAGE,
            });
            let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: pbuf.as_entire_binding() }];
            for (i, b) in inputs.iter().chain(outputs).enumerate() {
                entries.push(wgpu::BindGroupEntry { binding: i as u32 + 1, resource: b.as_entire_binding() });
            }
            let bg = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(k.name),
                layout: &p.layout,
                entries: &entries,
            });
            let mut enc = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(k.name) });
            {
                let mut pass = enc
                    .begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(k.name), timestamp_writes: None });
                pass.set_pipeline(&p.pipeline);
                pass.set_bind_group(0, &bg, &[]);
                pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
            }
            self.queue.submit([enc.finish()]);
        })
    }

    /// Block until every submitted kernel has finished (for timing).
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| Error::Gpu { op: "wait", message: e.to_string() })
    }
}

/// A 2-D grid of `WG`-wide workgroups covering `n` invocations (each dimension at most
/// [`MAX_GROUPS`]); kernels rebuild the flat index from `num_workgroups`.
pub fn grid(n: usize, per_group: u32) -> [u32; 3] {
    let groups = n.div_ceil(per_group as usize) as u32;
    if groups <= MAX_GROUPS { [groups, 1, 1] } else { [MAX_GROUPS, groups.div_ceil(MAX_GROUPS), 1] }
}

/// The strided parameter header for an `n`-element op over `shape` whose operands have
/// `layouts` (each already broadcast to `shape`). Fails for rank > [`MAX_RANK`].
pub fn strided_header(op: &'static str, dims: &[usize], layouts: &[&Layout]) -> Result<Vec<u32>> {
    if dims.len() > MAX_RANK {
        return Err(Error::InvalidArgument {
            op,
            message: format!("GPU kernels handle rank <= {MAX_RANK}, got rank {}", dims.len()),
        });
    }
    let n: usize = dims.iter().product();
    let mut p = vec![0u32; HDR];
    p[0] = u32_of(op, n)?;
    p[1] = dims.len() as u32;
    for (i, &d) in dims.iter().enumerate() {
        p[2 + i] = u32_of(op, d)?;
    }
    for (k, l) in layouts.iter().enumerate() {
        let base = 2 + MAX_RANK + k * (1 + MAX_RANK);
        p[base] = u32_of(op, l.offset)?;
        for (i, &s) in l.strides.iter().enumerate() {
            p[base + 1 + i] = u32_of(op, s)?;
        }
    }
    Ok(p)
}

/// `v` as a `u32` kernel parameter, or an error naming `op` (buffers over 4 Gi elements).
pub fn u32_of(op: &'static str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::InvalidArgument { op, message: format!("{v} does not fit a GPU index") })
}

/// The GPU buffer of a tensor (callers check the device first).
pub(crate) fn buf(t: &Tensor) -> &GpuBuffer {
    match &*t.storage {
        Storage::Gpu(b) => b,
        Storage::Cpu(_) => unreachable!("gpu::buf on a CPU tensor"),
    }
}

/// Copy `data` into a new GPU buffer.
pub fn upload(data: &[f32]) -> Result<Storage> {
    Ok(Storage::Gpu(GpuBuffer::from_slice(context()?, data)?))
}

/// The elements of a GPU tensor in row-major order, read back to the host.
pub fn to_host(t: &Tensor) -> Result<Vec<f32>> {
    let c = contiguous(t)?;
    let l = &c.layout;
    buf(&c).read(context()?, l.offset, c.numel())
}

/// A contiguous copy of a GPU tensor (the tensor itself, detached, when already
/// contiguous; the offset may then be non-zero).
pub fn contiguous(t: &Tensor) -> Result<Tensor> {
    if t.layout.is_contiguous() {
        return Ok(t.detach());
    }
    Ok(Tensor::from_storage(elementwise::copy(t)?, t.shape_obj().clone()))
}

/// A contiguous GPU tensor starting at element 0 of its buffer (for row kernels),
/// detached; copies only views that are not.
pub fn dense(t: &Tensor) -> Result<Tensor> {
    if t.layout.is_contiguous() && t.layout.offset == 0 {
        return Ok(t.detach());
    }
    Ok(Tensor::from_storage(elementwise::copy(t)?, t.shape_obj().clone()))
}

/// A new zero-filled GPU buffer of `n` elements.
pub fn alloc(n: usize) -> Result<GpuBuffer> {
    GpuBuffer::zeroed(context()?, n)
}
