//! CPU execution helpers: explicit parallelism with serial fallbacks, and SIMD helpers.

pub mod par;
pub mod simd;
