//! Views: reshape (inferred axis, copy of non-contiguous data), permute, transpose,
//! narrow, broadcast_to, squeeze / unsqueeze, contiguous. Values against multi-index
//! references, storage sharing through the layouts (O(1) views, no copies), gradients
//! against central differences, and the typed errors.

mod common;
use common::*;
use fixpoint::{Error, Rng, Tensor};
use proptest::prelude::*;

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for ax in (0..shape.len()).rev() {
        idx[ax] = flat % shape[ax];
        flat /= shape[ax];
    }
    idx
}

fn ravel(idx: &[usize], shape: &[usize]) -> usize {
    idx.iter().zip(shape).fold(0, |acc, (&i, &d)| acc * d + i)
}

fn values(n: usize, rng: &mut Rng) -> Vec<f32> {
    (0..n).map(|_| rng.range(-2.0, 2.0)).collect()
}

const GRAD_MAX_ELEMS: usize = 160;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn permute_and_transpose_match_reference(s in shape(4), perm_seed in 0u64..1000, view in view_kind(), seed in 0u64..1000) {
        let mut rng = Rng::new(seed);
        let r = s.len();
        let data = values(numel(&s), &mut rng);
        let x = make_view(&data, &s, view);
        let perm = Rng::new(perm_seed).permutation(r);
        let y = x.permute(&perm).unwrap();
        let ys: Vec<usize> = perm.iter().map(|&a| s[a]).collect();
        prop_assert_eq!(y.shape(), &ys[..]);
        let want: Vec<f64> = (0..numel(&ys)).map(|p| {
            let oi = unravel(p, &ys);
            let mut ii = vec![0; r];
            for (o, &a) in perm.iter().enumerate() { ii[a] = oi[o]; }
            data[ravel(&ii, &s)] as f64
        }).collect();
        assert_close("permute", &y.to_vec(), &want, 0.0, 0.0);
        // A view: same strides, permuted; same offset.
        let strides: Vec<usize> = perm.iter().map(|&a| x.layout().strides[a]).collect();
        prop_assert_eq!(&y.layout().strides, &strides);
        prop_assert_eq!(y.layout().offset, x.layout().offset);
        // transpose(a, b) is the permutation swapping a and b; negative axes count from the end.
        let (a, b) = (perm[0], perm[r - 1]);
        let t = x.transpose(a as isize - r as isize, b as isize).unwrap();
        let mut sw: Vec<usize> = (0..r).collect();
        sw.swap(a, b);
        prop_assert_eq!(t.to_vec(), x.permute(&sw).unwrap().to_vec());
        if numel(&s) <= GRAD_MAX_ELEMS {
            assert_grads("permute", |v| v[0].permute(&perm), std::slice::from_ref(&x));
            assert_grads("transpose", |v| v[0].transpose(a as isize, b as isize), std::slice::from_ref(&x));
        }
    }

    #[test]
    fn reshape_matches_reference(s in shape(3), view in view_kind(), split in 0usize..4, infer in any::<bool>(), seed in 0u64..1000) {
        let mut rng = Rng::new(seed);
        let n = numel(&s);
        let data = values(n, &mut rng);
        let x = make_view(&data, &s, view);
        // A target shape with the same count: [n] split as [d, n / d] for a divisor d.
        let divisors: Vec<usize> = (1..=n).filter(|d| n.is_multiple_of(*d)).collect();
        let d = divisors[split % divisors.len()];
        let target = vec![d, 1, n / d];
        let given = if infer { vec![d, 1, usize::MAX] } else { target.clone() };
        let y = x.reshape(&given).unwrap();
        prop_assert_eq!(y.shape(), &target[..]);
        // Row-major order is kept whatever the input's strides.
        assert_close("reshape", &y.to_vec(), &data.iter().map(|&v| v as f64).collect::<Vec<_>>(), 0.0, 0.0);
        // A copy when the input is strided, unless the shape did not change (then the view itself).
        prop_assert!(y.is_contiguous() || target == s);
        if x.is_contiguous() {
            prop_assert_eq!(y.layout().offset, x.layout().offset, "a contiguous reshape is a view");
        }
        if n <= GRAD_MAX_ELEMS {
            assert_grads("reshape", |v| v[0].reshape(&given), std::slice::from_ref(&x));
            assert_grads("reshape of transposed", |v| v[0].t()?.reshape(&[usize::MAX]), &[x.clone().reshape(&[n, 1]).unwrap()]);
        }
    }

    #[test]
    fn narrow_matches_reference(s in shape(4), axis_pick in 0usize..4, a in 0usize..20, b in 0usize..20, view in view_kind(), seed in 0u64..1000) {
        let mut rng = Rng::new(seed);
        let axis = axis_pick % s.len();
        let size = s[axis];
        let start = a % (size + 1);
        let len = b % (size - start + 1);
        let data = values(numel(&s), &mut rng);
        let x = make_view(&data, &s, view);
        let y = x.narrow(axis as isize, start, len).unwrap();
        let mut ys = s.clone();
        ys[axis] = len;
        prop_assert_eq!(y.shape(), &ys[..]);
        let want: Vec<f64> = (0..numel(&ys)).map(|p| {
            let mut idx = unravel(p, &ys);
            idx[axis] += start;
            data[ravel(&idx, &s)] as f64
        }).collect();
        assert_close("narrow", &y.to_vec(), &want, 0.0, 0.0);
        prop_assert_eq!(&y.layout().strides, &x.layout().strides, "narrow is a view");
        if numel(&s) <= GRAD_MAX_ELEMS {
            assert_grads("narrow", |v| v[0].narrow(axis as isize - s.len() as isize, start, len), std::slice::from_ref(&x));
        }
    }

    #[test]
    fn broadcast_to_matches_reference((full, small) in broadcastable_pair(4), view in view_kind(), seed in 0u64..1000) {
        let mut rng = Rng::new(seed);
        // Broadcast `small` up to the joint shape.
        let r = full.len();
        let target: Vec<usize> = (0..r).map(|i| {
            let sd = if i + small.len() >= r { small[i + small.len() - r] } else { 1 };
            full[i].max(sd)
        }).collect();
        let data = values(numel(&small), &mut rng);
        let x = make_view(&data, &small, view);
        let y = x.broadcast_to(&target).unwrap();
        prop_assert_eq!(y.shape(), &target[..]);
        let want: Vec<f64> = (0..numel(&target)).map(|p| data[broadcast_index(&target, &small, p)] as f64).collect();
        assert_close("broadcast_to", &y.to_vec(), &want, 0.0, 0.0);
        // Stretched and new axes have stride 0.
        for i in 0..r {
            let sd = if i + small.len() >= r { Some(small[i + small.len() - r]) } else { None };
            if target[i] > 1 && sd != Some(target[i]) {
                prop_assert_eq!(y.layout().strides[i], 0);
            }
        }
        if numel(&target) <= GRAD_MAX_ELEMS {
            assert_grads("broadcast_to", |v| v[0].broadcast_to(&target), std::slice::from_ref(&x));
        }
    }

    #[test]
    fn squeeze_unsqueeze_round_trip(s in shape(3), pos in 0usize..4, negative in any::<bool>(), view in view_kind(), seed in 0u64..1000) {
        let mut rng = Rng::new(seed);
        let r = s.len();
        let pos = pos % (r + 1);
        let data = values(numel(&s), &mut rng);
        let x = make_view(&data, &s, view);
        let given = if negative { pos as isize - (r as isize + 1) } else { pos as isize };
        let u = x.unsqueeze(given).unwrap();
        let mut us = s.clone();
        us.insert(pos, 1);
        prop_assert_eq!(u.shape(), &us[..]);
        prop_assert_eq!(u.to_vec(), data.clone());
        prop_assert_eq!(u.is_contiguous(), x.is_contiguous(), "no copy, same strides");
        let back = u.squeeze(if negative { pos as isize - (r as isize + 1) } else { pos as isize }).unwrap();
        prop_assert_eq!(back.shape(), &s[..]);
        prop_assert_eq!(back.to_vec(), data.clone());
        if numel(&s) <= GRAD_MAX_ELEMS {
            assert_grads("unsqueeze", |v| v[0].unsqueeze(given), std::slice::from_ref(&x));
            assert_grads("squeeze", |v| v[0].unsqueeze(given)?.mul_scalar(2.0).squeeze(pos as isize), std::slice::from_ref(&x));
        }
    }
}

