//! Graph mechanics: long chains, accumulation, no_grad, detach, typed errors.

use fixpoint::{Backward, Error, Result, Shape, Tensor, no_grad};

#[test]
fn long_chain_backward_and_drop_in_a_test_thread() {
    // 200,000 recorded nodes on the default 2 MiB test-thread stack: both the
    // topological sort and the drop must be iterative.
    let n = 200_000;
    let handle = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let x = Tensor::from_vec(vec![0.5, -1.0], [2]).unwrap().requires_grad_();
            let mut y = x.clone();
            for _ in 0..n {
                y = y.mul_scalar(1.0).add_scalar(0.0);
            }
            let loss = y.mul_scalar(3.0).sum_all();
            loss.backward().unwrap();
            assert_eq!(x.grad().unwrap().to_vec(), vec![3.0, 3.0]);
            drop(loss);
            drop(y); // 400,000-node chain freed here
        })
        .unwrap();
    handle.join().expect("long chain overflowed the stack or failed");
}

#[test]
fn gradients_accumulate_until_zeroed() {
    let x = Tensor::from_vec(vec![1.0, 2.0], [2]).unwrap().requires_grad_();
    let f = || x.square().sum_all();
    f().backward().unwrap();
    f().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec(), vec![4.0, 8.0]);
    x.zero_grad();
    assert!(x.grad().is_none());
    f().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec(), vec![2.0, 4.0]);
}

#[test]
fn diamond_graph_sums_both_paths() {
    // y = x*x + exp(x): dy/dx = 2x + exp(x); x is used three times.
    let x = Tensor::from_vec(vec![0.3, -0.7], [2]).unwrap().requires_grad_();
    let y = x.mul(&x).unwrap().add(&x.exp()).unwrap().sum_all();
    y.backward().unwrap();
    let g = x.grad().unwrap().to_vec();
    for (gi, xi) in g.iter().zip([0.3f64, -0.7]) {
        assert!((*gi as f64 - (2.0 * xi + xi.exp())).abs() < 1e-6);
    }
}

#[test]
fn no_grad_records_nothing_and_detach_cuts() {
    let x = Tensor::ones([3]).requires_grad_();
    let y = no_grad(|| x.mul_scalar(2.0));
    assert!(!y.requires_grad());
    assert!(matches!(y.sum_all().backward(), Err(Error::NoGraph { .. })));
    let z = x.mul_scalar(2.0).detach().mul(&x).unwrap().sum_all();
    z.backward().unwrap();
    // Only the direct path through `x` counts: d/dx (c * x) with c = 2 detached.
    assert_eq!(x.grad().unwrap().to_vec(), vec![2.0; 3]);
    assert!(fixpoint::autograd::is_grad_enabled());
}

#[test]
fn backward_seed_must_match_shape() {
    let x = Tensor::ones([2, 2]).requires_grad_();
    let y = x.mul_scalar(2.0);
    let e = y.backward_with(&Tensor::ones([4])).unwrap_err();
    assert_eq!(e, Error::ShapeMismatch { op: "backward", lhs: [2, 2].into(), rhs: [4].into() });
}

struct NoRule;
impl Backward for NoRule {
    fn name(&self) -> &'static str {
        "mystery_op"
    }
    fn backward(&self, _g: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        Err(Error::BackwardNotImplemented { op: "mystery_op" })
    }
}

struct WrongShape;
impl Backward for WrongShape {
    fn name(&self) -> &'static str {
        "buggy_op"
    }
    fn backward(&self, _g: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(Tensor::zeros([5]))])
    }
}

#[test]
fn missing_or_wrong_backward_is_a_typed_error() {
    let x = Tensor::ones([3]).requires_grad_();
    let y = Tensor::from_op(vec![0.0; 3], Shape::new([3]), &[&x], || NoRule);
    assert_eq!(y.op_name(), Some("mystery_op"));
    let e = y.exp().sum_all().backward().unwrap_err();
    assert_eq!(e, Error::BackwardNotImplemented { op: "mystery_op" });
    assert_eq!(e.to_string(), "backward not implemented for mystery_op");
    let y = Tensor::from_op(vec![0.0; 3], Shape::new([3]), &[&x], || WrongShape);
    let e = y.sum_all().backward().unwrap_err();
    assert!(matches!(e, Error::GradShape { op: "buggy_op", input: 0, .. }), "{e}");
}

#[test]
fn parameter_update_keeps_grad_slot_and_copies_on_write() {
    let mut w = Tensor::from_vec(vec![1.0, 2.0], [2]).unwrap().requires_grad_();
    let y = w.mul_scalar(3.0); // the graph holds w's values
    let old = w.detach();
    w.update_data(|d| d[0] = 10.0);
    assert_eq!(old.to_vec(), vec![1.0, 2.0], "a graph's saved values are not mutated");
    assert_eq!(w.to_vec(), vec![10.0, 2.0]);
    y.sum_all().backward().unwrap();
    assert_eq!(w.grad().unwrap().to_vec(), vec![3.0, 3.0], "same leaf after the update");
}
