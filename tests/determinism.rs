//! Results are bit-identical whatever the thread count: chunk boundaries depend on the
//! data size only. Each case runs in a 1-thread and a 2-thread rayon pool.

mod common;
use common::*;
use fixpoint::{Rng, Tensor};

fn in_pool<R: Send>(n: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap().install(f)
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec().into_iter().map(f32::to_bits).collect()
}

fn naive(a: &Tensor, b: &Tensor) -> Vec<f64> {
    let (m, k, n) = (a.shape()[0], a.shape()[1], b.shape()[1]);
    let (a, b) = (a.to_vec(), b.to_vec());
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k).map(|p| a[i * k + p] as f64 * b[p * n + j] as f64).sum();
        }
    }
    c
}

#[test]
fn large_gemm_is_correct_and_thread_count_invariant() {
    let mut rng = Rng::new(11);
    // Large enough to take the parallel row-split path; odd sizes for ragged blocks.
    let a = rand_tensor(&[517, 203], -1.0, 1.0, &mut rng);
    let b = rand_tensor(&[203, 149], -1.0, 1.0, &mut rng);
    let c1 = in_pool(1, || a.matmul(&b).unwrap());
    let c2 = in_pool(2, || a.matmul(&b).unwrap());
    assert_close("gemm", &c1.to_vec(), &naive(&a, &b), 1e-4, 1e-4);
    assert_eq!(bits(&c1), bits(&c2));
    // Transposed operand (strided, no copy) on the same path.
    let at = a.t().unwrap().contiguous().t().unwrap();
    assert!(!at.is_contiguous());
    assert_eq!(bits(&in_pool(2, || at.matmul(&b).unwrap())), bits(&c1));
}

#[test]
fn batched_gemm_and_its_backward_are_thread_count_invariant() {
    let mut rng = Rng::new(12);
    let x = rand_tensor(&[6, 97, 80], -1.0, 1.0, &mut rng);
    let y = rand_tensor(&[6, 80, 71], -1.0, 1.0, &mut rng);
    let w = rand_tensor(&[80, 64], -1.0, 1.0, &mut rng);
    let run = || {
        let (x, y, w) = (x.detach().requires_grad_(), y.detach().requires_grad_(), w.detach().requires_grad_());
        let out = x.matmul(&y).unwrap().sum_all().add(&x.matmul(&w).unwrap().square().sum_all()).unwrap();
        out.backward().unwrap();
        (out, x.grad().unwrap(), y.grad().unwrap(), w.grad().unwrap())
    };
    let r1 = in_pool(1, run);
    let r2 = in_pool(2, run);
    for (a, b) in [(&r1.0, &r2.0), (&r1.1, &r2.1), (&r1.2, &r2.2), (&r1.3, &r2.3)] {
        assert_eq!(bits(a), bits(b));
    }
    // Batch entry 3 of x·y against the naive product.
    let xb = x.narrow(0, 3, 1).unwrap().reshape(&[97, 80]).unwrap();
    let yb = y.narrow(0, 3, 1).unwrap().reshape(&[80, 71]).unwrap();
    let full = in_pool(2, || x.matmul(&y).unwrap());
    let got = full.narrow(0, 3, 1).unwrap().reshape(&[97, 71]).unwrap();
    assert_close("batched gemm", &got.to_vec(), &naive(&xb, &yb), 1e-4, 1e-4);
}

#[test]
fn large_elementwise_is_thread_count_invariant() {
    let mut rng = Rng::new(13);
    let x = rand_tensor(&[300_001], -3.0, 3.0, &mut rng);
    let f = || x.tanh().mul(&x.exp()).unwrap().gelu();
    assert_eq!(bits(&in_pool(1, f)), bits(&in_pool(2, f)));
}

#[test]
fn fused_row_ops_and_their_backward_are_thread_count_invariant() {
    let mut rng = Rng::new(14);
    let x = rand_tensor(&[700, 301], -4.0, 4.0, &mut rng);
    let w = rand_tensor(&[301], 0.5, 1.5, &mut rng);
    let b = rand_tensor(&[301], -0.5, 0.5, &mut rng);
    let targets: Vec<usize> = (0..700).map(|i| (i * 7) % 301).collect();
    let run = || {
        let (x, w, b) = (x.detach().requires_grad_(), w.detach().requires_grad_(), b.detach().requires_grad_());
        let h = x.layer_norm(Some(&w), Some(&b), 1e-5).unwrap();
        let r = h.rms_norm(Some(&w), 1e-6).unwrap();
        let s = r.softmax(-1).unwrap().mul(&h).unwrap().log_softmax(0).unwrap();
        let loss = s.cross_entropy(&targets, Default::default()).unwrap();
        loss.backward().unwrap();
        [loss, x.grad().unwrap(), w.grad().unwrap(), b.grad().unwrap()]
    };
    let (r1, r2) = (in_pool(1, run), in_pool(2, run));
    for (a, b) in r1.iter().zip(&r2) {
        assert_eq!(bits(a), bits(b));
    }
}

