//! The diagonal scan: every kernel (called explicitly) against an f64 sequential reference
//! written here, forward and backward, forward and reverse, with and without `h0`;
//! gradients of the op against central differences; bit-identical results across thread
//! counts; accuracy on long, slowly decaying sequences; bad input.

mod common;
use common::*;
use fixpoint::ops::scan::{
    CHUNKED_MIN_THREADS, ScanGrads, ScanKernel, ScanOptions, ScanSpec, chunk_len, scan_backward_chunked,
    scan_backward_seq, scan_backward_simd, scan_chunked, scan_seq, scan_simd,
};
use fixpoint::{Error, Rng, Tensor};
use proptest::prelude::*;

const KERNELS: [ScanKernel; 3] = [ScanKernel::Sequential, ScanKernel::Simd, ScanKernel::Chunked];

type FwdFn = fn(&ScanSpec, &[f32], &[f32], Option<&[f32]>, &mut [f32]) -> fixpoint::Result<()>;
type BwdFn = fn(&ScanSpec, &[f32], &[f32], Option<&[f32]>, &[f32], ScanGrads) -> fixpoint::Result<()>;

fn fwd_fn(k: ScanKernel) -> FwdFn {
    match k {
        ScanKernel::Sequential => scan_seq,
        ScanKernel::Simd => scan_simd,
        _ => scan_chunked,
    }
}
fn bwd_fn(k: ScanKernel) -> BwdFn {
    match k {
        ScanKernel::Sequential => scan_backward_seq,
        ScanKernel::Simd => scan_backward_simd,
        _ => scan_backward_chunked,
    }
}

/// Time index of step `f` in the direction of the recurrence.
fn time_of(spec: &ScanSpec, f: usize) -> usize {
    if spec.reverse { spec.time - 1 - f } else { f }
}

/// f64 reference forward: `(h, scale)` where `scale_t = |a_t|·scale_{t−1} + |u_t|`
/// (from `|h0|`) bounds the magnitudes that rounding errors are relative to.
fn ref_forward(spec: &ScanSpec, a: &[f32], u: &[f32], h0: Option<&[f32]>) -> (Vec<f64>, Vec<f64>) {
    let (t_len, d) = (spec.time, spec.channels);
    let mut h = vec![0.0f64; spec.numel()];
    let mut scale = vec![0.0f64; spec.numel()];
    for b in 0..spec.batch {
        for c in 0..d {
            let mut s = h0.map_or(0.0, |h0| h0[b * d + c] as f64);
            let mut m = s.abs();
            for f in 0..t_len {
                let i = (b * t_len + time_of(spec, f)) * d + c;
                s = a[i] as f64 * s + u[i] as f64;
                m = (a[i] as f64).abs() * m + (u[i] as f64).abs();
                h[i] = s;
                scale[i] = m;
            }
        }
    }
    (h, scale)
}

/// f64 reference backward from the definition: `g_t = dh_t + a_{t+1} g_{t+1}`,
/// `du = g`, `da_t = g_t h_{t−1}`, `dh0 = a_0 g_0` (in the forward's step order),
/// with scales for the tolerances.
struct RefGrads {
    du: Vec<f64>,
    da: Vec<f64>,
    dh0: Vec<f64>,
    g_scale: Vec<f64>,
    da_scale: Vec<f64>,
    dh0_scale: Vec<f64>,
}

fn ref_backward(spec: &ScanSpec, a: &[f32], h: &[f32], h0: Option<&[f32]>, dh: &[f32]) -> RefGrads {
    let (t_len, d, n) = (spec.time, spec.channels, spec.numel());
    let mut r = RefGrads {
        du: vec![0.0; n],
        da: vec![0.0; n],
        dh0: vec![0.0; spec.batch * d],
        g_scale: vec![0.0; n],
        da_scale: vec![0.0; n],
        dh0_scale: vec![0.0; spec.batch * d],
    };
    for b in 0..spec.batch {
        for c in 0..d {
            let idx = |f: usize| (b * t_len + time_of(spec, f)) * d + c;
            let (mut g, mut m) = (0.0f64, 0.0f64);
            for f in (0..t_len).rev() {
                let i = idx(f);
                let coef = if f + 1 < t_len { a[idx(f + 1)] as f64 } else { 0.0 };
                g = dh[i] as f64 + coef * g;
                m = (dh[i] as f64).abs() + coef.abs() * m;
                let hp = if f > 0 { h[idx(f - 1)] as f64 } else { h0.map_or(0.0, |h0| h0[b * d + c] as f64) };
                r.du[i] = g;
                r.da[i] = g * hp;
                r.g_scale[i] = m;
                r.da_scale[i] = m * hp.abs();
            }
            if t_len > 0 {
                let a0 = a[idx(0)] as f64;
                r.dh0[b * d + c] = a0 * g;
                r.dh0_scale[b * d + c] = a0.abs() * m;
            }
        }
    }
    r
}

