//! Matrix products: 2-D, batched and broadcast batches, transposed / narrowed (strided)
//! operands, odd sizes (1, 7, 63, 65), against a naive f64 matmul; gradients against
//! central differences, including a weight broadcast over the batch and a loss that sums
//! the product (a zero-stride gradient); errors naming both shapes.

mod common;
use common::*;
use fixpoint::{Error, Rng, Tensor};
use proptest::prelude::*;

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

fn broadcast2(a: &[usize], b: &[usize]) -> Vec<usize> {
    let r = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| if i + s.len() >= r { s[i + s.len() - r] } else { 1 };
    (0..r).map(|i| dim(a, i).max(dim(b, i))).collect()
}

/// Naive f64 product of row-major `a` (`sa`) and `b` (`sb`) with NumPy batch broadcasting.
/// Returns the shape, the values and the per-element `Σ|a·b|` (for the error bound).
fn ref_matmul(a: &[f32], sa: &[usize], b: &[f32], sb: &[usize]) -> (Vec<usize>, Vec<f64>, Vec<f64>) {
    let (ra, rb) = (sa.len(), sb.len());
    let (m, k, n) = (sa[ra - 2], sa[ra - 1], sb[rb - 1]);
    assert_eq!(sb[rb - 2], k);
    let (ba, bb) = (&sa[..ra - 2], &sb[..rb - 2]);
    let batch = broadcast2(ba, bb);
    let mut vals = Vec::new();
    let mut abs = Vec::new();
    for bi in 0..numel(&batch) {
        let (ia, ib) = (broadcast_index(&batch, ba, bi), broadcast_index(&batch, bb, bi));
        for i in 0..m {
            for j in 0..n {
                let (mut s, mut t) = (0.0f64, 0.0f64);
                for p in 0..k {
                    let prod = a[ia * m * k + i * k + p] as f64 * b[ib * k * n + p * n + j] as f64;
                    s += prod;
                    t += prod.abs();
                }
                vals.push(s);
                abs.push(t);
            }
        }
    }
    (batch.into_iter().chain([m, n]).collect(), vals, abs)
}

/// f32 dot products of length k are within about `k·eps·Σ|a·b|` of the exact value.
fn check_product(what: &str, got: &Tensor, a: &[f32], sa: &[usize], b: &[f32], sb: &[usize]) {
    let (shape, want, abs) = ref_matmul(a, sa, b, sb);
    assert_eq!(got.shape(), &shape[..], "{what}: shape");
    let k = sa[sa.len() - 1] as f64;
    for (i, ((&g, &w), &s)) in got.to_vec().iter().zip(&want).zip(&abs).enumerate() {
        let tol = 1e-7 + 1.2e-7 * k.max(1.0) * s;
        assert!((g as f64 - w).abs() <= tol, "{what}: element {i}: got {g}, reference {w} (tol {tol:e})");
    }
}

fn values(n: usize, rng: &mut Rng) -> Vec<f32> {
    (0..n).map(|_| rng.range(-1.0, 1.0)).collect()
}

fn mat_size() -> impl Strategy<Value = usize> {
    prop_oneof![Just(1usize), Just(2), Just(7), Just(63), Just(65)]
}

/// Batch shapes of lhs and rhs that broadcast: each side keeps some trailing axes of a
/// full batch (rank 0..=2, sizes 1..=3) and may set axes to 1.
fn batch_pair() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    proptest::collection::vec(1usize..4, 0..3).prop_flat_map(|full| {
        let r = full.len();
        (Just(full), 0..=r, 0..=r, proptest::collection::vec(0u8..3, r)).prop_map(|(full, da, db, ones)| {
            let mut a: Vec<usize> = full[da..].to_vec();
            let mut b: Vec<usize> = full[db..].to_vec();
            for (i, o) in ones.iter().enumerate() {
                match o {
                    1 if i >= da => a[i - da] = 1,
                    2 if i >= db => b[i - db] = 1,
                    _ => {}
                }
            }
            (a, b)
        })
    })
}

