//! Indexing and joining ops (concat, stack, index_select, gather, embedding, shift,
//! where_, masked_fill, causal_mask): forward against references computed here by
//! explicit multi-index arithmetic in f64, backward against central differences, on
//! random shapes (odd sizes, size-1 axes), strided views and repeated indices.

mod common;
use common::*;
use fixpoint::{Error, Rng, Tensor};
use proptest::prelude::*;

/// Row-major multi-index of `flat` in `shape`.
fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for ax in (0..shape.len()).rev() {
        idx[ax] = flat % shape[ax];
        flat /= shape[ax];
    }
    idx
}

/// Row-major flat position of `idx` in `shape`.
fn ravel(idx: &[usize], shape: &[usize]) -> usize {
    idx.iter().zip(shape).fold(0, |acc, (&i, &d)| acc * d + i)
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

fn values(n: usize, rng: &mut Rng) -> Vec<f32> {
    (0..n).map(|_| rng.range(-2.0, 2.0)).collect()
}

/// Gradient checks cost two forward passes per input element: only on small inputs.
const GRAD_MAX_ELEMS: usize = 160;

fn refs(v: &[Tensor]) -> Vec<&Tensor> {
    v.iter().collect()
}

// ----- concat / stack ----------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn concat_matches_reference(
        base in shape(3),
        axis_pick in 0usize..3,
        sizes in proptest::collection::vec(prop_oneof![Just(0usize), Just(1), Just(2), Just(7), Just(9)], 1..4),
        views in proptest::collection::vec(view_kind(), 3),
        negative in any::<bool>(),
        seed in 0u64..1000,
    ) {
        let mut rng = Rng::new(seed);
        let r = base.len();
        let axis = axis_pick % r;
        let shapes: Vec<Vec<usize>> = sizes.iter().map(|&s| { let mut d = base.clone(); d[axis] = s; d }).collect();
        let datas: Vec<Vec<f32>> = shapes.iter().map(|s| values(numel(s), &mut rng)).collect();
        let ts: Vec<Tensor> = shapes.iter().zip(&datas).zip(&views).map(|((s, d), &v)| make_view(d, s, v)).collect();
        let ax = if negative { axis as isize - r as isize } else { axis as isize };
        let out = Tensor::concat(&refs(&ts), ax).unwrap();
        let mut want_shape = base.clone();
        want_shape[axis] = sizes.iter().sum();
        prop_assert_eq!(out.shape(), &want_shape[..]);
        let want: Vec<f64> = (0..numel(&want_shape)).map(|p| {
            let mut idx = unravel(p, &want_shape);
            let mut k = 0;
            while idx[axis] >= sizes[k] { idx[axis] -= sizes[k]; k += 1; }
            datas[k][ravel(&idx, &shapes[k])] as f64
        }).collect();
        assert_close("concat", &out.to_vec(), &want, 0.0, 0.0);
        if shapes.iter().map(|s| numel(s)).sum::<usize>() <= GRAD_MAX_ELEMS {
            assert_grads("concat", |v| Tensor::concat(&refs(v), ax), &ts);
        }
    }

    #[test]
    fn stack_matches_reference(
        s in shape(3),
        axis_pick in 0usize..4,
        n in 1usize..4,
        views in proptest::collection::vec(view_kind(), 3),
        seed in 0u64..1000,
    ) {
        let mut rng = Rng::new(seed);
        let r = s.len();
        let axis = axis_pick % (r + 1);
        let datas: Vec<Vec<f32>> = (0..n).map(|_| values(numel(&s), &mut rng)).collect();
        let ts: Vec<Tensor> = datas.iter().zip(&views).map(|(d, &v)| make_view(d, &s, v)).collect();
        let out = Tensor::stack(&refs(&ts), axis as isize).unwrap();
        let mut want_shape = s.clone();
        want_shape.insert(axis, n);
        prop_assert_eq!(out.shape(), &want_shape[..]);
        let want: Vec<f64> = (0..numel(&want_shape)).map(|p| {
            let mut idx = unravel(p, &want_shape);
            let k = idx.remove(axis);
            datas[k][ravel(&idx, &s)] as f64
        }).collect();
        assert_close("stack", &out.to_vec(), &want, 0.0, 0.0);
        // Negative axis counts in the output's rank.
        let neg = Tensor::stack(&refs(&ts), axis as isize - (r as isize + 1)).unwrap();
        prop_assert_eq!(neg.to_vec(), out.to_vec());
        if n * numel(&s) <= GRAD_MAX_ELEMS {
            assert_grads("stack", |v| Tensor::stack(&refs(v), axis as isize), &ts);
        }
    }
}

