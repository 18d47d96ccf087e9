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
    /// Tells the user, once per kind of trouble, that the ledger cannot do its job.
    warn: fn(&str),
    warned: Mutex<std::collections::BTreeSet<&'static str>>,
}

impl ProcessOutputs {
    /// A registry with the ledger at `ledger` (usually `home::cache_dir()/written.tsv`);
    /// `warn` prints one line (the binary's writes to stderr).
    pub fn new(ledger: PathBuf, warn: fn(&str)) -> Self {
        Self {
            in_flight: Mutex::new(Vec::new()),
            ledger,
            warn,
            warned: Mutex::new(Default::default()),
        }
    }

    fn warn_once(&self, kind: &'static str, message: impl FnOnce() -> String) {
        if self.warned.lock().is_ok_and(|mut seen| seen.insert(kind)) {
            (self.warn)(&message());
        }
    }

    /// Removes every temporary still in flight: what a signal handler calls before exiting.
    pub fn remove_temporaries(&self) {
        if let Ok(paths) = self.in_flight.lock() {
            for path in paths.iter() {
                if path.is_dir() {
                    // Another thread may add a file while the directory is emptied.
                    for _ in 0..3 {
                        if std::fs::remove_dir_all(path).is_ok() || !path.exists() {
                            break;
                        }
                    }
                } else {
                    let _ = std::fs::remove_file(path);
                }
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
        let modified = meta
            .modified()
            .ok()?
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_nanos();
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
        // A file written inside a staging directory, or at a temporary's path, is logged once
        // it is moved into place, under the name it will keep.
        let staged = self
            .in_flight
            .lock()
            .is_ok_and(|paths| paths.iter().any(|t| path.starts_with(t)));
        if staged {
            return;
        }
        let Some(entry) = Self::entry(path) else { return };
        if let Some(dir) = self.ledger.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        // One short line per write, appended: concurrent runs do not interleave within a line.
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.ledger)
            .and_then(|mut file| file.write_all(format!("{entry}\n").as_bytes()));
        if let Err(e) = appended {
            self.warn_once("unwritable", || {
                format!(
                    "cannot record {} in the written-files ledger {} ({e}); alens will refuse to replace it until it is deleted",
                    path.display(),
                    self.ledger.display()
                )
            });
        }
    }

    fn written_by_alens(&self, path: &Path) -> bool {
        let Some(entry) = Self::entry(path) else { return false };
        let log = match std::fs::read_to_string(&self.ledger) {
            Ok(log) => log,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return false,
            Err(e) => {
                self.warn_once("unreadable", || {
                    format!("cannot read the written-files ledger {} ({e}); alens treats every existing output as not its own", self.ledger.display())
                });
                return false;
            }
        };
        let well_formed = |line: &str| {
            let mut fields = line.splitn(3, '\t');
            let (len, modified, name) = (fields.next(), fields.next(), fields.next());
            len.is_some_and(|l| l.parse::<u64>().is_ok())
                && modified.is_some_and(|m| m.parse::<u128>().is_ok())
                && name.is_some_and(|n| n.starts_with('/'))
        };
        let malformed = log.lines().filter(|line| !well_formed(line)).count();
        if malformed > 0 {
            self.warn_once("corrupt", || {
                format!("the written-files ledger {} has {malformed} malformed lines; they are ignored (delete the file to start it afresh)", self.ledger.display())
            });
        }
        log.lines().any(|line| line == entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_with_a_control_character_is_never_logged() {
        let dir = tempfile::tempdir().unwrap();
        let outputs = ProcessOutputs::new(dir.path().join("written.tsv"), |_| {});
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

    static WARNINGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

    #[test]
    fn a_corrupt_or_unwritable_ledger_is_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = dir.path().join("written.tsv");
        std::fs::write(&ledger, "garbage\n12\tnot-a-time\t/x\n").unwrap();
        let outputs = ProcessOutputs::new(ledger.clone(), |line| WARNINGS.lock().unwrap().push(line.to_string()));
        let plain = dir.path().join("plain.txt");
        std::fs::write(&plain, b"x").unwrap();
        assert!(!outputs.written_by_alens(&plain));
        assert!(!outputs.written_by_alens(&plain));
        // The ledger's place is taken by a directory: nothing can be recorded.
        let blocked = ProcessOutputs::new(dir.path().to_path_buf(), |line| {
            WARNINGS.lock().unwrap().push(line.to_string())
        });
        blocked.written(&plain);
        blocked.written(&plain);
        let warnings = WARNINGS.lock().unwrap();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("2 malformed lines"), "{}", warnings[0]);
        assert!(warnings[1].contains("cannot record"), "{}", warnings[1]);
    }
}
