//! Sequence tasks of the Fixed-Point RNN experiments (spec `fixed-point-rnn.md` §5), each
//! generated online from an [`Rng`]:
//!
//! - [`groups`]: word problems over Z2 (parity), Z60, A4, A5 and S5 (§5.1);
//! - [`copying`]: the copy task after Jelassi et al. (§5.2);
//! - [`arith`]: modular arithmetic with brackets after Grazzi et al. (§5.3).
//!
//! Every generator returns a [`Batch`]: token ids `[B, T]` and one target per position,
//! [`Batch::ignore`] where a position is not supervised (use it as the cross-entropy
//! `ignore_index`).

pub mod arith;
pub mod copying;
pub mod groups;

pub use arith::{ArithConfig, ArithTask};
pub use copying::{CopyConfig, CopyTask};
pub use groups::{Group, WordProblems};

use crate::error::{Error, Result};
use crate::rng::Rng;

/// A batch of token sequences with per-position targets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// Row-major `[B, T]` input ids.
    pub tokens: Vec<usize>,
    /// Row-major `[B, T]` targets; [`Batch::ignore`] marks unsupervised positions.
    pub targets: Vec<usize>,
    pub shape: [usize; 2],
    /// The target value of unsupervised positions (never a real class id).
    pub ignore: usize,
}

impl Batch {
    /// Number of supervised positions.
    pub fn supervised(&self) -> usize {
        self.targets.iter().filter(|&&t| t != self.ignore).count()
    }
    /// Row `i`'s targets.
    pub fn row_targets(&self, i: usize) -> &[usize] {
        let t = self.shape[1];
        &self.targets[i * t..(i + 1) * t]
    }
}

/// A task as the trainer sees it.
#[derive(Clone, Debug, PartialEq)]
pub enum Task {
    Word(WordProblems),
    Copy(CopyTask),
    Arith(ArithTask),
}

/// Task names accepted by [`Task::parse`].
pub const TASK_NAMES: &str = "z2 (parity), z60, a4, a5, s5, copy, arith";

impl Task {
    /// `z2`/`parity`, `z60`, `a4`, `a5`, `s5`, `copy`, `arith` with the default sizes.
    pub fn parse(name: &str) -> Result<Task> {
        let lower = name.to_ascii_lowercase();
        Ok(match lower.as_str() {
            "copy" | "copying" => Task::Copy(CopyTask::new(CopyConfig::default())?),
            "arith" | "modarith" | "mod-arith" | "arithmetic" => Task::Arith(ArithTask::new(ArithConfig::default())?),
            _ => match Group::parse(&lower) {
                Ok(g) => Task::Word(WordProblems::new(g)),
                Err(_) => {
                    return Err(Error::InvalidArgument {
                        op: "task",
                        message: format!("unknown task {name:?} (one of {TASK_NAMES})"),
                    });
                }
            },
        })
    }

    /// Short name (`a5`, `copy`, `arith`, ...).
    pub fn name(&self) -> String {
        match self {
            Task::Word(w) => w.group().name().to_ascii_lowercase(),
            Task::Copy(_) => "copy".into(),
            Task::Arith(_) => "arith".into(),
        }
    }

    /// Vocabulary size of the model's logits.
    pub fn vocab(&self) -> usize {
        match self {
            Task::Word(w) => w.vocab(),
            Task::Copy(_) => copying::VOCAB,
            Task::Arith(_) => arith::VOCAB,
        }
    }

    /// The training length: word problems `k` (group elements per sequence), copying the
    /// longest string, arithmetic the longest sequence.
    pub fn train_len(&self) -> usize {
        match self {
            Task::Word(w) => w.train_len,
            Task::Copy(c) => c.config().max_len,
            Task::Arith(a) => a.config().max_len,
        }
    }

