//! Fixed-Point RNNs (Movahedi et al., "Fixed-Point RNNs: Interpolating from Diagonal to
//! Dense"; spec `shared/docs/fixed-point-rnn.md`).
//!
//! A dense RNN `h_t = A_t h_{t−1} + …` is computed as the fixed point of a diagonal RNN
//! whose input is mixed across channels by a cheap input- (and state-) dependent `Q_t`:
//!
//! - [`mixer`]: channel mixers `v ↦ Q(p)v` (Householder products, identity) and the
//!   differentiable [`householder`] and [`householder_from_pre`] ops.
//! - [`kronecker`]: the Kronecker mixer `I − 2Uᵀ⊗V`.
//! - [`solver`]: the damped fixed-point iteration with per-sample residuals, quantile
//!   stopping and random `ℓ_max` (§2.5), outside the graph.
//! - [`core`](mod@core): the fixed-point map `F` as plain data, its batched evaluation and
//!   the token-by-token dense oracle.
//! - [`block`]: the vector-state FP-RNN block (§4.2) with the one-step backward (§3.1).
//! - [`implicit`]: the exact implicit gradient (adjoint fixed point) as an op.
//! - [`selective`], [`mamba`]: the selective scan and the FP-Mamba / Mamba block (§2.4, §4.3).
//! - [`lstm`]: the LSTM baseline with a fused recurrence op.
//! - [`model`]: the shared backbone (§4.1) and the model kinds.

pub mod block;
pub mod chunked;
pub mod core;
mod gpu_solve;
pub mod implicit;
pub mod kronecker;
pub mod lstm;
pub mod mamba;
pub mod mixer;
pub mod model;
pub mod selective;
pub mod solver;

pub use block::{BackwardMode, BlockConfig, BlockInputs, BlockOutput, FpRnnBlock, ShortConv, SolveMethod};
pub use chunked::ChunkedStats;
pub use core::{FpCore, Workspace};
pub use implicit::{AdjointStats, implicit_grad, solve_adjoint};
pub use kronecker::{KronNorm, KroneckerKernel, KroneckerMixer, kron_apply, kron_factors};
pub use lstm::{Lstm, lstm_recurrence};
pub use mamba::{FpMambaBlock, MambaConfig, MambaInputs};
pub use mixer::{
    HouseholderKernel, HouseholderMixer, Mixer, MixerInput, MixerKernel, MixerKind, dplr_apply, dplr_row, householder,
    householder_coefficients_row, householder_from_pre, householder_row,
};
pub use model::{FpModel, Layer, ModelConfig, ModelKind, ModelOutput};
pub use selective::selective_scan;
pub use solver::{Lmax, SolveRun, SolveShape, SolveStats, SolverConfig, SolverState, quantile, solve};
