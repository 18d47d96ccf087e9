//! Correction magnitude as a function of the knob: for each alpha, steer every record and
//! measure how far the output moved from the upstream answer, separately for copy cases and
//! correct cases (the paper's "from copying to heavy correction" curve).

use crate::generate::{run_aligner_many, GenerationConfig};
use crate::outcome::{ClassTally, Outcome, Tally};
use crate::steering::{SteerMode, SteerPositions, Steering};
use anyhow::{bail, Result};
use probe::stimuli::StimulusRecord;
use probe::{AlignerTemplate, Checkpoint};
use serde::{Deserialize, Serialize};

/// Per-alpha rates for one class of records; every list is aligned with the sweep's alphas.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SweepCurve {
    pub n: usize,
    /// Mean normalised token edit distance, upstream answer -> output.
    pub correction_magnitude: Vec<f64>,
    /// Share of outputs that are the upstream answer verbatim.
    pub copy_rate: Vec<f64>,
    /// Share of outputs equal to the reference correction.
    pub exact_correction_rate: Vec<f64>,
    /// Share of outputs that are empty, loop, or never stop.
    pub degenerate_rate: Vec<f64>,
}

impl SweepCurve {
    fn push(&mut self, t: &Tally) {
        let r = t.rates();
        self.n = r.n;
        self.correction_magnitude.push(r.mean_correction_magnitude);
        self.copy_rate.push(r.copy_rate);
        self.exact_correction_rate.push(r.exact_rate);
        self.degenerate_rate.push(r.degenerate_rate);
    }
}

/// How a sweep runs: the strengths, and generation settings.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    pub alphas: Vec<f64>,
    pub generation: GenerationConfig,
    /// Records generated together (left-padded, one KV cache).
    pub batch_size: usize,
    /// Also sweep a random direction of the same norm per layer, drawn with this seed: a knob
    /// a random vector matches is no knob.
    pub random_control: Option<u64>,
}

/// The same curves for a random direction of the steering vector's norm at every layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RandomControl {
    pub seed: u64,
    pub copy_cases: SweepCurve,
    pub correct_cases: SweepCurve,
    /// Every record's outcome per alpha (see [`SweepResult::outcomes`]).
    #[serde(skip)]
    pub outcomes: Vec<Vec<Outcome>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepResult {
    pub alphas: Vec<f64>,
    pub layers: Vec<usize>,
    /// How the vector was applied, and what alpha = 1 means there.
    #[serde(default = "default_mode")]
    pub steer_mode: SteerMode,
    #[serde(default = "default_positions")]
    pub steer_positions: SteerPositions,
    #[serde(default)]
    pub alpha_unit: String,
    pub copy_cases: SweepCurve,
    pub correct_cases: SweepCurve,
    /// One example output per alpha (the first correct case), for reading.
    pub examples: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random_control: Option<RandomControl>,
    /// Every record's outcome, per alpha then in record order: what the curves are tallied
    /// from, journaled in a shard's output for `alens merge`.
    #[serde(skip)]
    pub outcomes: Vec<Vec<Outcome>>,
}

fn default_mode() -> SteerMode {
    SteerMode::Add
}

fn default_positions() -> SteerPositions {
    SteerPositions::All
}

/// The most alphas one grid may hold, as a range or as a list.
pub const MAX_ALPHAS: usize = 1000;

/// Parses `-8:8:2` (start:stop:step, inclusive) or a list `-4,0,4`.
pub fn parse_alphas(spec: &str) -> Result<Vec<f64>> {
    let parse = |s: &str| -> Result<f64> {
        let v: f64 = s
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("bad alpha {s:?} in {spec:?}"))?;
        crate::steering::check_alpha(v)?;
        Ok(v)
    };
    let alphas = if spec.contains(':') {
        let parts: Vec<&str> = spec.split(':').collect();
        let [start, stop, step] = parts.as_slice() else {
            bail!("an alpha range must be start:stop:step, got {spec:?}");
        };
        let (start, stop, step) = (parse(start)?, parse(stop)?, parse(step)?);
        if step <= 0.0 || stop < start {
            bail!("alpha range {spec:?}: need start <= stop and a positive step");
        }
        let n = ((stop - start) / step + 1e-9).floor() as usize + 1;
        if n > MAX_ALPHAS {
            bail!("alpha range {spec:?} gives {n} values; at most {MAX_ALPHAS}");
        }
        (0..n).map(|k| start + k as f64 * step).collect()
    } else {
        let values: Vec<&str> = spec.split(',').collect();
        if values.len() > MAX_ALPHAS {
            let head: String = spec.chars().take(24).collect();
            bail!(
                "alpha list {head}... gives {} values; at most {MAX_ALPHAS}",
                values.len()
            );
        }
        values.into_iter().map(parse).collect::<Result<Vec<_>>>()?
    };
    if alphas.is_empty() {
        bail!("alphas {spec:?} select no value");
    }
    Ok(alphas)
}

