//! LoRA fine-tuning of a pretrained model into an Aligner (Ji et al. 2024 fine-tune a
//! pretrained LM on corrections), saved as a PEFT adapter that `--adapter` merges at load and
//! `PeftModel.from_pretrained` reads.
//!
//! The base stays frozen in its stored dtype; only the low-rank `A` `[r, in]` and `B`
//! `[out, r]` of each target projection train (peft's init: `A` Kaiming-uniform, `B` zero, so
//! step 0 is the base model). A run writes a checkpoint every `checkpoint_every` steps (the
//! adapter, the optimizer moments and the step), and `resume` continues from the last one bit
//! for bit: each step's batch is drawn from a generator seeded by (seed, step), not from a
//! stream that would have to be replayed.

use crate::examples::{answer_of, batch_loss, correction_of, encode_examples, Example};
use crate::optim::{AdamW, AdamWParams};
use crate::schedule::warmup_cosine;
use crate::train_loop;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use probe::model::adapter::{CONFIG_FILE, WEIGHTS_FILE};
use probe::model::linear::LoraDelta;
use probe::model::Autograd;
use probe::stimuli::StimulusRecord;
use probe::{AlignerTemplate, Checkpoint};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// Projections a target list may name (peft's `target_modules`).
pub const TARGETS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];
pub const STATE_FILE: &str = "trainer_state.json";
const MOMENTS_FILE: &str = "trainer_moments.safetensors";
/// Every file a run writes into its output directory.
pub const FILES: [&str; 4] = [CONFIG_FILE, WEIGHTS_FILE, STATE_FILE, MOMENTS_FILE];

/// Everything that determines the trained adapter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraOptions {
    pub rank: usize,
    pub alpha: f64,
    pub targets: Vec<String>,
    pub steps: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub warmup_steps: usize,
    pub weight_decay: f64,
    pub max_grad_norm: f64,
    pub seed: u64,
    /// First steps train answer -> answer on every record (the paper's identity warm-up).
    pub identity_steps: usize,
    /// Copy cases drawn this many times as often as correct cases (1 = as in the data).
    pub copy_weight: f64,
    /// Start from this adapter's factors instead of fresh ones (a second phase of training).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_adapter: Option<std::path::PathBuf>,
    /// Train through `kernels::fused`'s one-pass ops instead of candle's composed ones:
    /// faster, as reproducible, but not the same bits (the shipped adapters are composed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fused: bool,
}

impl Default for LoraOptions {
    fn default() -> Self {
        Self {
            rank: 16,
            alpha: 32.0,
            targets: TARGETS.iter().map(|t| t.to_string()).collect(),
            steps: 400,
            batch_size: 8,
            learning_rate: 5e-4,
            warmup_steps: 20,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            seed: 0,
            identity_steps: 0,
            copy_weight: 1.0,
            init_adapter: None,
            fused: false,
        }
    }
}

impl LoraOptions {
    pub fn check(&self) -> Result<()> {
        if self.rank == 0 || self.rank > 1024 {
            bail!("the LoRA rank must be between 1 and 1024, got {}", self.rank);
        }
        if self.steps == 0 || self.batch_size == 0 {
            bail!("steps and batch size must be positive");
        }
        for (name, x) in [
            ("alpha", self.alpha),
            ("learning rate", self.learning_rate),
            ("copy weight", self.copy_weight),
            ("max gradient norm", self.max_grad_norm),
        ] {
            if !(x.is_finite() && x > 0.0) {
                bail!("the {name} must be a positive number, got {x}");
            }
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            bail!(
                "the weight decay must be a non-negative number, got {}",
                self.weight_decay
            );
        }
        if self.identity_steps >= self.steps {
            bail!(
                "identity warm-up steps ({}) must be fewer than all steps ({})",
                self.identity_steps,
                self.steps
            );
        }
        if let Some(bad) = self.targets.iter().find(|t| !TARGETS.contains(&t.as_str())) {
            bail!("unknown LoRA target {bad:?} (known: {})", TARGETS.join(", "));
        }
        if self.targets.is_empty() {
            bail!("no LoRA targets");
        }
        Ok(())
    }

    /// peft's scale: `alpha / r`.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }
}

