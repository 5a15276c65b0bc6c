//! PNG line plots drawn with `plotters` (its `ab_glyph` text renderer, so no system
//! library is needed at build time).
//!
//! Text needs a font, which is taken from the system at run time: `$FIXPOINT_FONT` if
//! set, else DejaVu Sans (Debian's `fonts-dejavu-core`) or another sans-serif TTF found in
//! the usual font directories. Without one, plots are still drawn (axes and curves, no
//! text), with a one-line warning that says how to get labels. No font file ships with
//! the crate.

use crate::error::{Error, Result};
use crate::run::dir::{io_error, temp_path};
use crate::run::metrics::Record;
use crate::run::progress::format_number;
use plotters::prelude::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// One curve.
#[derive(Clone, Debug, Default)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// A line plot: title, axis names and curves. Non-finite points are skipped.
#[derive(Clone, Debug, Default)]
pub struct LinePlot {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// Draw the y axis on a log scale (used only when every y value is positive).
    pub log_y: bool,
    pub series: Vec<Series>,
}

/// Whether a plot got its text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drawn {
    WithLabels,
    /// No font was found: axes and curves only.
    WithoutLabels,
}

/// Plot size in pixels.
pub const SIZE: (u32, u32) = (900, 560);

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Font file names to prefer, best first.
const PREFERRED: [&str; 6] =
    ["DejaVuSans.ttf", "LiberationSans-Regular.ttf", "NotoSans-Regular.ttf", "FreeSans.ttf", "Arial.ttf", "arial.ttf"];

/// The directories searched for a font (besides `$FIXPOINT_FONT`).
pub fn font_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        ["/usr/share/fonts", "/usr/local/share/fonts", "/Library/Fonts", "/System/Library/Fonts"]
            .iter()
            .map(PathBuf::from)
            .collect();
    if let Some(home) = std::env::var_os("HOME") {
        let home = PathBuf::from(home);
        dirs.push(home.join(".local/share/fonts"));
        dirs.push(home.join(".fonts"));
        dirs.push(home.join("Library/Fonts"));
    }
    if let Some(win) = std::env::var_os("WINDIR") {
        dirs.push(PathBuf::from(win).join("Fonts"));
    }
    dirs
}

fn collect_fonts(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            if depth > 0 {
                collect_fonts(&p, depth - 1, out);
            }
        } else if p.extension().is_some_and(|e| e.eq_ignore_ascii_case("ttf") || e.eq_ignore_ascii_case("otf")) {
            out.push(p);
        }
    }
}

/// Candidate font files, best first: `$FIXPOINT_FONT`, then the preferred names, then
/// regular-looking sans fonts, then any TTF/OTF found.
pub fn font_candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os("FIXPOINT_FONT") {
        out.push(PathBuf::from(p));
    }
    let mut found = Vec::new();
    for d in font_dirs() {
        collect_fonts(&d, 4, &mut found);
    }
    let name = |p: &PathBuf| p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    for want in PREFERRED {
        out.extend(found.iter().filter(|p| name(p) == want).cloned());
    }
    let plain = |n: &str| {
        let l = n.to_ascii_lowercase();
        !["bold", "italic", "oblique", "mono", "serif", "condensed", "light"].iter().any(|w| l.contains(w))
    };
    out.extend(found.iter().filter(|p| name(p).to_ascii_lowercase().contains("sans") && plain(&name(p))).cloned());
    out.extend(found);
    out
}

static FONT: OnceLock<Option<PathBuf>> = OnceLock::new();
static WARNED: AtomicBool = AtomicBool::new(false);

/// Find and register a font for plot text (once per process). Returns its path, or
/// `None` (after printing a one-line warning, once) when there is none.
pub fn ensure_font() -> Option<&'static Path> {
    let font = FONT.get_or_init(|| {
        for p in font_candidates() {
            let Ok(bytes) = fs::read(&p) else { continue };
            // plotters keeps `&'static` font data; one font per process is leaked, on purpose.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return Some(p);
            }
        }
        None
    });
    if font.is_none() && !WARNED.swap(true, Ordering::SeqCst) {
        eprintln!(
            "warning: no TTF font found (set FIXPOINT_FONT=/path/to/font.ttf, or install one, e.g. \
             `apt-get install fonts-dejavu-core`); plots are drawn without text"
        );
    }
    font.as_deref()
}

/// Draw `plot` to the PNG `path` (written atomically), with text if a font is available.
pub fn lines(path: &Path, plot: &LinePlot) -> Result<Drawn> {
    let labels = ensure_font().is_some();
    draw_lines(path, plot, labels)?;
    Ok(if labels { Drawn::WithLabels } else { Drawn::WithoutLabels })
}

fn range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if !lo.is_finite() {
        return None;
    }
    Some(if hi > lo { (lo, hi) } else { (lo - 0.5 * lo.abs().max(1.0), hi + 0.5 * hi.abs().max(1.0)) })
}