const GRAD_MAX_ELEMS: usize = 120;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn matmul_matches_reference(
        (ba, bb) in batch_pair(),
        m in mat_size(),
        k in mat_size(),
        n in mat_size(),
        va in view_kind(),
        vb in view_kind(),
        seed in 0u64..1000,
    ) {
        let mut rng = Rng::new(seed);
        let sa: Vec<usize> = ba.iter().copied().chain([m, k]).collect();
        let sb: Vec<usize> = bb.iter().copied().chain([k, n]).collect();
        let (da, db) = (values(numel(&sa), &mut rng), values(numel(&sb), &mut rng));
        let (a, b) = (make_view(&da, &sa, va), make_view(&db, &sb, vb));
        check_product("matmul", &a.matmul(&b).unwrap(), &da, &sa, &db, &sb);
        if numel(&sa) + numel(&sb) <= GRAD_MAX_ELEMS {
            assert_grads("matmul", |v| v[0].matmul(&v[1]), &[a.clone(), b.clone()]);
            // The same through strided views inside the graph.
            let (at, bt) = (a.t().unwrap().contiguous(), b.t().unwrap().contiguous());
            assert_grads("matmul of transposed", |v| v[0].t()?.matmul(&v[1].t()?), &[at, bt]);
        }
    }
}

#[test]
fn two_d_odd_sizes() {
    let mut rng = Rng::new(1);
    for &(m, k, n) in &[(1, 1, 1), (7, 1, 7), (1, 65, 1), (63, 65, 7), (65, 63, 65), (65, 65, 63), (7, 7, 65)] {
        let (da, db) = (values(m * k, &mut rng), values(k * n, &mut rng));
        let (a, b) = (Tensor::from_slice(&da, [m, k]).unwrap(), Tensor::from_slice(&db, [k, n]).unwrap());
        check_product("2-D", &a.matmul(&b).unwrap(), &da, &[m, k], &db, &[k, n]);
    }
}

#[test]
fn transposed_and_narrowed_operands_are_read_in_place() {
    let mut rng = Rng::new(2);
    // Stored [k, m] and [n, k]: the transposes are strided views, not copies.
    let (m, k, n) = (63, 65, 7);
    let (st_a, st_b) = (values(k * m, &mut rng), values(n * k, &mut rng));
    let at = Tensor::from_slice(&st_a, [k, m]).unwrap().t().unwrap();
    let bt = Tensor::from_slice(&st_b, [n, k]).unwrap().t().unwrap();
    assert!(!at.is_contiguous() && !bt.is_contiguous());
    let (da, db) = (at.to_vec(), bt.to_vec());
    check_product("aᵀ·bᵀ", &at.matmul(&bt).unwrap(), &da, &[m, k], &db, &[k, n]);
    // Narrowed rows and columns (offsets, row strides larger than the row length).
    let big = Tensor::from_vec(values(70 * 70, &mut rng), [70, 70]).unwrap();
    let a = big.narrow(0, 3, 7).unwrap().narrow(1, 1, 65).unwrap();
    let b = big.narrow(0, 2, 65).unwrap().narrow(1, 4, 63).unwrap();
    assert!(!a.is_contiguous());
    check_product("narrowed", &a.matmul(&b).unwrap(), &a.to_vec(), &[7, 65], &b.to_vec(), &[65, 63]);
    // A batch axis narrowed, and a transposed batch of matrices.
    let x = Tensor::from_vec(values(4 * 7 * 9, &mut rng), [4, 7, 9]).unwrap();
    let xs = x.narrow(0, 1, 2).unwrap();
    let xt = x.permute(&[0, 2, 1]).unwrap();
    check_product(
        "batch narrowed",
        &xs.matmul(&xt.narrow(0, 2, 2).unwrap()).unwrap(),
        &xs.to_vec(),
        &[2, 7, 9],
        &xt.narrow(0, 2, 2).unwrap().to_vec(),
        &[2, 9, 7],
    );
    // An operand broadcast with zero strides (m = 1 and m > 1).
    for m in [1, 3] {
        let row = Tensor::from_vec(values(m * 9, &mut rng), [1, m, 9]).unwrap().broadcast_to(&[5, m, 9]).unwrap();
        let w = Tensor::from_vec(values(9 * 4, &mut rng), [9, 4]).unwrap();
        check_product("broadcast lhs", &row.matmul(&w).unwrap(), &row.to_vec(), &[5, m, 9], &w.to_vec(), &[9, 4]);
    }
}

