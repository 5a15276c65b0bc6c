//! `fixpoint runs show DIR` and `fixpoint runs plot DIR` as library functions.

use crate::error::Result;
use crate::run::checkpoint::Checkpoint;
use crate::run::dir::{METRICS_FILE, RunDir, io_error};
use crate::run::metrics::read_metrics;
use crate::run::plot::plot_metrics;
use serde_json::Value;
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// A readable account of a run: its configuration, its summary (or that it has none),
/// its checkpoints and how many metrics records it has.
pub fn show_run(dir: &Path) -> Result<String> {
    let run = RunDir::open(dir)?;
    let config = run.read_config()?.ok_or_else(|| io_error(dir, "not a run directory", "it has no config.json"))?;
    let pretty = |v: &Value| serde_json::to_string_pretty(v).expect("a serde_json::Value always serialises");
    let mut s = String::new();
    let _ = writeln!(s, "run: {}", dir.display());
    let _ = writeln!(s, "config:\n{}", pretty(&config));
    match run.read_summary()? {
        Some(summary) => {
            let _ = writeln!(s, "summary:\n{}", pretty(&summary));
        }
        None => {
            let _ = writeln!(s, "summary: none (the run was interrupted, failed, or is still running)");
        }
    }
    let ckpts = Checkpoint::list(dir)?;
    if ckpts.is_empty() {
        let _ = writeln!(s, "checkpoints: none");
    } else {
        let steps: Vec<String> = ckpts.iter().map(|(st, _)| st.to_string()).collect();
        let _ = writeln!(s, "checkpoints: steps {} (latest: {})", steps.join(", "), ckpts[ckpts.len() - 1].1.display());
    }
    let metrics = run.metrics_path();
    if metrics.exists() {
        let records = read_metrics(&metrics)?;
        let last = records.iter().filter_map(|r| r.get("step").and_then(Value::as_u64)).max();
        match last {
            Some(step) => {
                let _ = writeln!(s, "metrics: {} records in {METRICS_FILE}, up to step {step}", records.len());
            }
            None => {
                let _ = writeln!(s, "metrics: {} records in {METRICS_FILE}", records.len());
            }
        }
    } else {
        let _ = writeln!(s, "metrics: none");
    }
    Ok(s)
}

/// Redraw a run's plots from its `metrics.jsonl`. Returns the files written.
pub fn replot(dir: &Path) -> Result<Vec<PathBuf>> {
    let run = RunDir::open(dir)?;
    let records = read_metrics(&run.metrics_path())?;
    plot_metrics(dir, &records)
}
