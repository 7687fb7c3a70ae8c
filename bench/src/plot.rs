//! Plots of benchmark results as SVG (plotters' SVG backend with its
//! built-in text estimate: no system fonts or libraries needed).
//!
//! [`bars`] draws panels side by side, each a grouped bar chart: one group
//! per category (a workload, a region count), one bar per series (a
//! system), the value printed above each bar; the y axis is logarithmic
//! when the values span more than 20×.

use std::path::Path;

use plotters::prelude::*;

/// One panel: `series[i].1[j]` is the value of series `i` in category `j`.
pub struct Panel {
    pub title: String,
    pub y_label: String,
    pub categories: Vec<String>,
    pub series: Vec<(String, Vec<f64>)>,
}

const COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
];

fn short(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Writes `panels` side by side under `title` to `path` (SVG).
pub fn bars(path: &Path, title: &str, panels: &[Panel]) -> anyhow::Result<()> {
    side_by_side(path, title, 20, panels, draw_panel)
}

/// An SVG at `path`: `title` (in `title_size` points) over one 560-wide
/// area per panel, each drawn by `draw`.
fn side_by_side<'p, P, E: std::fmt::Display>(
    path: &'p Path,
    title: &str,
    title_size: u32,
    panels: &[P],
    draw: impl Fn(&P, &DrawingArea<SVGBackend<'p>, plotters::coord::Shift>) -> Result<(), E>,
) -> anyhow::Result<()> {
    let width = 560 * panels.len().max(1) as u32;
    let root = SVGBackend::new(path, (width, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let root = root
        .titled(title, ("sans-serif", title_size))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let areas = root.split_evenly((1, panels.len().max(1)));
    for (panel, area) in panels.iter().zip(areas.iter()) {
        draw(panel, area).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// Draws the bars of `$panel` on `$area` with y coordinates `$y`, bars
/// rising from `$floor`, value labels at `$label(v)`.
macro_rules! draw_bars {
    ($area:expr, $panel:expr, $y:expr, $floor:expr, $label:expr, $y_desc:expr) => {{
        let panel: &Panel = $panel;
        let n = panel.categories.len().max(1);
        let k = panel.series.len().max(1);
        let categories = panel.categories.clone();
        let mut chart = ChartBuilder::on($area)
            .caption(&panel.title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), $y)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n)
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 {
                    categories.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_desc($y_desc)
            .y_label_formatter(&|y| short(*y))
            .draw()?;
        let group = 0.8;
        let width = group / k as f64;
        for (s, (name, values)) in panel.series.iter().enumerate() {
            let color = COLORS[s % COLORS.len()];
            let x0 = |j: usize| j as f64 - group / 2.0 + s as f64 * width;
            chart
                .draw_series(values.iter().enumerate().map(|(j, v)| {
                    Rectangle::new(
                        [
                            (x0(j) + 0.01, $floor),
                            (x0(j) + width - 0.01, v.max($floor)),
                        ],
                        color.filled(),
                    )
                }))?
                .label(name.clone())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled())
                });
            chart.draw_series(values.iter().enumerate().map(|(j, v)| {
                Text::new(
                    short(*v),
                    (x0(j) + width / 2.0 - 0.1, $label(v.max($floor))),
                    ("sans-serif", 11),
                )
            }))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }};
}

/// One panel: a linear y axis, or a logarithmic one when the values span
/// more than 20× (one system far behind would flatten the others).
fn draw_panel<DB: DrawingBackend>(
    panel: &Panel,
    area: &DrawingArea<DB, plotters::coord::Shift>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let values = || {
        panel
            .series
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .filter(|v| v.is_finite() && *v > 0.0)
    };
    let max = values().fold(0.0f64, f64::max);
    let min = values().fold(f64::INFINITY, f64::min);
    if max > 0.0 && max / min > 20.0 {
        let (lo, hi) = (min / 2.0, max * 2.0);
        let desc = format!("{} (log scale)", panel.y_label);
        draw_bars!(
            area,
            panel,
            (lo..hi).log_scale(),
            lo,
            |v: f64| v * 1.08,
            &desc
        );
    } else {
        let y_max = if max > 0.0 { max * 1.2 } else { 1.0 };
        draw_bars!(
            area,
            panel,
            0f64..y_max,
            0.0,
            |v: f64| v + y_max * 0.02,
            &panel.y_label
        );
    }
    Ok(())
}

/// One panel of [`lines`]: `series[i].1[j]` is series `i`'s value at
/// `x[j]`.
pub struct LinePanel {
    pub title: String,
    pub y_label: String,
    pub x: Vec<f64>,
    pub series: Vec<(String, Vec<f64>)>,
}

/// Writes line charts side by side under `title` to `path` (SVG), x in
/// seconds.
pub fn lines(path: &Path, title: &str, panels: &[LinePanel]) -> anyhow::Result<()> {
    side_by_side(path, title, 18, panels, draw_lines)
}

fn draw_lines<DB: DrawingBackend>(
    panel: &LinePanel,
    area: &DrawingArea<DB, plotters::coord::Shift>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let x_max = panel.x.iter().copied().fold(1.0f64, f64::max);
    let y_max = panel
        .series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let y_max = if y_max > 0.0 { y_max * 1.1 } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc(&panel.y_label)
        .y_label_formatter(&|y| short(*y))
        .draw()?;
    for (s, (name, values)) in panel.series.iter().enumerate() {
        let color = COLORS[s % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                panel.x.iter().copied().zip(values.iter().copied()),
                color.stroke_width(2),
            ))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 12, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_an_svg() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.svg");
        bars(
            &path,
            "test",
            &[Panel {
                title: "throughput".into(),
                y_label: "ops/s".into(),
                categories: vec!["A".into(), "B".into()],
                series: vec![("x".into(), vec![1.0, 2.0]), ("y".into(), vec![3.0, 0.0])],
            }],
        )
        .unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("throughput"));
        // The category labels and the bars.
        assert!(svg.contains("\nA\n") && svg.contains("\nB\n"));
        assert!(svg.matches("<rect").count() >= 5);
        // Values 100× apart: a log scale.
        bars(
            &path,
            "test",
            &[Panel {
                title: "p99".into(),
                y_label: "ms".into(),
                categories: vec!["A".into(), "E".into()],
                series: vec![
                    ("x".into(), vec![10.0, 20.0]),
                    ("y".into(), vec![30.0, 2000.0]),
                ],
            }],
        )
        .unwrap();
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .contains("log scale"));
    }
}
