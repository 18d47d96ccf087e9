//! Flags shared by the commands that steer (`generate`, `sweep`): which vectors, which layers.

use crate::model_arg;
use anyhow::{Context, Result};
use clap::Args;
use probe::capture::parse_layers;
use probe::{Checkpoint, Site};
use std::path::PathBuf;
use steer::steering::{check_layers, SteerMode, SteerPositions, Steering};
use steer::vectors::ControlVectors;

/// The vectors the mini-aligner ships with.
pub const SHIPPED_VECTORS: &str = "notebooks-data/mini-aligner/copy-correct.safetensors";

/// The vector file a shipped model keeps beside its weights (or its adapter).
pub const MODEL_VECTORS: &str = "copy-correct.safetensors";

/// The default vectors for `model`: the ones shipped in its directory, else the mini-aligner's.
pub fn default_vectors(model: &model_arg::ModelArgs) -> PathBuf {
    model.shipped_beside(MODEL_VECTORS, SHIPPED_VECTORS)
}

/// Loads `path` checked against the model; returns the path used, for titles.
pub fn load_vectors(path: &std::path::Path, ckpt: &Checkpoint) -> Result<(PathBuf, ControlVectors)> {
    let loaded = ControlVectors::load(path, ckpt.config.hidden_size, ckpt.config.num_hidden_layers);
    // A model with no vectors beside it falls back to the mini-aligner's, which fit no other
    // model: say so and how to make its own, not only that the widths differ.
    let vectors = if path == model_arg::shipped(SHIPPED_VECTORS) {
        loaded.context(format!(
            "these are the mini-aligner's vectors, the default for a model with no {MODEL_VECTORS} beside it; \
             for another model make its own with `alens lat --model MODEL --out V.safetensors` and pass `--vectors V.safetensors`"
        ))?
    } else {
        loaded?
    };
    Ok((path.to_path_buf(), vectors))
}

#[derive(Args, Clone)]
pub struct SteeringArgs {
    /// Control vectors (.safetensors with layers.{i}, or llama.cpp .gguf). Default: the
    /// copy-correct.safetensors shipped beside the model (Aligner-135M, the mini-aligner).
    #[arg(long)]
    pub vectors: Option<PathBuf>,
    /// Layers to steer (e.g. 2-3). Default: the vector file's default_layers.
    #[arg(long)]
    pub layers: Option<String>,
    /// Hook point the vector is added at (resid_post = output of the decoder layer). Only
    /// per-layer sites: a vector file holds one vector per layer.
    #[arg(long, value_enum, default_value = "resid_post")]
    pub site: Site,
    /// Positions steered: every forward, only the prompt's (prefill), only generated tokens',
    /// or only the decision position (the last prompt token). Default: the vector file's
    /// steer_positions, else all.
    #[arg(long, value_enum)]
    pub steer_positions: Option<SteerPositions>,
    /// add (h += alpha v) or project (move the projection toward a class mean: alpha = +1 the
    /// correct-class mean, -1 the copy-class mean). Default: the vector file's steer_mode,
    /// else add.
    #[arg(long, value_enum)]
    pub steer_mode: Option<SteerMode>,
}

impl SteeringArgs {
    /// The vector file these flags read for `model`.
    pub fn vectors_path(&self, model: &model_arg::ModelArgs) -> PathBuf {
        self.vectors.clone().unwrap_or_else(|| default_vectors(model))
    }

    pub fn load(&self, model: &model_arg::ModelArgs, ckpt: &Checkpoint) -> Result<(ControlVectors, Vec<usize>)> {
        let n = ckpt.config.num_hidden_layers;
        let (_, vectors) = load_vectors(&self.vectors_path(model), ckpt)?;
        let layers = match &self.layers {
            Some(spec) => parse_layers(spec, n)?,
            None => vectors.default_layers(),
        };
        check_layers(&layers, n)?;
        Ok((vectors, layers))
    }

    /// The steering these flags describe, checked against the model; what the flags leave
    /// open comes from the vector file's sidecar.
    pub fn steering(&self, model: &model_arg::ModelArgs, ckpt: &Checkpoint) -> Result<Steering> {
        let (vectors, layers) = self.load(model, ckpt)?;
        Steering::with_sidecar_defaults(vectors, Some(layers), self.site, self.steer_positions, self.steer_mode)
    }
}
