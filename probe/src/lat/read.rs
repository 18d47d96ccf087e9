//! Reading activations for LAT, and the LAT scan of one prompt.

use super::ReadPosition;
use crate::hooks::{HookPoint, Hooks, Site};
use crate::model::{AlignerTemplate, Checkpoint, Positions};
use crate::stimuli::StimulusRecord;
use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use ndarray::{Array1, Array2};
use std::collections::BTreeMap;

/// Activations of every record at every layer's `resid_post`: one `[records, d]` array per
/// layer, at the chosen position of the Aligner prompt.
pub fn read_activations(
    ckpt: &Checkpoint,
    template: &AlignerTemplate,
    records: &[StimulusRecord],
    position: ReadPosition,
) -> Result<Vec<Array2<f32>>> {
    let tokenizer = ckpt.tokenizer()?;
    let (layers, d) = (ckpt.config.num_hidden_layers, ckpt.config.hidden_size);
    let mut out = vec![Array2::<f32>::zeros((records.len(), d)); layers];
    let progress = crate::progress::bar(records.len() as u64, "activations");
    for (i, r) in records.iter().enumerate() {
        let prompt = template.render(&r.question, &r.answer);
        let ids = tokenizer.encode(&prompt)?;
        let span = match position {
            ReadPosition::Last => (ids.len() - 1, ids.len()),
            ReadPosition::AnswerMean => {
                // The answer spans from the end of the prompt text before it to the end of the
                // text through it; token boundaries may merge one token at either edge.
                let before = template.render(&r.question, "\u{0}");
                let head = before.split('\u{0}').next().unwrap_or("");
                let start = tokenizer.encode(head.trim_end())?.len();
                let end = tokenizer.encode(&format!("{head}{}", r.answer))?.len().clamp(start + 1, ids.len());
                (start.min(ids.len() - 1), end)
            }
        };
        for (layer, acts) in resid_post_of(ckpt, &ids)? {
            let row: Vec<f32> = acts.narrow(0, span.0, span.1 - span.0)?.mean(0)?.to_vec1()?;
            if row.iter().any(|v| !v.is_finite()) {
                bail!("non-finite activation at layer {layer} for record {}", i + 1);
            }
            out[layer].row_mut(i).assign(&Array1::from(row));
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    Ok(out)
}

/// Keeps every `resid_post` of one sequence, `[tokens, d]` per layer.
struct KeepResidPost(BTreeMap<usize, Tensor>);

impl Hooks for KeepResidPost {
    fn wants(&self, point: HookPoint) -> bool {
        point.site == Site::ResidPost
    }
    fn on(&mut self, point: HookPoint, activation: &Tensor) -> Result<Option<Tensor>> {
        self.0.insert(point.layer, activation.get(0)?);
        Ok(None)
    }
}

/// Runs one sequence and returns every layer's `resid_post`, `[tokens, d]` each: what both
/// LAT reading and the scan start from.
fn resid_post_of(ckpt: &Checkpoint, ids: &[u32]) -> Result<BTreeMap<usize, Tensor>> {
    let input = Tensor::new(ids, ckpt.model.device())?.unsqueeze(0)?;
    let positions = Positions::contiguous(1, ids.len(), 0, ckpt.model.device())?;
    let mut keep = KeepResidPost(BTreeMap::new());
    ckpt.model.forward(&input, &positions, None, &mut keep)?;
    Ok(keep.0)
}

/// LAT scan: for every token of `ids` and every layer in `directions`, the projection of
/// `blocks.{l}.hook_resid_post` on the layer's unit direction, as `(p - midpoint) / scale`
/// (raw projection when no midpoint/scale is known). Rows are tokens, columns the layers in
/// ascending order.
pub fn scan(ckpt: &Checkpoint, ids: &[u32], directions: &BTreeMap<usize, (Vec<f32>, f64, f64)>) -> Result<Vec<Vec<f64>>> {
    if ids.is_empty() {
        bail!("nothing to scan: the prompt has no tokens");
    }
    let resid_post = resid_post_of(ckpt, ids)?;
    let mut columns = Vec::new();
    for (layer, (direction, midpoint, scale)) in directions {
        let acts = resid_post.get(layer).with_context(|| format!("layer {layer} is not in the model"))?;
        let norm = direction.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt().max(1e-12);
        let unit_dir = Tensor::new(direction.as_slice(), ckpt.model.device())?.affine(1.0 / norm, 0.0)?;
        let proj: Vec<f32> = acts.matmul(&unit_dir.unsqueeze(1)?)?.flatten_all()?.to_vec1()?;
        let scale = if *scale > 0.0 { *scale } else { 1.0 };
        columns.push(proj.into_iter().map(|p| (p as f64 - midpoint) / scale).collect::<Vec<f64>>());
    }
    Ok((0..ids.len()).map(|t| columns.iter().map(|c| c[t]).collect()).collect())
}
