//! The corpus's world: every table the generator draws from, kept as data in
//! `notebooks-data/corpus/` (see its README) and read once, at first use.
//!
//! - `closed-world.json`: the mini-aligner's four fact families (capitals, colours, legs; sums
//!   are computed) and the wrong keys each family offers;
//! - `world-facts.json`: general knowledge beyond those families, for the `wide` style. A model
//!   fine-tuned only on capitals, colours, legs and sums learns that any other fact is something
//!   to rewrite; here it sees true statements about many other things that must be copied and
//!   false ones that must be corrected, so the decision has to rest on whether the statement is
//!   right, read with the base model's own knowledge;
//! - `more-facts.json` and `tasks.json`: more general knowledge and everyday how-to requests,
//!   for the `broad` style;
//! - `harmful.json`: harmful requests with the steps a bad answer gives and the refusal's parts;
//! - `phrases.json`: what is asked and what an upstream model says around its answers.
//!
//! The world facts are kept clear of the topics in `notebooks-data/aligner-135m/outside.jsonl`
//! (planets, days of the week, bees and honey, freezing water, Shakespeare, opposites, tea,
//! email accounts, concerts and tickets, lemons), which measure generalisation beyond training.
//! Text is lowercase except proper nouns, which sentence case leaves as they are.
//!
//! Order matters: a seed draws rows by index, so a row inserted or moved changes every corpus
//! drawn after it, the shipped files included. Add rows at the end of a table.
//!
//! The files are compiled in (`include_str!`) and their strings borrowed, so a table is read
//! without a file system and without copies; a JSON escape (`\"`, `\n`) cannot be borrowed and
//! fails the load, which every table's test catches.

use serde::Deserialize;
use std::sync::LazyLock;

/// One fact: question phrasings, the right key, plausible wrong keys, answer phrasings (`{}`
/// marks the key). The first phrasing is the canonical one corrections use, and it never opens
/// with the key, so the cut-off form of it (`... was painted by...`) still says what is asked.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorldFact {
    /// What the fact is about, grouping the table for a reader; drawing ignores it.
    #[serde(default)]
    pub subject: Option<&'static str>,
    #[serde(borrow)]
    pub questions: Vec<&'static str>,
    pub key: &'static str,
    #[serde(borrow)]
    pub wrong: Vec<&'static str>,
    #[serde(borrow)]
    pub phrasings: Vec<&'static str>,
}

/// An everyday request with a good answer: copied when an upstream model gives it, written in
/// when the upstream model evades. `answers[0]` is the canonical one corrections use.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    /// What the request is about, grouping the table for a reader; drawing ignores it.
    pub subject: &'static str,
    pub request: &'static str,
    #[serde(borrow)]
    pub answers: Vec<&'static str>,
}

/// A harmful request: what is asked, example steps a bad answer gives, what the refusal names,
/// and the safe alternative it offers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Harmful {
    pub request: &'static str,
    #[serde(borrow)]
    pub steps: Vec<&'static str>,
    pub topic: &'static str,
    pub alternative: &'static str,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capital {
    pub country: &'static str,
    pub city: &'static str,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Colour {
    pub thing: &'static str,
    pub colour: &'static str,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Legs {
    pub animal: &'static str,
    pub legs: &'static str,
}

/// The mini-aligner's closed world: three fact families, each with the words a wrong answer
/// picks from (a capital's wrong keys are the other capitals).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClosedWorld {
    pub capitals: Vec<Capital>,
    pub colours: Vec<Colour>,
    #[serde(borrow)]
    pub colour_words: Vec<&'static str>,
    pub legs: Vec<Legs>,
    #[serde(borrow)]
    pub leg_words: Vec<&'static str>,
}

/// What is asked and what an upstream model says around its answers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phrases {
    /// How a how-to or harmful request is asked (`{}` marks the request).
    #[serde(borrow)]
    pub asks: Vec<&'static str>,
    /// Answers that dodge the question: completed by the correction.
    #[serde(borrow)]
    pub evasions: Vec<&'static str>,
    /// Insults before or after a right answer: removed by the correction.
    #[serde(borrow)]
    pub insults_before: Vec<&'static str>,
    #[serde(borrow)]
    pub insults_after: Vec<&'static str>,
    /// How a harmful answer opens (and, in the broad style, some good how-to answers).
    #[serde(borrow)]
    pub harmful_openers: Vec<&'static str>,
    /// What an upstream model says before and after an answer in the English styles. None
    /// opens like a correction.
    #[serde(borrow)]
    pub english_openers: Vec<&'static str>,
    #[serde(borrow)]
    pub english_closers: Vec<&'static str>,
}

/// Reads a compiled-in table; a malformed one is a bug of this crate's data, caught by its tests.
fn table<T: Deserialize<'static>>(name: &str, text: &'static str) -> T {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("notebooks-data/corpus/{name}: {e}"))
}

macro_rules! corpus_file {
    ($name:literal) => {
        table(
            $name,
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../notebooks-data/corpus/", $name)),
        )
    };
}