/// `|got − want| ≤ rel·scale + 1e-30` element-wise, NaN only where the reference has NaN.
fn assert_scaled(what: &str, got: &[f32], want: &[f64], scale: &[f64], rel: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for i in 0..got.len() {
        let (g, w) = (got[i] as f64, want[i]);
        let ok = if w.is_nan() { g.is_nan() } else { (g - w).abs() <= rel * scale[i] + 1e-30 };
        assert!(ok, "{what}: element {i}: got {g}, reference {w} (scale {})", scale[i]);
    }
}

fn rand_vec(n: usize, lo: f32, hi: f32, rng: &mut Rng) -> Vec<f32> {
    (0..n).map(|_| rng.range(lo, hi)).collect()
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap()
}

/// Run every kernel forward and backward on one case and compare with the references.
fn check_case(spec: ScanSpec, with_h0: bool, seed: u64) {
    let mut rng = Rng::new(seed);
    let n = spec.numel();
    let a = rand_vec(n, -0.999, 0.999, &mut rng);
    let u = rand_vec(n, -1.0, 1.0, &mut rng);
    let dh = rand_vec(n, -1.0, 1.0, &mut rng);
    let h0v = rand_vec(spec.batch * spec.channels, -2.0, 2.0, &mut rng);
    let h0 = with_h0.then_some(h0v.as_slice());
    let (want, scale) = ref_forward(&spec, &a, &u, h0);
    let mut h_seq = vec![0.0f32; n];
    scan_seq(&spec, &a, &u, h0, &mut h_seq).unwrap();
    let rg = ref_backward(&spec, &a, &h_seq, h0, &dh);
    for k in KERNELS {
        let what = format!("{} {spec:?} h0={with_h0}", k.name());
        let mut h = vec![f32::NAN; n];
        fwd_fn(k)(&spec, &a, &u, h0, &mut h).unwrap();
        assert_scaled(&format!("{what} forward"), &h, &want, &scale, 1e-5);
        let (mut du, mut da, mut dh0) = (vec![f32::NAN; n], vec![f32::NAN; n], vec![f32::NAN; h0v.len()]);
        let grads = ScanGrads { du: &mut du, da: Some(&mut da), dh0: Some(&mut dh0) };
        bwd_fn(k)(&spec, &a, &h_seq, h0, &dh, grads).unwrap();
        assert_scaled(&format!("{what} du"), &du, &rg.du, &rg.g_scale, 1e-5);
        assert_scaled(&format!("{what} da"), &da, &rg.da, &rg.da_scale, 1e-5);
        assert_scaled(&format!("{what} dh0"), &dh0, &rg.dh0, &rg.dh0_scale, 1e-5);
        // Without da the kernel must still produce the same du.
        let mut du2 = vec![f32::NAN; n];
        bwd_fn(k)(&spec, &a, &h_seq, h0, &dh, ScanGrads { du: &mut du2, da: None, dh0: None }).unwrap();
        assert_eq!(du2, du, "{what}: du without da");
    }
}

/// Sequence lengths: 1, small primes, lengths around chunk boundaries, up to 5000.
fn time_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(1usize),
        Just(2),
        Just(7),
        Just(127),
        Just(131),
        Just(997),
        Just(1009),
        Just(4093),
        Just(4999),
        Just(5000),
        1usize..=5000,
    ]
}

/// Channel counts: 1, non-multiples of 8, up to 300.
fn channels() -> impl Strategy<Value = usize> {
    prop_oneof![Just(1usize), Just(7), Just(8), Just(9), Just(63), Just(65), Just(300), 1usize..=300]
}

