//! Injected faults, for the tests of what a run does when things go wrong: a full disk
//! during a checkpoint write, a process killed in the middle of one, a loss or a
//! gradient that turns NaN. Nothing happens unless `FIXPOINT_FAULT` is set.
//!
//! `FIXPOINT_FAULT` is a comma-separated list of
//!
//! | fault                 | effect                                                                   |
//! |-----------------------|--------------------------------------------------------------------------|
//! | `ckpt-enospc[@STEP]`  | the checkpoint write (of step STEP, or every one) fails half-way with "No space left on device" |
//! | `ckpt-slow[@STEP]`    | the checkpoint write stops half-way for 30 s (time to SIGKILL the process) |
//! | `nan-loss@STEP`       | the loss of step STEP (1-based: the step that would make STEP steps done) is NaN |
//! | `nan-grad@STEP`       | the gradient of the first parameter is NaN at step STEP                  |

use std::fs::File;
use std::io::{self, Write};

/// The environment variable read by this module.
pub const ENV: &str = "FIXPOINT_FAULT";

/// One parsed fault: a name and an optional step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    pub name: String,
    pub step: Option<u64>,
}

/// Parse a `FIXPOINT_FAULT` value; unknown names and bad steps are errors.
pub fn parse(spec: &str) -> Result<Vec<Fault>, String> {
    let mut out = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, step) = match item.split_once('@') {
            Some((n, s)) => (n, Some(s.parse::<u64>().map_err(|_| format!("{ENV}: bad step in {item:?}"))?)),
            None => (item, None),
        };
        if !matches!(name, "ckpt-enospc" | "ckpt-slow" | "nan-loss" | "nan-grad") {
            return Err(format!("{ENV}: unknown fault {name:?} (ckpt-enospc, ckpt-slow, nan-loss, nan-grad)"));
        }
        out.push(Fault { name: name.to_string(), step });
    }
    Ok(out)
}

/// The faults of the environment (none when unset or unparsable; a bad value is
/// reported once on standard error).
pub fn active() -> Vec<Fault> {
    match std::env::var(ENV) {
        Ok(v) => parse(&v).unwrap_or_else(|e| {
            eprintln!("warning: {e}; no fault injected");
            Vec::new()
        }),
        Err(_) => Vec::new(),
    }
}

/// True when fault `name` is set for `step` (a fault without a step applies to all).
pub fn armed(name: &str, step: u64) -> bool {
    active().iter().any(|f| f.name == name && f.step.is_none_or(|s| s == step))
}

/// The byte writer of a checkpoint of `step`: plain `write_all`, or the injected full
/// disk or slow write.
pub fn checkpoint_writer(step: u64) -> impl FnOnce(&mut File, &[u8]) -> io::Result<()> {
    let enospc = armed("ckpt-enospc", step);
    let slow = armed("ckpt-slow", step);
    move |f: &mut File, bytes: &[u8]| {
        if !(enospc || slow) {
            return f.write_all(bytes);
        }
        let half = bytes.len() / 2;
        f.write_all(&bytes[..half])?;
        f.flush()?;
        if enospc {
            return Err(io::Error::new(io::ErrorKind::StorageFull, "No space left on device (injected)"));
        }
        std::thread::sleep(std::time::Duration::from_secs(30));
        f.write_all(&bytes[half..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_bad_ones_are_refused() {
        let f = parse("ckpt-enospc@4, nan-grad@2,ckpt-slow").unwrap();
        assert_eq!(
            f,
            [
                Fault { name: "ckpt-enospc".into(), step: Some(4) },
                Fault { name: "nan-grad".into(), step: Some(2) },
                Fault { name: "ckpt-slow".into(), step: None }
            ]
        );
        assert!(parse("").unwrap().is_empty());
        assert!(parse("disk-full").unwrap_err().contains("unknown fault"));
        assert!(parse("nan-loss@x").unwrap_err().contains("bad step"));
    }
}
