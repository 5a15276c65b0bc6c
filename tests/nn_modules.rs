//! nn modules: output shapes, parameter names and counts, forward against f64
//! references written here, gradients of every parameter against central differences.

mod common;

use common::{assert_close, f64s, rand_tensor};
use fixpoint::nn::{
    Activation, Embedding, LayerNorm, Linear, LinearWeight, Mlp, Module, MultiHeadSelfAttention, RmsNorm, num_params,
};
use fixpoint::{Error, Result, Rng, Tensor, no_grad};

/// `Σ f(m) ⊙ r` for a fixed random `r`: analytic parameter gradients (and those of
/// `extra` inputs that require grad) against central differences of every element.
fn check_module_grads<M: Module>(what: &str, m: &mut M, extra: &[Tensor], f: impl Fn(&M, &[Tensor]) -> Result<Tensor>) {
    let (step, atol, rtol) = (1e-2f32, 2e-3f64, 1e-2f64);
    let leaves: Vec<Tensor> = extra.iter().map(|t| t.detach().requires_grad_()).collect();
    m.zero_grad();
    let y = f(m, &leaves).unwrap();
    let mut rng = Rng::new(11);
    let r: Vec<f64> = (0..y.numel()).map(|_| rng.normal() as f64).collect();
    let seed = Tensor::from_vec(r.iter().map(|&v| v as f32).collect(), y.shape()).unwrap();
    y.backward_with(&seed).unwrap();
    drop(y);
    let loss = |m: &M, xs: &[Tensor]| -> f64 {
        let y = no_grad(|| f(m, xs)).unwrap();
        y.to_vec().iter().zip(&r).map(|(&a, &b)| a as f64 * b).sum()
    };
    // Parameters.
    let n_params = m.params().len();
    for k in 0..n_params {
        let (name, analytic) = {
            let (n, p) = &m.params()[k];
            (n.clone(), p.grad().map(|g| g.to_vec()).unwrap_or_else(|| vec![0.0; p.numel()]))
        };
        for i in 0..analytic.len() {
            let base = m.params()[k].1.to_vec()[i];
            let set = |m: &mut M, v: f32| m.params_mut()[k].1.update_data(|d| d[i] = v);
            let (hi, lo) = (base + step, base - step);
            set(m, hi);
            let lh = loss(m, &leaves);
            set(m, lo);
            let ll = loss(m, &leaves);
            set(m, base);
            let numeric = (lh - ll) / (hi as f64 - lo as f64);
            let a = analytic[i] as f64;
            assert!(
                (a - numeric).abs() <= atol + rtol * numeric.abs(),
                "{what}: d/d {name}[{i}]: analytic {a} vs numeric {numeric}"
            );
        }
    }
    // Inputs.
    for (k, x) in leaves.iter().enumerate() {
        let analytic = x.grad().map(|g| g.to_vec()).unwrap_or_else(|| vec![0.0; x.numel()]);
        let base = x.to_vec();
        for i in 0..base.len() {
            let at = |v: f32| {
                let mut d = base.clone();
                d[i] = v;
                let mut xs: Vec<Tensor> = leaves.iter().map(|t| t.detach()).collect();
                xs[k] = Tensor::from_vec(d, x.shape()).unwrap();
                loss(m, &xs)
            };
            let (hi, lo) = (base[i] + step, base[i] - step);
            let numeric = (at(hi) - at(lo)) / (hi as f64 - lo as f64);
            let a = analytic[i] as f64;
            assert!(
                (a - numeric).abs() <= atol + rtol * numeric.abs(),
                "{what}: d/d input{k}[{i}]: analytic {a} vs numeric {numeric}"
            );
        }
    }
}

/// Overwrite every parameter with values from `U(lo, hi)` (so affine parts are not
/// the identity).
fn randomize(m: &mut dyn Module, lo: f32, hi: f32, rng: &mut Rng) {
    for (_, p) in m.params_mut() {
        p.update_data(|d| d.iter_mut().for_each(|v| *v = rng.range(lo, hi)));
    }
}

