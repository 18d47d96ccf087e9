use crate::model_arg;
use anyhow::Result;
use clap::Args;
use probe::lat::{build_pairs, fit, read_activations, LatMethod, ReadPosition};
use probe::stimuli::read_jsonl;
use std::path::PathBuf;
use steer::steering::{SteerMode, SteerPositions};
use steer::vectors::ControlVectors;

/// LAT: extract the copy-vs-correct reading vector at every layer.
///
/// Builds copy/correct pairs sharing a question from the stimulus records, reads each
/// record's blocks.{i}.hook_resid_post at the last prompt token (or the mean over the answer
/// tokens), and fits one direction per layer (pca: RepE's first principal component of pair
/// differences; mean-diff: difference of class means). Positive projection = correct.
/// Prints held-out pair accuracy and explained variance per layer, and writes layers.{i} =
/// unit direction x projection std (the vector added at alpha = 1) with a .json sidecar.
///
/// --gguf also writes llama.cpp's control-vector layout: our layer i (added to the output of
/// decoder layer i) is direction.{i}; llama.cpp has no slot for layer 0, so it is left out.
///
/// Example:
///   alens lat --data notebooks-data/stimuli/copy-correct.jsonl --out vectors.safetensors --seed 0
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct LatArgs {
    #[command(flatten)]
    model: model_arg::ModelArgs,
    /// Stimulus records (question, answer, correction). Default: the LAT stimuli shipped beside the model (copy-correct.jsonl), else the mini-aligner's.
    #[arg(long)]
    data: Option<PathBuf>,
    /// pca or mean-diff.
    #[arg(long, default_value = "pca")]
    method: LatMethod,
    /// Layers to save: all, or a list such as 2-4.
    #[arg(long, default_value = "all")]
    layers: String,
    /// last (the last prompt token) or answer-mean.
    #[arg(long, default_value = "last")]
    position: ReadPosition,
    /// Share of pairs held out for accuracy; 0 fits on all (accuracy is then training accuracy).
    #[arg(long, default_value_t = 0.25)]
    test_fraction: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    out: PathBuf,
    /// Also draw accuracy and explained variance per layer (.png or .svg).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Also export a llama.cpp control-vector GGUF.
    #[arg(long)]
    gguf: Option<PathBuf>,
    /// Records per forward pass when reading activations.
    /// Bounds: 1 to 4,096.
    #[arg(long, value_parser = crate::bounds::count::<1, 4_096>, default_value_t = 8)]
    batch_size: usize,
    /// Record in the sidecar how these vectors steer by default (generate and sweep use it
    /// when their own --steer-mode is not given).
    #[arg(long)]
    steer_mode: Option<SteerMode>,
    /// Record in the sidecar the positions steered by default.
    #[arg(long)]
    steer_positions: Option<SteerPositions>,
    /// Record in the sidecar these layers (e.g. 8-16) as the ones to steer by default,
    /// instead of the middle layers LAT accuracy picks.
    #[arg(long)]
    steer_layers: Option<String>,
    /// Record in the sidecar the default sweep grid (comma-separated, in the mode's unit).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    alphas: Option<Vec<f64>>,
    /// Only read the activations of shard I of N of the records (a contiguous block, in
    /// order) and write them to --out; `lat --from-shards` fits the vectors from the shards.
    #[arg(long, value_name = "I/N", value_parser = crate::bounds::shard, allow_hyphen_values = true, conflicts_with_all = ["from_shards", "plot", "gguf"])]
    shard: Option<probe::shard::ShardSpec>,
    /// Fit from the activations the `lat --shard` runs read, instead of reading them.
    #[arg(long, num_args = 1.., value_name = "SHARD")]
    from_shards: Option<Vec<PathBuf>>,
}

