//! The fixed point of an [`FpRnnBlock`] whose inputs live on the GPU: the solver of
//! [`super::solver`] (same stopping rule, same statistics, [`SolverState`] for the
//! bookkeeping) with `F` evaluated by the block's own recorded step
//! ([`FpRnnBlock::step`]: the GPU mixer and scan kernels) under `no_grad`, and the
//! per-sample residuals reduced on the GPU, so that an iteration reads back only `B`
//! scalars. The iterate never leaves the GPU.
//!
//! `F` here is the tensor-op step, not [`super::core::FpCore`]'s fused host kernel: the
//! two compute the same map with different rounding (the GPU's fixed point matches the
//! CPU's to the tolerance stated in `tests/gpu.rs`). The token-by-token `dense-seq`
//! solve has no GPU path and is refused.
//!
//! [`householder_with_base`] is the GPU's form of the Householder mixer's
//! `apply_with_base` (whose fused host op has no GPU kernel): the same function from
//! the composite of GPU ops (SiLU, L2 normalisation, sigmoid, the Householder kernel).

use super::block::{BlockInputs, FpRnnBlock, SolveMethod};
use super::mixer::{HouseholderMixer, MixerInput, householder};
use super::solver::{SolveRun, SolveStats, SolverConfig, SolverState};
use crate::autograd::no_grad;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// `h*` (detached, on the GPU) and the solver statistics for a block whose inputs
/// `inp` are on the GPU (see the module docs).
pub(crate) fn fixed_point(
    block: &FpRnnBlock,
    inp: &BlockInputs,
    cfg: &SolverConfig,
    run: &SolveRun,
) -> Result<(Tensor, SolveStats)> {
    const OP: &str = "FpRnnBlock::fixed_point (GPU)";
    let shape = inp.bx.shape_obj().clone();
    let (batch, device) = (shape.dims()[0], inp.bx.device());
    if block.config().solve == SolveMethod::Sequential {
        return Err(Error::InvalidArgument {
            op: OP,
            message: "the token-by-token dense-seq solve has no GPU path; use --device cpu".to_string(),
        });
    }
    if block.mixer().is_identity() {
        // F does not depend on h: the recorded step from any state is the fixed point.
        return Ok((Tensor::zeros(shape).to_device(device)?, SolveStats::exact(batch, cfg, run)));
    }
    cfg.validate()?;
    if run.lmax == 0 {
        return Err(Error::InvalidArgument { op: OP, message: "lmax must be at least 1".to_string() });
    }
    let _p = crate::profile::fwd("fp_solve");
    no_grad(|| {
        let mut h = Tensor::zeros(shape.clone()).to_device(device)?;
        let mut st = SolverState::new(batch, cfg);
        while st.should_continue(run) {
            let h_new = block.step(inp, &h)?;
            let res: Vec<f32> = on_gpu!(OP, solve::residuals(&h, &h_new, cfg.eps))?;
            h = if st.stepsize.iter().all(|&s| s == 1.0) {
                h_new
            } else {
                // y ← s_b·y_new + (1 − s_b)·y with the steps from before this update,
                // as the CPU solver (B scalars uploaded).
                let s = Tensor::from_slice(&st.stepsize, [batch, 1, 1])?.to_device(device)?;
                h_new.mul(&s)?.add(&h.mul(&s.rsub_scalar(1.0))?)?
            };
            st.update(&res);
        }
        Ok((h.detach(), st.stats(run)))
    })
}

/// `Q(p) v` of the Householder mixer `m` from the input part of its pre-activations
/// (`base`, see `HouseholderMixer::base`) and the state `h` (entering shifted, as in
/// `MixerInput::build`), on the graph, for GPU tensors: `HouseholderMixer::apply_with_base`
/// with `u = normalize(SiLU(pre_u))`, `α = σ(pre_α)` as separate GPU ops.
pub(crate) fn householder_with_base(
    m: &HouseholderMixer,
    base: &(Tensor, Tensor),
    h: &Tensor,
    input: MixerInput,
    v: &Tensor,
) -> Result<Tensor> {
    let d = m.dim();
    let (pu, pa) = if input.uses_state() {
        let (wu, wa) = (m.u_proj().weight()?, m.alpha_proj().weight()?);
        // The rows of [W_u, W_α] acting on the state (the lower half with Concat).
        let (wu, wa) = match input {
            MixerInput::Concat => (wu.narrow(0, d, d)?, wa.narrow(0, d, d)?),
            _ => (wu, wa),
        };
        let hs = h.shift(1, 1)?;
        (base.0.add(&hs.matmul(&wu)?)?, base.1.add(&hs.matmul(&wa)?)?)
    } else {
        base.clone()
    };
    let mut shape = v.shape()[..v.rank() - 1].to_vec();
    shape.extend([m.rank(), d]);
    let u = pu.reshape(&shape)?.silu().l2_normalize(-1, m.eps())?;
    householder(&u, &pa.sigmoid(), v, m.alpha_scale())
}
