//! KV-cached generation through the hooked model: greedy, or temperature / top-p sampling
//! with a seed. Hooks (a steering vector, a capture) apply at every step.

use crate::journal::Journaled;
pub use crate::output::AlignerOutput;
use anyhow::{bail, Context, Result};
use candle_core::{Tensor, D};
use probe::hooks::Hooks;
use probe::{AlignerTemplate, Checkpoint, KvCache, Model, Positions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    Greedy,
    /// Temperature then nucleus (top-p) sampling, reproducible under `seed`.
    TopP {
        temperature: f64,
        top_p: f64,
        seed: u64,
    },
}

#[derive(Debug, Clone)]
pub struct GenerationConfig {
    pub max_new_tokens: usize,
    pub eos_token_ids: Vec<u32>,
    /// Keep going past EOS (for fixed-length comparisons).
    pub ignore_eos: bool,
    pub sampling: Sampling,
}

impl GenerationConfig {
    pub fn greedy(max_new_tokens: usize, eos_token_ids: Vec<u32>) -> Self {
        Self {
            max_new_tokens,
            eos_token_ids,
            ignore_eos: false,
            sampling: Sampling::Greedy,
        }
    }
}

/// Generates up to `max_new_tokens` after `prompt`, returning only the new ids (without a
/// final EOS). The prompt is fed once (prefill), then one token per step from the cache.
/// One prompt is a batch of one: no padding, so nothing is masked.
pub fn generate(model: &Model, prompt: &[u32], config: &GenerationConfig, hooks: &mut dyn Hooks) -> Result<Vec<u32>> {
    let mut rows = generate_batch(model, &[prompt.to_vec()], config, hooks)?;
    Ok(rows.pop().unwrap_or_default())
}

/// Generates for many prompts at once: prompts are left-padded to one width (padding masked,
/// rotary positions counted from each row's first real token, so a row yields what it would
/// alone, up to float rounding), then decoded together from one KV cache until every row has
/// hit EOS or `max_new_tokens`. Returns each row's new ids, as [`generate`] does. Sampling
/// draws rows in order from one seeded generator, so it is reproducible but not equal to
/// sampling each prompt alone.
pub fn generate_batch(
    model: &Model,
    prompts: &[Vec<u32>],
    config: &GenerationConfig,
    hooks: &mut dyn Hooks,
) -> Result<Vec<Vec<u32>>> {
    if prompts.is_empty() {
        return Ok(Vec::new());
    }
    let batch = PromptBatch::left_padded(model, prompts)?;
    if config.max_new_tokens == 0 {
        return Ok(vec![Vec::new(); prompts.len()]);
    }
    let mut cache = batch.cache_for(model, config.max_new_tokens);
    Ok(batch.decode(model, &mut cache, 0, config, hooks)?.generated)
}

/// Prompts left-padded to one width, as [`generate_batch`] feeds them: column `c` of row `r`
/// is a real token from `pad(r)` on, and every row's last prompt token is the last column.
/// Split out so a caller can run a shared prefix of the columns once and decode many variants
/// from copies of its KV cache (activation patching does).
pub struct PromptBatch {
    rows: usize,
    width: usize,
    pads: Vec<usize>,
    lens: Vec<usize>,
    ids: Tensor,
    positions: Tensor,
    key_mask: Tensor,
}

/// What [`PromptBatch::decode`] returns.
pub struct Decoded {
    /// Each row's new ids, without a final EOS.
    pub generated: Vec<Vec<u32>>,
    /// The logits of the first generated token, `[rows, vocab]` (f32).
    pub first_logits: Tensor,
}

