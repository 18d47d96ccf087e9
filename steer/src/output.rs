//! What the Aligner wrote for one record: the unit that generation returns, journals keep
//! and outcomes are measured on.

/// What the Aligner wrote for one record.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AlignerOutput {
    /// The decoded text, trimmed.
    pub text: String,
    /// The generated ids (no final EOS).
    pub ids: Vec<u32>,
    /// Whether generation stopped at EOS (false: it ran out of `max_new_tokens`).
    pub stopped: bool,
}
