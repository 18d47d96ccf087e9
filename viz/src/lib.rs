//! `viz`: pictures of what LAT and steering compute, drawn with plotters from plain arrays.
//!
//! It knows nothing of models: callers pass matrices, labels and curves. PNG or SVG is chosen
//! by the file extension. Text uses an embedded DejaVu Sans, so figures render the same on a
//! machine with no fonts installed. Files are written atomically (temp file + rename); each
//! drawing function returns the path it wrote, for the caller to log.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod colour;
mod curves;
mod font;
mod heatmap;

pub use colour::{diverging, ColourScale};
pub use curves::{curve_panels, line_chart, Curve, CurvePanel, Series};
pub use heatmap::{footer, heatmaps, Panel};

use anyhow::{bail, Result};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Png,
    Svg,
}

/// Checks, before any work, that `path` names a figure viz can draw (by its extension).
pub fn check_figure_path(path: &Path) -> Result<()> {
    format_of(path).map(|_| ())
}

pub(crate) fn format_of(path: &Path) -> Result<Format> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("png") => Ok(Format::Png),
        Some("svg") => Ok(Format::Svg),
        _ => bail!("figure {} must end in .png or .svg", path.display()),
    }
}

/// Runs `$draw` with `$root` the drawing area of the backend `$out`'s extension picks (PNG or
/// SVG), `$size` pixels, made after `$out`'s folder: the drawing functions are generic over the
/// backend, so one call site serves both formats.
macro_rules! draw_on_backend {
    ($out:expr, $size:expr, |$root:ident| $draw:expr) => {{
        let target = $crate::drawing_path($out)?;
        match $crate::format_of($out)? {
            $crate::Format::Png => {
                let $root = plotters::prelude::BitMapBackend::new(target, $size).into_drawing_area();
                $draw
            }
            $crate::Format::Svg => {
                let $root = plotters::prelude::SVGBackend::new(target, $size).into_drawing_area();
                $draw
            }
        }
    }};
}
pub(crate) use draw_on_backend;

/// Makes `dest`'s folder so plotters can write `dest` (it picks the encoder by its extension).
/// viz writes where it is told: making the write atomic (a temporary renamed into place,
/// removed on error or Ctrl-C, never over a file that appeared meanwhile) is the caller's
/// part, as for every other output alens writes; the CLI draws into `probe::io`'s temporary.
pub(crate) fn drawing_path(dest: &Path) -> Result<&Path> {
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("failed to create {}: {e}", dir.display()))?;
    }
    Ok(dest)
}