/// Runs the sweep: every record at every alpha of `steering`, and of its random control when
/// asked.
pub fn sweep(
    ckpt: &Checkpoint,
    template: &AlignerTemplate,
    records: &[StimulusRecord],
    steering: &Steering,
    options: &SweepOptions,
    mut journal: Option<&mut crate::journal::Journal>,
) -> Result<SweepResult> {
    if let Some(i) = records.iter().position(|r| r.is_copy().is_none()) {
        bail!("record {} has no correction", i + 1);
    }
    let mut result = sweep_one(
        ckpt,
        template,
        records,
        steering,
        options,
        "sweep",
        journal.as_deref_mut(),
    )?;
    if let Some(seed) = options.random_control {
        let control = sweep_one(
            ckpt,
            template,
            records,
            &steering.random_like(seed)?,
            options,
            "control",
            journal,
        )?;
        result.random_control = Some(RandomControl {
            seed,
            copy_cases: control.copy_cases,
            correct_cases: control.correct_cases,
            outcomes: control.outcomes,
        });
    }
    Ok(result)
}

fn sweep_one(
    ckpt: &Checkpoint,
    template: &AlignerTemplate,
    records: &[StimulusRecord],
    steering: &Steering,
    options: &SweepOptions,
    label: &str,
    mut journal: Option<&mut crate::journal::Journal>,
) -> Result<SweepResult> {
    let tokenizer = ckpt.tokenizer()?;
    let mut outcomes = Vec::with_capacity(options.alphas.len());
    let mut examples = Vec::new();
    let pairs: Vec<(&str, &str)> = records
        .iter()
        .map(|r| (r.question.as_str(), r.answer.as_str()))
        .collect();
    let progress = probe::progress::bar((options.alphas.len() * records.len()) as u64, label);
    for &alpha in &options.alphas {
        let mut hook = steering.at(alpha, ckpt.model.device())?;
        let run = journal.as_deref_mut().map(|j| (j, format!("{label} alpha={alpha}")));
        let outputs = run_aligner_many(
            ckpt,
            template,
            &pairs,
            &options.generation,
            options.batch_size,
            &mut hook,
            &mut |n| progress.inc(n as u64),
            run,
        )?;
        let mut at_alpha = Vec::with_capacity(records.len());
        let mut example = None;
        for (record, output) in records.iter().zip(&outputs) {
            let outcome = Outcome::of(tokenizer, record, output)?;
            at_alpha.push(outcome);
            if !outcome.copy_case && example.is_none() {
                example = Some(
                    serde_json::json!({"alpha": alpha, "question": record.question, "answer": record.answer, "output": output.text}),
                );
            }
        }
        outcomes.push(at_alpha);
        examples.extend(example);
    }
    progress.finish_and_clear();
    let (copy_cases, correct_cases) = curves(&outcomes);
    Ok(SweepResult {
        alphas: options.alphas.clone(),
        layers: steering.layers.clone(),
        steer_mode: steering.mode,
        steer_positions: steering.positions,
        alpha_unit: steering.mode.unit().into(),
        copy_cases,
        correct_cases,
        examples,
        random_control: None,
        outcomes,
    })
}

/// The curves of per-alpha outcomes, tallied in record order (a merge of shards adds the same
/// numbers in the same order as one run).
pub fn curves(outcomes: &[Vec<Outcome>]) -> (SweepCurve, SweepCurve) {
    let mut copy_cases = SweepCurve::default();
    let mut correct_cases = SweepCurve::default();
    for at_alpha in outcomes {
        let mut tally = ClassTally::default();
        for outcome in at_alpha {
            tally.add(outcome);
        }
        copy_cases.push(&tally.copy_cases);
        correct_cases.push(&tally.correct_cases);
    }
    (copy_cases, correct_cases)
}

impl SweepResult {
    /// One row per alpha: alpha, then magnitude / copy rate / exact correction for each class.
    pub fn to_csv(&self) -> String {
        let mut out = String::from("alpha");
        for class in ["copy_cases", "correct_cases"] {
            for column in [
                "correction_magnitude",
                "copy_rate",
                "exact_correction_rate",
                "degenerate_rate",
            ] {
                out.push_str(&format!(",{class}_{column}"));
            }
        }
        out.push('\n');
        for (k, a) in self.alphas.iter().enumerate() {
            out.push_str(&a.to_string());
            for c in [&self.copy_cases, &self.correct_cases] {
                for column in [
                    &c.correction_magnitude,
                    &c.copy_rate,
                    &c.exact_correction_rate,
                    &c.degenerate_rate,
                ] {
                    out.push_str(&format!(",{}", column[k]));
                }
            }
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpha_grids() {
        assert_eq!(parse_alphas("-2:2:1").unwrap(), vec![-2.0, -1.0, 0.0, 1.0, 2.0]);
        assert_eq!(parse_alphas("-4,0,4").unwrap(), vec![-4.0, 0.0, 4.0]);
        assert!(parse_alphas("0:1:0").is_err());
        assert!(parse_alphas("nan").is_err());
        assert!(parse_alphas("inf,1").is_err());
        let many = vec!["0.5"; MAX_ALPHAS + 1].join(",");
        assert!(parse_alphas(&many).unwrap_err().to_string().contains("at most 1000"));
    }
}
