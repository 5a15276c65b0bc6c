//! The run harness that every training command plugs into: a run directory with its
//! configuration, metrics, summary, checkpoints and plots; clean stops on Ctrl-C or
//! SIGTERM; progress on standard error.
//!
//! ```text
//! DIR/config.json            the full resolved configuration (+ command, crate_version, out)
//! DIR/metrics.jsonl          one JSON object per logged step or evaluation
//! DIR/summary.json           the final results: the last line `--json` prints
//! DIR/ckpt-<step>.safetensors  parameters, optimiser state, RNG streams, data cursor, config
//! DIR/loss.png, DIR/<metric>.png
//! ```
//!
//! A command's loop, in outline:
//!
//! ```no_run
//! # use fixpoint::run::{Run, RunOptions};
//! # fn main() -> fixpoint::Result<()> {
//! let total = 100;
//! let mut run = Run::start("demo", serde_json::json!({ "seed": 1, "steps": total }), total, RunOptions::default())?;
//! let mut step = 0;
//! if let Some(ck) = run.take_resumed() {
//!     step = ck.step; // ... and restore parameters, optimiser state, RNG streams, cursor
//! }
//! while step < total {
//!     // ... one training step ...
//!     step += 1;
//!     run.log(step, &[("loss", 0.5), ("lr", 0.01)])?;
//!     let save = run.checkpoint_due(step) || run.interrupted();
//!     if save {
//!         let ck = run.checkpoint(step); // .with_param(..).with_rng(..).with_cursor(..)
//!         if run.interrupted() {
//!             std::process::exit(run.finish_interrupted(&ck)?);
//!         }
//!         run.save_checkpoint(&ck)?;
//!     }
//! }
//! let ck = run.checkpoint(step); // with the same state as above
//! let line = run.finish(&serde_json::json!({ "final_loss": 0.5 }), &ck)?;
//! println!("{line}"); // with --json: the same text as summary.json
//! # Ok(()) }
//! ```
//!
//! The harness owns the process's Ctrl-C/SIGTERM handler (`ctrlc` allows one per
//! process); set [`RunOptions::handle_signals`] to false to leave signals alone.
//! `src/bin/harness_demo.rs` is a complete example.

pub mod checkpoint;
pub mod dir;
pub mod faults;
pub mod interrupt;
pub mod metrics;
pub mod plot;
pub mod progress;
pub mod show;

pub use checkpoint::Checkpoint;
pub use dir::RunDir;
pub use interrupt::{EXIT_INTERRUPTED, Interrupt};
pub use metrics::{MetricsWriter, Record, read_metrics};
pub use progress::{Progress, ProgressMode};
pub use show::{replot, show_run};

use crate::error::{Error, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// An f32 as JSON: the shortest decimal that reads back to the same f32 (not its f64
/// expansion, 0.1f32 is written 0.1), and `null` for NaN and infinities.
pub fn json_f32(x: f32) -> Value {
    if !x.is_finite() {
        return Value::Null;
    }
    let v: f64 = format!("{x}").parse().unwrap_or(f64::NAN);
    serde_json::json!(v)
}

/// The harness's command-line options, to `#[command(flatten)]` into every training
/// command.
#[derive(clap::Args, Clone, Debug, Default, PartialEq, Eq)]
pub struct RunArgs {
    /// Directory for config, metrics, summary, checkpoints and plots
    /// [default: runs/<command>-<UTC time>]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Overwrite the run files in a non-empty --out
    #[arg(long, conflicts_with = "resume")]
    pub force: bool,
    /// Continue the run in DIR (or in --out) from its newest valid checkpoint, bit for
    /// bit as if it had never stopped (same seed and flags)
    #[arg(long, value_name = "DIR", num_args = 0..=1)]
    pub resume: Option<Option<PathBuf>>,
    /// Stop once N steps are done, as Ctrl-C would (checkpoint, metrics), but with exit
    /// status 0; continue later with --resume
    #[arg(long, value_name = "N")]
    pub stop_after: Option<u64>,
    /// Write a checkpoint every N steps (0: only at the end and when interrupted)
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub ckpt_every: u64,
    /// Keep only the newest K checkpoints (0: keep all)
    #[arg(long, value_name = "K", default_value_t = 3)]
    pub keep: usize,
    /// No progress output
    #[arg(long)]
    pub quiet: bool,
}

impl RunArgs {
    pub fn options(&self) -> RunOptions {
        RunOptions {
            out: self.out.clone(),
            force: self.force,
            resume: self.resume.is_some(),
            resume_dir: self.resume.clone().flatten(),
            stop_after: self.stop_after,
            ckpt_every: self.ckpt_every,
            keep: self.keep,
            progress: if self.quiet { ProgressMode::Quiet } else { ProgressMode::Auto },
            ..RunOptions::default()
        }
    }
}

/// How a [`Run`] behaves.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub out: Option<PathBuf>,
    pub force: bool,
    pub resume: bool,
    /// `--resume DIR`: the run directory (the same as `--out DIR --resume`).
    pub resume_dir: Option<PathBuf>,
    /// Stop (checkpoint, exit status 0) once this many steps are done.
    pub stop_after: Option<u64>,
    /// Checkpoint every N steps (0: only at the end and when interrupted).
    pub ckpt_every: u64,
    /// Checkpoints kept (0: all).
    pub keep: usize,
    pub progress: ProgressMode,
    /// Plain progress lines every N steps (0: about 20 per run).
    pub log_every: u64,
    /// Install the SIGINT/SIGTERM handler (off: only [`Interrupt::request`] stops the run).
    pub handle_signals: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            out: None,
            force: false,
            resume: false,
            resume_dir: None,
            stop_after: None,
            ckpt_every: 0,
            keep: 3,
            progress: ProgressMode::Auto,
            log_every: 0,
            handle_signals: true,
        }
    }
}

