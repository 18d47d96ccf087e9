//! Resumable runs over a data set (eval, sweep): every finished batch of outputs goes to a
//! [`probe::journal::Journal`] beside the command's output; after a kill, `--resume` replays
//! the journaled batches and generates only the rest. Batches are fixed ranges of the records,
//! so the resumed result is the one an uninterrupted run gives.

use crate::output::AlignerOutput;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Serialize, Deserialize)]
struct Entry {
    run: String,
    batch: usize,
    outputs: Vec<AlignerOutput>,
}

pub struct Journal {
    inner: probe::journal::Journal<Entry>,
    done: HashMap<(String, usize), Vec<AlignerOutput>>,
}

impl Journal {
    pub fn path_for(output: &Path) -> PathBuf {
        probe::journal::Journal::<Entry>::path_for(output)
    }

    /// See [`probe::journal::Journal::open`].
    pub fn open(path: &Path, fingerprint: &str, resume: bool) -> Result<Self> {
        let inner = probe::journal::Journal::<Entry>::open(path, fingerprint, resume)?;
        let done = inner
            .entries()
            .iter()
            .map(|e| ((e.run.clone(), e.batch), e.outputs.clone()))
            .collect();
        Ok(Self { inner, done })
    }

    pub fn get(&self, run: &str, batch: usize) -> Option<&Vec<AlignerOutput>> {
        self.done.get(&(run.to_string(), batch))
    }

    /// Records a finished batch durably before the run goes on.
    pub fn put(&mut self, run: &str, batch: usize, outputs: &[AlignerOutput]) -> Result<()> {
        self.inner.put(&Entry {
            run: run.into(),
            batch,
            outputs: outputs.to_vec(),
        })
    }

    /// The run is complete and its outputs written: the journal goes.
    pub fn finish(self) -> Result<()> {
        drop(self.inner);
        Ok(())
    }
}

/// A journal and the name of the run (an alpha of a sweep) whose batches it holds.
pub type Journaled<'a> = Option<(&'a mut Journal, String)>;
