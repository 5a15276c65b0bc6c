//! Reductions (sum, mean, max, min, argmax, logsumexp, var, sum_to): forward against f64
//! references that group elements by explicit multi-index arithmetic, backward against
//! central differences, over random subsets of axes (negative, unordered), keepdim on and
//! off, and strided views; plus the typed errors.

mod common;
use common::*;
use fixpoint::{Error, Rng, Shape, Tensor};
use proptest::prelude::*;

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// The elements of `data` (row-major, `shape`) grouped by output position of a reduction
/// over `axes`, each group in row-major order of the input. Also the kept-dims shape.
fn groups(data: &[f32], shape: &[usize], axes: &[usize]) -> (Vec<usize>, Vec<Vec<f64>>) {
    let keep: Vec<usize> = shape.iter().enumerate().map(|(i, &d)| if axes.contains(&i) { 1 } else { d }).collect();
    let mut out = vec![Vec::new(); numel(&keep)];
    for (p, &v) in data.iter().enumerate() {
        // Unravel p in `shape`, re-ravel in `keep` with the reduced coordinates dropped.
        let mut rem = p;
        let mut idx = vec![0; shape.len()];
        for ax in (0..shape.len()).rev() {
            idx[ax] = rem % shape[ax];
            rem /= shape[ax];
        }
        let g = idx
            .iter()
            .zip(&keep)
            .enumerate()
            .fold(0, |acc, (i, (&c, &k))| acc * k + if axes.contains(&i) { 0 } else { c });
        out[g].push(v as f64);
    }
    (keep, out)
}

fn ref_sum(g: &[f64]) -> f64 {
    g.iter().sum()
}
fn ref_max(g: &[f64]) -> f64 {
    g.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}
fn ref_min(g: &[f64]) -> f64 {
    g.iter().copied().fold(f64::INFINITY, f64::min)
}
fn ref_lse(g: &[f64]) -> f64 {
    let m = ref_max(g);
    m + g.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
}
fn ref_var(g: &[f64], correction: usize) -> f64 {
    let mean = ref_sum(g) / g.len() as f64;
    g.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (g.len() - correction) as f64
}
fn ref_argmax(g: &[f64]) -> f64 {
    let m = ref_max(g);
    g.iter().position(|&v| v == m).unwrap() as f64
}

/// `|got - want| <= atol + rtol * scale` per element, `scale` chosen per reduction.
fn check(what: &str, got: &[f32], want: &[f64], scale: &[f64], atol: f64, rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, ((&g, &w), &s)) in got.iter().zip(want).zip(scale).enumerate() {
        assert!((g as f64 - w).abs() <= atol + rtol * s, "{what}: element {i}: got {g}, reference {w}");
    }
}

/// Distinct values on a 0.05 grid (no ties within a finite-difference step) in random order.
fn distinct(n: usize, rng: &mut Rng) -> Vec<f32> {
    rng.permutation(n).into_iter().map(|p| (p as f32 - n as f32 / 2.0) * 0.05).collect()
}

/// A rank 1..=4 shape and a subset of its axes (possibly empty, meaning all) given in
/// random order, each possibly as a negative axis.
fn shape_and_axes() -> impl Strategy<Value = (Vec<usize>, Vec<usize>, Vec<isize>)> {
    shape(4).prop_flat_map(|s| {
        let r = s.len();
        (
            Just(s),
            proptest::collection::vec(any::<bool>(), r),
            proptest::collection::vec(any::<bool>(), r),
            any::<bool>(),
        )
            .prop_map(|(s, pick, neg, rev)| {
                let r = s.len();
                let mut axes: Vec<usize> = (0..r).filter(|&i| pick[i]).collect();
                let given: Vec<isize> = {
                    let mut g: Vec<isize> =
                        axes.iter().map(|&a| if neg[a] { a as isize - r as isize } else { a as isize }).collect();
                    if rev {
                        g.reverse();
                    }
                    g
                };
                if axes.is_empty() {
                    axes = (0..r).collect();
                }
                (s, axes, given)
            })
    })
}

const GRAD_MAX_ELEMS: usize = 160;

