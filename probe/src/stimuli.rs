//! Stimulus records: AlignerTails-style JSONL (`question`, `answer`, `correction`).

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader};
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StimulusRecord {
    pub question: String,
    pub answer: String,
    /// The aligned answer. Equal to `answer` for a copy case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correction: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
}

impl StimulusRecord {
    /// A copy case: the upstream answer is already good and should be passed through.
    pub fn is_copy(&self) -> Option<bool> {
        self.correction.as_ref().map(|c| c.trim() == self.answer.trim())
    }
}

/// Reads every record of a JSONL file; blank lines are skipped, a bad line is reported with
/// its number. An empty file is an error, since nothing downstream can use it.
pub fn read_jsonl(path: &Path) -> Result<Vec<StimulusRecord>> {
    let file = std::fs::File::open(path).with_context(|| format!("failed to open {}", path.display()))?;
    let mut records = Vec::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("failed to read {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let record: StimulusRecord = serde_json::from_str(&line).with_context(|| {
            format!(
                "{}:{}: not a stimulus record (need question and answer)",
                path.display(),
                n + 1
            )
        })?;
        records.push(record);
    }
    if records.is_empty() {
        bail!("{} holds no records", path.display());
    }
    Ok(records)
}

/// Writes records as JSONL, atomically.
pub fn write_jsonl(path: &Path, records: &[StimulusRecord]) -> Result<()> {
    let mut text = String::new();
    for r in records {
        text.push_str(&serde_json::to_string(r)?);
        text.push('\n');
    }
    crate::io::write_atomic(path, text.as_bytes())
}
