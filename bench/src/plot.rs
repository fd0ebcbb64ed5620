//! PNG plots of a run: latency CDF (router vs baseline) and throughput vs offered rate.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::stats::RunStats;

/// Where Debian's `fonts-dejavu-core` puts the sans-serif font the plots use.
const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// The family name the plots ask for.
const FONT: &str = "sans-serif";

/// Plot size in pixels.
const SIZE: (u32, u32) = (900, 560);

/// One offered rate of a sweep: what each system carried and its p99 there.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SweepPoint {
    /// Envelopes per second offered to both systems.
    pub offered_per_s: f64,
    /// The router's received per second.
    pub router_per_s: f64,
    /// The baseline's received per second.
    pub baseline_per_s: f64,
    /// The router's p99, ms.
    pub router_p99_ms: f64,
    /// The baseline's p99, ms.
    pub baseline_p99_ms: f64,
}

/// Reads what one system carried at a sweep point.
type Carried = fn(&SweepPoint) -> f64;

/// Registers the font once (the text renderer reads it from memory for the process's life).
fn font_ready() -> Result<()> {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    READY
        .get_or_init(|| {
            let bytes = FONT_PATHS
                .iter()
                .find_map(|path| std::fs::read(path).ok())
                .ok_or_else(|| {
                    format!(
                        "no font for the plots: install Debian's fonts-dejavu-core ({})",
                        FONT_PATHS[0]
                    )
                })?;
            plotters::style::register_font(FONT, FontStyle::Normal, Box::leak(bytes.into()))
                .map_err(|_| "the DejaVu font file is not a valid font".to_owned())
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

fn drawing_error<E: std::fmt::Debug>(err: E) -> anyhow::Error {
    anyhow!("drawing the plot: {err:?}")
}

/// A chart on `root` with `title` and room for axis labels (`y_labels` pixels left).
fn framed<'a, 'b>(
    root: &'a DrawingArea<BitMapBackend<'b>, Shift>,
    title: &str,
    y_labels: u32,
) -> ChartBuilder<'a, 'b, BitMapBackend<'b>> {
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(title, (FONT, 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(y_labels);
    builder
}

/// Draws the series labels of `chart` in a framed box at `position`.
fn legend<'a, X, Y>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, Cartesian2d<X, Y>>,
    position: SeriesLabelPosition,
) -> Result<()>
where
    X: Ranged,
    Y: Ranged,
{
    chart
        .configure_series_labels()
        .position(position)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(drawing_error)
}

/// Draws the latency CDF of `router` and `baseline` (log-scaled milliseconds) to `path`.
pub fn latency_cdf(path: &Path, title: &str, router: &RunStats, baseline: &RunStats) -> Result<()> {
    font_ready()?;
    let runs = [(router, RED), (baseline, BLUE)];
    let lowest = runs
        .iter()
        .flat_map(|(run, _)| run.latency_cdf.first().map(|p| p.0))
        .fold(f64::INFINITY, f64::min)
        .max(0.001);
    let highest = runs
        .iter()
        .flat_map(|(run, _)| run.latency_cdf.last().map(|p| p.0))
        .fold(0.0, f64::max)
        .max(lowest * 10.0);
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(drawing_error)?;
    let mut chart = framed(&root, title, 56)
        .build_cartesian_2d((lowest * 0.8..highest * 1.25).log_scale(), 0.0..1.0)
        .map_err(drawing_error)?;
    chart
        .configure_mesh()
        .x_desc("end-to-end latency, ms (log scale)")
        .y_desc("fraction of envelopes")
        .label_style((FONT, 14))
        .draw()
        .map_err(drawing_error)?;
    for (run, color) in runs {
        chart
            .draw_series(LineSeries::new(
                run.latency_cdf.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(drawing_error)?
            .label(format!("{} (p99 {:.2} ms)", run.system, run.p99_ms))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))
}

/// Draws carried vs offered throughput of both systems in a sweep to `path`.
pub fn throughput(path: &Path, title: &str, points: &[SweepPoint]) -> Result<()> {
    font_ready()?;
    let top = points
        .iter()
        .map(|p| p.offered_per_s.max(p.router_per_s).max(p.baseline_per_s))
        .fold(1.0, f64::max)
        * 1.1;
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(drawing_error)?;
    let mut chart = framed(&root, title, 64)
        .build_cartesian_2d(0.0..top, 0.0..top)
        .map_err(drawing_error)?;
    chart
        .configure_mesh()
        .x_desc("offered, envelopes/s")
        .y_desc("received, envelopes/s")
        .label_style((FONT, 14))
        .draw()
        .map_err(drawing_error)?;
    let ideal = [(0.0, 0.0), (top, top)];
    chart
        .draw_series(LineSeries::new(ideal, BLACK.mix(0.3)))
        .map_err(drawing_error)?
        .label("offered = received")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.mix(0.3)));
    let series: [(&str, RGBColor, Carried); 2] = [
        ("envelope-router", RED, |p| p.router_per_s),
        ("mosquitto", BLUE, |p| p.baseline_per_s),
    ];
    for (name, color, carried) in series {
        let line: Vec<(f64, f64)> = points
            .iter()
            .map(|p| (p.offered_per_s, carried(p)))
            .collect();
        chart
            .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))
            .map_err(drawing_error)?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart
            .draw_series(line.into_iter().map(|p| Circle::new(p, 4, color.filled())))
            .map_err(drawing_error)?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))
}
