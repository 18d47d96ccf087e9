use anyhow::{bail, Context, Result};
use clap::Args;
use std::io::Read;
use std::path::PathBuf;

/// Join the outputs of `--shard I/N` runs (capture --data, eval --json, sweep --json) into the
/// file the same run on one machine writes: byte for byte, apart from the provenance, which
/// lists the shards.
///
/// Captures are concatenated in record order; eval and sweep scores are recomputed from the
/// per-record outcomes each shard journals, and so are eval's --outputs (with the records from
/// --data) and sweep's --csv and figure. The shards may be given in any order; a missing or
/// duplicated shard, or one from another run (data, model, options, alens version), is
/// refused. LAT's reading shards are fitted with `alens lat --from-shards`.
///
/// Examples:
///   alens merge --out eval.json eval.0.json eval.1.json eval.2.json
///   alens merge --out eval.json --outputs outputs.jsonl --data test.jsonl eval.*.json
///   alens merge --out sweep.json --csv sweep.csv --figure sweep.png sweep.*.json
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct MergeArgs {
    /// The merged output.
    #[arg(long)]
    out: PathBuf,
    /// Eval shards: also write every record with its output, as `eval --outputs` does.
    #[arg(long, requires = "data")]
    outputs: Option<PathBuf>,
    /// Eval shards with --outputs: the records they evaluated (checked against the shards'
    /// data hash).
    #[arg(long, requires = "outputs")]
    data: Option<PathBuf>,
    /// Sweep shards: also write the curves as CSV, as `sweep --csv` does.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Sweep shards: also draw the figure (.png or .svg), as `sweep --out` does.
    #[arg(long)]
    figure: Option<PathBuf>,
    /// The shard outputs, all N of them.
    #[arg(required = true, num_args = 1.., value_name = "SHARD")]
    shards: Vec<PathBuf>,
}

pub fn run(args: MergeArgs) -> Result<()> {
    let mut inputs = args.shards.clone();
    inputs.extend(args.data.clone());
    crate::outputs::check_with_figures(
        &[Some(&args.out), args.outputs.as_ref(), args.csv.as_ref()],
        &[args.figure.as_ref()],
        &inputs,
    )?;
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
    if kind != "eval" && args.outputs.is_some() {
        bail!("--outputs merges eval shards, not {kind} shards ({})", first.display());
    }
    if kind != "sweep" && (args.csv.is_some() || args.figure.is_some()) {
        bail!(
            "--csv and --figure merge sweep shards, not {kind} shards ({})",
            first.display()
        );
    }
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
            let outputs = match (&args.outputs, &args.data) {
                (Some(path), Some(data)) => Some((path, report.outputs_jsonl(&evaluated_records(first, data)?)?)),
                _ => None,
            };
            // Both outputs, or neither.
            let mut written = probe::io::OutputSet::new();
            written.write(&args.out, &serde_json::to_vec_pretty(&report)?)?;
            if let Some((path, lines)) = outputs {
                written.write(path, &lines)?;
            }
            written.commit()?;
            println!(
                "merged {} eval shards ({} records) into {}",
                args.shards.len(),
                report.overall.n,
                args.out.display()
            );
        }
        "sweep" => {
            let report = steer::knob::SweepReport::merge_shards(&args.shards)?;
            // All of the outputs, or none.
            let mut written = probe::io::OutputSet::new();
            written.write(&args.out, &serde_json::to_vec_pretty(&report)?)?;
            if let Some(path) = &args.figure {
                written.write_through(path, |figure| super::sweep::draw_sweep(figure, &report.result))?;
            }
            if let Some(path) = &args.csv {
                written.write(path, report.result.to_csv().as_bytes())?;
            }
            written.commit()?;
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

/// The records eval shards evaluated, from `data`, which must be the file they read.
fn evaluated_records(shard: &std::path::Path, data: &std::path::Path) -> Result<Vec<probe::stimuli::StimulusRecord>> {
    let info = probe::shard::read_json_shard(shard)?.1;
    if crate::outputs::file_hash(data)? != info.data_sha256 {
        bail!(
            "--data {} is not the file the shards evaluated (its sha256 differs from {}'s data_sha256)",
            data.display(),
            shard.display()
        );
    }
    let records = probe::stimuli::read_jsonl(data)?;
    anyhow::ensure!(
        records.len() == info.total,
        "--data {} holds {} records, the shards {}",
        data.display(),
        records.len(),
        info.total
    );
    Ok(records)
}