fn names(m: &dyn Module) -> Vec<String> {
    m.params().into_iter().map(|(n, _)| n).collect()
}

/// `x [n, i] · w [i, o] + b` in f64.
fn affine_ref(x: &[f64], n: usize, w: &[f64], i: usize, o: usize, b: Option<&[f64]>) -> Vec<f64> {
    let mut y = vec![0.0; n * o];
    for r in 0..n {
        for c in 0..o {
            let mut s = b.map_or(0.0, |b| b[c]);
            for k in 0..i {
                s += x[r * i + k] * w[k * o + c];
            }
            y[r * o + c] = s;
        }
    }
    y
}

// ----- Linear ------------------------------------------------------------------------

#[test]
fn linear_shapes_names_and_forward() {
    let mut rng = Rng::new(1);
    for &(i, o) in &[(1usize, 1usize), (7, 3), (65, 63)] {
        let lin = Linear::new(i, o, true, &mut rng);
        assert_eq!(names(&lin), ["weight", "bias"]);
        assert_eq!(num_params(&lin), i * o + o);
        assert_eq!(lin.params()[0].1.shape(), [i, o], "weight stored [in, out]");
        for batch in [vec![5usize], vec![2, 3], vec![]] {
            let shape: Vec<usize> = batch.iter().copied().chain([i]).collect();
            let x = rand_tensor(&shape, -1.0, 1.0, &mut rng);
            let y = lin.forward(&x).unwrap();
            let want_shape: Vec<usize> = batch.iter().copied().chain([o]).collect();
            assert_eq!(y.shape(), want_shape.as_slice());
            let n = x.numel() / i;
            let want = affine_ref(&f64s(&x), n, &f64s(&lin.weight().unwrap()), i, o, Some(&f64s(lin.bias().unwrap())));
            assert_close("linear", &y.to_vec(), &want, 1e-5, 1e-5);
        }
    }
    let nobias = Linear::new(4, 2, false, &mut rng);
    assert_eq!(names(&nobias), ["weight"]);
    assert_eq!(num_params(&nobias), 8);
}

#[test]
fn linear_init_matches_pytorch_bounds() {
    let mut rng = Rng::new(2);
    let lin = Linear::new(100, 300, true, &mut rng);
    let bound = 1.0 / 10.0; // 1/sqrt(fan_in)
    let w = lin.weight().unwrap().to_vec();
    assert!(w.iter().all(|v| v.abs() <= bound));
    // U(-b, b) has variance b²/3.
    let var = w.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / w.len() as f64;
    assert!((var - (bound as f64).powi(2) / 3.0).abs() < 0.1 * (bound as f64).powi(2) / 3.0, "var {var}");
    assert!(lin.bias().unwrap().to_vec().iter().all(|v| v.abs() <= bound));
    // Seeded: same rng state, same weights.
    let a = Linear::new(3, 4, true, &mut Rng::new(5));
    let b = Linear::new(3, 4, true, &mut Rng::new(5));
    assert_eq!(a.weight().unwrap().to_vec(), b.weight().unwrap().to_vec());
}

#[test]
fn linear_bad_input_is_an_error() {
    let lin = Linear::new(3, 2, true, &mut Rng::new(0));
    let e = lin.forward(&Tensor::zeros([4, 5])).unwrap_err();
    assert!(matches!(e, Error::MatMul { op: "linear", .. }), "{e}");
    assert!(e.to_string().contains("[4, 5]"), "{e}");
    assert!(lin.forward(&Tensor::scalar(1.0)).is_err());
    assert!(Linear::from_tensors(Tensor::zeros([3]), None).is_err());
    assert!(Linear::from_tensors(Tensor::zeros([3, 2]), Some(Tensor::zeros([3]))).is_err());
}

#[test]
fn linear_gradients() {
    let mut rng = Rng::new(3);
    let mut lin = Linear::new(5, 3, true, &mut rng);
    let x = rand_tensor(&[4, 5], -1.0, 1.0, &mut rng);
    check_module_grads("linear", &mut lin, &[x], |m, xs| m.forward(&xs[0]));
    let mut lin3 = Linear::new(3, 2, false, &mut rng);
    let x = rand_tensor(&[2, 3, 3], -1.0, 1.0, &mut rng);
    check_module_grads("linear batched", &mut lin3, &[x], |m, xs| m.forward(&xs[0]));
}

