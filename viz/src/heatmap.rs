//! Heatmaps: one or more panels side by side sharing one diverging colour scale and a colour
//! bar. One panel is the LAT scan (tokens x layers); two are the paper's layer-wise
//! correction figure ((a) correct cases beside (b) copy cases).

use crate::colour::diverging;
use crate::font::{ensure_registered, FAMILY};
use crate::{commit, format_of, temp_beside, Format};
use anyhow::{bail, Result};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// One heatmap: `values[row][col]`, rows drawn top to bottom.
#[derive(Debug, Clone)]
pub struct Panel {
    pub title: String,
    pub values: Vec<Vec<f64>>,
    pub row_labels: Vec<String>,
    pub col_labels: Vec<String>,
    pub x_label: String,
    pub y_label: String,
}

impl Panel {
    fn check(&self) -> Result<()> {
        let rows = self.values.len();
        if rows == 0 || self.values[0].is_empty() {
            bail!("heatmap {:?} has no cells", self.title);
        }
        if self.values.iter().any(|r| r.len() != self.values[0].len()) {
            bail!("heatmap {:?} has rows of different lengths", self.title);
        }
        if self.row_labels.len() != rows || self.col_labels.len() != self.values[0].len() {
            bail!("heatmap {:?}: labels do not match the matrix", self.title);
        }
        Ok(())
    }
}

/// Draws `panels` side by side under `title`, writing PNG or SVG by the extension of `out`.
pub fn heatmaps(out: &Path, title: &str, panels: &[Panel], colour_label: &str) -> Result<PathBuf> {
    if panels.is_empty() {
        bail!("no heatmap panels to draw");
    }
    for p in panels {
        p.check()?;
    }
    ensure_registered();
    let limit = panels
        .iter()
        .flat_map(|p| p.values.iter().flatten())
        .filter(|v| v.is_finite())
        .fold(0.0f64, |m, v| m.max(v.abs()))
        .max(1e-12);
    let rows = panels.iter().map(|p| p.values.len()).max().unwrap_or(1);
    let width = 140 + panels.iter().map(|p| 80 + 22 * p.values[0].len().max(8)).sum::<usize>() as u32 + 90;
    let height = (170 + 18 * rows.max(8)) as u32;
    let tmp = temp_beside(out);
    match format_of(out)? {
        Format::Png => draw(
            BitMapBackend::new(&tmp, (width, height)).into_drawing_area(),
            title,
            panels,
            limit,
            colour_label,
        )?,
        Format::Svg => draw(
            SVGBackend::new(&tmp, (width, height)).into_drawing_area(),
            title,
            panels,
            limit,
            colour_label,
        )?,
    }
    commit(&tmp, out)?;
    Ok(out.to_path_buf())
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    panels: &[Panel],
    limit: f64,
    colour_label: &str,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, (FAMILY, 20)).map_err(err)?;
    let (w, _) = root.dim_in_pixel();
    let (plots, bar) = root.split_horizontally(w - 90);
    let widths: Vec<u32> = panels
        .iter()
        .map(|p| 80 + 22 * p.values[0].len().max(8) as u32)
        .collect();
    let total: u32 = widths.iter().sum();
    let mut rest = plots;
    for (i, panel) in panels.iter().enumerate() {
        let area = if i + 1 == panels.len() {
            rest.clone()
        } else {
            let (left, right) = rest.split_horizontally(rest.dim_in_pixel().0 * widths[i] / total.max(1));
            rest = right;
            left
        };
        draw_panel(&area, panel, limit)?;
    }
    draw_colour_bar(&bar, limit, colour_label)?;
    root.present().map_err(err)?;
    Ok(())
}

fn draw_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, panel: &Panel, limit: f64) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let (rows, cols) = (panel.values.len(), panel.values[0].len());
    let label_width = panel
        .row_labels
        .iter()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(1)
        .min(24) as u32
        * 7
        + 30;
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, (FAMILY, 16))
        .margin(8)
        .x_label_area_size(40)
        .y_label_area_size(label_width)
        .build_cartesian_2d(CellAxis(cols), CellAxis(rows))
        .map_err(err)?;
    let row_labels = panel.row_labels.clone();
    let col_labels = panel.col_labels.clone();
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(cols.min(40))
        .y_labels(rows.min(60))
        .x_desc(&panel.x_label)
        .y_desc(&panel.y_label)
        .label_style((FAMILY, 11))
        .x_label_formatter(&|x| col_labels.get(*x as usize).cloned().unwrap_or_default())
        .y_label_formatter(&|y| {
            // Row 0 at the top.
            let label = rows
                .checked_sub(*y as usize + 1)
                .and_then(|i| row_labels.get(i))
                .cloned()
                .unwrap_or_default();
            label.chars().take(24).collect()
        })
        .draw()
        .map_err(err)?;
    chart
        .draw_series(panel.values.iter().enumerate().flat_map(|(r, row)| {
            row.iter().enumerate().map(move |(c, &v)| {
                let y = rows - 1 - r;
                Rectangle::new(
                    [(c as f64, y as f64), ((c + 1) as f64, (y + 1) as f64)],
                    diverging(v, limit).filled(),
                )
            })
        }))
        .map_err(err)?;
    Ok(())
}

/// An axis of `n` unit cells, `[i, i + 1)` for cell i, with its labels at the cell centres.
/// (plotters' segmented integer axes collapse to a point when there is a single cell.)
struct CellAxis(usize);

impl Ranged for CellAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        limit.0 + ((limit.1 - limit.0) as f64 * value / self.0 as f64).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        let step = self.0.div_ceil(hint.max_num_points().max(1)).max(1);
        (0..self.0).step_by(step).map(|i| i as f64 + 0.5).collect()
    }

    fn range(&self) -> std::ops::Range<f64> {
        0.0..self.0 as f64
    }
}

fn draw_colour_bar<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, limit: f64, label: &str) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let steps = 100;
    let mut chart = ChartBuilder::on(area)
        .margin_top(40)
        .margin_bottom(48)
        .margin_right(8)
        .y_label_area_size(48)
        .build_cartesian_2d(0.0..1.0, -limit..limit)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_labels(5)
        .y_desc(label)
        .label_style((FAMILY, 11))
        .y_label_formatter(&|v| format!("{v:.2}"))
        .draw()
        .map_err(err)?;
    chart
        .draw_series((0..steps).map(|k| {
            let lo = -limit + 2.0 * limit * k as f64 / steps as f64;
            let hi = lo + 2.0 * limit / steps as f64;
            Rectangle::new([(0.0, lo), (1.0, hi)], diverging((lo + hi) / 2.0, limit).filled())
        }))
        .map_err(err)?;
    Ok(())
}

pub(crate) fn err<E: std::error::Error + Send + Sync + 'static>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing failed: {e}")
}