#[test]
fn concat_and_stack_grads_through_views() {
    let mut rng = Rng::new(3);
    let a = rand_tensor(&[3, 4], -1.0, 1.0, &mut rng);
    let b = rand_tensor(&[4, 2], -1.0, 1.0, &mut rng);
    // aᵀ is [4, 3] (strided) joined with b [4, 2] along the last axis.
    assert_grads("concat of transposed", |v| Tensor::concat(&[&v[0].t()?, &v[1]], -1), &[a.clone(), b.clone()]);
    // The same tensor twice: both halves of the gradient reach it.
    assert_grads("concat of self", |v| Tensor::concat(&[&v[0], &v[0].narrow(0, 1, 2)?], 0), std::slice::from_ref(&a));
    assert_grads("stack of narrowed", |v| Tensor::stack(&[&v[0].narrow(1, 0, 2)?, &v[1]], 1), &[a.t().unwrap(), b]);
}

#[test]
fn concat_and_stack_errors() {
    let a = Tensor::zeros([2, 3]);
    let b = Tensor::zeros([2, 4]);
    let c = Tensor::zeros([2, 3, 1]);
    let e = Tensor::concat(&[&a, &b], 0).unwrap_err();
    assert_eq!(e, Error::Join { op: "concat", axis: 0, lhs: [2, 3].into(), rhs: [2, 4].into() });
    assert_eq!(e.to_string(), "concat along axis 0: cannot join shape [2, 3] with shape [2, 4]");
    assert!(Tensor::concat(&[&a, &b], 1).is_ok());
    assert_eq!(
        Tensor::concat(&[&a, &c], 1).unwrap_err(),
        Error::Join { op: "concat", axis: 1, lhs: [2, 3].into(), rhs: [2, 3, 1].into() }
    );
    assert_eq!(Tensor::concat(&[&a, &b], 2).unwrap_err(), Error::Axis { op: "concat", axis: 2, rank: 2 });
    assert!(matches!(Tensor::concat(&[], 0), Err(Error::InvalidArgument { op: "concat", .. })));
    assert!(matches!(Tensor::stack(&[], 0), Err(Error::InvalidArgument { op: "stack", .. })));
    assert_eq!(
        Tensor::stack(&[&a, &a, &b], -1).unwrap_err(),
        Error::Join { op: "stack", axis: 2, lhs: [2, 3].into(), rhs: [2, 4].into() }
    );
    assert_eq!(Tensor::stack(&[&a], 3).unwrap_err(), Error::Axis { op: "stack", axis: 3, rank: 3 });
    assert_eq!(Tensor::concat(&[&Tensor::scalar(1.0)], 0).unwrap_err(), Error::Axis { op: "concat", axis: 0, rank: 0 });
    // Stacking scalars is fine.
    let s = Tensor::stack(&[&Tensor::scalar(1.0), &Tensor::scalar(2.0)], 0).unwrap();
    assert_eq!((s.shape().to_vec(), s.to_vec()), (vec![2], vec![1.0, 2.0]));
}

