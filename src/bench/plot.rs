//! PNG of the scan benchmark: time against T on log-log axes, one panel per channel
//! count (forward on top, backward below), one line per kernel and thread count, and
//! the triad as a grey reference. Text needs a TTF font from the system; without one
//! the chart is drawn without labels.

use super::scan::ShapeResult;
use crate::ops::scan::ScanKernel;
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const FONT_FAMILY: &str = "sans-serif";

/// Candidate fonts, best first, then any `.ttf` under the usual font directories.
fn find_font() -> Option<PathBuf> {
    let known = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        "/usr/share/fonts/liberation/LiberationSans-Regular.ttf",
        "/System/Library/Fonts/Supplemental/Arial.ttf",
        "/Library/Fonts/Arial.ttf",
        "C:\\Windows\\Fonts\\arial.ttf",
    ];
    if let Some(p) = known.iter().map(PathBuf::from).find(|p| p.is_file()) {
        return Some(p);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let mut dirs: Vec<PathBuf> = vec!["/usr/share/fonts".into(), "/usr/local/share/fonts".into()];
    if let Some(h) = home {
        dirs.push(h.join(".fonts"));
        dirs.push(h.join(".local/share/fonts"));
    }
    let mut found = Vec::new();
    let mut stack = dirs;
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x.eq_ignore_ascii_case("ttf")) {
                found.push(p);
            }
        }
    }
    // Prefer a plain sans-serif face.
    found.sort_by_key(|p| {
        let name = p.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
        (!name.contains("sans"), name.contains("bold") || name.contains("italic") || name.contains("oblique"), name)
    });
    found.into_iter().next()
}

/// Register a system font once; `false` when none could be loaded.
fn ensure_font() -> bool {
    static LOADED: OnceLock<bool> = OnceLock::new();
    *LOADED.get_or_init(|| {
        let Some(path) = find_font() else { return false };
        let Ok(bytes) = std::fs::read(&path) else { return false };
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, bytes).is_ok()
    })
}

