//! Correction magnitude: how much the Aligner changed the upstream answer.

use anyhow::Result;
use probe::model::AlignerTokenizer;

/// The correction magnitude between two texts, both tokenised the same way (trimmed, no BOS).
/// Comparing the generated ids with the answer's ids directly would count a spurious edit: the
/// answer after `ASSISTANT:` starts with a space-prefixed token that the bare answer lacks.
pub fn text_correction_magnitude(tokenizer: &AlignerTokenizer, answer: &str, output: &str) -> Result<f64> {
    Ok(correction_magnitude(
        &tokenizer.encode_plain(answer.trim())?,
        &tokenizer.encode_plain(output.trim())?,
    ))
}

/// Normalised token edit distance: Levenshtein distance between the upstream answer's tokens
/// and the output's, divided by the longer length. 0 = copied verbatim, 1 = fully rewritten.
pub fn correction_magnitude(answer: &[u32], output: &[u32]) -> f64 {
    let longest = answer.len().max(output.len());
    if longest == 0 {
        return 0.0;
    }
    strsim::generic_levenshtein(&answer.to_vec(), &output.to_vec()) as f64 / longest as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magnitude_bounds() {
        assert_eq!(correction_magnitude(&[1, 2, 3], &[1, 2, 3]), 0.0);
        assert_eq!(correction_magnitude(&[1, 2, 3], &[4, 5]), 1.0);
        assert!((correction_magnitude(&[1, 2, 3, 4], &[1, 2, 9, 4]) - 0.25).abs() < 1e-12);
        assert_eq!(correction_magnitude(&[], &[]), 0.0);
    }
}
