//! Copy/correct contrast pairs from stimulus records.

use crate::stimuli::StimulusRecord;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;

/// One copy/correct contrast: indices into the stimulus records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContrastPair {
    pub copy: usize,
    pub correct: usize,
}

/// Pairs each question's copy records with its correct records, in file order. Records
/// without a `correction` cannot be classed and are an error.
pub fn build_pairs(records: &[StimulusRecord]) -> Result<Vec<ContrastPair>> {
    if records.is_empty() {
        bail!("the stimulus set is empty");
    }
    let mut by_question: BTreeMap<&str, (Vec<usize>, Vec<usize>)> = BTreeMap::new();
    for (i, r) in records.iter().enumerate() {
        let is_copy = r
            .is_copy()
            .with_context(|| format!("record {} has no correction, so it is neither copy nor correct", i + 1))?;
        let entry = by_question.entry(r.question.as_str()).or_default();
        if is_copy {
            entry.0.push(i)
        } else {
            entry.1.push(i)
        }
    }
    let copies: usize = by_question.values().map(|v| v.0.len()).sum();
    if copies == 0 || copies == records.len() {
        bail!(
            "the stimulus set has only {} cases: LAT needs both copy cases (correction == answer) and correct cases",
            if copies == 0 { "correct" } else { "copy" }
        );
    }
    let mut pairs: Vec<ContrastPair> = by_question
        .values()
        .flat_map(|(copy, correct)| {
            copy.iter()
                .zip(correct)
                .map(|(&a, &b)| ContrastPair { copy: a, correct: b })
        })
        .collect();
    pairs.sort_by_key(|p| p.copy.min(p.correct));
    if pairs.is_empty() {
        bail!("no copy/correct pairs can be built: no question has both a copy record and a correct record");
    }
    // A pair whose two prompts are the same text holds no contrast, only contradictory labels;
    // a set of them would fit a zero vector.
    if let Some(p) = pairs
        .iter()
        .find(|p| records[p.copy].answer == records[p.correct].answer)
    {
        bail!(
            "records {} and {} have the same question and answer, yet one is a copy case and the other a correct case: \
             their prompts are identical, so the pair has nothing for LAT to read",
            p.copy.min(p.correct) + 1,
            p.copy.max(p.correct) + 1
        );
    }
    Ok(pairs)
}
