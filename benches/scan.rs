//! Criterion benchmarks of the scan forward and backward (kernel chosen by shape, as the
//! op does) over T ∈ {256, 1024, 4096, 16384, 65536} × D ∈ {64, 256, 1024} with B = 8 and
//! B·T·D ≤ 2²⁷, on 1 and 2 threads. Throughput counts each input read once and each output
//! written once (12 B per element forward, 20 B backward). `fixpoint bench scan` measures
//! the same kernels against a STREAM triad in the same process.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fixpoint::ops::scan::{ScanGrads, ScanKernel, ScanSpec, scan_backward, scan_forward};
use std::hint::black_box;
use std::time::Duration;

fn filled(n: usize, lo: f32, hi: f32, seed: u32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            lo + (hi - lo) * (s >> 8) as f32 / (1u32 << 24) as f32
        })
        .collect()
}

fn bench_scan(c: &mut Criterion) {
    for threads in [1usize, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("rayon pool");
        for d in [64usize, 256, 1024] {
            let mut group = c.benchmark_group(format!("scan/{threads}t/D={d}"));
            group.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
            for t in [256usize, 1024, 4096, 16_384, 65_536] {
                let b = 8;
                let n = b * t * d;
                if n > 1 << 27 {
                    continue;
                }
                // Inputs of 64 MiB and more: fewer samples (each takes tens of ms).
                group.sample_size(if 4 * n >= 64 << 20 { 10 } else { 50 });
                let spec = ScanSpec::new(b, t, d);
                let a = filled(n, 0.9, 0.999, 1);
                let u = filled(n, -1.0, 1.0, 2);
                let dh = filled(n, -1.0, 1.0, 3);
                let (mut h, mut du, mut da) = (vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]);
                group.throughput(Throughput::Bytes(12 * n as u64));
                group.bench_function(BenchmarkId::new("forward", t), |bench| {
                    pool.install(|| {
                        bench.iter(|| {
                            scan_forward(ScanKernel::Auto, &spec, black_box(&a), black_box(&u), None, &mut h).unwrap()
                        })
                    })
                });
                group.throughput(Throughput::Bytes(20 * n as u64));
                group.bench_function(BenchmarkId::new("backward", t), |bench| {
                    pool.install(|| {
                        bench.iter(|| {
                            let grads = ScanGrads { du: &mut du, da: Some(&mut da), dh0: None };
                            scan_backward(ScanKernel::Auto, &spec, black_box(&a), &h, None, black_box(&dh), grads)
                                .unwrap()
                        })
                    })
                });
            }
            group.finish();
        }
    }
}

criterion_group!(benches, bench_scan);
criterion_main!(benches);
