//! alens' home directory: fetched models and the written-files ledger live there.

use std::path::PathBuf;

/// `$ALENS_HOME`, else `~/.cache/aligner-lens`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ALENS_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("aligner-lens")
}
