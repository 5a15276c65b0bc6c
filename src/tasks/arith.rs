//! Modular arithmetic with brackets (§5.3, after Grazzi et al.), mod 5.
//!
//! - Tokens: digits 0..4, `+` = 5, `−` = 6, `*` = 7, `(` = 8, `)` = 9, `=` = 10, PAD = 11
//!   (vocabulary 12). The ignore index is 12.
//! - An expression of length `n`: `a` (n = 1), `−a` (2), `(a)` (3), `(−a)` (4); for
//!   `n ≥ 5`, `L ~ U{1..n−4}`, `R = n − L − 3`, `op ~ U{+, −, *}`, `( E_L op E_R )` with
//!   value `(v_L op v_R) mod 5`.
//! - A sequence: `L_seq = max(U{min..max}, 5)`; `expr(L_seq − 3) = result PAD`, i.e.
//!   `L_seq` tokens. The input has the result replaced by 0; the only target is the result,
//!   at the position of `=`.
//! - Rows are padded with PAD to the longest sequence of the batch (not to the context of
//!   256: trailing padding does not change a causal model's earlier outputs).

use super::Batch;
use crate::error::{Error, Result};
use crate::rng::Rng;

pub const VOCAB: usize = 12;
pub const PLUS: usize = 5;
pub const MINUS: usize = 6;
pub const TIMES: usize = 7;
pub const OPEN: usize = 8;
pub const CLOSE: usize = 9;
pub const EQUALS: usize = 10;
pub const PAD: usize = 11;
pub const IGNORE: usize = 12;
pub const MODULUS: usize = 5;

/// Sizes of the arithmetic task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArithConfig {
    /// Shortest and longest training sequences (3..40 in the paper; below 5 counts as 5).
    pub min_len: usize,
    pub max_len: usize,
    /// Longest sequence (256); evaluation lengths go up to it.
    pub context: usize,
}

impl Default for ArithConfig {
    fn default() -> Self {
        ArithConfig { min_len: 3, max_len: 40, context: 256 }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArithTask {
    cfg: ArithConfig,
}

/// A random expression of exactly `n >= 1` tokens and its value mod 5.
pub fn expression(n: usize, rng: &mut Rng) -> (Vec<usize>, usize) {
    let mut out = Vec::with_capacity(n);
    let v = expr_into(n, rng, &mut out);
    (out, v)
}

fn expr_into(n: usize, rng: &mut Rng, out: &mut Vec<usize>) -> usize {
    let m = MODULUS;
    match n {
        0 => panic!("expression length must be at least 1"),
        1 => {
            let a = rng.below(m);
            out.push(a);
            a
        }
        2 => {
            let a = rng.below(m);
            out.extend([MINUS, a]);
            (m - a) % m
        }
        3 => {
            let a = rng.below(m);
            out.extend([OPEN, a, CLOSE]);
            a
        }
        4 => {
            let a = rng.below(m);
            out.extend([OPEN, MINUS, a, CLOSE]);
            (m - a) % m
        }
        _ => {
            let l = 1 + rng.below(n - 4);
            let r = n - l - 3;
            let op = [PLUS, MINUS, TIMES][rng.below(3)];
            out.push(OPEN);
            let vl = expr_into(l, rng, out);
            out.push(op);
            let vr = expr_into(r, rng, out);
            out.push(CLOSE);
            match op {
                PLUS => (vl + vr) % m,
                MINUS => (vl + m - vr) % m,
                _ => (vl * vr) % m,
            }
        }
    }
}

impl ArithTask {
    /// Fails unless `1 <= min_len <= max_len <= context` and `max_len >= 5`.
    pub fn new(cfg: ArithConfig) -> Result<ArithTask> {
        if cfg.min_len == 0 || cfg.min_len > cfg.max_len || cfg.max_len < 5 || cfg.max_len > cfg.context {
            return Err(Error::InvalidArgument {
                op: "arith task",
                message: format!(
                    "need 1 <= min length <= max length <= context and max length >= 5, got {}, {}, {}",
                    cfg.min_len, cfg.max_len, cfg.context
                ),
            });
        }
        Ok(ArithTask { cfg })
    }
    pub fn config(&self) -> &ArithConfig {
        &self.cfg
    }

    /// One sequence of `L_seq = max(len, 5)` tokens: (input, target position, result).
    pub fn sample(&self, len: usize, rng: &mut Rng) -> (Vec<usize>, usize, usize) {
        let l = len.max(5);
        let (mut ids, v) = expression(l - 3, rng);
        let at = ids.len();
        ids.extend([EQUALS, 0, PAD]);
        (ids, at, v)
    }

    /// `b` sequences with lengths `U{lo..hi}`, padded to the longest.
    pub fn batch(&self, b: usize, lo: usize, hi: usize, rng: &mut Rng) -> Batch {
        let rows: Vec<_> = (0..b).map(|_| self.sample(lo + rng.below(hi - lo + 1), rng)).collect();
        let t = rows.iter().map(|r| r.0.len()).max().unwrap_or(5);
        let mut tokens = Vec::with_capacity(b * t);
        let mut targets = vec![IGNORE; b * t];
        for (i, (ids, at, v)) in rows.into_iter().enumerate() {
            targets[i * t + at] = v;
            tokens.extend(&ids);
            tokens.resize((i + 1) * t, PAD);
        }
        Batch { tokens, targets, shape: [b, t], ignore: IGNORE }
    }
}

/// Scaled accuracy `(acc − 1/5) / (4/5)`: 1 is perfect, 0 is chance.
pub fn scaled_accuracy(acc: f64) -> f64 {
    (acc - 1.0 / MODULUS as f64) / (1.0 - 1.0 / MODULUS as f64)
}
