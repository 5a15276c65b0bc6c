//! The run directory: where it is, what may already be in it, and crash-safe writes of
//! whole files into it.

use crate::error::{Error, Result};
use serde_json::Value;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The run's configuration, as written at the start.
pub const CONFIG_FILE: &str = "config.json";
/// One JSON object per logged step or evaluation.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// The final results: the same text as the last line that `--json` prints.
pub const SUMMARY_FILE: &str = "summary.json";

/// Error for a file or directory that could not be used, on one line: `PATH: what: why`.
pub(crate) fn io_error(path: &Path, what: &str, err: impl std::fmt::Display) -> Error {
    Error::Io { path: path.display().to_string(), message: format!("{what}: {err}") }
}

/// True for the files this harness writes into a run directory (what `--force` removes).
fn is_harness_file(name: &str) -> bool {
    matches!(name, CONFIG_FILE | METRICS_FILE | SUMMARY_FILE)
        || crate::run::checkpoint::step_of_file_name(name).is_some()
        || name.ends_with(".png")
        || (name.starts_with('.') && name.ends_with(".tmp"))
        || (name.starts_with('.') && name.contains(".tmp."))
}

/// A run directory that exists, is writable, and is either fresh or holds a run to resume.
#[derive(Clone, Debug)]
pub struct RunDir {
    path: PathBuf,
    resume: bool,
}

