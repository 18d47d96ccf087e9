//! Training the mini-aligner with candle-nn: AdamW, linear warm-up then cosine decay,
//! gradient clipping, and loss only on the answer after `ASSISTANT:` (the correction and its
//! EOS), as Aligner's supervised fine-tuning does. Seeded: the corpus, the initial weights
//! and the batch order all come from one `StdRng`, so a run reproduces bit for bit on the
//! same machine.

use crate::corpus::{self, Split};
use crate::english::Style;
use crate::tokenizer::{train_tokenizer, BOS, EOS, PAD};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use probe::model::AlignerTokenizer;
use probe::{AlignerTemplate, Model, ModelConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::path::Path;
use tune::examples::{answer_of, batch_loss, correction_of, encode_examples, Example};
use tune::schedule::warmup_cosine;
use tune::train_loop;

/// Everything that determines the trained checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct TrainOptions {
    pub seed: u64,
    pub steps: usize,
    /// The first steps learn the identity mapping (question, answer -> answer) on every
    /// record, good or bad, before learning corrections: the Aligner paper's residual-correction
    /// warm-up, which gives the model a copy mode that corrections are learnt on top of.
    pub identity_steps: usize,
    /// Peak learning rate of the correction phase after an identity warm-up (default: the
    /// same as the warm-up's).
    pub correction_learning_rate: Option<f64>,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub warmup_steps: usize,
    pub weight_decay: f64,
    pub max_grad_norm: f64,
    pub train_records: usize,
    pub vocab_size: usize,
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub intermediate: usize,
}

impl Default for TrainOptions {
    /// The shipped mini-aligner's settings.
    fn default() -> Self {
        Self {
            seed: 20241,
            steps: 3000,
            identity_steps: 0,
            correction_learning_rate: None,
            batch_size: 32,
            learning_rate: 3e-3,
            warmup_steps: 100,
            weight_decay: 0.01,
            max_grad_norm: 1.0,
            train_records: 20_000,
            vocab_size: 800,
            layers: 6,
            hidden: 128,
            heads: 4,
            kv_heads: 2,
            intermediate: 352,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub parameters: usize,
    pub steps: usize,
    pub first_loss: f64,
    /// Mean loss over the last 50 steps.
    pub final_loss: f64,
    pub validation_loss: f64,
    pub seconds: f64,
    pub copy_share: f64,
}

/// The padding id the mini tokenizer reserves (`<pad>`).
const PAD_ID: u32 = 0;

/// HF `config.json` (transformers 4.x layout, like Aligner-7B's) for the mini-aligner.
fn hf_config(opts: &TrainOptions, vocab: usize, max_len: usize) -> serde_json::Value {
    serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": opts.hidden,
        "intermediate_size": opts.intermediate,
        "num_hidden_layers": opts.layers,
        "num_attention_heads": opts.heads,
        "num_key_value_heads": opts.kv_heads,
        "head_dim": opts.hidden / opts.heads,
        "hidden_act": "silu",
        "max_position_embeddings": max_len.next_power_of_two().max(128),
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "rope_scaling": null,
        "attention_bias": false,
        "mlp_bias": false,
        "tie_word_embeddings": true,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
        "torch_dtype": "float32",
    })
}