#[test]
fn broadcast_batches() {
    let mut rng = Rng::new(3);
    let cases: [(&[usize], &[usize]); 6] = [
        (&[3, 7, 5], &[5, 4]),          // [B, T, K] x [K, N]: shared weight
        (&[7, 5], &[3, 5, 4]),          // [M, K] x [B, K, N]: shared lhs
        (&[3, 7, 5], &[1, 5, 4]),       // size-1 batch broadcast
        (&[2, 1, 7, 5], &[1, 3, 5, 4]), // both sides broadcast
        (&[2, 3, 1, 5], &[3, 5, 1]),    // m = n = 1
        (&[2, 3, 7, 5], &[2, 3, 5, 4]), // plain batch
    ];
    for (sa, sb) in cases {
        let (da, db) = (values(numel(sa), &mut rng), values(numel(sb), &mut rng));
        let (a, b) = (Tensor::from_slice(&da, sa).unwrap(), Tensor::from_slice(&db, sb).unwrap());
        check_product(&format!("{sa:?} x {sb:?}"), &a.matmul(&b).unwrap(), &da, sa, &db, sb);
        assert_grads(&format!("{sa:?} x {sb:?}"), |v| v[0].matmul(&v[1]), &[a.clone(), b.clone()]);
    }
}

#[test]
fn weight_gradient_of_shared_weight() {
    let mut rng = Rng::new(4);
    let x = rand_tensor(&[3, 5, 4], -1.0, 1.0, &mut rng);
    let w = rand_tensor(&[4, 6], -1.0, 1.0, &mut rng);
    // Through a loss that sums or averages the product: the incoming gradient is a
    // zero-stride broadcast of a scalar (or of a row).
    assert_grads("sum_all(x·W)", |v| Ok(v[0].matmul(&v[1])?.sum_all()), &[x.clone(), w.clone()]);
    assert_grads("mean over batch", |v| v[0].matmul(&v[1])?.mean(&[0, 1], false), &[x.clone(), w.clone()]);
    assert_grads("x·Wᵀᵀ", |v| v[0].matmul(&v[1].t()?.contiguous().t()?), &[x.clone(), w.clone()]);
    // Exact values for the sum: dW[k, n] = Σ_bt x[b, t, k], dx[b, t, k] = Σ_n W[k, n].
    let (xl, wl) = (x.clone().requires_grad_(), w.clone().requires_grad_());
    xl.matmul(&wl).unwrap().sum_all().backward().unwrap();
    let (xd, wd) = (x.to_vec(), w.to_vec());
    let dw: Vec<f64> = (0..24).map(|p| (0..15).map(|bt| xd[bt * 4 + p / 6] as f64).sum()).collect();
    let dx: Vec<f64> = (0..60).map(|p| (0..6).map(|j| wd[(p % 4) * 6 + j] as f64).sum()).collect();
    assert_close("dW", &wl.grad().unwrap().to_vec(), &dw, 1e-5, 1e-5);
    assert_close("dx", &xl.grad().unwrap().to_vec(), &dx, 1e-5, 1e-5);
}

#[test]
fn empty_dimensions() {
    let a = Tensor::zeros([3, 0]);
    let b = Tensor::zeros([0, 4]);
    let c = a.matmul(&b).unwrap();
    assert_eq!((c.shape().to_vec(), c.to_vec()), (vec![3, 4], vec![0.0; 12]));
    assert_eq!(Tensor::zeros([0, 2]).matmul(&Tensor::zeros([2, 5])).unwrap().shape(), &[0, 5]);
    assert_eq!(Tensor::zeros([2, 0, 2]).matmul(&Tensor::zeros([2, 5])).unwrap().shape(), &[2, 0, 5]);
}

