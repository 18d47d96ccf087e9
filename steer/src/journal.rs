//! Resumable runs over a data set. Every finished batch of outputs is appended (and synced) to
//! a journal beside the command's output; after a kill, `--resume` replays the journaled
//! batches and generates only the rest. Batches are fixed ranges of the records, so the
//! resumed result is the one an uninterrupted run gives. A finished run deletes its journal.

use crate::generate::AlignerOutput;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct Journal {
    path: PathBuf,
    /// Open for appending once the journal exists on disk: a fresh journal is written with its
    /// first batch, so a run that fails before any leaves nothing behind.
    file: Option<std::fs::File>,
    header: String,
    done: HashMap<(String, usize), Vec<AlignerOutput>>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alens_journal: u32,
    /// Identifies the run: data, model and options. A journal resumes only its own run.
    fingerprint: String,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    run: String,
    batch: usize,
    outputs: Vec<AlignerOutput>,
}

impl Journal {
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
        let mut done = HashMap::new();
        let mut valid = Vec::new();
        let header = serde_json::to_string(&Header { alens_journal: 1, fingerprint: fingerprint.into() })?;
        if !path.exists() {
            return Ok(Self { path: path.to_path_buf(), file: None, header, done });
        }
        {
            if !resume {
                bail!("{} holds an interrupted run: rerun with --resume to continue it, or delete it", path.display());
            }
            let text = std::fs::read_to_string(path).with_context(|| format!("failed to read {}", path.display()))?;
            let mut lines = text.lines();
            let header: Header = lines
                .next()
                .and_then(|l| serde_json::from_str(l).ok())
                .with_context(|| format!("{} is not an alens journal", path.display()))?;
            if header.fingerprint != fingerprint {
                bail!("{} is from another run (different data, model or options); delete it to start over", path.display());
            }
            valid.push(serde_json::to_string(&header)?);
            // A kill mid-write leaves at most a cut last line: everything before it stands.
            for line in lines {
                let Ok(entry) = serde_json::from_str::<Entry>(line) else { break };
                valid.push(line.to_string());
                done.insert((entry.run, entry.batch), entry.outputs);
            }
        }
        // Rewritten whole (dropping a cut line) before appending to it.
        let mut journal = Self { path: path.to_path_buf(), file: None, header, done };
        journal.create(&valid.join("\n"))?;
        Ok(journal)
    }

    /// Writes `text` as the journal's whole content and opens it for appending.
    fn create(&mut self, text: &str) -> Result<()> {
        probe::io::write_atomic(&self.path, format!("{text}\n").as_bytes())?;
        let file = std::fs::OpenOptions::new().append(true).open(&self.path).with_context(|| format!("failed to open {}", self.path.display()))?;
        self.file = Some(file);
        Ok(())
    }

    /// How many batches are already done.
    pub fn resumed_batches(&self) -> usize {
        self.done.len()
    }

    pub fn get(&self, run: &str, batch: usize) -> Option<&Vec<AlignerOutput>> {
        self.done.get(&(run.to_string(), batch))
    }

    /// Records a finished batch durably before the run goes on.
    pub fn put(&mut self, run: &str, batch: usize, outputs: &[AlignerOutput]) -> Result<()> {
        let mut line = serde_json::to_string(&Entry { run: run.into(), batch, outputs: outputs.to_vec() })?;
        line.push('\n');
        if self.file.is_none() {
            let header = self.header.clone();
            self.create(&header)?;
        }
        let file = self.file.as_mut().context("the journal is open")?;
        file.write_all(line.as_bytes()).and_then(|_| file.sync_data()).with_context(|| format!("failed to write {}", self.path.display()))
    }

    /// The run is complete and its outputs written: the journal goes.
    pub fn finish(self) -> Result<()> {
        if self.file.is_none() {
            return Ok(());
        }
        std::fs::remove_file(&self.path).with_context(|| format!("failed to remove {}", self.path.display()))
    }
}

/// A journal and the name of the run (an alpha of a sweep) whose batches it holds.
pub type Journaled<'a> = Option<(&'a mut Journal, String)>;
