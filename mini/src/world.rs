//! General knowledge beyond the closed world's four fact families, for the `wide` corpus
//! style. A model fine-tuned only on capitals, colours, legs and sums learns that any other
//! fact is something to rewrite; here it sees true statements about many other things that
//! must be copied and false ones that must be corrected, so the decision has to rest on
//! whether the statement is right, read with the base model's own knowledge.
//!
//! Kept clear of the topics in `notebooks-data/aligner-135m/outside.jsonl` (planets, days of
//! the week, bees, freezing water, Shakespeare, opposites, tea, accounts, concerts, lemons),
//! which measure generalisation beyond the training world.
//!
//! Text is lowercase except proper nouns, which sentence case leaves as they are. The first
//! phrasing is the canonical one corrections use, and it never opens with the key, so the
//! cut-off form of it (`... was painted by...`) still says what is being asked.

/// One fact: question phrasings, the right key, plausible wrong keys, answer phrasings
/// (`{}` marks the key).
pub struct WorldFact {
    pub questions: &'static [&'static str],
    pub key: &'static str,
    pub wrong: &'static [&'static str],
    pub phrasings: &'static [&'static str],
}

const fn fact(
    questions: &'static [&'static str],
    key: &'static str,
    wrong: &'static [&'static str],
    phrasings: &'static [&'static str],
) -> WorldFact {
    WorldFact { questions, key, wrong, phrasings }
}

