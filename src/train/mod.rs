//! Training jobs: configuration in, report out. Nothing here prints; the binary
//! formats reports.

pub mod dino;
pub mod fprnn;
pub mod mlp;

pub use dino::{DinoConfig, DinoHooks, DinoReport, train_dino};
pub use fprnn::{FprnnConfig, FprnnTrainer, LengthEval, StepInfo};
pub use mlp::{MlpConfig, MlpReport, MlpTrainer, accuracy, train_mlp, train_mlp_with};