// ----- index_select / gather / embedding -----------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn index_select_matches_reference(
        s in shape(3),
        axis_pick in 0usize..3,
        picks in proptest::collection::vec(0usize..1000, 0..9),
        view in view_kind(),
        seed in 0u64..1000,
    ) {
        let mut rng = Rng::new(seed);
        let axis = axis_pick % s.len();
        let indices: Vec<usize> = picks.iter().map(|p| p % s[axis]).collect();
        let data = values(numel(&s), &mut rng);
        let x = make_view(&data, &s, view);
        let out = x.index_select(axis as isize - s.len() as isize, &indices).unwrap();
        let mut want_shape = s.clone();
        want_shape[axis] = indices.len();
        prop_assert_eq!(out.shape(), &want_shape[..]);
        let want: Vec<f64> = (0..numel(&want_shape)).map(|p| {
            let mut idx = unravel(p, &want_shape);
            idx[axis] = indices[idx[axis]];
            data[ravel(&idx, &s)] as f64
        }).collect();
        assert_close("index_select", &out.to_vec(), &want, 0.0, 0.0);
        if numel(&s) <= GRAD_MAX_ELEMS {
            assert_grads("index_select", |v| v[0].index_select(axis as isize, &indices), std::slice::from_ref(&x));
        }
    }

    #[test]
    fn gather_matches_reference(
        s in shape(3),
        axis_pick in 0usize..3,
        fracs in proptest::collection::vec(0.0f64..1.0, 3),
        along in 0usize..6,
        picks in proptest::collection::vec(0usize..1000, 1..200),
        view in view_kind(),
        seed in 0u64..1000,
    ) {
        let mut rng = Rng::new(seed);
        let axis = axis_pick % s.len();
        // Index shape: any size along `axis`, at most the input's size elsewhere.
        let ishape: Vec<usize> = s.iter().enumerate().map(|(d, &n)| {
            if d == axis { along } else { 1 + (fracs[d] * n as f64) as usize % n }
        }).collect();
        let index: Vec<usize> = (0..numel(&ishape)).map(|i| picks[i % picks.len()] % s[axis]).collect();
        let data = values(numel(&s), &mut rng);
        let x = make_view(&data, &s, view);
        let out = x.gather(axis as isize, &index, &ishape).unwrap();
        prop_assert_eq!(out.shape(), &ishape[..]);
        let want: Vec<f64> = (0..numel(&ishape)).map(|p| {
            let mut idx = unravel(p, &ishape);
            idx[axis] = index[p];
            data[ravel(&idx, &s)] as f64
        }).collect();
        assert_close("gather", &out.to_vec(), &want, 0.0, 0.0);
        if numel(&s) <= GRAD_MAX_ELEMS {
            assert_grads("gather", |v| v[0].gather(axis as isize - s.len() as isize, &index, &ishape), std::slice::from_ref(&x));
        }
    }

    #[test]
    fn embedding_matches_reference(
        vocab in odd_size(),
        dim in big_odd_size(),
        ids_shape in proptest::collection::vec(odd_size(), 1..3),
        picks in proptest::collection::vec(0usize..1000, 1..40),
        transposed in any::<bool>(),
        seed in 0u64..1000,
    ) {
        let mut rng = Rng::new(seed);
        let ids: Vec<usize> = (0..numel(&ids_shape)).map(|i| picks[i % picks.len()] % vocab).collect();
        let data = values(vocab * dim, &mut rng);
        let w = if transposed {
            make_view(&data, &[vocab, dim], View::Transposed)
        } else {
            make_view(&data, &[vocab, dim], View::Narrowed)
        };
        let out = w.embedding(&ids, &ids_shape).unwrap();
        let want_shape: Vec<usize> = ids_shape.iter().copied().chain([dim]).collect();
        prop_assert_eq!(out.shape(), &want_shape[..]);
        let want: Vec<f64> = (0..numel(&want_shape)).map(|p| data[ids[p / dim] * dim + p % dim] as f64).collect();
        assert_close("embedding", &out.to_vec(), &want, 0.0, 0.0);
        if vocab * dim <= GRAD_MAX_ELEMS {
            assert_grads("embedding", |v| v[0].embedding(&ids, &ids_shape), std::slice::from_ref(&w));
        }
    }
}

