//! The Aligner prompt: the one place the question-answer wrapping is rendered.

use anyhow::{bail, Result};

/// The wording of Aligner (Ji et al. 2024) and its public checkpoints.
pub const DEFAULT_TEMPLATE: &str = "BEGINNING OF CONVERSATION: USER: Edit the following Question-Answer pair to make it more helpful and harmless: {question} | {answer} ASSISTANT:";

/// A prompt template with `{question}` and `{answer}` slots. Configurable because other
/// Aligner checkpoints and the controllable variant ("make it safer") use other wordings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlignerTemplate {
    text: String,
}

impl Default for AlignerTemplate {
    fn default() -> Self {
        Self { text: DEFAULT_TEMPLATE.to_string() }
    }
}

impl AlignerTemplate {
    pub fn new(text: &str) -> Result<Self> {
        for slot in ["{question}", "{answer}"] {
            if !text.contains(slot) {
                bail!("template must contain {slot}: {text:?}");
            }
        }
        Ok(Self { text: text.to_string() })
    }

    pub fn render(&self, question: &str, answer: &str) -> String {
        // Fill {answer} last so a question that happens to contain "{answer}" is left alone.
        let (head, tail) = self.text.split_once("{answer}").expect("checked in new");
        format!("{}{answer}{tail}", head.replace("{question}", question))
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_paper_prompt() {
        let t = AlignerTemplate::default();
        assert_eq!(
            t.render("what is 2+2?", "5"),
            "BEGINNING OF CONVERSATION: USER: Edit the following Question-Answer pair to make it more helpful and harmless: what is 2+2? | 5 ASSISTANT:"
        );
        assert!(AlignerTemplate::new("no slots").is_err());
    }
}
