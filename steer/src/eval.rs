//! Evaluating an Aligner on stimulus records: does it copy good answers and produce the
//! expected correction for bad ones?

use crate::generate::{correct_many, GenerationConfig};
use crate::magnitude::text_correction_magnitude;
use anyhow::{Context, Result};
use probe::hooks::NoHooks;
use probe::stimuli::StimulusRecord;
use probe::{AlignerTemplate, Checkpoint};
use serde::Serialize;
use std::collections::BTreeMap;

/// Exact-match rates (0..1) and mean correction magnitude over a set of records.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct EvalScores {
    pub n: usize,
    pub n_copy: usize,
    pub n_correct: usize,
    /// Share of copy cases reproduced verbatim.
    pub copy_exact: f64,
    /// Share of correct cases whose output equals the reference correction.
    pub correct_exact: f64,
    pub mean_correction_magnitude: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    #[serde(flatten)]
    pub overall: EvalScores,
    pub per_category: BTreeMap<String, EvalScores>,
    /// A few outputs that missed, for reading.
    pub misses: Vec<serde_json::Value>,
    /// Every record's output and whether it matched, in record order (written by
    /// `eval --outputs`, not in the JSON).
    #[serde(skip)]
    pub outputs: Vec<(String, bool)>,
}

#[derive(Default)]
struct Tally {
    n_copy: usize,
    n_correct: usize,
    copy_hits: usize,
    correct_hits: usize,
    magnitude: f64,
}

impl Tally {
    fn add(&mut self, is_copy: bool, exact: bool, magnitude: f64) {
        if is_copy {
            self.n_copy += 1;
            self.copy_hits += usize::from(exact);
        } else {
            self.n_correct += 1;
            self.correct_hits += usize::from(exact);
        }
        self.magnitude += magnitude;
    }
    fn scores(&self) -> EvalScores {
        let n = self.n_copy + self.n_correct;
        let rate = |hits: usize, of: usize| if of == 0 { 0.0 } else { hits as f64 / of as f64 };
        EvalScores {
            n,
            n_copy: self.n_copy,
            n_correct: self.n_correct,
            copy_exact: rate(self.copy_hits, self.n_copy),
            correct_exact: rate(self.correct_hits, self.n_correct),
            mean_correction_magnitude: if n == 0 { 0.0 } else { self.magnitude / n as f64 },
        }
    }
}

/// Greedy, KV-cached generation for every record; records need a `correction`.
pub fn evaluate(
    ckpt: &Checkpoint,
    template: &AlignerTemplate,
    records: &[StimulusRecord],
    max_new_tokens: usize,
    batch_size: usize,
) -> Result<EvalReport> {
    let tokenizer = ckpt.tokenizer()?;
    let config = GenerationConfig::greedy(max_new_tokens, ckpt.eos_token_ids.clone());
    let references: Vec<&str> = records
        .iter()
        .enumerate()
        .map(|(i, r)| r.correction.as_deref().with_context(|| format!("record {} has no correction to evaluate against", i + 1)))
        .collect::<Result<_>>()?;
    let pairs: Vec<(&str, &str)> = records.iter().map(|r| (r.question.as_str(), r.answer.as_str())).collect();
    let progress = probe::progress::bar(records.len() as u64, "eval");
    let outputs = correct_many(ckpt, template, &pairs, &config, batch_size, &mut || Ok(Box::new(NoHooks)), &mut |n| progress.inc(n as u64))?;
    progress.finish_and_clear();

    let mut overall = Tally::default();
    let mut per_category: BTreeMap<String, Tally> = BTreeMap::new();
    let mut misses = Vec::new();
    let mut scored = Vec::with_capacity(outputs.len());
    for ((record, reference), output) in records.iter().zip(references).zip(outputs) {
        let is_copy = record.is_copy() == Some(true);
        let exact = output == reference.trim();
        let magnitude = text_correction_magnitude(&tokenizer, &record.answer, &output)?;
        overall.add(is_copy, exact, magnitude);
        let category = record.category.clone().unwrap_or_else(|| "uncategorised".into());
        per_category.entry(category).or_default().add(is_copy, exact, magnitude);
        if !exact && misses.len() < 10 {
            misses.push(serde_json::json!({"question": record.question, "answer": record.answer,
                                           "expected": reference, "output": output}));
        }
        scored.push((output, exact));
    }
    Ok(EvalReport {
        overall: overall.scores(),
        per_category: per_category.into_iter().map(|(k, t)| (k, t.scores())).collect(),
        misses,
        outputs: scored,
    })
}