/// Name, result, reference, per-element scale for the tolerance, atol, rtol.
type Case = (&'static str, Tensor, Vec<f64>, Vec<f64>, f64, f64);

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn reductions_match_reference(
        (s, axes, given) in shape_and_axes(),
        keepdim in any::<bool>(),
        view in view_kind(),
        seed in 0u64..1000,
    ) {
        let mut rng = Rng::new(seed);
        let n = numel(&s);
        let small = n <= GRAD_MAX_ELEMS;
        let data: Vec<f32> = if small { distinct(n, &mut rng) } else { (0..n).map(|_| rng.range(-2.0, 2.0)).collect() };
        let x = make_view(&data, &s, view);
        let (keep, gs) = groups(&data, &s, &axes);
        let out_shape: Vec<usize> = if keepdim {
            keep.clone()
        } else {
            s.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, &d)| d).collect()
        };
        let count = gs[0].len() as f64;
        let abs_sum: Vec<f64> = gs.iter().map(|g| g.iter().map(|v| v.abs()).sum()).collect();
        let ones = vec![1.0; gs.len()];
        let map = |f: &dyn Fn(&[f64]) -> f64| -> Vec<f64> { gs.iter().map(|g| f(g)).collect() };

        let cases: Vec<Case> = vec![
            ("sum", x.sum(&given, keepdim).unwrap(), map(&ref_sum), abs_sum.clone(), 1e-6, 1e-6),
            ("mean", x.mean(&given, keepdim).unwrap(), map(&|g| ref_sum(g) / count),
                abs_sum.iter().map(|a| a / count).collect(), 1e-6, 1e-6),
            ("max", x.max(&given, keepdim).unwrap(), map(&ref_max), ones.clone(), 0.0, 0.0),
            ("min", x.min(&given, keepdim).unwrap(), map(&ref_min), ones.clone(), 0.0, 0.0),
            ("logsumexp", x.logsumexp(&given, keepdim).unwrap(), map(&ref_lse), map(&ref_lse).iter().map(|v| v.abs()).collect(), 1e-5, 1e-5),
            ("var", x.var(&given, keepdim, 0).unwrap(), map(&|g| ref_var(g, 0)), ones.clone(), 1e-5, 1e-5),
        ];
        for (name, got, want, scale, atol, rtol) in &cases {
            prop_assert_eq!(got.shape(), &out_shape[..], "{}", name);
            check(name, &got.to_vec(), want, scale, *atol, *rtol);
        }
        if count > 1.0 {
            let got = x.var(&given, keepdim, 1).unwrap();
            check("var unbiased", &got.to_vec(), &map(&|g| ref_var(g, 1)), &ones, 1e-5, 1e-5);
        }
        if small {
            assert_grads("sum", |v| v[0].sum(&given, keepdim), std::slice::from_ref(&x));
            assert_grads("mean", |v| v[0].mean(&given, keepdim), std::slice::from_ref(&x));
            assert_grads("max", |v| v[0].max(&given, keepdim), std::slice::from_ref(&x));
            assert_grads("min", |v| v[0].min(&given, keepdim), std::slice::from_ref(&x));
            assert_grads("logsumexp", |v| v[0].logsumexp(&given, keepdim), std::slice::from_ref(&x));
            assert_grads("var", |v| v[0].var(&given, keepdim, 0), std::slice::from_ref(&x));
            if count > 1.0 {
                assert_grads("var unbiased", |v| v[0].var(&given, keepdim, 1), std::slice::from_ref(&x));
            }
        }
    }

    #[test]
    fn argmax_matches_reference(s in shape(4), axis_pick in 0usize..4, negative in any::<bool>(), keepdim in any::<bool>(), view in view_kind(), seed in 0u64..1000) {
        let mut rng = Rng::new(seed);
        let r = s.len();
        let axis = axis_pick % r;
        // A coarse grid so that ties happen: the first maximum must win.
        let data: Vec<f32> = (0..numel(&s)).map(|_| rng.below(5) as f32).collect();
        let x = make_view(&data, &s, view);
        let given = if negative { axis as isize - r as isize } else { axis as isize };
        let (keep, gs) = groups(&data, &s, &[axis]);
        let want: Vec<f64> = gs.iter().map(|g| ref_argmax(g)).collect();
        let got = x.argmax(given, keepdim).unwrap();
        let mut out_shape = keep.clone();
        if !keepdim {
            out_shape.remove(axis);
        }
        prop_assert_eq!(got.shape(), &out_shape[..]);
        assert_close("argmax", &got.to_vec(), &want, 0.0, 0.0);
        let idx = x.argmax_indices(given).unwrap();
        prop_assert_eq!(idx.iter().map(|&i| i as f64).collect::<Vec<_>>(), want);
        prop_assert!(!got.requires_grad());
    }
}

