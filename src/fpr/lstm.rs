//! The classic LSTM (Hochreiter and Schmidhuber 1997, PyTorch's gate order `i, f, g, o`),
//! the baseline that solves state tracking. The input projection `x·W_ih + b` is one
//! matmul over all steps; the recurrence is one fused op, [`lstm_recurrence`], with a
//! hand-written backward through time:
//!
//! ```text
//! a_t = gx_t + h_{t−1} W_hh;  i, f, o = σ(a_i, a_f, a_o);  g = tanh(a_g)
//! c_t = f ⊙ c_{t−1} + i ⊙ g;   h_t = o ⊙ tanh(c_t)          (h_{−1} = c_{−1} = 0)
//! ```

use crate::autograd::Backward;
use crate::error::{Error, Result};
use crate::init;
use crate::nn::Module;
use crate::ops::matmul::{Accum, MatRef, gemm};
use crate::rng::Rng;
use crate::shape::Shape;
use crate::tensor::Tensor;

#[inline]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Saved forward values: activated gates `[B, T, 4H]` (`i, f, g, o`), cells `[B, T, H]`
/// and outputs `[B, T, H]`.
struct LstmTape {
    gates: Vec<f32>,
    cells: Vec<f32>,
}

/// Forward kernel. Returns `h` and the tape.
fn lstm_forward(gx: &[f32], w: &[f32], batch: usize, time: usize, hidden: usize) -> (Vec<f32>, LstmTape) {
    let (bh, g4) = (hidden, 4 * hidden);
    let mut h = vec![0.0f32; batch * time * bh];
    let mut gates = vec![0.0f32; batch * time * g4];
    let mut cells = vec![0.0f32; batch * time * bh];
    let mut a = vec![0.0f32; batch * g4];
    let mut c_prev = vec![0.0f32; batch * bh];
    for t in 0..time {
        for b in 0..batch {
            a[b * g4..(b + 1) * g4].copy_from_slice(&gx[(b * time + t) * g4..][..g4]);
        }
        if t > 0 && hidden > 0 {
            // a += h_{t−1} · W_hh  (rows of h at stride T·H)
            let hp = MatRef { data: &h, offset: (t - 1) * bh, rows: batch, cols: bh, rs: time * bh, cs: 1 };
            let wm = MatRef { data: w, offset: 0, rows: bh, cols: g4, rs: g4, cs: 1 };
            gemm(hp, wm, &mut a, 0, g4, 1, Accum::Add);
        }
        for b in 0..batch {
            let ar = &a[b * g4..(b + 1) * g4];
            let row = b * time + t;
            let gr = &mut gates[row * g4..(row + 1) * g4];
            for j in 0..bh {
                let i = sigmoid(ar[j]);
                let f = sigmoid(ar[bh + j]);
                let g = ar[2 * bh + j].tanh();
                let o = sigmoid(ar[3 * bh + j]);
                gr[j] = i;
                gr[bh + j] = f;
                gr[2 * bh + j] = g;
                gr[3 * bh + j] = o;
                let c = f * c_prev[b * bh + j] + i * g;
                c_prev[b * bh + j] = c;
                cells[row * bh + j] = c;
                h[row * bh + j] = o * c.tanh();
            }
        }
    }
    (h, LstmTape { gates, cells })
}

struct LstmBackward {
    w: Tensor,
    h: Tensor,
    tape: LstmTape,
    batch: usize,
    time: usize,
    hidden: usize,
}

impl Backward for LstmBackward {
    fn name(&self) -> &'static str {
        "lstm_recurrence"
    }
    fn backward(&self, g: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let (batch, time, bh) = (self.batch, self.time, self.hidden);
        let g4 = 4 * bh;
        let gout = g.contiguous_data();
        let w = self.w.contiguous_data();
        let h = self.h.contiguous_data();
        let LstmTape { gates, cells } = &self.tape;
        let mut dgx = vec![0.0f32; batch * time * g4];
        let mut dh_next = vec![0.0f32; batch * bh];
        let mut dc_next = vec![0.0f32; batch * bh];
        for t in (0..time).rev() {
            for b in 0..batch {
                let row = b * time + t;
                let gr = &gates[row * g4..(row + 1) * g4];
                let da = &mut dgx[row * g4..(row + 1) * g4];
                for j in 0..bh {
                    let (i, f, gg, o) = (gr[j], gr[bh + j], gr[2 * bh + j], gr[3 * bh + j]);
                    let c = cells[row * bh + j];
                    let c_prev = if t > 0 { cells[(row - 1) * bh + j] } else { 0.0 };
                    let tc = c.tanh();
                    let dh = gout[row * bh + j] + dh_next[b * bh + j];
                    let dc = dc_next[b * bh + j] + dh * o * (1.0 - tc * tc);
                    da[j] = dc * gg * i * (1.0 - i);
                    da[bh + j] = dc * c_prev * f * (1.0 - f);
                    da[2 * bh + j] = dc * i * (1.0 - gg * gg);
                    da[3 * bh + j] = dh * tc * o * (1.0 - o);
                    dc_next[b * bh + j] = dc * f;
                }
            }
            // dh_{t−1} = da_t · W_hhᵀ
            if t > 0 && bh > 0 {
                let dam = MatRef { data: &dgx, offset: t * g4, rows: batch, cols: g4, rs: time * g4, cs: 1 };
                let wt = MatRef { data: &w, offset: 0, rows: g4, cols: bh, rs: 1, cs: g4 };
                gemm(dam, wt, &mut dh_next, 0, bh, 1, Accum::Replace);
            }
        }
        let dw = if needs[1] && time > 1 && bh > 0 {
            // dW_hh = Σ_t h_{t−1}ᵀ da_t, batch by batch (rows t = 1..T of each sequence).
            let mut dw = vec![0.0f32; bh * g4];
            for b in 0..batch {
                let hp = MatRef { data: &h, offset: b * time * bh, rows: bh, cols: time - 1, rs: 1, cs: bh };
                let dam = MatRef { data: &dgx, offset: (b * time + 1) * g4, rows: time - 1, cols: g4, rs: g4, cs: 1 };
                gemm(hp, dam, &mut dw, 0, g4, 1, Accum::Add);
            }
            Some(dw)
        } else {
            needs[1].then(|| vec![0.0f32; bh * g4])
        };
        Ok(vec![
            needs[0].then(|| Tensor::from_parts(dgx, Shape::new([batch, time, g4]))),
            dw.map(|v| Tensor::from_parts(v, Shape::new([bh, g4]))),
        ])
    }
}