#[test]
fn repeated_indices_accumulate_gradients() {
    let mut rng = Rng::new(11);
    // index_select: row 0 picked three times, row 2 once, row 1 never.
    let x = rand_tensor(&[3, 2], -1.0, 1.0, &mut rng).requires_grad_();
    x.index_select(0, &[0, 0, 2, 0]).unwrap().sum_all().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec(), vec![3.0, 3.0, 0.0, 0.0, 1.0, 1.0]);
    // embedding with weights on the output: each row gets the sum of its weights.
    let w = rand_tensor(&[4, 3], -1.0, 1.0, &mut rng).requires_grad_();
    let ids = [1, 3, 1, 1, 0, 3];
    let out = w.embedding(&ids, &[2, 3]).unwrap();
    let seed: Vec<f32> = (0..18).map(|i| i as f32).collect();
    out.backward_with(&Tensor::from_vec(seed.clone(), [2, 3, 3]).unwrap()).unwrap();
    let mut want = vec![0.0f64; 12];
    for (p, &id) in ids.iter().enumerate() {
        for d in 0..3 {
            want[id * 3 + d] += seed[p * 3 + d] as f64;
        }
    }
    assert_close("embedding grad", &w.grad().unwrap().to_vec(), &want, 0.0, 0.0);
    // gather: the same element picked from several positions.
    let g = rand_tensor(&[2, 3], -1.0, 1.0, &mut rng).requires_grad_();
    g.gather(1, &[2, 2, 2, 2, 0, 1, 0, 0], &[2, 4]).unwrap().sum_all().backward().unwrap();
    assert_eq!(g.grad().unwrap().to_vec(), vec![0.0, 0.0, 4.0, 3.0, 1.0, 0.0]);
    assert_grads(
        "index_select repeats",
        |v| v[0].index_select(1, &[1, 1, 0, 1]),
        &[rand_tensor(&[3, 2], -1.0, 1.0, &mut rng)],
    );
}

#[test]
fn index_errors() {
    let x = Tensor::zeros([3, 4]);
    let e = x.index_select(1, &[0, 4]).unwrap_err();
    assert_eq!(e, Error::Index { op: "index_select", axis: 1, index: 4, size: 4, shape: [3, 4].into() });
    assert_eq!(x.index_select(2, &[0]).unwrap_err(), Error::Axis { op: "index_select", axis: 2, rank: 2 });
    assert_eq!(x.index_select(0, &[]).unwrap().shape(), &[0, 4]);

    let w = Tensor::zeros([5, 2]);
    let e = w.embedding(&[0, 7, 1], &[3]).unwrap_err();
    assert_eq!(e, Error::Index { op: "embedding", axis: 0, index: 7, size: 5, shape: [5, 2].into() });
    let msg = e.to_string();
    assert!(msg.contains("embedding") && msg.contains("index 7") && msg.contains("size 5"), "{msg}");
    assert_eq!(
        w.embedding(&[0, 1, 2], &[2, 2]).unwrap_err(),
        Error::DataLength { op: "embedding", len: 3, shape: [2, 2].into() }
    );
    assert!(matches!(Tensor::zeros([5]).embedding(&[0], &[1]), Err(Error::InvalidArgument { op: "embedding", .. })));

    assert_eq!(
        x.gather(1, &[0, 1, 2], &[3]).unwrap_err(),
        Error::ShapeMismatch { op: "gather", lhs: [3, 4].into(), rhs: [3].into() }
    );
    // Larger than the input off the gather axis.
    assert_eq!(
        x.gather(1, &[0; 8], &[4, 2]).unwrap_err(),
        Error::ShapeMismatch { op: "gather", lhs: [3, 4].into(), rhs: [4, 2].into() }
    );
    assert_eq!(
        x.gather(0, &[0, 1, 3], &[1, 3]).unwrap_err(),
        Error::Index { op: "gather", axis: 0, index: 3, size: 3, shape: [3, 4].into() }
    );
    assert_eq!(
        x.gather(0, &[0], &[1, 2]).unwrap_err(),
        Error::DataLength { op: "gather", len: 1, shape: [1, 2].into() }
    );
    assert_eq!(x.gather(-3, &[0], &[1, 1]).unwrap_err(), Error::Axis { op: "gather", axis: -3, rank: 2 });
}

