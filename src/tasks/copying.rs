//! The copy task (§5.2, after Jelassi et al.).
//!
//! - Tokens: letters a..z → 0..25, `$` = 26, `|` = 27, `.` = 28; vocabulary 29. The
//!   ignore index is `*` = 29.
//! - An example is `$ s | s .` with `s` i.i.d. letters and `|s| ~ U{min_len..max_len}`.
//! - Training rows pack examples until the context is full; a cut-off final example is
//!   kept but not supervised. The mask is 1 on the copied `s` and the final `.` (`|s| + 1`
//!   positions per example).
//! - Next-token prediction: inputs `ids[:-1]`, targets `ids[1:]` where the shifted mask is
//!   1, else the ignore index. Rows are `context − 1` tokens.
//! - Evaluation: one example per row (`2|s| + 2` input tokens; padding with `.` after it
//!   would not change a causal model's outputs), teacher forced.

use super::Batch;
use crate::error::{Error, Result};
use crate::rng::Rng;

pub const VOCAB: usize = 29;
pub const DOLLAR: usize = 26;
pub const BAR: usize = 27;
pub const DOT: usize = 28;
/// `*`: the ignore index.
pub const IGNORE: usize = 29;

/// Sizes of the copy task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyConfig {
    /// Row length of packed training rows (256 in the paper, 220 in the code).
    pub context: usize,
    pub min_len: usize,
    pub max_len: usize,
}

impl Default for CopyConfig {
    fn default() -> Self {
        CopyConfig { context: 256, min_len: 5, max_len: 50 }
    }
}

/// The copy task with validated sizes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyTask {
    cfg: CopyConfig,
}

impl CopyTask {
    /// Fails unless `1 <= min_len <= max_len` and `context >= 2·max_len + 3`.
    pub fn new(cfg: CopyConfig) -> Result<CopyTask> {
        if cfg.min_len == 0 || cfg.min_len > cfg.max_len {
            return Err(Error::InvalidArgument {
                op: "copy task",
                message: format!("need 1 <= min length <= max length, got {} and {}", cfg.min_len, cfg.max_len),
            });
        }
        if cfg.context < 2 * cfg.max_len + 3 {
            return Err(Error::InvalidArgument {
                op: "copy task",
                message: format!(
                    "copy context {} is shorter than 2·max + 3 = {} (max string length {})",
                    cfg.context,
                    2 * cfg.max_len + 3,
                    cfg.max_len
                ),
            });
        }
        Ok(CopyTask { cfg })
    }
    pub fn config(&self) -> &CopyConfig {
        &self.cfg
    }

    /// One example `$ s | s .` and its mask (1 on the copy and the final `.`).
    pub fn example(&self, len: usize, rng: &mut Rng) -> (Vec<usize>, Vec<bool>) {
        let s: Vec<usize> = (0..len).map(|_| rng.below(26)).collect();
        let mut ids = Vec::with_capacity(2 * len + 3);
        let mut mask = Vec::with_capacity(2 * len + 3);
        ids.push(DOLLAR);
        ids.extend(&s);
        ids.push(BAR);
        mask.resize(len + 2, false);
        ids.extend(&s);
        ids.push(DOT);
        mask.resize(2 * len + 3, true);
        (ids, mask)
    }

    /// One packed row of `context` ids and its mask.
    pub fn packed_row(&self, rng: &mut Rng) -> (Vec<usize>, Vec<bool>) {
        let c = self.cfg.context;
        let mut ids = Vec::with_capacity(c);
        let mut mask = Vec::with_capacity(c);
        while ids.len() < c {
            let len = self.cfg.min_len + rng.below(self.cfg.max_len - self.cfg.min_len + 1);
            let (e, m) = self.example(len, rng);
            let room = c - ids.len();
            if e.len() <= room {
                ids.extend(e);
                mask.extend(m);
            } else {
                // Cut off: kept, not supervised.
                ids.extend(&e[..room]);
                mask.resize(c, false);
            }
        }
        (ids, mask)
    }

    fn shifted(rows: Vec<(Vec<usize>, Vec<bool>)>, t: usize) -> Batch {
        let b = rows.len();
        let mut tokens = Vec::with_capacity(b * t);
        let mut targets = Vec::with_capacity(b * t);
        for (ids, mask) in rows {
            tokens.extend(&ids[..t]);
            targets.extend((1..=t).map(|i| if mask[i] { ids[i] } else { IGNORE }));
        }
        Batch { tokens, targets, shape: [b, t], ignore: IGNORE }
    }

    /// `b` packed rows: `[b, context − 1]`.
    pub fn train_batch(&self, b: usize, rng: &mut Rng) -> Batch {
        let rows = (0..b).map(|_| self.packed_row(rng)).collect();
        CopyTask::shifted(rows, self.cfg.context - 1)
    }

    /// `b` single examples with `|s| = len`: `[b, 2·len + 2]`.
    pub fn eval_batch(&self, b: usize, len: usize, rng: &mut Rng) -> Batch {
        let rows = (0..b).map(|_| self.example(len, rng)).collect();
        CopyTask::shifted(rows, 2 * len + 2)
    }
}
