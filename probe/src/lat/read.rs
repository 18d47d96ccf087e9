//! Reading activations for LAT, and the LAT scan of one prompt.

use super::ReadPosition;
use crate::batched::run_batched;
use crate::hooks::HookPoint;
use crate::model::{AlignerTemplate, Checkpoint};
use crate::stimuli::StimulusRecord;
use anyhow::{bail, Result};
use candle_core::Tensor;
use ndarray::{Array1, Array2};
use std::collections::BTreeMap;

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
            ReadPosition::AnswerMean => {
                // The answer spans from the end of the prompt text before it to the end of the
                // text through it; token boundaries may merge one token at either edge, and an
                // empty answer leaves one token (the boundary) to stand for it.
                let before = template.render(&r.question, "\u{0}");
                let head = before.split('\u{0}').next().unwrap_or("");
                let start = tokenizer.encode(head.trim_end())?.len().min(last);
                let end = tokenizer.encode(&format!("{head}{}", r.answer))?.len().clamp(start + 1, ids.len());
                (start, end)
            }
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

/// LAT scan: for every token of `ids` and every layer in `directions`, the projection of
/// `blocks.{l}.hook_resid_post` on the layer's unit direction, as `(p - midpoint) / scale`
/// (raw projection when no midpoint/scale is known). Rows are tokens, columns the layers in
/// ascending order.
pub fn scan(ckpt: &Checkpoint, ids: &[u32], directions: &BTreeMap<usize, (Vec<f32>, f64, f64)>) -> Result<Vec<Vec<f64>>> {
    if ids.is_empty() {
        bail!("nothing to scan: the prompt has no tokens");
    }
    if let Some(bad) = directions.keys().find(|&&l| l >= ckpt.config.num_hidden_layers) {
        bail!("layer {bad} is not in the model ({} layers)", ckpt.config.num_hidden_layers);
    }
    let points: Vec<HookPoint> = directions.keys().map(|&l| HookPoint::resid_post(l)).collect();
    let mut resid_post = BTreeMap::new();
    run_batched(ckpt, &[ids.to_vec()], &points, 1, "scan", |batch| {
        for &point in &points {
            resid_post.insert(point, batch.rows(point, 0)?);
        }
        Ok(())
    })?;
    let mut columns = Vec::new();
    for (layer, (direction, midpoint, scale)) in directions {
        let acts = &resid_post[&HookPoint::resid_post(*layer)];
        let norm = direction.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt().max(1e-12);
        let unit_dir = Tensor::new(direction.as_slice(), ckpt.model.device())?.affine(1.0 / norm, 0.0)?;
        let proj: Vec<f32> = acts.matmul(&unit_dir.unsqueeze(1)?)?.flatten_all()?.to_vec1()?;
        let scale = if *scale > 0.0 { *scale } else { 1.0 };
        columns.push(proj.into_iter().map(|p| (p as f64 - midpoint) / scale).collect::<Vec<f64>>());
    }
    Ok((0..ids.len()).map(|t| columns.iter().map(|c| c[t]).collect()).collect())
}