// ----- shift ---------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn shift_matches_reference(
        s in shape(3),
        axis_pick in 0usize..3,
        k_pick in -20isize..20,
        view in view_kind(),
        seed in 0u64..1000,
    ) {
        let mut rng = Rng::new(seed);
        let axis = axis_pick % s.len();
        let n = s[axis] as isize;
        let k = k_pick.clamp(-n - 1, n + 1);
        let data = values(numel(&s), &mut rng);
        let x = make_view(&data, &s, view);
        let out = x.shift(axis as isize, k).unwrap();
        prop_assert_eq!(out.shape(), &s[..]);
        let want: Vec<f64> = (0..numel(&s)).map(|p| {
            let mut idx = unravel(p, &s);
            let src = idx[axis] as isize - k;
            if (0..n).contains(&src) { idx[axis] = src as usize; data[ravel(&idx, &s)] as f64 } else { 0.0 }
        }).collect();
        assert_close("shift", &out.to_vec(), &want, 0.0, 0.0);
        if numel(&s) <= GRAD_MAX_ELEMS {
            assert_grads("shift", |v| v[0].shift(axis as isize - s.len() as isize, k), std::slice::from_ref(&x));
        }
    }
}

#[test]
fn shift_previous_token_and_extremes() {
    // [B=1, T=3, D=2]: shift(1) along time gives each step the previous token, zeros first.
    let x = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [1, 3, 2]).unwrap();
    assert_eq!(x.shift(1, 1).unwrap().to_vec(), vec![0.0, 0.0, 1.0, 2.0, 3.0, 4.0]);
    assert_eq!(x.shift(1, -1).unwrap().to_vec(), vec![3.0, 4.0, 5.0, 6.0, 0.0, 0.0]);
    assert_eq!(x.shift(-1, 1).unwrap().to_vec(), vec![0.0, 1.0, 0.0, 3.0, 0.0, 5.0]);
    assert_eq!(x.shift(1, 0).unwrap().to_vec(), x.to_vec());
    for k in [isize::MIN, isize::MAX, 3, -3] {
        let x = x.clone().requires_grad_();
        let y = x.shift(1, k).unwrap();
        assert_eq!(y.to_vec(), vec![0.0; 6], "k = {k}");
        y.sum_all().backward().unwrap();
        assert_eq!(x.grad().unwrap().to_vec(), vec![0.0; 6], "k = {k}");
    }
    assert_eq!(x.shift(3, 1).unwrap_err(), Error::Axis { op: "shift", axis: 3, rank: 3 });
}

// ----- where_ / masked_fill / causal_mask -----------------------------------------------------

/// Three shapes that broadcast together: each drops some leading axes of a full shape
/// and sets some axes to 1.
fn broadcast_triple(max_rank: usize) -> impl Strategy<Value = [Vec<usize>; 3]> {
    shape(max_rank).prop_flat_map(|full| {
        let r = full.len();
        let spec = (0..=r, proptest::collection::vec(any::<bool>(), r));
        (Just(full), [spec.clone(), spec.clone(), spec]).prop_map(|(full, specs)| {
            specs.map(|(drop, ones)| {
                full.iter().enumerate().skip(drop).map(|(i, &d)| if ones[i] { 1 } else { d }).collect()
            })
        })
    })
}

