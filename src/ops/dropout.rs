//! Inverted dropout: in training each element is kept with probability `1 - p` and
//! scaled by `1 / (1 - p)`, so the expected value is unchanged and evaluation needs no
//! rescaling. The mask is drawn from the caller's [`Rng`] (one uniform per element in
//! row-major order, so the same seed gives the same mask) and kept for backward as
//! packed bits.

use crate::autograd::Backward;
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::tensor::Tensor;

/// A keep/drop mask packed 64 elements per word.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DropoutMask {
    bits: Vec<u64>,
    len: usize,
}

impl DropoutMask {
    /// Draw `len` keep flags: element `i` is kept when the `i`-th uniform is `>= p`.
    pub fn sample(len: usize, p: f32, rng: &mut Rng) -> DropoutMask {
        let mut bits = vec![0u64; len.div_ceil(64)];
        for i in 0..len {
            if rng.uniform() >= p {
                bits[i / 64] |= 1 << (i % 64);
            }
        }
        DropoutMask { bits, len }
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn keeps(&self, i: usize) -> bool {
        self.bits[i / 64] >> (i % 64) & 1 == 1
    }
    /// `out_i = x_i · scale` where kept, 0 where dropped (the forward and, applied to the
    /// gradient, the backward).
    pub fn apply(&self, x: &[f32], scale: f32, out: &mut [f32]) {
        debug_assert!(x.len() == self.len && out.len() == self.len);
        for ((o, xc), &word) in out.chunks_mut(64).zip(x.chunks(64)).zip(&self.bits) {
            for (k, (o, &v)) in o.iter_mut().zip(xc).enumerate() {
                *o = if word >> k & 1 == 1 { v * scale } else { 0.0 };
            }
        }
    }
}

struct DropoutBackward {
    mask: DropoutMask,
    scale: f32,
}

impl Backward for DropoutBackward {
    fn name(&self) -> &'static str {
        "dropout"
    }
    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let g_data = g.contiguous_data();
        let mut out = vec![0.0; g_data.len()];
        self.mask.apply(&g_data, self.scale, &mut out);
        Ok(vec![Some(Tensor::from_parts(out, g.shape_obj().clone()))])
    }
}

impl Tensor {
    /// Inverted dropout with drop probability `p` in `[0, 1)`. With `train == false` or
    /// `p == 0` it returns `self` unchanged and draws nothing from `rng`. The gradient is
    /// the mask times `1 / (1 - p)`. `p` outside `[0, 1)` (or NaN) is `InvalidArgument`.
    pub fn dropout(&self, p: f32, rng: &mut Rng, train: bool) -> Result<Tensor> {
        Tensor::cpu_only("dropout", &[self])?;
        let _p = crate::profile::fwd("dropout");
        if !(0.0..1.0).contains(&p) {
            return Err(Error::InvalidArgument { op: "dropout", message: format!("p must be in [0, 1), got {p}") });
        }
        if !train || p == 0.0 {
            return Ok(self.clone());
        }
        let scale = 1.0 / (1.0 - p);
        let mask = DropoutMask::sample(self.numel(), p, rng);
        let x = self.contiguous_data();
        let mut out = vec![0.0; x.len()];
        mask.apply(&x, scale, &mut out);
        drop(x);
        Ok(Tensor::from_op(out, self.shape_obj().clone(), &[self], || DropoutBackward { mask, scale }))
    }
}
