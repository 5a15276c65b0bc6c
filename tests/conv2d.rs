//! conv2d, max_pool2d, global_avg_pool2d and batch_norm2d: forward against f64 direct
//! references, backward against central differences, shape errors, and bit-identical
//! results on 1 and 2 threads.

mod common;
use common::*;
use fixpoint::cpu::par::with_threads;
use fixpoint::ops::batchnorm::BnMode;
use fixpoint::{Error, Rng, Tensor};
use proptest::prelude::*;

/// Direct convolution in f64: `[B, O, Ho, Wo]`.
#[allow(clippy::too_many_arguments)]
fn conv_ref(
    x: &[f32],
    dims: [usize; 4],
    w: &[f32],
    wd: [usize; 4],
    bias: Option<&[f32]>,
    s: usize,
    pad: usize,
) -> Vec<f64> {
    let [b, c, h, wi] = dims;
    let [o, _, kh, kw] = wd;
    let ho = (h + 2 * pad - kh) / s + 1;
    let wo = (wi + 2 * pad - kw) / s + 1;
    let mut out = vec![0.0; b * o * ho * wo];
    for bi in 0..b {
        for oc in 0..o {
            for i in 0..ho {
                for j in 0..wo {
                    let mut acc = bias.map_or(0.0, |bb| bb[oc] as f64);
                    for ci in 0..c {
                        for p in 0..kh {
                            for q in 0..kw {
                                let y = (i * s + p) as isize - pad as isize;
                                let xx = (j * s + q) as isize - pad as isize;
                                if y < 0 || xx < 0 || y >= h as isize || xx >= wi as isize {
                                    continue;
                                }
                                let xv = x[((bi * c + ci) * h + y as usize) * wi + xx as usize] as f64;
                                acc += xv * w[((oc * c + ci) * kh + p) * kw + q] as f64;
                            }
                        }
                    }
                    out[((bi * o + oc) * ho + i) * wo + j] = acc;
                }
            }
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn check_conv(
    b: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    k: usize,
    s: usize,
    pad: usize,
    bias: bool,
    grads: bool,
) {
    let mut rng = Rng::new((b * 1000 + c * 100 + h * 10 + w + o + k * 7 + s * 3 + pad) as u64);
    let x = rand_tensor(&[b, c, h, w], -1.0, 1.0, &mut rng);
    let wt = rand_tensor(&[o, c, k, k], -0.5, 0.5, &mut rng);
    let bt = rand_tensor(&[o], -0.5, 0.5, &mut rng);
    let y = x.conv2d(&wt, bias.then_some(&bt), s, pad).unwrap();
    let bv = bt.to_vec();
    let want = conv_ref(&x.to_vec(), [b, c, h, w], &wt.to_vec(), [o, c, k, k], bias.then_some(&bv[..]), s, pad);
    let what = format!("conv2d b{b} c{c} {h}x{w} o{o} k{k} s{s} p{pad}");
    assert_close(&what, &y.to_vec(), &want, 1e-4, 1e-4);
    let ho = (h + 2 * pad - k) / s + 1;
    let wo = (w + 2 * pad - k) / s + 1;
    assert_eq!(y.shape(), [b, o, ho, wo]);
    if grads {
        if bias {
            assert_grads(&what, |t| t[0].conv2d(&t[1], Some(&t[2]), s, pad), &[x, wt, bt]);
        } else {
            assert_grads(&what, |t| t[0].conv2d(&t[1], None, s, pad), &[x, wt]);
        }
    }
}

#[test]
fn conv2d_forward_and_grads_on_edge_cases() {
    // (b, c, h, w, o, k, stride, pad, bias)
    let cases = [
        (2, 3, 5, 5, 4, 3, 1, 1, true),
        (1, 2, 7, 6, 3, 3, 2, 1, true),
        (2, 2, 6, 7, 3, 3, 2, 0, false),
        (3, 4, 5, 3, 2, 1, 1, 0, true),  // 1x1 kernel
        (1, 3, 7, 7, 2, 1, 2, 0, false), // 1x1 stride 2 (ResNet shortcut)
        (2, 1, 3, 3, 1, 3, 1, 0, true),  // output 1x1
        (1, 2, 4, 5, 2, 2, 3, 1, true),  // even kernel, stride 3
        (1, 1, 1, 1, 2, 3, 1, 1, true),  // 1x1 image with padding
    ];
    for (b, c, h, w, o, k, s, p, bias) in cases {
        check_conv(b, c, h, w, o, k, s, p, bias, true);
    }
}

#[test]
fn conv2d_forward_many_blocks() {
    // Batch large enough for several im2col blocks (P = 64: 8 images per block) and
    // several weight-gradient groups.
    check_conv(40, 3, 8, 8, 5, 3, 1, 1, true, false);
    check_conv(33, 2, 9, 9, 3, 3, 2, 1, false, false);
}

#[test]
fn conv2d_grads_across_blocks() {
    // 70 images of 8x8 (9 blocks of 8, two weight-gradient groups of 8 blocks).
    let mut rng = Rng::new(5);
    let x = rand_tensor(&[70, 2, 8, 8], -1.0, 1.0, &mut rng);
    let w = rand_tensor(&[3, 2, 3, 3], -0.5, 0.5, &mut rng);
    let b = rand_tensor(&[3], -0.5, 0.5, &mut rng);
    // Only the weight and bias (the input has 8960 elements).
    let xd = x.detach();
    assert_grads("conv2d dW over blocks", |t| xd.conv2d(&t[0], Some(&t[1]), 1, 1), &[w.clone(), b]);
    // dX of the same shape against the single-image convolutions.
    let xg = x.detach().requires_grad_();
    let wd = w.detach();
    let r = rand_tensor(&[70, 3, 8, 8], -1.0, 1.0, &mut rng);
    xg.conv2d(&wd, None, 1, 1).unwrap().mul(&r).unwrap().sum_all().backward().unwrap();
    let full = xg.grad().unwrap().to_vec();
    for i in [0usize, 8, 69] {
        let xi = x.narrow(0, i, 1).unwrap().contiguous().requires_grad_();
        xi.conv2d(&wd, None, 1, 1).unwrap().mul(&r.narrow(0, i, 1).unwrap()).unwrap().sum_all().backward().unwrap();
        let gi = xi.grad().unwrap().to_vec();
        let want: Vec<f64> = gi.iter().map(|&v| v as f64).collect();
        assert_close(&format!("dx image {i}"), &full[i * 128..(i + 1) * 128], &want, 1e-5, 1e-5);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn conv2d_matches_direct_reference(
        b in 1usize..4, c in 1usize..4, h in 1usize..9, w in 1usize..9, o in 1usize..4,
        k in 1usize..4, s in 1usize..3, pad in 0usize..2, bias in any::<bool>(),
    ) {
        prop_assume!(h + 2 * pad >= k && w + 2 * pad >= k);
        check_conv(b, c, h, w, o, k, s, pad, bias, false);
    }
}

#[test]
fn conv2d_strided_view_input() {
    let mut rng = Rng::new(3);
    let data: Vec<f32> = (0..2 * 3 * 5 * 6).map(|_| rng.range(-1.0, 1.0)).collect();
    let x = make_view(&data, &[2, 3, 5, 6], View::Transposed);
    let w = rand_tensor(&[2, 3, 3, 3], -0.5, 0.5, &mut rng);
    let want = conv_ref(&data, [2, 3, 5, 6], &w.to_vec(), [2, 3, 3, 3], None, 1, 1);
    assert_close("conv2d on a transposed view", &x.conv2d(&w, None, 1, 1).unwrap().to_vec(), &want, 1e-4, 1e-4);
}

#[test]
fn conv2d_rejects_bad_shapes() {
    let x = Tensor::zeros([1, 3, 4, 4]);
    let e = x.conv2d(&Tensor::zeros([2, 2, 3, 3]), None, 1, 1).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
    let e = x.conv2d(&Tensor::zeros([2, 3, 5, 5]), None, 1, 0).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    let e = x.conv2d(&Tensor::zeros([2, 3, 3, 3]), None, 0, 1).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    let e = x.conv2d(&Tensor::zeros([2, 3, 3, 3]), Some(&Tensor::zeros([3])), 1, 1).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
    let e = Tensor::zeros([3, 4, 4]).conv2d(&Tensor::zeros([2, 3, 3, 3]), None, 1, 1).unwrap_err();
    assert!(e.to_string().contains("[3, 4, 4]"), "{e}");
}

#[test]
fn conv2d_bit_identical_across_threads() {
    let mut rng = Rng::new(9);
    let x = rand_tensor(&[37, 8, 16, 16], -1.0, 1.0, &mut rng);
    let w = rand_tensor(&[16, 8, 3, 3], -0.5, 0.5, &mut rng);
    let b = rand_tensor(&[16], -0.5, 0.5, &mut rng);
    let run = |n| {
        with_threads(Some(n), || {
            let (xg, wg, bg) = (x.detach().requires_grad_(), w.detach().requires_grad_(), b.detach().requires_grad_());
            let y = xg.conv2d(&wg, Some(&bg), 2, 1).unwrap().max_pool2d(2, 2).unwrap();
            let y2 = y.mul(&y).unwrap().sum_all();
            y2.backward().unwrap();
            (y.to_vec(), xg.grad().unwrap().to_vec(), wg.grad().unwrap().to_vec(), bg.grad().unwrap().to_vec())
        })
        .unwrap()
    };
    let (a, bb) = (run(1), run(2));
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a.0), bits(&bb.0));
    assert_eq!(bits(&a.1), bits(&bb.1));
    assert_eq!(bits(&a.2), bits(&bb.2));
    assert_eq!(bits(&a.3), bits(&bb.3));
}

fn maxpool_ref(x: &[f32], [b, c, h, w]: [usize; 4], k: usize, s: usize) -> Vec<f64> {
    let (ho, wo) = ((h - k) / s + 1, (w - k) / s + 1);
    let mut out = Vec::new();
    for p in 0..b * c {
        for i in 0..ho {
            for j in 0..wo {
                let mut m = f64::NEG_INFINITY;
                for a in 0..k {
                    for q in 0..k {
                        m = m.max(x[p * h * w + (i * s + a) * w + j * s + q] as f64);
                    }
                }
                out.push(m);
            }
        }
    }
    out
}

#[test]
fn max_pool2d_forward_and_grads() {
    for (dims, k, s) in [([2, 3, 4, 4], 2, 2), ([1, 2, 5, 7], 2, 2), ([2, 1, 7, 5], 3, 2), ([1, 1, 3, 3], 3, 1)] {
        let mut rng = Rng::new(dims.iter().sum::<usize>() as u64);
        // Distinct values (a permutation scaled), so no window has a tie within the
        // finite-difference step.
        let n: usize = dims.iter().product();
        let perm = rng.permutation(n);
        let x = Tensor::from_vec(perm.iter().map(|&v| v as f32 * 0.1 - 1.0).collect(), dims).unwrap();
        let y = x.max_pool2d(k, s).unwrap();
        assert_close("max_pool2d", &y.to_vec(), &maxpool_ref(&x.to_vec(), dims, k, s), 0.0, 0.0);
        assert_grads_tol("max_pool2d grad", |t| t[0].max_pool2d(k, s), &[x], 1e-2, 1e-3, 1e-3);
    }
}

#[test]
fn max_pool2d_rejects_bad_windows() {
    let x = Tensor::zeros([1, 1, 3, 3]);
    assert!(matches!(x.max_pool2d(4, 1).unwrap_err(), Error::InvalidArgument { .. }));
    assert!(matches!(x.max_pool2d(2, 0).unwrap_err(), Error::InvalidArgument { .. }));
    assert!(matches!(Tensor::zeros([3, 3]).max_pool2d(2, 2).unwrap_err(), Error::InvalidArgument { .. }));
}

#[test]
fn global_avg_pool_and_flatten() {
    let mut rng = Rng::new(4);
    let x = rand_tensor(&[2, 3, 3, 5], -1.0, 1.0, &mut rng);
    let v = x.to_vec();
    let want: Vec<f64> =
        (0..6).map(|p| v[p * 15..(p + 1) * 15].iter().map(|&a| a as f64).sum::<f64>() / 15.0).collect();
    assert_close("global_avg_pool2d", &x.global_avg_pool2d().unwrap().to_vec(), &want, 1e-6, 1e-6);
    assert_grads("global_avg_pool2d grad", |t| t[0].global_avg_pool2d(), std::slice::from_ref(&x));
    assert_eq!(x.flatten().unwrap().shape(), [2, 45]);
}

/// f64 batch norm reference; returns (y, batch mean, unbiased var).
fn bn_ref(
    x: &[f32],
    [b, c, h, w]: [usize; 4],
    g: &[f32],
    bt: &[f32],
    stats: Option<(&[f32], &[f32])>,
    eps: f64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let hw = h * w;
    let n = (b * hw) as f64;
    let mut mean = vec![0.0; c];
    let mut var = vec![0.0; c];
    for ch in 0..c {
        let vals: Vec<f64> = (0..b).flat_map(|bi| x[(bi * c + ch) * hw..][..hw].iter().map(|&v| v as f64)).collect();
        mean[ch] = vals.iter().sum::<f64>() / n;
        var[ch] = vals.iter().map(|v| (v - mean[ch]).powi(2)).sum::<f64>() / n;
    }
    let unbiased: Vec<f64> = var.iter().map(|v| v * n / (n - 1.0)).collect();
    let (um, uv): (Vec<f64>, Vec<f64>) = match stats {
        Some((m, v)) => (m.iter().map(|&a| a as f64).collect(), v.iter().map(|&a| a as f64).collect()),
        None => (mean.clone(), var.clone()),
    };
    let mut y = vec![0.0; x.len()];
    for (i, yv) in y.iter_mut().enumerate() {
        let ch = (i / hw) % c;
        *yv = g[ch] as f64 * (x[i] as f64 - um[ch]) / (uv[ch] + eps).sqrt() + bt[ch] as f64;
    }
    (y, mean, unbiased)
}

#[test]
fn batch_norm2d_train_mode() {
    let dims = [3, 2, 3, 4];
    let mut rng = Rng::new(11);
    let x = rand_tensor(&dims, -2.0, 3.0, &mut rng);
    let g = rand_tensor(&[2], 0.5, 1.5, &mut rng);
    let b = rand_tensor(&[2], -0.5, 0.5, &mut rng);
    let (y, stats) = x.batch_norm2d(&g, &b, BnMode::Train, 1e-5).unwrap();
    let (want, mean, unbiased) = bn_ref(&x.to_vec(), dims, &g.to_vec(), &b.to_vec(), None, 1e-5);
    assert_close("bn train y", &y.to_vec(), &want, 1e-5, 1e-5);
    let stats = stats.expect("train mode returns batch statistics");
    assert_close("bn batch mean", &stats.mean, &mean, 1e-6, 1e-6);
    assert_close("bn unbiased var", &stats.var_unbiased, &unbiased, 1e-6, 1e-5);
    assert_grads("bn train grads", |t| Ok(t[0].batch_norm2d(&t[1], &t[2], BnMode::Train, 1e-5)?.0), &[x, g, b]);
}

#[test]
fn batch_norm2d_eval_mode() {
    let dims = [2, 3, 2, 3];
    let mut rng = Rng::new(12);
    let x = rand_tensor(&dims, -2.0, 2.0, &mut rng);
    let g = rand_tensor(&[3], 0.5, 1.5, &mut rng);
    let b = rand_tensor(&[3], -0.5, 0.5, &mut rng);
    let (rm, rv) = ([0.1f32, -0.2, 0.3], [0.5f32, 1.0, 2.0]);
    let mode = BnMode::Eval { mean: &rm, var: &rv };
    let (y, stats) = x.batch_norm2d(&g, &b, mode, 1e-5).unwrap();
    assert!(stats.is_none());
    let (want, _, _) = bn_ref(&x.to_vec(), dims, &g.to_vec(), &b.to_vec(), Some((&rm, &rv)), 1e-5);
    assert_close("bn eval y", &y.to_vec(), &want, 1e-5, 1e-5);
    assert_grads("bn eval grads", |t| Ok(t[0].batch_norm2d(&t[1], &t[2], mode, 1e-5)?.0), &[x.clone(), g, b]);
    // The random teacher's BN: initial statistics (0, 1), γ = 1, β = 0 → x/√(1 + eps).
    let (y, _) = x
        .batch_norm2d(&Tensor::ones([3]), &Tensor::zeros([3]), BnMode::Eval { mean: &[0.0; 3], var: &[1.0; 3] }, 1e-5)
        .unwrap();
    let want: Vec<f64> = x.to_vec().iter().map(|&v| v as f64 / (1.0f64 + 1e-5).sqrt()).collect();
    assert_close("teacher bn identity", &y.to_vec(), &want, 1e-7, 1e-6);
}

#[test]
fn batch_norm2d_rejects_bad_shapes() {
    let x = Tensor::zeros([2, 3, 2, 2]);
    let e = x.batch_norm2d(&Tensor::ones([2]), &Tensor::zeros([3]), BnMode::Train, 1e-5).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
    let e = x
        .batch_norm2d(&Tensor::ones([3]), &Tensor::zeros([3]), BnMode::Eval { mean: &[0.0; 2], var: &[1.0; 3] }, 1e-5)
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    let e =
        Tensor::zeros([2, 3]).batch_norm2d(&Tensor::ones([3]), &Tensor::zeros([3]), BnMode::Train, 1e-5).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
}

#[test]
fn avg_pool2d_forward_and_grads() {
    for (dims, k, s) in [([2, 3, 4, 4], 2, 2), ([1, 2, 5, 7], 3, 2), ([2, 1, 7, 5], 2, 1), ([1, 1, 3, 3], 3, 1)] {
        let mut rng = Rng::new(dims.iter().product::<usize>() as u64);
        let x = rand_tensor(&dims, -1.0, 1.0, &mut rng);
        let [b, c, h, w] = dims;
        let (ho, wo) = ((h - k) / s + 1, (w - k) / s + 1);
        let v = x.to_vec();
        let mut want = Vec::new();
        for p in 0..b * c {
            for i in 0..ho {
                for j in 0..wo {
                    let mut acc = 0.0f64;
                    for a in 0..k {
                        for q in 0..k {
                            acc += v[p * h * w + (i * s + a) * w + j * s + q] as f64;
                        }
                    }
                    want.push(acc / (k * k) as f64);
                }
            }
        }
        assert_close("avg_pool2d", &x.avg_pool2d(k, s).unwrap().to_vec(), &want, 1e-6, 1e-6);
        assert_grads("avg_pool2d grad", |t| t[0].avg_pool2d(k, s), &[x]);
    }
    assert!(matches!(Tensor::zeros([1, 1, 2, 2]).avg_pool2d(3, 1).unwrap_err(), Error::InvalidArgument { .. }));
}