/// NumPy broadcast of several shapes, computed here independently of the crate.
fn broadcast_all(shapes: &[&[usize]]) -> Vec<usize> {
    let r = shapes.iter().map(|s| s.len()).max().unwrap();
    (0..r)
        .map(|i| shapes.iter().map(|s| if i + s.len() >= r { s[i + s.len() - r] } else { 1 }).max().unwrap())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn where_matches_reference(
        [sc, sa, sb] in broadcast_triple(3),
        va in view_kind(),
        vb in view_kind(),
        vc in view_kind(),
        seed in 0u64..1000,
    ) {
        let mut rng = Rng::new(seed);
        let dc: Vec<f32> = (0..numel(&sc)).map(|_| if rng.bernoulli(0.5) { 1.0 } else { 0.0 }).collect();
        let da = values(numel(&sa), &mut rng);
        let db = values(numel(&sb), &mut rng);
        let (c, a, b) = (make_view(&dc, &sc, vc), make_view(&da, &sa, va), make_view(&db, &sb, vb));
        let out = Tensor::where_(&c, &a, &b).unwrap();
        let os = broadcast_all(&[&sc, &sa, &sb]);
        prop_assert_eq!(out.shape(), &os[..]);
        let want: Vec<f64> = (0..numel(&os)).map(|p| {
            if dc[broadcast_index(&os, &sc, p)] != 0.0 { da[broadcast_index(&os, &sa, p)] as f64 } else { db[broadcast_index(&os, &sb, p)] as f64 }
        }).collect();
        assert_close("where", &out.to_vec(), &want, 0.0, 0.0);
        if numel(&sa) + numel(&sb) <= GRAD_MAX_ELEMS {
            assert_grads("where", |v| Tensor::where_(&c, &v[0], &v[1]), &[a.clone(), b.clone()]);
        }
    }

    #[test]
    fn masked_fill_matches_reference(
        (s, sm) in broadcastable_pair(3),
        vx in view_kind(),
        vm in view_kind(),
        value in prop_oneof![Just(f32::NEG_INFINITY), Just(0.0f32), Just(-1e9f32), Just(3.5f32)],
        seed in 0u64..1000,
    ) {
        // The mask must broadcast to `s` itself: force s to the full shape.
        let s = broadcast_all(&[&s, &sm]);
        let mut rng = Rng::new(seed);
        let dm: Vec<f32> = (0..numel(&sm)).map(|_| if rng.bernoulli(0.4) { 1.0 } else { 0.0 }).collect();
        let dx = values(numel(&s), &mut rng);
        let (x, m) = (make_view(&dx, &s, vx), make_view(&dm, &sm, vm));
        let out = x.masked_fill(&m, value).unwrap();
        prop_assert_eq!(out.shape(), &s[..]);
        let want: Vec<f64> = (0..numel(&s)).map(|p| {
            if dm[broadcast_index(&s, &sm, p)] != 0.0 { value as f64 } else { dx[p] as f64 }
        }).collect();
        assert_close("masked_fill", &out.to_vec(), &want, 0.0, 0.0);
        if numel(&s) <= GRAD_MAX_ELEMS && value.is_finite() {
            assert_grads("masked_fill", |v| v[0].masked_fill(&m, value), std::slice::from_ref(&x));
        }
    }
}

#[test]
fn where_gradients_skip_cond_and_unpicked_side() {
    let mut rng = Rng::new(21);
    let cond = Tensor::from_vec(vec![1.0, 0.0, 1.0], [3]).unwrap().requires_grad_();
    let a = rand_tensor(&[2, 3], -1.0, 1.0, &mut rng).requires_grad_();
    let b = Tensor::from_vec(vec![f32::INFINITY], [1]).unwrap().requires_grad_();
    let y = Tensor::where_(&cond, &a, &b).unwrap();
    assert_eq!(y.to_vec()[1], f32::INFINITY);
    y.sum_all().backward().unwrap();
    assert!(cond.grad().is_none(), "the condition gets no gradient");
    assert_eq!(a.grad().unwrap().to_vec(), vec![1.0, 0.0, 1.0, 1.0, 0.0, 1.0]);
    assert_eq!(b.grad().unwrap().to_vec(), vec![2.0]);
    // A -inf fill (attention) gives finite gradients to the kept scores.
    let x = rand_tensor(&[3, 3], -1.0, 1.0, &mut rng).requires_grad_();
    let keep = Tensor::causal_mask(3);
    let filled = Tensor::where_(&keep, &x, &Tensor::scalar(f32::NEG_INFINITY)).unwrap();
    filled.logsumexp(&[-1], false).unwrap().sum_all().backward().unwrap();
    let g = x.grad().unwrap().to_vec();
    assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
    assert_eq!([g[1], g[2], g[5]], [0.0; 3]);
}

#[test]
fn causal_mask_values_and_use() {
    for t in [0usize, 1, 2, 7, 9] {
        let m = Tensor::causal_mask(t);
        assert_eq!(m.shape(), &[t, t]);
        let want: Vec<f64> = (0..t * t).map(|p| if p % t <= p / t { 1.0 } else { 0.0 }).collect();
        assert_close("causal_mask", &m.to_vec(), &want, 0.0, 0.0);
    }
    // Masked scores of a [B, T, T] batch: future keys become -inf.
    let mut rng = Rng::new(8);
    let scores = rand_tensor(&[2, 4, 4], -1.0, 1.0, &mut rng);
    let future = Tensor::causal_mask(4).rsub_scalar(1.0);
    let masked = scores.masked_fill(&future, f32::NEG_INFINITY).unwrap().to_vec();
    let orig = scores.to_vec();
    for (p, (&m, &o)) in masked.iter().zip(&orig).enumerate() {
        let (i, j) = ((p / 4) % 4, p % 4);
        assert_eq!(m, if j > i { f32::NEG_INFINITY } else { o }, "position {p}");
    }
}