#[test]
fn weight_norm_forward_and_gradients() {
    let mut rng = Rng::new(4);
    let (i, o) = (6, 4);
    let mut lin = Linear::weight_normalized(i, o, true, &mut rng);
    assert_eq!(names(&lin), ["weight_g", "weight_v", "bias"]);
    assert_eq!(num_params(&lin), o + i * o + o);
    let (g, v) = match lin.weight_param() {
        LinearWeight::Normalized { g, v } => (f64s(g), f64s(v)),
        _ => panic!("expected weight norm"),
    };
    // Initially g = column norms of v, so the weight is v.
    for j in 0..o {
        let norm = (0..i).map(|r| v[r * o + j].powi(2)).sum::<f64>().sqrt();
        assert!((g[j] - norm).abs() < 1e-5 * norm);
    }
    assert_close("weight norm init", &lin.weight().unwrap().to_vec(), &v, 1e-6, 1e-5);
    // With arbitrary g and v: W[:, j] = g[j] v[:, j] / ||v[:, j]||.
    randomize(&mut lin, -1.0, 1.0, &mut rng);
    let p: Vec<Vec<f64>> = lin.params().iter().map(|(_, t)| f64s(t)).collect();
    let (g, v, b) = (&p[0], &p[1], &p[2]);
    let mut w = vec![0.0; i * o];
    for j in 0..o {
        let norm = (0..i).map(|r| v[r * o + j].powi(2)).sum::<f64>().sqrt();
        for r in 0..i {
            w[r * o + j] = g[j] * v[r * o + j] / norm;
        }
    }
    let x = rand_tensor(&[3, i], -1.0, 1.0, &mut rng);
    let want = affine_ref(&f64s(&x), 3, &w, i, o, Some(b));
    assert_close("weight norm forward", &lin.forward(&x).unwrap().to_vec(), &want, 1e-5, 1e-5);
    check_module_grads("weight norm", &mut lin, &[x], |m, xs| m.forward(&xs[0]));
}

// ----- norms -------------------------------------------------------------------------

