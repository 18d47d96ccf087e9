use anyhow::{bail, Context, Result};
use clap::Args;
use std::io::Read;
use std::path::PathBuf;

/// Join the outputs of `--shard I/N` runs (capture --data, eval --json, sweep --json) into the
/// file the same run on one machine writes: byte for byte, apart from the provenance, which
/// lists the shards.
///
/// Captures are concatenated in record order; eval and sweep scores are recomputed from the
/// per-record outcomes each shard journals. The shards may be given in any order; a missing
/// or duplicated shard, or one from another run (data, model, options, alens version), is
/// refused. LAT's reading shards are fitted with `alens lat --from-shards`.
///
/// Example:
///   alens merge --out eval.json eval.0.json eval.1.json eval.2.json
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct MergeArgs {
    /// The merged output.
    #[arg(long)]
    out: PathBuf,
    /// The shard outputs, all N of them.
    #[arg(required = true, num_args = 1.., value_name = "SHARD")]
    shards: Vec<PathBuf>,
}

pub fn run(args: MergeArgs) -> Result<()> {
    crate::outputs::check(&[Some(&args.out)], &args.shards)?;
    let first = &args.shards[0];
    let mut head = [0u8; 1];
    std::fs::File::open(first)
        .and_then(|mut f| f.read_exact(&mut head))
        .with_context(|| format!("failed to read {}", first.display()))?;
    let kind = if head[0] == b'{' {
        probe::shard::read_json_shard(first)?.1.kind
    } else {
        probe::capture::shard_info(first)?.kind
    };
    match kind.as_str() {
        "capture" => {
            let records = probe::capture::merge_shards(&args.shards, &args.out)?;
            println!(
                "merged {} capture shards ({records} records) into {}",
                args.shards.len(),
                args.out.display()
            );
        }
        "eval" => {
            let report = steer::eval::EvalReport::merge_shards(&args.shards)?;
            probe::io::write_atomic(&args.out, &serde_json::to_vec_pretty(&report)?)?;
            println!(
                "merged {} eval shards ({} records) into {}",
                args.shards.len(),
                report.overall.n,
                args.out.display()
            );
        }
        "sweep" => {
            let report = steer::knob::SweepReport::merge_shards(&args.shards)?;
            probe::io::write_atomic(&args.out, &serde_json::to_vec_pretty(&report)?)?;
            println!("merged {} sweep shards into {}", args.shards.len(), args.out.display());
        }
        "lat" => bail!(
            "{} is a LAT reading shard: fit the vectors with alens lat --from-shards SHARDS... --out F",
            first.display()
        ),
        other => bail!(
            "{} is a {other} shard, which alens merge does not know",
            first.display()
        ),
    }
    Ok(())
}