/// One adapted projection: peft's module name and its trainable factors.
pub struct LoraParam {
    pub module: String,
    pub a: Var,
    pub b: Var,
}

/// Attaches fresh LoRA factors to the target projections of `ckpt`'s model.
pub fn attach(ckpt: &mut Checkpoint, opts: &LoraOptions) -> Result<Vec<LoraParam>> {
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let device = ckpt.model.device().clone();
    let mut params = Vec::new();
    for (module, linear) in ckpt.model.adaptable_mut() {
        if !opts.targets.iter().any(|t| module.ends_with(&format!(".{t}"))) {
            continue;
        }
        let (out_dim, in_dim) = linear.dims();
        // peft: A ~ kaiming_uniform(a = sqrt(5)), i.e. U(-1/sqrt(in), 1/sqrt(in)); B = 0.
        let bound = 1.0 / (in_dim as f64).sqrt();
        let a_values: Vec<f32> = (0..opts.rank * in_dim)
            .map(|_| rng.gen_range(-bound..bound) as f32)
            .collect();
        let a = Var::from_tensor(&Tensor::from_vec(a_values, (opts.rank, in_dim), &device)?)?;
        let b = Var::zeros((out_dim, opts.rank), DType::F32, &device)?;
        linear.set_lora(Some(LoraDelta {
            a: a.as_tensor().clone(),
            b: b.as_tensor().clone(),
            scale: opts.scale(),
        }));
        params.push(LoraParam { module, a, b });
    }
    Ok(params)
}

/// Writes `params` as a PEFT adapter in `dir` (atomically, file by file).
pub fn save_peft(dir: &Path, params: &[LoraParam], opts: &LoraOptions, base: &str) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let config = serde_json::json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": opts.rank,
        "lora_alpha": opts.alpha,
        "lora_dropout": 0.0,
        "target_modules": opts.targets,
        "base_model_name_or_path": base,
        "bias": "none",
        "fan_in_fan_out": false,
        "use_rslora": false,
        "use_dora": false,
        "inference_mode": true,
        "init_lora_weights": true,
    });
    probe::io::write_atomic(&dir.join(CONFIG_FILE), &serde_json::to_vec_pretty(&config)?)?;
    let mut tensors = HashMap::new();
    for p in params {
        tensors.insert(
            format!("base_model.model.{}.lora_A.weight", p.module),
            p.a.as_tensor().clone(),
        );
        tensors.insert(
            format!("base_model.model.{}.lora_B.weight", p.module),
            p.b.as_tensor().clone(),
        );
    }
    save_tensors(&dir.join(WEIGHTS_FILE), &tensors)
}

/// Rewrites a finished adapter's weights in `dtype` (f16 halves a shipped adapter; merging
/// at load computes in f32 either way).
pub fn convert_adapter(dir: &Path, dtype: candle_core::DType) -> Result<()> {
    let path = dir.join(WEIGHTS_FILE);
    let tensors = candle_core::safetensors::load(&path, &candle_core::Device::Cpu)
        .with_context(|| format!("failed to read {}", path.display()))?
        .into_iter()
        .map(|(name, t)| Ok((name, t.to_dtype(dtype)?)))
        .collect::<Result<HashMap<_, _>>>()?;
    save_tensors(&path, &tensors)
}

fn save_tensors(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<()> {
    let out = probe::io::AtomicFile::create(path)?;
    candle_core::safetensors::save(tensors, out.temp_path())
        .with_context(|| format!("failed to write {}", path.display()))?;
    out.commit()
}

/// Where a run stands, saved beside the adapter at every checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainerState {
    pub options: LoraOptions,
    pub base: String,
    pub data_records: usize,
    /// sha256 of the training records' content: a resumed run must train on the same data,
    /// not only as many records. Empty in states written before it was recorded.
    #[serde(default)]
    pub data_hash: String,
    pub step: usize,
    pub losses: Vec<f64>,
    pub tokens: usize,
    pub seconds: f64,
}

/// What a finished run reports.
#[derive(Debug, Clone, Serialize)]
pub struct TuneReport {
    pub trainable_parameters: usize,
    pub steps: usize,
    pub first_loss: f64,
    /// Mean loss over the last 20 steps.
    pub final_loss: f64,
    pub tokens: usize,
    pub seconds: f64,
    pub tokens_per_second: f64,
}

