//! LAT (Linear Artificial Tomography, Zou et al. 2023, "Representation Engineering"): find,
//! at each layer, the direction that separates the model's state when it is about to copy an
//! answer from its state when it is about to correct one (Aligner, Ji et al. 2024, Sec. 5).
//!
//! Stimuli are contrast pairs sharing a question: one record whose answer is already good
//! (copy) and one whose answer needs fixing (correct). A [`ReadingVector`] per layer is a unit
//! direction with the sign fixed so that a positive projection means "correct", plus the
//! spread of projections along it, so steering coefficients are comparable across layers.

mod eigen;
mod fit;
mod pairs;
mod read;
mod scan;

pub use fit::{fit, split_pairs, LatResult, ReadingVector};
pub use pairs::{build_pairs, ContrastPair};
pub use read::{answer_span, read_activation_shards, read_activations, write_activation_shard};
pub use scan::{correction_activity, scan, scan_many, CorrectionActivity, LatScan, ScanDirection, MAX_HEATMAP_TOKENS};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum LatMethod {
    /// RepE's LAT: first principal component of (randomly ordered, recentred) pair differences.
    Pca,
    /// Difference of the class means, correct minus copy.
    MeanDiff,
}

impl LatMethod {
    pub fn name(self) -> &'static str {
        match self {
            Self::Pca => "pca",
            Self::MeanDiff => "mean-diff",
        }
    }
}

/// Which token's activation stands for a stimulus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum ReadPosition {
    /// The last prompt token (`ASSISTANT:`), where the copy-or-correct decision is taken.
    Last,
    /// The mean over the upstream answer's tokens.
    AnswerMean,
}

impl ReadPosition {
    pub fn name(self) -> &'static str {
        match self {
            Self::Last => "last",
            Self::AnswerMean => "answer-mean",
        }
    }
}
