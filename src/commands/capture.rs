use crate::model_arg;
use anyhow::{bail, Context, Result};
use clap::Args;
use probe::capture::{capture_to_file, CaptureRequest, PositionMode};
use probe::stimuli::read_jsonl;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Run inputs through the model and save activations at named hook points.
///
/// Tensors are named by hook point (blocks.3.hook_resid_post), shape [tokens, d_model] for
/// one prompt or [records, d_model] with --positions last; `logits` holds the final logits.
/// --token-ids feeds ids exactly as given (no BOS added); --prompt and --data go through the
/// tokenizer's post-processor, like HF's tokenizer(text). --data records are rendered through
/// the Aligner template.
///
/// A .safetensors output is written in place at OUT.partial, with finished batches listed in
/// OUT.partial.jsonl: a capture killed outright (SIGKILL, a crash) continues with --resume
/// and ends with the file an uninterrupted run writes. Ctrl-C removes both.
///
/// Examples:
///   alens capture --model tests/golden/llama_gqa --token-ids 1,5,9,2 --points resid_post,logits --out x.safetensors
///   alens capture --data notebooks-data/aligner-135m/test.jsonl --positions last --out acts.safetensors [--resume]
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct CaptureArgs {
    #[command(flatten)]
    model: model_arg::ModelArgs,
    /// One prompt, tokenized with the checkpoint's tokenizer.
    #[arg(long, conflicts_with_all = ["token_ids", "data"])]
    prompt: Option<String>,
    /// Comma-separated token ids, fed exactly as given.
    #[arg(long, value_delimiter = ',', conflicts_with = "data")]
    token_ids: Option<Vec<u32>>,
    /// JSONL stimulus records ({"question", "answer", ...}), rendered through the template.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Hook points: short names (embed, resid_pre, attn_out, resid_mid, mlp_out, resid_post,
    /// ln_final), full names (blocks.3.hook_attn_out), `logits`, or `all`.
    #[arg(long, default_value = "resid_post")]
    points: String,
    /// Layers for short per-layer names: `all` or a list such as 0-3,7.
    #[arg(long, default_value = "all")]
    layers: String,
    /// Token positions to keep: all, or last (one row per sequence).
    #[arg(long, default_value = "all")]
    positions: PositionMode,
    /// Output file: .safetensors or .npz.
    #[arg(long)]
    out: PathBuf,
    /// Sequences per forward pass.
    /// Bounds: 1 to 4,096.
    #[arg(long, value_parser = crate::bounds::count::<1, 4_096>, default_value_t = 8)]
    batch_size: usize,
    /// Continue a capture that was killed, from OUT.partial and its journal.
    #[arg(long)]
    resume: bool,
    /// Capture only shard I of N of the --data records (a contiguous block, in order); join
    /// the shards with `alens merge`.
    #[arg(long, value_name = "I/N", value_parser = crate::bounds::shard, allow_hyphen_values = true, requires = "data")]
    shard: Option<probe::shard::ShardSpec>,
}

pub fn run(args: CaptureArgs) -> Result<()> {
    let mut inputs = args.model.input_paths();
    inputs.extend(args.data.clone());
    crate::outputs::check(&[Some(&args.out)], &inputs)?;
    let ckpt = args.model.load()?;
    let template = args.model.template()?;
    let mut block = None;
    let sequences: Vec<Vec<u32>> = if let Some(ids) = &args.token_ids {
        vec![ids.clone()]
    } else if let Some(prompt) = &args.prompt {
        vec![ckpt
            .tokenizer()
            .context("--prompt needs a tokenizer; use --token-ids")?
            .encode(prompt)?]
    } else if let Some(path) = &args.data {
        let tokenizer = ckpt.tokenizer().context("--data needs a tokenizer; use --token-ids")?;
        let records = read_jsonl(path)?;
        let window = args.batch_size * probe::batched::SORT_WINDOW;
        let range = args
            .shard
            .map_or(0..records.len(), |s| s.batch_range(records.len(), window));
        block = Some((range.clone(), records.len()));
        records[range]
            .iter()
            .map(|r| tokenizer.encode(&template.render(&r.question, &r.answer)))
            .collect::<Result<_>>()
            .with_context(|| format!("tokenizing {}", path.display()))?
    } else {
        bail!("give one input: --prompt TEXT, --token-ids 1,2,3 or --data FILE.jsonl");
    };
    let request = CaptureRequest::parse(
        &args.points,
        &args.layers,
        ckpt.config.num_hidden_layers,
        args.positions,
    )?;
    let mut metadata = BTreeMap::new();
    metadata.insert("model".to_string(), ckpt.path.display().to_string());
    metadata.insert("positions".to_string(), args.positions.name().to_string());
    metadata.insert(
        "provenance".to_string(),
        serde_json::to_string(&crate::outputs::provenance(&ckpt, None)?)?,
    );
    if args.data.is_some() {
        metadata.insert("template".to_string(), template.as_str().to_string());
    }
    let resumable = probe::io::TensorFormat::from_path(&args.out)? == probe::io::TensorFormat::Safetensors;
    if let (Some(spec), Some((range, total)), Some(data)) = (args.shard, &block, &args.data) {
        anyhow::ensure!(
            resumable,
            "--shard needs a .safetensors output (alens merge joins those)"
        );
        let options = serde_json::json!({"points": &args.points, "layers": &args.layers, "positions": args.positions.name(),
                                         "batch_size": args.batch_size, "template": template.as_str()});
        let provenance = crate::outputs::provenance(&ckpt, None)?;
        let info = crate::outputs::shard_info("capture", spec, range, *total, data, &provenance, options)?;
        metadata.insert(probe::capture::SHARD_KEY.to_string(), serde_json::to_string(&info)?);
    }
    if args.resume && !resumable {
        bail!("--resume needs a .safetensors output (an .npz is assembled at the end)");
    }
    let mut journal = if resumable {
        // The run is what the output will hold: the sequences, what is kept, and the metadata.
        let settings = serde_json::json!({"sequences": &sequences, "request": format!("{request:?}"), "batch_size": args.batch_size, "metadata": &metadata});
        let fingerprint = crate::outputs::run_fingerprint(settings, &ckpt)?;
        Some(probe::journal::Journal::<usize>::open(
            &probe::journal::Journal::<usize>::path_for(&args.out),
            &fingerprint,
            args.resume,
        )?)
    } else {
        None
    };
    let staging = probe::capture::Resumable::staging_for(&args.out);
    let resume = journal
        .as_mut()
        .map(|journal| probe::capture::Resumable { staging, journal });
    let summary = capture_to_file(
        &ckpt,
        &sequences,
        &request,
        &args.out,
        args.batch_size,
        metadata,
        resume,
    )?;
    println!(
        "wrote {} tensors for {} sequences ({} tokens) to {} in {:.2}s ({:.0} tokens/s)",
        summary.tensors.len(),
        summary.sequences,
        summary.tokens,
        args.out.display(),
        summary.seconds,
        summary.tokens as f64 / summary.seconds.max(1e-9)
    );
    Ok(())
}
