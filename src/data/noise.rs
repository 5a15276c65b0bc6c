//! Gaussian-noise images: the random-teacher paper's control (Fig. 4), where a
//! student distilled on noise does not beat its teacher.
//!
//! Every value is an independent `N(0, 1)` draw, i.e. noise in the **normalised**
//! input space (the paper does not give σ; random-teachers spec §4). Draws come from
//! `Rng::new(seed).stream("gaussian-noise")`, image by image, channel-major. There are
//! no labels (all 0, one class): probes of a noise-trained student use a real dataset.

use super::images::ImageSet;
use crate::error::{Error, Result};
use crate::rng::Rng;

/// `n` images of `3 × 32 × 32` standard-normal values.
pub fn gaussian_noise_images(n: usize, seed: u64) -> Result<ImageSet> {
    gaussian_noise(n, [3, 32, 32], seed)
}

/// `n` images of shape `[c, h, w]` with i.i.d. `N(0, 1)` values.
pub fn gaussian_noise(n: usize, [c, h, w]: [usize; 3], seed: u64) -> Result<ImageSet> {
    if n == 0 {
        return Err(Error::InvalidArgument { op: "gaussian_noise", message: "needs at least one image".into() });
    }
    let mut rng = Rng::new(seed).stream("gaussian-noise");
    let data = (0..n * c * h * w).map(|_| rng.normal()).collect();
    ImageSet::new("gaussian-noise", data, vec![0; n], [c, c, h, w], 1)
}
