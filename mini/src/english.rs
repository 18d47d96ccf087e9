//! The corpus in written English, for fine-tuning a pretrained LM (Aligner-135M): the same
//! closed world of facts, harms and corrections as [`crate::corpus`], but sentence-cased with
//! proper nouns, wrapped in free-form openers and closers an upstream model might add, and
//! with longer harmful answers. A pretrained model reads real English, so a corpus of one
//! lowercase template teaches it to rewrite every unfamiliar phrasing into that template;
//! here a good answer in any wrapping must be copied, and the wrapping alone never decides.

use crate::world::{CLOSED_WORLD, PHRASES};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

/// Which corpus to draw: the mini-aligner's lowercase world, or the same world in English.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Style {
    /// Lowercase, one phrasing family per fact: the mini-aligner's training world.
    #[default]
    Lower,
    /// Sentence case and proper nouns, free-form openers and closers, longer answers.
    English,
    /// English, with half of the facts drawn from general knowledge beyond the four closed
    /// families (months, oceans, painters, animals, ...: `notebooks-data/corpus/world-facts.json`), so a model
    /// must judge whether a statement is true rather than whether it is from the closed world.
    Wide,
    /// Wide, with general knowledge from a table of 298 facts (`world-facts.json` and
    /// `more-facts.json` in `notebooks-data/corpus/`) and everyday how-to requests in the helpful and harmless categories (a good recipe is
    /// copied; an evasion is answered with one), so that neither an unfamiliar fact nor a
    /// request for steps is by itself a reason to rewrite.
    Broad,
}

impl Style {
    /// Written English (sentence case, openers and closers), as opposed to the lowercase world.
    pub fn is_english(self) -> bool {
        matches!(self, Style::English | Style::Wide | Style::Broad)
    }
}

/// A right or wrong statement wrapped as an upstream model might phrase it (the English openers
/// and closers of `phrases.json`, none of which opens like a correction). Applied to good and
/// bad answers alike, so the wrapping carries no signal of which one needs fixing.
pub fn wrap(rng: &mut StdRng, statement: String) -> String {
    let mut text = statement;
    if rng.gen_bool(0.3) {
        text = format!("{}{text}", PHRASES.english_openers.choose(rng).expect("non-empty"));
    }
    if rng.gen_bool(0.3) {
        text.push_str(PHRASES.english_closers.choose(rng).expect("non-empty"));
    }
    text
}

/// A harmful answer of one or two steps, after `opener` if there is one: longer answers must
/// be refused as a whole.
pub fn harmful_steps(rng: &mut StdRng, opener: Option<&str>, steps: &[&str]) -> String {
    let mut chosen: Vec<&str> = steps.to_vec();
    chosen.shuffle(rng);
    let body = if rng.gen_bool(0.5) && chosen.len() > 1 {
        format!("{}. then {}.", chosen[0], chosen[1])
    } else {
        format!("{}.", chosen[0])
    };
    match opener {
        Some(opener) => format!("{opener} {body}"),
        None => body,
    }
}

/// Good refusals beyond the lowercase world's two: copied, never opening like a correction.
pub fn good_refusal(rng: &mut StdRng, topic: &str, alternative: &str) -> String {
    match rng.gen_range(0..4) {
        0 => format!("i will not help with {topic}. {alternative}"),
        1 => format!("no, i will not explain that. {alternative}"),
        2 => format!("i can't assist with {topic}, but here is an idea: {alternative}"),
        _ => format!("that is not something i will help with. {alternative}"),
    }
}

/// Sentence case: the first letter of each sentence, the pronoun "i", and the names of
/// countries and cities are capitalised.
pub fn sentence_case(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut sentence_start = true;
    for (k, word) in text.split(' ').enumerate() {
        if k > 0 {
            out.push(' ');
        }
        let core = word.trim_end_matches(|c: char| !c.is_alphanumeric());
        let capitalise = sentence_start || core == "i" || core.starts_with("i'") || is_proper_noun(core);
        if capitalise {
            let mut chars = word.chars();
            if let Some(first) = chars.next() {
                out.extend(first.to_uppercase());
                out.push_str(chars.as_str());
            }
        } else {
            out.push_str(word);
        }
        // "..." ends a cut-off answer, not a sentence followed by more text.
        sentence_start = !word.is_empty()
            && (word.ends_with('.') || word.ends_with('?') || word.ends_with('!'))
            && !word.ends_with("...");
    }
    out
}

fn is_proper_noun(word: &str) -> bool {
    CLOSED_WORLD
        .capitals
        .iter()
        .any(|c| word == c.country || word == c.city)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentence_case_capitalises_sentences_names_and_i() {
        assert_eq!(
            sentence_case("actually, the capital of italy is rome."),
            "Actually, the capital of Italy is Rome."
        );
        assert_eq!(
            sentence_case("good question! i believe it is blue. i hope this helps."),
            "Good question! I believe it is blue. I hope this helps."
        );
        assert_eq!(sentence_case("i can't assist with that"), "I can't assist with that");
        assert_eq!(sentence_case("the capital of peru is..."), "The capital of Peru is...");
    }
}
