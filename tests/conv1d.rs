//! Depthwise causal conv1d: forward against an f64 reference written from PyTorch's
//! definition (zero left padding of K − 1, cross-correlation), gradients against central
//! differences, random shapes with strided inputs, typed errors.

mod common;

use common::{View, assert_close, assert_grads, make_view, rand_tensor, view_kind};
use fixpoint::{Error, Rng, Tensor};
use proptest::prelude::*;

/// `y[b, t, c] = bias[c] + Σ_k w[c, k] · xpad[b, t + k, c]` with `xpad` = `x` after `K − 1`
/// zeros (PyTorch `conv1d(padding = K − 1)[..T]`).
fn reference(x: &[f32], w: &[f32], bias: Option<&[f32]>, b: usize, t: usize, c: usize, k: usize) -> Vec<f64> {
    let mut y = vec![0.0f64; b * t * c];
    for bb in 0..b {
        for tt in 0..t {
            for cc in 0..c {
                let mut s = bias.map_or(0.0, |bi| bi[cc] as f64);
                for kk in 0..k {
                    let padded = tt + kk; // index into the left-padded sequence
                    if padded >= k - 1 {
                        let src = padded - (k - 1);
                        s += w[cc * k + kk] as f64 * x[(bb * t + src) * c + cc] as f64;
                    }
                }
                y[(bb * t + tt) * c + cc] = s;
            }
        }
    }
    y
}

#[test]
fn doc_example_and_causality() {
    let x = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], [1, 4, 1]).unwrap();
    let w = Tensor::from_vec(vec![1000.0, 100.0, 10.0, 1.0], [1, 4]).unwrap();
    let b = Tensor::from_vec(vec![0.5], [1]).unwrap();
    let y = x.causal_conv1d(&w, Some(&b)).unwrap().to_vec();
    assert_eq!(y, vec![1.5, 12.5, 123.5, 1234.5]);
}

#[test]
fn large_shape_parallel_path_matches_reference() {
    // 3·300·80 elements exceed the parallel threshold.
    let mut rng = Rng::new(5);
    let (b, t, c, k) = (3, 300, 80, 4);
    let x = rand_tensor(&[b, t, c], -1.0, 1.0, &mut rng);
    let w = rand_tensor(&[c, k], -0.5, 0.5, &mut rng);
    let bias = rand_tensor(&[c], -0.5, 0.5, &mut rng);
    let y = x.causal_conv1d(&w, Some(&bias)).unwrap();
    let want = reference(&x.to_vec(), &w.to_vec(), Some(&bias.to_vec()), b, t, c, k);
    assert_close("conv large", &y.to_vec(), &want, 1e-5, 1e-5);
}

#[test]
fn gradients_match_finite_differences() {
    let mut rng = Rng::new(1);
    for &(b, t, c, k) in &[(2, 7, 3, 4), (1, 3, 5, 4), (2, 5, 1, 1), (1, 2, 2, 3)] {
        let x = rand_tensor(&[b, t, c], -1.0, 1.0, &mut rng);
        let w = rand_tensor(&[c, k], -0.5, 0.5, &mut rng);
        let bias = rand_tensor(&[c], -0.5, 0.5, &mut rng);
        assert_grads(
            &format!("conv1d with bias {b}x{t}x{c} k{k}"),
            |v| v[0].causal_conv1d(&v[1], Some(&v[2])),
            &[x.clone(), w.clone(), bias],
        );
        assert_grads(&format!("conv1d no bias {b}x{t}x{c} k{k}"), |v| v[0].causal_conv1d(&v[1], None), &[x, w]);
    }
}