/// Told after each step: (step, loss, tokens in the batch). An error stops the run where it is
/// (the last checkpoint stays for `resume`).
pub type OnStep<'a> = &'a mut dyn FnMut(usize, f64, usize) -> Result<()>;

/// Fine-tunes `ckpt` on `records` with LoRA and writes the adapter to `out`; with `resume`,
/// continues from the checkpoint in `out`. `base` is recorded as `base_model_name_or_path`.
#[allow(clippy::too_many_arguments)]
pub fn tune(
    ckpt: &mut Checkpoint,
    template: &AlignerTemplate,
    records: &[StimulusRecord],
    opts: &LoraOptions,
    base: &str,
    out: &Path,
    checkpoint_every: usize,
    resume: bool,
    on_step: OnStep,
) -> Result<TuneReport> {
    opts.check()?;
    if records.is_empty() {
        bail!("no training records");
    }
    let tokenizer = ckpt.tokenizer()?;
    let eos = *ckpt
        .eos_token_ids
        .first()
        .context("the model has no end-of-sequence token to learn to stop at")?;
    let pad = ckpt.config.pad_token_id.unwrap_or(eos);
    let corrections = encode_examples(tokenizer, template, records, eos, correction_of)?;
    // The warm-up's examples are only tokenized when there is a warm-up.
    let identity = if opts.identity_steps > 0 {
        encode_examples(tokenizer, template, records, eos, answer_of)?
    } else {
        Vec::new()
    };
    if let Some(e) = corrections
        .iter()
        .chain(&identity)
        .find(|e| e.ids.len() > ckpt.config.max_position_embeddings)
    {
        bail!(
            "a training example has {} tokens, more than the model's context",
            e.ids.len()
        );
    }
    let copy_case: Vec<bool> = records.iter().map(|r| r.is_copy() == Some(true)).collect();
    let weights: Vec<f64> = copy_case
        .iter()
        .map(|&c| if c { opts.copy_weight } else { 1.0 })
        .collect();

    let params = attach(ckpt, opts)?;
    if let Some(dir) = &opts.init_adapter {
        load_factors(&dir.join(WEIGHTS_FILE), &params)?;
    }
    let vars: Vec<Var> = params.iter().flat_map(|p| [p.a.clone(), p.b.clone()]).collect();
    let trainable = vars.iter().map(|v| v.elem_count()).sum();
    let mut optimizer = AdamW::new(
        vars.clone(),
        AdamWParams {
            lr: opts.learning_rate,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: opts.weight_decay,
        },
    )?;
    let mut state = TrainerState {
        options: opts.clone(),
        base: base.to_string(),
        data_records: records.len(),
        data_hash: records_hash(records)?,
        step: 0,
        losses: Vec::new(),
        tokens: 0,
        seconds: 0.0,
    };
    if resume {
        state = restore(out, &params, &mut optimizer, &state)?;
    }
    ckpt.model.set_autograd(if opts.fused {
        Autograd::Fused
    } else {
        Autograd::Composed
    })?;
    let device = ckpt.model.device().clone();
    let started = std::time::Instant::now();
    let seconds_before = state.seconds;
    for step in state.step..opts.steps {
        let pool = if step < opts.identity_steps {
            &identity
        } else {
            &corrections
        };
        let mut rng = StdRng::seed_from_u64(opts.seed ^ (step as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let batch: Vec<&Example> = (0..opts.batch_size)
            .map(|_| &pool[weighted_index(&weights, &mut rng)])
            .collect();
        let tokens: usize = batch.iter().map(|e| e.ids.len()).sum();
        let loss = batch_loss(&ckpt.model, &batch, pad, &device)?;
        let lr = phase_lr(opts, step);
        let value = train_loop::step(&loss, &vars, &mut optimizer, lr, opts.max_grad_norm)?;
        state.losses.push(value);
        state.tokens += tokens;
        state.step = step + 1;
        if checkpoint_every > 0 && state.step.is_multiple_of(checkpoint_every) && state.step < opts.steps {
            state.seconds = seconds_before + started.elapsed().as_secs_f64();
            save_checkpoint(out, &params, &optimizer, &state)?;
        }
        on_step(step, value, tokens)?;
    }
    ckpt.model.set_autograd(Autograd::Off)?;
    state.seconds = seconds_before + started.elapsed().as_secs_f64();
    save_checkpoint(out, &params, &optimizer, &state)?;
    let tail = &state.losses[state.losses.len().saturating_sub(20)..];
    Ok(TuneReport {
        trainable_parameters: trainable,
        steps: opts.steps,
        first_loss: state.losses.first().copied().unwrap_or(f64::NAN),
        final_loss: tail.iter().sum::<f64>() / tail.len().max(1) as f64,
        tokens: state.tokens,
        seconds: state.seconds,
        tokens_per_second: state.tokens as f64 / state.seconds.max(1e-9),
    })
}

/// The content hash of the training records, in order.
fn records_hash(records: &[StimulusRecord]) -> Result<String> {
    Ok(probe::provenance::sha256_hex(&serde_json::to_vec(records)?))
}

/// Each phase (identity warm-up, corrections) warms up and decays on its own.
fn phase_lr(opts: &LoraOptions, step: usize) -> f64 {
    if step < opts.identity_steps {
        warmup_cosine(opts.learning_rate, opts.warmup_steps, opts.identity_steps, step)
    } else {
        warmup_cosine(
            opts.learning_rate,
            opts.warmup_steps,
            opts.steps - opts.identity_steps,
            step - opts.identity_steps,
        )
    }
}

fn weighted_index(weights: &[f64], rng: &mut StdRng) -> usize {
    let total: f64 = weights.iter().sum();
    let mut draw = rng.gen::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        draw -= w;
        if draw < 0.0 {
            return i;
        }
    }
    weights.len() - 1
}

fn save_checkpoint(out: &Path, params: &[LoraParam], optimizer: &AdamW, state: &TrainerState) -> Result<()> {
    save_peft(out, params, &state.options, &state.base)?;
    save_tensors(&out.join(MOMENTS_FILE), &optimizer.state())?;
    probe::io::write_atomic(&out.join(STATE_FILE), &serde_json::to_vec_pretty(state)?)
}

fn restore(out: &Path, params: &[LoraParam], optimizer: &mut AdamW, fresh: &TrainerState) -> Result<TrainerState> {
    let path = out.join(STATE_FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("nothing to resume: failed to read {}", path.display()))?;
    let state: TrainerState =
        serde_json::from_str(&text).with_context(|| format!("invalid trainer state {}", path.display()))?;
    if state.options != fresh.options || state.data_records != fresh.data_records || state.base != fresh.base {
        bail!(
            "{} was written by a run with other options, data or base; resume only the same run",
            path.display()
        );
    }
    if !state.data_hash.is_empty() && state.data_hash != fresh.data_hash {
        bail!(
            "{} was written by a run on other training records (as many, another content); resume only the same run",
            path.display()
        );
    }
    load_factors(&out.join(WEIGHTS_FILE), params)?;
    optimizer.restore(
        &candle_core::safetensors::load(out.join(MOMENTS_FILE), &Device::Cpu)?,
        state.step,
    )?;
    Ok(state)
}

/// Sets `params` from a PEFT adapter file (any float dtype; trained in f32).
fn load_factors(path: &Path, params: &[LoraParam]) -> Result<()> {
    let weights = candle_core::safetensors::load(path, &Device::Cpu)
        .with_context(|| format!("failed to read {}", path.display()))?;
    for p in params {
        for (suffix, var) in [("lora_A", &p.a), ("lora_B", &p.b)] {
            let key = format!("base_model.model.{}.{suffix}.weight", p.module);
            let t = weights
                .get(&key)
                .with_context(|| format!("{} has no {key}", path.display()))?;
            if t.dims() != var.dims() {
                bail!(
                    "{}: {key} is {:?}, this run's factor is {:?} (another rank?)",
                    path.display(),
                    t.dims(),
                    var.dims()
                );
            }
            var.set(&t.to_dtype(DType::F32)?)?;
        }
    }
    Ok(())
}