pub fn run(args: LatArgs) -> Result<()> {
    let data = args.data.clone().unwrap_or_else(|| args.model.default_stimuli());
    let mut inputs = args.model.input_paths();
    inputs.push(data.clone());
    inputs.extend(args.from_shards.iter().flatten().cloned());
    if let Some(spec) = args.shard {
        return read_shard(&args, spec, &data, &inputs);
    }
    let sidecar = steer::vectors::sidecar_path(&args.out);
    crate::outputs::check_with_figures(
        &[Some(&args.out), Some(&sidecar), args.gguf.as_ref()],
        &[args.plot.as_ref()],
        &inputs,
    )?;
    if sidecar.exists() && !steer::vectors::is_sidecar(&sidecar) {
        anyhow::bail!(
            "refusing to overwrite {}: the vectors' sidecar would go there, and it is not one alens wrote",
            sidecar.display()
        );
    }
    let ckpt = args.model.load()?;
    let template = args.model.template()?;
    let keep = probe::capture::parse_layers(&args.layers, ckpt.config.num_hidden_layers)?;
    let records = read_jsonl(&data)?;
    let pairs = build_pairs(&records)?;
    let (activations, shards) = match &args.from_shards {
        Some(files) => {
            let (layers, d) = (ckpt.config.num_hidden_layers, ckpt.config.hidden_size);
            let (set, activations) = probe::lat::read_activation_shards(files, layers, d)?;
            let info = &set[0].1;
            let (path, model) = (
                set[0].0.display(),
                crate::outputs::provenance(&ckpt, None)?.model.content_hash,
            );
            anyhow::ensure!(
                info.data_sha256 == crate::outputs::file_hash(&data)?,
                "{path} was read from other data than {}",
                data.display()
            );
            anyhow::ensure!(info.model == model, "{path} was read with another model");
            anyhow::ensure!(
                info.options["position"] == args.position.name(),
                "{path} was read at another --position"
            );
            anyhow::ensure!(info.total == records.len(), "{path} holds another number of records");
            anyhow::ensure!(
                info.options["batch_size"] == args.batch_size,
                "{path} was read with another --batch-size"
            );
            (activations, probe::shard::shard_list(&set))
        }
        None => (
            read_activations(&ckpt, &template, &records, args.position, args.batch_size)?,
            Vec::new(),
        ),
    };
    let result = fit(&activations, &pairs, args.method, args.test_fraction, args.seed)?;

    let accuracy_label = if result.accuracy_is_training {
        "train acc"
    } else {
        "held-out acc"
    };
    println!(
        "{} pairs ({} fit, {} held out), method {}, position {}",
        pairs.len(),
        result.train_pairs,
        result.test_pairs,
        args.method.name(),
        args.position.name()
    );
    println!(
        "{:>5} {:>13} {:>19} {:>10}",
        "layer", accuracy_label, "explained variance", "scale"
    );
    let kept: Vec<&probe::lat::ReadingVector> = result.vectors.iter().filter(|v| keep.contains(&v.layer)).collect();
    for v in &kept {
        println!(
            "{:>5} {:>12.1}% {:>19.3} {:>10.3}",
            v.layer,
            100.0 * v.accuracy,
            v.explained_variance,
            v.scale
        );
    }
    let chosen_layers = args
        .steer_layers
        .as_deref()
        .map(|spec| probe::capture::parse_layers(spec, ckpt.config.num_hidden_layers))
        .transpose()?;
    if let Some(bad) = chosen_layers.iter().flatten().find(|l| !keep.contains(l)) {
        anyhow::bail!("--steer-layers names layer {bad}, which --layers does not save");
    }
    let steer_layers_chosen = chosen_layers.is_some();
    let mut vectors = ControlVectors::from_lat(&ckpt, &result, args.position, args.seed, &keep, chosen_layers);
    if let Some(metadata) = vectors.metadata.as_mut() {
        metadata.steer_mode = args.steer_mode;
        metadata.steer_positions = args.steer_positions;
        metadata.alphas = args.alphas.clone().unwrap_or_default();
        metadata.steer_layers_chosen = steer_layers_chosen;
        let mut provenance = crate::outputs::provenance(&ckpt, Some(args.seed))?;
        provenance.shards = shards;
        metadata.provenance = Some(provenance);
        println!("default steering layers: {:?}", metadata.default_layers);
    }
    // All of the outputs, or none: each goes into place once every one is written.
    let mut outputs = probe::io::OutputSet::new();
    vectors.save_into(&args.out, &mut outputs)?;
    if let Some(plot) = &args.plot {
        let xs: Vec<f64> = kept.iter().map(|v| v.layer as f64).collect();
        let series = [
            viz::Series {
                name: accuracy_label.replace("acc", "pair accuracy"),
                ys: kept.iter().map(|v| v.accuracy).collect(),
            },
            viz::Series {
                name: "explained variance".into(),
                ys: kept.iter().map(|v| v.explained_variance).collect(),
            },
        ];
        let title = format!("LAT copy-vs-correct ({}, {})", args.method.name(), args.position.name());
        outputs.write_through(plot, |figure| {
            viz::line_chart(figure, &title, "layer", "share", &xs, &series, (0.0, 1.05))
        })?;
    }
    let skipped = match &args.gguf {
        Some(gguf) => Some(outputs.write_through(gguf, |written| {
            let skipped = vectors.save_gguf(written, &format!("{:?}", ckpt.config.architecture).to_lowercase())?;
            // Read it back: the export is only done when it loads as what we wrote.
            let back = ControlVectors::load(written, ckpt.config.hidden_size, ckpt.config.num_hidden_layers)?;
            let expected = vectors.vectors.len() - skipped.len();
            anyhow::ensure!(
                back.vectors.len() == expected,
                "GGUF read-back found {} vectors, wrote {expected}",
                back.vectors.len()
            );
            Ok(skipped)
        })?),
        None => None,
    };
    outputs.commit()?;
    println!("wrote {} (+ .json sidecar)", args.out.display());
    if let Some(plot) = &args.plot {
        println!("wrote {}", plot.display());
    }
    if let (Some(gguf), Some(skipped)) = (&args.gguf, skipped) {
        println!(
            "wrote {} (llama.cpp control vector{})",
            gguf.display(),
            if skipped.is_empty() {
                String::new()
            } else {
                "; layer 0 has no llama.cpp slot and was left out".to_string()
            }
        );
    }
    Ok(())
}