/// Draw the chart; returns a warning when it had to be drawn without labels.
pub fn plot_scan(path: &Path, results: &[ShapeResult]) -> Result<Option<String>, String> {
    let labels = ensure_font();
    draw(path, results, labels).map_err(|e| e.to_string())?;
    let warning = "no TTF font found (looked for DejaVuSans.ttf and under /usr/share/fonts): plot drawn without labels";
    if !labels {
        eprintln!("warning: {warning}");
    }
    Ok((!labels).then(|| warning.to_string()))
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn draw(path: &Path, results: &[ShapeResult], labels: bool) -> DrawResult {
    // Panels: every channel count measured with the sweep's batch size.
    let b = results.iter().map(|r| r.shape[0]).min().unwrap_or(8);
    let sweep: Vec<&ShapeResult> = results.iter().filter(|r| r.shape[0] == b).collect();
    let mut ds: Vec<usize> = sweep.iter().map(|r| r.shape[2]).collect();
    ds.sort_unstable();
    ds.dedup();
    let mut lines: Vec<(ScanKernel, usize)> =
        sweep.iter().flat_map(|r| r.kernels.iter().map(move |k| (k.kernel, r.threads))).collect();
    lines.sort_by_key(|&(k, t)| (k.name(), t));
    lines.dedup();
    let mut threads: Vec<usize> = sweep.iter().map(|r| r.threads).collect();
    threads.sort_unstable();
    threads.dedup();

    let cols = ds.len().max(1);
    let root = BitMapBackend::new(path, (520 * cols as u32, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = if labels {
        root.titled(&format!("diagonal scan, B = {b}: time per call against T"), (FONT_FAMILY, 22))?
    } else {
        root
    };
    let panels = root.split_evenly((2, cols));
    for (row, backward) in [false, true].into_iter().enumerate() {
        for (col, &d) in ds.iter().enumerate() {
            let area = &panels[row * cols + col];
            let pts: Vec<&&ShapeResult> = sweep.iter().filter(|r| r.shape[2] == d).collect();
            let (t_min, t_max) =
                pts.iter().fold((f64::MAX, 0f64), |(lo, hi), r| (lo.min(r.shape[1] as f64), hi.max(r.shape[1] as f64)));
            let times: Vec<f64> = pts
                .iter()
                .flat_map(|r| {
                    let ks = r.kernels.iter().map(move |k| if backward { k.bwd_s } else { k.fwd_s });
                    ks.chain(std::iter::once(r.triad_s))
                })
                .filter(|t| t.is_finite() && *t > 0.0)
                .collect();
            let y_min = times.iter().copied().fold(f64::MAX, f64::min);
            let y_max = times.iter().copied().fold(0f64, f64::max);
            if times.is_empty() || t_max <= 0.0 {
                continue;
            }
            let mut builder = ChartBuilder::on(area);
            builder.margin(12);
            if labels {
                let what = if backward { "backward" } else { "forward" };
                builder
                    .caption(format!("{what}, D = {d}"), (FONT_FAMILY, 18))
                    .x_label_area_size(40)
                    .y_label_area_size(70);
            }
            let mut chart = builder.build_cartesian_2d(
                (t_min / 1.3..t_max * 1.3).log_scale(),
                (y_min / 1.5 * 1e3..y_max * 1.5 * 1e3).log_scale(),
            )?;
            if labels {
                chart
                    .configure_mesh()
                    .x_desc("T (time steps)")
                    .y_desc("ms per call")
                    .label_style((FONT_FAMILY, 13))
                    .x_label_formatter(&|x| format!("{x:.0}"))
                    .y_label_formatter(&|y| {
                        if *y >= 10.0 {
                            format!("{y:.0}")
                        } else if *y >= 1.0 {
                            format!("{y:.1}")
                        } else {
                            format!("{y:.2}")
                        }
                    })
                    .draw()?;
            } else {
                chart.configure_mesh().x_labels(0).y_labels(0).draw()?;
            }
            let series = |k: Option<ScanKernel>, threads: usize| -> Vec<(f64, f64)> {
                let mut v: Vec<(f64, f64)> = pts
                    .iter()
                    .filter(|r| r.threads == threads)
                    .filter_map(|r| {
                        let s = match k {
                            None => Some(r.triad_s),
                            Some(k) => r.time(k).map(|t| if backward { t.bwd_s } else { t.fwd_s }),
                        };
                        s.map(|s| (r.shape[1] as f64, s * 1e3))
                    })
                    .collect();
                v.sort_by(|a, b| a.0.total_cmp(&b.0));
                v
            };
            for (i, &(k, t)) in lines.iter().enumerate() {
                let color = Palette99::pick(i).to_rgba();
                let style = ShapeStyle { color, filled: true, stroke_width: if t == 1 { 2 } else { 3 } };
                let s = chart.draw_series(LineSeries::new(series(Some(k), t), style))?;
                if labels {
                    s.label(format!("{} {t}t", k.name()))
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
                }
            }
            for (i, &t) in threads.iter().enumerate() {
                let grey = if i == 0 { RGBColor(150, 150, 150) } else { RGBColor(90, 90, 90) };
                let style = ShapeStyle { color: grey.to_rgba(), filled: true, stroke_width: 1 };
                let s = chart.draw_series(LineSeries::new(series(None, t), style))?;
                if labels {
                    s.label(format!("triad {t}t"))
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
                }
            }
            if labels {
                chart
                    .configure_series_labels()
                    .position(SeriesLabelPosition::UpperLeft)
                    .label_font((FONT_FAMILY, 12))
                    .background_style(WHITE.mix(0.8))
                    .border_style(BLACK)
                    .draw()?;
            }
        }
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::scan::KernelTime;

    fn fake() -> Vec<ShapeResult> {
        let mut v = Vec::new();
        for threads in [1, 2] {
            for d in [64, 256] {
                for t in [256, 1024, 4096] {
                    let s = (t * d) as f64 * 1e-9 / threads as f64;
                    v.push(ShapeResult {
                        shape: [8, t, d],
                        threads,
                        triad_s: s,
                        auto: ScanKernel::Simd,
                        kernels: vec![
                            KernelTime {
                                kernel: ScanKernel::Simd,
                                fwd_s: s * 1.1,
                                bwd_s: s * 1.8,
                                fwd_over_triad: 1.1,
                                bwd_over_triad: 1.8,
                            },
                            KernelTime {
                                kernel: ScanKernel::Chunked,
                                fwd_s: s * 1.7,
                                bwd_s: s * 2.5,
                                fwd_over_triad: 1.7,
                                bwd_over_triad: 2.5,
                            },
                        ],
                    });
                }
            }
        }
        v
    }

    #[test]
    fn draws_with_and_without_labels() {
        let dir = std::env::temp_dir();
        for labels in [false, true] {
            if labels && !ensure_font() {
                continue;
            }
            let path = dir.join(format!("fixpoint-scan-plot-test-{}-{labels}.png", std::process::id()));
            draw(&path, &fake(), labels).unwrap();
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(&bytes[1..4], b"PNG");
            std::fs::remove_file(&path).ok();
        }
    }
}
