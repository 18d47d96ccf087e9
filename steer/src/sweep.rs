//! Correction magnitude as a function of the knob: for each alpha, steer every record and
//! measure how far the output moved from the upstream answer, separately for copy cases and
//! correct cases (the paper's "from copying to heavy correction" curve).

use crate::generate::{correct_many, GenerationConfig};
use crate::magnitude::text_correction_magnitude;
use crate::steering::SteeringHook;
use anyhow::{bail, Result};
use probe::stimuli::StimulusRecord;
use probe::{AlignerTemplate, Checkpoint};
use serde::Serialize;

/// Per-alpha rates for one class of records; every list is aligned with the sweep's alphas.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SweepCurve {
    pub n: usize,
    /// Mean normalised token edit distance, upstream answer -> output.
    pub correction_magnitude: Vec<f64>,
    /// Share of outputs that are the upstream answer verbatim.
    pub copy_rate: Vec<f64>,
    /// Share of outputs equal to the reference correction.
    pub exact_correction_rate: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SweepResult {
    pub alphas: Vec<f64>,
    pub layers: Vec<usize>,
    pub copy_cases: SweepCurve,
    pub correct_cases: SweepCurve,
    /// One example output per alpha (the first correct case), for reading.
    pub examples: Vec<serde_json::Value>,
}

/// Parses `-8:8:2` (start:stop:step, inclusive) or a list `-4,0,4`.
pub fn parse_alphas(spec: &str) -> Result<Vec<f64>> {
    let parse = |s: &str| -> Result<f64> {
        let v: f64 = s.trim().parse().map_err(|_| anyhow::anyhow!("bad alpha {s:?} in {spec:?}"))?;
        if !v.is_finite() {
            bail!("alpha must be finite, got {s:?}");
        }
        Ok(v)
    };
    let alphas = if spec.contains(':') {
        let parts: Vec<&str> = spec.split(':').collect();
        let [start, stop, step] = parts.as_slice() else {
            bail!("--alphas range must be start:stop:step, got {spec:?}");
        };
        let (start, stop, step) = (parse(start)?, parse(stop)?, parse(step)?);
        if step <= 0.0 || stop < start {
            bail!("--alphas {spec:?}: need start <= stop and a positive step");
        }
        let n = ((stop - start) / step + 1e-9).floor() as usize + 1;
        if n > 1000 {
            bail!("--alphas {spec:?} gives {n} values; at most 1000");
        }
        (0..n).map(|k| start + k as f64 * step).collect()
    } else {
        spec.split(',').map(parse).collect::<Result<Vec<_>>>()?
    };
    if alphas.is_empty() {
        bail!("--alphas {spec:?} selects no value");
    }
    Ok(alphas)
}

/// Runs the sweep. `make_hook(alpha)` builds the steering hook for one strength.
pub fn sweep(
    ckpt: &Checkpoint,
    template: &AlignerTemplate,
    records: &[StimulusRecord],
    alphas: &[f64],
    layers: &[usize],
    config: &GenerationConfig,
    batch_size: usize,
    make_hook: &dyn Fn(f64) -> Result<SteeringHook>,
) -> Result<SweepResult> {
    let tokenizer = ckpt.tokenizer()?;
    let classified: Vec<(&StimulusRecord, bool)> = records
        .iter()
        .enumerate()
        .map(|(i, r)| r.is_copy().map(|c| (r, c)).ok_or_else(|| anyhow::anyhow!("record {} has no correction", i + 1)))
        .collect::<Result<_>>()?;
    let n_copy = classified.iter().filter(|(_, c)| *c).count();
    let mut copy_cases = SweepCurve { n: n_copy, ..Default::default() };
    let mut correct_cases = SweepCurve { n: records.len() - n_copy, ..Default::default() };
    let mut examples = Vec::new();
    let pairs: Vec<(&str, &str)> = records.iter().map(|r| (r.question.as_str(), r.answer.as_str())).collect();
    let progress = probe::progress::bar((alphas.len() * records.len()) as u64, "sweep");
    for &alpha in alphas {
        let outputs = correct_many(ckpt, template, &pairs, config, batch_size, &mut || Ok(Box::new(make_hook(alpha)?)), &mut |n| {
            progress.inc(n as u64)
        })?;
        // [copy, correct] x (magnitude sum, copies, exact corrections)
        let mut sums = [[0.0f64; 3]; 2];
        let mut example = None;
        for ((record, is_copy), output) in classified.iter().zip(outputs) {
            let class = &mut sums[usize::from(!is_copy)];
            class[0] += text_correction_magnitude(&tokenizer, &record.answer, &output)?;
            class[1] += f64::from(output == record.answer.trim());
            class[2] += f64::from(Some(output.as_str()) == record.correction.as_deref().map(str::trim));
            if !is_copy && example.is_none() {
                example = Some(serde_json::json!({"alpha": alpha, "question": record.question, "answer": record.answer, "output": output}));
            }
        }
        for (curve, class) in [(&mut copy_cases, sums[0]), (&mut correct_cases, sums[1])] {
            let n = curve.n.max(1) as f64;
            curve.correction_magnitude.push(class[0] / n);
            curve.copy_rate.push(class[1] / n);
            curve.exact_correction_rate.push(class[2] / n);
        }
        examples.extend(example);
    }
    progress.finish_and_clear();
    Ok(SweepResult { alphas: alphas.to_vec(), layers: layers.to_vec(), copy_cases, correct_cases, examples })
}

impl SweepResult {
    /// One row per alpha: alpha, then magnitude / copy rate / exact correction for each class.
    pub fn to_csv(&self) -> String {
        let mut out = String::from("alpha,copy_cases_correction_magnitude,copy_cases_copy_rate,copy_cases_exact_correction_rate,correct_cases_correction_magnitude,correct_cases_copy_rate,correct_cases_exact_correction_rate\n");
        for (k, a) in self.alphas.iter().enumerate() {
            let c = &self.copy_cases;
            let r = &self.correct_cases;
            out.push_str(&format!(
                "{a},{},{},{},{},{},{}\n",
                c.correction_magnitude[k], c.copy_rate[k], c.exact_correction_rate[k],
                r.correction_magnitude[k], r.copy_rate[k], r.exact_correction_rate[k]
            ));
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
    }
}
