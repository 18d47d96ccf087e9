//! Line charts: per-layer LAT accuracy, and the sweep curves (correction magnitude, copy rate,
//! exact-correction rate against alpha).

use crate::font::{ensure_registered, FAMILY};
use crate::heatmap::err;
use crate::{commit, format_of, temp_beside, Format};
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
    let tmp = temp_beside(out);
    let size = (760, 460);
    match format_of(out)? {
        Format::Png => draw(
            BitMapBackend::new(&tmp, size).into_drawing_area(),
            title,
            x_label,
            y_label,
            xs,
            series,
            y_range,
        )?,
        Format::Svg => draw(
            SVGBackend::new(&tmp, size).into_drawing_area(),
            title,
            x_label,
            y_label,
            xs,
            series,
            y_range,
        )?,
    }
    commit(&tmp, out)?;
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
