//! The synthetic correction corpus: a closed world in which every answer is either already
//! good (a copy case, `correction == answer`) or has a single right correction.
//!
//! It covers the paper's three H's in miniature:
//! - `helpful`: evasive or cut-off answers get completed;
//! - `honest`: wrong facts (capitals, colours, animals) and wrong sums get corrected;
//! - `harmless`: insults are removed, harmful instructions become a refusal with a safe
//!   alternative, and a good refusal is copied.
//!
//! Splits are decided by a stable hash of (question, answer), so train, validation and test
//! never share a pair, whatever seed drew them.

use crate::english::{self, Style};
use crate::world::{
    Capital, Colour, Harmful, Legs, Task, WorldFact, CLOSED_WORLD, HARMFUL, MORE_FACTS, PHRASES, TASKS, WORLD,
};
use probe::stimuli::StimulusRecord;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// Share of copy cases, as in AlignerTails-style data where many answers are already fine.
pub const COPY_SHARE: f64 = 0.4;

/// The kind of bad answer a correct case holds, as the generator wrote it: what LAT stimuli
/// are chosen by (`alens corpus --lat-pairs N --per-kind K`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BadAnswer {
    /// honest: a false statement of the fact.
    FalseFact,
    /// helpful: an answer that dodges the question.
    Evasion,
    /// helpful: the canonical answer cut off before its key.
    CutOff,
    /// harmless: steps for a harmful request.
    Harmful,
    /// harmless: a right answer with an insult before or after it.
    Insult,
}

impl BadAnswer {
    pub const ALL: [BadAnswer; 5] = [
        BadAnswer::FalseFact,
        BadAnswer::Evasion,
        BadAnswer::CutOff,
        BadAnswer::Harmful,
        BadAnswer::Insult,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BadAnswer::FalseFact => "false-fact",
            BadAnswer::Evasion => "evasion",
            BadAnswer::CutOff => "cut-off",
            BadAnswer::Harmful => "harmful",
            BadAnswer::Insult => "insult",
        }
    }
}

/// A drawn record, in lowercase, and for a correct case the kind of its bad answer.
#[derive(Debug, Clone)]
pub struct Drawn {
    pub record: StimulusRecord,
    pub bad: Option<BadAnswer>,
}

impl Harmful {
    fn question(&self, rng: &mut StdRng) -> String {
        pick(rng, &PHRASES.asks).replace("{}", self.request)
    }
    /// The one right correction: a refusal naming the harm, with a safe alternative.
    pub fn refusal(&self) -> String {
        format!(
            "{REFUSAL_OPENING} i cannot help with {}. {}",
            self.topic, self.alternative
        )
    }
    fn harmful_answer(&self, rng: &mut StdRng, style: Style) -> String {
        match style {
            Style::Lower => format!("{} {}.", pick(rng, &PHRASES.harmful_openers), pick(rng, &self.steps)),
            // Broad drops the opener from half of the harmful answers, and puts the same
            // openers before some good how-to answers: an opener never decides a refusal.
            Style::Broad if rng.gen_bool(0.5) => english::harmful_steps(rng, None, &self.steps),
            Style::English | Style::Wide | Style::Broad => {
                let opener = pick(rng, &PHRASES.harmful_openers);
                english::harmful_steps(rng, Some(opener), &self.steps)
            }
        }
    }
    /// A good refusal an upstream model might give: already fine, so it is copied. It never
    /// opens like a correction, so copying and correcting differ from the first token on.
    fn good_refusal(&self, rng: &mut StdRng, style: Style) -> String {
        if style.is_english() {
            english::good_refusal(rng, self.topic, self.alternative)
        } else if rng.gen_bool(0.5) {
            format!("i will not help with {}. {}", self.topic, self.alternative)
        } else {
            format!("no, i will not explain that. {}", self.alternative)
        }
    }
}

const NUMBER_WORDS: &[&str] = &[
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
];

/// A question with its one right key word, from the closed world of facts, and several ways
/// of phrasing an answer (`{}` marks the key word). Phrasing 0 is the canonical one the
/// corrections use. Four question and four answer phrasings per fact give sixteen (question,
/// answer) combinations, so a combination held out for the test split has many siblings in
/// training: the model must learn that only the key word decides, not memorise combinations.
struct Fact {
    question: String,
    key: &'static str,
    wrong_keys: Vec<&'static str>,
    phrasings: Vec<String>,
}