#[test]
fn transpose_shares_storage_and_values_follow() {
    let x = Tensor::from_vec((0..6).map(|i| i as f32).collect(), [2, 3]).unwrap();
    let t = x.t().unwrap();
    assert!(x.is_contiguous());
    assert!(!t.is_contiguous(), "a transpose is a strided view, not a copy");
    assert_eq!(t.shape(), &[3, 2]);
    assert_eq!(t.layout().strides, vec![1, 3]);
    assert_eq!(t.to_vec(), vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    // Transposing back gives the original layout, so still the same storage.
    let tt = t.t().unwrap();
    assert!(tt.is_contiguous());
    assert_eq!(tt.layout(), x.layout());
    // contiguous() copies a strided view into row-major order and is a no-op otherwise.
    let c = t.contiguous();
    assert!(c.is_contiguous());
    assert_eq!(c.to_vec(), t.to_vec());
    assert_eq!(x.contiguous().layout(), x.layout());
    // A narrow is an offset into the same storage; reshaping a contiguous narrow is a view.
    let n = Tensor::arange(24).reshape(&[4, 6]).unwrap().narrow(0, 1, 2).unwrap();
    assert_eq!(n.layout().offset, 6);
    assert!(n.is_contiguous());
    let r = n.reshape(&[3, 4]).unwrap();
    assert_eq!(r.layout().offset, 6, "reshape of contiguous data is a view");
    assert_eq!(r.to_vec(), (6..18).map(|i| i as f32).collect::<Vec<_>>());
    // A narrow along the last axis is not contiguous; reshaping it copies.
    let n = Tensor::arange(12).reshape(&[3, 4]).unwrap().narrow(1, 1, 2).unwrap();
    assert!(!n.is_contiguous());
    let r = n.reshape(&[6]).unwrap();
    assert!(r.is_contiguous() && r.layout().offset == 0);
    assert_eq!(r.to_vec(), vec![1.0, 2.0, 5.0, 6.0, 9.0, 10.0]);
    // Updating a tensor whose storage is shared copies first: the view keeps its values.
    let mut base = Tensor::arange(4);
    let view = base.narrow(0, 1, 2).unwrap();
    base.update_data(|d| d.iter_mut().for_each(|v| *v += 10.0));
    assert_eq!(view.to_vec(), vec![1.0, 2.0]);
    assert_eq!(base.to_vec(), vec![10.0, 11.0, 12.0, 13.0]);
}

#[test]
fn chained_view_grads() {
    let mut rng = Rng::new(6);
    let x = rand_tensor(&[3, 4, 5], -1.0, 1.0, &mut rng);
    assert_grads(
        "permute, narrow, reshape (copy), broadcast, squeeze",
        |v| {
            let y = v[0].permute(&[2, 0, 1])?.narrow(0, 1, 3)?.reshape(&[3, 12])?;
            y.unsqueeze(0)?.broadcast_to(&[2, 3, 12])?.narrow(0, 1, 1)?.squeeze(0)?.mul(&y)
        },
        std::slice::from_ref(&x),
    );
    // The same leaf used twice through different views: both gradients accumulate.
    let sq = rand_tensor(&[4, 4], -1.0, 1.0, &mut rng);
    assert_grads("x + xᵀ", |v| v[0].add(&v[0].t()?), std::slice::from_ref(&sq));
    assert_grads("contiguous of transposed", |v| v[0].t()?.contiguous().mul(&v[0]), &[sq]);
    assert_grads("narrow twice", |v| v[0].narrow(1, 0, 2)?.mul(&v[0].narrow(1, 1, 2)?), &[x]);
}

#[test]
fn reshape_inference_and_errors() {
    let x = Tensor::zeros([2, 3, 4]);
    assert_eq!(x.reshape(&[usize::MAX, 4]).unwrap().shape(), &[6, 4]);
    assert_eq!(x.reshape(&[2, usize::MAX]).unwrap().shape(), &[2, 12]);
    assert_eq!(x.flatten_all().unwrap().shape(), &[24]);
    assert_eq!(Tensor::scalar(1.0).reshape(&[1, 1]).unwrap().shape(), &[1, 1]);
    assert_eq!(Tensor::zeros([0, 3]).reshape(&[3, 0]).unwrap().shape(), &[3, 0]);
    let e = x.reshape(&[5, 5]).unwrap_err();
    assert_eq!(e, Error::Reshape { from: [2, 3, 4].into(), to: [5, 5].into() });
    assert_eq!(e.to_string(), "reshape: 24 elements of [2, 3, 4] cannot become [5, 5] (25 elements)");
    assert!(matches!(x.reshape(&[5, usize::MAX]), Err(Error::Reshape { .. })));
    assert!(matches!(x.reshape(&[0, usize::MAX]), Err(Error::Reshape { .. })));
    assert!(matches!(x.reshape(&[usize::MAX, usize::MAX]), Err(Error::InvalidArgument { op: "reshape", .. })));
}

#[test]
fn view_errors() {
    let x = Tensor::zeros([2, 3, 4]);
    assert!(matches!(x.permute(&[0, 1]), Err(Error::InvalidArgument { op: "permute", .. })));
    assert_eq!(x.permute(&[0, 1, 3]).unwrap_err(), Error::Axis { op: "permute", axis: 3, rank: 3 });
    assert_eq!(
        x.permute(&[0, 1, 1]).unwrap_err(),
        Error::DuplicateAxis { op: "permute", axis: 1, shape: [2, 3, 4].into() }
    );
    assert_eq!(x.transpose(0, 3).unwrap_err(), Error::Axis { op: "transpose", axis: 3, rank: 3 });
    assert_eq!(Tensor::zeros([3]).t().unwrap_err(), Error::Axis { op: "transpose", axis: -2, rank: 1 });
    assert_eq!(
        x.narrow(1, 2, 2).unwrap_err(),
        Error::Index { op: "narrow", axis: 1, index: 4, size: 3, shape: [2, 3, 4].into() }
    );
    assert!(matches!(x.narrow(1, usize::MAX, 2), Err(Error::Index { op: "narrow", .. })));
    assert_eq!(x.narrow(-4, 0, 1).unwrap_err(), Error::Axis { op: "narrow", axis: -4, rank: 3 });
    assert_eq!(x.narrow(2, 4, 0).unwrap().shape(), &[2, 3, 0]);
    assert_eq!(
        x.broadcast_to(&[2, 5, 4]).unwrap_err(),
        Error::Broadcast {
            op: "broadcast_to",
            lhs: [2, 3, 4].into(),
            rhs: [2, 5, 4].into(),
            axis: 1,
            lhs_size: 3,
            rhs_size: 5
        }
    );
    assert!(matches!(x.broadcast_to(&[3, 4]), Err(Error::InvalidArgument { op: "broadcast_to", .. })));
    assert!(matches!(x.squeeze(0), Err(Error::InvalidArgument { op: "squeeze", .. })));
    assert_eq!(x.squeeze(3).unwrap_err(), Error::Axis { op: "squeeze", axis: 3, rank: 3 });
    assert_eq!(x.unsqueeze(4).unwrap_err(), Error::Axis { op: "unsqueeze", axis: 4, rank: 4 });
    assert_eq!(x.unsqueeze(-5).unwrap_err(), Error::Axis { op: "unsqueeze", axis: -5, rank: 4 });
}

#[test]
fn large_copies_and_narrow_gradients_are_exact_on_any_thread_count() {
    // Past the parallel threshold (65,536 elements): copies of permuted views (rows of
    // adjacent elements and fully strided ones) and narrow's gradient scatter, against
    // multi-index references, bit for bit at 1 and 2 threads.
    let mut rng = Rng::new(31);
    let shape = [40usize, 3, 700];
    let data = values(numel(&shape), &mut rng);
    let x = Tensor::from_slice(&data, shape).unwrap();
    let threads = |f: &(dyn Fn() -> Vec<f32> + Sync)| {
        let one = fixpoint::cpu::par::with_threads(Some(1), f).unwrap();
        let two = fixpoint::cpu::par::with_threads(Some(2), f).unwrap();
        assert!(one == two, "1 and 2 threads differ");
        one
    };
    for perm in [[1usize, 0, 2], [2, 0, 1], [0, 2, 1]] {
        let out_shape: Vec<usize> = perm.iter().map(|&a| shape[a]).collect();
        let got = threads(&|| x.permute(&perm).unwrap().contiguous().to_vec());
        for (flat, &g) in got.iter().enumerate() {
            let o = unravel(flat, &out_shape);
            let mut i = [0usize; 3];
            for (k, &a) in perm.iter().enumerate() {
                i[a] = o[k];
            }
            assert_eq!(g, data[ravel(&i, &shape)], "permute {perm:?} element {flat}");
        }
    }
    // narrow along each axis: the gradient of Σ narrow(x) ⊙ r is r in the slice, 0 elsewhere.
    for (axis, start, len) in [(0usize, 5usize, 30usize), (1, 1, 1), (2, 250, 400)] {
        let mut ns = shape;
        ns[axis] = len;
        let r = values(numel(&ns), &mut rng);
        let got = threads(&|| {
            let leaf = x.detach().requires_grad_();
            let rt = Tensor::from_slice(&r, ns).unwrap();
            leaf.narrow(axis as isize, start, len).unwrap().mul(&rt).unwrap().sum_all().backward().unwrap();
            leaf.grad().unwrap().to_vec()
        });
        for (flat, &g) in got.iter().enumerate() {
            let mut i = unravel(flat, &shape);
            let want = if (start..start + len).contains(&i[axis]) {
                i[axis] -= start;
                r[ravel(&i, &ns)]
            } else {
                0.0
            };
            assert_eq!(g, want, "narrow axis {axis} element {flat}");
        }
    }
}