/// Box-Muller on the seeded generator: candle's own CPU initialisers cannot be seeded.
fn seeded_init(varmap: &VarMap, rng: &mut StdRng, std: f64) -> Result<()> {
    let vars = varmap.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for name in names {
        let var = &vars[name];
        let n = var.elem_count();
        let values: Vec<f32> = if name.contains("norm") {
            vec![1.0; n]
        } else {
            (0..n)
                .map(|_| {
                    let (u1, u2): (f64, f64) = (rng.gen::<f64>().max(1e-12), rng.gen());
                    (std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
                })
                .collect()
        };
        var.set(&Tensor::from_vec(values, var.shape(), var.device())?)?;
    }
    Ok(())
}

fn learning_rate(opts: &TrainOptions, step: usize) -> f64 {
    warmup_cosine(opts.learning_rate, opts.warmup_steps, opts.steps, step)
}

/// The learning rate at `step`. With an identity warm-up, each phase has its own warm-up and
/// cosine decay, and the correction phase peaks at `correction_learning_rate`: a copier
/// first, then a fine-tune on corrections, as a real Aligner is a pretrained LM fine-tuned.
fn phase_learning_rate(opts: &TrainOptions, step: usize) -> f64 {
    if opts.identity_steps == 0 {
        return learning_rate(opts, step);
    }
    if step < opts.identity_steps {
        return learning_rate(
            &TrainOptions {
                steps: opts.identity_steps,
                ..opts.clone()
            },
            step,
        );
    }
    let correction = TrainOptions {
        steps: opts.steps - opts.identity_steps,
        learning_rate: opts.correction_learning_rate.unwrap_or(opts.learning_rate),
        ..opts.clone()
    };
    learning_rate(&correction, step - opts.identity_steps)
}

/// Trains the mini-aligner and writes an HF-layout checkpoint (config.json,
/// model.safetensors, tokenizer.json, generation_config.json, training.json) to `out`.
pub fn train(opts: &TrainOptions, out: &Path, on_step: &mut dyn FnMut(usize, f64)) -> Result<TrainReport> {
    let started = std::time::Instant::now();
    if opts.steps == 0 || opts.batch_size == 0 || opts.train_records == 0 {
        bail!("steps, batch size and training records must be positive");
    }
    for (name, rate) in [
        ("learning rate", Some(opts.learning_rate)),
        ("correction-phase learning rate", opts.correction_learning_rate),
    ] {
        if let Some(rate) = rate.filter(|r| !(r.is_finite() && *r > 0.0)) {
            bail!("the {name} must be a positive number, got {rate}");
        }
    }
    if opts.identity_steps >= opts.steps {
        bail!(
            "identity warm-up steps ({}) must be fewer than all steps ({}): corrections need steps too",
            opts.identity_steps,
            opts.steps
        );
    }
    if opts.correction_learning_rate.is_some() && opts.identity_steps == 0 {
        bail!("a correction-phase learning rate needs an identity warm-up before it (identity steps > 0)");
    }
    let device = Device::Cpu;
    let template = AlignerTemplate::default();
    let records = corpus::generate(opts.seed, opts.train_records, Split::Train, Style::Lower);
    let validation = corpus::generate(opts.seed ^ 0x5eed, 256, Split::Validation, Style::Lower);

    // The correction follows "ASSISTANT:" after a space, so it is learnt with that space;
    // otherwise no merge covers its words where they are used (" actually" fell to letters).
    let texts: Vec<String> = records
        .iter()
        .flat_map(|r| {
            [
                template.render(&r.question, &r.answer),
                format!(" {}", r.correction.as_deref().unwrap_or_default()),
            ]
        })
        .collect();
    let tokenizer = train_tokenizer(&texts, opts.vocab_size)?;
    let eos = tokenizer.token_id(EOS).context("tokenizer lacks EOS")?;
    debug_assert_eq!(
        (tokenizer.token_id(PAD), tokenizer.token_id(BOS), Some(eos)),
        (Some(0), Some(1), Some(2))
    );
    let examples = encode_examples(&tokenizer, &template, &records, eos, correction_of)?;
    let identity = encode_examples(&tokenizer, &template, &records, eos, answer_of)?;
    let held_out = encode_examples(&tokenizer, &template, &validation, eos, correction_of)?;
    let max_len = examples
        .iter()
        .chain(&identity)
        .chain(&held_out)
        .map(|e| e.ids.len())
        .max()
        .unwrap_or(1);

    let config_json = hf_config(opts, tokenizer.vocab_size(), max_len);
    let cfg = ModelConfig::from_json(&config_json.to_string())?;
    let varmap = VarMap::new();
    let mut model = Model::load(VarBuilder::from_varmap(&varmap, DType::F32, &device), &cfg)?;
    model.set_autograd(probe::model::Autograd::Composed)?;
    let mut rng = StdRng::seed_from_u64(opts.seed);
    seeded_init(&varmap, &mut rng, probe::model::linear::INIT_STD)?;
    let parameters: usize = varmap.all_vars().iter().map(|v| v.elem_count()).sum();

    let mut optimizer = AdamW::new(
        varmap.all_vars(),
        ParamsAdamW {
            lr: opts.learning_rate,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: opts.weight_decay,
        },
    )?;
    let mut losses = Vec::with_capacity(opts.steps);
    for step in 0..opts.steps {
        let pool = if step < opts.identity_steps {
            &identity
        } else {
            &examples
        };
        let batch: Vec<&Example> = (0..opts.batch_size)
            .map(|_| &pool[rng.gen_range(0..pool.len())])
            .collect();
        let loss = batch_loss(&model, &batch, PAD_ID, &device)?;
        let value = train_loop::step(
            &loss,
            &varmap.all_vars(),
            &mut optimizer,
            phase_learning_rate(opts, step),
            opts.max_grad_norm,
        )?;
        losses.push(value);
        on_step(step, value);
    }

    model.set_autograd(probe::model::Autograd::Off)?;
    let mut validation_loss = 0.0;
    for chunk in held_out.chunks(64) {
        let refs: Vec<&Example> = chunk.iter().collect();
        validation_loss += batch_loss(&model, &refs, PAD_ID, &device)?.to_scalar::<f32>()? as f64 * chunk.len() as f64;
    }
    validation_loss /= held_out.len() as f64;

    let tail = &losses[losses.len().saturating_sub(50)..];
    let report = TrainReport {
        parameters,
        steps: opts.steps,
        first_loss: losses[0],
        final_loss: tail.iter().sum::<f64>() / tail.len() as f64,
        validation_loss,
        seconds: started.elapsed().as_secs_f64(),
        copy_share: corpus::copy_share(&records),
    };
    write_checkpoint(out, &varmap, &config_json, &tokenizer, opts, &report)?;
    Ok(report)
}

/// Every file a trained checkpoint directory holds.
pub const FILES: [&str; 5] = [
    "config.json",
    "generation_config.json",
    "training.json",
    "model.safetensors",
    "tokenizer.json",
];

fn write_checkpoint(
    out: &Path,
    varmap: &VarMap,
    config: &serde_json::Value,
    tokenizer: &AlignerTokenizer,
    opts: &TrainOptions,
    report: &TrainReport,
) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("failed to create {}", out.display()))?;
    let json = |v: &serde_json::Value| serde_json::to_vec_pretty(v).expect("JSON values serialise");
    probe::io::write_atomic(&out.join("config.json"), &json(config))?;
    let generation = serde_json::json!({"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "do_sample": false});
    probe::io::write_atomic(&out.join("generation_config.json"), &json(&generation))?;
    let training = serde_json::json!({"options": opts, "report": report});
    probe::io::write_atomic(&out.join("training.json"), &json(&training))?;

    // safetensors orders tensors by dtype and name when writing, so identical runs give identical files.
    let tensors: std::collections::HashMap<String, Tensor> = varmap
        .data()
        .lock()
        .expect("varmap lock")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    // Written through alens' atomic writer, so they are logged as alens' own like the rest.
    let weights = probe::io::AtomicFile::create(&out.join("model.safetensors"))?;
    candle_core::safetensors::save(&tensors, weights.temp_path()).context("failed to write model.safetensors")?;
    weights.commit()?;
    let tokenizer_file = probe::io::AtomicFile::create(&out.join("tokenizer.json"))?;
    tokenizer.save(tokenizer_file.temp_path())?;
    tokenizer_file.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_identity_warm_up_the_schedule_is_the_single_phase_one() {
        let opts = TrainOptions::default();
        for step in [0, 50, 99, 100, 1500, 2999] {
            assert_eq!(phase_learning_rate(&opts, step), learning_rate(&opts, step));
        }
    }

    #[test]
    fn the_correction_phase_restarts_its_warm_up_at_its_own_peak() {
        let opts = TrainOptions {
            steps: 1000,
            identity_steps: 400,
            warmup_steps: 10,
            correction_learning_rate: Some(1e-3),
            ..Default::default()
        };
        let peak = opts.learning_rate;
        assert!(
            (phase_learning_rate(&opts, 9) - peak).abs() < 1e-12,
            "warm-up phase reaches its peak"
        );
        assert!(
            (phase_learning_rate(&opts, 399) - 0.1 * peak).abs() < 1e-6,
            "and decays to a tenth by its end"
        );
        assert!(
            (phase_learning_rate(&opts, 400) - 1e-4).abs() < 1e-12,
            "correction phase starts its own warm-up"
        );
        assert!(
            (phase_learning_rate(&opts, 409) - 1e-3).abs() < 1e-12,
            "up to the correction peak"
        );
    }
}
