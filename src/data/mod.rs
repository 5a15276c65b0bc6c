//! Datasets for the training jobs. Everything is generated procedurally from a seed
//! and embedded in the binary: no downloads.

pub mod spirals;

pub use spirals::{SpiralsConfig, spirals};

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
