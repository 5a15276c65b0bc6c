//! Criterion benchmarks of the core ops on the shapes small ViTs and MLPs run.
//! `cargo bench --bench core`; RAYON_NUM_THREADS picks the thread count. Ratios against
//! raw baselines in the same process are in `fixpoint bench core`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fixpoint::nn::{Activation, Mlp, Module};
use fixpoint::optim::{AdamW, AdamWConfig, Optimizer};
use fixpoint::{Rng, Tensor, init};
use std::hint::black_box;

fn gemm(c: &mut Criterion) {
    let mut g = c.benchmark_group("gemm");
    g.sample_size(20);
    let mut r = Rng::new(0);
    // (m, k, n): MLP layer at batch 256; ViT-tiny (65 tokens x batch 64) qkv, mlp-in, mlp-out.
    for (m, k, n) in [(256, 784, 512), (4160, 192, 576), (4160, 192, 768), (4160, 768, 192)] {
        let a = init::normal([m, k], 0.0, 1.0, &mut r);
        let b = init::normal([k, n], 0.0, 1.0, &mut r);
        g.throughput(Throughput::Elements((2 * m * k * n) as u64));
        g.bench_with_input(BenchmarkId::from_parameter(format!("{m}x{k}x{n}")), &(a, b), |bch, (a, b)| {
            bch.iter(|| black_box(a.matmul(b).unwrap()))
        });
    }
    g.finish();
}

fn elementwise(c: &mut Criterion) {
    let mut g = c.benchmark_group("elementwise");
    let mut r = Rng::new(1);
    for n in [1 << 12, 1 << 16, 1 << 20] {
        let a = init::normal([n], 0.0, 1.0, &mut r);
        let b = init::normal([n], 0.0, 1.0, &mut r);
        g.throughput(Throughput::Bytes((12 * n) as u64));
        g.bench_with_input(BenchmarkId::new("mul", n), &n, |bch, _| bch.iter(|| black_box(a.mul(&b).unwrap())));
        g.bench_with_input(BenchmarkId::new("gelu", n), &n, |bch, _| bch.iter(|| black_box(a.gelu())));
        g.bench_with_input(BenchmarkId::new("exp", n), &n, |bch, _| bch.iter(|| black_box(a.exp())));
    }
    let x = init::normal([4096, 768], 0.0, 1.0, &mut r);
    let bias = init::normal([768], 0.0, 1.0, &mut r);
    g.bench_function("add_row_vector_4096x768", |bch| bch.iter(|| black_box(x.add(&bias).unwrap())));
    g.finish();
}

fn reductions_and_rows(c: &mut Criterion) {
    let mut g = c.benchmark_group("rows");
    g.sample_size(30);
    let mut r = Rng::new(2);
    let x = init::normal([4096, 768], 0.0, 1.0, &mut r);
    let w = Tensor::ones([768]);
    let b = Tensor::zeros([768]);
    g.throughput(Throughput::Bytes((4096 * 768 * 4) as u64));
    g.bench_function("sum_last_axis", |bch| bch.iter(|| black_box(x.sum(&[-1], false).unwrap())));
    g.bench_function("sum_first_axis", |bch| bch.iter(|| black_box(x.sum(&[0], false).unwrap())));
    g.bench_function("max_last_axis", |bch| bch.iter(|| black_box(x.max(&[-1], false).unwrap())));
    g.bench_function("softmax", |bch| bch.iter(|| black_box(x.softmax(-1).unwrap())));
    g.bench_function("log_softmax", |bch| bch.iter(|| black_box(x.log_softmax(-1).unwrap())));
    g.bench_function("layer_norm", |bch| bch.iter(|| black_box(x.layer_norm(Some(&w), Some(&b), 1e-5).unwrap())));
    g.finish();
}

fn mlp_train_step(c: &mut Criterion) {
    let mut g = c.benchmark_group("train_step");
    g.sample_size(20);
    let mut r = Rng::new(3);
    let x = init::normal([256, 784], 0.0, 1.0, &mut r);
    let y: Vec<usize> = (0..256).map(|i| i % 10).collect();
    let mut model = Mlp::new(&[784, 512, 512, 10], Activation::Gelu, &mut r).unwrap();
    let mut opt = AdamW::new(AdamWConfig::default()).unwrap();
    g.bench_function("mlp_784_512_512_10_batch256", |bch| {
        bch.iter(|| {
            let loss = model.forward(&x).unwrap().cross_entropy(&y, Default::default()).unwrap();
            model.zero_grad();
            loss.backward().unwrap();
            opt.step(&mut model, 1e-3).unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, gemm, elementwise, reductions_and_rows, mlp_train_step);
criterion_main!(benches);
