//! The diagonal scan on the GPU, forward and backward: one invocation per
//! (batch, channel) walks time, so the work is parallel over `B × D` and each step reads
//! contiguous rows. (No time-chunked variant yet: long sequences with few channels leave
//! most of a GPU idle.)

use super::{Kernel, buf, context, dense, grid, u32_of};
use crate::autograd::Backward;
use crate::error::Result;
use crate::ops::scan::ScanSpec;
use crate::shape::Shape;
use crate::storage::Storage;
use crate::tensor::Tensor;

const FWD: Kernel =
    Kernel { name: "scan_forward", src: shader!("scan.wgsl"), entry: "scan_forward", inputs: 3, outputs: 1 };
const BWD: Kernel =
    Kernel { name: "scan_backward", src: shader!("scan_backward.wgsl"), entry: "scan_backward", inputs: 4, outputs: 3 };

fn params(spec: &ScanSpec, has_h0: bool) -> Result<[u32; 5]> {
    Ok([
        u32_of("scan", spec.batch)?,
        u32_of("scan", spec.time)?,
        u32_of("scan", spec.channels)?,
        spec.reverse as u32,
        has_h0 as u32,
    ])
}

struct ScanBackward {
    spec: ScanSpec,
    a: Tensor,
    h: Tensor,
    h0: Option<Tensor>,
}

impl Backward for ScanBackward {
    fn name(&self) -> &'static str {
        "scan"
    }
    fn backward(&self, g: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let ctx = context()?;
        let spec = &self.spec;
        let dh = dense(g)?;
        let (du, da) = (super::alloc(spec.numel())?, super::alloc(spec.numel())?);
        let dh0 = super::alloc(spec.batch * spec.channels)?;
        let ab = buf(&self.a).raw();
        let h0b = self.h0.as_ref().map_or(ab, |t| buf(t).raw());
        let ins = [ab, buf(&self.h).raw(), h0b, buf(&dh).raw()];
        let p = params(spec, self.h0.is_some())?;
        ctx.launch(
            "scan backward",
            &BWD,
            &p,
            &ins,
            &[du.raw(), da.raw(), dh0.raw()],
            grid(spec.batch * spec.channels, super::WG),
        )?;
        let seq = |b| Tensor::from_storage(Storage::Gpu(b), spec.shape());
        let mut out = vec![needs[0].then(|| seq(da)), Some(seq(du))];
        if self.h0.is_some() {
            out.push(
                needs[2].then(|| Tensor::from_storage(Storage::Gpu(dh0), Shape::new([spec.batch, spec.channels]))),
            );
        }
        Ok(out)
    }
}

/// `h_t = a_t ⊙ h_{t−1} + u_t` for GPU operands already validated into `spec`.
pub fn scan(a: &Tensor, u: &Tensor, h0: Option<&Tensor>, spec: ScanSpec) -> Result<Tensor> {
    let ctx = context()?;
    let (ad, ud) = (dense(a)?, dense(u)?);
    let h0d = h0.map(dense).transpose()?;
    let h = super::alloc(spec.numel())?;
    let ab = buf(&ad).raw();
    let ins = [ab, buf(&ud).raw(), h0d.as_ref().map_or(ab, |t| buf(t).raw())];
    ctx.launch(
        "scan",
        &FWD,
        &params(&spec, h0.is_some())?,
        &ins,
        &[h.raw()],
        grid(spec.batch * spec.channels, super::WG),
    )?;
    let mut out = Tensor::from_storage(Storage::Gpu(h), spec.shape());
    let inputs: Vec<&Tensor> = [Some(a), Some(u), h0].into_iter().flatten().collect();
    let hd = out.detach();
    out.node = Tensor::record(&spec.shape(), &inputs, || ScanBackward { spec, a: ad, h: hd, h0: h0d });
    Ok(out)
}
