//! Heatmaps: panels side by side, each on one of the figure's diverging colour scales, one
//! colour bar per scale. One panel is the LAT scan (tokens x layers); three are the paper's
//! layer-wise correction figure ((a) correct cases, (b) copy cases on one clipped scale, and
//! (a) - (b) on its own). Under the figure: the share of cells beyond each clip, and notes.

use crate::colour::ColourScale;
use crate::draw_on_backend;
use crate::font::{ensure_registered, FAMILY};
use anyhow::{bail, Result};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// One heatmap: `values[row][col]`, rows drawn top to bottom.
#[derive(Debug, Clone, Default)]
pub struct Panel {
    pub title: String,
    pub values: Vec<Vec<f64>>,
    pub row_labels: Vec<String>,
    pub col_labels: Vec<String>,
    pub x_label: String,
    pub y_label: String,
    /// Which of the figure's colour scales this panel is drawn on (an index).
    pub scale: usize,
    /// Rows outlined in black (the decision row: the last prompt token).
    pub marked_rows: Vec<usize>,
    /// Rows whose label is starred: positions off the distribution the scale was fitted on.
    pub flagged_rows: Vec<usize>,
}

impl Panel {
    fn check(&self, scales: usize) -> Result<()> {
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
        if self.scale >= scales {
            bail!("heatmap {:?} names colour scale {} of {scales}", self.title, self.scale);
        }
        if let Some(r) = self.marked_rows.iter().chain(&self.flagged_rows).find(|&&r| r >= rows) {
            bail!("heatmap {:?} marks row {r} of {rows}", self.title);
        }
        Ok(())
    }

    /// The signed saturation each cell is drawn with under `scale` (see
    /// [`ColourScale::saturation`]): what the figure shows, for tests to check against the
    /// numbers.
    pub fn drawn(&self, scale: &ColourScale) -> Vec<Vec<f64>> {
        self.values
            .iter()
            .map(|row| row.iter().map(|&v| scale.saturation(v)).collect())
            .collect()
    }
}

/// The lines printed under a heatmap figure: for every clipped scale, the share of its cells
/// beyond the clip, then `note`'s lines.
pub fn footer(panels: &[Panel], scales: &[ColourScale], note: &str) -> Vec<String> {
    let mut lines = Vec::new();
    for (k, scale) in scales.iter().enumerate().filter(|(_, s)| s.clipped) {
        let values: Vec<f64> = panels
            .iter()
            .filter(|p| p.scale == k)
            .flat_map(|p| p.values.iter().flatten().copied())
            .collect();
        lines.push(format!(
            "{:.1}% of {} cells lie beyond \u{b1}{} and are drawn at full colour",
            100.0 * scale.clipped_share(&values),
            values.len(),
            trim_number(scale.limit),
        ));
    }
    lines.extend(note.lines().filter(|l| !l.trim().is_empty()).map(String::from));
    lines
}