/// 20 AdamW steps of `model` on fixed data; returns (loss bits per step, parameter bits).
fn train_bits<M: fixpoint::nn::Module>(
    model: &mut M,
    forward: impl Fn(&M, &Tensor) -> fixpoint::Result<Tensor>,
    x: &Tensor,
    targets: &[usize],
) -> (Vec<u32>, Vec<Vec<u32>>) {
    use fixpoint::optim::{AdamW, AdamWConfig, Optimizer};
    let mut opt = AdamW::new(AdamWConfig { weight_decay: 0.01, ..AdamWConfig::default() }).unwrap();
    let mut losses = Vec::new();
    for _ in 0..20 {
        let logits = forward(model, x).unwrap();
        let loss = logits.cross_entropy(targets, Default::default()).unwrap();
        losses.push(loss.item().unwrap().to_bits());
        model.zero_grad();
        loss.backward().unwrap();
        opt.step(model, 1e-3).unwrap();
    }
    (losses, model.params().iter().map(|(_, p)| bits(p)).collect())
}

#[test]
fn twenty_mlp_training_steps_agree_bit_for_bit_at_1_and_2_threads() {
    use fixpoint::nn::{Activation, Mlp};
    let mut rng = Rng::new(21);
    // Big enough that GEMMs, elementwise ops and reductions take their parallel paths.
    let x = rand_tensor(&[512, 256], -1.0, 1.0, &mut rng);
    let targets: Vec<usize> = (0..512).map(|i| (i * 13) % 10).collect();
    let run = || {
        let mut m = Mlp::new(&[256, 512, 512, 10], Activation::Gelu, &mut Rng::new(3)).unwrap();
        train_bits(&mut m, |m, x| m.forward(x), &x, &targets)
    };
    let (a, b) = (in_pool(1, run), in_pool(2, run));
    assert_eq!(a.0, b.0, "losses differ between 1 and 2 threads");
    assert_eq!(a.1, b.1, "parameters differ between 1 and 2 threads");
    // And the run does train.
    assert_ne!(a.0.first(), a.0.last());
}

#[test]
fn twenty_attention_training_steps_agree_bit_for_bit_at_1_and_2_threads() {
    use fixpoint::nn::{Linear, Module, MultiHeadSelfAttention};
    struct Tiny {
        attn: MultiHeadSelfAttention,
        head: Linear,
    }
    impl Module for Tiny {
        fn params(&self) -> Vec<(String, &Tensor)> {
            let p = fixpoint::nn::prefixed("attn", self.attn.params());
            p.chain(fixpoint::nn::prefixed("head", self.head.params())).collect()
        }
        fn params_mut(&mut self) -> Vec<(String, &mut Tensor)> {
            let p = fixpoint::nn::prefixed("attn", self.attn.params_mut());
            p.chain(fixpoint::nn::prefixed("head", self.head.params_mut())).collect()
        }
    }
    let mut rng = Rng::new(22);
    let (b, t, d) = (8, 64, 128);
    let x = rand_tensor(&[b, t, d], -1.0, 1.0, &mut rng);
    let targets: Vec<usize> = (0..b * t).map(|i| (i * 7) % 16).collect();
    let run = || {
        let mut r = Rng::new(4);
        let mut m = Tiny {
            attn: MultiHeadSelfAttention::new(d, 4, true, &mut r).unwrap(),
            head: Linear::new(d, 16, true, &mut r),
        };
        let fwd = |m: &Tiny, x: &Tensor| {
            let h = m.attn.forward(x)?.add(x)?.layer_norm(None, None, 1e-5)?;
            m.head.forward(&h)?.reshape(&[b * t, 16])
        };
        train_bits(&mut m, fwd, &x, &targets)
    };
    let (a, b) = (in_pool(1, run), in_pool(2, run));
    assert_eq!(a.0, b.0, "losses differ between 1 and 2 threads");
    assert_eq!(a.1, b.1, "parameters differ between 1 and 2 threads");
    assert_ne!(a.0.first(), a.0.last());
}
