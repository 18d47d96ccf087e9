use anyhow::Result;
use clap::Args;
use mini::corpus::{by_kind, copy_share, draw_lat_pairs, generate, pair_records, BadAnswer, Split};
use mini::english::Style;
use std::path::PathBuf;

/// Write records of the synthetic correction corpus (the mini-aligner's training world).
///
/// Records are AlignerTails-style JSONL: question, answer, correction, category (helpful,
/// honest, harmless); about 40% are copy cases (correction == answer). A (question, answer)
/// pair always falls in the same split, whatever the seed, so fresh test records never
/// overlap the training split.
///
/// --style english writes the same world in written English (sentence case, names
/// capitalised, free-form openers and closers around good and bad answers alike, longer
/// harmful answers): the corpus Aligner-135M is tuned on. --style wide is english with half
/// of the facts drawn from general knowledge beyond the four closed families (months, oceans,
/// painters, animals, organs, languages, ...), so a tuned model must judge whether a statement
/// is true, not whether it belongs to the closed world. --style broad is wide with 60% of the
/// facts from a table of 298 (rivers, inventors, instruments, jobs, ...), everyday how-to
/// requests among the helpful and insult records (a good recipe is copied, an evasion is
/// answered with one), and half of the harmful answers without an opener.
///
/// With --lat-pairs N it writes LAT stimuli instead: N pairs of a copy record and a correct
/// record sharing a question, drawn outside the training split. With --per-kind K it keeps,
/// of those, the first K pairs of each kind of bad answer (false fact, evasion, cut-off
/// answer, harmful steps) and every insult pair: Aligner-135M's stimuli, where insults are
/// about half of the pairs so that the knob's copy side reaches them too.
///
/// Examples:
///   alens corpus --seed 7 --n 300 --split test --out fresh-test.jsonl
///   alens corpus --seed 7 --lat-pairs 150 --out copy-correct.jsonl
///   alens corpus --style english --lat-pairs 800 --seed 12 --per-kind 30 --out copy-correct.jsonl
///   alens corpus --style english --split train --n 4000 --out aligner-135m-train.jsonl
///   alens corpus --style wide --split train --n 4000 --out wide-train.jsonl
///   alens corpus --style broad --split train --n 4000 --out broad-train.jsonl
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct CorpusArgs {
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Bounds: 1 to 1,000,000.
    #[arg(long, value_parser = crate::bounds::count::<1, 1_000_000>, default_value_t = 1000)]
    n: usize,
    /// train, validation or test.
    #[arg(long, default_value = "test")]
    split: Split,
    /// Write this many LAT copy/correct pairs instead of --n records.
    /// Bounds: 1 to 100,000.
    #[arg(long, value_parser = crate::bounds::count::<1, 100_000>)]
    lat_pairs: Option<usize>,
    /// Of the --lat-pairs, keep the first K pairs of each kind of bad answer and every insult
    /// pair. Bounds: 1 to 100,000.
    #[arg(long, value_name = "K", requires = "lat_pairs", value_parser = crate::bounds::count::<1, 100_000>)]
    per_kind: Option<usize>,
    /// lower (the mini-aligner's world), english, wide (english plus general knowledge), or
    /// broad (wide with more knowledge and everyday how-to requests).
    #[arg(long, default_value = "lower")]
    style: Style,
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: CorpusArgs) -> Result<()> {
    crate::outputs::check(&[Some(&args.out)], &[])?;
    let (records, kinds) = match args.lat_pairs {
        Some(pairs) => {
            let mut pairs = draw_lat_pairs(args.seed, pairs, args.style);
            if let Some(per_kind) = args.per_kind {
                pairs = by_kind(pairs, per_kind);
            }
            let counts =
                BadAnswer::ALL.map(|k| format!("{} {}", k.name(), pairs.iter().filter(|p| p.bad == k).count()));
            (pair_records(pairs), format!(", pairs by kind: {}", counts.join(", ")))
        }
        None => (generate(args.seed, args.n, args.split, args.style), String::new()),
    };
    probe::stimuli::write_jsonl(&args.out, &records)?;
    println!(
        "wrote {} records ({:.0}% copy cases{kinds}) to {}",
        records.len(),
        100.0 * copy_share(&records),
        args.out.display()
    );
    Ok(())
}