#[test]
fn empty_axis_list_means_all_axes() {
    let mut rng = Rng::new(4);
    let x = rand_tensor(&[3, 7, 2], -1.0, 1.0, &mut rng);
    for keepdim in [false, true] {
        let a = x.sum(&[], keepdim).unwrap();
        let b = x.sum(&[2, 0, 1], keepdim).unwrap();
        assert_eq!(a.shape(), if keepdim { &[1, 1, 1][..] } else { &[][..] });
        assert_eq!(a.shape(), b.shape());
        assert_close("sum all", &a.to_vec(), &f64s(&b), 1e-5, 1e-6);
    }
    assert_eq!(x.sum_all().shape(), &[] as &[usize]);
    let want: f64 = f64s(&x).iter().sum::<f64>() / 42.0;
    assert_close("mean_all", &x.mean_all().unwrap().to_vec(), &[want], 1e-6, 1e-6);
    // A rank-0 tensor reduces to itself.
    let s = Tensor::scalar(2.5);
    assert_eq!(s.max(&[], false).unwrap().to_vec(), vec![2.5]);
    assert_eq!(s.sum(&[], true).unwrap().shape(), &[] as &[usize]);
}

#[test]
fn grads_through_strided_views() {
    let mut rng = Rng::new(9);
    let x = Tensor::from_vec(distinct(42, &mut rng), [6, 7]).unwrap();
    assert_grads("sum of transposed", |v| v[0].t()?.sum(&[1], false), std::slice::from_ref(&x));
    assert_grads("max of transposed", |v| v[0].t()?.max(&[-1], true), std::slice::from_ref(&x));
    assert_grads("min of narrowed", |v| v[0].narrow(1, 2, 4)?.min(&[0], false), std::slice::from_ref(&x));
    assert_grads(
        "lse of permuted",
        |v| v[0].reshape(&[2, 3, 7])?.permute(&[2, 0, 1])?.logsumexp(&[0, 2], false),
        std::slice::from_ref(&x),
    );
    assert_grads("var of transposed", |v| v[0].t()?.var(&[0], false, 1), std::slice::from_ref(&x));
    assert_grads("mean of broadcast", |v| v[0].narrow(0, 0, 1)?.broadcast_to(&[3, 7])?.mean(&[0, 1], false), &[x]);
}

#[test]
fn logsumexp_is_stable_and_handles_infinities() {
    let x = Tensor::from_vec(vec![1000.0, 1000.0, -1000.0, -1000.0, f32::NEG_INFINITY, 0.0], [3, 2]).unwrap();
    let got = x.logsumexp(&[1], false).unwrap().to_vec();
    let ln2 = 2f64.ln();
    assert_close("lse", &got, &[1000.0 + ln2, -1000.0 + ln2, 0.0], 1e-3, 1e-6);
    let all_masked = Tensor::full([2], f32::NEG_INFINITY).logsumexp(&[0], false).unwrap();
    assert_eq!(all_masked.to_vec(), vec![f32::NEG_INFINITY]);
    let inf = Tensor::from_vec(vec![f32::INFINITY, 1.0], [2]).unwrap().logsumexp(&[0], false).unwrap();
    assert_eq!(inf.to_vec(), vec![f32::INFINITY]);
    // A -inf entry gets zero gradient, the others softmax weights.
    let x = Tensor::from_vec(vec![f32::NEG_INFINITY, 0.0, 0.0], [3]).unwrap().requires_grad_();
    x.logsumexp(&[0], false).unwrap().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec(), vec![0.0, 0.5, 0.5]);
}

#[test]
fn max_grad_goes_to_first_maximum_and_nan_propagates() {
    let x = Tensor::from_vec(vec![1.0, 3.0, 3.0, 2.0], [4]).unwrap().requires_grad_();
    x.max(&[0], false).unwrap().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec(), vec![0.0, 1.0, 0.0, 0.0]);
    let n = Tensor::from_vec(vec![1.0, f32::NAN, 3.0], [3]).unwrap();
    assert!(n.max(&[0], false).unwrap().to_vec()[0].is_nan());
    assert!(n.min(&[0], false).unwrap().to_vec()[0].is_nan());
}

