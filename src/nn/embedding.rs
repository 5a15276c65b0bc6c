//! Lookup table of learned vectors.

use super::Module;
use crate::error::Result;
use crate::init;
use crate::rng::Rng;
use crate::tensor::Tensor;

/// `weight[ids]`: parameter `weight` `[vocab, dim]`, initialised `N(0, 1)` as
/// `torch.nn.Embedding`.
#[derive(Clone, Debug)]
pub struct Embedding {
    weight: Tensor,
}

impl Embedding {
    pub fn new(vocab: usize, dim: usize, rng: &mut Rng) -> Embedding {
        Embedding { weight: init::normal([vocab, dim], 0.0, 1.0, rng).requires_grad_() }
    }
    pub fn vocab(&self) -> usize {
        self.weight.shape()[0]
    }
    pub fn dim(&self) -> usize {
        self.weight.shape()[1]
    }
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
    /// Vectors of `ids` (row-major, shaped `ids_shape`): output `ids_shape + [dim]`.
    /// An id `>= vocab` is an `Error::Index`.
    pub fn forward(&self, ids: &[usize], ids_shape: &[usize]) -> Result<Tensor> {
        self.weight.embedding(ids, ids_shape)
    }
}

impl Module for Embedding {
    fn params(&self) -> Vec<(String, &Tensor)> {
        vec![("weight".to_string(), &self.weight)]
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        vec![("weight".to_string(), &mut self.weight)]
    }
}
