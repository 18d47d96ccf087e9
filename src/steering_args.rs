//! Flags shared by the commands that steer (`generate`, `sweep`): which vectors, which layers.

use crate::model_arg;
use anyhow::Result;
use clap::Args;
use probe::capture::parse_layers;
use probe::{Checkpoint, Site};
use std::path::PathBuf;
use steer::steering::{check_layers, SteerPositions, Steering};
use steer::vectors::ControlVectors;

/// The vectors the mini-aligner ships with.
pub const SHIPPED_VECTORS: &str = "notebooks-data/mini-aligner/copy-correct.safetensors";

/// Loads `path` (default: the shipped vectors) checked against the model; returns the path
/// used, for titles.
pub fn load_vectors(path: &Option<PathBuf>, ckpt: &Checkpoint) -> Result<(PathBuf, ControlVectors)> {
    let path = path.clone().unwrap_or_else(|| model_arg::shipped(SHIPPED_VECTORS));
    let vectors = ControlVectors::load(&path, ckpt.config.hidden_size, ckpt.config.num_hidden_layers)?;
    Ok((path, vectors))
}

#[derive(Args, Clone)]
pub struct SteeringArgs {
    /// Control vectors (.safetensors with layers.{i}, or llama.cpp .gguf). Default: the
    /// mini-aligner's shipped copy/correct vectors.
    #[arg(long)]
    pub vectors: Option<PathBuf>,
    /// Layers to steer (e.g. 2-3). Default: the vector file's default_layers.
    #[arg(long)]
    pub layers: Option<String>,
    /// Hook point the vector is added at (resid_post = output of the decoder layer). Only
    /// per-layer sites: a vector file holds one vector per layer.
    #[arg(long, value_enum, default_value = "resid_post")]
    pub site: Site,
    /// Positions steered: every forward, only the prompt's (prefill), or only generated tokens'.
    #[arg(long, value_enum, default_value = "all")]
    pub steer_positions: SteerPositions,
}

impl SteeringArgs {
    /// The vector file these flags read.
    pub fn vectors_path(&self) -> PathBuf {
        self.vectors.clone().unwrap_or_else(|| model_arg::shipped(SHIPPED_VECTORS))
    }

    pub fn load(&self, ckpt: &Checkpoint) -> Result<(ControlVectors, Vec<usize>)> {
        let n = ckpt.config.num_hidden_layers;
        let (_, vectors) = load_vectors(&self.vectors, ckpt)?;
        let layers = match &self.layers {
            Some(spec) => parse_layers(spec, n)?,
            None => vectors.default_layers(),
        };
        check_layers(&layers, n)?;
        Ok((vectors, layers))
    }

    /// The steering these flags describe, checked against the model.
    pub fn steering(&self, ckpt: &Checkpoint) -> Result<Steering> {
        let (vectors, layers) = self.load(ckpt)?;
        Steering::new(vectors, layers, self.site, self.steer_positions)
    }
}