pub const WORLD: &[WorldFact] = &[
    fact(&["how many months are in a year?", "how many months does a year have?"], "twelve", &["ten", "eleven", "thirteen", "fifteen"],
         &["a year has {} months.", "there are {} months in a year."]),
    fact(&["how many hours are in a day?", "how many hours does a day have?"], "twenty-four", &["twelve", "ten", "thirty", "forty"],
         &["a day has {} hours.", "there are {} hours in a day."]),
    fact(&["how many minutes are in an hour?", "how many minutes does an hour have?"], "sixty", &["thirty", "forty", "a hundred", "ten"],
         &["an hour has {} minutes.", "there are {} minutes in an hour."]),
    fact(&["how many continents are there?", "how many continents does the world have?"], "seven", &["five", "nine", "twelve", "three"],
         &["there are {} continents.", "the world has {} continents."]),
    fact(&["how many sides does a triangle have?", "what number of sides does a triangle have?"], "three", &["four", "five", "six"],
         &["a triangle has {} sides.", "every triangle has {} sides."]),
    fact(&["how many sides does a square have?", "what number of sides does a square have?"], "four", &["three", "five", "six", "eight"],
         &["a square has {} sides.", "every square has {} sides."]),
    fact(&["how many strings does a violin have?", "what number of strings does a violin have?"], "four", &["six", "two", "ten", "twelve"],
         &["a violin has {} strings.", "violins have {} strings."]),
    fact(&["who painted the Mona Lisa?", "which artist painted the Mona Lisa?"], "Leonardo da Vinci", &["Pablo Picasso", "Vincent van Gogh", "Claude Monet"],
         &["the Mona Lisa was painted by {}.", "{} painted the Mona Lisa."]),
    fact(&["who was the first person to walk on the Moon?", "who first walked on the Moon?"], "Neil Armstrong", &["Albert Einstein", "Isaac Newton", "Yuri Gagarin"],
         &["the first person to walk on the Moon was {}.", "{} was the first person on the Moon."]),
    fact(&["who wrote the theory of relativity?", "which scientist came up with the theory of relativity?"], "Albert Einstein", &["Isaac Newton", "Charles Darwin", "Marie Curie"],
         &["the theory of relativity was written by {}.", "{} came up with the theory of relativity."]),
    fact(&["what is the largest ocean on Earth?", "which ocean is the largest?"], "Pacific", &["Atlantic", "Indian", "Arctic"],
         &["the largest ocean on Earth is the {} Ocean.", "the {} Ocean is the largest ocean."]),
    fact(&["what is the largest mammal?", "which mammal is the largest?"], "blue whale", &["elephant", "giraffe", "horse", "bear"],
         &["the largest mammal is the {}.", "the {} is the largest mammal."]),
    fact(&["what is the tallest animal?", "which animal is the tallest?"], "giraffe", &["elephant", "horse", "camel", "lion"],
         &["the tallest animal is the {}.", "the {} is the tallest animal."]),
    fact(&["what is the fastest land animal?", "which land animal is the fastest?"], "cheetah", &["turtle", "cow", "snail", "pig"],
         &["the fastest land animal is the {}.", "the {} is the fastest animal on land."]),
    fact(&["which animal is called the king of the jungle?", "what animal is known as the king of the jungle?"], "lion", &["mouse", "frog", "rabbit", "duck"],
         &["the king of the jungle is the {}.", "the {} is known as the king of the jungle."]),
    fact(&["what do pandas mostly eat?", "what is the main food of pandas?"], "bamboo", &["fish", "meat", "cheese", "bread"],
         &["pandas mostly eat {}.", "the main food of pandas is {}."]),
    fact(&["what do caterpillars turn into?", "what does a caterpillar become?"], "butterflies", &["frogs", "birds", "snakes", "fish"],
         &["caterpillars turn into {}.", "caterpillars grow into {}."]),
    fact(&["what is a baby dog called?", "what do you call a young dog?"], "puppy", &["kitten", "calf", "chick", "lamb"],
         &["a baby dog is called a {}.", "a young dog is a {}."]),
    fact(&["what is a baby cat called?", "what do you call a young cat?"], "kitten", &["puppy", "foal", "chick", "cub"],
         &["a baby cat is called a {}.", "a young cat is a {}."]),
    fact(&["which organ pumps blood through the body?", "what pumps blood around the body?"], "heart", &["liver", "stomach", "lungs", "brain"],
         &["the organ that pumps blood is the {}.", "the {} pumps blood through the body."]),
    fact(&["which organ do we think with?", "what organ controls thinking?"], "brain", &["heart", "stomach", "liver", "skin"],
         &["the organ we think with is the {}.", "the {} controls our thinking."]),
    fact(&["what gas do plants take in from the air?", "which gas do plants absorb?"], "carbon dioxide", &["helium", "neon", "hydrogen"],
         &["plants take in {} from the air.", "plants absorb {}."]),
    fact(&["what does a thermometer measure?", "what is a thermometer used for measuring?"], "temperature", &["weight", "time", "speed", "height"],
         &["a thermometer measures {}.", "a thermometer is used to measure {}."]),
    fact(&["what does a clock show?", "what do we read from a clock?"], "the time", &["the weather", "the speed", "the weight"],
         &["a clock shows {}.", "we read {} from a clock."]),
    fact(&["which instrument has black and white keys?", "what instrument is played on black and white keys?"], "piano", &["drum", "violin", "flute", "trumpet"],
         &["the instrument with black and white keys is the {}.", "the {} has black and white keys."]),
    fact(&["what is the currency of Japan?", "which money is used in Japan?"], "yen", &["dollar", "euro", "peso", "pound"],
         &["the currency of Japan is the {}.", "in Japan people pay with the {}."]),
    fact(&["what language is mostly spoken in Brazil?", "which language do people in Brazil speak?"], "Portuguese", &["Spanish", "French", "German", "English"],
         &["the main language of Brazil is {}.", "people in Brazil speak {}."]),
    fact(&["what language is spoken in Mexico?", "which language do most people in Mexico speak?"], "Spanish", &["Portuguese", "French", "Italian", "German"],
         &["the main language of Mexico is {}.", "most people in Mexico speak {}."]),
    fact(&["which season comes after winter?", "what season follows winter?"], "spring", &["summer", "autumn"],
         &["the season after winter is {}.", "{} comes after winter."]),
    fact(&["what do you use to cut paper?", "which tool cuts paper?"], "scissors", &["a spoon", "a pillow", "a cup", "a sock"],
         &["to cut paper you use {}.", "you cut paper with {}."]),
    fact(&["what do fish use to breathe?", "how do fish breathe?"], "gills", &["lungs", "fins", "scales", "tails"],
         &["fish breathe with their {}.", "fish use {} to breathe."]),
    fact(&["what is the hardest natural material?", "which natural material is the hardest?"], "diamond", &["wood", "chalk", "glass", "gold"],
         &["the hardest natural material is {}.", "{} is the hardest natural material."]),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fact_has_a_usable_canonical_phrasing_and_distinct_wrong_keys() {
        for f in WORLD {
            assert!(f.questions.len() >= 2 && f.phrasings.len() >= 2 && !f.wrong.is_empty(), "{}", f.key);
            assert!(!f.phrasings[0].starts_with("{}"), "the cut-off canonical answer of {} says nothing", f.key);
            assert!(f.phrasings.iter().all(|p| p.matches("{}").count() == 1), "{}", f.key);
            assert!(!f.wrong.contains(&f.key), "{}", f.key);
        }
    }
}
