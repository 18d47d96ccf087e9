//! Is a sweep a knob? The checks a steering result must pass before it is called a control of
//! correction: the overall correction magnitude rises with alpha, the lowest alpha makes the
//! model copy bad answers and the highest makes it edit good ones, the text stays sane, and a
//! random direction pushed as hard does much less.

use crate::outcome::Outcome;
use crate::sweep::{RandomControl, SweepCurve, SweepResult};
use anyhow::{Context, Result};
use probe::provenance::Provenance;
use probe::shard::ShardInfo;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A sweep as `alens sweep --json` writes it: the curves, whether they make a knob, and where
/// they come from (the command sets the last two).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepReport {
    #[serde(flatten)]
    pub result: SweepResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<KnobChecks>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
    /// Set on a shard's output only.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<SweepShard>,
}

/// What a shard's sweep output adds: which shard it is, and every record's outcome per alpha
/// (and per alpha of the random control), whence `alens merge` recomputes the curves.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepShard {
    pub shard: ShardInfo,
    pub outcomes: Vec<Vec<Outcome>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_outcomes: Option<Vec<Vec<Outcome>>>,
}

impl SweepReport {
    /// `result` with its checks computed.
    pub fn new(result: SweepResult, provenance: Option<Provenance>) -> Self {
        let checks = KnobChecks::of(&result);
        Self {
            result,
            checks,
            provenance,
            shard: None,
        }
    }

    /// This report as shard `info`'s output: with every record's outcome journaled.
    pub fn as_shard(mut self, info: ShardInfo) -> Self {
        self.shard = Some(SweepShard {
            shard: info,
            outcomes: self.result.outcomes.clone(),
            control_outcomes: self.result.random_control.as_ref().map(|c| c.outcomes.clone()),
        });
        self
    }

