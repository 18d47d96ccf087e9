//! Reading activations for LAT, and the LAT scan of one prompt.

use super::ReadPosition;
use crate::batched::run_batched;
use crate::hooks::HookPoint;
use crate::model::{AlignerTemplate, Checkpoint};
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
                let end = tokenizer
                    .encode(&format!("{head}{}", r.answer))?
                    .len()
                    .clamp(start + 1, ids.len());
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
