//! `--model DIR`, defaulting to the shipped mini-aligner.

use anyhow::Result;
use clap::Args;
use probe::{AlignerTemplate, Checkpoint};
use std::path::{Path, PathBuf};

/// Where the mini-aligner ships inside the repository.
pub const MINI_ALIGNER: &str = "notebooks-data/mini-aligner";

/// The default model: `$ALENS_MODEL`, else `notebooks-data/mini-aligner` under the current
/// directory, else the one in the source tree this binary was built from.
pub fn default_model_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ALENS_MODEL") {
        return PathBuf::from(dir);
    }
    shipped(MINI_ALIGNER)
}

/// A file shipped in the repository: under the current directory if there, else in the
/// source tree this binary was built from.
pub fn shipped(relative: &str) -> PathBuf {
    let local = PathBuf::from(relative);
    if local.exists() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

pub fn load(model: &Option<PathBuf>) -> Result<Checkpoint> {
    let dir = model.clone().unwrap_or_else(default_model_dir);
    Checkpoint::load(&dir)
}

/// `--model` and `--template`, shared by every command that runs a model.
#[derive(Args, Clone)]
pub struct ModelArgs {
    /// Checkpoint directory (HF layout: config.json, safetensors, tokenizer.json). Default:
    /// the shipped mini-aligner.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Aligner prompt template with {question} and {answer}. Default: the paper's wording.
    #[arg(long)]
    pub template: Option<String>,
}

impl ModelArgs {
    pub fn load(&self) -> Result<Checkpoint> {
        load(&self.model)
    }

    pub fn template(&self) -> Result<AlignerTemplate> {
        match &self.template {
            Some(t) => AlignerTemplate::new(t),
            None => Ok(AlignerTemplate::default()),
        }
    }
}