    /// Joins sweep shard outputs (any order) into the report the unsharded run writes, with
    /// the shards listed in its provenance.
    pub fn merge_shards(shards: &[PathBuf]) -> Result<Self> {
        let mut set = Vec::new();
        let mut stored = Vec::new();
        for path in shards {
            let (value, info) = probe::shard::read_json_shard(path)?;
            anyhow::ensure!(
                info.kind == "sweep",
                "{} is a {} shard, not a sweep shard",
                path.display(),
                info.kind
            );
            let report: SweepReport = serde_json::from_value(value)
                .with_context(|| format!("{} is not a sweep shard output", path.display()))?;
            let shard = report.shard.as_ref().context("a shard entry")?;
            let alphas = report.result.alphas.len();
            let whole = |o: &Vec<Vec<Outcome>>| o.len() == alphas && o.iter().all(|a| a.len() == info.records);
            anyhow::ensure!(
                whole(&shard.outcomes) && shard.control_outcomes.as_ref().is_none_or(whole),
                "{} does not journal one outcome per record and alpha",
                path.display()
            );
            set.push((path.clone(), info));
            stored.push((path.clone(), report));
        }
        let set = probe::shard::check_set(set)?;
        let ordered: Vec<&SweepReport> = set
            .iter()
            .map(|(path, _)| &stored.iter().find(|(p, _)| p == path).expect("checked").1)
            .collect();
        let first = ordered[0];
        let join = |pick: &dyn Fn(&SweepShard) -> Option<&Vec<Vec<Outcome>>>| -> Option<Vec<Vec<Outcome>>> {
            let mut joined = vec![Vec::new(); first.result.alphas.len()];
            for report in &ordered {
                for (k, at_alpha) in pick(report.shard.as_ref()?)?.iter().enumerate() {
                    joined[k].extend_from_slice(at_alpha);
                }
            }
            Some(joined)
        };
        let outcomes = join(&|s| Some(&s.outcomes)).context("a shard without outcomes")?;
        let (copy_cases, correct_cases) = crate::sweep::curves(&outcomes);
        // Examples are each alpha's first correct case: the first shard that has any has all.
        let examples = ordered
            .iter()
            .map(|r| &r.result.examples)
            .find(|e| !e.is_empty())
            .cloned()
            .unwrap_or_default();
        let random_control = match &first.result.random_control {
            Some(control) => {
                let outcomes =
                    join(&|s| s.control_outcomes.as_ref()).context("a shard without the control's outcomes")?;
                let (copy_cases, correct_cases) = crate::sweep::curves(&outcomes);
                Some(RandomControl {
                    seed: control.seed,
                    copy_cases,
                    correct_cases,
                    outcomes,
                })
            }
            None => None,
        };
        let result = SweepResult {
            copy_cases,
            correct_cases,
            examples,
            random_control,
            outcomes,
            ..first.result.clone()
        };
        let mut provenance = first.provenance.clone();
        if let Some(p) = provenance.as_mut() {
            p.shards = probe::shard::shard_list(&set);
        }
        Ok(Self::new(result, provenance))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnobChecks {
    /// Mean correction magnitude over all records, per alpha.
    pub magnitude: Vec<f64>,
    /// Whether `magnitude` never falls as alpha rises (0.01 of slack for ties).
    pub non_decreasing: bool,
    /// The magnitude at the lowest alpha over the unsteered one (alpha 0; None without it).
    pub lowest_over_unsteered: Option<f64>,
    /// Share of bad answers (correct cases) copied verbatim at the lowest alpha.
    pub bad_answers_copied_at_lowest: f64,
    /// Share of good answers (copy cases) edited at the highest alpha.
    pub good_answers_edited_at_highest: f64,
    /// The largest degenerate-output rate over the grid.
    pub max_degenerate_rate: f64,
    /// The random control's magnitude range over the knob's (None without a control).
    pub random_range_over_knob_range: Option<f64>,
}

fn overall(copy: &SweepCurve, correct: &SweepCurve, values: impl Fn(&SweepCurve) -> &Vec<f64>) -> Vec<f64> {
    let n = (copy.n + correct.n).max(1) as f64;
    values(copy)
        .iter()
        .zip(values(correct))
        .map(|(a, b)| (a * copy.n as f64 + b * correct.n as f64) / n)
        .collect()
}

fn range(v: &[f64]) -> f64 {
    v.iter().cloned().fold(f64::MIN, f64::max) - v.iter().cloned().fold(f64::MAX, f64::min)
}

impl KnobChecks {
    pub fn of(sweep: &SweepResult) -> Option<Self> {
        // In alpha order, whatever order the grid was given in.
        let mut order: Vec<usize> = (0..sweep.alphas.len()).collect();
        order.sort_by(|&a, &b| sweep.alphas[a].total_cmp(&sweep.alphas[b]));
        let (&lowest, &highest) = (order.first()?, order.last()?);
        let (copy, correct) = (&sweep.copy_cases, &sweep.correct_cases);
        let magnitude_by_index = overall(copy, correct, |c| &c.correction_magnitude);
        let magnitude: Vec<f64> = order.iter().map(|&k| magnitude_by_index[k]).collect();
        let degenerate = overall(copy, correct, |c| &c.degenerate_rate);
        let unsteered = sweep
            .alphas
            .iter()
            .position(|&a| a == 0.0)
            .map(|k| magnitude_by_index[k]);
        let random_range = sweep
            .random_control
            .as_ref()
            .map(|r| range(&overall(&r.copy_cases, &r.correct_cases, |c| &c.correction_magnitude)));
        Some(Self {
            non_decreasing: magnitude.windows(2).all(|w| w[1] >= w[0] - 0.01),
            lowest_over_unsteered: unsteered.filter(|u| *u > 0.0).map(|u| magnitude_by_index[lowest] / u),
            bad_answers_copied_at_lowest: correct.copy_rate[lowest],
            good_answers_edited_at_highest: 1.0 - copy.copy_rate[highest],
            max_degenerate_rate: degenerate.iter().cloned().fold(0.0, f64::max),
            random_range_over_knob_range: random_range.map(|r| r / range(&magnitude).max(1e-12)),
            magnitude,
        })
    }

    /// One line per check, as the sweep command prints them.
    pub fn report(&self) -> String {
        let pct = |x: f64| format!("{:.0}%", 100.0 * x);
        let opt = |x: Option<f64>, f: &dyn Fn(f64) -> String| x.map(f).unwrap_or_else(|| "n/a".into());
        format!(
            "knob checks: magnitude non-decreasing in alpha: {}\n  lowest alpha: {} of bad answers copied, magnitude {} the unsteered\n  \
             highest alpha: {} of good answers edited\n  worst degenerate rate: {}\n  random control's magnitude range: {} the knob's",
            if self.non_decreasing { "yes" } else { "no" },
            pct(self.bad_answers_copied_at_lowest),
            opt(self.lowest_over_unsteered, &|x| format!("{x:.2}x")),
            pct(self.good_answers_edited_at_highest),
            pct(self.max_degenerate_rate),
            opt(self.random_range_over_knob_range, &|x| format!("{x:.2}x")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sweep(copy_magnitude: [f64; 3], correct_magnitude: [f64; 3], control: Option<[f64; 3]>) -> SweepResult {
        let curve = |m: [f64; 3], copy_rate: [f64; 3]| {
            serde_json::json!({"n": 10, "correction_magnitude": m, "copy_rate": copy_rate, "exact_correction_rate": [0.0, 0.0, 0.0],
                               "degenerate_rate": [0.0, 0.1, 0.0]})
        };
        let mut json = serde_json::json!({
            "alphas": [1.0, -1.0, 0.0], "layers": [2], "examples": [],
            "copy_cases": curve(copy_magnitude, [0.2, 1.0, 0.9]),
            "correct_cases": curve(correct_magnitude, [0.0, 0.6, 0.1]),
        });
        if let Some(m) = control {
            json["random_control"] =
                serde_json::json!({"seed": 0, "copy_cases": curve(m, [1.0; 3]), "correct_cases": curve(m, [0.0; 3])});
        }
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn checks_read_the_grid_in_alpha_order() {
        // Alphas given as 1, -1, 0: magnitudes (both classes alike) 0.8, 0.1, 0.4.
        let checks = KnobChecks::of(&sweep([0.8, 0.1, 0.4], [0.8, 0.1, 0.4], Some([0.3, 0.2, 0.25]))).unwrap();
        assert!(checks.non_decreasing);
        assert_eq!(checks.magnitude, vec![0.1, 0.4, 0.8]);
        assert!((checks.lowest_over_unsteered.unwrap() - 0.25).abs() < 1e-12);
        assert_eq!(checks.bad_answers_copied_at_lowest, 0.6);
        assert!((checks.good_answers_edited_at_highest - 0.8).abs() < 1e-12);
        assert_eq!(checks.max_degenerate_rate, 0.1);
        assert!((checks.random_range_over_knob_range.unwrap() - 0.1 / 0.7).abs() < 1e-9);
        let falls = KnobChecks::of(&sweep([0.1, 0.1, 0.4], [0.1, 0.1, 0.4], None)).unwrap();
        assert!(!falls.non_decreasing, "0.1 at alpha 1 after 0.4 at alpha 0");
        assert_eq!(falls.random_range_over_knob_range, None);
    }
}
