//! Correction magnitude: how much the Aligner changed the upstream answer.

use anyhow::Result;
use probe::model::AlignerTokenizer;

/// The correction magnitude between two texts, both tokenised the same way (trimmed, no BOS).
/// Comparing the generated ids with the answer's ids directly would count a spurious edit: the
/// answer after `ASSISTANT:` starts with a space-prefixed token that the bare answer lacks.
pub fn text_correction_magnitude(tokenizer: &AlignerTokenizer, answer: &str, output: &str) -> Result<f64> {
    Ok(correction_magnitude(&tokenizer.encode_plain(answer.trim())?, &tokenizer.encode_plain(output.trim())?))
}

/// Normalised token edit distance: Levenshtein distance between the upstream answer's tokens
/// and the output's, divided by the longer length. 0 = copied verbatim, 1 = fully rewritten.
pub fn correction_magnitude(answer: &[u32], output: &[u32]) -> f64 {
    let longest = answer.len().max(output.len());
    if longest == 0 {
        return 0.0;
    }
    levenshtein(answer, output) as f64 / longest as f64
}

fn levenshtein<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut row = vec![0; b.len() + 1];
    for (i, x) in a.iter().enumerate() {
        row[0] = i + 1;
        for (j, y) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(x != y);
            row[j + 1] = substitute.min(prev[j + 1] + 1).min(row[j] + 1);
        }
        std::mem::swap(&mut prev, &mut row);
    }
    prev[b.len()]
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
