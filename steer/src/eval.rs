//! Evaluating an Aligner on stimulus records: does it copy good answers and produce the
//! expected correction for bad ones?

use crate::generate::{run_aligner_many, GenerationConfig};
use crate::outcome::{ClassTally, Outcome};
use anyhow::{Context, Result};
use probe::hooks::NoHooks;
use probe::shard::ShardInfo;
use probe::stimuli::StimulusRecord;
use probe::{AlignerTemplate, Checkpoint};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

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
    /// Share of outputs that are empty, loop, or never stop.
    pub degenerate_rate: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    #[serde(flatten)]
    pub overall: EvalScores,
    pub per_category: BTreeMap<String, EvalScores>,
    /// A few outputs that missed, for reading.
    pub misses: Vec<serde_json::Value>,
    /// Where this report comes from (set by the command that writes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<probe::provenance::Provenance>,
    /// Every record's outcome and output, in record order: journaled in a shard's output (see
    /// [`EvalShard`]), where `alens merge` recomputes the scores from them; written per
    /// record by [`outputs_jsonl`](Self::outputs_jsonl).
    #[serde(skip)]
    pub outcomes: Vec<RecordOutcome>,
    /// Set on a shard's output only.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub shard: Option<EvalShard>,
}

/// One record's outcome with what the scores group it by, and its output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordOutcome {
    pub category: String,
    pub output: String,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// What a shard's eval output adds: which shard it is, and every record's outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalShard {
    pub shard: ShardInfo,
    pub outcomes: Vec<RecordOutcome>,
}

/// The most misses a report keeps.
const MAX_MISSES: usize = 10;

impl EvalScores {
    fn from_tally(t: &ClassTally) -> Self {
        let (copy, correct) = (t.copy_cases.rates(), t.correct_cases.rates());
        let n = copy.n + correct.n;
        let magnitude = t.copy_cases.magnitude_sum + t.correct_cases.magnitude_sum;
        Self {
            n,
            n_copy: copy.n,
            n_correct: correct.n,
            copy_exact: copy.exact_rate,
            correct_exact: correct.exact_rate,
            mean_correction_magnitude: if n == 0 { 0.0 } else { magnitude / n as f64 },
            degenerate_rate: if n == 0 {
                0.0
            } else {
                (t.copy_cases.degenerate + t.correct_cases.degenerate) as f64 / n as f64
            },
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
    journal: Option<&mut crate::journal::Journal>,
) -> Result<EvalReport> {
    let tokenizer = ckpt.tokenizer()?;
    let config = GenerationConfig::greedy(max_new_tokens, ckpt.eos_token_ids.clone());
    let references: Vec<&str> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            r.correction
                .as_deref()
                .with_context(|| format!("record {} has no correction to evaluate against", i + 1))
        })
        .collect::<Result<_>>()?;
    let pairs: Vec<(&str, &str)> = records
        .iter()
        .map(|r| (r.question.as_str(), r.answer.as_str()))
        .collect();
    let progress = probe::progress::bar(records.len() as u64, "eval");
    let outputs = run_aligner_many(
        ckpt,
        template,
        &pairs,
        &config,
        batch_size,
        &mut NoHooks,
        &mut |n| progress.inc(n as u64),
        journal.map(|j| (j, "eval".to_string())),
    )?;
    progress.finish_and_clear();

    let mut outcomes = Vec::with_capacity(outputs.len());
    let mut misses = Vec::new();
    for ((record, reference), output) in records.iter().zip(references).zip(outputs) {
        let outcome = Outcome::of(tokenizer, record, &output)?;
        let category = record.category.clone().unwrap_or_else(|| "uncategorised".into());
        if !outcome.exact && misses.len() < MAX_MISSES {
            misses.push(serde_json::json!({"question": record.question, "answer": record.answer,
                                           "expected": reference, "output": output.text}));
        }
        outcomes.push(RecordOutcome {
            category,
            output: output.text,
            outcome,
        });
    }
    Ok(EvalReport::of_outcomes(outcomes, misses))
}

impl EvalReport {
    /// The scores of `outcomes`, tallied in record order (so a merge of shards adds the same
    /// numbers in the same order as one run).
    fn of_outcomes(outcomes: Vec<RecordOutcome>, misses: Vec<serde_json::Value>) -> Self {
        let mut overall = ClassTally::default();
        let mut per_category: BTreeMap<String, ClassTally> = BTreeMap::new();
        for o in &outcomes {
            overall.add(&o.outcome);
            per_category.entry(o.category.clone()).or_default().add(&o.outcome);
        }
        EvalReport {
            overall: EvalScores::from_tally(&overall),
            per_category: per_category
                .iter()
                .map(|(k, t)| (k.clone(), EvalScores::from_tally(t)))
                .collect(),
            misses,
            provenance: None,
            outcomes,
            shard: None,
        }
    }

    /// `records` (those evaluated, in order) one JSON line each, with the record's `output`
    /// and whether it was `exact`: what `eval --outputs` writes.
    pub fn outputs_jsonl(&self, records: &[StimulusRecord]) -> Result<Vec<u8>> {
        anyhow::ensure!(
            records.len() == self.outcomes.len(),
            "{} records for {} outputs",
            records.len(),
            self.outcomes.len()
        );
        let mut lines = Vec::new();
        for (record, o) in records.iter().zip(&self.outcomes) {
            let mut row = serde_json::to_value(record)?;
            row["output"] = o.output.as_str().into();
            row["exact"] = o.outcome.exact.into();
            lines.extend(serde_json::to_vec(&row)?);
            lines.push(b'\n');
        }
        Ok(lines)
    }

    /// Joins eval shard outputs (any order) into the report the unsharded run writes, with the
    /// shards listed in its provenance. A shard's misses are its first ones, so the run's first
    /// misses are among theirs.
    pub fn merge_shards(shards: &[PathBuf]) -> Result<Self> {
        #[derive(Deserialize)]
        struct Stored {
            misses: Vec<serde_json::Value>,
            provenance: probe::provenance::Provenance,
            outcomes: Vec<RecordOutcome>,
        }
        let mut set = Vec::new();
        let mut stored = Vec::new();
        for path in shards {
            let (value, info) = probe::shard::read_json_shard(path)?;
            anyhow::ensure!(
                info.kind == "eval",
                "{} is a {} shard, not an eval shard",
                path.display(),
                info.kind
            );
            let s: Stored = serde_json::from_value(value)
                .with_context(|| format!("{} is not an eval shard output", path.display()))?;
            anyhow::ensure!(
                s.outcomes.len() == info.records,
                "{} journals {} outcomes for {} records",
                path.display(),
                s.outcomes.len(),
                info.records
            );
            set.push((path.clone(), info));
            stored.push((path.clone(), s));
        }
        let set = probe::shard::check_set(set)?;
        let mut outcomes = Vec::new();
        let mut misses = Vec::new();
        let mut provenance = None;
        for (path, _) in &set {
            let (_, s) = stored.iter_mut().find(|(p, _)| p == path).expect("checked");
            outcomes.append(&mut s.outcomes);
            misses.append(&mut s.misses);
            provenance.get_or_insert_with(|| s.provenance.clone());
        }
        misses.truncate(MAX_MISSES);
        let mut provenance = provenance.expect("at least one shard");
        provenance.shards = probe::shard::shard_list(&set);
        let mut report = Self::of_outcomes(outcomes, misses);
        report.provenance = Some(provenance);
        Ok(report)
    }
}
