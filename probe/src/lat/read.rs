//! Reading activations for LAT, and the LAT scan of one prompt.

use super::ReadPosition;
use crate::batched::run_batched;
use crate::hooks::HookPoint;
use crate::model::{AlignerTemplate, AlignerTokenizer, Checkpoint};
use crate::stimuli::StimulusRecord;
use anyhow::{bail, Result};
use ndarray::{Array1, Array2};

/// Activations of every record at every layer's `resid_post`: one `[records, d]` array per
/// layer, at the chosen position of the Aligner prompt. Records run batched through the same
/// path as capture.
pub fn read_activations(
    ckpt: &Checkpoint,
    template: &AlignerTemplate,
    records: &[StimulusRecord],
    position: ReadPosition,
    batch_size: usize,
) -> Result<Vec<Array2<f32>>> {
    let tokenizer = ckpt.tokenizer()?;
    let (layers, d) = (ckpt.config.num_hidden_layers, ckpt.config.hidden_size);
    if records.is_empty() {
        // A shard with no records (more shards than records).
        return Ok(vec![Array2::<f32>::zeros((0, d)); layers]);
    }
    let mut sequences = Vec::with_capacity(records.len());
    let mut spans = Vec::with_capacity(records.len());
    for r in records {
        let ids = tokenizer.encode(&template.render(&r.question, &r.answer))?;
        if ids.is_empty() {
            bail!("the prompt for question {:?} has no tokens", r.question);
        }
        let last = ids.len() - 1;
        spans.push(match position {
            ReadPosition::Last => (last, ids.len()),
            ReadPosition::AnswerMean => answer_span(tokenizer, template, &r.question, &r.answer, ids.len())?,
        });
        sequences.push(ids);
    }
    let points: Vec<HookPoint> = (0..layers).map(HookPoint::resid_post).collect();
    let mut out = vec![Array2::<f32>::zeros((records.len(), d)); layers];
    run_batched(ckpt, &sequences, &points, batch_size, "activations", |batch| {
        for (row, &i) in batch.sequences.iter().enumerate() {
            let (from, to) = spans[i];
            for (layer, &point) in points.iter().enumerate() {
                let mean: Vec<f32> = batch.rows(point, row)?.narrow(0, from, to - from)?.mean(0)?.to_vec1()?;
                if mean.iter().any(|v| !v.is_finite()) {
                    bail!("non-finite activation at layer {layer} for record {}", i + 1);
                }
                out[layer].row_mut(i).assign(&Array1::from(mean));
            }
        }
        Ok(())
    })?;
    Ok(out)
}

/// The tokens `start..end` of an Aligner prompt of `prompt_len` tokens that hold the upstream
/// `answer`. The answer spans from the end of the prompt text before it to the end of the text
/// through it; token boundaries may merge one token at either edge, and an empty answer leaves
/// one token (the boundary) to stand for it.
pub fn answer_span(
    tokenizer: &AlignerTokenizer,
    template: &AlignerTemplate,
    question: &str,
    answer: &str,
    prompt_len: usize,
) -> Result<(usize, usize)> {
    if prompt_len == 0 {
        bail!("the prompt for question {question:?} has no tokens");
    }
    let before = template.render(question, "\u{0}");
    let head = before.split('\u{0}').next().unwrap_or("");
    let start = tokenizer.encode(head.trim_end())?.len().min(prompt_len - 1);
    let end = tokenizer
        .encode(&format!("{head}{answer}"))?
        .len()
        .clamp(start + 1, prompt_len);
    Ok((start, end))
}

/// The tensor of layer `layer` in a LAT reading shard.
fn shard_tensor(layer: usize) -> String {
    HookPoint::resid_post(layer).to_string()
}

/// Writes a LAT reading shard: each layer's `[records, d]` activations of the shard's block,
/// with `metadata` (its [`crate::shard::ShardInfo`] under [`crate::capture::SHARD_KEY`]).
pub fn write_activation_shard(
    out: &std::path::Path,
    activations: &[Array2<f32>],
    d: usize,
    records: usize,
    metadata: &std::collections::BTreeMap<String, String>,
) -> Result<()> {
    let specs = (0..activations.len())
        .map(|l| crate::io::TensorSpec::f32(shard_tensor(l), vec![records, d]))
        .collect();
    let mut writer = crate::io::TensorFileWriter::create(out, specs, metadata)?;
    for (layer, a) in activations.iter().enumerate() {
        let values: Vec<f32> = a.iter().copied().collect();
        writer.write_f32_rows(&shard_tensor(layer), 0, &values)?;
    }
    writer.finish()
}

/// Reads LAT reading shards (any order) back into the activations of the whole record set,
/// as [`read_activations`] gives them; refuses a set that is not one run's shards 0..N.
pub fn read_activation_shards(
    shards: &[std::path::PathBuf],
    layers: usize,
    d: usize,
) -> Result<(crate::shard::ShardSet, Vec<Array2<f32>>)> {
    use anyhow::Context;
    let mut set = Vec::new();
    for path in shards {
        let info = crate::capture::shard_info(path)?;
        if info.kind != "lat" {
            bail!("{} is a {} shard, not a LAT reading shard", path.display(), info.kind);
        }
        set.push((path.clone(), info));
    }
    let set = crate::shard::check_set(set)?;
    let total = set[0].1.total;
    let mut out = vec![Array2::<f32>::zeros((total, d)); layers];
    for (path, info) in &set {
        let bytes = std::fs::read(path).with_context(|| format!("failed to read {}", path.display()))?;
        let file = safetensors::SafeTensors::deserialize(&bytes)
            .with_context(|| format!("{} is not a safetensors file", path.display()))?;
        for (layer, array) in out.iter_mut().enumerate() {
            let name = shard_tensor(layer);
            let view = file
                .tensor(&name)
                .with_context(|| format!("{} has no {name}: not this model's LAT shard", path.display()))?;
            if view.dtype() != safetensors::Dtype::F32 || view.shape() != [info.records, d] {
                bail!("{}: {name} is not [{}, {d}] f32", path.display(), info.records);
            }
            for (k, row) in view.data().chunks_exact(4 * d).enumerate() {
                let values: Vec<f32> = row
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                array.row_mut(info.first + k).assign(&Array1::from(values));
            }
        }
    }
    Ok((set, out))
}