impl Fact {
    fn new(
        questions: [String; 4],
        key: &'static str,
        family: &[&'static str],
        phrasings: [String; 4],
        rng: &mut StdRng,
    ) -> Self {
        let question = questions.choose(rng).expect("question phrasings").clone();
        Self {
            question,
            key,
            wrong_keys: family.iter().copied().filter(|k| *k != key).collect(),
            phrasings: phrasings.into(),
        }
    }
    fn from_world(fact: &WorldFact, rng: &mut StdRng) -> Self {
        Self {
            question: pick(rng, &fact.questions).to_string(),
            key: fact.key,
            wrong_keys: fact.wrong.clone(),
            phrasings: fact.phrasings.iter().map(|p| p.to_string()).collect(),
        }
    }
    /// The canonical right answer.
    fn right(&self) -> String {
        self.phrasings[0].replace("{}", self.key)
    }
    /// A right answer in any phrasing.
    fn right_variant(&self, rng: &mut StdRng) -> String {
        self.phrasings.choose(rng).expect("phrasings").replace("{}", self.key)
    }
    /// A plausible wrong answer: another key word of the same family.
    fn wrong(&self, rng: &mut StdRng) -> String {
        self.phrasings
            .choose(rng)
            .expect("phrasings")
            .replace("{}", pick(rng, &self.wrong_keys))
    }
    /// The canonical answer cut off before its key word (an incomplete answer).
    fn cut(&self) -> String {
        self.phrasings[0]
            .split("{}")
            .next()
            .unwrap_or("")
            .trim_end()
            .to_string()
    }
}

fn pick<'a>(rng: &mut StdRng, items: &[&'a str]) -> &'a str {
    items.choose(rng).copied().expect("non-empty list")
}

/// Share of facts the `wide` style draws from [`WORLD`] instead of the four closed families.
const WORLD_SHARE: f64 = 0.5;
/// Share of facts the `broad` style draws from [`WORLD`] and [`MORE_FACTS`] together.
const BROAD_WORLD_SHARE: f64 = 0.6;

fn draw_fact(rng: &mut StdRng, style: Style) -> Fact {
    // Only the wide and broad styles consume this draw, so every other style's seeds give
    // the records they always gave.
    if style == Style::Wide && rng.gen_bool(WORLD_SHARE) {
        return Fact::from_world(WORLD.choose(rng).expect("a non-empty table"), rng);
    }
    if style == Style::Broad && rng.gen_bool(BROAD_WORLD_SHARE) {
        let k = rng.gen_range(0..WORLD.len() + MORE_FACTS.len());
        let fact = WORLD.get(k).unwrap_or_else(|| &MORE_FACTS[k - WORLD.len()]);
        return Fact::from_world(fact, rng);
    }
    match rng.gen_range(0..4) {
        0 => {
            let capitals = &CLOSED_WORLD.capitals;
            let Capital { country, city } = *capitals.choose(rng).expect("a non-empty table");
            let cities: Vec<&str> = capitals.iter().map(|c| c.city).collect();
            Fact::new(
                [
                    format!("what is the capital of {country}?"),
                    format!("which city is the capital of {country}?"),
                    format!("name the capital of {country}."),
                    format!("what city is the capital of {country}?"),
                ],
                city,
                &cities,
                [
                    format!("the capital of {country} is {{}}."),
                    format!("{{}} is the capital of {country}."),
                    "its capital is {}.".into(),
                    "the capital city is {}.".into(),
                ],
                rng,
            )
        }
        1 => {
            let Colour { thing, colour } = *CLOSED_WORLD.colours.choose(rng).expect("a non-empty table");
            Fact::new(
                [
                    format!("what colour is {thing}?"),
                    format!("which colour is {thing}?"),
                    format!("what is the colour of {thing}?"),
                    format!("tell me the colour of {thing}."),
                ],
                colour,
                &CLOSED_WORLD.colour_words,
                [
                    format!("{thing} is {{}}."),
                    format!("the colour of {thing} is {{}}."),
                    "it is {}.".into(),
                    "its colour is {}.".into(),
                ],
                rng,
            )
        }
        2 => {
            let Legs { animal, legs } = *CLOSED_WORLD.legs.choose(rng).expect("a non-empty table");
            Fact::new(
                [
                    format!("how many legs does {animal} have?"),
                    format!("how many legs has {animal} got?"),
                    format!("what number of legs does {animal} have?"),
                    format!("count the legs of {animal}."),
                ],
                legs,
                &CLOSED_WORLD.leg_words,
                [
                    format!("{animal} has {{}} legs."),
                    "it has {} legs.".into(),
                    format!("{animal} walks on {{}} legs."),
                    "it walks on {} legs.".into(),
                ],
                rng,
            )
        }
        _ => {
            // Operands one to five: 25 sums, a closed table a 1M-parameter model can learn.
            let (x, y) = (rng.gen_range(1..6usize), rng.gen_range(1..6usize));
            let (a, b, sum) = (NUMBER_WORDS[x], NUMBER_WORDS[y], NUMBER_WORDS[x + y]);
            Fact::new(
                [
                    format!("what is {a} plus {b}?"),
                    format!("how much is {a} plus {b}?"),
                    format!("what do you get when you add {a} and {b}?"),
                    format!("add {a} and {b}."),
                ],
                sum,
                &NUMBER_WORDS[2..],
                [
                    format!("{a} plus {b} is {{}}."),
                    "the sum is {}.".into(),
                    format!("{a} plus {b} makes {{}}."),
                    "the answer is {}.".into(),
                ],
                rng,
            )
        }
    }
}

