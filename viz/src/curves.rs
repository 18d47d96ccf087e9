//! Line charts: per-layer LAT accuracy, and the sweep curves (correction magnitude, copy rate,
//! exact-correction rate against alpha).

use crate::draw_on_backend;
use crate::font::{ensure_registered, FAMILY};
use crate::heatmap::err;
use anyhow::{bail, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// One named curve, `ys` aligned with the chart's `xs`; dashed curves draw as points only.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub ys: Vec<f64>,
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(178, 24, 43),
    RGBColor(33, 102, 172),
    RGBColor(27, 120, 55),
    RGBColor(230, 97, 1),
    RGBColor(118, 42, 131),
    RGBColor(90, 90, 90),
    // Pale versions of the first two, for controls drawn beside them.
    RGBColor(244, 165, 130),
    RGBColor(146, 197, 222),
];

/// Draws `series` against `xs`, y from `y_range`, with a legend.
pub fn line_chart(
    out: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    xs: &[f64],
    series: &[Series],
    y_range: (f64, f64),
) -> Result<PathBuf> {
    if xs.is_empty() || series.is_empty() {
        bail!("chart {title:?} has nothing to draw");
    }
    if let Some(s) = series.iter().find(|s| s.ys.len() != xs.len()) {
        bail!(
            "series {:?} has {} points for {} x values",
            s.name,
            s.ys.len(),
            xs.len()
        );
    }
    ensure_registered();
    draw_on_backend!(out, (760, 460), |root| draw(
        root, title, x_label, y_label, xs, series, y_range
    )?);
    Ok(out.to_path_buf())
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    x_label: &str,
    y_label: &str,
    xs: &[f64],
    series: &[Series],
    (y_lo, y_hi): (f64, f64),
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(err)?;
    let (x_lo, x_hi) = xs
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    let pad = ((x_hi - x_lo) * 0.03).max(0.5);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FAMILY, 18))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d((x_lo - pad)..(x_hi + pad), y_lo..y_hi)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .label_style((FAMILY, 12))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(err)?;
    for (i, s) in series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let points: Vec<(f64, f64)> = xs
            .iter()
            .copied()
            .zip(s.ys.iter().copied())
            .filter(|(_, y)| y.is_finite())
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
            .map_err(err)?
            .label(&s.name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2)));
        chart
            .draw_series(points.into_iter().map(|p| Circle::new(p, 3, colour.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font((FAMILY, 12))
        .position(emptiest_corner(xs, series, (x_lo - pad, x_hi + pad), (y_lo, y_hi)))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// The plot corner with the fewest data points under where the legend would sit, so the
/// legend hides no point (it covers about a third of the width and a fifth of the height).
fn emptiest_corner(
    xs: &[f64],
    series: &[Series],
    (x_lo, x_hi): (f64, f64),
    (y_lo, y_hi): (f64, f64),
) -> SeriesLabelPosition {
    let points: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| {
            xs.iter()
                .zip(&s.ys)
                .map(|(&x, &y)| ((x - x_lo) / (x_hi - x_lo), (y - y_lo) / (y_hi - y_lo)))
        })
        .collect();
    let covered = |left: bool, top: bool| {
        points
            .iter()
            .filter(|&&(x, y)| (if left { x < 0.4 } else { x > 0.6 }) && (if top { y > 0.75 } else { y < 0.25 }))
            .count()
    };
    [
        (SeriesLabelPosition::UpperLeft, covered(true, true)),
        (SeriesLabelPosition::UpperRight, covered(false, true)),
        (SeriesLabelPosition::LowerRight, covered(false, false)),
        (SeriesLabelPosition::LowerLeft, covered(true, false)),
    ]
    .into_iter()
    .min_by_key(|(_, n)| *n)
    .map(|(corner, _)| corner)
    .expect("four corners")
}

/// One curve of a [`CurvePanel`]: `ys` aligned with the figure's `xs`, drawn in
/// `PALETTE[colour]`; a control is drawn dashed and pale in its class's colour, so it reads
/// as the same class's baseline.
#[derive(Debug, Clone, Default)]
pub struct Curve {
    pub name: String,
    pub ys: Vec<f64>,
    /// Index into the palette (red, blue, green, orange, purple, grey).
    pub colour: usize,
    pub control: bool,
}

/// One plot of a [`curve_panels`] figure.
#[derive(Debug, Clone)]
pub struct CurvePanel {
    pub title: String,
    pub y_label: String,
    pub curves: Vec<Curve>,
    pub y_range: (f64, f64),
}

/// Draws `panels` side by side against the same `xs` (the x axis spans exactly the smallest
/// to the largest x), each with its legend under its plot area, so no legend hides a curve.
pub fn curve_panels(out: &Path, title: &str, x_label: &str, xs: &[f64], panels: &[CurvePanel]) -> Result<PathBuf> {
    if xs.is_empty() || panels.is_empty() || panels.iter().any(|p| p.curves.is_empty()) {
        bail!("chart {title:?} has nothing to draw");
    }
    for c in panels.iter().flat_map(|p| &p.curves) {
        if c.ys.len() != xs.len() {
            bail!("curve {:?} has {} points for {} x values", c.name, c.ys.len(), xs.len());
        }
    }
    ensure_registered();
    let legend_rows = panels.iter().map(|p| p.curves.len()).max().unwrap_or(0);
    let size = (560 * panels.len() as u32, 440 + LEGEND_ROW * legend_rows as u32);
    draw_on_backend!(out, size, |root| draw_panels(
        root,
        title,
        x_label,
        xs,
        panels,
        legend_rows
    )?);
    Ok(out.to_path_buf())
}

const LEGEND_ROW: u32 = 20;

/// A control's colour: the class colour mixed two thirds of the way to white.
fn pale(c: RGBColor) -> RGBColor {
    let mix = |v: u8| (v as f64 + (255.0 - v as f64) * 0.6).round() as u8;
    RGBColor(mix(c.0), mix(c.1), mix(c.2))
}

fn draw_panels<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    x_label: &str,
    xs: &[f64],
    panels: &[CurvePanel],
    legend_rows: usize,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, (FAMILY, 18)).map_err(err)?;
    let (x_lo, x_hi) = xs
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    let (x_lo, x_hi) = if x_hi > x_lo {
        (x_lo, x_hi)
    } else {
        (x_lo - 0.5, x_hi + 0.5)
    };
    let (_, h) = root.dim_in_pixel();
    let (plots, legends) = root.split_vertically(h - LEGEND_ROW * legend_rows as u32 - 8);
    let plot_areas = plots.split_evenly((1, panels.len()));
    let legend_areas = legends.split_evenly((1, panels.len()));
    for ((panel, area), legend) in panels.iter().zip(&plot_areas).zip(&legend_areas) {
        let (y_lo, y_hi) = panel.y_range;
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, (FAMILY, 15))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(x_lo..x_hi, y_lo..y_hi)
            .map_err(err)?;
        // Whole-number xs (layers) get whole-number labels, and no label between them.
        let whole = xs.iter().all(|x| x.fract() == 0.0);
        let x_format = |x: &f64| match (whole, x.fract() == 0.0) {
            (true, true) => format!("{x:.0}"),
            (true, false) => String::new(),
            (false, _) => {
                let text = format!("{x:.3}");
                text.trim_end_matches('0').trim_end_matches('.').to_string()
            }
        };
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(&panel.y_label)
            .x_label_formatter(&x_format)
            .label_style((FAMILY, 12))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(err)?;
        // Controls first, so the curves they are the baseline of draw over them.
        let mut order: Vec<&Curve> = panel.curves.iter().collect();
        order.sort_by_key(|c| !c.control);
        for c in order {
            let base = PALETTE[c.colour % 6];
            let colour = if c.control { pale(base) } else { base };
            let points: Vec<(f64, f64)> = xs
                .iter()
                .copied()
                .zip(c.ys.iter().copied())
                .filter(|(_, y)| y.is_finite())
                .collect();
            if c.control {
                chart
                    .draw_series(DashedLineSeries::new(points.clone(), 6, 4, colour.stroke_width(3)))
                    .map_err(err)?;
            } else {
                chart
                    .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
                    .map_err(err)?;
                chart
                    .draw_series(points.into_iter().map(|p| Circle::new(p, 3, colour.filled())))
                    .map_err(err)?;
            }
        }
        for (k, c) in panel.curves.iter().enumerate() {
            let base = PALETTE[c.colour % 6];
            let colour = if c.control { pale(base) } else { base };
            let y = (LEGEND_ROW * k as u32 + LEGEND_ROW / 2) as i32;
            let x0 = 70;
            if c.control {
                for s in [0, 10, 20] {
                    legend
                        .draw(&PathElement::new(
                            vec![(x0 + s, y), (x0 + s + 6, y)],
                            colour.stroke_width(3),
                        ))
                        .map_err(err)?;
                }
            } else {
                legend
                    .draw(&PathElement::new(vec![(x0, y), (x0 + 26, y)], colour.stroke_width(2)))
                    .map_err(err)?;
            }
            legend
                .draw_text(&c.name, &(FAMILY, 12).into_text_style(legend), (x0 + 34, y - 7))
                .map_err(err)?;
        }
    }
    root.present().map_err(err)?;
    Ok(())
}
