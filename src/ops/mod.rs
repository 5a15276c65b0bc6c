//! Ops, one file per family; each file holds forward kernels and backward rules side
//! by side. Kernels work on slices and layouts and never see the graph; the `impl
//! Tensor` blocks in each file validate, call the kernel and record the backward rule.

pub mod batchnorm;
pub mod conv1d;
pub mod conv2d;
pub mod dropout;
pub mod elementwise;
pub mod fused;
pub mod index;
pub mod matmul;
pub mod pool;
pub mod reduce;
pub mod scan;
pub mod view;
