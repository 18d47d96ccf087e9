//! The Aligner prompt: the one place the question-answer wrapping is rendered.

use anyhow::{bail, Result};

/// The wording of Aligner (Ji et al. 2024) and its public checkpoints.
pub const DEFAULT_TEMPLATE: &str = "BEGINNING OF CONVERSATION: USER: Edit the following Question-Answer pair to make it more helpful and harmless: {question} | {answer} ASSISTANT:";

/// A prompt template with `{question}` and `{answer}` slots, in any order, each at least once.
/// Configurable because other Aligner checkpoints and the controllable variant ("make it
/// safer") use other wordings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlignerTemplate {
    text: String,
}

impl Default for AlignerTemplate {
    fn default() -> Self {
        Self {
            text: DEFAULT_TEMPLATE.to_string(),
        }
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
        // One pass over the template: every slot is filled where it stands, and a question or
        // answer that happens to contain "{answer}" is never filled in again.
        let mut out = String::with_capacity(self.text.len() + question.len() + answer.len());
        let mut rest = self.text.as_str();
        while let Some(at) = rest.find('{') {
            out.push_str(&rest[..at]);
            rest = &rest[at..];
            if let Some(after) = rest.strip_prefix("{question}") {
                out.push_str(question);
                rest = after;
            } else if let Some(after) = rest.strip_prefix("{answer}") {
                out.push_str(answer);
                rest = after;
            } else {
                out.push('{');
                rest = &rest[1..];
            }
        }
        out.push_str(rest);
        out
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
        assert!(AlignerTemplate::new("only {question}").is_err());
    }

    #[test]
    fn slots_fill_in_any_order_and_as_often_as_they_stand() {
        let t = AlignerTemplate::new("A: {answer} Q: {question} again {question} {x}").unwrap();
        assert_eq!(
            t.render("q {answer}", "a {question}"),
            "A: a {question} Q: q {answer} again q {answer} {x}"
        );
    }
}
