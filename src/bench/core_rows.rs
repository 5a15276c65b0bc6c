//! Row-wise fused ops of `bench core` (filled in when the fused ops land).

use crate::{Result, Rng};

pub fn row_ops(_reps: usize, _rng: &mut Rng) -> Result<Vec<(String, f64, f64)>> {
    Ok(Vec::new())
}