/// `lat --shard`: reads the activations of the shard's block of records and writes them, with
/// the shard's identity, to --out.
fn read_shard(args: &LatArgs, spec: probe::shard::ShardSpec, data: &std::path::Path, inputs: &[PathBuf]) -> Result<()> {
    crate::outputs::check(&[Some(&args.out)], inputs)?;
    anyhow::ensure!(
        probe::io::TensorFormat::from_path(&args.out)? == probe::io::TensorFormat::Safetensors,
        "lat --shard writes activations: give a .safetensors --out"
    );
    let ckpt = args.model.load()?;
    let template = args.model.template()?;
    let records = read_jsonl(data)?;
    // The whole set must make pairs, or the fit after the merge would fail.
    build_pairs(&records)?;
    let block = spec.batch_range(records.len(), args.batch_size * probe::batched::SORT_WINDOW);
    let d = ckpt.config.hidden_size;
    let activations = read_activations(
        &ckpt,
        &template,
        &records[block.clone()],
        args.position,
        args.batch_size,
    )?;
    let provenance = crate::outputs::provenance(&ckpt, None)?;
    let options = serde_json::json!({"position": args.position.name(), "template": template.as_str(), "batch_size": args.batch_size});
    let info = crate::outputs::shard_info("lat", spec, &block, records.len(), data, &provenance, options)?;
    let mut metadata = std::collections::BTreeMap::new();
    metadata.insert(probe::capture::SHARD_KEY.to_string(), serde_json::to_string(&info)?);
    metadata.insert("provenance".to_string(), serde_json::to_string(&provenance)?);
    probe::lat::write_activation_shard(&args.out, &activations, d, block.len(), &metadata)?;
    println!(
        "wrote the activations of records {}..{} of {} (shard {spec}) to {}",
        block.start,
        block.end,
        records.len(),
        args.out.display()
    );
    Ok(())
}