fn trim_number(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Draws `panels` side by side under `title`, each on its colour scale from `scales` (one
/// colour bar per scale, at the right), with the [`footer`] under them; PNG or SVG by the
/// extension of `out`.
pub fn heatmaps(out: &Path, title: &str, panels: &[Panel], scales: &[ColourScale], note: &str) -> Result<PathBuf> {
    if panels.is_empty() {
        bail!("no heatmap panels to draw");
    }
    if scales.is_empty() {
        bail!("no colour scale to draw the heatmap with");
    }
    for p in panels {
        p.check(scales.len())?;
    }
    ensure_registered();
    let lines = footer(panels, scales, note);
    let rows = panels.iter().map(|p| p.values.len()).max().unwrap_or(1);
    let width = 140 + panels.iter().map(panel_width).sum::<u32>() + BAR_WIDTH * scales.len() as u32;
    let width = width.max(680);
    let height = (170 + 18 * rows.max(14) + FOOTER_LINE * lines.len()) as u32;
    draw_on_backend!(out, (width, height), |root| draw(root, title, panels, scales, &lines)?);
    Ok(out.to_path_buf())
}

const BAR_WIDTH: u32 = 104;
const FOOTER_LINE: usize = 18;

fn panel_width(p: &Panel) -> u32 {
    80 + 22 * p.values[0].len().max(8) as u32
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    panels: &[Panel],
    scales: &[ColourScale],
    footer: &[String],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, (FAMILY, 20)).map_err(err)?;
    let (w, h) = root.dim_in_pixel();
    let (body, notes) = root.split_vertically(h - (FOOTER_LINE * footer.len()) as u32);
    for (k, line) in footer.iter().enumerate() {
        notes
            .draw_text(
                line,
                &(FAMILY, 12).into_text_style(&notes),
                (16, (FOOTER_LINE * k) as i32),
            )
            .map_err(err)?;
    }
    let (plots, mut bars) = body.split_horizontally(w - BAR_WIDTH * scales.len() as u32);
    let widths: Vec<u32> = panels.iter().map(panel_width).collect();
    // Each panel takes its share of what the panels before it left.
    let mut total: u32 = widths.iter().sum();
    let mut rest = plots;
    for (i, panel) in panels.iter().enumerate() {
        let area = if i + 1 == panels.len() {
            rest.clone()
        } else {
            let (left, right) = rest.split_horizontally(rest.dim_in_pixel().0 * widths[i] / total.max(1));
            total -= widths[i];
            rest = right;
            left
        };
        draw_panel(&area, panel, &scales[panel.scale])?;
    }
    for (k, scale) in scales.iter().enumerate() {
        let area = if k + 1 == scales.len() {
            bars.clone()
        } else {
            let (left, right) = bars.split_horizontally(BAR_WIDTH);
            bars = right;
            left
        };
        draw_colour_bar(&area, scale)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

fn draw_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, panel: &Panel, scale: &ColourScale) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let (rows, cols) = (panel.values.len(), panel.values[0].len());
    let row_labels: Vec<String> = panel
        .row_labels
        .iter()
        .enumerate()
        .map(|(r, l)| {
            let l: String = l.chars().take(24).collect();
            if panel.flagged_rows.contains(&r) {
                format!("* {l}")
            } else {
                l
            }
        })
        .collect();
    let label_width = row_labels.iter().map(|l| l.chars().count()).max().unwrap_or(1).min(26) as u32 * 7 + 30;
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, (FAMILY, 16))
        .margin(8)
        .x_label_area_size(40)
        .y_label_area_size(label_width)
        .build_cartesian_2d(CellAxis(cols), CellAxis(rows))
        .map_err(err)?;
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
            rows.checked_sub(*y as usize + 1)
                .and_then(|i| row_labels.get(i))
                .cloned()
                .unwrap_or_default()
        })
        .draw()
        .map_err(err)?;
    chart
        .draw_series(panel.values.iter().enumerate().flat_map(|(r, row)| {
            row.iter().enumerate().map(move |(c, &v)| {
                let y = rows - 1 - r;
                Rectangle::new(
                    [(c as f64, y as f64), ((c + 1) as f64, (y + 1) as f64)],
                    scale.colour(v).filled(),
                )
            })
        }))
        .map_err(err)?;
    chart
        .draw_series(panel.marked_rows.iter().map(|&r| {
            let y = (rows - 1 - r) as f64;
            Rectangle::new([(0.0, y), (cols as f64, y + 1.0)], BLACK.stroke_width(2))
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

fn draw_colour_bar<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, scale: &ColourScale) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let steps = 100;
    let limit = scale.limit;
    let mut chart = ChartBuilder::on(area)
        .margin_top(40)
        .margin_bottom(48)
        .margin_right(8)
        .y_label_area_size(54)
        .build_cartesian_2d(0.0..1.0, -limit..limit)
        .map_err(err)?;
    let clipped = scale.clipped;
    chart
        .configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_labels(7)
        .y_desc(&scale.label)
        .label_style((FAMILY, 11))
        .y_label_formatter(&|v| {
            // At a clip, the end labels say that beyond them is drawn the same.
            if clipped && (v.abs() - limit).abs() < 1e-9 * limit {
                format!("{}{}", if *v < 0.0 { "\u{2264}" } else { "\u{2265}" }, trim_number(*v))
            } else if limit >= 10.0 {
                format!("{v:.0}")
            } else {
                trim_number(*v)
            }
        })
        .draw()
        .map_err(err)?;
    chart
        .draw_series((0..steps).map(|k| {
            let lo = -limit + 2.0 * limit * k as f64 / steps as f64;
            let hi = lo + 2.0 * limit / steps as f64;
            Rectangle::new([(0.0, lo), (1.0, hi)], scale.colour((lo + hi) / 2.0).filled())
        }))
        .map_err(err)?;
    Ok(())
}

pub(crate) fn err<E: std::error::Error + Send + Sync + 'static>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing failed: {e}")
}
