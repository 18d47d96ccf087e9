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
use std::path::{Path, PathBuf};

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

/// A temp path beside `dest` with the same extension (plotters picks the encoder by it).
/// The destination folder is created first, so plotters can write the temp file into it.
pub(crate) fn temp_beside(dest: &Path) -> PathBuf {
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(dir);
    }
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".tmp-{}-{name}", std::process::id()))
}

pub(crate) fn commit(tmp: &Path, dest: &Path) -> Result<()> {
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::rename(tmp, dest).map_err(|e| anyhow::anyhow!("failed to write {}: {e}", dest.display()))?;
    Ok(())
}
