//! How a steering vector is applied: where (which positions) and how (add, or move the
//! projection toward a class mean). Plain settings, recorded in vector sidecars and sweeps.

/// Which positions receive the vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum SteerPositions {
    All,
    /// Only the prompt (the prefill forward).
    Prompt,
    /// Only generated tokens (the decoding forwards).
    Generated,
    /// Only the last prompt token, in the prefill: where the first generated token, and with
    /// it copy or correct, is chosen. The rest of the text follows the model's own path.
    Decision,
}

impl SteerPositions {
    pub fn name(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Prompt => "prompt",
            Self::Generated => "generated",
            Self::Decision => "decision",
        }
    }
}

/// How the vector moves the residual stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum SteerMode {
    /// h += alpha * v (alpha = 1: the file's vector).
    Add,
    /// Move the projection on the unit direction toward a class mean (alpha = +1: the
    /// correct-class mean, -1: the copy-class mean); needs the sidecar's class means.
    Project,
}

impl SteerMode {
    /// The default alpha grid for a sweep in this mode's unit.
    pub fn default_alphas(self) -> Vec<f64> {
        match self {
            Self::Add => (-4..=4).map(|k| 2.0 * k as f64).collect(),
            Self::Project => vec![-3.0, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Add => "add",
            Self::Project => "project",
        }
    }

    /// What alpha = 1 means, as recorded in sidecars and outputs.
    pub fn unit(self) -> &'static str {
        match self {
            Self::Add => "alpha = 1 adds layers.{i} (the unit direction times the std of LAT's training projections)",
            Self::Project => "alpha = +1 / -1 moves the projection on the unit direction to the correct / copy class mean; each unit beyond 1 moves one class gap further; 0 leaves it",
        }
    }
}
