//! T8: invariants of the task generators (spec §5, §9).

use fixpoint::Rng;
use fixpoint::tasks::arith::{self, ArithConfig, ArithTask, expression};
use fixpoint::tasks::copying::{self, CopyConfig, CopyTask};
use fixpoint::tasks::{Group, Task, WordProblems};
use std::collections::HashSet;

/// Compose two permutations independently of the crate: (a∘b)(i) = a(b(i)).
fn compose(a: &[u8], b: &[u8]) -> Vec<u8> {
    b.iter().map(|&i| a[i as usize]).collect()
}

fn sign(p: &[u8]) -> i32 {
    // Cycle decomposition: sign = (−1)^(n − cycles).
    let mut seen = vec![false; p.len()];
    let mut cycles = 0;
    for s in 0..p.len() {
        if !seen[s] {
            cycles += 1;
            let mut i = s;
            while !seen[i] {
                seen[i] = true;
                i = p[i] as usize;
            }
        }
    }
    if (p.len() - cycles).is_multiple_of(2) { 1 } else { -1 }
}

#[test]
fn group_orders_closure_and_products() {
    for (name, order, even_only, k) in [("s5", 120, false, 5), ("a5", 60, true, 5), ("a4", 12, true, 4)] {
        let g = Group::parse(name).unwrap();
        assert_eq!(g.order(), order, "{name}");
        let perms: Vec<Vec<u8>> = (0..order).map(|a| g.perm(a).unwrap().to_vec()).collect();
        // Distinct permutations of {0..k-1}, of the right parity, in lexicographic order.
        let set: HashSet<&Vec<u8>> = perms.iter().collect();
        assert_eq!(set.len(), order);
        for p in &perms {
            let mut s = p.clone();
            s.sort_unstable();
            assert_eq!(s, (0..k as u8).collect::<Vec<_>>());
            if even_only {
                assert_eq!(sign(p), 1);
            }
        }
        assert!(perms.windows(2).all(|w| w[0] < w[1]), "{name} not lexicographic");
        assert_eq!(g.identity(), 0);
        assert_eq!(perms[0], (0..k as u8).collect::<Vec<_>>());
        // Closure: every product is an element, and the table agrees with a(b(i)).
        for a in 0..order {
            for b in 0..order {
                let c = compose(&perms[a], &perms[b]);
                assert!(set.contains(&c), "{name} not closed");
                assert_eq!(perms[g.compose(a, b)], c);
            }
        }
    }
    // Cyclic groups.
    for (name, n) in [("z2", 2), ("parity", 2), ("z60", 60)] {
        let g = Group::parse(name).unwrap();
        assert_eq!(g.order(), n);
        for a in 0..n {
            for b in 0..n {
                assert_eq!(g.compose(a, b), (a + b) % n);
            }
        }
    }
    for bad in ["q5", "z", "s", "a0x", "s9"] {
        assert!(Group::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn word_problem_labels_are_prefix_folds() {
    for name in ["z2", "z60", "a4", "a5", "s5"] {
        let g = Group::parse(name).unwrap();
        let w = WordProblems::new(g.clone());
        let n = g.order();
        assert_eq!(w.vocab(), n + 7);
        let mut rng = Rng::new(7).stream(name);
        let b = w.batch(9, 13, &mut rng);
        assert_eq!(b.shape, [9, 14]);
        assert_eq!(b.supervised(), 9 * 14, "every position is supervised");
        let mut seen = HashSet::new();
        for r in 0..9 {
            let x = &b.tokens[r * 14..(r + 1) * 14];
            let y = b.row_targets(r);
            assert_eq!((x[0], y[0]), (n + 1, n + 1), "position 0 is BOS and predicts BOS");
            // Independent fold: with permutations, compose the arrays; cyclic: sum mod n.
            let mut acc: Option<Vec<u8>> = g.perm(0).map(|p| p.to_vec());
            let mut sum = 0;
            for i in 1..14 {
                assert!(x[i] < n);
                seen.insert(x[i]);
                match &mut acc {
                    Some(a) => {
                        *a = compose(a, g.perm(x[i]).unwrap());
                        assert_eq!(g.perm(y[i]).unwrap(), a.as_slice());
                    }
                    None => {
                        sum = (sum + x[i]) % n;
                        assert_eq!(y[i], sum);
                    }
                }
            }
        }
        if n <= 12 {
            assert_eq!(seen.len(), n, "{name}: every element appears");
        }
        // Seeded.
        assert_eq!(w.batch(9, 13, &mut Rng::new(7).stream(name)), b);
        assert_ne!(w.batch(9, 13, &mut Rng::new(8).stream(name)), b);
    }
}

#[test]
fn copy_mask_covers_the_copy_and_the_dot() {
    let t = CopyTask::new(CopyConfig::default()).unwrap();
    let mut rng = Rng::new(3);
    for len in [1, 5, 50] {
        let (ids, mask) = t.example(len, &mut rng);
        assert_eq!(ids.len(), 2 * len + 3);
        assert_eq!(mask.iter().filter(|&&m| m).count(), len + 1);
        assert_eq!(ids[0], copying::DOLLAR);
        assert_eq!(ids[len + 1], copying::BAR);
        assert_eq!(ids[2 * len + 2], copying::DOT);
        assert_eq!(ids[1..=len], ids[len + 2..2 * len + 2]);
        assert!(mask[len + 2..].iter().all(|&m| m) && mask[..len + 2].iter().all(|&m| !m));
    }
    // Packed rows: the context is full; complete examples supervise |s| + 1 positions,
    // and the shifted targets are the next ids on the mask.
    let b = t.train_batch(6, &mut rng);
    assert_eq!(b.shape, [6, 255]);
    for r in 0..6 {
        let x = &b.tokens[r * 255..(r + 1) * 255];
        let y = b.row_targets(r);
        for i in 0..254 {
            if y[i] != copying::IGNORE {
                assert_eq!(y[i], x[i + 1]);
            }
        }
        // Walk the examples: each complete one has |s| + 1 supervised targets.
        let mut i = 0;
        while i < 255 {
            assert_eq!(x[i], copying::DOLLAR);
            let bar = (i + 1..255).find(|&j| x[j] == copying::BAR);
            let Some(bar) = bar else { break };
            let len = bar - i - 1;
            assert!((5..=50).contains(&len));
            let end = bar + len + 1; // index of '.'
            if end >= 255 {
                // Cut off (or '.' is the very last id, whose target is outside the row).
                assert!(y[i..].iter().all(|&t| t == copying::IGNORE) || end == 255);
                break;
            }
            let sup = y[i.saturating_sub(1)..end].iter().filter(|&&t| t != copying::IGNORE).count();
            assert_eq!(sup, len + 1, "row {r} example at {i}");
            i = end + 1;
        }
    }
    let e = t.eval_batch(4, 100, &mut rng);
    assert_eq!(e.shape, [4, 202]);
    assert_eq!(e.supervised(), 4 * 101);
    let err = CopyTask::new(CopyConfig { context: 102, min_len: 5, max_len: 50 }).unwrap_err().to_string();
    assert!(err.contains("2·max + 3"), "{err}");
    assert!(CopyTask::new(CopyConfig { context: 103, min_len: 5, max_len: 50 }).is_ok());
    assert!(CopyTask::new(CopyConfig { context: 256, min_len: 6, max_len: 5 }).is_err());
}

/// An independent evaluator: recursive descent over the token string, mod 5.
fn eval(tokens: &[usize], pos: &mut usize) -> i64 {
    let t = tokens[*pos];
    *pos += 1;
    match t {
        0..=4 => t as i64,
        arith::MINUS => -eval(tokens, pos),
        arith::OPEN => {
            let a = eval(tokens, pos);
            let r = match tokens[*pos] {
                arith::CLOSE => a,
                op => {
                    *pos += 1;
                    let b = eval(tokens, pos);
                    match op {
                        arith::PLUS => a + b,
                        arith::MINUS => a - b,
                        arith::TIMES => a * b,
                        _ => panic!("bad operator {op}"),
                    }
                }
            };
            assert_eq!(tokens[*pos], arith::CLOSE);
            *pos += 1;
            r
        }
        _ => panic!("unexpected token {t}"),
    }
}

#[test]
fn arithmetic_results_match_an_independent_evaluation() {
    let mut rng = Rng::new(11);
    for n in 1..=80 {
        for _ in 0..20 {
            let (e, v) = expression(n, &mut rng);
            assert_eq!(e.len(), n, "expression length");
            let mut pos = 0;
            let want = eval(&e, &mut pos).rem_euclid(5) as usize;
            assert_eq!(pos, n, "the whole expression parses");
            assert_eq!(v, want, "{e:?}");
        }
    }
    let t = ArithTask::new(ArithConfig::default()).unwrap();
    for len in [3, 5, 40, 256] {
        let b = t.batch(5, len, len, &mut rng);
        let want_len = len.max(5);
        assert_eq!(b.shape, [5, want_len]);
        for r in 0..5 {
            let x = &b.tokens[r * want_len..(r + 1) * want_len];
            let y = b.row_targets(r);
            let eq = want_len - 3;
            assert_eq!((x[eq], x[eq + 1], x[eq + 2]), (arith::EQUALS, 0, arith::PAD));
            let sup: Vec<usize> = (0..want_len).filter(|&i| y[i] != arith::IGNORE).collect();
            assert_eq!(sup, vec![eq], "one target, at '='");
            let mut pos = 0;
            assert_eq!(y[eq], eval(&x[..eq], &mut pos).rem_euclid(5) as usize);
            assert_eq!(pos, eq);
        }
    }
    // Mixed lengths pad with PAD.
    let b = t.batch(16, 3, 40, &mut rng);
    assert!(b.shape[1] <= 40 && b.supervised() == 16);
    assert!((arith::scaled_accuracy(1.0) - 1.0).abs() < 1e-12 && arith::scaled_accuracy(0.2).abs() < 1e-12);
    assert!(ArithTask::new(ArithConfig { min_len: 3, max_len: 300, context: 256 }).is_err());
}

#[test]
fn task_names_and_sizes() {
    for (name, vocab) in [("a5", 67), ("S5", 127), ("parity", 9), ("z60", 67), ("a4", 19), ("copy", 29), ("arith", 12)]
    {
        assert_eq!(Task::parse(name).unwrap().vocab(), vocab, "{name}");
    }
    let e = Task::parse("a6x").unwrap_err().to_string();
    assert!(e.contains("unknown task"), "{e}");
    let mut c = Task::parse("copy").unwrap();
    assert!(c.set_context(100).is_err(), "context below 2·50 + 3");
    assert!(c.set_train_len(20).is_ok() && c.set_context(43).is_ok() && c.set_context(42).is_err());
    assert_eq!(Task::parse("a5").unwrap().default_eval_lengths(), vec![2, 4, 8, 12, 16, 20, 24, 32, 40, 50]);
    assert_eq!(*Task::parse("copy").unwrap().default_eval_lengths().last().unwrap(), 100);
}

/// Names the fuzzer found panicking (a multi-byte first character; a training length
/// whose row length overflows) are errors or saturate, never panics.
#[test]
fn odd_task_names_and_huge_lengths_do_not_panic() {
    for name in ["\u{e9}5", "\u{9a}a4", "", "a", "z0", "s"] {
        assert!(Group::parse(name).is_err(), "{name:?}");
        assert!(Task::parse(name).is_err(), "{name:?}");
    }
    let mut t = Task::parse("a4").unwrap();
    if t.set_train_len(usize::MAX).is_ok() {
        assert_eq!(t.train_row_len(), usize::MAX, "saturates instead of wrapping");
    }
}
