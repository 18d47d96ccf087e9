use crate::model_arg;
use anyhow::Result;
use clap::Args;
use probe::stimuli::read_jsonl;
use std::path::PathBuf;
use steer::eval::evaluate;

/// Evaluate an Aligner: exact-match rates on copy and correct cases, per category, and the
/// mean correction magnitude (normalised token edit distance, answer -> output).
///
/// Generation is greedy and KV-cached, through the Aligner template.
///
/// Finished batches go to a journal beside the first output (OUT.partial.jsonl); after a
/// kill, the same command with --resume generates only what is missing and writes what an
/// uninterrupted run writes.
///
/// Example:
///   alens eval --data notebooks-data/corpus/test.jsonl --json eval.json --outputs outputs.jsonl
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct EvalArgs {
    #[command(flatten)]
    model: model_arg::ModelArgs,
    /// Records with question, answer, correction. Default: the test records shipped beside the model (test.jsonl), else the mini-aligner's test split.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Also write the scores as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also write every record with its `output` and `exact` (JSONL), to read the misses.
    #[arg(long)]
    outputs: Option<PathBuf>,
    /// Bounds: 1 to 4,096.
    #[arg(long, value_parser = crate::bounds::count::<1, 4_096>, default_value_t = 64)]
    max_new_tokens: usize,
    /// Records generated together (left-padded, one KV cache).
    /// Bounds: 1 to 4,096.
    #[arg(long, value_parser = crate::bounds::count::<1, 4_096>, default_value_t = 32)]
    batch_size: usize,
    /// Continue an interrupted run from its journal.
    #[arg(long)]
    resume: bool,
    /// Evaluate only shard I of N of the records (contiguous, in whole batches); --json then
    /// journals every record's outcome, and `alens merge` joins the shards.
    #[arg(long, value_name = "I/N", value_parser = crate::bounds::shard, allow_hyphen_values = true, requires = "json")]
    shard: Option<probe::shard::ShardSpec>,
}

pub fn run(args: EvalArgs) -> Result<()> {
    let mut inputs = args.model.input_paths();
    inputs.extend(args.data.clone());
    crate::outputs::check(&[args.json.as_ref(), args.outputs.as_ref()], &inputs)?;
    let ckpt = args.model.load()?;
    let template = args.model.template()?;
    let data = args.data.unwrap_or_else(|| args.model.default_test_records());
    let mut records = read_jsonl(&data)?;
    let provenance = crate::outputs::provenance(&ckpt, None)?;
    let options = serde_json::json!({"template": template.as_str(), "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size});
    let mut settings = serde_json::json!({"command": "eval", "data": crate::outputs::file_hash(&data)?, "model": provenance.model.content_hash,
                                      "template": template.as_str(), "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size});
    let shard = match args.shard {
        Some(spec) => {
            let block = spec.batch_range(records.len(), args.batch_size);
            let info = crate::outputs::shard_info("eval", spec, &block, records.len(), &data, &provenance, options)?;
            records = records.drain(block).collect();
            settings["shard"] = spec.to_string().into();
            Some(info)
        }
        None => None,
    };
    let mut journal = crate::outputs::journal(
        &[args.json.as_ref(), args.outputs.as_ref()],
        settings,
        &ckpt,
        args.resume,
    )?;
    let report = evaluate(
        &ckpt,
        &template,
        &records,
        args.max_new_tokens,
        args.batch_size,
        journal.as_mut(),
    )?;
    println!(
        "{:<12} {:>5} {:>11} {:>14} {:>10}",
        "category", "n", "copy exact", "correct exact", "magnitude"
    );
    let row = |name: &str, s: &steer::eval::EvalScores| {
        println!(
            "{name:<12} {:>5} {:>10.1}% {:>13.1}% {:>10.3}",
            s.n,
            100.0 * s.copy_exact,
            100.0 * s.correct_exact,
            s.mean_correction_magnitude
        )
    };
    for (name, scores) in &report.per_category {
        row(name, scores);
    }
    row("all", &report.overall);
    // Both outputs, or neither: each goes into place once both are written.
    let mut outputs = probe::io::OutputSet::new();
    if let Some(path) = &args.json {
        let report = steer::eval::EvalReport {
            provenance: Some(provenance.clone()),
            shard: shard.map(|shard| steer::eval::EvalShard {
                shard,
                outcomes: report.outcomes.clone(),
            }),
            ..report.clone()
        };
        outputs.write(path, &serde_json::to_vec_pretty(&report)?)?;
    }
    if let Some(path) = &args.outputs {
        outputs.write(path, &report.outputs_jsonl(&records)?)?;
    }
    outputs.commit()?;
    if let Some(journal) = journal {
        journal.finish()?;
    }
    Ok(())
}