#[test]
fn gradient_of_large_shape_matches_composition() {
    // Backward on the parallel path equals the gradient of the same function built
    // from shift/mul/add (independent ops), at a size where finite differences are slow.
    let mut rng = Rng::new(9);
    let (b, t, c, k) = (2, 400, 90, 4);
    let x = rand_tensor(&[b, t, c], -1.0, 1.0, &mut rng).requires_grad_();
    let w = rand_tensor(&[c, k], -0.5, 0.5, &mut rng).requires_grad_();
    let bias = rand_tensor(&[c], -0.5, 0.5, &mut rng).requires_grad_();
    let r = rand_tensor(&[b, t, c], -1.0, 1.0, &mut rng);
    x.causal_conv1d(&w, Some(&bias)).unwrap().mul(&r).unwrap().sum_all().backward().unwrap();
    let (gx, gw, gb) = (x.grad().unwrap().to_vec(), w.grad().unwrap().to_vec(), bias.grad().unwrap().to_vec());
    let (x2, w2, b2) = (x.detach().requires_grad_(), w.detach().requires_grad_(), bias.detach().requires_grad_());
    let mut y = b2.clone().broadcast_to(&[b, t, c]).unwrap();
    for kk in 0..k {
        let tap = w2.narrow(1, kk, 1).unwrap().squeeze(1).unwrap(); // [c]
        let shifted = x2.shift(1, (k - 1 - kk) as isize).unwrap();
        y = y.add(&shifted.mul(&tap).unwrap()).unwrap();
    }
    y.mul(&r).unwrap().sum_all().backward().unwrap();
    let to64 = |v: Vec<f32>| v.into_iter().map(|a| a as f64).collect::<Vec<_>>();
    assert_close("dx", &gx, &to64(x2.grad().unwrap().to_vec()), 1e-4, 1e-4);
    assert_close("dw", &gw, &to64(w2.grad().unwrap().to_vec()), 1e-2, 1e-4);
    assert_close("dbias", &gb, &to64(b2.grad().unwrap().to_vec()), 1e-2, 1e-4);
}

#[test]
fn bad_shapes_are_typed_errors() {
    let x = Tensor::zeros([2, 3, 4]);
    assert!(matches!(x.causal_conv1d(&Tensor::zeros([3, 4]), None), Err(Error::ShapeMismatch { .. })));
    assert!(matches!(x.causal_conv1d(&Tensor::zeros([4, 0]), None), Err(Error::ShapeMismatch { .. })));
    assert!(matches!(x.causal_conv1d(&Tensor::zeros([4]), None), Err(Error::InvalidArgument { .. })));
    assert!(matches!(
        Tensor::zeros([3, 4]).causal_conv1d(&Tensor::zeros([4, 4]), None),
        Err(Error::InvalidArgument { .. })
    ));
    let bias = Tensor::zeros([3]);
    assert!(matches!(x.causal_conv1d(&Tensor::zeros([4, 4]), Some(&bias)), Err(Error::ShapeMismatch { .. })));
}

#[test]
fn empty_time_axis() {
    let x = Tensor::zeros([2, 0, 3]);
    let y = x.causal_conv1d(&Tensor::ones([3, 4]), Some(&Tensor::ones([3]))).unwrap();
    assert_eq!(y.shape(), &[2, 0, 3]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn forward_matches_reference(
        b in 1usize..4, t in prop_oneof![Just(1usize), Just(2), Just(7), Just(65)],
        c in prop_oneof![Just(1usize), Just(7), Just(8), Just(63), Just(65)], k in 1usize..6,
        view in view_kind(), bias in any::<bool>(), seed in any::<u64>(),
    ) {
        let mut rng = Rng::new(seed);
        let xd: Vec<f32> = (0..b * t * c).map(|_| rng.range(-2.0, 2.0)).collect();
        let wd: Vec<f32> = (0..c * k).map(|_| rng.range(-1.0, 1.0)).collect();
        let bd: Vec<f32> = (0..c).map(|_| rng.range(-1.0, 1.0)).collect();
        let x = make_view(&xd, &[b, t, c], view);
        let w = make_view(&wd, &[c, k], if matches!(view, View::Plain) { View::Transposed } else { View::Plain });
        let bt = Tensor::from_slice(&bd, [c]).unwrap();
        let y = x.causal_conv1d(&w, bias.then_some(&bt)).unwrap();
        let want = reference(&xd, &wd, bias.then_some(bd.as_slice()), b, t, c, k);
        assert_close("conv1d", &y.to_vec(), &want, 1e-5, 1e-5);
    }
}
