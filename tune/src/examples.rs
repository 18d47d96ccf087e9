//! Training examples for an Aligner: the prompt, then the target (the correction, or for an
//! identity warm-up the answer) and EOS; the loss counts only the target tokens, as Aligner's
//! supervised fine-tuning does.

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use probe::model::{AlignerTokenizer, Autograd};
use probe::stimuli::StimulusRecord;
use probe::{AlignerTemplate, Model, NoHooks, Positions};

/// One training sequence: prompt ids, then the target from `target_start`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub ids: Vec<u32>,
    pub target_start: usize,
}

/// `target` picks what a record is trained to output: its correction, or its answer.
pub fn encode_examples(
    tokenizer: &AlignerTokenizer,
    template: &AlignerTemplate,
    records: &[StimulusRecord],
    eos: u32,
    target: fn(&StimulusRecord) -> Option<&str>,
) -> Result<Vec<Example>> {
    records
        .iter()
        .map(|r| {
            let target_text = target(r).context("training records need a correction")?;
            let mut ids = tokenizer.encode(&template.render(&r.question, &r.answer))?;
            let target_start = ids.len();
            // The target follows "ASSISTANT:" after a space, as the model will see it.
            ids.extend(tokenizer.encode_plain(&format!(" {target_text}"))?);
            ids.push(eos);
            Ok(Example { ids, target_start })
        })
        .collect()
}

pub fn correction_of(r: &StimulusRecord) -> Option<&str> {
    r.correction.as_deref()
}

pub fn answer_of(r: &StimulusRecord) -> Option<&str> {
    Some(r.answer.as_str())
}

/// Mean cross-entropy of the target tokens of `batch` (right-padded with `pad`).
pub fn batch_loss(model: &Model, batch: &[&Example], pad: u32, device: &Device) -> Result<Tensor> {
    let width = batch.iter().map(|e| e.ids.len()).max().unwrap_or(1);
    let mut ids = Vec::with_capacity(batch.len() * width);
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for (b, e) in batch.iter().enumerate() {
        ids.extend_from_slice(&e.ids);
        ids.extend(std::iter::repeat_n(pad, width - e.ids.len()));
        // Position p predicts token p + 1; only target tokens count.
        for p in e.target_start - 1..e.ids.len() - 1 {
            rows.push((b * width + p) as u32);
            targets.push(e.ids[p + 1]);
        }
    }
    let input = Tensor::from_vec(ids, (batch.len(), width), device)?;
    let positions = Positions::contiguous(batch.len(), width, 0, device)?;
    let normed = model.forward(&input, &positions, None, &mut NoHooks)?;
    let d = normed.dim(2)?;
    let picked = normed
        .reshape((batch.len() * width, d))?
        .index_select(&Tensor::new(rows, device)?, 0)?;
    let logits = model.logits(&picked)?;
    if model.autograd() == Autograd::Fused {
        return Ok(kernels::fused::cross_entropy(&logits, &targets)?);
    }
    Ok(candle_nn::loss::cross_entropy(&logits, &Tensor::new(targets, device)?)?)
}
