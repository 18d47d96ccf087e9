//! The correction-strength knob: add `alpha * v_l` to the residual stream at chosen layers.
//!
//! By default the vector is added at `blocks.{l}.hook_resid_post`, the output of decoder
//! layer l, which is exactly what a forward hook on HF's `model.layers[l]` sees, so a vector
//! behaves here as it does in PyTorch (and in llama.cpp as `direction.{l}`).

use crate::vectors::ControlVectors;
use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use probe::hooks::{HookPoint, Hooks, Site};
use std::collections::BTreeMap;

/// Which positions receive the vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SteerPositions {
    All,
    /// Only the prompt (the prefill forward).
    Prompt,
    /// Only generated tokens.
    Generated,
}

impl std::str::FromStr for SteerPositions {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "all" => Ok(Self::All),
            "prompt" => Ok(Self::Prompt),
            "generated" => Ok(Self::Generated),
            other => bail!("--steer-positions must be all, prompt or generated, not {other:?}"),
        }
    }
}

/// Adds the sum of `alpha * vector` of every composed control vector at its layers.
pub struct SteeringHook {
    site: Site,
    positions: SteerPositions,
    additions: BTreeMap<usize, Tensor>,
    /// Forwards started so far; the first one of a generation is the prompt.
    forwards: usize,
}

impl SteeringHook {
    pub fn new(site: Site, positions: SteerPositions) -> Self {
        Self { site, positions, additions: BTreeMap::new(), forwards: 0 }
    }

    /// Composes `alpha * vectors[l]` for each `l` in `layers`. Alpha 0 adds nothing at all,
    /// so an unsteered run and an alpha-0 run are bit-identical.
    pub fn add(&mut self, vectors: &ControlVectors, layers: &[usize], alpha: f64, device: &Device) -> Result<()> {
        if !alpha.is_finite() {
            bail!("alpha must be a finite number, got {alpha}");
        }
        for &layer in layers {
            let Some(v) = vectors.vectors.get(&layer) else {
                let have: Vec<usize> = vectors.vectors.keys().copied().collect();
                bail!("the vector file has no vector for layer {layer} (it has {have:?})");
            };
            if alpha == 0.0 {
                continue;
            }
            let scaled = (Tensor::new(v.as_slice(), device)? * alpha)?;
            let total = match self.additions.remove(&layer) {
                Some(existing) => (existing + scaled)?,
                None => scaled,
            };
            self.additions.insert(layer, total);
        }
        Ok(())
    }

    /// Starts a new generation (the next forward is a prompt again).
    pub fn reset(&mut self) {
        self.forwards = 0;
    }

    fn active(&self) -> bool {
        match self.positions {
            SteerPositions::All => true,
            SteerPositions::Prompt => self.forwards == 1,
            SteerPositions::Generated => self.forwards > 1,
        }
    }
}

impl Hooks for SteeringHook {
    fn wants(&self, point: HookPoint) -> bool {
        if self.additions.is_empty() {
            return false;
        }
        // The embedding hook only counts forwards, to tell the prompt from generated tokens.
        point.site == Site::Embed || (point.site == self.site && self.additions.contains_key(&point.layer) && self.active())
    }

    fn on(&mut self, point: HookPoint, activation: &Tensor) -> Result<Option<Tensor>> {
        if point.site == Site::Embed {
            self.forwards += 1;
            return Ok(None);
        }
        let v = &self.additions[&point.layer];
        Ok(Some(activation.broadcast_add(v)?))
    }
}

/// Checks steering layers against the model depth with one clear message.
pub fn check_layers(layers: &[usize], num_layers: usize) -> Result<()> {
    if let Some(&bad) = layers.iter().find(|&&l| l >= num_layers) {
        bail!("layer {bad} is out of range: the model has {num_layers} layers (0-{})", num_layers - 1);
    }
    Ok(())
}
