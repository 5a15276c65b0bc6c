//! Typed errors. Every shape error names the op and both shapes (and the axis and
//! the two sizes where an axis is involved), so that the message alone says what to fix.

use crate::shape::Shape;
use std::fmt;

/// The error type of every fallible public API in the crate.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// Two operands must have the same shape and do not.
    ShapeMismatch { op: &'static str, lhs: Shape, rhs: Shape },
    /// Two shapes cannot be broadcast together: `axis` (counted in the broadcast
    /// result) has sizes `lhs_size` and `rhs_size`, neither of which is 1.
    Broadcast { op: &'static str, lhs: Shape, rhs: Shape, axis: usize, lhs_size: usize, rhs_size: usize },
    /// Matrix product whose inner dimensions (or batch dimensions) disagree.
    MatMul { op: &'static str, lhs: Shape, rhs: Shape, detail: String },
    /// Tensors joined along `axis` (concat, stack) whose shapes do not fit together:
    /// ranks differ, or (concat) sizes differ off `axis`, or (stack) shapes differ.
    Join { op: &'static str, axis: usize, lhs: Shape, rhs: Shape },
    /// A reshape to a different number of elements.
    Reshape { from: Shape, to: Shape },
    /// An axis out of range for a tensor of rank `rank`.
    Axis { op: &'static str, axis: isize, rank: usize },
    /// An axis given twice.
    DuplicateAxis { op: &'static str, axis: usize, shape: Shape },
    /// An op that needs at least one element along an axis got none.
    Empty { op: &'static str, shape: Shape },
    /// An index or range out of bounds along an axis.
    Index { op: &'static str, axis: usize, index: usize, size: usize, shape: Shape },
    /// Data length does not match the shape.
    DataLength { op: &'static str, len: usize, shape: Shape },
    /// A bad argument that is not about shapes (a probability outside [0, 1], ...).
    InvalidArgument { op: &'static str, message: String },
    /// The graph reached an op whose backward rule does not exist.
    BackwardNotImplemented { op: &'static str },
    /// `backward` called on a tensor that is not part of a graph.
    NoGraph { shape: Shape },
    /// A backward rule returned a gradient of the wrong shape (a bug in that rule).
    GradShape { op: &'static str, input: usize, expected: Shape, got: Shape },
    /// Reading or writing a file failed.
    Io { path: String, message: String },
    /// A data file is truncated, corrupt or not what it claims to be (names the file
    /// and the byte offset).
    Data(crate::data::DataError),
    /// Operands of one op live on different devices (move one with `to_device`).
    DeviceMismatch { op: &'static str, lhs: crate::Device, rhs: crate::Device },
    /// The op has no kernel for this device (nothing is copied behind the caller's back).
    Unsupported { op: &'static str, device: crate::Device },
    /// No GPU could be used: the build lacks the `gpu` feature or no adapter was found
    /// (the message says what was looked for).
    GpuUnavailable { message: String },
    /// The GPU driver or wgpu reported an error (validation, out of memory, readback).
    Gpu { op: &'static str, message: String },
    /// Training produced a NaN or an infinity: the step (1-based, as in metrics and
    /// checkpoint names), what was not finite, and the first parameter affected.
    Diverged { step: u64, what: String, param: Option<String> },
}

impl From<crate::data::DataError> for Error {
    fn from(e: crate::data::DataError) -> Self {
        Error::Data(e)
    }
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ShapeMismatch { op, lhs, rhs } => {
                write!(f, "{op}: shapes differ: {lhs} vs {rhs}")
            }
            Error::Broadcast { op, lhs, rhs, axis, lhs_size, rhs_size } => {
                write!(f, "{op}: cannot broadcast {lhs} with {rhs}: axis {axis} has sizes {lhs_size} and {rhs_size}")
            }
            Error::MatMul { op, lhs, rhs, detail } => write!(f, "{op}: {lhs} x {rhs}: {detail}"),
            Error::Join { op, axis, lhs, rhs } => {
                write!(f, "{op} along axis {axis}: cannot join shape {lhs} with shape {rhs}")
            }
            Error::Reshape { from, to } => {
                write!(f, "reshape: {} elements of {from} cannot become {to} ({} elements)", from.numel(), to.numel())
            }
            Error::Axis { op, axis, rank } => {
                write!(f, "{op}: axis {axis} is out of range for a tensor of rank {rank}")
            }
            Error::DuplicateAxis { op, axis, shape } => {
                write!(f, "{op}: axis {axis} given twice for shape {shape}")
            }
            Error::Empty { op, shape } => {
                write!(f, "{op}: needs at least one element but got shape {shape}")
            }
            Error::Index { op, axis, index, size, shape } => {
                write!(f, "{op}: index {index} is out of bounds for axis {axis} of size {size} (shape {shape})")
            }
            Error::DataLength { op, len, shape } => {
                write!(f, "{op}: {len} values cannot fill shape {shape} ({} elements)", shape.numel())
            }
            Error::InvalidArgument { op, message } => write!(f, "{op}: {message}"),
            Error::BackwardNotImplemented { op } => {
                write!(f, "backward not implemented for {op}")
            }
            Error::NoGraph { shape } => write!(
                f,
                "backward: tensor of shape {shape} does not require grad (no graph recorded; \
                 was it built under no_grad, or from tensors without requires_grad?)"
            ),
            Error::GradShape { op, input, expected, got } => {
                write!(f, "backward of {op}: gradient for input {input} has shape {got}, expected {expected}")
            }
            Error::Io { path, message } => write!(f, "{path}: {message}"),
            Error::Data(e) => write!(f, "{e}"),
            Error::DeviceMismatch { op, lhs, rhs } => {
                write!(f, "{op}: operands live on different devices ({lhs} and {rhs}); move one with to_device")
            }
            Error::Unsupported { op, device } => {
                write!(f, "{op}: no {device} kernel (move the operands with to_device(Device::Cpu))")
            }
            Error::GpuUnavailable { message } => write!(f, "no GPU: {message}"),
            Error::Gpu { op, message } => write!(f, "{op}: GPU error: {message}"),
            Error::Diverged { step, what, param } => {
                write!(f, "diverged at step {step}: {what}")?;
                match param {
                    Some(p) => write!(f, " (first parameter affected: {p})")?,
                    None => write!(f, " (every parameter and gradient is finite)")?,
                }
                write!(f, "; nothing was saved after the last checkpoint: lower the learning rate or resume from it")
            }
        }
    }
}

impl std::error::Error for Error {}

/// Return early with an [`Error`] unless the condition holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $err:expr) => {
        if !$cond {
            return Err($err);
        }
    };
}