#[test]
fn matmul_errors_name_both_shapes() {
    let e = Tensor::zeros([2, 3]).matmul(&Tensor::zeros([4, 5])).unwrap_err();
    assert!(matches!(&e, Error::MatMul { op: "matmul", lhs, rhs, .. } if lhs.dims() == [2, 3] && rhs.dims() == [4, 5]));
    let msg = e.to_string();
    assert!(msg.contains("[2, 3]") && msg.contains("[4, 5]") && msg.contains("3 != 4"), "{msg}");
    let e = Tensor::zeros([2, 3, 4]).matmul(&Tensor::zeros([3, 4, 5])).unwrap_err();
    assert!(matches!(&e, Error::MatMul { op: "matmul", .. }), "{e:?}");
    assert!(e.to_string().contains("[2, 3, 4]") && e.to_string().contains("[3, 4, 5]"), "{e}");
    let e = Tensor::zeros([3]).matmul(&Tensor::zeros([3, 2])).unwrap_err();
    assert!(matches!(&e, Error::MatMul { op: "matmul", .. }), "{e:?}");
}

#[test]
fn large_products_split_across_threads() {
    // Above the size where GEMM is split over row blocks / batch entries in parallel.
    let mut rng = Rng::new(5);
    let cases: [(&[usize], &[usize]); 3] =
        [(&[2, 130, 129], &[129, 131]), (&[3, 70, 97], &[3, 97, 120]), (&[257, 130], &[130, 65])];
    for (sa, sb) in cases {
        let (da, db) = (values(numel(sa), &mut rng), values(numel(sb), &mut rng));
        let (a, b) = (Tensor::from_slice(&da, sa).unwrap(), Tensor::from_slice(&db, sb).unwrap());
        check_product(&format!("{sa:?} x {sb:?}"), &a.matmul(&b).unwrap(), &da, sa, &db, sb);
        // Strided operands of the same values.
        let at = a.t().unwrap().contiguous().t().unwrap();
        check_product(&format!("{sa:?}ᵀᵀ x {sb:?}"), &at.matmul(&b).unwrap(), &da, sa, &db, sb);
    }
    // Weight gradient of a large shared weight through a sum (zero-stride incoming grad).
    let (x, w) = (rand_tensor(&[4, 120, 90], -1.0, 1.0, &mut rng), rand_tensor(&[90, 80], -1.0, 1.0, &mut rng));
    let wl = w.clone().requires_grad_();
    x.matmul(&wl).unwrap().sum_all().backward().unwrap();
    let xd = x.to_vec();
    let dw: Vec<f64> = (0..90 * 80).map(|p| (0..480).map(|bt| xd[bt * 90 + p / 80] as f64).sum()).collect();
    assert_close("large dW", &wl.grad().unwrap().to_vec(), &dw, 1e-3, 1e-5);
}

#[test]
fn short_wide_products_split_over_columns_give_the_same_bits_on_any_thread_count() {
    // Above the parallel size, split over column blocks (one per thread) when that packs
    // less than row blocks: n ≥ 4m, and m < n < 4m at batch 128, and a taller product
    // whose choice depends on the thread count, one split by rows, and rows that would
    // make a single task (split by columns). Rhs
    // row-major and transposed, as in a linear layer's forward and input gradient.
    let mut rng = Rng::new(6);
    for (m, k, n) in [
        (40, 60, 1000),
        (33, 70, 1001),
        (128, 64, 520),
        (128, 300, 260),
        (300, 40, 400),
        (300, 80, 100),
        (64, 400, 100),
    ] {
        let (da, db) = (values(m * k, &mut rng), values(k * n, &mut rng));
        let a = Tensor::from_slice(&da, [m, k]).unwrap();
        let b = Tensor::from_slice(&db, [k, n]).unwrap();
        let bt = b.t().unwrap().contiguous().t().unwrap();
        for (what, rhs) in [("row-major rhs", &b), ("transposed rhs", &bt)] {
            let run = |t| fixpoint::cpu::par::with_threads(Some(t), || a.matmul(rhs).unwrap().to_vec()).unwrap();
            let one = run(1);
            let got = Tensor::from_vec(one.clone(), [m, n]).unwrap();
            check_product(&format!("{m}x{k} x {k}x{n}, {what}"), &got, &da, &[m, k], &db, &[k, n]);
            for t in [2, 3, 4] {
                assert!(run(t) == one, "{m}x{k} x {k}x{n}, {what}: {t} threads differ from 1 thread");
            }
        }
    }
}
