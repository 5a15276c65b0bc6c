//! In-memory image sets and the preprocessing steps shared by the loaders: scaling,
//! bilinear resize (half-pixel centres, edge clamp), zero padding, channel
//! replication and per-channel normalisation.

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Preprocessed images `[len, channels, height, width]` (row-major, f32) with one label
/// each. Grayscale sets keep one stored channel and are replicated to
/// `out_channels` (3) when batches are taken, which saves two thirds of the memory.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageSet {
    /// Name for logs and reports (`"fashion-mnist/train"`, ...).
    pub name: String,
    pub images: Vec<f32>,
    pub labels: Vec<usize>,
    /// Stored channels (1 or `out_channels`).
    pub channels: usize,
    /// Channels of the images handed out by [`ImageSet::batch`] and [`ImageSet::rows`].
    pub out_channels: usize,
    pub height: usize,
    pub width: usize,
    /// Number of label classes (1 for unlabelled data such as noise).
    pub classes: usize,
}

impl ImageSet {
    /// Checks that the buffers fit the shape and the labels fit `classes`.
    pub fn new(
        name: impl Into<String>,
        images: Vec<f32>,
        labels: Vec<usize>,
        [channels, out_channels, height, width]: [usize; 4],
        classes: usize,
    ) -> Result<ImageSet> {
        let name = name.into();
        let per = channels * height * width;
        let bad = |message: String| Err(Error::InvalidArgument { op: "ImageSet::new", message });
        if per == 0 || classes == 0 {
            return bad(format!("{name}: empty image shape {channels}x{height}x{width} or no classes"));
        }
        if !(channels == out_channels || channels == 1) {
            return bad(format!("{name}: {channels} stored channels cannot become {out_channels}"));
        }
        if images.len() != labels.len() * per {
            return bad(format!("{name}: {} values for {} images of {per}", images.len(), labels.len()));
        }
        if let Some(&l) = labels.iter().find(|&&l| l >= classes) {
            return bad(format!("{name}: label {l} outside 0..{classes}"));
        }
        Ok(ImageSet { name, images, labels, channels, out_channels, height, width, classes })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// Values per image as handed out: `out_channels · height · width`.
    pub fn dim(&self) -> usize {
        self.out_channels * self.height * self.width
    }
    fn stored_dim(&self) -> usize {
        self.channels * self.height * self.width
    }

    fn check(&self, idx: &[usize]) -> Result<()> {
        match idx.iter().find(|&&i| i >= self.len()) {
            Some(&i) => Err(Error::Index {
                op: "ImageSet::rows",
                axis: 0,
                index: i,
                size: self.len(),
                shape: [self.len(), self.out_channels, self.height, self.width].into(),
            }),
            None => Ok(()),
        }
    }

    /// The images `idx` as flat rows of [`ImageSet::dim`] values (channels replicated).
    pub fn rows(&self, idx: &[usize]) -> Result<Vec<f32>> {
        self.check(idx)?;
        let (sd, plane) = (self.stored_dim(), self.height * self.width);
        let mut out = Vec::with_capacity(idx.len() * self.dim());
        for &i in idx {
            let img = &self.images[i * sd..(i + 1) * sd];
            if self.channels == self.out_channels {
                out.extend_from_slice(img);
            } else {
                for _ in 0..self.out_channels {
                    out.extend_from_slice(&img[..plane]);
                }
            }
        }
        Ok(out)
    }

    /// The images `idx` as a `[idx.len(), out_channels, height, width]` tensor.
    pub fn batch(&self, idx: &[usize]) -> Result<Tensor> {
        Tensor::from_vec(self.rows(idx)?, [idx.len(), self.out_channels, self.height, self.width])
    }

    /// Labels of `idx`.
    pub fn labels_of(&self, idx: &[usize]) -> Vec<usize> {
        idx.iter().map(|&i| self.labels[i]).collect()
    }

    /// A new set holding the images `idx` (in that order).
    pub fn subset(&self, idx: &[usize]) -> Result<ImageSet> {
        self.check(idx)?;
        let sd = self.stored_dim();
        let mut images = Vec::with_capacity(idx.len() * sd);
        for &i in idx {
            images.extend_from_slice(&self.images[i * sd..(i + 1) * sd]);
        }
        Ok(ImageSet { images, labels: self.labels_of(idx), ..self.clone_meta() })
    }

    fn clone_meta(&self) -> ImageSet {
        ImageSet { images: Vec::new(), labels: Vec::new(), name: self.name.clone(), ..*self }
    }

    /// The first `n` images of a class-balanced order: images are taken round-robin
    /// over classes, each class in a seeded random order, so any prefix is as balanced
    /// as possible. `n >= len` returns all images (shuffled the same way).
    pub fn balanced_subset(&self, n: usize, rng: &mut crate::rng::Rng) -> Result<ImageSet> {
        let mut per_class: Vec<Vec<usize>> = vec![Vec::new(); self.classes];
        for (i, &l) in self.labels.iter().enumerate() {
            per_class[l].push(i);
        }
        for c in per_class.iter_mut() {
            rng.shuffle(c);
        }
        let mut order = Vec::with_capacity(self.len());
        let longest = per_class.iter().map(Vec::len).max().unwrap_or(0);
        for r in 0..longest {
            for c in &per_class {
                if let Some(&i) = c.get(r) {
                    order.push(i);
                }
            }
        }
        order.truncate(n.min(self.len()));
        self.subset(&order)
    }
}

/// Bilinear resize of one `sh × sw` plane to `dh × dw` with half-pixel centres and edge
/// clamping: the source coordinate of output pixel `d` is `(d + 0.5)·s/dst − 0.5`,
/// clamped below at 0, and neighbours past the edge repeat the edge pixel. This is
/// `torch.nn.functional.interpolate(mode="bilinear", align_corners=False)` without
/// antialiasing (and PIL's bilinear for upsampling). A constant image stays constant.
pub fn resize_bilinear(src: &[f32], sh: usize, sw: usize, dh: usize, dw: usize) -> Vec<f32> {
    assert_eq!(src.len(), sh * sw, "resize_bilinear: plane of {} values is not {sh}x{sw}", src.len());
    let axis = |d: usize, s: usize, dst: usize| -> (usize, usize, f32) {
        let x = ((d as f64 + 0.5) * s as f64 / dst as f64 - 0.5).max(0.0);
        let x0 = (x.floor() as usize).min(s - 1);
        let x1 = (x0 + 1).min(s - 1);
        (x0, x1, (x - x0 as f64) as f32)
    };
    let cols: Vec<(usize, usize, f32)> = (0..dw).map(|x| axis(x, sw, dw)).collect();
    let mut out = Vec::with_capacity(dh * dw);
    for y in 0..dh {
        let (y0, y1, fy) = axis(y, sh, dh);
        let (r0, r1) = (&src[y0 * sw..(y0 + 1) * sw], &src[y1 * sw..(y1 + 1) * sw]);
        for &(x0, x1, fx) in &cols {
            let top = r0[x0] + (r0[x1] - r0[x0]) * fx;
            let bottom = r1[x0] + (r1[x1] - r1[x0]) * fx;
            out.push(top + (bottom - top) * fy);
        }
    }
    out
}

/// Zero-pad one `h × w` plane by `p` pixels on every side.
pub fn pad_zero(src: &[f32], h: usize, w: usize, p: usize) -> Vec<f32> {
    assert_eq!(src.len(), h * w, "pad_zero: plane of {} values is not {h}x{w}", src.len());
    let ow = w + 2 * p;
    let mut out = vec![0.0; (h + 2 * p) * ow];
    for y in 0..h {
        out[(y + p) * ow + p..(y + p) * ow + p + w].copy_from_slice(&src[y * w..(y + 1) * w]);
    }
    out
}

/// How 28×28 images become 32×32 (random-teachers spec §4, flag `fit28`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fit28 {
    /// Bilinear resize (the reference pipeline's treatment of 28×28 data).
    #[default]
    Resize,
    /// Zero-pad 2 pixels per side (before normalisation).
    Pad,
}

impl Fit28 {
    pub fn parse(s: &str) -> Result<Fit28> {
        match s {
            "resize" => Ok(Fit28::Resize),
            "pad" => Ok(Fit28::Pad),
            _ => Err(Error::InvalidArgument { op: "fit28", message: format!("{s:?} is not resize or pad") }),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Fit28::Resize => "resize",
            Fit28::Pad => "pad",
        }
    }
}