/// A training run in progress: its directory, metrics writer, progress display and stop
/// flag.
#[derive(Debug)]
pub struct Run {
    dir: RunDir,
    config: Value,
    metrics: MetricsWriter,
    progress: Progress,
    interrupt: Interrupt,
    ckpt_every: u64,
    keep: usize,
    resumed: Option<Checkpoint>,
    start_step: u64,
    stop_after: Option<u64>,
    /// The stop was asked for by `--stop-after`, not by a signal.
    planned_stop: bool,
}

impl Run {
    /// Open the run directory (see [`RunDir::create`]), write `config.json` (the given
    /// object plus `command`, `crate_version` and `out`), open `metrics.jsonl`, and on
    /// `--resume` load the latest checkpoint (take it with [`Run::take_resumed`]).
    pub fn start(command: &str, config: Value, total_steps: u64, opts: RunOptions) -> Result<Run> {
        let Value::Object(mut obj) = config else {
            return Err(Error::InvalidArgument {
                op: "run",
                message: "the configuration must be a JSON object".into(),
            });
        };
        let out = match (&opts.resume_dir, &opts.out) {
            (Some(r), Some(o)) if r != o => {
                return Err(Error::InvalidArgument {
                    op: "--resume",
                    message: format!(
                        "--resume {} and --out {} name different directories; give one",
                        r.display(),
                        o.display()
                    ),
                });
            }
            (Some(r), _) => Some(r.clone()),
            (None, o) => o.clone(),
        };
        let dir = RunDir::create(out, command, opts.force, opts.resume || opts.resume_dir.is_some())?;
        obj.insert("command".into(), Value::from(command));
        obj.insert("crate_version".into(), Value::from(env!("CARGO_PKG_VERSION")));
        obj.insert("out".into(), Value::from(dir.path().display().to_string()));
        let config = Value::Object(obj);

        let mut notes = Vec::new();
        let (metrics, resumed) = if dir.is_resume() {
            let (path, ck) = newest_valid_checkpoint(dir.path(), &mut notes)?;
            if let Some(old) = dir.read_config()? {
                let changed = changed_keys(&old, &config);
                if !changed.is_empty() {
                    notes.push(format!("warning: the configuration differs from the run's: {}", changed.join(", ")));
                }
            }
            notes.push(format!("resuming from {} (step {})", path.display(), ck.step));
            (MetricsWriter::resume(&dir.metrics_path(), ck.step)?, Some(ck))
        } else {
            (MetricsWriter::create(&dir.metrics_path())?, None)
        };
        dir.write_config(&config)?;
        let interrupt = if opts.handle_signals { Interrupt::install()? } else { Interrupt::manual() };
        let start_step = resumed.as_ref().map_or(0, |c| c.step);
        let progress = Progress::new(total_steps, start_step, opts.progress, opts.log_every);
        progress.println(&format!("run directory: {}", dir.path().display()));
        for n in notes {
            progress.warn(&n);
        }
        Ok(Run {
            dir,
            config,
            metrics,
            progress,
            interrupt,
            ckpt_every: opts.ckpt_every,
            keep: opts.keep,
            resumed,
            start_step,
            stop_after: opts.stop_after,
            planned_stop: false,
        })
    }

