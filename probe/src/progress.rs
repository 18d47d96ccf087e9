//! The one progress-bar helper: every long job (capture, LAT, training, sweeps) uses it.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar on stderr with a label, counts, rate and ETA. It draws nothing when stderr is not a
/// terminal, so logs and tests stay clean.
pub fn bar(len: u64, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}")
            .expect("static template is valid")
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_string());
    bar
}