impl RunDir {
    /// Open the directory for a run of `command`.
    ///
    /// * `out = None`: a new directory `runs/<command>-<YYYYMMDD-HHMMSS>` (UTC; `-2`, `-3`, ..
    ///   appended if that name is taken), relative to the working directory.
    /// * `out` missing or empty: created and used.
    /// * `out` not empty: an error unless `force` (the files this harness writes there are
    ///   removed first; other files are left alone) or `resume` (the run continues from its
    ///   latest checkpoint; without one that is an error). `--resume` on a missing or empty
    ///   directory starts a fresh run, so that a job can always be launched with `--resume`.
    ///
    /// Every error is one line that names the directory and says what to do.
    pub fn create(out: Option<PathBuf>, command: &str, force: bool, resume: bool) -> Result<RunDir> {
        if force && resume {
            return Err(Error::InvalidArgument {
                op: "--out",
                message: "--force (start over) and --resume (continue) exclude each other".into(),
            });
        }
        let path = match out {
            Some(p) => p,
            None if resume => {
                return Err(Error::InvalidArgument {
                    op: "--resume",
                    message: "needs --out DIR, the run directory to continue".into(),
                });
            }
            None => return Self::create_default(Path::new("runs"), command),
        };
        let mut resuming = false;
        match fs::metadata(&path) {
            Ok(meta) if !meta.is_dir() => return Err(io_error(&path, "--out", "exists and is not a directory")),
            Ok(_) => {
                let names = list_names(&path)?;
                if !names.is_empty() {
                    if resume {
                        if crate::run::checkpoint::Checkpoint::latest(&path)?.is_none() {
                            return Err(io_error(
                                &path,
                                "--resume",
                                "no checkpoint (ckpt-<step>.safetensors) to resume from; pass --force to start over",
                            ));
                        }
                        resuming = true;
                    } else if force {
                        for name in names.iter().filter(|n| is_harness_file(n)) {
                            let p = path.join(name);
                            fs::remove_file(&p).map_err(|e| io_error(&p, "--force: cannot remove", e))?;
                        }
                    } else {
                        return Err(io_error(
                            &path,
                            "--out",
                            "exists and is not empty; pass --force to overwrite it or --resume to continue its run",
                        ));
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(&path).map_err(|e| io_error(&path, "cannot create the run directory", e))?;
            }
            Err(e) => return Err(io_error(&path, "cannot create the run directory", e)),
        }
        check_writable(&path)?;
        Ok(RunDir { path, resume: resuming })
    }

    /// A fresh, uniquely named directory under `root` (normally `runs/`).
    pub fn create_default(root: &Path, command: &str) -> Result<RunDir> {
        fs::create_dir_all(root).map_err(|e| io_error(root, "cannot create the runs directory", e))?;
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let base = format!("{command}-{}", utc_stamp(secs));
        for i in 1.. {
            let name = if i == 1 { base.clone() } else { format!("{base}-{i}") };
            let path = root.join(name);
            match fs::create_dir(&path) {
                Ok(()) => {
                    check_writable(&path)?;
                    return Ok(RunDir { path, resume: false });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_error(&path, "cannot create the run directory", e)),
            }
        }
        unreachable!()
    }

    /// Open an existing run directory for reading (`runs show`, `runs plot`).
    pub fn open(path: &Path) -> Result<RunDir> {
        match fs::metadata(path) {
            Ok(m) if m.is_dir() => Ok(RunDir { path: path.to_path_buf(), resume: false }),
            Ok(_) => Err(io_error(path, "not a run directory", "it is a file")),
            Err(e) => Err(io_error(path, "cannot open the run directory", e)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    /// True when the directory holds a checkpoint to continue from (`--resume`).
    pub fn is_resume(&self) -> bool {
        self.resume
    }
    pub fn config_path(&self) -> PathBuf {
        self.path.join(CONFIG_FILE)
    }
    pub fn metrics_path(&self) -> PathBuf {
        self.path.join(METRICS_FILE)
    }
    pub fn summary_path(&self) -> PathBuf {
        self.path.join(SUMMARY_FILE)
    }

    /// Write `config.json` (pretty-printed, atomically).
    pub fn write_config(&self, config: &Value) -> Result<()> {
        let mut text = serde_json::to_string_pretty(config).expect("a serde_json::Value always serialises");
        text.push('\n');
        let p = self.config_path();
        write_atomic(&p, text.as_bytes()).map_err(|e| io_error(&p, "cannot write", e))
    }
    pub fn read_config(&self) -> Result<Option<Value>> {
        read_json(&self.config_path())
    }

    /// Write `summary.json` atomically and return its single line (without the newline),
    /// which is exactly what a command prints as the last line of `--json`.
    pub fn write_summary(&self, summary: &Value) -> Result<String> {
        let line = serde_json::to_string(summary).expect("a serde_json::Value always serialises");
        let p = self.summary_path();
        write_atomic(&p, format!("{line}\n").as_bytes()).map_err(|e| io_error(&p, "cannot write", e))?;
        Ok(line)
    }
    pub fn read_summary(&self) -> Result<Option<Value>> {
        read_json(&self.summary_path())
    }
}

/// Parse a JSON file; `None` when it does not exist.
pub(crate) fn read_json(path: &Path) -> Result<Option<Value>> {
    match fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| io_error(path, "invalid JSON", e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(path, "cannot read", e)),
    }
}

fn list_names(dir: &Path) -> Result<Vec<String>> {
    let rd = fs::read_dir(dir).map_err(|e| io_error(dir, "cannot read the directory", e))?;
    let mut names = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| io_error(dir, "cannot read the directory", e))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// Fail early, with one line, when nothing can be written into `dir`.
fn check_writable(dir: &Path) -> Result<()> {
    let probe = dir.join(format!(".write-test-{}.tmp", std::process::id()));
    match File::create(&probe) {
        Ok(_) => {
            let _ = fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(io_error(dir, "the run directory is not writable", e)),
    }
}

/// `YYYYMMDD-HHMMSS` in UTC for seconds since the Unix epoch (civil-from-days, no time zone).
pub fn utc_stamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}-{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The temporary name beside `path` under which [`write_atomic`] writes: a hidden file
/// that keeps the extension (so that, e.g., an image encoder still sees `.png`).
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let (stem, ext) = match name.rsplit_once('.') {
        Some((s, e)) if !s.is_empty() => (s.to_string(), format!(".{e}")),
        _ => (name.clone(), String::new()),
    };
    path.with_file_name(format!(".{stem}.tmp{ext}"))
}

/// Replace `path` with `bytes` so that a crash or a failed write at any point leaves
/// either the old file or the new one, never a mix: write a temporary file beside it,
/// fsync it, rename it over `path`, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(path, bytes, |f, b| f.write_all(b))
}

/// [`write_atomic`] with the writing step supplied by the caller (tests inject failures
/// here). On any error the temporary file is removed and `path` is untouched.
pub fn write_atomic_with(
    path: &Path,
    bytes: &[u8],
    write: impl FnOnce(&mut File, &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = File::create(&tmp)?;
        write(&mut f, bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        sync_dir(path.parent().unwrap_or(Path::new(".")))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// fsync a directory so that a rename inside it survives a power loss.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamp_matches_known_dates() {
        assert_eq!(utc_stamp(0), "19700101-000000");
        // 2000-02-29 12:34:56 UTC (a leap day), computed by hand: 11016 days after the epoch.
        assert_eq!(utc_stamp(11_016 * 86_400 + 12 * 3600 + 34 * 60 + 56), "20000229-123456");
        // 2024-12-31 23:59:59 UTC = 20088 days + 86399 s.
        assert_eq!(utc_stamp(20_088 * 86_400 + 86_399), "20241231-235959");
    }

    #[test]
    fn temp_path_keeps_the_extension_and_hides_the_file() {
        assert_eq!(temp_path(Path::new("a/loss.png")), Path::new("a/.loss.tmp.png"));
        assert_eq!(temp_path(Path::new("a/ckpt-3.safetensors")), Path::new("a/.ckpt-3.tmp.safetensors"));
        assert_eq!(temp_path(Path::new("noext")), Path::new(".noext.tmp"));
        assert!(is_harness_file(".loss.tmp.png") && is_harness_file(".ckpt-3.tmp.safetensors"));
        assert!(!is_harness_file("notes.txt"));
    }
}
