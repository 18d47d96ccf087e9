use anyhow::Result;
use clap::Args;
use mini::corpus::{copy_share, generate, Split};
use std::path::PathBuf;

/// Write records of the synthetic correction corpus (the mini-aligner's training world).
///
/// Records are AlignerTails-style JSONL: question, answer, correction, category (helpful,
/// honest, harmless); about 40% are copy cases (correction == answer). A (question, answer)
/// pair always falls in the same split, whatever the seed, so fresh test records never
/// overlap the training split.
///
/// Example:
///   alens corpus --seed 7 --n 300 --split test --out fresh-test.jsonl
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct CorpusArgs {
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value_t = 1000)]
    n: usize,
    /// train, validation or test.
    #[arg(long, default_value = "test")]
    split: Split,
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: CorpusArgs) -> Result<()> {
    let records = generate(args.seed, args.n, args.split);
    probe::stimuli::write_jsonl(&args.out, &records)?;
    println!("wrote {} records ({:.0}% copy cases) to {}", records.len(), 100.0 * copy_share(&records), args.out.display());
    Ok(())
}
