//! An embedded, procedurally generated, class-structured image dataset, so that the
//! random-teacher job runs anywhere. Results on it are **synthetic: no paper claim**.
//!
//! # Generator
//!
//! Ten classes of 3×32×32 images. Class `k` has fixed (seed-independent) parameters:
//!
//! ```text
//! orientation  θ_k = π·k/10                     of a sinusoidal grating
//! frequency    f_k = 2 + (k mod 3)/2            cycles across the image
//! tint         c_k = (0.6 + 0.4 cos(2πk/10 + 2πj/3))_{j = R,G,B}
//! blob centre  b_k = (16, 16) + 8·(cos φ_k, sin φ_k),  φ_k = 2π·(3k mod 10)/10
//! ```
//!
//! Each image draws, from `Rng::new(seed).stream("synthetic-images")` in this order:
//! phase `ψ ~ U[0, 2π)`, orientation jitter `ε ~ N(0, 0.15²)`, contrast `a ~ U[0.5, 1.5)`,
//! blob shift `(dx, dy) ~ U[−3, 3)²`, blob amplitude `h ~ U[0.5, 1.5)`, then a
//! class-independent distractor grating (orientation `θ' ~ U[0, π)`, frequency
//! `f' ~ U[1.5, 3.5)`, phase `ψ' ~ U[0, 2π)`, amplitude `a' ~ U[0.5, 1.5)`), then one
//! `N(0, noise²)` per pixel and channel (channel-major). Pixel `(c, y, x)` is
//!
//! ```text
//! a·c_k[c]·sin(2π f_k (u cos(θ_k+ε) + v sin(θ_k+ε)) + ψ)      u = x/32, v = y/32
//!   + a'·sin(2π f' (u cos θ' + v sin θ') + ψ')                 same in every channel
//!   + h·exp(−|(x, y) − b_k − (dx, dy)|² / (2·4²)) + noise
//! ```
//!
//! Orientation, frequency and tint carry the class; the random phase makes the class
//! grating's pixel mean zero, and the distractor grating hides nearest neighbours that
//! differ only in phase, so raw pixels separate the classes only partly (with the
//! defaults: k-NN about 57 %, linear probe about 64 %, chance 10 %). The blob position
//! is a second, coarser cue. Images are generated class by class (`per_class` of each,
//! train first, then test), then each split is shuffled with the same stream, and both
//! are normalised per channel with the **training** split's mean and std.

use super::images::ImageSet;
use crate::error::{Error, Result};
use crate::rng::Rng;
use std::f64::consts::{PI, TAU};

/// Parameters of [`embedded_images`].
#[derive(Clone, Debug, PartialEq)]
pub struct EmbeddedConfig {
    pub train_per_class: usize,
    pub test_per_class: usize,
    /// Standard deviation of the per-pixel Gaussian noise (before normalisation).
    pub noise: f32,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig { train_per_class: 600, test_per_class: 100, noise: 0.5 }
    }
}

pub const CLASSES: usize = 10;

fn image(k: usize, noise: f32, rng: &mut Rng, out: &mut Vec<f32>) {
    let kf = k as f64;
    let theta = PI * kf / 10.0;
    let freq = 2.0 + (k % 3) as f64 / 2.0;
    let tint: [f64; 3] = std::array::from_fn(|j| 0.6 + 0.4 * (TAU * kf / 10.0 + TAU * j as f64 / 3.0).cos());
    let phi = TAU * ((3 * k) % 10) as f64 / 10.0;
    let (bx, by) = (16.0 + 8.0 * phi.cos(), 16.0 + 8.0 * phi.sin());

    let psi = TAU * rng.uniform_f64();
    let eps = 0.15 * rng.normal() as f64;
    let a = rng.range(0.5, 1.5) as f64;
    let (dx, dy) = (rng.range(-3.0, 3.0) as f64, rng.range(-3.0, 3.0) as f64);
    let h = rng.range(0.5, 1.5) as f64;
    let (d_theta, d_freq, d_psi) = (PI * rng.uniform_f64(), rng.range(1.5, 3.5) as f64, TAU * rng.uniform_f64());
    let d_amp = rng.range(0.5, 1.5) as f64;
    let (st, ct) = (theta + eps).sin_cos();
    let (dst, dct) = d_theta.sin_cos();
    for &tc in &tint {
        for y in 0..32 {
            for x in 0..32 {
                let (u, v) = (x as f64 / 32.0, y as f64 / 32.0);
                let g = a * tc * (TAU * freq * (u * ct + v * st) + psi).sin();
                let dg = d_amp * (TAU * d_freq * (u * dct + v * dst) + d_psi).sin();
                let r2 = (x as f64 - bx - dx).powi(2) + (y as f64 - by - dy).powi(2);
                let b = h * (-r2 / 32.0).exp();
                out.push((g + dg + b) as f32 + noise * rng.normal());
            }
        }
    }
}

/// The embedded train and test sets (see the module docs for the generator).
pub fn embedded_images(cfg: &EmbeddedConfig, seed: u64) -> Result<(ImageSet, ImageSet)> {
    if cfg.train_per_class == 0 || cfg.test_per_class == 0 || !(cfg.noise.is_finite() && cfg.noise >= 0.0) {
        return Err(Error::InvalidArgument {
            op: "embedded_images",
            message: format!("need at least one image per class in each split and noise >= 0, got {cfg:?}"),
        });
    }
    let mut rng = Rng::new(seed).stream("synthetic-images");
    let split = |per_class: usize, rng: &mut Rng| -> (Vec<f32>, Vec<usize>) {
        let mut x = Vec::with_capacity(per_class * CLASSES * 3072);
        let mut y = Vec::with_capacity(per_class * CLASSES);
        for k in 0..CLASSES {
            for _ in 0..per_class {
                image(k, cfg.noise, rng, &mut x);
                y.push(k);
            }
        }
        let order = rng.permutation(y.len());
        let xs = order.iter().flat_map(|&i| x[i * 3072..(i + 1) * 3072].iter().copied()).collect();
        (xs, order.iter().map(|&i| y[i]).collect())
    };
    let (mut xtr, ytr) = split(cfg.train_per_class, &mut rng);
    let (mut xte, yte) = split(cfg.test_per_class, &mut rng);
    // Per-channel statistics of the training split, in f64.
    let n = ytr.len();
    let mut stats = [(0.0f64, 0.0f64); 3];
    for (c, st) in stats.iter_mut().enumerate() {
        let vals = || (0..n).flat_map(|i| xtr[i * 3072 + c * 1024..i * 3072 + (c + 1) * 1024].iter());
        let count = (n * 1024) as f64;
        let mean = vals().map(|&v| v as f64).sum::<f64>() / count;
        let var = vals().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / count;
        *st = (mean, var.sqrt().max(1e-12));
    }
    for x in [&mut xtr, &mut xte] {
        for img in x.chunks_exact_mut(3072) {
            for (c, plane) in img.chunks_exact_mut(1024).enumerate() {
                let (m, s) = stats[c];
                for v in plane {
                    *v = ((*v as f64 - m) / s) as f32;
                }
            }
        }
    }
    Ok((
        ImageSet::new("embedded/train", xtr, ytr, [3, 3, 32, 32], CLASSES)?,
        ImageSet::new("embedded/test", xte, yte, [3, 3, 32, 32], CLASSES)?,
    ))
}
