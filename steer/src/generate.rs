//! KV-cached generation through the hooked model: greedy, or temperature / top-p sampling
//! with a seed. Hooks (a steering vector, a capture) apply at every step.

use anyhow::{bail, Result};
use candle_core::{Tensor, D};
use probe::hooks::Hooks;
use probe::{AlignerTemplate, Checkpoint, KvCache, Model, Positions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    Greedy,
    /// Temperature then nucleus (top-p) sampling, reproducible under `seed`.
    TopP { temperature: f64, top_p: f64, seed: u64 },
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
        Self { max_new_tokens, eos_token_ids, ignore_eos: false, sampling: Sampling::Greedy }
    }
}

/// Generates up to `max_new_tokens` after `prompt`, returning only the new ids (without a
/// final EOS). The prompt is fed once (prefill), then one token per step from the cache.
pub fn generate(
    model: &Model,
    prompt: &[u32],
    config: &GenerationConfig,
    hooks: &mut dyn Hooks,
) -> Result<Vec<u32>> {
    if prompt.is_empty() {
        bail!("cannot generate from an empty prompt");
    }
    let vocab = model.config().vocab_size;
    if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= vocab) {
        bail!("prompt token id {bad} is outside the vocabulary (size {vocab})");
    }
    let device = model.device();
    let mut cache = KvCache::new(model.num_layers());
    let mut rng = match config.sampling {
        Sampling::TopP { seed, .. } => Some(StdRng::seed_from_u64(seed)),
        Sampling::Greedy => None,
    };
    let mut generated = Vec::new();
    let mut input: Vec<u32> = prompt.to_vec();
    while generated.len() < config.max_new_tokens {
        let ids = Tensor::new(input.as_slice(), device)?.unsqueeze(0)?;
        let positions = Positions::contiguous(1, input.len(), cache.len(), device)?;
        let normed = model.forward(&ids, &positions, Some(&mut cache), hooks)?;
        let last = normed.narrow(1, input.len() - 1, 1)?;
        let logits = model.logits(&last)?.flatten_all()?;
        let next = match (config.sampling, rng.as_mut()) {
            (Sampling::TopP { temperature, top_p, .. }, Some(rng)) => sample_top_p(&logits, temperature, top_p, rng)?,
            _ => logits.argmax(D::Minus1)?.to_scalar::<u32>()?,
        };
        if !config.ignore_eos && config.eos_token_ids.contains(&next) {
            break;
        }
        generated.push(next);
        input = vec![next];
    }
    Ok(generated)
}

fn sample_top_p(logits: &Tensor, temperature: f64, top_p: f64, rng: &mut StdRng) -> Result<u32> {
    if temperature <= 0.0 {
        return Ok(logits.argmax(D::Minus1)?.to_scalar::<u32>()?);
    }
    let probs: Vec<f32> = candle_nn_softmax(&(logits / temperature)?)?;
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

fn candle_nn_softmax(logits: &Tensor) -> Result<Vec<f32>> {
    let max = logits.max(D::Minus1)?;
    let exp = logits.broadcast_sub(&max)?.exp()?;
    let sum = exp.sum_all()?;
    Ok(exp.broadcast_div(&sum)?.to_vec1()?)
}

/// The Aligner's corrected answer to `question` + upstream `answer`, as text and as the
/// generated ids.
pub fn correct(
    ckpt: &Checkpoint,
    template: &AlignerTemplate,
    question: &str,
    answer: &str,
    config: &GenerationConfig,
    hooks: &mut dyn Hooks,
) -> Result<(String, Vec<u32>)> {
    let tokenizer = ckpt.tokenizer()?;
    let prompt = tokenizer.encode(&template.render(question, answer))?;
    let ids = generate(&ckpt.model, &prompt, config, hooks)?;
    Ok((tokenizer.decode(&ids)?.trim().to_string(), ids))
}