#[test]
fn sum_to_unbroadcasts() {
    let mut rng = Rng::new(2);
    let g = rand_tensor(&[2, 3, 4], -1.0, 1.0, &mut rng);
    let d = g.to_vec();
    for target in [vec![2, 3, 4], vec![3, 4], vec![1, 4], vec![3, 1], vec![2, 1, 4], vec![4], vec![1], vec![]] {
        let got = g.sum_to(&Shape::from(target.clone())).unwrap();
        assert_eq!(got.shape(), &target[..]);
        let mut want = vec![0.0f64; numel(&target)];
        for (p, &v) in d.iter().enumerate() {
            want[broadcast_index(&[2, 3, 4], &target, p)] += v as f64;
        }
        assert_close("sum_to", &got.to_vec(), &want, 1e-6, 1e-6);
        assert_grads("sum_to", |v| v[0].sum_to(&Shape::from(target.clone())), std::slice::from_ref(&g));
    }
    assert!(matches!(g.sum_to(&Shape::from([3, 3])), Err(Error::Broadcast { op: "sum_to", .. })));
    assert!(matches!(g.sum_to(&Shape::from([1, 2, 3, 4])), Err(Error::InvalidArgument { op: "sum_to", .. })));
}

#[test]
fn reduction_errors() {
    let e = Tensor::zeros([2, 0, 3]);
    for (op, r) in [
        ("mean", e.mean(&[1], false)),
        ("max", e.max(&[1], false)),
        ("min", e.min(&[-2], true)),
        ("logsumexp", e.logsumexp(&[], false)),
        ("var", e.var(&[0, 1], false, 0)),
        ("argmax", e.argmax(1, false)),
    ] {
        assert_eq!(r.unwrap_err(), Error::Empty { op, shape: [2, 0, 3].into() }, "{op}");
    }
    // Sums of nothing are zeros; reducing a non-empty axis of an empty tensor is fine.
    assert_eq!(e.sum(&[1], false).unwrap().to_vec(), vec![0.0; 6]);
    assert_eq!(e.max(&[0], false).unwrap().shape(), &[0, 3]);
    assert!(matches!(Tensor::zeros([0]).argmax_indices(0), Err(Error::Empty { op: "argmax", .. })));

    let x = Tensor::zeros([2, 3]);
    assert_eq!(x.sum(&[2], false).unwrap_err(), Error::Axis { op: "sum", axis: 2, rank: 2 });
    assert_eq!(x.max(&[-3], false).unwrap_err(), Error::Axis { op: "max", axis: -3, rank: 2 });
    assert_eq!(x.argmax(5, false).unwrap_err(), Error::Axis { op: "argmax", axis: 5, rank: 2 });
    assert_eq!(
        x.mean(&[1, -1], false).unwrap_err(),
        Error::DuplicateAxis { op: "mean", axis: 1, shape: [2, 3].into() }
    );
    assert_eq!(
        x.var(&[0, 0], false, 0).unwrap_err(),
        Error::DuplicateAxis { op: "var", axis: 0, shape: [2, 3].into() }
    );
    assert!(matches!(Tensor::zeros([1, 3]).var(&[0], false, 1), Err(Error::InvalidArgument { op: "var", .. })));
    let msg = x.sum(&[2], false).unwrap_err().to_string();
    assert_eq!(msg, "sum: axis 2 is out of range for a tensor of rank 2");
}

// ----- finiteness (the divergence guard's check) -----------------------------------------

proptest! {
    /// `all_finite` agrees with the scalar test for any length (8-lane chunks, 4,096-
    /// element early-exit blocks and the tail) and any position of one NaN or infinity,
    /// with the largest finite values and subnormals around it.
    #[test]
    fn all_finite_finds_any_non_finite_value(len in 0usize..10_000, pos in any::<prop::sample::Index>(), bad in 0usize..4, seed in 0u64..1000) {
        let mut rng = Rng::new(seed);
        let mut v: Vec<f32> = (0..len).map(|_| match rng.below(4) {
            0 => f32::MAX,
            1 => -f32::MIN_POSITIVE / 8.0,
            _ => rng.range(-1e3, 1e3),
        }).collect();
        if len > 0 && bad < 3 {
            v[pos.index(len)] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][bad];
        }
        let want = v.iter().all(|x| x.is_finite());
        prop_assert_eq!(fixpoint::cpu::simd::all_finite(&v), want);
        prop_assert_eq!(fixpoint::cpu::par::all_finite(&[&v[..len / 3], &v[len / 3..]]), want);
    }
}

