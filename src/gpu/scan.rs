//! The diagonal scan on the GPU, forward and backward, chunked in time like the CPU's
//! `scan_chunked`: with few independent channels (`B × D` small) and a long `T`, time
//! splits into chunks; pass 1 reduces each chunk to its transfer (∏a, end state from
//! zero), pass 2 chains the carries between chunks per channel, pass 3 rescans each
//! chunk from its carry. With enough channels (or a short `T`) there is one chunk and
//! pass 3 alone is the whole scan. The backward is the same scan run against time on
//! `dh` (coefficients lagged by one step), then one elementwise pass for `da` and `dh0`.
//! The op and its backward rule are `ops::scan`'s, which dispatch here.

use super::{GpuBuffer, Kernel, buf, context, dense, grid, u32_of};
use crate::error::Result;
use crate::ops::scan::ScanSpec;
use crate::shape::Shape;
use crate::storage::Storage;
use crate::tensor::Tensor;

const REDUCE: Kernel = Kernel {
    name: "scan_reduce",
    src: shader!("scan_steps.wgsl", "scan_reduce.wgsl"),
    entry: "scan_reduce",
    inputs: 2,
    outputs: 2,
};
const CARRY: Kernel =
    Kernel { name: "scan_carry", src: shader!("scan_carry.wgsl"), entry: "scan_carry", inputs: 3, outputs: 1 };
const APPLY: Kernel = Kernel {
    name: "scan_apply",
    src: shader!("scan_steps.wgsl", "scan_apply.wgsl"),
    entry: "scan_apply",
    inputs: 3,
    outputs: 1,
};
const GRADS: Kernel = Kernel {
    name: "scan_grads",
    src: shader!("scan_steps.wgsl", "scan_grads.wgsl"),
    entry: "scan_grads",
    inputs: 4,
    outputs: 2,
};

/// Invocations a scan should offer the GPU before time is split into chunks.
pub const TARGET_LANES: usize = 16_384;
/// Shortest chunk worth a pass of its own.
pub const MIN_CHUNK: usize = 16;

/// `(chunk length, chunks)` for a scan over `spec`: a function of the shape only.
pub fn chunking(spec: &ScanSpec) -> (usize, usize) {
    let lanes = (spec.batch * spec.channels).max(1);
    let t = spec.time.max(1);
    let want = TARGET_LANES.div_ceil(lanes).min(t / MIN_CHUNK).max(1);
    let len = t.div_ceil(want);
    (len, t.div_ceil(len))
}

/// The kernels' parameters: B T D reverse has_h0 chunk_len chunks lag.
fn params(spec: &ScanSpec, has_h0: bool, lag: bool) -> Result<[u32; 8]> {
    let (len, chunks) = chunking(spec);
    Ok([
        u32_of("scan", spec.batch)?,
        u32_of("scan", spec.time)?,
        u32_of("scan", spec.channels)?,
        spec.reverse as u32,
        has_h0 as u32,
        u32_of("scan", len)?,
        u32_of("scan", chunks)?,
        lag as u32,
    ])
}

/// `h_s = c_s ⊙ h_{s−1} + x_s` in the step order of `spec` (see `scan_steps.wgsl` for
/// `lag`), from `h0` when given.
fn run(
    op: &'static str,
    spec: &ScanSpec,
    a: &GpuBuffer,
    x: &GpuBuffer,
    h0: Option<&GpuBuffer>,
    lag: bool,
) -> Result<GpuBuffer> {
    let ctx = context()?;
    let p = params(spec, h0.is_some(), lag)?;
    let (_, chunks) = chunking(spec);
    let lanes = spec.batch * spec.channels;
    let h = super::alloc(spec.numel())?;
    let carry_in = if chunks > 1 {
        let (e, pr, cin) =
            (super::alloc(lanes * chunks)?, super::alloc(lanes * chunks)?, super::alloc(lanes * chunks)?);
        ctx.launch(op, &REDUCE, &p, &[a.raw(), x.raw()], &[e.raw(), pr.raw()], grid(lanes * chunks, super::WG))?;
        let h0b = h0.unwrap_or(&e);
        ctx.launch(op, &CARRY, &p, &[e.raw(), pr.raw(), h0b.raw()], &[cin.raw()], grid(lanes, super::WG))?;
        cin
    } else {
        // One chunk: the kernel reads h0 directly (or nothing, when there is none).
        h0.unwrap_or(a).clone()
    };
    ctx.launch(op, &APPLY, &p, &[a.raw(), x.raw(), carry_in.raw()], &[h.raw()], grid(lanes * chunks, super::WG))?;
    Ok(h)
}

/// Gradients `(da, du, dh0)` of the scan from its saved `[a, h]` (the forward's input
/// and output), `h0` and the upstream gradient `g` (the rule is `ops::scan`'s, which
/// dispatches here).
pub fn scan_backward(
    spec: &ScanSpec,
    [a, h]: [&Tensor; 2],
    h0: Option<&Tensor>,
    g: &Tensor,
    needs: &[bool],
) -> Result<Vec<Option<Tensor>>> {
    const OP: &str = "scan backward";
    let ctx = context()?;
    let (ad, hd, dh) = (dense(a)?, dense(h)?, dense(g)?);
    let h0d = h0.map(dense).transpose()?;
    let ab = buf(&ad);
    // g_t = dh_t + a_{t+1} g_{t+1}: the scan of dh against the forward's direction.
    let back = spec.reversed(!spec.reverse);
    let du = run(OP, &back, ab, buf(&dh), None, true)?;
    let (da, dh0) = (super::alloc(spec.numel())?, super::alloc(spec.batch * spec.channels)?);
    let h0b = h0d.as_ref().map_or(ab, buf);
    let ins = [ab.raw(), buf(&hd).raw(), h0b.raw(), du.raw()];
    let p = params(spec, h0.is_some(), false)?;
    ctx.launch(OP, &GRADS, &p, &ins, &[da.raw(), dh0.raw()], grid(spec.numel(), super::WG))?;
    let seq = |b| Tensor::from_storage(Storage::Gpu(b), spec.shape());
    let mut out = vec![needs[0].then(|| seq(da)), Some(seq(du))];
    if h0.is_some() {
        out.push(needs[2].then(|| Tensor::from_storage(Storage::Gpu(dh0), Shape::new([spec.batch, spec.channels]))));
    }
    Ok(out)
}

/// `h_t = a_t ⊙ h_{t−1} + u_t` for GPU operands already validated into `spec`.
pub fn scan(a: &Tensor, u: &Tensor, h0: Option<&Tensor>, spec: &ScanSpec) -> Result<Storage> {
    let (ad, ud) = (dense(a)?, dense(u)?);
    let h0d = h0.map(dense).transpose()?;
    Ok(Storage::Gpu(run("scan", spec, buf(&ad), buf(&ud), h0d.as_ref().map(buf), false)?))
}