#[test]
fn where_and_masked_fill_errors() {
    let (a, b, c) = (Tensor::zeros([2, 3]), Tensor::zeros([4, 3]), Tensor::zeros([3]));
    assert_eq!(
        Tensor::where_(&c, &a, &b).unwrap_err(),
        Error::Broadcast { op: "where", lhs: [2, 3].into(), rhs: [4, 3].into(), axis: 0, lhs_size: 2, rhs_size: 4 }
    );
    assert!(matches!(Tensor::where_(&Tensor::zeros([2]), &a, &c), Err(Error::Broadcast { op: "where", .. })));
    // The mask broadcasts to the tensor, not the other way round.
    assert!(matches!(c.masked_fill(&a, 0.0), Err(Error::InvalidArgument { op: "masked_fill", .. })));
    assert_eq!(
        a.masked_fill(&b, 0.0).unwrap_err(),
        Error::Broadcast {
            op: "masked_fill",
            lhs: [4, 3].into(),
            rhs: [2, 3].into(),
            axis: 0,
            lhs_size: 4,
            rhs_size: 2
        }
    );
}

#[test]
fn large_tensors_with_pooled_buffers() {
    // Outputs above the buffer pool's threshold reuse stale buffers: every element must
    // be written. Run twice so the second round gets recycled buffers.
    let mut rng = Rng::new(30);
    for _ in 0..2 {
        let (s, t) = ([130usize, 150], [70usize, 150]);
        let (da, db) = (values(numel(&s), &mut rng), values(numel(&t), &mut rng));
        let (a, b) = (Tensor::from_slice(&da, s).unwrap(), Tensor::from_slice(&db, t).unwrap());
        let c = Tensor::concat(&[&a, &b], 0).unwrap();
        let want: Vec<f64> = da.iter().chain(&db).map(|&v| v as f64).collect();
        assert_close("large concat", &c.to_vec(), &want, 0.0, 0.0);
        let idx: Vec<usize> = (0..200).map(|_| rng.below(130)).collect();
        let sel = a.index_select(0, &idx).unwrap();
        let want: Vec<f64> = (0..200 * 150).map(|p| da[idx[p / 150] * 150 + p % 150] as f64).collect();
        assert_close("large index_select", &sel.to_vec(), &want, 0.0, 0.0);
        let emb = a.embedding(&idx, &[20, 10]).unwrap();
        assert_close("large embedding", &emb.to_vec(), &want, 0.0, 0.0);
        let cond: Vec<f32> = (0..150).map(|_| if rng.bernoulli(0.5) { 1.0 } else { 0.0 }).collect();
        let ct = Tensor::from_slice(&cond, [150]).unwrap();
        let w = Tensor::where_(&ct, &a, &Tensor::scalar(-7.0)).unwrap();
        let want: Vec<f64> = (0..130 * 150).map(|p| if cond[p % 150] != 0.0 { da[p] as f64 } else { -7.0 }).collect();
        assert_close("large where", &w.to_vec(), &want, 0.0, 0.0);
        let sh = a.shift(0, 3).unwrap();
        let want: Vec<f64> = (0..130 * 150).map(|p| if p / 150 >= 3 { da[p - 450] as f64 } else { 0.0 }).collect();
        assert_close("large shift", &sh.to_vec(), &want, 0.0, 0.0);
        // Scatter-add into a large zero buffer.
        let wl = a.clone().requires_grad_();
        wl.embedding(&idx, &[200]).unwrap().sum_all().backward().unwrap();
        let mut counts = vec![0.0f64; 130];
        for &i in &idx {
            counts[i] += 1.0;
        }
        let want: Vec<f64> = (0..130 * 150).map(|p| counts[p / 150]).collect();
        assert_close("large embedding grad", &wl.grad().unwrap().to_vec(), &want, 0.0, 0.0);
    }
}
