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

/// Call a `crate::gpu` kernel function (`on_gpu!(op, elementwise::binary(..))`): with the
/// `gpu` feature, the call; without it, an `Error::Unsupported` for `op` (unreachable in
/// practice: no tensor can live on the GPU then). Keeps each op's device hook one line.
#[cfg(feature = "gpu")]
macro_rules! on_gpu {
    ($op:expr, $($call:tt)*) => {{
        let _op: &'static str = $op;
        crate::gpu::$($call)*
    }};
}
#[cfg(not(feature = "gpu"))]
macro_rules! on_gpu {
    ($op:expr, $($call:tt)*) => {
        Err::<_, crate::Error>(crate::Error::Unsupported { op: $op, device: crate::Device::Gpu })
    };
}

pub mod autograd;
pub mod bench;
pub mod cpu;
pub mod data;
pub mod dino;
pub mod error;
pub mod fpr;
#[cfg(feature = "gpu")]
pub mod gpu;
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
