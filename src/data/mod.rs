//! Datasets for the training jobs.
//!
//! * Procedurally generated from a seed and embedded in the binary (no downloads):
//!   [`spirals`], [`synthetic_images`] (a class-structured image set) and [`noise`]
//!   (Gaussian-noise images, the random-teacher control).
//! * Loaded from files the user has: Fashion-MNIST IDX ([`idx`]) and CIFAR-10 binary
//!   batches ([`cifar`]). Loaders validate magic numbers, sizes and counts and report a
//!   truncated or corrupt file as a typed [`DataError`] naming the file and byte offset.
//!
//! Image sets are held as [`ImageSet`]s, already preprocessed (scaled, resized to
//! 32×32, normalised); see [`images`].

pub mod cifar;
pub mod idx;
pub mod images;
pub mod noise;
pub mod spirals;
pub mod synthetic_images;

pub use images::ImageSet;
pub use spirals::{SpiralsConfig, spirals};

use std::fmt;

/// A data file that cannot be used. Every variant names the file; those about the
/// content also give the byte offset (in the decompressed stream for `.gz` files).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataError {
    /// The file cannot be opened or read.
    Io { path: String, message: String },
    /// The gzip stream is corrupt or cut short; `offset` decompressed bytes came out
    /// before the failure.
    Gzip { path: String, offset: u64, message: String },
    /// The file ends at `offset` but its header promises `needed` bytes.
    Truncated { path: String, offset: u64, needed: u64, what: String },
    /// Bytes after the end of the data that the header describes.
    TrailingBytes { path: String, offset: u64, len: u64 },
    /// A magic number (or fixed header field) at `offset` differs from the expected one.
    BadMagic { path: String, offset: u64, found: u32, expected: u32 },
    /// A header field at `offset` that is well-formed but not what this dataset needs
    /// (dimensions, element type, record count).
    BadHeader { path: String, offset: u64, message: String },
    /// A label byte at `offset` outside `0..classes`.
    BadLabel { path: String, offset: u64, value: u8, classes: usize },
    /// An image file and its label file disagree on the number of examples.
    CountMismatch { images: String, labels: String, n_images: usize, n_labels: usize },
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataError::Io { path, message } => write!(f, "{path}: {message}"),
            DataError::Gzip { path, offset, message } => {
                write!(f, "{path}: corrupt or truncated gzip stream after {offset} decompressed bytes: {message}")
            }
            DataError::Truncated { path, offset, needed, what } => {
                write!(f, "{path}: truncated at byte {offset}: {what} needs {needed} bytes")
            }
            DataError::TrailingBytes { path, offset, len } => {
                write!(f, "{path}: unexpected data after byte {offset} (file is {len} bytes)")
            }
            DataError::BadMagic { path, offset, found, expected } => {
                write!(f, "{path}: bad magic number at byte {offset}: found 0x{found:08X}, expected 0x{expected:08X}")
            }
            DataError::BadHeader { path, offset, message } => {
                write!(f, "{path}: bad header at byte {offset}: {message}")
            }
            DataError::BadLabel { path, offset, value, classes } => {
                write!(f, "{path}: label {value} at byte {offset} is outside 0..{classes}")
            }
            DataError::CountMismatch { images, labels, n_images, n_labels } => {
                write!(f, "{images} holds {n_images} images but {labels} holds {n_labels} labels")
            }
        }
    }
}

impl std::error::Error for DataError {}

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// A classification dataset held in memory: `len` rows of `dim` features (row-major)
/// and one label in `0..classes` per row.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    pub x: Vec<f32>,
    pub y: Vec<usize>,
    pub dim: usize,
    pub classes: usize,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.y.len()
    }
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }
    /// All features as a `[len, dim]` tensor.
    pub fn features(&self) -> Tensor {
        Tensor::from_vec(self.x.clone(), [self.len(), self.dim]).expect("len * dim values")
    }
    /// The rows `idx` as a `[idx.len(), dim]` tensor and their labels.
    pub fn batch(&self, idx: &[usize]) -> Result<(Tensor, Vec<usize>)> {
        let mut x = Vec::with_capacity(idx.len() * self.dim);
        let mut y = Vec::with_capacity(idx.len());
        for &i in idx {
            if i >= self.len() {
                return Err(Error::Index {
                    op: "Dataset::batch",
                    axis: 0,
                    index: i,
                    size: self.len(),
                    shape: [self.len(), self.dim].into(),
                });
            }
            x.extend_from_slice(&self.x[i * self.dim..(i + 1) * self.dim]);
            y.push(self.y[i]);
        }
        Ok((Tensor::from_vec(x, [idx.len(), self.dim])?, y))
    }
}