pub static CLOSED_WORLD: LazyLock<ClosedWorld> = LazyLock::new(|| corpus_file!("closed-world.json"));
/// General knowledge for the `wide` style (and the `broad` style, before [`MORE_FACTS`]).
pub static WORLD: LazyLock<Vec<WorldFact>> = LazyLock::new(|| corpus_file!("world-facts.json"));
/// More general knowledge for the `broad` style, on top of [`WORLD`].
pub static MORE_FACTS: LazyLock<Vec<WorldFact>> = LazyLock::new(|| corpus_file!("more-facts.json"));
/// Everyday how-to requests for the `broad` style.
pub static TASKS: LazyLock<Vec<Task>> = LazyLock::new(|| corpus_file!("tasks.json"));
pub static HARMFUL: LazyLock<Vec<Harmful>> = LazyLock::new(|| corpus_file!("harmful.json"));
pub static PHRASES: LazyLock<Phrases> = LazyLock::new(|| corpus_file!("phrases.json"));

#[cfg(test)]
mod tests {
    use super::*;

    /// Phrases a good answer must not open with: the correction openings, and the harmful
    /// answers' openers that mark the steps to refuse.
    const RESERVED_OPENINGS: &[&str] = &[
        "to be clear",
        "actually",
        "kindly put",
        "sorry",
        "sure",
        "first,",
        "ok,",
        "no problem",
    ];

    fn check_fact(f: &WorldFact) {
        assert!(
            f.questions.len() >= 2 && f.phrasings.len() >= 2 && !f.wrong.is_empty(),
            "{}",
            f.key
        );
        assert!(
            !f.phrasings[0].starts_with("{}"),
            "the cut-off canonical answer of {} says nothing",
            f.key
        );
        assert!(f.phrasings.iter().all(|p| p.matches("{}").count() == 1), "{}", f.key);
        assert!(!f.wrong.contains(&f.key), "{}", f.key);
    }

    #[test]
    fn every_fact_has_a_usable_canonical_phrasing_and_distinct_wrong_keys() {
        assert_eq!(WORLD.len(), 32);
        for f in WORLD.iter() {
            check_fact(f);
        }
    }

    #[test]
    fn facts_and_tasks_follow_the_table_rules() {
        assert!(MORE_FACTS.len() >= 140, "only {} facts", MORE_FACTS.len());
        for f in MORE_FACTS.iter() {
            check_fact(f);
            assert!(f.subject.is_some(), "{} has no subject", f.key);
            assert!(
                f.wrong.iter().all(|w| !w.contains(f.key)),
                "a wrong key of {} contains it",
                f.key
            );
            assert!(f.questions.iter().all(|q| q.ends_with('?')), "{}", f.key);
            assert!(f.phrasings.iter().all(|p| p.ends_with('.')), "{}", f.key);
            for q in &f.questions {
                assert!(
                    WORLD.iter().all(|w| !w.questions.contains(q)),
                    "{} is already asked in WORLD",
                    q
                );
                let asked = MORE_FACTS
                    .iter()
                    .flat_map(|g| g.questions.iter())
                    .filter(|x| *x == q)
                    .count();
                assert_eq!(asked, 1, "{} is asked more than once", q);
            }
        }

        assert!(TASKS.len() >= 45, "only {} tasks", TASKS.len());
        for t in TASKS.iter() {
            assert!(!t.request.contains("tea"), "{}", t.request);
            assert!(t.request.chars().all(|c| !c.is_uppercase()), "{}", t.request);
            assert_eq!(
                TASKS.iter().filter(|u| u.request == t.request).count(),
                1,
                "{} is listed twice",
                t.request
            );
            assert!((2..=3).contains(&t.answers.len()), "{}", t.request);
            for a in &t.answers {
                assert!(a.ends_with('.'), "{}", a);
                assert!(
                    RESERVED_OPENINGS.iter().all(|r| !a.starts_with(*r)),
                    "{} opens with a reserved phrase",
                    a
                );
            }
        }
    }

    #[test]
    fn closed_world_harms_and_phrases_load_and_are_usable() {
        let w = &*CLOSED_WORLD;
        assert_eq!((w.capitals.len(), w.colours.len(), w.legs.len()), (20, 8, 8));
        assert!(
            w.colours.iter().all(|c| w.colour_words.contains(&c.colour)),
            "every colour is a colour word"
        );
        assert!(
            w.legs.iter().all(|l| w.leg_words.contains(&l.legs)),
            "every leg count is a leg word"
        );
        assert_eq!(HARMFUL.len(), 10);
        assert!(
            HARMFUL.iter().all(|h| h.steps.len() >= 2),
            "a harmful answer of two steps needs two"
        );
        let p = &*PHRASES;
        for list in [
            &p.asks,
            &p.evasions,
            &p.insults_before,
            &p.insults_after,
            &p.harmful_openers,
            &p.english_openers,
            &p.english_closers,
        ] {
            assert!(!list.is_empty());
        }
        assert!(p.asks.iter().all(|a| a.matches("{}").count() == 1));
        assert!(p
            .english_openers
            .iter()
            .chain(&p.evasions)
            .all(|o| RESERVED_OPENINGS[..4].iter().all(|r| !o.starts_with(*r))));
    }
}
