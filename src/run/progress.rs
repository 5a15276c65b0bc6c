//! Progress on standard error: an `indicatif` bar with rate and ETA when standard error
//! is a terminal, plain periodic lines otherwise (CI logs stay readable), nothing with
//! `--quiet`.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use std::io::IsTerminal;
use std::time::Instant;

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// A bar when standard error is a terminal, plain lines otherwise.
    #[default]
    Auto,
    Bar,
    Plain,
    /// No progress output (warnings and the interruption message still print).
    Quiet,
}

/// Progress of a run of `total` steps.
#[derive(Debug)]
pub struct Progress {
    mode: ProgressMode,
    bar: Option<ProgressBar>,
    total: u64,
    every: u64,
    start: Instant,
    start_step: u64,
    last_line: Option<u64>,
}

impl Progress {
    /// `start_step` is where a resumed run continues from (0 for a fresh run); `every` is
    /// the interval of plain lines in steps (0 picks about 20 lines per run).
    pub fn new(total: u64, start_step: u64, mode: ProgressMode, every: u64) -> Progress {
        let mode = match mode {
            ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Bar,
            ProgressMode::Auto => ProgressMode::Plain,
            m => m,
        };
        let bar = (mode == ProgressMode::Bar).then(|| {
            let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style =
                ProgressStyle::with_template("{elapsed_precise} [{wide_bar}] {pos}/{len} {rate} ETA {eta} {msg}")
                    .expect("the template is valid")
                    .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{} steps/s", format_number(s.per_sec()));
                    })
                    .progress_chars("=> ");
            pb.set_style(style);
            pb.set_position(start_step);
            pb.reset_eta();
            pb
        });
        let every = if every == 0 { (total / 20).max(1) } else { every };
        Progress { mode, bar, total, every, start: Instant::now(), start_step, last_line: None }
    }

    /// The mode in effect (`Auto` resolved to `Bar` or `Plain`).
    pub fn mode(&self) -> ProgressMode {
        self.mode
    }

    /// `step` steps are done; `fields` are shown beside the bar or in the line.
    pub fn update(&mut self, step: u64, fields: &[(&str, f64)]) {
        match self.mode {
            ProgressMode::Bar => {
                if let Some(pb) = &self.bar {
                    pb.set_position(step);
                    pb.set_message(format_fields(fields));
                }
            }
            ProgressMode::Plain => {
                if (step.is_multiple_of(self.every) || step == self.total) && self.last_line != Some(step) {
                    self.last_line = Some(step);
                    let secs = self.start.elapsed().as_secs_f64();
                    eprintln!("{}", plain_line(step, self.total, fields, step - self.start_step.min(step), secs));
                }
            }
            ProgressMode::Quiet | ProgressMode::Auto => {}
        }
    }

    /// A message above the bar (or a line of its own); nothing when quiet.
    pub fn println(&self, msg: &str) {
        match (&self.bar, self.mode) {
            (_, ProgressMode::Quiet) => {}
            (Some(pb), _) => pb.println(msg),
            (None, _) => eprintln!("{msg}"),
        }
    }

    /// A message printed even when quiet (warnings, where an interrupted run's files are).
    pub fn warn(&self, msg: &str) {
        match &self.bar {
            Some(pb) => pb.println(msg),
            None => eprintln!("{msg}"),
        }
    }

    /// Remove the bar (the terminal keeps whatever was printed above it).
    pub fn finish(&mut self) {
        if let Some(pb) = self.bar.take() {
            pb.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// `loss=0.1234 lr=0.001`
pub fn format_fields(fields: &[(&str, f64)]) -> String {
    fields.iter().map(|(k, v)| format!("{k}={}", format_number(*v))).collect::<Vec<_>>().join(" ")
}

/// Four significant digits without trailing zeros; scientific notation for very small or
/// large magnitudes.
pub fn format_number(v: f64) -> String {
    fn trim(s: &str) -> &str {
        if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.') } else { s }
    }
    if !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e5).contains(&a) {
        let s = format!("{v:.3e}");
        let (mantissa, exp) = s.split_once('e').expect("LowerExp has an exponent");
        format!("{}e{exp}", trim(mantissa))
    } else if a == 0.0 {
        "0".into()
    } else {
        let digits = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
        trim(&format!("{v:.digits$}")).to_string()
    }
}

/// `2h03m`, `4m05s`, `12s`
pub fn format_duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// The plain progress line: `step 40/100 (40%) loss=0.5 | 12.5 steps/s, elapsed 3s, ETA 5s`.
/// `done` steps were taken in `secs` seconds in this session.
pub fn plain_line(step: u64, total: u64, fields: &[(&str, f64)], done: u64, secs: f64) -> String {
    let pct = if total > 0 { 100.0 * step as f64 / total as f64 } else { 100.0 };
    let mut line = format!("step {step}/{total} ({pct:.0}%)");
    let f = format_fields(fields);
    if !f.is_empty() {
        line.push(' ');
        line.push_str(&f);
    }
    if done > 0 && secs > 0.0 {
        let rate = done as f64 / secs;
        let eta = total.saturating_sub(step) as f64 / rate;
        line.push_str(&format!(
            " | {} steps/s, elapsed {}, ETA {}",
            format_number(rate),
            format_duration(secs),
            format_duration(eta)
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_durations_format_compactly() {
        assert_eq!(format_number(0.123456), "0.1235");
        assert_eq!(format_number(12.34567), "12.35");
        assert_eq!(format_number(3.0), "3");
        assert_eq!(format_number(0.0), "0");
        assert_eq!(format_number(1.5e-5), "1.5e-5");
        assert_eq!(format_number(-123456.0), "-1.235e5");
        assert_eq!(format_number(0.02), "0.02");
        assert_eq!(format_number(0.674), "0.674");
        assert_eq!(format_number(f64::NAN), "NaN");
        assert_eq!(format_duration(5.4), "5s");
        assert_eq!(format_duration(125.0), "2m05s");
        assert_eq!(format_duration(7380.0), "2h03m");
    }

    #[test]
    fn plain_line_has_step_fields_rate_and_eta() {
        let l = plain_line(40, 100, &[("loss", 0.5)], 40, 4.0);
        assert_eq!(l, "step 40/100 (40%) loss=0.5 | 10 steps/s, elapsed 4s, ETA 6s");
        assert_eq!(plain_line(0, 10, &[], 0, 0.0), "step 0/10 (0%)");
    }

    #[test]
    fn every_mode_updates_without_failing() {
        // Under `cargo test` stderr is usually not a terminal: the bar is then hidden by
        // indicatif, but the calls must still work.
        for mode in [ProgressMode::Auto, ProgressMode::Bar, ProgressMode::Plain, ProgressMode::Quiet] {
            let mut p = Progress::new(10, 2, mode, 4);
            assert_ne!(p.mode(), ProgressMode::Auto);
            for step in 3..=10 {
                p.update(step, &[("loss", 1.0 / step as f64)]);
            }
            p.println("message");
            p.finish();
        }
    }
}
