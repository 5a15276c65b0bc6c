//! Seeded initialisers. Fans follow the PyTorch convention for a weight of shape
//! `[fan_out, fan_in, ..receptive]` or, for our `Linear` (stored `[in, out]`), the
//! explicit `fan_in` / `fan_out` arguments.

use crate::rng::Rng;
use crate::shape::Shape;
use crate::tensor::Tensor;

/// Uniform in `[lo, hi)`.
pub fn uniform(shape: impl Into<Shape>, lo: f32, hi: f32, rng: &mut Rng) -> Tensor {
    let shape = shape.into();
    let data = (0..shape.numel()).map(|_| rng.range(lo, hi)).collect();
    Tensor::from_parts(data, shape)
}

/// Normal with the given mean and standard deviation.
pub fn normal(shape: impl Into<Shape>, mean: f32, std: f32, rng: &mut Rng) -> Tensor {
    let shape = shape.into();
    let data = (0..shape.numel()).map(|_| mean + std * rng.normal()).collect();
    Tensor::from_parts(data, shape)
}

/// Normal(mean, std) truncated to `[lo, hi]` (absolute bounds, as in
/// `torch.nn.init.trunc_normal_`), by rejection.
pub fn trunc_normal(shape: impl Into<Shape>, mean: f32, std: f32, lo: f32, hi: f32, rng: &mut Rng) -> Tensor {
    assert!(lo < hi, "trunc_normal: lo {lo} must be below hi {hi}");
    let shape = shape.into();
    let data = (0..shape.numel())
        .map(|_| {
            loop {
                let v = mean + std * rng.normal();
                if (lo..=hi).contains(&v) {
                    break v;
                }
            }
        })
        .collect();
    Tensor::from_parts(data, shape)
}

/// Kaiming (He) uniform: `U(-b, b)` with `b = gain * sqrt(3 / fan_in)`, gain √2 for ReLU.
pub fn kaiming_uniform(shape: impl Into<Shape>, fan_in: usize, gain: f32, rng: &mut Rng) -> Tensor {
    let b = gain * (3.0 / fan_in.max(1) as f32).sqrt();
    uniform(shape, -b, b, rng)
}

/// Kaiming (He) normal: `N(0, gain² / fan_in)`.
pub fn kaiming_normal(shape: impl Into<Shape>, fan_in: usize, gain: f32, rng: &mut Rng) -> Tensor {
    normal(shape, 0.0, gain / (fan_in.max(1) as f32).sqrt(), rng)
}

/// Xavier (Glorot) uniform: `U(-b, b)` with `b = gain * sqrt(6 / (fan_in + fan_out))`.
pub fn xavier_uniform(shape: impl Into<Shape>, fan_in: usize, fan_out: usize, gain: f32, rng: &mut Rng) -> Tensor {
    let b = gain * (6.0 / (fan_in + fan_out).max(1) as f32).sqrt();
    uniform(shape, -b, b, rng)
}

/// Xavier (Glorot) normal: `N(0, gain² · 2 / (fan_in + fan_out))`.
pub fn xavier_normal(shape: impl Into<Shape>, fan_in: usize, fan_out: usize, gain: f32, rng: &mut Rng) -> Tensor {
    normal(shape, 0.0, gain * (2.0 / (fan_in + fan_out).max(1) as f32).sqrt(), rng)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(t: &Tensor) -> (f64, f64, f32, f32) {
        let v = t.to_vec();
        let n = v.len() as f64;
        let m = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / n;
        (m, var, v.iter().copied().fold(f32::INFINITY, f32::min), v.iter().copied().fold(f32::NEG_INFINITY, f32::max))
    }

    #[test]
    fn initialiser_moments() {
        let mut r = Rng::new(0);
        let (_, var, lo, hi) = stats(&kaiming_uniform([256, 256], 256, 2f32.sqrt(), &mut r));
        assert!((var - 2.0 / 256.0).abs() < 0.05 * 2.0 / 256.0, "kaiming var {var}");
        assert!(lo >= -(6.0f32 / 256.0).sqrt() && hi <= (6.0f32 / 256.0).sqrt());
        let (_, var, ..) = stats(&xavier_normal([256, 256], 256, 256, 1.0, &mut r));
        assert!((var - 1.0 / 256.0).abs() < 0.05 / 256.0, "xavier var {var}");
        let (m, _, lo, hi) = stats(&trunc_normal([10000], 0.0, 1.0, -2.0, 2.0, &mut r));
        assert!(lo >= -2.0 && hi <= 2.0 && m.abs() < 0.05);
        let a = normal([5], 0.0, 1.0, &mut Rng::new(9)).to_vec();
        let b = normal([5], 0.0, 1.0, &mut Rng::new(9)).to_vec();
        assert_eq!(a, b);
    }
}