/// The LSTM recurrence from precomputed input projections `gx` (`[B, T, 4H]`, gate
/// blocks `i, f, g, o`, biases included) and the recurrent weight `w_hh` (`[H, 4H]`);
/// returns `h` (`[B, T, H]`) from zero initial states. Differentiable in both.
pub fn lstm_recurrence(gx: &Tensor, w_hh: &Tensor) -> Result<Tensor> {
    let _p = crate::profile::fwd("lstm_recurrence");
    let &[batch, time, g4] = gx.shape() else {
        return Err(Error::InvalidArgument {
            op: "lstm_recurrence",
            message: format!("gx must be [B, T, 4H], got {}", gx.shape_obj()),
        });
    };
    if !g4.is_multiple_of(4) || w_hh.shape() != [g4 / 4, g4] {
        return Err(Error::ShapeMismatch {
            op: "lstm_recurrence (w_hh [H, 4H] vs gx [B, T, 4H])",
            lhs: w_hh.shape_obj().clone(),
            rhs: gx.shape_obj().clone(),
        });
    }
    let hidden = g4 / 4;
    let (h, tape) = lstm_forward(&gx.contiguous_data(), &w_hh.contiguous_data(), batch, time, hidden);
    let shape = Shape::new([batch, time, hidden]);
    let mut out = Tensor::from_parts(h, shape.clone());
    if crate::autograd::is_grad_enabled() && (gx.requires_grad() || w_hh.requires_grad()) {
        let backward = LstmBackward { w: w_hh.contiguous().detach(), h: out.detach(), tape, batch, time, hidden };
        out.node = Tensor::record(&shape, &[gx, w_hh], || backward);
    }
    Ok(out)
}

/// One LSTM layer `d_in → hidden`: parameters `w_ih` (`[d_in, 4H]`), `w_hh` (`[H, 4H]`)
/// and `bias` (`[4H]`, standing for PyTorch's `b_ih + b_hh`), all `U(±1/√H)` as PyTorch.
#[derive(Clone, Debug)]
pub struct Lstm {
    w_ih: Tensor,
    w_hh: Tensor,
    bias: Tensor,
}

impl Lstm {
    pub fn new(d_in: usize, hidden: usize, rng: &mut Rng) -> Result<Lstm> {
        if d_in == 0 || hidden == 0 {
            return Err(Error::InvalidArgument {
                op: "Lstm::new",
                message: format!("input {d_in} and hidden {hidden} sizes must be positive"),
            });
        }
        let k = 1.0 / (hidden as f32).sqrt();
        Ok(Lstm {
            w_ih: init::uniform([d_in, 4 * hidden], -k, k, rng).requires_grad_(),
            w_hh: init::uniform([hidden, 4 * hidden], -k, k, rng).requires_grad_(),
            bias: init::uniform([4 * hidden], -k, k, rng).requires_grad_(),
        })
    }
    pub fn hidden(&self) -> usize {
        self.w_hh.shape()[0]
    }
    /// `h` (`[B, T, H]`) for `x` (`[B, T, d_in]`).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.rank() != 3 || x.shape()[2] != self.w_ih.shape()[0] {
            return Err(Error::ShapeMismatch {
                op: "Lstm (input vs [B, T, d_in])",
                lhs: x.shape_obj().clone(),
                rhs: self.w_ih.shape_obj().clone(),
            });
        }
        let gx = x.matmul(&self.w_ih)?.add(&self.bias)?;
        lstm_recurrence(&gx, &self.w_hh)
    }
}

impl Module for Lstm {
    fn params(&self) -> Vec<(String, &Tensor)> {
        vec![("w_ih".to_string(), &self.w_ih), ("w_hh".to_string(), &self.w_hh), ("bias".to_string(), &self.bias)]
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        vec![
            ("w_ih".to_string(), &mut self.w_ih),
            ("w_hh".to_string(), &mut self.w_hh),
            ("bias".to_string(), &mut self.bias),
        ]
    }
}
