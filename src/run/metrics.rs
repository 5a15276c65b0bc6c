//! `metrics.jsonl`: one JSON object per line, appended and flushed as it is logged, so
//! that the file is complete up to the last finished line whenever the process stops.
//!
//! Every record has `kind` (`"train"` for a logged training step, `"eval"` for an
//! evaluation, or a command's own kind), `step` (optimiser steps done) and `time_s`
//! (wall-clock seconds since the run started, summed over resumed sessions), plus the
//! command's fields (`loss`, `lr`, `accuracy`, ...). Non-finite numbers are written as
//! `null` (JSON has no NaN).

use crate::error::{Error, Result};
use crate::run::dir::{io_error, write_atomic};
use serde_json::{Map, Value};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A metrics record: a JSON object.
pub type Record = Map<String, Value>;

/// Keys the writer sets itself; a field may not use them.
pub const RESERVED: [&str; 3] = ["kind", "step", "time_s"];

/// Appends records to `metrics.jsonl`.
#[derive(Debug)]
pub struct MetricsWriter {
    file: File,
    path: PathBuf,
    start: Instant,
    /// Seconds already spent in earlier sessions of a resumed run.
    time_offset: f64,
    records: u64,
}

impl MetricsWriter {
    /// Start a new, empty `path`.
    pub fn create(path: &Path) -> Result<MetricsWriter> {
        let file = File::create(path).map_err(|e| io_error(path, "cannot create", e))?;
        Ok(MetricsWriter { file, path: path.to_path_buf(), start: Instant::now(), time_offset: 0.0, records: 0 })
    }

    /// Continue `path` for a run resumed at `step`: records logged after that step (work
    /// that the checkpoint does not contain and that will be redone) are dropped, and
    /// `time_s` continues from the last kept record.
    pub fn resume(path: &Path, step: u64) -> Result<MetricsWriter> {
        let kept: Vec<Record> = match fs::metadata(path) {
            Ok(_) => read_metrics(path)?
                .into_iter()
                .filter(|r| r.get("step").and_then(Value::as_u64).is_some_and(|s| s <= step))
                .collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_error(path, "cannot read", e)),
        };
        let time_offset = kept.iter().filter_map(|r| r.get("time_s").and_then(Value::as_f64)).fold(0.0, f64::max);
        let mut text = String::new();
        for r in &kept {
            text.push_str(&serde_json::to_string(r).expect("a JSON map serialises"));
            text.push('\n');
        }
        write_atomic(path, text.as_bytes()).map_err(|e| io_error(path, "cannot rewrite", e))?;
        let file = OpenOptions::new().append(true).open(path).map_err(|e| io_error(path, "cannot open", e))?;
        Ok(MetricsWriter {
            file,
            path: path.to_path_buf(),
            start: Instant::now(),
            time_offset,
            records: kept.len() as u64,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Records in the file (including those kept from earlier sessions).
    pub fn records(&self) -> u64 {
        self.records
    }
    /// Wall-clock seconds of the run so far (what the next record's `time_s` would be).
    pub fn elapsed(&self) -> f64 {
        self.time_offset + self.start.elapsed().as_secs_f64()
    }

    /// Log numeric fields for `step` under `kind`. Returns the record written.
    pub fn log(&mut self, kind: &str, step: u64, fields: &[(&str, f64)]) -> Result<Record> {
        let map: Record = fields.iter().map(|(k, v)| (k.to_string(), number(*v))).collect();
        self.log_record(kind, step, map)
    }

    /// Log arbitrary JSON fields for `step` under `kind`.
    pub fn log_record(&mut self, kind: &str, step: u64, fields: Record) -> Result<Record> {
        if let Some(k) = fields.keys().find(|k| RESERVED.contains(&k.as_str())) {
            return Err(Error::InvalidArgument {
                op: "metrics",
                message: format!("field {k:?} is reserved (the writer sets kind, step and time_s)"),
            });
        }
        let mut rec = fields;
        rec.insert("kind".into(), Value::from(kind));
        rec.insert("step".into(), Value::from(step));
        rec.insert("time_s".into(), number((self.elapsed() * 1e3).round() / 1e3));
        let mut line = serde_json::to_string(&rec).expect("a JSON map serialises");
        line.push('\n');
        // One write call per line: a process killed between lines leaves whole lines.
        self.file.write_all(line.as_bytes()).map_err(|e| io_error(&self.path, "cannot append", e))?;
        self.file.flush().map_err(|e| io_error(&self.path, "cannot flush", e))?;
        self.records += 1;
        Ok(rec)
    }

    /// fsync the file (done before each checkpoint, so that metrics are durable up to it).
    pub fn sync(&self) -> Result<()> {
        self.file.sync_data().map_err(|e| io_error(&self.path, "cannot sync", e))
    }
}

/// A JSON number, or `null` for NaN and infinities.
pub fn number(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

/// Read every record of a metrics file. A malformed line is an error naming its line
/// number, except a last line without its newline (a write cut short by a hard kill),
/// which is skipped.
pub fn read_metrics(path: &Path) -> Result<Vec<Record>> {
    let text = fs::read_to_string(path).map_err(|e| io_error(path, "cannot read", e))?;
    let complete = text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(m)) => out.push(m),
            Ok(_) => return Err(io_error(path, &format!("line {}", i + 1), "not a JSON object")),
            Err(_) if i + 1 == lines.len() && !complete => break,
            Err(e) => return Err(io_error(path, &format!("line {}", i + 1), e)),
        }
    }
    Ok(out)
}