fn layer_norm_ref(x: &[f64], d: usize, w: &[f64], b: &[f64], eps: f64) -> Vec<f64> {
    x.chunks(d)
        .flat_map(|row| {
            let mean = row.iter().sum::<f64>() / d as f64;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / d as f64;
            row.iter().enumerate().map(move |(j, v)| (v - mean) / (var + eps).sqrt() * w[j] + b[j]).collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn layer_norm_forward_and_gradients() {
    let mut rng = Rng::new(5);
    for d in [1usize, 7, 65] {
        let mut ln = LayerNorm::new(d, 1e-5, true);
        assert_eq!(names(&ln), ["weight", "bias"]);
        assert_eq!(num_params(&ln), 2 * d);
        randomize(&mut ln, 0.5, 1.5, &mut rng);
        let x = rand_tensor(&[2, 3, d], -2.0, 2.0, &mut rng);
        let y = ln.forward(&x).unwrap();
        assert_eq!(y.shape(), [2, 3, d]);
        let p: Vec<Vec<f64>> = ln.params().iter().map(|(_, t)| f64s(t)).collect();
        let want = layer_norm_ref(&f64s(&x), d, &p[0], &p[1], 1e-5);
        assert_close("layer_norm", &y.to_vec(), &want, 1e-4, 1e-4);
    }
    let plain = LayerNorm::new(4, 1e-5, false);
    assert_eq!(num_params(&plain), 0);
    let x = rand_tensor(&[3, 4], -1.0, 1.0, &mut rng);
    let want = layer_norm_ref(&f64s(&x), 4, &[1.0; 4], &[0.0; 4], 1e-5);
    assert_close("layer_norm no affine", &plain.forward(&x).unwrap().to_vec(), &want, 1e-5, 1e-4);
    assert!(matches!(plain.forward(&Tensor::zeros([3, 5])), Err(Error::ShapeMismatch { .. })));

    let mut ln = LayerNorm::new(5, 1e-5, true);
    randomize(&mut ln, 0.5, 1.5, &mut rng);
    let x = rand_tensor(&[3, 5], -2.0, 2.0, &mut rng);
    check_module_grads("layer_norm", &mut ln, &[x], |m, xs| m.forward(&xs[0]));
}

#[test]
fn rms_norm_forward_and_gradients() {
    let mut rng = Rng::new(6);
    for d in [1usize, 8, 63] {
        let mut rn = RmsNorm::new(d, 1e-6, true);
        assert_eq!(names(&rn), ["weight"]);
        randomize(&mut rn, 0.5, 1.5, &mut rng);
        let x = rand_tensor(&[4, d], -2.0, 2.0, &mut rng);
        let w = f64s(rn.params()[0].1);
        let want: Vec<f64> = f64s(&x)
            .chunks(d)
            .flat_map(|row| {
                let ms = row.iter().map(|v| v * v).sum::<f64>() / d as f64;
                row.iter().enumerate().map(|(j, v)| v / (ms + 1e-6).sqrt() * w[j]).collect::<Vec<_>>()
            })
            .collect();
        assert_close("rms_norm", &rn.forward(&x).unwrap().to_vec(), &want, 1e-5, 1e-4);
    }
    assert_eq!(num_params(&RmsNorm::new(3, 1e-6, false)), 0);
    let mut rn = RmsNorm::new(4, 1e-6, true);
    randomize(&mut rn, 0.5, 1.5, &mut rng);
    let x = rand_tensor(&[3, 4], 0.2, 2.0, &mut rng);
    check_module_grads("rms_norm", &mut rn, &[x], |m, xs| m.forward(&xs[0]));
}

// ----- Embedding ---------------------------------------------------------------------

#[test]
fn embedding_lookup_and_gradients() {
    let mut rng = Rng::new(7);
    let mut emb = Embedding::new(5, 3, &mut rng);
    assert_eq!(names(&emb), ["weight"]);
    assert_eq!(num_params(&emb), 15);
    let ids = [4usize, 0, 4, 2, 1, 3];
    let y = emb.forward(&ids, &[2, 3]).unwrap();
    assert_eq!(y.shape(), [2, 3, 3]);
    let w = emb.weight().to_vec();
    let want: Vec<f64> = ids.iter().flat_map(|&i| w[i * 3..i * 3 + 3].iter().map(|&v| v as f64)).collect();
    assert_close("embedding", &y.to_vec(), &want, 0.0, 0.0);
    // Repeated ids accumulate their gradients.
    check_module_grads("embedding", &mut emb, &[], |m, _| m.forward(&ids, &[2, 3]));
    assert!(matches!(emb.forward(&[5], &[1]), Err(Error::Index { index: 5, size: 5, .. })));
    assert!(emb.forward(&[1, 2], &[3]).is_err());
}

// ----- Mlp ---------------------------------------------------------------------------

#[test]
fn mlp_shapes_names_and_forward() {
    let mut rng = Rng::new(8);
    let mlp = Mlp::new(&[3, 7, 5, 2], Activation::Relu, &mut rng).unwrap();
    assert_eq!(
        names(&mlp),
        ["layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias", "layers.2.weight", "layers.2.bias"]
    );
    assert_eq!(num_params(&mlp), 3 * 7 + 7 + 7 * 5 + 5 + 5 * 2 + 2);
    let x = rand_tensor(&[9, 3], -1.0, 1.0, &mut rng);
    let y = mlp.forward(&x).unwrap();
    assert_eq!(y.shape(), [9, 2]);
    // Reference: affine, relu, affine, relu, affine, in f64.
    let mut h = f64s(&x);
    let mut width = 3;
    for (k, l) in mlp.layers().iter().enumerate() {
        h = affine_ref(&h, 9, &f64s(&l.weight().unwrap()), width, l.out_features(), Some(&f64s(l.bias().unwrap())));
        width = l.out_features();
        if k < 2 {
            h.iter_mut().for_each(|v| *v = v.max(0.0));
        }
    }
    assert_close("mlp", &y.to_vec(), &h, 1e-5, 1e-5);
    // names and params_mut agree in order
    let mut m2 = mlp.clone();
    let mut_names: Vec<String> = m2.params_mut().into_iter().map(|(n, _)| n).collect();
    assert_eq!(mut_names, names(&mlp));
    assert!(Mlp::new(&[3], Activation::Relu, &mut rng).is_err());
    assert!(Mlp::new(&[3, 2], Activation::Relu, &mut rng).unwrap().with_dropout(1.0).is_err());
}

#[test]
fn mlp_gradients() {
    let mut rng = Rng::new(9);
    for act in [Activation::Gelu, Activation::Tanh, Activation::Silu] {
        let mut mlp = Mlp::new(&[3, 4, 2], act, &mut rng).unwrap();
        let x = rand_tensor(&[3, 3], -1.0, 1.0, &mut rng);
        check_module_grads(act.name(), &mut mlp, &[x], |m, xs| m.forward(&xs[0]));
    }
}

#[test]
fn mlp_dropout_only_in_training() {
    let mut rng = Rng::new(10);
    let mut mlp = Mlp::new(&[4, 64, 3], Activation::Relu, &mut rng).unwrap().with_dropout(0.5).unwrap();
    let x = rand_tensor(&[8, 4], -1.0, 1.0, &mut rng);
    let eval = mlp.forward(&x).unwrap().to_vec();
    let t1 = mlp.forward_train(&x, &mut Rng::new(1)).unwrap().to_vec();
    let t1b = mlp.forward_train(&x, &mut Rng::new(1)).unwrap().to_vec();
    let t2 = mlp.forward_train(&x, &mut Rng::new(2)).unwrap().to_vec();
    assert_ne!(eval, t1, "dropout active in training mode");
    assert_eq!(t1, t1b, "same rng, same masks");
    assert_ne!(t1, t2);
    mlp.train(false);
    assert_eq!(mlp.forward_train(&x, &mut Rng::new(1)).unwrap().to_vec(), eval, "no dropout in eval mode");
}

// ----- attention ---------------------------------------------------------------------

/// Multi-head self-attention in f64 from the module's weights.
fn attention_ref(att: &MultiHeadSelfAttention, x: &[f64], b: usize, t: usize, causal: bool) -> Vec<f64> {
    let d = att.d_model();
    let (h, dh) = (att.n_heads(), d / att.n_heads());
    let qkv =
        affine_ref(x, b * t, &f64s(&att.qkv().weight().unwrap()), d, 3 * d, Some(&f64s(att.qkv().bias().unwrap())));
    let at =
        |bi: usize, ti: usize, which: usize, hi: usize, e: usize| qkv[(bi * t + ti) * 3 * d + which * d + hi * dh + e];
    let mut heads = vec![0.0; b * t * d];
    for bi in 0..b {
        for hi in 0..h {
            for i in 0..t {
                let keys = if causal { i + 1 } else { t };
                let s: Vec<f64> = (0..keys)
                    .map(|j| {
                        (0..dh).map(|e| at(bi, i, 0, hi, e) * at(bi, j, 1, hi, e)).sum::<f64>() / (dh as f64).sqrt()
                    })
                    .collect();
                let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = s.iter().map(|v| (v - m).exp()).sum();
                for e in 0..dh {
                    heads[(bi * t + i) * d + hi * dh + e] =
                        (0..keys).map(|j| (s[j] - m).exp() / z * at(bi, j, 2, hi, e)).sum::<f64>();
                }
            }
        }
    }
    affine_ref(&heads, b * t, &f64s(&att.proj().weight().unwrap()), d, d, Some(&f64s(att.proj().bias().unwrap())))
}

#[test]
fn attention_matches_f64_reference() {
    let mut rng = Rng::new(12);
    for &(b, t, d, h, causal) in
        &[(2usize, 5usize, 8usize, 2usize, false), (1, 7, 6, 3, true), (3, 1, 4, 4, true), (2, 9, 12, 1, false)]
    {
        let att = MultiHeadSelfAttention::new(d, h, causal, &mut rng).unwrap();
        assert_eq!(names(&att), ["qkv.weight", "qkv.bias", "proj.weight", "proj.bias"]);
        assert_eq!(num_params(&att), d * 3 * d + 3 * d + d * d + d);
        let x = rand_tensor(&[b, t, d], -1.0, 1.0, &mut rng);
        let y = att.forward(&x).unwrap();
        assert_eq!(y.shape(), [b, t, d]);
        let want = attention_ref(&att, &f64s(&x), b, t, causal);
        assert_close(&format!("attention b{b} t{t} d{d} h{h} causal {causal}"), &y.to_vec(), &want, 1e-5, 1e-4);
    }
    // Unbatched input.
    let att = MultiHeadSelfAttention::new(4, 2, false, &mut rng).unwrap();
    let x = rand_tensor(&[3, 4], -1.0, 1.0, &mut rng);
    let y = att.forward(&x).unwrap();
    assert_eq!(y.shape(), [3, 4]);
    assert_close("attention unbatched", &y.to_vec(), &attention_ref(&att, &f64s(&x), 1, 3, false), 1e-5, 1e-4);
}

#[test]
fn attention_gradients() {
    let mut rng = Rng::new(13);
    for causal in [false, true] {
        let mut att = MultiHeadSelfAttention::new(4, 2, causal, &mut rng).unwrap();
        let x = rand_tensor(&[2, 3, 4], -1.0, 1.0, &mut rng);
        check_module_grads(&format!("attention causal {causal}"), &mut att, &[x], |m, xs| m.forward(&xs[0]));
    }
}

#[test]
fn causal_attention_ignores_the_future() {
    let mut rng = Rng::new(14);
    let (b, t, d) = (2, 6, 8);
    for causal in [true, false] {
        let att = MultiHeadSelfAttention::new(d, 2, causal, &mut rng).unwrap();
        let x = rand_tensor(&[b, t, d], -1.0, 1.0, &mut rng);
        let y = att.forward(&x).unwrap().to_vec();
        for cut in 0..t - 1 {
            // Change every input after position `cut`.
            let mut xd = x.to_vec();
            for bi in 0..b {
                for ti in cut + 1..t {
                    for e in 0..d {
                        xd[(bi * t + ti) * d + e] += rng.range(-2.0, 2.0);
                    }
                }
            }
            let y2 = att.forward(&Tensor::from_vec(xd, [b, t, d]).unwrap()).unwrap().to_vec();
            let mut past_changed = false;
            for bi in 0..b {
                for ti in 0..=cut {
                    for e in 0..d {
                        let k = (bi * t + ti) * d + e;
                        past_changed |= (y[k] - y2[k]).abs() > 1e-6;
                    }
                }
            }
            // Causal: outputs up to `cut` are unchanged. Not causal: they do change
            // (which shows the test can see a leak).
            assert_eq!(past_changed, !causal, "causal {causal}, cut {cut}");
        }
    }
}

#[test]
fn attention_bad_config_and_input() {
    let mut rng = Rng::new(15);
    assert!(matches!(MultiHeadSelfAttention::new(6, 4, false, &mut rng), Err(Error::InvalidArgument { .. })));
    assert!(MultiHeadSelfAttention::new(6, 0, false, &mut rng).is_err());
    let att = MultiHeadSelfAttention::new(4, 2, false, &mut rng).unwrap();
    assert!(matches!(att.forward(&Tensor::zeros([2, 3, 5])), Err(Error::ShapeMismatch { .. })));
    assert!(att.forward(&Tensor::zeros([4])).is_err());
    let bad = MultiHeadSelfAttention::from_linears(
        Linear::new(4, 8, true, &mut rng),
        Linear::new(4, 4, true, &mut rng),
        2,
        false,
    );
    assert!(bad.is_err());
}
