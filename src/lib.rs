//! # fixpoint
//!
//! A from-scratch f32 tensor engine with reverse-mode autodiff, built to train
//! Fixed-Point RNNs and random-teacher distillation on a CPU.
//!
//! ```
//! use fixpoint::Tensor;
//! let x = Tensor::from_vec(vec![1.0, 2.0, 3.0], [3])?.requires_grad_();
//! let y = x.square().sum_all();
//! y.backward()?;
//! assert_eq!(x.grad().unwrap().to_vec(), vec![2.0, 4.0, 6.0]);
//! # Ok::<(), fixpoint::Error>(())
//! ```
#![deny(unsafe_op_in_unsafe_fn)]
// Kernels index several parallel slices by one loop variable; iterator chains would hide that.
#![allow(clippy::needless_range_loop)]

pub mod autograd;
pub mod bench;
pub mod cpu;
pub mod data;
pub mod dino;
pub mod error;
pub mod fpr;
pub mod init;
pub mod layout;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod profile;
pub mod rng;
pub mod run;
pub mod shape;
pub mod storage;
pub mod tasks;
pub mod tensor;
pub mod train;

pub use autograd::{Backward, no_grad};
pub use error::{Error, Result};
pub use rng::Rng;
pub use shape::Shape;
pub use storage::Device;
pub use tensor::Tensor;