    pub fn dir(&self) -> &RunDir {
        &self.dir
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    /// The configuration as written to `config.json`.
    pub fn config(&self) -> &Value {
        &self.config
    }
    /// The step the run starts (or continues) from.
    pub fn start_step(&self) -> u64 {
        self.start_step
    }
    /// The checkpoint to continue from on `--resume` (once).
    pub fn take_resumed(&mut self) -> Option<Checkpoint> {
        self.resumed.take()
    }
    pub fn interrupt(&self) -> &Interrupt {
        &self.interrupt
    }
    /// True once Ctrl-C or SIGTERM arrived: finish the step, then [`Run::finish_interrupted`].
    pub fn interrupted(&self) -> bool {
        self.interrupt.requested()
    }
    pub fn progress(&mut self) -> &mut Progress {
        &mut self.progress
    }

    /// Advance the progress display only (for steps that are not logged).
    pub fn tick(&mut self, step: u64, fields: &[(&str, f64)]) {
        self.progress.update(step, fields);
    }
    /// Log a training record (`kind = "train"`) and advance the progress display. Once
    /// `step` reaches `--stop-after`, this requests the stop that [`Run::interrupted`]
    /// reports.
    pub fn log(&mut self, step: u64, fields: &[(&str, f64)]) -> Result<()> {
        self.metrics.log("train", step, fields)?;
        self.progress.update(step, fields);
        if self.stop_after.is_some_and(|s| step >= s) && !self.interrupt.requested() {
            self.planned_stop = true;
            self.interrupt.request();
        }
        Ok(())
    }
    /// Log an evaluation record (`kind = "eval"`) and print it.
    pub fn log_eval(&mut self, step: u64, fields: &[(&str, f64)]) -> Result<()> {
        self.metrics.log("eval", step, fields)?;
        self.progress.println(&format!("eval at step {step}: {}", progress::format_fields(fields)));
        Ok(())
    }
    /// Log any record.
    pub fn log_record(&mut self, kind: &str, step: u64, fields: Record) -> Result<()> {
        self.metrics.log_record(kind, step, fields).map(drop)
    }
    /// A message above the progress display (nothing when quiet).
    pub fn println(&self, msg: &str) {
        self.progress.println(msg);
    }

    /// An empty checkpoint for `step` carrying the run's configuration.
    pub fn checkpoint(&self, step: u64) -> Checkpoint {
        Checkpoint::new(step, self.config.clone())
    }
    /// True when `--ckpt-every` asks for a checkpoint after `step`.
    pub fn checkpoint_due(&self, step: u64) -> bool {
        self.ckpt_every > 0 && step > 0 && step.is_multiple_of(self.ckpt_every)
    }
    /// Sync the metrics, then write `ckpt` atomically, keeping the newest `--keep`. A
    /// failed write (a full disk, say) leaves every earlier checkpoint as it was.
    pub fn save_checkpoint(&mut self, ckpt: &Checkpoint) -> Result<PathBuf> {
        self.metrics.sync()?;
        ckpt.save_atomic_with(self.dir.path(), self.keep, faults::checkpoint_writer(ckpt.step))
    }

    fn plots(&self) -> Vec<PathBuf> {
        match read_metrics(&self.dir.metrics_path()).and_then(|r| plot::plot_metrics(self.dir.path(), &r)) {
            Ok(files) => files,
            Err(e) => {
                self.progress.warn(&format!("warning: plots not drawn: {e}"));
                Vec::new()
            }
        }
    }

    /// End a completed run: write the final checkpoint, `summary.json` and the plots, and
    /// return the summary line (print it as the last line of `--json`).
    pub fn finish(mut self, summary: &Value, ckpt: &Checkpoint) -> Result<String> {
        let ck = self.save_checkpoint(ckpt)?;
        let line = self.dir.write_summary(summary)?;
        let plots = self.plots();
        self.progress.finish();
        let mut files =
            vec![dir::CONFIG_FILE.to_string(), dir::METRICS_FILE.to_string(), dir::SUMMARY_FILE.to_string()];
        files.extend(
            [&ck].into_iter().chain(&plots).filter_map(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()),
        );
        self.progress.println(&format!("run saved in {}: {}", self.dir.path().display(), files.join(", ")));
        Ok(line)
    }

    /// End an interrupted run: write `ckpt`, sync the metrics, draw the plots, say where
    /// everything is, and return the exit status to use ([`EXIT_INTERRUPTED`], or 0 for
    /// a stop asked for by `--stop-after`).
    pub fn finish_interrupted(mut self, ckpt: &Checkpoint) -> Result<i32> {
        let ck = self.save_checkpoint(ckpt)?;
        self.plots();
        self.progress.finish();
        if self.planned_stop {
            self.progress.println(&format!(
                "stopped at step {} (--stop-after): checkpoint {}; continue with --resume {}",
                ckpt.step,
                ck.display(),
                self.dir.path().display()
            ));
            return Ok(0);
        }
        self.progress.warn(&format!(
            "interrupted at step {}: checkpoint {}, metrics {}; continue with --out {} --resume",
            ckpt.step,
            ck.display(),
            self.dir.metrics_path().display(),
            self.dir.path().display()
        ));
        Ok(EXIT_INTERRUPTED)
    }
}

/// The newest checkpoint in `dir` that loads; every newer one that does not (truncated,
/// corrupt) is skipped with a note naming it. An error when none loads.
fn newest_valid_checkpoint(dir: &Path, notes: &mut Vec<String>) -> Result<(PathBuf, Checkpoint)> {
    let all = Checkpoint::list(dir)?;
    let mut refused = Vec::new();
    for (_, path) in all.iter().rev() {
        match Checkpoint::load(path) {
            Ok(ck) => {
                if !refused.is_empty() {
                    notes.push(format!("warning: falling back to {} (the newest valid checkpoint)", path.display()));
                }
                return Ok((path.clone(), ck));
            }
            Err(e) => {
                notes.push(format!("warning: skipping a checkpoint that cannot be used: {e}"));
                refused.push(e.to_string());
            }
        }
    }
    Err(Error::Io {
        path: dir.display().to_string(),
        message: format!(
            "--resume: no valid checkpoint ({}); pass --force to start over",
            if refused.is_empty() { "none found".to_string() } else { refused.join("; ") }
        ),
    })
}

/// Top-level keys whose values differ between two configurations (ignoring `out`).
fn changed_keys(old: &Value, new: &Value) -> Vec<String> {
    let (Some(a), Some(b)) = (old.as_object(), new.as_object()) else { return vec!["(whole configuration)".into()] };
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter().filter(|k| k.as_str() != "out" && a.get(*k) != b.get(*k)).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    #[test]
    fn run_args_parse_and_map_to_options() {
        let c = Cli::try_parse_from(["x", "--out", "d", "--resume", "--ckpt-every", "50", "--keep", "2", "--quiet"])
            .unwrap();
        let o = c.run.options();
        assert_eq!(o.out.as_deref(), Some(Path::new("d")));
        assert!(o.resume && !o.force && o.resume_dir.is_none());
        let r = Cli::try_parse_from(["x", "--resume", "runs/a", "--stop-after", "7"]).unwrap().run.options();
        assert!(r.resume && r.out.is_none());
        assert_eq!((r.resume_dir.as_deref(), r.stop_after), (Some(Path::new("runs/a")), Some(7)));
        assert_eq!((o.ckpt_every, o.keep, o.progress), (50, 2, ProgressMode::Quiet));
        let d = Cli::try_parse_from(["x"]).unwrap().run;
        assert_eq!(d, RunArgs { keep: 3, ..RunArgs::default() });
        assert_eq!(d.options().progress, ProgressMode::Auto);
        assert!(Cli::try_parse_from(["x", "--force", "--resume"]).is_err());
    }

    #[test]
    fn changed_keys_ignores_out() {
        let a = serde_json::json!({ "out": "a", "lr": 1, "seed": 2 });
        let b = serde_json::json!({ "out": "b", "lr": 3, "steps": 4, "seed": 2 });
        assert_eq!(changed_keys(&a, &b), ["lr", "steps"]);
    }
}
