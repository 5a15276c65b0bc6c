//! Shared test helpers: random tensors, f64 reference comparison, gradient checks
//! and proptest strategies for shapes (odd sizes, size-1 axes, broadcasting, views).
#![allow(dead_code)]

use fixpoint::autograd::check::check_gradients;
use fixpoint::{Result, Rng, Tensor};
use proptest::prelude::*;

pub fn rand_tensor(shape: &[usize], lo: f32, hi: f32, rng: &mut Rng) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::from_vec((0..n).map(|_| rng.range(lo, hi)).collect(), shape).unwrap()
}

/// A bag of named leaf parameters: a `Module` for optimiser and guard tests.
pub struct Bag(pub Vec<(String, Tensor)>);

impl fixpoint::nn::Module for Bag {
    fn params(&self) -> Vec<(String, &Tensor)> {
        self.0.iter().map(|(n, t)| (n.clone(), t)).collect()
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        self.0.iter_mut().map(|(n, t)| (n.clone(), t)).collect()
    }
}

/// Element-wise `|got - want| <= atol + rtol * |want|`, with a message naming the index.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length {} vs reference {}", got.len(), want.len());
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = if w.is_nan() {
            g.is_nan()
        } else if w.is_infinite() {
            g as f64 == w
        } else {
            (g as f64 - w).abs() <= atol + rtol * w.abs()
        };
        assert!(ok, "{what}: element {i}: got {g}, reference {w}");
    }
}

/// Backward of `f` against central differences (step 1e-2 by default: f32 forward).
pub fn assert_grads(what: &str, f: impl Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor]) {
    assert_grads_tol(what, f, inputs, 1e-2, 2e-3, 1e-2)
}

pub fn assert_grads_tol(
    what: &str,
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
    inputs: &[Tensor],
    step: f32,
    atol: f64,
    rtol: f64,
) {
    let r = check_gradients(f, inputs, step, atol, rtol, 42).unwrap();
    assert!(
        r.worst_ratio <= 1.0,
        "{what}: gradient of input {} element {}: analytic {} vs numeric {} (ratio {:.3})",
        r.worst_input,
        r.worst_index,
        r.analytic,
        r.numeric,
        r.worst_ratio
    );
}

/// f64 row-major values of a tensor.
pub fn f64s(t: &Tensor) -> Vec<f64> {
    t.to_vec().into_iter().map(|v| v as f64).collect()
}

/// Index of each output element into an input of shape `in_shape` broadcast to `out`.
pub fn broadcast_index(out: &[usize], in_shape: &[usize], flat: usize) -> usize {
    let mut rem = flat;
    let mut idx = vec![0; out.len()];
    for ax in (0..out.len()).rev() {
        idx[ax] = rem % out[ax];
        rem /= out[ax];
    }
    let lead = out.len() - in_shape.len();
    let mut off = 0;
    for (k, &d) in in_shape.iter().enumerate() {
        let i = if d == 1 { 0 } else { idx[lead + k] };
        off = off * d + i;
    }
    off
}

/// Sizes that exercise remainders of 8-wide SIMD and size-1 broadcasting.
pub fn odd_size() -> impl Strategy<Value = usize> {
    prop_oneof![Just(1usize), Just(2), Just(3), Just(7), Just(8), Just(9), Just(17)]
}

/// Larger odd sizes (1, 7, 63, 65) for one axis of a small shape.
pub fn big_odd_size() -> impl Strategy<Value = usize> {
    prop_oneof![Just(1usize), Just(7), Just(63), Just(65)]
}

/// A shape of rank 1..=max_rank.
pub fn shape(max_rank: usize) -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(odd_size(), 1..=max_rank)
}

/// Two shapes that broadcast together: the second drops leading axes and sets some
/// axes to 1 (and the first may have 1 where the second does not).
pub fn broadcastable_pair(max_rank: usize) -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    shape(max_rank).prop_flat_map(|full| {
        let r = full.len();
        (Just(full), 0..=r, proptest::collection::vec(0u8..3, r)).prop_map(|(full, drop, pick)| {
            let mut a = full.clone();
            let mut b: Vec<usize> = full[drop..].to_vec();
            for (i, p) in pick.iter().enumerate() {
                match p {
                    1 if i >= drop => b[i - drop] = 1,
                    2 => a[i] = 1,
                    _ => {}
                }
            }
            (a, b)
        })
    })
}

/// Kinds of view a test input is passed through before the op.
#[derive(Clone, Copy, Debug)]
pub enum View {
    Plain,
    /// Stored transposed (last two axes swapped), then transposed back: same values,
    /// non-contiguous strides.
    Transposed,
    /// Stored with one extra column on the last axis, then narrowed away.
    Narrowed,
}

pub fn view_kind() -> impl Strategy<Value = View> {
    prop_oneof![Just(View::Plain), Just(View::Transposed), Just(View::Narrowed)]
}

/// A tensor with the values `data` (row-major, shape `shape`) in the given kind of view.
pub fn make_view(data: &[f32], shape: &[usize], view: View) -> Tensor {
    let plain = Tensor::from_slice(data, shape).unwrap();
    let r = shape.len();
    match view {
        View::Plain => plain,
        View::Transposed if r >= 2 => plain.transpose(-1, -2).unwrap().contiguous().transpose(-1, -2).unwrap(),
        View::Narrowed if r >= 1 => {
            let last = shape[r - 1];
            let mut wide_shape = shape.to_vec();
            wide_shape[r - 1] += 1;
            let rows: usize = shape[..r - 1].iter().product();
            let mut wide = Vec::with_capacity(data.len() + rows);
            for i in 0..rows {
                wide.extend_from_slice(&data[i * last..(i + 1) * last]);
                wide.push(f32::NAN); // never read through the view
            }
            Tensor::from_vec(wide, wide_shape).unwrap().narrow(-1, 0, last).unwrap()
        }
        _ => plain,
    }
}