#[test]
fn parallel_all_finite_over_many_slices_on_any_thread_count() {
    // 3 × 70,000 elements: past the parallel threshold, chunks of several slices.
    let mut rng = Rng::new(21);
    let base: Vec<Vec<f32>> = (0..3).map(|_| (0..70_000).map(|_| rng.range(-1.0, 1.0)).collect()).collect();
    for (slice, pos, bad) in
        [(None, 0, 0.0), (Some(0), 0, f32::NAN), (Some(1), 69_999, f32::INFINITY), (Some(2), 40_001, f32::NEG_INFINITY)]
    {
        let mut data = base.clone();
        if let Some(s) = slice {
            data[s][pos] = bad;
        }
        let slices: Vec<&[f32]> = data.iter().map(|d| &d[..]).collect();
        for threads in [1, 2, 3] {
            let got =
                fixpoint::cpu::par::with_threads(Some(threads), || fixpoint::cpu::par::all_finite(&slices)).unwrap();
            assert_eq!(got, slice.is_none(), "bad value in slice {slice:?} at {pos}, {threads} threads");
        }
    }
}

#[test]
fn the_guard_without_values_still_names_bad_gradients_and_explains_a_bad_loss() {
    use fixpoint::Error;
    use fixpoint::train::guard::check_step_with;
    let param = |name: &str, v: Vec<f32>, g: Vec<f32>| {
        let n = v.len();
        let t = Tensor::from_vec(v, [n]).unwrap().requires_grad_();
        t.set_grad(Some(Tensor::from_vec(g, [n]).unwrap())).unwrap();
        (name.to_string(), t)
    };
    let n = 70_000;
    let ones = vec![1.0f32; n];
    let mut nan_at = ones.clone();
    nan_at[n - 1] = f32::NAN;
    // A bad gradient is found whether or not the values are read.
    let bag = Bag(vec![param("a", ones.clone(), ones.clone()), param("b", ones.clone(), nan_at.clone())]);
    for values in [true, false] {
        match check_step_with(3, 0.5, &bag, values) {
            Err(Error::Diverged { step: 3, param: Some(p), .. }) => assert_eq!(p, "b (gradient)"),
            other => panic!("values={values}: expected Diverged at b, got {other:?}"),
        }
    }
    // A bad value: found when values are read; skipped (trusted) when not, unless the
    // loss is bad, in which case everything is scanned to name it.
    let bag = Bag(vec![param("a", ones.clone(), ones.clone()), param("b", nan_at, ones)]);
    assert!(
        matches!(check_step_with(4, 0.5, &bag, true), Err(Error::Diverged { param: Some(p), .. }) if p == "b (value)")
    );
    assert!(check_step_with(4, 0.5, &bag, false).is_ok());
    assert!(
        matches!(check_step_with(4, f32::NAN, &bag, false), Err(Error::Diverged { param: Some(p), .. }) if p == "b (value)")
    );
}

#[test]
fn the_guard_names_the_first_non_finite_value_or_gradient() {
    use fixpoint::train::guard::first_non_finite;
    let mut rng = Rng::new(22);
    // Bad entries as (parameter index, element index).
    let mut make = |bad_value: Option<(usize, usize)>, bad_grad: Option<(usize, usize)>| {
        let bag = Bag([("a", 100), ("b", 80_000), ("c", 70_000)]
            .iter()
            .enumerate()
            .map(|(i, &(name, len))| {
                let mut v: Vec<f32> = (0..len).map(|_| rng.range(-1.0, 1.0)).collect();
                let mut g: Vec<f32> = (0..len).map(|_| rng.range(-1.0, 1.0)).collect();
                if let Some((_, at)) = bad_value.filter(|b| b.0 == i) {
                    v[at] = f32::NAN;
                }
                if let Some((_, at)) = bad_grad.filter(|b| b.0 == i) {
                    g[at] = f32::INFINITY;
                }
                let t = Tensor::from_vec(v, [len]).unwrap().requires_grad_();
                t.set_grad(Some(Tensor::from_vec(g, [len]).unwrap())).unwrap();
                (name.to_string(), t)
            })
            .collect());
        first_non_finite(&bag)
    };
    assert_eq!(make(None, None), None);
    assert_eq!(make(Some((1, 79_999)), None), Some(("b".to_string(), "value")));
    assert_eq!(make(None, Some((2, 12_345))), Some(("c".to_string(), "gradient")));
    // In parameter order: a bad gradient of `b` comes before a bad value of `c`.
    assert_eq!(make(Some((2, 0)), Some((1, 3))), Some(("b".to_string(), "gradient")));
    assert_eq!(make(Some((0, 99)), None), Some(("a".to_string(), "value")));
}
