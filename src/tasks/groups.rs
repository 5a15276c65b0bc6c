//! Group word problems (§5.1): `g_1..g_k` i.i.d. uniform over a finite group, targets the
//! prefix products `y_i = y_{i−1}∘g_i` with `y_0 = e`.
//!
//! - Symmetric groups list their permutations of `{0..n−1}` in lexicographic order (the
//!   identity has id 0); alternating groups the even ones, in the same order.
//! - The product is `(a∘b)(i) = a(b(i))`. Cyclic groups `Z_n` use `(a + b) mod n`.
//! - Tokens: element ids `0..n`, then PAD = n, BOS = n+1, UNK, EOS, SEP, CLS, MASK
//!   (vocabulary `n + 7`). Input `[BOS, g_1..g_k]`, labels `[BOS, y_1..y_k]`: position 0
//!   predicts BOS, and every position is supervised.

use super::Batch;
use crate::error::{Error, Result};
use crate::rng::Rng;

/// A finite group as a multiplication table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    name: String,
    order: usize,
    /// `table[a * order + b] = a∘b`.
    table: Vec<u32>,
    identity: usize,
    /// The permutations (for symmetric and alternating groups).
    perms: Option<Vec<Vec<u8>>>,
}

fn permutations(n: usize) -> Vec<Vec<u8>> {
    // Lexicographic order by repeated next-permutation.
    let mut p: Vec<u8> = (0..n as u8).collect();
    let mut out = vec![p.clone()];
    loop {
        let Some(i) = (1..n).rev().find(|&i| p[i - 1] < p[i]) else { return out };
        let j = (i..n).rev().find(|&j| p[j] > p[i - 1]).expect("a larger element exists");
        p.swap(i - 1, j);
        p[i..].reverse();
        out.push(p.clone());
    }
}

/// Parity of a permutation: true if even.
pub fn is_even(p: &[u8]) -> bool {
    let mut inversions = 0;
    for i in 0..p.len() {
        for j in i + 1..p.len() {
            inversions += usize::from(p[i] > p[j]);
        }
    }
    inversions % 2 == 0
}

impl Group {
    /// The cyclic group `Z_n` (addition mod n, identity 0).
    pub fn cyclic(n: usize) -> Result<Group> {
        if n == 0 {
            return Err(Error::InvalidArgument { op: "Group::cyclic", message: "order must be at least 1".into() });
        }
        let table = (0..n * n).map(|i| ((i / n + i % n) % n) as u32).collect();
        Ok(Group { name: format!("Z{n}"), order: n, table, identity: 0, perms: None })
    }

    fn from_perms(name: String, perms: Vec<Vec<u8>>) -> Group {
        let n = perms.len();
        let index: std::collections::HashMap<Vec<u8>, usize> =
            perms.iter().enumerate().map(|(i, p)| (p.clone(), i)).collect();
        let mut table = vec![0u32; n * n];
        for (a, pa) in perms.iter().enumerate() {
            for (b, pb) in perms.iter().enumerate() {
                let c: Vec<u8> = pb.iter().map(|&i| pa[i as usize]).collect();
                // A subset of S_k that is not closed would panic here; symmetric and
                // alternating groups are closed (tested).
                table[a * n + b] = index[&c] as u32;
            }
        }
        let identity = perms.iter().position(|p| p.iter().enumerate().all(|(i, &v)| v as usize == i)).unwrap_or(0);
        Group { name, order: n, table, identity, perms: Some(perms) }
    }

    /// `S_k`: all permutations of `{0..k−1}`, lexicographic.
    pub fn symmetric(k: usize) -> Result<Group> {
        if !(1..=7).contains(&k) {
            return Err(Error::InvalidArgument {
                op: "Group::symmetric",
                message: format!("need 1 <= k <= 7, got {k}"),
            });
        }
        Ok(Group::from_perms(format!("S{k}"), permutations(k)))
    }

    /// `A_k`: the even permutations of `{0..k−1}`, lexicographic.
    pub fn alternating(k: usize) -> Result<Group> {
        if !(1..=7).contains(&k) {
            return Err(Error::InvalidArgument {
                op: "Group::alternating",
                message: format!("need 1 <= k <= 7, got {k}"),
            });
        }
        Ok(Group::from_perms(format!("A{k}"), permutations(k).into_iter().filter(|p| is_even(p)).collect()))
    }

    /// `z2`/`parity`, `z60`, `a4`, `a5`, `s5` (any `zN`, `aK`, `sK` with small sizes).
    pub fn parse(name: &str) -> Result<Group> {
        let s = name.to_ascii_lowercase();
        let bad = || Error::InvalidArgument { op: "Group::parse", message: format!("unknown group {name:?}") };
        if s == "parity" {
            return Group::cyclic(2);
        }
        // Checked: the first character of a user's name may be several bytes long.
        let (kind, num) = s.split_at_checked(1).ok_or_else(bad)?;
        let n: usize = num.parse().map_err(|_| bad())?;
        match kind {
            "z" if (1..=1000).contains(&n) => Group::cyclic(n),
            "s" => Group::symmetric(n),
            "a" => Group::alternating(n),
            _ => Err(bad()),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn order(&self) -> usize {
        self.order
    }
    pub fn identity(&self) -> usize {
        self.identity
    }
    /// `a∘b`.
    pub fn compose(&self, a: usize, b: usize) -> usize {
        self.table[a * self.order + b] as usize
    }
    /// The permutation of element `a` (symmetric and alternating groups).
    pub fn perm(&self, a: usize) -> Option<&[u8]> {
        self.perms.as_ref().map(|p| p[a].as_slice())
    }
}

/// The word-problem task over a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WordProblems {
    group: Group,
    /// Training length `k` (elements per sequence; rows are `k + 1` tokens).
    pub train_len: usize,
}

impl WordProblems {
    /// Training length 16 (§5.1).
    pub fn new(group: Group) -> WordProblems {
        WordProblems { group, train_len: 16 }
    }
    pub fn group(&self) -> &Group {
        &self.group
    }
    pub fn pad(&self) -> usize {
        self.group.order
    }
    pub fn bos(&self) -> usize {
        self.group.order + 1
    }
    /// `order + 7` (PAD, BOS, UNK, EOS, SEP, CLS, MASK).
    pub fn vocab(&self) -> usize {
        self.group.order + 7
    }

    /// One sequence of `k` elements: (`[BOS, g_1..g_k]`, `[BOS, y_1..y_k]`).
    pub fn sample(&self, k: usize, rng: &mut Rng) -> (Vec<usize>, Vec<usize>) {
        let mut input = Vec::with_capacity(k + 1);
        let mut labels = Vec::with_capacity(k + 1);
        input.push(self.bos());
        labels.push(self.bos());
        let mut y = self.group.identity;
        for _ in 0..k {
            let g = rng.below(self.group.order);
            y = self.group.compose(y, g);
            input.push(g);
            labels.push(y);
        }
        (input, labels)
    }

    /// `b` sequences of `k` elements (`[b, k + 1]`, every position supervised).
    pub fn batch(&self, b: usize, k: usize, rng: &mut Rng) -> Batch {
        let mut tokens = Vec::with_capacity(b * (k + 1));
        let mut targets = Vec::with_capacity(b * (k + 1));
        for _ in 0..b {
            let (i, l) = self.sample(k, rng);
            tokens.extend(i);
            targets.extend(l);
        }
        Batch { tokens, targets, shape: [b, k + 1], ignore: self.vocab() }
    }
}
