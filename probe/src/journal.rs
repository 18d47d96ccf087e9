//! Journals of resumable runs: a JSONL file beside the output, a header line that identifies
//! the run (a fingerprint of its data, model and options), then one line per finished unit of
//! work, each synced before the run goes on. A run killed outright (SIGKILL, a crash, power
//! loss) leaves its journal, and the same command with `--resume` continues from it. Every
//! other ending removes it: success, an error (the guard drops it) and Ctrl-C or SIGTERM (it
//! is a tracked temporary), so nothing is ever left behind but what a resume needs.

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The journal format this alens writes and resumes; a journal of another is refused.
pub const FORMAT_VERSION: u32 = 1;

pub struct Journal<E> {
    path: PathBuf,
    /// Open for appending once the journal exists on disk: a fresh journal is written with its
    /// first entry, so a run that fails before any work leaves nothing.
    file: Option<std::fs::File>,
    header: String,
    entries: Vec<E>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alens_journal: u32,
    fingerprint: String,
}

impl<E: Serialize + DeserializeOwned> Journal<E> {
    /// The journal of a run whose main output is `output`.
    pub fn path_for(output: &Path) -> PathBuf {
        let mut name = output.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        name.push(".partial.jsonl");
        output.with_file_name(name)
    }

    /// Starts a journal at `path`, or with `resume` continues the one there (a fresh start
    /// when there is none). Without `resume`, an existing journal is an interrupted run the
    /// user may want back: refused, not overwritten.
    pub fn open(path: &Path, fingerprint: &str, resume: bool) -> Result<Self> {
        let header = serde_json::to_string(&Header {
            alens_journal: FORMAT_VERSION,
            fingerprint: fingerprint.into(),
        })?;
        let mut journal = Self {
            path: path.to_path_buf(),
            file: None,
            header,
            entries: Vec::new(),
        };
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return Ok(journal);
        };
        if !resume && !meta.file_type().is_symlink() {
            // A live run holds its journal locked: it is not an interrupted one.
            let live = std::fs::File::open(path)
                .is_ok_and(|f| matches!(f.try_lock_shared(), Err(std::fs::TryLockError::WouldBlock)));
            if live {
                bail!(
                    "another alens run is writing {}; wait for it or choose another output",
                    path.display()
                );
            }
            bail!(
                "{} holds an interrupted run: rerun with --resume to continue it, or delete it",
                path.display()
            );
        }
        // Claimed (and locked) before it is read: two resumed runs never continue one journal.
        let mut file = crate::io::open_derived(path, true)?;
        let mut text = String::new();
        file.read_to_string(&mut text)
            .with_context(|| format!("failed to read {}", path.display()))?;
        let mut lines = text.lines();
        let found: Header = lines
            .next()
            .and_then(|l| serde_json::from_str(l).ok())
            .with_context(|| format!("{} is not an alens journal", path.display()))?;
        if found.alens_journal != FORMAT_VERSION {
            bail!(
                "{} is a journal of format {} (this alens writes {FORMAT_VERSION}): it cannot be resumed here; delete it to start over",
                path.display(),
                found.alens_journal
            );
        }
        if found.fingerprint != fingerprint {
            bail!(
                "{} is from another run (different data, model or options); delete it to start over",
                path.display()
            );
        }
        // A kill mid-write leaves at most a cut last line: everything before it stands.
        let mut kept = vec![journal.header.clone()];
        for line in lines {
            let Ok(entry) = serde_json::from_str::<E>(line) else {
                break;
            };
            kept.push(line.to_string());
            journal.entries.push(entry);
        }
        journal.file = Some(file);
        journal.rewrite(&kept.join("\n"))?;
        Ok(journal)
    }

    /// The entries of the interrupted run, in order.
    pub fn entries(&self) -> &[E] {
        &self.entries
    }

    /// Writes `text` as the whole content of the open journal, which then takes appends.
    fn rewrite(&mut self, text: &str) -> Result<()> {
        crate::io::track_temporary(&self.path);
        let path = self.path.display().to_string();
        let file = self.file.as_mut().context("the journal is open")?;
        file.set_len(0)
            .and_then(|_| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(format!("{text}\n").as_bytes()))
            .and_then(|_| file.sync_data())
            .with_context(|| format!("failed to write {path}"))
    }

    /// Records a finished unit of work durably (call it after the work's own output is synced).
    pub fn put(&mut self, entry: &E) -> Result<()> {
        if self.file.is_none() {
            self.file = Some(crate::io::open_derived(&self.path, false)?);
            let header = self.header.clone();
            self.rewrite(&header)?;
        }
        let mut line = serde_json::to_string(entry)?;
        line.push('\n');
        let file = self.file.as_mut().context("the journal is open")?;
        file.write_all(line.as_bytes())
            .and_then(|_| file.sync_data())
            .with_context(|| format!("failed to write {}", self.path.display()))
    }
}

impl<E> Drop for Journal<E> {
    /// The run finished or failed: its journal goes (only a kill leaves one to resume).
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.path);
            crate::io::untrack_temporary(&self.path);
        }
    }
}