    /// Set the training length (see [`Task::train_len`]); validates.
    pub fn set_train_len(&mut self, n: usize) -> Result<()> {
        match self {
            Task::Word(w) => {
                if n == 0 {
                    return Err(Error::InvalidArgument {
                        op: "task",
                        message: "the training length must be at least 1".into(),
                    });
                }
                w.train_len = n;
            }
            Task::Copy(c) => *c = CopyTask::new(CopyConfig { max_len: n, ..c.config().clone() })?,
            Task::Arith(a) => *a = ArithTask::new(ArithConfig { max_len: n, ..a.config().clone() })?,
        }
        Ok(())
    }

    /// Set the row length of packed copy rows / padded arithmetic rows; an error for word
    /// problems (their rows are `k + 1` tokens).
    pub fn set_context(&mut self, n: usize) -> Result<()> {
        match self {
            Task::Word(_) => Err(Error::InvalidArgument {
                op: "task",
                message: "--context applies to copy and arith only (word problems use --train-len)".into(),
            }),
            Task::Copy(c) => {
                *c = CopyTask::new(CopyConfig { context: n, ..c.config().clone() })?;
                Ok(())
            }
            Task::Arith(a) => {
                *a = ArithTask::new(ArithConfig { context: n, ..a.config().clone() })?;
                Ok(())
            }
        }
    }

    /// Evaluation lengths of §5: word problems {2, 4, 8, 12, 16, 20, 24, 32, 40, 50};
    /// copying 5..2× the training length in 10 steps; arithmetic 40..256.
    pub fn default_eval_lengths(&self) -> Vec<usize> {
        match self {
            Task::Word(_) => vec![2, 4, 8, 12, 16, 20, 24, 32, 40, 50],
            Task::Copy(c) => {
                let hi = 2 * c.config().max_len;
                let mut v: Vec<usize> = (1..=10).map(|i| (5 + (hi.saturating_sub(5)) * i / 10).max(5)).collect();
                v.dedup();
                v
            }
            Task::Arith(a) => {
                let lo = a.config().max_len.max(5);
                let hi = a.config().context.max(lo);
                let mut v: Vec<usize> = (0..=6).map(|i| lo + (hi - lo) * i / 6).collect();
                v.dedup();
                v
            }
        }
    }

    /// Evaluation lengths must be possible for the task.
    pub fn check_eval_length(&self, len: usize) -> Result<()> {
        let bad = |message: String| Err(Error::InvalidArgument { op: "task", message });
        match self {
            Task::Word(_) if len == 0 => bad("word-problem evaluation lengths must be at least 1".into()),
            Task::Copy(_) if len == 0 => bad("copy evaluation lengths must be at least 1".into()),
            Task::Arith(a) if len < 5 || len > a.config().context => {
                bad(format!("arith evaluation lengths must be in 5..={}, got {len}", a.config().context))
            }
            _ => Ok(()),
        }
    }

    /// A training batch of `b` rows.
    pub fn train_batch(&self, b: usize, rng: &mut Rng) -> Batch {
        match self {
            Task::Word(w) => w.batch(b, w.train_len, rng),
            Task::Copy(c) => c.train_batch(b, rng),
            Task::Arith(a) => a.batch(b, a.config().min_len, a.config().max_len, rng),
        }
    }

    /// An evaluation batch of `b` rows at length `len` (word problems: `len` elements;
    /// copying: strings of length `len`, one per row; arithmetic: sequences of length `len`).
    pub fn eval_batch(&self, b: usize, len: usize, rng: &mut Rng) -> Batch {
        match self {
            Task::Word(w) => w.batch(b, len, rng),
            Task::Copy(c) => c.eval_batch(b, len, rng),
            Task::Arith(a) => a.batch(b, len, len, rng),
        }
    }

    /// Tokens per training row (for the tokens/s figure).
    pub fn train_row_len(&self) -> usize {
        match self {
            // Saturating: a config is asked for its row length before it is validated.
            Task::Word(w) => w.train_len.saturating_add(1),
            Task::Copy(c) => c.config().context.saturating_sub(1),
            Task::Arith(a) => a.config().max_len,
        }
    }
}
