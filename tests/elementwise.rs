//! Unary, scalar and binary elementwise ops: forward against f64 references, backward
//! against central differences, on random shapes, broadcasting and strided views.

mod common;
use common::*;
use fixpoint::ops::elementwise::Unary;
use fixpoint::{Error, Rng, Tensor};
use proptest::prelude::*;

fn erf64(x: f64) -> f64 {
    // Maclaurin series; accurate to ~1e-12 for |x| <= 4.
    let mut sum = 0.0;
    let mut term = x; // x^(2n+1) (-1)^n / n!
    for n in 0..200 {
        let add = term / (2 * n + 1) as f64;
        sum += add;
        if add.abs() < 1e-17 {
            break;
        }
        term *= -x * x / (n + 1) as f64;
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

fn sigmoid64(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

type UnaryCase = (Unary, fn(f64) -> f64, f32, f32);

/// Every unary op with its f64 reference and the input range it is checked on
/// (kept away from kinks, where finite differences are meaningless).
fn unary_cases() -> Vec<UnaryCase> {
    vec![
        (Unary::Neg, |x| -x, -3.0, 3.0),
        (Unary::Exp, f64::exp, -3.0, 3.0),
        (Unary::Log, f64::ln, 0.2, 4.0),
        (Unary::Sqrt, f64::sqrt, 0.2, 4.0),
        (Unary::Recip, |x| 1.0 / x, 0.3, 3.0),
        (Unary::Abs, f64::abs, 0.1, 3.0),
        (Unary::Relu, |x| x.max(0.0), 0.1, 3.0),
        (Unary::GeluErf, |x| 0.5 * x * (1.0 + erf64(x / 2f64.sqrt())), -4.0, 4.0),
        (
            Unary::GeluTanh,
            |x| 0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh()),
            -4.0,
            4.0,
        ),
        (Unary::Silu, |x| x * sigmoid64(x), -4.0, 4.0),
        (Unary::Sigmoid, sigmoid64, -4.0, 4.0),
        (Unary::Softplus, |x| (1.0 + x.exp()).ln(), -4.0, 4.0),
        (Unary::Tanh, f64::tanh, -3.0, 3.0),
        (Unary::Square, |x| x * x, -3.0, 3.0),
        (Unary::Powf(1.5), |x| x.powf(1.5), 0.2, 3.0),
        (Unary::Powf(-2.0), |x| x.powf(-2.0), 0.5, 3.0),
        (Unary::Clamp(-0.5, 0.7), |x| x.clamp(-0.5, 0.7), -0.45, 0.65),
        (Unary::AddScalar(1.5), |x| x + 1.5, -3.0, 3.0),
        (Unary::MulScalar(-2.5), |x| x * -2.5, -3.0, 3.0),
        (Unary::DivScalar(4.0), |x| x / 4.0, -3.0, 3.0),
        (Unary::RsubScalar(2.0), |x| 2.0 - x, -3.0, 3.0),
    ]
}

#[test]
fn unary_forward_and_backward() {
    let mut rng = Rng::new(1);
    for (op, reference, lo, hi) in unary_cases() {
        for shape in [vec![1], vec![7], vec![3, 65], vec![2, 3, 9]] {
            let x = rand_tensor(&shape, lo, hi, &mut rng);
            let want: Vec<f64> = f64s(&x).into_iter().map(reference).collect();
            assert_close(op.name(), &x.unary(op).to_vec(), &want, 1e-6, 2e-6);
            // Through a transposed view: same function of the same values.
            if shape.len() >= 2 {
                let xt = x.t().unwrap();
                let want_t: Vec<f64> = f64s(&xt).into_iter().map(reference).collect();
                assert_close(op.name(), &xt.unary(op).to_vec(), &want_t, 1e-6, 2e-6);
            }
            let step = ((hi - lo) * 0.01).min(0.01);
            assert_grads_tol(op.name(), |v| Ok(v[0].unary(op)), std::slice::from_ref(&x), step, 2e-3, 1e-2);
            assert_grads_tol(
                op.name(),
                |v| Ok(v[0].t()?.unary(op)),
                &[x.reshape(&[shape.iter().product::<usize>(), 1]).unwrap()],
                step,
                2e-3,
                1e-2,
            );
        }
    }
}

#[test]
fn unary_edge_values() {
    let x = Tensor::from_vec(vec![-100.0, 100.0, 0.0, f32::NAN], [4]).unwrap();
    let sp = x.softplus().to_vec();
    assert!((0.0..1e-30).contains(&sp[0]), "softplus(-100) = {}", sp[0]);
    assert_eq!(sp[1], 100.0);
    assert!(sp[3].is_nan(), "NaN propagates");
    let s = x.sigmoid().to_vec();
    assert!(s[0] >= 0.0 && s[0] < 1e-30 && s[1] == 1.0);
    assert!(matches!(x.clamp(1.0, 0.0), Err(Error::InvalidArgument { op: "clamp", .. })));
}

fn binary_reference(name: &str) -> fn(f64, f64) -> f64 {
    match name {
        "add" => |a, b| a + b,
        "sub" => |a, b| a - b,
        "mul" => |a, b| a * b,
        "div" => |a, b| a / b,
        "maximum" => f64::max,
        "minimum" => f64::min,
        _ => unreachable!(),
    }
}

type BinFn = fn(&Tensor, &Tensor) -> fixpoint::Result<Tensor>;
const BINARY: [(&str, BinFn); 6] = [
    ("add", Tensor::add),
    ("sub", Tensor::sub),
    ("mul", Tensor::mul),
    ("div", Tensor::div),
    ("maximum", Tensor::maximum),
    ("minimum", Tensor::minimum),
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn binary_broadcasting((sa, sb) in broadcastable_pair(4), va in view_kind(), vb in view_kind(), seed in 0u64..1000) {
        let mut rng = Rng::new(seed);
        let na: usize = sa.iter().product();
        let nb: usize = sb.iter().product();
        // Values kept away from 0 (div), and a and b on interleaved grids 0.05 apart so
        // that no max/min pair is within a finite-difference step of a tie.
        let grid = |rng: &mut Rng, half: f32| (rng.below(16) as f32 + 5.0 + half) * 0.1 * if rng.bernoulli(0.5) { 1.0 } else { -1.0 };
        let da: Vec<f32> = (0..na).map(|_| grid(&mut rng, 0.5)).collect();
        let db: Vec<f32> = (0..nb).map(|_| grid(&mut rng, 0.0)).collect();
        let a = make_view(&da, &sa, va);
        let b = make_view(&db, &sb, vb);
        for (name, f) in BINARY {
            let out = f(&a, &b).unwrap();
            let r = binary_reference(name);
            let want: Vec<f64> = (0..out.numel())
                .map(|i| r(da[broadcast_index(out.shape(), &sa, i)] as f64, db[broadcast_index(out.shape(), &sb, i)] as f64))
                .collect();
            assert_close(name, &out.to_vec(), &want, 1e-6, 1e-6);
            // The checker feeds contiguous copies; views are covered by the forward above
            // and by composing the view inside f.
            assert_grads(name, |v| f(&v[0], &v[1]), &[a.clone(), b.clone()]);
        }
    }
}

#[test]
fn binary_grads_through_views() {
    let mut rng = Rng::new(5);
    let a = rand_tensor(&[4, 3], 0.5, 2.0, &mut rng);
    let b = rand_tensor(&[3, 1], 0.5, 2.0, &mut rng);
    // a's transpose [3, 4] times b [3, 1] broadcast.
    assert_grads("mul of transposed", |v| v[0].t()?.mul(&v[1]), &[a.clone(), b.clone()]);
    assert_grads("div of narrowed", |v| v[0].narrow(1, 1, 2)?.div(&v[1].t()?.narrow(1, 0, 2)?), &[a, b]);
}

#[test]
fn binary_errors_name_op_and_shapes() {
    let a = Tensor::zeros([2, 3]);
    let b = Tensor::zeros([4, 3]);
    let e = a.add(&b).unwrap_err();
    assert_eq!(
        e,
        Error::Broadcast { op: "add", lhs: [2, 3].into(), rhs: [4, 3].into(), axis: 0, lhs_size: 2, rhs_size: 4 }
    );
    assert_eq!(e.to_string(), "add: cannot broadcast [2, 3] with [4, 3]: axis 0 has sizes 2 and 4");
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| &a * &b)).unwrap_err();
    let msg = r.downcast_ref::<String>().unwrap();
    assert!(msg.contains("mul: cannot broadcast [2, 3] with [4, 3]"), "{msg}");
}

#[test]
fn comparisons_and_nan() {
    let a = Tensor::from_vec(vec![1.0, 2.0, f32::NAN], [3]).unwrap();
    let b = Tensor::from_vec(vec![2.0, 2.0, 0.0], [3]).unwrap();
    assert_eq!(a.lt(&b).unwrap().to_vec(), vec![1.0, 0.0, 0.0]);
    assert_eq!(a.ge(&b).unwrap().to_vec(), vec![0.0, 1.0, 0.0]);
    assert_eq!(a.eq_mask(&b).unwrap().to_vec(), vec![0.0, 1.0, 0.0]);
    assert!(a.maximum(&b).unwrap().to_vec()[2].is_nan());
    assert!(b.minimum(&a).unwrap().to_vec()[2].is_nan());
}
