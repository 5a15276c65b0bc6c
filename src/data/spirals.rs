//! Interleaved K-arm spirals in the plane: a small classification problem whose class
//! boundary is strongly nonlinear (a linear model gets about 1/K right).
//!
//! # Generator
//!
//! For class `k ∈ 0..K` and each of its points, draw `s ~ U[0, 1)` and set
//!
//! ```text
//! r = r_min + (1 − r_min)·s                  radius, r_min = 0.1 (keeps arms apart at the centre)
//! θ = 2π·turns·s + 2π·k/K                    angle: arm k is arm 0 rotated by k/K of a turn
//! x = (r cos θ, r sin θ) + N(0, noise²·I)    isotropic Gaussian jitter
//! ```
//!
//! Along a ray, neighbouring arms are `(1 − r_min)/(turns·K)` apart in radius, so with
//! the defaults (K = 3, 1.5 turns, noise 0.03) the gap is 0.2, almost seven noise
//! standard deviations: the classes are (almost surely) separable and a good model
//! reaches 100% training accuracy, while the 1.5 turns make the boundary hard enough
//! that a short or broken training run visibly falls short. All draws come from `Rng::new(seed).stream("spirals")`:
//! first `s`, then the two jitter normals, point by point, class by class. The points
//! are then shuffled (same stream) and the first `round(test_fraction · n)` become the
//! test set.

use super::Dataset;
use crate::error::{Error, Result};
use crate::rng::Rng;

/// Parameters of [`spirals`].
#[derive(Clone, Debug, PartialEq)]
pub struct SpiralsConfig {
    pub classes: usize,
    pub points_per_class: usize,
    /// Full turns each arm makes.
    pub turns: f32,
    /// Standard deviation of the Gaussian jitter.
    pub noise: f32,
    /// Fraction of the points held out for testing, in `[0, 1)`.
    pub test_fraction: f32,
}

impl Default for SpiralsConfig {
    fn default() -> Self {
        SpiralsConfig { classes: 3, points_per_class: 400, turns: 1.5, noise: 0.03, test_fraction: 0.25 }
    }
}

const R_MIN: f64 = 0.1;

/// Generate the spirals and split them into `(train, test)`.
pub fn spirals(cfg: &SpiralsConfig, seed: u64) -> Result<(Dataset, Dataset)> {
    let bad = |message: String| Error::InvalidArgument { op: "spirals", message };
    if cfg.classes < 2 || cfg.points_per_class == 0 {
        return Err(bad(format!("need >= 2 classes and >= 1 point per class, got {cfg:?}")));
    }
    if !(cfg.turns.is_finite() && cfg.turns > 0.0 && cfg.noise.is_finite() && cfg.noise >= 0.0) {
        return Err(bad(format!("need turns > 0 and noise >= 0, got {cfg:?}")));
    }
    if !(0.0..1.0).contains(&cfg.test_fraction) {
        return Err(bad(format!("test_fraction {} is outside [0, 1)", cfg.test_fraction)));
    }
    let mut rng = Rng::new(seed).stream("spirals");
    let k_total = cfg.classes;
    let n = k_total * cfg.points_per_class;
    let mut pts: Vec<([f32; 2], usize)> = Vec::with_capacity(n);
    let tau = 2.0 * std::f64::consts::PI;
    for k in 0..k_total {
        for _ in 0..cfg.points_per_class {
            let s = rng.uniform_f64();
            let r = R_MIN + (1.0 - R_MIN) * s;
            let th = tau * cfg.turns as f64 * s + tau * k as f64 / k_total as f64;
            let (sin, cos) = th.sin_cos();
            let jx = cfg.noise as f64 * rng.normal() as f64;
            let jy = cfg.noise as f64 * rng.normal() as f64;
            pts.push(([(r * cos + jx) as f32, (r * sin + jy) as f32], k));
        }
    }
    rng.shuffle(&mut pts);
    let n_test = (cfg.test_fraction as f64 * n as f64).round() as usize;
    let make = |p: &[([f32; 2], usize)]| Dataset {
        x: p.iter().flat_map(|(x, _)| *x).collect(),
        y: p.iter().map(|(_, y)| *y).collect(),
        dim: 2,
        classes: k_total,
    };
    Ok((make(&pts[n_test..]), make(&pts[..n_test])))
}