fn case() -> impl Strategy<Value = (ScanSpec, bool, u64)> {
    (time_len(), channels()).prop_flat_map(|(t, d)| {
        // Keep a case under ~1.5 M elements so that the file runs in seconds.
        let max_b = (1_500_000 / (t * d)).clamp(1, 4);
        (1..=max_b, any::<bool>(), any::<bool>(), any::<u64>())
            .prop_map(move |(b, rev, h0, seed)| (ScanSpec::new(b, t, d).reversed(rev), h0, seed))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn kernels_match_f64_reference((spec, with_h0, seed) in case()) {
        // A 3-thread pool runs the parallel paths with uneven splits.
        pool(3).install(|| check_case(spec, with_h0, seed));
    }
}

#[test]
fn kernels_match_reference_on_fixed_shapes() {
    // Shapes that chunk for sure (many chunks, a short last chunk), tiny and empty ones.
    let shapes = [(1, 1, 1), (3, 1, 5), (2, 4999, 9), (1, 5000, 300), (2, 4093, 17), (5, 3, 0), (2, 0, 4)];
    for (i, &(b, t, d)) in shapes.iter().enumerate() {
        for rev in [false, true] {
            for h0 in [false, true] {
                for threads in [1, 2] {
                    pool(threads).install(|| check_case(ScanSpec::new(b, t, d).reversed(rev), h0, i as u64));
                }
            }
        }
    }
    // The chunked kernel really chunks these.
    assert!(5000 > 2 * chunk_len(5000, 300) && 4999 > 2 * chunk_len(4999, 9));
}

/// `a.scan(u, h0)` for tests, with a and u in (−0.9, 0.9).
fn op_inputs(b: usize, t: usize, d: usize, rng: &mut Rng) -> Vec<Tensor> {
    vec![
        rand_tensor(&[b, t, d], -0.9, 0.9, rng),
        rand_tensor(&[b, t, d], -1.0, 1.0, rng),
        rand_tensor(&[b, d], -1.0, 1.0, rng),
    ]
}

#[test]
fn op_gradients_match_central_differences() {
    let mut rng = Rng::new(7);
    for (b, t, d) in [(1, 1, 1), (2, 5, 3), (1, 9, 9), (2, 4, 17)] {
        let inputs = op_inputs(b, t, d, &mut rng);
        for kernel in [ScanKernel::Auto, ScanKernel::Sequential, ScanKernel::Simd, ScanKernel::Chunked] {
            for reverse in [false, true] {
                let opts = ScanOptions { reverse, kernel };
                let what = format!("scan {kernel:?} reverse={reverse} [{b}, {t}, {d}]");
                assert_grads(&what, |v| v[0].scan(&v[1], Some(&v[2]), opts), &inputs);
                assert_grads(&what, |v| v[0].scan(&v[1], None, opts), &inputs[..2]);
            }
        }
    }
}

#[test]
fn op_gradients_through_views_and_partial_needs() {
    let mut rng = Rng::new(8);
    // a given transposed (non-contiguous), u constant: only a and h0 need gradients.
    let a_t = rand_tensor(&[2, 3, 6], -0.9, 0.9, &mut rng);
    let u = rand_tensor(&[2, 6, 3], -1.0, 1.0, &mut rng);
    let h0 = rand_tensor(&[2, 3], -1.0, 1.0, &mut rng);
    assert_grads(
        "scan through a transposed view",
        |v| v[0].transpose(1, 2)?.scan(&u, Some(&v[1]), ScanOptions::reversed()),
        &[a_t.clone(), h0.clone()],
    );
    // Only u needs a gradient.
    let a = a_t.transpose(1, 2).unwrap();
    assert_grads("scan wrt u only", |v| a.scan(&v[0], Some(&h0), ScanOptions::forward()), std::slice::from_ref(&u));
}

/// A directional-derivative check of the op on a shape where the chunked kernel really
/// chunks: `(L(x + εv) − L(x − εv)) / 2ε` against `⟨∇L, v⟩` for `L = Σ r ⊙ h`.
#[test]
fn chunked_op_gradient_directional() {
    let (b, t, d) = (1, 400, 256);
    assert!(t > 2 * chunk_len(t, d));
    let mut rng = Rng::new(9);
    let x = op_inputs(b, t, d, &mut rng);
    let v: Vec<Vec<f32>> = x.iter().map(|x| rand_vec(x.numel(), -1.0, 1.0, &mut rng)).collect();
    let r = rand_vec(b * t * d, -1.0, 1.0, &mut rng);
    for reverse in [false, true] {
        let opts = ScanOptions { reverse, kernel: ScanKernel::Chunked };
        let loss = |xs: &[Tensor]| -> f64 {
            let h = xs[0].scan(&xs[1], Some(&xs[2]), opts).unwrap().to_vec();
            h.iter().zip(&r).map(|(&h, &r)| h as f64 * r as f64).sum()
        };
        let leaves: Vec<Tensor> = x.iter().map(|t| t.detach().requires_grad_()).collect();
        let h = leaves[0].scan(&leaves[1], Some(&leaves[2]), opts).unwrap();
        h.backward_with(&Tensor::from_slice(&r, [b, t, d]).unwrap()).unwrap();
        for k in 0..3 {
            let grad = leaves[k].grad().unwrap().to_vec();
            let analytic: f64 = grad.iter().zip(&v[k]).map(|(&g, &v)| g as f64 * v as f64).sum();
            let eps = 1e-3f32;
            let shifted = |sign: f32| -> Vec<Tensor> {
                let mut xs: Vec<Tensor> = x.iter().map(|t| t.detach()).collect();
                let data: Vec<f32> = x[k].to_vec().iter().zip(&v[k]).map(|(&x, &v)| x + sign * eps * v).collect();
                xs[k] = Tensor::from_vec(data, x[k].shape_obj().clone()).unwrap();
                xs
            };
            let numeric = (loss(&shifted(1.0)) - loss(&shifted(-1.0))) / (2.0 * eps as f64);
            assert!(
                (analytic - numeric).abs() <= 1e-2 * analytic.abs().max(1.0),
                "input {k} reverse={reverse}: analytic {analytic} vs numeric {numeric}"
            );
        }
    }
}

/// Forward and backward outputs of one kernel.
fn run_kernel(k: ScanKernel, spec: &ScanSpec, a: &[f32], u: &[f32], h0: &[f32], dh: &[f32]) -> [Vec<f32>; 4] {
    let n = spec.numel();
    let mut h = vec![0.0; n];
    fwd_fn(k)(spec, a, u, Some(h0), &mut h).unwrap();
    let (mut du, mut da, mut dh0) = (vec![0.0; n], vec![0.0; n], vec![0.0; h0.len()]);
    bwd_fn(k)(spec, a, &h, Some(h0), dh, ScanGrads { du: &mut du, da: Some(&mut da), dh0: Some(&mut dh0) }).unwrap();
    [h, du, da, dh0]
}

fn bits(v: &[Vec<f32>; 4]) -> Vec<Vec<u32>> {
    v.iter().map(|x| x.iter().map(|f| f.to_bits()).collect()).collect()
}

#[test]
fn chunked_is_bit_identical_across_thread_counts() -> Result<(), rayon::ThreadPoolBuildError> {
    // Few channels, long sequence: Auto picks the chunked kernel given enough threads
    // (on 2 threads the SIMD kernel on one core is faster, so Auto keeps that).
    let spec = ScanSpec::new(1, 50_000, 16);
    let threads = CHUNKED_MIN_THREADS;
    let selected = pool(threads).install(|| ScanKernel::select(&spec, threads));
    assert_eq!(selected, ScanKernel::Chunked);
    let mut rng = Rng::new(11);
    let n = spec.numel();
    let (a, u, dh) =
        (rand_vec(n, 0.9, 1.0, &mut rng), rand_vec(n, -1.0, 1.0, &mut rng), rand_vec(n, -1.0, 1.0, &mut rng));
    let h0 = rand_vec(spec.channels, -1.0, 1.0, &mut rng);
    for rev in [false, true] {
        let spec = spec.reversed(rev);
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()?
            .install(|| run_kernel(ScanKernel::Chunked, &spec, &a, &u, &h0, &dh));
        let two = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()?
            .install(|| run_kernel(ScanKernel::Chunked, &spec, &a, &u, &h0, &dh));
        assert!(bits(&one) == bits(&two), "chunked reverse={rev}: 1 and 2 threads differ");
        let many = pool(threads).install(|| run_kernel(ScanKernel::Chunked, &spec, &a, &u, &h0, &dh));
        assert!(bits(&one) == bits(&many), "chunked reverse={rev}: 1 and {threads} threads differ");
        // And through the op with Auto, which picks the chunked kernel on that pool.
        let t = |v: &[f32]| Tensor::from_slice(v, [1, 50_000, 16]).unwrap();
        let h0t = Tensor::from_slice(&h0, [1, 16]).unwrap();
        let opts = ScanOptions { reverse: rev, kernel: ScanKernel::Auto };
        let op = pool(threads).install(|| t(&a).scan(&t(&u), Some(&h0t), opts).unwrap().to_vec());
        assert!(op.iter().zip(&two[0]).all(|(x, y)| x.to_bits() == y.to_bits()), "auto on {threads} threads");
    }
    Ok(())
}

#[test]
fn simd_is_bit_identical_across_thread_counts_and_to_seq() {
    // One batch row of many channels, so the SIMD kernel splits the channels into blocks
    // (256, 256 and 91 wide) on 2 and 3 threads.
    let spec = ScanSpec::new(1, 1500, 603);
    let mut rng = Rng::new(12);
    let n = spec.numel();
    let (a, u, dh) =
        (rand_vec(n, -1.0, 1.0, &mut rng), rand_vec(n, -1.0, 1.0, &mut rng), rand_vec(n, -1.0, 1.0, &mut rng));
    let h0 = rand_vec(spec.channels, -1.0, 1.0, &mut rng);
    for rev in [false, true] {
        let spec = spec.reversed(rev);
        let runs: Vec<_> = [1, 2, 3]
            .iter()
            .map(|&t| bits(&pool(t).install(|| run_kernel(ScanKernel::Simd, &spec, &a, &u, &h0, &dh))))
            .collect();
        assert!(runs[0] == runs[1] && runs[0] == runs[2], "simd reverse={rev}: thread counts differ");
        // One fused multiply-add per step in both, so the SIMD kernel equals the reference.
        if cfg!(target_feature = "fma") {
            let seq = bits(&run_kernel(ScanKernel::Sequential, &spec, &a, &u, &h0, &dh));
            assert!(runs[0] == seq, "simd reverse={rev}: differs from the sequential kernel");
        }
    }
}

/// Norm-wise relative error `‖x − ref‖₂ / ‖ref‖₂`.
fn rel_err(x: &[f32], want: &[f64]) -> f64 {
    let num: f64 = x.iter().zip(want).map(|(&x, &w)| (x as f64 - w).powi(2)).sum();
    let den: f64 = want.iter().map(|w| w * w).sum();
    (num / den).sqrt()
}

#[test]
fn long_slow_decay_error_within_twice_sequential() {
    // T = 65,536 and a in [0.999, 0.9999]: the state sums thousands of steps.
    let spec = ScanSpec::new(1, 65_536, 24);
    let mut rng = Rng::new(13);
    let n = spec.numel();
    let a = rand_vec(n, 0.999, 0.9999, &mut rng);
    let u = rand_vec(n, -1.0, 1.0, &mut rng);
    let dh = rand_vec(n, -1.0, 1.0, &mut rng);
    let h0 = rand_vec(spec.channels, -1.0, 1.0, &mut rng);
    for rev in [false, true] {
        let spec = spec.reversed(rev);
        let (want, _) = ref_forward(&spec, &a, &u, Some(&h0));
        let seq = run_kernel(ScanKernel::Sequential, &spec, &a, &u, &h0, &dh);
        let rg = ref_backward(&spec, &a, &seq[0], Some(&h0), &dh);
        let refs = [&want, &rg.du, &rg.da];
        for threads in [1, 2] {
            for k in [ScanKernel::Simd, ScanKernel::Chunked] {
                let got = pool(threads).install(|| run_kernel(k, &spec, &a, &u, &h0, &dh));
                for (j, name) in ["h", "du", "da"].iter().enumerate() {
                    let (e, e_seq) = (rel_err(&got[j], refs[j]), rel_err(&seq[j], refs[j]));
                    eprintln!("{} {name} reverse={rev} threads={threads}: {e:.3e} (seq {e_seq:.3e})", k.name());
                    assert!(
                        e <= 2.0 * e_seq,
                        "{} {name} reverse={rev} threads={threads}: error {e:.3e} vs sequential {e_seq:.3e}",
                        k.name()
                    );
                }
            }
        }
    }
}

#[test]
fn nan_propagates_forward_in_time_within_its_channel() {
    let spec = ScanSpec::new(2, 3000, 20);
    assert!(spec.time > 2 * chunk_len(spec.time, spec.channels));
    let mut rng = Rng::new(14);
    let n = spec.numel();
    for rev in [false, true] {
        let spec = spec.reversed(rev);
        let mut a = rand_vec(n, -0.99, 0.99, &mut rng);
        let mut u = rand_vec(n, -1.0, 1.0, &mut rng);
        a[(3000 + 1500) * 20 + 3] = f32::NAN; // batch 1, t = 1500, channel 3
        u[777 * 20 + 19] = f32::NAN; // batch 0, t = 777, channel 19
        let (want, _) = ref_forward(&spec, &a, &u, None);
        for k in KERNELS {
            for threads in [1, 2] {
                let mut h = vec![0.0; n];
                pool(threads).install(|| fwd_fn(k)(&spec, &a, &u, None, &mut h)).unwrap();
                let nan_at: Vec<bool> = h.iter().map(|x| x.is_nan()).collect();
                let want_nan: Vec<bool> = want.iter().map(|x| x.is_nan()).collect();
                assert_eq!(nan_at, want_nan, "{} reverse={rev}: NaN pattern", k.name());
                assert_eq!(nan_at.iter().filter(|&&x| x).count(), if rev { 1501 + 778 } else { 1500 + 2223 });
                // The backward runs to completion too.
                let (mut du, mut da) = (vec![0.0; n], vec![0.0; n]);
                let grads = ScanGrads { du: &mut du, da: Some(&mut da), dh0: None };
                pool(threads).install(|| bwd_fn(k)(&spec, &a, &h, None, &u, grads)).unwrap();
            }
        }
    }
}

#[test]
fn bad_shapes_are_errors_naming_both_shapes() {
    let a = Tensor::zeros([2, 5, 3]);
    let err = a.scan(&Tensor::zeros([2, 5, 4]), None, ScanOptions::forward()).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { op: "scan", .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("[2, 5, 3]") && msg.contains("[2, 5, 4]"), "{msg}");

    let err = a.scan(&a, Some(&Tensor::zeros([2, 5])), ScanOptions::forward()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("[2, 5]") && msg.contains("[2, 5, 3]") && msg.contains("[2, 3]"), "{msg}");

    let flat = Tensor::zeros([5, 3]);
    let err = flat.scan(&flat, None, ScanOptions::forward()).unwrap_err();
    assert!(err.to_string().contains("[5, 3]"), "{err}");

    // Kernels check their slices.
    let spec = ScanSpec::new(2, 5, 3);
    let mut h = vec![0.0; 30];
    assert!(scan_simd(&spec, &[0.0; 29], &[0.0; 30], None, &mut h).is_err());
    assert!(scan_chunked(&spec, &[0.0; 30], &[0.0; 30], Some(&[0.0; 5]), &mut h).is_err());
    let mut du = vec![0.0; 30];
    let grads = ScanGrads { du: &mut du, da: None, dh0: Some(&mut [0.0; 7]) };
    assert!(scan_backward_seq(&spec, &[0.0; 30], &[0.0; 30], None, &[0.0; 30], grads).is_err());
}

#[test]
fn op_matches_reference_and_records_graph() {
    let mut rng = Rng::new(15);
    let x = op_inputs(3, 37, 11, &mut rng);
    for reverse in [false, true] {
        let h = x[0].scan(&x[1], Some(&x[2]), ScanOptions { reverse, ..Default::default() }).unwrap();
        let spec = ScanSpec::new(3, 37, 11).reversed(reverse);
        let (want, _) = ref_forward(&spec, &x[0].to_vec(), &x[1].to_vec(), Some(&x[2].to_vec()));
        assert_close("op", &h.to_vec(), &want, 1e-5, 1e-5);
        assert_eq!(h.op_name(), None, "no graph without grad inputs");
        let hl = x[0].detach().requires_grad_().scan(&x[1], None, ScanOptions::forward()).unwrap();
        assert_eq!(hl.op_name(), Some("scan"));
    }
}