/// Draw `plot` to the PNG `path`; `labels = false` draws no text at all (no font needed).
pub fn draw_lines(path: &Path, plot: &LinePlot, labels: bool) -> Result<()> {
    let finite = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite();
    let all = || plot.series.iter().flat_map(|s| s.points.iter().copied().filter(finite));
    let log_y = plot.log_y && all().all(|(_, y)| y > 0.0) && all().next().is_some();
    let (x0, x1) = range(all().map(|p| p.0)).unwrap_or((0.0, 1.0));
    let tmp = temp_path(path);
    let drawn = {
        let root = BitMapBackend::new(&tmp, SIZE).into_drawing_area();
        if log_y {
            let (y0, y1) = range(all().map(|p| p.1.ln())).unwrap_or((0.0, 1.0));
            let yr = (y0.exp() / 1.05)..(y1.exp() * 1.05);
            render(&root, plot, labels, x0..x1, yr.log_scale())
        } else {
            let (y0, y1) = range(all().map(|p| p.1)).unwrap_or((0.0, 1.0));
            let pad = 0.03 * (y1 - y0);
            render(&root, plot, labels, x0..x1, (y0 - pad)..(y1 + pad))
        }
    };
    let result = drawn.and_then(|()| fs::rename(&tmp, path).map_err(|e| e.to_string()));
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_error(path, "cannot draw the plot", e)
    })
}

fn render<Y>(
    root: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    plot: &LinePlot,
    labels: bool,
    xr: std::ops::Range<f64>,
    yr: Y,
) -> std::result::Result<(), String>
where
    Y: plotters::coord::ranged1d::AsRangedCoord<Value = f64>,
    Y::CoordDescType: plotters::coord::ranged1d::ValueFormatter<f64>,
{
    let s = |e: &dyn std::fmt::Display| e.to_string();
    let finite = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite();
    root.fill(&WHITE).map_err(|e| s(&e))?;
    let mut builder = ChartBuilder::on(root);
    builder.margin(16);
    if labels {
        builder.caption(&plot.title, ("sans-serif", 24)).x_label_area_size(48).y_label_area_size(80);
    }
    let mut chart = builder.build_cartesian_2d(xr, yr).map_err(|e| s(&e))?;
    if labels {
        let fmt = |v: &f64| format_number(*v);
        chart
            .configure_mesh()
            .x_desc(&plot.x_label)
            .y_desc(&plot.y_label)
            .x_label_formatter(&fmt)
            .y_label_formatter(&fmt)
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 17))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(|e| s(&e))?;
    } else {
        // No text at all: just a frame around the plotting area (inside the 16 px margin).
        let (w, h) = (SIZE.0 as i32, SIZE.1 as i32);
        root.draw(&Rectangle::new([(16, 16), (w - 17, h - 17)], BLACK.stroke_width(1))).map_err(|e| s(&e))?;
    }
    for (i, series) in plot.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<(f64, f64)> = series.points.iter().copied().filter(finite).collect();
        let drawn = chart.draw_series(LineSeries::new(pts, color.stroke_width(2))).map_err(|e| s(&e))?;
        if labels {
            drawn
                .label(&series.label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
    }
    if labels && plot.series.iter().any(|s| !s.label.is_empty()) {
        chart
            .configure_series_labels()
            .label_font(("sans-serif", 15))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| s(&e))?;
    }
    root.present().map_err(|e| s(&e))
}

/// One series per record kind (`train`, `eval`, ..) of the numeric field `key` against
/// `step`, in file order.
pub fn metric_series(records: &[Record], key: &str) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    for r in records {
        let (Some(step), Some(v)) = (r.get("step").and_then(Value::as_f64), r.get(key).and_then(Value::as_f64)) else {
            continue;
        };
        let kind = r.get("kind").and_then(Value::as_str).unwrap_or("train");
        let label = format!("{kind} {key}");
        match out.iter_mut().find(|s| s.label == label) {
            Some(s) => s.points.push((step, v)),
            None => out.push(Series { label, points: vec![(step, v)] }),
        }
    }
    out
}

/// The loss curve (every kind's `loss` against step) as a PNG; log scale when the loss
/// spans more than a factor of 20. Errors when no record has a loss.
pub fn loss_curve(records: &[Record], path: &Path) -> Result<Drawn> {
    let series = metric_series(records, "loss");
    let ys = || series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).filter(|y| y.is_finite());
    if ys().next().is_none() {
        return Err(Error::InvalidArgument { op: "loss_curve", message: "no record has a finite \"loss\"".into() });
    }
    let (lo, hi) = ys().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| (a.min(y), b.max(y)));
    let plot = LinePlot {
        title: "Loss".into(),
        x_label: "step".into(),
        y_label: "loss".into(),
        log_y: lo > 0.0 && hi / lo > 20.0,
        series,
    };
    lines(path, &plot)
}

/// A file-name-safe version of a metric name.
fn file_stem(key: &str) -> String {
    key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// Draw `loss.png` and one `<metric>.png` per other numeric field found in `records`
/// into `dir`. Returns the files written.
pub fn plot_metrics(dir: &Path, records: &[Record]) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let mut keys = BTreeSet::new();
    for r in records {
        for (k, v) in r {
            if v.is_number() && !["step", "time_s", "loss"].contains(&k.as_str()) {
                keys.insert(k.clone());
            }
        }
    }
    if metric_series(records, "loss").iter().any(|s| s.points.iter().any(|p| p.1.is_finite())) {
        let p = dir.join("loss.png");
        loss_curve(records, &p)?;
        written.push(p);
    }
    for k in keys {
        let plot = LinePlot {
            title: k.clone(),
            x_label: "step".into(),
            y_label: k.clone(),
            log_y: false,
            series: metric_series(records, &k),
        };
        let p = dir.join(format!("{}.png", file_stem(&k)));
        lines(&p, &plot)?;
        written.push(p);
    }
    Ok(written)
}
