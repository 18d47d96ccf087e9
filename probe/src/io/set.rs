//! A command's several outputs (a sweep's JSON, CSV and figure; LAT's vectors, sidecar and
//! plot) written together: each to its own temporary, then all moved into place at once, so
//! a failure while writing any of them (a full disk, a file-size limit, a figure that cannot
//! be drawn) leaves none written.

use super::{commit_lock, AtomicFile};
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The outputs of one command, written and not yet in place. Dropped uncommitted (an error),
/// every temporary goes and no destination is touched.
#[derive(Default)]
pub struct OutputSet {
    files: Vec<AtomicFile>,
}

impl OutputSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// `bytes` to go to `dest`.
    pub fn write(&mut self, dest: &Path, bytes: &[u8]) -> Result<()> {
        let mut out = AtomicFile::create(dest)?;
        out.file()
            .write_all(bytes)
            .with_context(|| format!("failed to write {}", dest.display()))?;
        self.files.push(out);
        Ok(())
    }

    /// What `write` writes at the path it is given (a temporary with `dest`'s extension, for a
    /// writer that picks the format by the name) to go to `dest`; returns what `write` returns.
    pub fn write_through<T>(&mut self, dest: &Path, write: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
        let out = AtomicFile::create_keeping_extension(dest)?;
        let value = write(out.temp_path())?;
        self.files.push(out);
        Ok(value)
    }

    /// Moves every output into place. When one destination is not what it was when the work
    /// began (a file appeared or changed there), none is replaced: every result is kept beside
    /// its destination, under the names the error gives.
    pub fn commit(self) -> Result<()> {
        for file in &self.files {
            file.sync()?;
        }
        let _commits = commit_lock();
        if let Some(changed) = self.files.iter().find(|f| !f.unchanged()) {
            let dest = changed.dest.display().to_string();
            let kept: Vec<PathBuf> = self
                .files
                .into_iter()
                .map(AtomicFile::keep_aside)
                .collect::<Result<_>>()?;
            let kept: Vec<String> = kept.iter().map(|k| k.display().to_string()).collect();
            bail!(
                "{dest} appeared (or changed) while alens worked and was left as it is; this run's results are in {}",
                kept.join(", ")
            );
        }
        for file in self.files {
            file.persist()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_on_one_output_leaves_none_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut set = OutputSet::new();
        set.write(&dir.path().join("a.json"), b"{}").unwrap();
        let failed = set.write_through(&dir.path().join("b.png"), |_| -> Result<()> { bail!("cannot draw") });
        assert!(failed.is_err());
        drop(set);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn all_go_in_together_or_all_are_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        let mut set = OutputSet::new();
        set.write(&dir.path().join("a.json"), b"ours").unwrap();
        set.write_through(&dir.path().join("b.csv"), |p| Ok(std::fs::write(p, b"ours")?))
            .unwrap();
        set.commit().unwrap();
        assert_eq!(std::fs::read(dir.path().join("b.csv")).unwrap(), b"ours");

        let mut set = OutputSet::new();
        set.write(&dir.path().join("c.json"), b"ours").unwrap();
        set.write(&dir.path().join("d.json"), b"ours").unwrap();
        std::fs::write(dir.path().join("d.json"), b"theirs").unwrap();
        let err = set.commit().unwrap_err().to_string();
        assert!(err.contains("appeared"), "{err}");
        assert!(!dir.path().join("c.json").exists(), "none moved in");
        assert_eq!(std::fs::read(dir.path().join("d.json")).unwrap(), b"theirs");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            5,
            "a, b, d and two kept"
        );
    }
}