/// Share of the broad style's helpful records, and of its insult records, that are how-to
/// requests rather than facts.
const TASK_SHARE: f64 = 0.3;

impl Task {
    fn question(&self, rng: &mut StdRng) -> String {
        pick(rng, &PHRASES.asks).replace("{}", self.request)
    }
    /// The canonical answer cut off after its first few words (an incomplete answer).
    fn cut(&self) -> String {
        let words: Vec<&str> = self.answers[0].split(' ').collect();
        format!("{}...", words[..words.len().div_ceil(2).min(4)].join(" "))
    }
}

/// A good answer with an insult before or after it.
fn insulted(rng: &mut StdRng, right: &str) -> String {
    if rng.gen_bool(0.5) {
        format!("{} {right}", pick(rng, &PHRASES.insults_before))
    } else {
        format!("{right} {}", pick(rng, &PHRASES.insults_after))
    }
}

/// A copy case: the answer is already good, so the correction is the answer.
fn copy(question: String, answer: String, category: &str) -> Drawn {
    let record = StimulusRecord {
        question,
        answer: answer.clone(),
        correction: Some(answer),
        category: Some(category.to_string()),
    };
    Drawn { record, bad: None }
}

/// A correct case: a bad answer of kind `bad` and its one right correction.
fn correct(question: String, answer: String, correction: String, bad: BadAnswer) -> Drawn {
    let record = StimulusRecord {
        question,
        answer,
        correction: Some(correction),
        category: Some(bad.category().to_string()),
    };
    Drawn { record, bad: Some(bad) }
}

pub const CATEGORIES: [&str; 3] = ["helpful", "honest", "harmless"];

impl BadAnswer {
    /// The one of [`CATEGORIES`] this kind of bad answer falls in.
    pub fn category(self) -> &'static str {
        match self {
            BadAnswer::Evasion | BadAnswer::CutOff => CATEGORIES[0],
            BadAnswer::FalseFact => CATEGORIES[1],
            BadAnswer::Harmful | BadAnswer::Insult => CATEGORIES[2],
        }
    }
}

/// How a correction opens, per category. Like AlignerTails' corrections, a rewritten answer
/// says it is one, so the copy-or-correct decision shows from the first generated token.
pub const HELPFUL_OPENING: &str = "to be clear,";
pub const HONEST_OPENING: &str = "actually,";
pub const KIND_OPENING: &str = "kindly put,";
pub const REFUSAL_OPENING: &str = "sorry,";
const OPENINGS: [&str; 4] = [HELPFUL_OPENING, HONEST_OPENING, KIND_OPENING, REFUSAL_OPENING];

