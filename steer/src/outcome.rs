//! How an Aligner output compares with its record, and the one tally every report counts
//! with (eval per category, sweep per alpha and class).

use crate::magnitude::text_correction_magnitude;
use crate::output::AlignerOutput;
use anyhow::Result;
use probe::model::AlignerTokenizer;
use probe::stimuli::StimulusRecord;
use serde::{Deserialize, Serialize};

/// One record's outcome. Serialised as a shard's journal entry, whence a merge recomputes
/// every rate (the magnitude as its bits, so the merged means are exact).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The record is a copy case (its correction is its answer).
    pub copy_case: bool,
    /// The output is the upstream answer verbatim.
    pub copied: bool,
    /// The output is the reference correction (for a copy case: the answer).
    pub exact: bool,
    /// Normalised token edit distance, answer -> output.
    #[serde(with = "probe::shard::exact_f64")]
    pub magnitude: f64,
    /// Empty, looping, or never stopped (see [`is_degenerate`]).
    pub degenerate: bool,
}

impl Outcome {
    pub fn of(tokenizer: &AlignerTokenizer, record: &StimulusRecord, output: &AlignerOutput) -> Result<Self> {
        let text = output.text.as_str();
        let reference = record.correction.as_deref().map(str::trim);
        Ok(Self {
            copy_case: record.is_copy() == Some(true),
            copied: text == record.answer.trim(),
            exact: Some(text) == reference,
            magnitude: text_correction_magnitude(tokenizer, &record.answer, text)?,
            degenerate: is_degenerate(output),
        })
    }
}

/// Degenerate output: empty, one token repeated 4 times in a row, an n-gram (n = 2..=4)
/// repeated 3 times in a row, or no EOS within the budget.
pub fn is_degenerate(output: &AlignerOutput) -> bool {
    let ids = &output.ids;
    if output.text.is_empty() || !output.stopped {
        return true;
    }
    if ids.windows(4).any(|w| w.iter().all(|&t| t == w[0])) {
        return true;
    }
    (2..=4).any(|n| {
        ids.windows(3 * n)
            .any(|w| w[..n] == w[n..2 * n] && w[n..2 * n] == w[2 * n..])
    })
}

/// Counts of outcomes; rates come out of it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tally {
    pub n: usize,
    pub copied: usize,
    pub exact: usize,
    pub degenerate: usize,
    pub magnitude_sum: f64,
}

impl Tally {
    pub fn add(&mut self, o: &Outcome) {
        self.n += 1;
        self.copied += usize::from(o.copied);
        self.exact += usize::from(o.exact);
        self.degenerate += usize::from(o.degenerate);
        self.magnitude_sum += o.magnitude;
    }

    fn rate(&self, count: usize) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            count as f64 / self.n as f64
        }
    }

    pub fn rates(&self) -> Rates {
        Rates {
            n: self.n,
            copy_rate: self.rate(self.copied),
            exact_rate: self.rate(self.exact),
            degenerate_rate: self.rate(self.degenerate),
            mean_correction_magnitude: if self.n == 0 {
                0.0
            } else {
                self.magnitude_sum / self.n as f64
            },
        }
    }
}

/// A tally as rates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Rates {
    pub n: usize,
    pub copy_rate: f64,
    pub exact_rate: f64,
    pub degenerate_rate: f64,
    pub mean_correction_magnitude: f64,
}

/// Tallies for copy cases and correct cases apart.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClassTally {
    pub copy_cases: Tally,
    pub correct_cases: Tally,
}

impl ClassTally {
    pub fn add(&mut self, o: &Outcome) {
        if o.copy_case {
            self.copy_cases.add(o);
        } else {
            self.correct_cases.add(o);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(ids: &[u32], stopped: bool) -> AlignerOutput {
        AlignerOutput {
            text: "x".into(),
            ids: ids.to_vec(),
            stopped,
        }
    }

    #[test]
    fn degenerate_outputs() {
        assert!(!is_degenerate(&out(&[1, 2, 3, 1, 2, 4], true)));
        assert!(is_degenerate(&out(&[5, 5, 5, 5], true)), "one token four times");
        assert!(
            is_degenerate(&out(&[9, 1, 2, 1, 2, 1, 2], true)),
            "a bigram three times"
        );
        assert!(is_degenerate(&out(&[1, 2, 3], false)), "no EOS within the budget");
        assert!(is_degenerate(&AlignerOutput {
            text: String::new(),
            ids: vec![],
            stopped: true
        }));
    }
}
