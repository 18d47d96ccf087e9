//! The [`OutputHost`] a process running alens installs: a registry of temporaries in flight,
//! and the ledger of written files in `$ALENS_HOME/written.tsv`. The library offers them; the
//! binary (or the Python module) decides to use them, once, at start-up.

use crate::io::{resolve, OutputHost};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Temporaries in flight and the written-files ledger of one process.
pub struct ProcessOutputs {
    in_flight: Mutex<Vec<PathBuf>>,
    ledger: PathBuf,
}

impl ProcessOutputs {
    /// A registry with the ledger at `ledger` (usually `home::cache_dir()/written.tsv`).
    pub fn new(ledger: PathBuf) -> Self {
        Self { in_flight: Mutex::new(Vec::new()), ledger }
    }

    /// Removes every temporary still in flight: what a signal handler calls before exiting.
    pub fn remove_temporaries(&self) {
        if let Ok(paths) = self.in_flight.lock() {
            for path in paths.iter() {
                let _ = if path.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
            }
        }
    }

    /// The ledger line for `path`'s current content, or `None` when the file is gone or its
    /// name cannot be logged unambiguously (a control character could forge a line).
    fn entry(path: &Path) -> Option<String> {
        let resolved = resolve(path).ok()?;
        let name = resolved.to_str()?;
        if name.chars().any(char::is_control) {
            return None;
        }
        let meta = std::fs::metadata(path).ok()?;
        let modified = meta.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?.as_nanos();
        Some(format!("{}\t{modified}\t{name}", meta.len()))
    }
}

impl OutputHost for ProcessOutputs {
    fn staging(&self, path: &Path) {
        if let Ok(mut paths) = self.in_flight.lock() {
            paths.push(path.to_path_buf());
        }
    }

    fn unstaged(&self, path: &Path) {
        if let Ok(mut paths) = self.in_flight.lock() {
            paths.retain(|p| p != path);
        }
    }

    /// Best effort: without a writable ledger the file is still written; it just cannot be
    /// replaced by a later run without deleting it first.
    fn written(&self, path: &Path) {
        let Some(entry) = Self::entry(path) else { return };
        if let Some(dir) = self.ledger.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        // One short line per write, appended: concurrent runs do not interleave within a line.
        if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(&self.ledger) {
            let _ = file.write_all(format!("{entry}\n").as_bytes());
        }
    }

    fn written_by_alens(&self, path: &Path) -> bool {
        let Some(entry) = Self::entry(path) else { return false };
        let Ok(log) = std::fs::read_to_string(&self.ledger) else { return false };
        log.lines().any(|line| line == entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_with_a_control_character_is_never_logged() {
        let dir = tempfile::tempdir().unwrap();
        let outputs = ProcessOutputs::new(dir.path().join("written.tsv"));
        let forged = dir.path().join("a\n0\t0\tb");
        std::fs::write(&forged, b"x").unwrap();
        outputs.written(&forged);
        assert!(!outputs.written_by_alens(&forged));
        assert!(!dir.path().join("written.tsv").exists());
        let plain = dir.path().join("plain.txt");
        std::fs::write(&plain, b"x").unwrap();
        outputs.written(&plain);
        assert!(outputs.written_by_alens(&plain));
    }
}