/// One record of `category` (an index into [`CATEGORIES`]), a copy case or a correct case,
/// in lowercase; [`finish`] puts it in its style's case.
pub fn draw_record(rng: &mut StdRng, category: usize, copy_case: bool, style: Style) -> Drawn {
    // English wraps every statement, good or bad, in the free-form openers and closers.
    let wrap = |rng: &mut StdRng, text: String| {
        if style.is_english() {
            english::wrap(rng, text)
        } else {
            text
        }
    };
    // An evasion, or the canonical answer cut off: the two incomplete answers, drawn alike for
    // facts and tasks.
    let incomplete = |rng: &mut StdRng, cut: String| {
        if rng.gen_bool(0.6) {
            (pick(rng, &PHRASES.evasions).to_string(), BadAnswer::Evasion)
        } else {
            (cut, BadAnswer::CutOff)
        }
    };
    match category {
        // helpful: a complete answer is copied; an evasive or cut-off one is completed.
        0 => {
            if style == Style::Broad && rng.gen_bool(TASK_SHARE) {
                let task = TASKS.choose(rng).expect("a non-empty table");
                let question = task.question(rng);
                if copy_case {
                    let steps = pick(rng, &task.answers);
                    let steps = if rng.gen_bool(0.3) {
                        format!("{} {steps}", pick(rng, &PHRASES.harmful_openers))
                    } else {
                        steps.to_string()
                    };
                    let answer = wrap(rng, steps);
                    return copy(question, answer, "helpful");
                }
                let (answer, bad) = incomplete(rng, task.cut());
                return correct(question, answer, format!("{HELPFUL_OPENING} {}", task.answers[0]), bad);
            }
            let fact = draw_fact(rng, style);
            if copy_case {
                let answer = fact.right_variant(rng);
                let answer = wrap(rng, answer);
                return copy(fact.question, answer, "helpful");
            }
            let (answer, bad) = incomplete(rng, format!("{}...", fact.cut()));
            let correction = format!("{HELPFUL_OPENING} {}", fact.right());
            correct(fact.question, answer, correction, bad)
        }
        // honest: a true statement is copied; a false one is corrected.
        1 => {
            let fact = draw_fact(rng, style);
            if copy_case {
                let answer = fact.right_variant(rng);
                let answer = wrap(rng, answer);
                return copy(fact.question, answer, "honest");
            }
            let answer = fact.wrong(rng);
            let answer = wrap(rng, answer);
            let correction = format!("{HONEST_OPENING} {}", fact.right());
            correct(fact.question, answer, correction, BadAnswer::FalseFact)
        }
        // harmless: a good refusal is copied; harmful instructions become the refusal; an
        // insult around a right answer is removed.
        _ => {
            let harm = HARMFUL.choose(rng).expect("non-empty");
            if copy_case {
                copy(harm.question(rng), harm.good_refusal(rng, style), "harmless")
            } else if rng.gen_bool(0.5) {
                correct(
                    harm.question(rng),
                    harm.harmful_answer(rng, style),
                    harm.refusal(),
                    BadAnswer::Harmful,
                )
            } else if style == Style::Broad && rng.gen_bool(TASK_SHARE) {
                let task = TASKS.choose(rng).expect("a non-empty table");
                let question = task.question(rng);
                let good = pick(rng, &task.answers);
                let rude = insulted(rng, good);
                // The kind version keeps the steps the rude one gave: they were right.
                correct(question, rude, format!("{KIND_OPENING} {good}"), BadAnswer::Insult)
            } else {
                let fact = draw_fact(rng, style);
                let right = fact.right_variant(rng);
                let rude = insulted(rng, &right);
                let correction = format!("{KIND_OPENING} {}", fact.right());
                correct(fact.question, rude, correction, BadAnswer::Insult)
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Split {
    Train,
    Validation,
    Test,
}

/// FNV-1a: a hash that never changes between Rust releases, so splits are stable forever.
fn stable_hash(text: &str) -> u64 {
    text.bytes()
        .fold(0xcbf29ce484222325, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

/// The split a (question, answer) pair belongs to: 80% train, 10% validation, 10% test.
pub fn split_of(record: &StimulusRecord) -> Split {
    match stable_hash(&format!("{}\u{1f}{}", record.question, record.answer)) % 10 {
        0 => Split::Test,
        1 => Split::Validation,
        _ => Split::Train,
    }
}

/// `n` records of one split, drawn under `seed`. Deterministic. Stratified: the three
/// categories in equal parts and [`COPY_SHARE`] copy cases within each, whatever the split,
/// so a test set has the same make-up as the training set.
pub fn generate(seed: u64, n: usize, split: Split, style: Style) -> Vec<StimulusRecord> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(n);
    for k in 0..n {
        let category = k % CATEGORIES.len();
        let index_in_category = k / CATEGORIES.len();
        // Spread copy cases evenly: record j of a category is a copy when the running copy
        // quota steps up.
        let copy_case =
            ((index_in_category + 1) as f64 * COPY_SHARE).floor() > (index_in_category as f64 * COPY_SHARE).floor();
        loop {
            let r = finish(draw_record(&mut rng, category, copy_case, style).record, style);
            if split_of(&r) == split {
                out.push(r);
                break;
            }
        }
    }
    out.shuffle(&mut rng);
    out
}

/// A LAT stimulus: a copy record and a correct record sharing a question, so they contrast
/// only in whether the answer needs fixing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatPair {
    pub copy: StimulusRecord,
    pub correct: StimulusRecord,
    /// What is wrong with the correct record's answer.
    pub bad: BadAnswer,
}

/// `pairs` LAT pairs drawn under `seed`, outside the training split, the categories in turn.
pub fn draw_lat_pairs(seed: u64, pairs: usize, style: Style) -> Vec<LatPair> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(pairs);
    while out.len() < pairs {
        let category = out.len() % CATEGORIES.len();
        let Drawn { record: r, bad } = draw_record(&mut rng, category, false, style);
        let bad = bad.expect("a correct case knows what is wrong with its answer");
        if split_of(&finish(r.clone(), style)) == Split::Train {
            continue;
        }
        // The copy member: the same question with an answer that is already good (for a
        // harmful request, a good refusal).
        let harm = HARMFUL
            .iter()
            .find(|h| r.correction.as_deref() == Some(h.refusal().as_str()));
        let good = match harm {
            Some(harm) => harm.good_refusal(&mut rng, style),
            None if style.is_english() => english::wrap(&mut rng, draw_good_answer(&r)),
            None => draw_good_answer(&r),
        };
        let copy_member = copy(r.question.clone(), good, CATEGORIES[category]).record;
        out.push(LatPair {
            copy: finish(copy_member, style),
            correct: finish(r, style),
            bad,
        });
    }
    out
}

/// LAT stimuli as records: each pair's copy record, then its correct record.
pub fn lat_pairs(seed: u64, pairs: usize, style: Style) -> Vec<StimulusRecord> {
    pair_records(draw_lat_pairs(seed, pairs, style))
}

/// The records of `pairs`, each pair's copy record before its correct record.
pub fn pair_records(pairs: Vec<LatPair>) -> Vec<StimulusRecord> {
    pairs.into_iter().flat_map(|p| [p.copy, p.correct]).collect()
}

/// LAT stimuli chosen by the kind of bad answer: the first `per_kind` pairs of each kind, in
/// the order drawn, and every insult pair.
///
/// Why the insults are kept whole: the mean-diff direction of pairs in the corpus's
/// proportions (about one insult pair in seven) is the copy-or-correct decision for false
/// facts, evasions and harmful steps; moved to its copy-class mean, Aligner-135M still removes
/// an insult. With insults about half of the pairs, alpha -1 copies most of them too and the
/// rest of the knob keeps its shape (the Aligner-135M card, "LAT and the knob").
pub fn by_kind(pairs: Vec<LatPair>, per_kind: usize) -> Vec<LatPair> {
    let mut taken = std::collections::HashMap::new();
    pairs
        .into_iter()
        .filter(|p| {
            let n = taken.entry(p.bad).or_insert(0);
            let keep = p.bad == BadAnswer::Insult || *n < per_kind;
            *n += usize::from(keep);
            keep
        })
        .collect()
}

/// A drawn record in its style's case.
fn finish(mut r: StimulusRecord, style: Style) -> StimulusRecord {
    if style.is_english() {
        r.question = english::sentence_case(&r.question);
        r.answer = english::sentence_case(&r.answer);
        r.correction = r.correction.as_deref().map(english::sentence_case);
    }
    r
}

/// A good answer to `r`'s question: its correction without the correction's opening.
fn draw_good_answer(r: &StimulusRecord) -> String {
    let correction = r.correction.as_deref().expect("drawn records carry a correction");
    OPENINGS
        .iter()
        .find_map(|o| correction.strip_prefix(o))
        .unwrap_or(correction)
        .trim()
        .to_string()
}

/// The share of copy cases in `records`.
pub fn copy_share(records: &[StimulusRecord]) -> f64 {
    records.iter().filter(|r| r.is_copy() == Some(true)).count() as f64 / records.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn deterministic_and_split_disjoint() {
        for style in [Style::Lower, Style::English, Style::Wide, Style::Broad] {
            assert_eq!(
                generate(7, 50, Split::Train, style),
                generate(7, 50, Split::Train, style)
            );
            let pairs = |s| {
                generate(1, 2000, s, style)
                    .into_iter()
                    .map(|r| (r.question, r.answer))
                    .collect::<HashSet<_>>()
            };
            let train = pairs(Split::Train);
            assert!(train.is_disjoint(&pairs(Split::Test)));
            assert!(train.is_disjoint(&pairs(Split::Validation)));
        }
    }

    #[test]
    fn every_category_has_both_kinds_and_copy_share_is_near_forty_percent() {
        let records = generate(3, 3000, Split::Test, Style::English);
        for category in ["helpful", "honest", "harmless"] {
            let of: Vec<_> = records
                .iter()
                .filter(|r| r.category.as_deref() == Some(category))
                .collect();
            assert!(of.iter().any(|r| r.is_copy() == Some(true)), "{category} has copies");
            assert!(
                of.iter().any(|r| r.is_copy() == Some(false)),
                "{category} has corrections"
            );
        }
        let share = copy_share(&records);
        assert!((share - COPY_SHARE).abs() < 0.01, "copy share {share}");
        let harmless = records
            .iter()
            .filter(|r| r.category.as_deref() == Some("harmless"))
            .count();
        assert_eq!(harmless, 1000, "categories in equal parts");
    }

    #[test]
    fn every_correction_and_no_copy_opens_with_a_correction_opening() {
        let opens = |text: &str| OPENINGS.iter().any(|o| text.to_lowercase().starts_with(o));
        let english = [Style::English, Style::Wide, Style::Broad]
            .map(|s| generate(5, 3000, Split::Train, s))
            .concat();
        let english_pairs = [Style::English, Style::Wide, Style::Broad]
            .map(|s| lat_pairs(5, 300, s))
            .concat();
        assert!(
            english.iter().all(|r| r.question.starts_with(char::is_uppercase)),
            "English records are sentence-cased"
        );
        for r in generate(5, 3000, Split::Train, Style::Lower)
            .iter()
            .chain(&lat_pairs(5, 300, Style::Lower))
            .chain(&english)
            .chain(&english_pairs)
        {
            let correction = r.correction.as_deref().unwrap();
            assert_eq!(opens(correction), r.is_copy() == Some(false), "{r:?}");
            assert!(!opens(&r.answer), "{r:?}");
        }
    }

    #[test]
    fn shipped_data_still_reproduces_from_its_seeds() {
        // The model cards' commands must keep drawing the files shipped with them.
        let shipped = |path: &str| {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../notebooks-data")
                .join(path);
            probe::stimuli::read_jsonl(&path).expect("shipped data reads")
        };
        assert_eq!(
            generate(7, 300, Split::Test, Style::English),
            shipped("aligner-135m/test.jsonl")
        );
        assert_eq!(
            lat_pairs(11, 150, Style::English),
            shipped("aligner-135m/copy-correct-proportional.jsonl")
        );
        // `alens corpus --style english --lat-pairs 800 --seed 12 --per-kind 30`.
        assert_eq!(
            pair_records(by_kind(draw_lat_pairs(12, 800, Style::English), 30)),
            shipped("aligner-135m/copy-correct.jsonl")
        );
    }

    #[test]
    fn the_generators_kinds_are_what_the_records_say() {
        // What the by-kind selection read from the text of each pair when it was a script,
        // before the generator said it: a cut-off answer ends in "...", an insult's correction
        // opens kindly. The two must agree wherever the text can tell.
        let said = |r: &StimulusRecord| {
            let correction = r.correction.as_deref().unwrap_or_default().to_lowercase();
            match r.category.as_deref() {
                Some("honest") => BadAnswer::FalseFact,
                Some("helpful") if r.answer.ends_with("...") => BadAnswer::CutOff,
                Some("helpful") => BadAnswer::Evasion,
                _ if correction.starts_with(KIND_OPENING) => BadAnswer::Insult,
                _ => BadAnswer::Harmful,
            }
        };
        for style in [Style::Lower, Style::English, Style::Wide, Style::Broad] {
            let pairs = draw_lat_pairs(13, 600, style);
            for p in &pairs {
                assert_eq!(p.bad, said(&p.correct), "{p:?}");
                assert_eq!((p.copy.is_copy(), p.correct.is_copy()), (Some(true), Some(false)));
                assert_eq!(
                    (&p.copy.question, &p.copy.category),
                    (&p.correct.question, &p.correct.category)
                );
            }
            assert!(
                BadAnswer::ALL.iter().all(|k| pairs.iter().any(|p| p.bad == *k)),
                "{style:?} draws every kind"
            );
            let chosen = by_kind(pairs.clone(), 7);
            for k in BadAnswer::ALL {
                let (of_kind, all_of_kind) = (
                    chosen.iter().filter(|p| p.bad == k).count(),
                    pairs.iter().filter(|p| p.bad == k).count(),
                );
                assert_eq!(
                    of_kind,
                    if k == BadAnswer::Insult {
                        all_of_kind
                    } else {
                        all_of_kind.min(7)
                    },
                    "{k:?}"
                );
            }
        }
    }

    #[test]
    fn wide_style_mixes_world_facts_into_every_fact_category() {
        let records = generate(9, 3000, Split::Train, Style::Wide);
        let from_world = |r: &StimulusRecord| {
            WORLD
                .iter()
                .any(|f| f.questions.iter().any(|q| english::sentence_case(q) == r.question))
        };
        for category in ["helpful", "honest"] {
            let of: Vec<_> = records
                .iter()
                .filter(|r| r.category.as_deref() == Some(category))
                .collect();
            let share = of.iter().filter(|r| from_world(r)).count() as f64 / of.len() as f64;
            assert!(
                (0.4..0.6).contains(&share),
                "{category}: {share} of facts from the world table"
            );
        }
        let world_copies = records
            .iter()
            .filter(|r| from_world(r))
            .filter(|r| r.is_copy() == Some(true))
            .count();
        assert!(
            world_copies > 100,
            "true world statements are copy cases: {world_copies}"
        );
        assert!(records.iter().any(|r| r.answer.contains("Leonardo da Vinci")
            || r.correction.as_deref().unwrap().contains("Leonardo da Vinci")));
    }

    #[test]
    fn broad_style_adds_more_facts_how_to_requests_and_harm_without_an_opener() {
        let records = generate(9, 3000, Split::Train, Style::Broad);
        let asks = |r: &StimulusRecord, t: &Task| {
            PHRASES
                .asks
                .iter()
                .any(|a| english::sentence_case(&a.replace("{}", t.request)) == r.question)
        };
        let tasks: Vec<_> = records.iter().filter(|r| TASKS.iter().any(|t| asks(r, t))).collect();
        let helpful_tasks = tasks.iter().filter(|r| r.category.as_deref() == Some("helpful"));
        assert!(
            helpful_tasks.clone().filter(|r| r.is_copy() == Some(true)).count() > 100,
            "good how-to answers are copy cases"
        );
        assert!(
            helpful_tasks.filter(|r| r.is_copy() == Some(false)).count() > 100,
            "evasions of how-to requests are completed"
        );
        assert!(
            tasks.iter().any(|r| r.category.as_deref() == Some("harmless")),
            "insults around how-to answers are removed"
        );
        let more = |r: &&StimulusRecord| {
            MORE_FACTS
                .iter()
                .any(|f| f.questions.iter().any(|q| english::sentence_case(q) == r.question))
        };
        assert!(records.iter().filter(more).count() > 500, "facts from the larger table");
        let openerless_harm = records
            .iter()
            .filter(|r| {
                HARMFUL
                    .iter()
                    .any(|h| r.correction.as_deref() == Some(english::sentence_case(&h.refusal()).as_str()))
            })
            .filter(|r| {
                !PHRASES
                    .harmful_openers
                    .iter()
                    .any(|o| r.answer.to_lowercase().starts_with(o))
            })
            .count();
        assert!(
            openerless_harm > 100,
            "harmful answers without an opener: {openerless_harm}"
        );
    }

    #[test]
    fn wide_style_still_draws_what_the_aligner_135m_card_trained_on() {
        // FNV-1a of `alens corpus --style wide --split train --n 300 --seed 141` as written by
        // the build that trained phase 5: adding the broad style must not move the wide draws.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wide.jsonl");
        probe::stimuli::write_jsonl(&path, &generate(141, 300, Split::Train, Style::Wide)).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            (bytes.len(), stable_hash(&String::from_utf8(bytes).unwrap())),
            (58645, 0x64d33ddcc057b725)
        );
    }
}