impl PromptBatch {
    pub fn left_padded(model: &Model, prompts: &[Vec<u32>]) -> Result<Self> {
        let vocab = model.config().vocab_size;
        if prompts.is_empty() {
            bail!("no prompts to run");
        }
        for (row, prompt) in prompts.iter().enumerate() {
            if prompt.is_empty() {
                bail!("prompt {} is empty: cannot generate from it", row + 1);
            }
            if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= vocab) {
                bail!(
                    "prompt {} has token id {bad}, outside the vocabulary (size {vocab})",
                    row + 1
                );
            }
        }
        let rows = prompts.len();
        let device = model.device();
        let width = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let pads: Vec<usize> = prompts.iter().map(|p| width - p.len()).collect();
        let mut ids = Vec::with_capacity(rows * width);
        let mut positions = Vec::with_capacity(rows * width);
        let mut key_mask: Vec<f32> = Vec::with_capacity(rows * width);
        for (prompt, &pad) in prompts.iter().zip(&pads) {
            ids.extend(std::iter::repeat_n(0u32, pad).chain(prompt.iter().copied()));
            positions.extend(std::iter::repeat_n(0u32, pad).chain(0..prompt.len() as u32));
            key_mask.extend(std::iter::repeat_n(0f32, pad).chain(std::iter::repeat_n(1f32, prompt.len())));
        }
        Ok(Self {
            rows,
            width,
            lens: prompts.iter().map(Vec::len).collect(),
            pads,
            ids: Tensor::from_vec(ids, (rows, width), device)?,
            positions: Tensor::from_vec(positions, (rows, width), device)?,
            key_mask: Tensor::from_vec(key_mask, (rows, width), device)?,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The padded width: the longest prompt's length.
    pub fn width(&self) -> usize {
        self.width
    }

    /// The first column of row `row` that holds a real token.
    pub fn pad(&self, row: usize) -> usize {
        self.pads[row]
    }

    /// Row `row`'s prompt length.
    pub fn len(&self, row: usize) -> usize {
        self.lens[row]
    }

    fn padded(&self) -> bool {
        self.pads.iter().any(|&p| p > 0)
    }

    /// A KV cache with room for the prompts and `max_new_tokens`.
    pub fn cache_for(&self, model: &Model, max_new_tokens: usize) -> KvCache {
        KvCache::with_capacity(model.num_layers(), self.width + max_new_tokens)
    }

    /// Runs columns `0..upto` into `cache` (which must be empty) with `hooks`: a prefix that
    /// several [`PromptBatch::decode`] calls can share through copies of the cache.
    pub fn prefill(&self, model: &Model, cache: &mut KvCache, upto: usize, hooks: &mut dyn Hooks) -> Result<()> {
        if upto == 0 {
            return Ok(());
        }
        if !cache.is_empty() || upto >= self.width {
            bail!("a prefix is columns 0..{upto} of {} into an empty cache", self.width);
        }
        let step = Positions {
            positions: self.positions.narrow(1, 0, upto)?,
            key_mask: self.padded().then(|| self.key_mask.narrow(1, 0, upto)).transpose()?,
            real_lens: None,
        };
        model.forward(&self.ids.narrow(1, 0, upto)?, &step, Some(cache), hooks)?;
        Ok(())
    }

    /// Feeds columns `from..` (the ones before are in `cache`, see [`PromptBatch::prefill`]),
    /// then decodes one token per step until every row has hit EOS or `max_new_tokens`.
    pub fn decode(
        &self,
        model: &Model,
        cache: &mut KvCache,
        from: usize,
        config: &GenerationConfig,
        hooks: &mut dyn Hooks,
    ) -> Result<Decoded> {
        if cache.len() != from || from >= self.width {
            bail!(
                "decoding from column {from} of {} needs exactly the columns before it in the cache (it has {})",
                self.width,
                cache.len()
            );
        }
        let (batch, device) = (self.rows, model.device());
        let mut rng = match config.sampling {
            Sampling::TopP { seed, .. } => Some(StdRng::seed_from_u64(seed)),
            Sampling::Greedy => None,
        };
        let mut generated = vec![Vec::new(); batch];
        let mut first_logits = None;
        let mut done = vec![false; batch];
        let mut input = self.ids.narrow(1, from, self.width - from)?;
        let mut step_positions = self.positions.narrow(1, from, self.width - from)?;
        // The padding mask lives on the device and grows by a column of ones per step; with no
        // padding there is none, and decoding builds no mask at all.
        let padded = self.padded();
        let mut mask = self.key_mask.clone();
        let new_column = Tensor::ones((batch, 1), candle_core::DType::F32, device)?;
        for step in 0..config.max_new_tokens {
            let seq = input.dim(1)?;
            let step_inputs = Positions {
                positions: step_positions,
                key_mask: padded.then(|| mask.clone()),
                real_lens: None,
            };
            let normed = model.forward(&input, &step_inputs, Some(cache), hooks)?;
            let logits = model.logits(&normed.narrow(1, seq - 1, 1)?)?.squeeze(1)?;
            if !logits.sum_all()?.to_scalar::<f32>()?.is_finite() {
                bail!("the model produced non-finite logits at generation step {} (a steering vector or alpha too large, or broken weights)", step + 1);
            }
            let mut next_ids = Vec::with_capacity(batch);
            for row in 0..batch {
                let row_logits = logits.get(row)?;
                let next = match (config.sampling, rng.as_mut()) {
                    (Sampling::TopP { temperature, top_p, .. }, Some(rng)) => {
                        sample_top_p(&row_logits, temperature, top_p, rng)?
                    }
                    _ => row_logits.argmax(D::Minus1)?.to_scalar::<u32>()?,
                };
                if !done[row] {
                    if !config.ignore_eos && config.eos_token_ids.contains(&next) {
                        done[row] = true;
                    } else {
                        generated[row].push(next);
                    }
                }
                next_ids.push(next);
            }
            first_logits.get_or_insert(logits);
            if done.iter().all(|&d| d) {
                break;
            }
            // Every row takes its token, finished or not: a finished row's output is already
            // fixed, and keeping the batch rectangular is cheaper than shrinking the cache.
            if padded {
                mask = Tensor::cat(&[&mask, &new_column], 1)?;
            }
            let next_positions: Vec<u32> = self.lens.iter().map(|&len| (len + step) as u32).collect();
            input = Tensor::from_vec(next_ids, (batch, 1), device)?;
            step_positions = Tensor::from_vec(next_positions, (batch, 1), device)?;
        }
        let first_logits = first_logits.context("decoding needs at least one new token")?;
        Ok(Decoded {
            generated,
            first_logits: first_logits.to_dtype(candle_core::DType::F32)?,
        })
    }
}

fn sample_top_p(logits: &Tensor, temperature: f64, top_p: f64, rng: &mut StdRng) -> Result<u32> {
    if temperature <= 0.0 {
        return Ok(logits.argmax(D::Minus1)?.to_scalar::<u32>()?);
    }
    let probs: Vec<f32> = softmax(&(logits / temperature)?)?;
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    let mut kept = Vec::new();
    let mut mass = 0.0f64;
    for &i in &order {
        kept.push(i);
        mass += probs[i] as f64;
        if mass >= top_p {
            break;
        }
    }
    let mut draw = rng.gen::<f64>() * mass;
    for &i in &kept {
        draw -= probs[i] as f64;
        if draw <= 0.0 {
            return Ok(i as u32);
        }
    }
    Ok(*kept.last().expect("at least one token kept") as u32)
}

/// The probabilities of a row of logits (max-subtracted, as candle-nn computes them).
fn softmax(logits: &Tensor) -> Result<Vec<f32>> {
    let max = logits.max(D::Minus1)?;
    let exp = logits.broadcast_sub(&max)?.exp()?;
    let sum = exp.sum_all()?;
    Ok(exp.broadcast_div(&sum)?.to_vec1()?)
}

/// Runs the Aligner on many (question, answer) pairs, [`generate_batch`]-wise in batches of
/// `batch_size`, with `hooks` on every forward (a steering hook, or [`probe::NoHooks`]);
/// `on_batch` is told how many were done (for a progress bar). With a journal, batches it
/// already holds are replayed and new ones recorded as they finish.
#[allow(clippy::too_many_arguments)]
pub fn run_aligner_many(
    ckpt: &Checkpoint,
    template: &AlignerTemplate,
    pairs: &[(&str, &str)],
    config: &GenerationConfig,
    batch_size: usize,
    hooks: &mut dyn Hooks,
    on_batch: &mut dyn FnMut(usize),
    mut journal: Journaled,
) -> Result<Vec<AlignerOutput>> {
    if batch_size == 0 {
        bail!("batch size must be at least 1");
    }
    let tokenizer = ckpt.tokenizer()?;
    let mut outputs = Vec::with_capacity(pairs.len());
    for (k, chunk) in pairs.chunks(batch_size).enumerate() {
        if let Some(done) = journal.as_ref().and_then(|(j, run)| j.get(run, k)) {
            if done.len() != chunk.len() {
                bail!(
                    "the journal's batch {k} has {} outputs, the data {}: it is from another run",
                    done.len(),
                    chunk.len()
                );
            }
            outputs.extend(done.iter().cloned());
            on_batch(chunk.len());
            continue;
        }
        let prompts: Vec<Vec<u32>> = chunk
            .iter()
            .map(|(q, a)| tokenizer.encode(&template.render(q, a)))
            .collect::<Result<_>>()?;
        probe::batched::check_sequences(ckpt, &prompts)?;
        let first = outputs.len();
        for ids in generate_batch(&ckpt.model, &prompts, config, hooks)? {
            outputs.push(aligner_output(tokenizer, ids, config.max_new_tokens)?);
        }
        if let Some((j, run)) = journal.as_mut() {
            j.put(run, k, &outputs[first..])?;
        }
        on_batch(chunk.len());
    }
    Ok(outputs)
}

/// The Aligner's output for `question` + upstream `answer`.
pub fn run_aligner(
    ckpt: &Checkpoint,
    template: &AlignerTemplate,
    question: &str,
    answer: &str,
    config: &GenerationConfig,
    hooks: &mut dyn Hooks,
) -> Result<AlignerOutput> {
    let mut outputs = run_aligner_many(
        ckpt,
        template,
        &[(question, answer)],
        config,
        1,
        hooks,
        &mut |_| {},
        None,
    )?;
    outputs.pop().context("no output")
}

/// The Aligner's output from generated ids: decoded and trimmed; it stopped (at EOS) when it
/// used fewer than `max_new_tokens`.
pub fn aligner_output(
    tokenizer: &probe::model::AlignerTokenizer,
    ids: Vec<u32>,
    max_new_tokens: usize,
) -> Result<AlignerOutput> {
    let text = tokenizer.decode(&ids)?.trim().to_string();
    let stopped = ids.len() < max_new_tokens;
    Ok(AlignerOutput { text, ids, stopped })
}

/// One corrected answer as `alens generate --json` prints it and `alens serve` returns it:
/// one contract for both faces (field names are the JSON keys).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Correction {
    pub output: String,
    pub token_ids: Vec<u32>,
    /// The output is the upstream answer verbatim (trimmed).
    pub copied: bool,
    /// Normalised token edit distance from the answer (0 = copied, 1 = rewritten).
    pub correction_magnitude: f64,
    pub alpha: f64,
    /// `stop` (end of sequence) or `length` (ran out of `max_new_tokens`), as OpenAI names them.
    pub finish_reason: String,
    pub model: String,
}

impl Correction {
    pub fn new(
        tokenizer: &probe::model::AlignerTokenizer,
        answer: &str,
        out: AlignerOutput,
        alpha: f64,
        model: &str,
    ) -> Result<Self> {
        Ok(Self {
            copied: out.text == answer.trim(),
            correction_magnitude: crate::magnitude::text_correction_magnitude(tokenizer, answer, &out.text)?,
            output: out.text,
            token_ids: out.ids,
            alpha,
            finish_reason: if out.stopped { "stop" } else { "length" }.to_string(),
            model: model.to_string(),
        })
    }
}
