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
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum SteerPositions {
    All,
    /// Only the prompt (the prefill forward).
    Prompt,
    /// Only generated tokens (the decoding forwards).
    Generated,
}

/// A steering intervention as plain data (repeng's `ControlVector` + `set_control`): which
/// vectors, at which layers and site, on which positions. `at(alpha)` is the hook for one
/// strength; the same value serves every batch and every alpha of a sweep.
#[derive(Debug, Clone)]
pub struct Steering {
    pub vectors: ControlVectors,
    pub layers: Vec<usize>,
    pub site: Site,
    pub positions: SteerPositions,
}

impl Steering {
    /// Checks that `vectors` has every layer asked for.
    pub fn new(vectors: ControlVectors, layers: Vec<usize>, site: Site, positions: SteerPositions) -> Result<Self> {
        if let Some(missing) = layers.iter().find(|l| !vectors.vectors.contains_key(l)) {
            let have: Vec<usize> = vectors.vectors.keys().copied().collect();
            bail!("the vector file has no vector for layer {missing} (it has {have:?})");
        }
        Ok(Self { vectors, layers, site, positions })
    }

    /// The control: at every steered layer a random direction (seeded) with the norm of the
    /// vector it stands in for, so alpha means the same push.
    pub fn random_like(&self, seed: u64) -> Result<Self> {
        use rand::SeedableRng;
        use rand_distr::{Distribution, StandardNormal};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut vectors = BTreeMap::new();
        for &layer in &self.layers {
            let v = &self.vectors.vectors[&layer];
            let norm = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            let draw: Vec<f64> = (0..v.len()).map(|_| StandardNormal.sample(&mut rng)).collect();
            let draw_norm = draw.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
            vectors.insert(layer, draw.iter().map(|x| (x * norm / draw_norm) as f32).collect());
        }
        Steering::new(ControlVectors { vectors, metadata: None }, self.layers.clone(), self.site, self.positions)
    }

    /// The hook adding `alpha` times the vectors. Alpha 0 adds nothing at all, so an
    /// unsteered run and an alpha-0 run are bit-identical.
    pub fn at(&self, alpha: f64, device: &Device) -> Result<SteeringHook> {
        let mut hook = SteeringHook::new(self.site, self.positions);
        hook.add(&self.vectors, &self.layers, alpha, device)?;
        Ok(hook)
    }
}

/// Adds the sum of `alpha * vector` of every composed control vector at its layers.
pub struct SteeringHook {
    site: Site,
    positions: SteerPositions,
    additions: BTreeMap<usize, Tensor>,
    /// Whether the current forward pass is one this hook steers (set by `begin_forward`).
    active: bool,
}

impl SteeringHook {
    pub fn new(site: Site, positions: SteerPositions) -> Self {
        Self { site, positions, additions: BTreeMap::new(), active: true }
    }

    /// Composes `alpha * vectors[l]` for each `l` in `layers`; adding several vector files
    /// sums them.
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
}

impl Hooks for SteeringHook {
    fn begin_forward(&mut self, cached_len: usize) {
        self.active = match self.positions {
            SteerPositions::All => true,
            SteerPositions::Prompt => cached_len == 0,
            SteerPositions::Generated => cached_len > 0,
        };
    }

    fn wants(&self, point: HookPoint) -> bool {
        match point {
            HookPoint::Block { layer, site } => self.active && site == self.site && self.additions.contains_key(&layer),
            _ => false,
        }
    }

    fn on(&mut self, point: HookPoint, activation: &Tensor) -> Result<Option<Tensor>> {
        match point.layer().and_then(|l| self.additions.get(&l)) {
            Some(v) => Ok(Some(activation.broadcast_add(v)?)),
            None => Ok(None),
        }
    }
}

/// Checks steering layers against the model depth with one clear message.
pub fn check_layers(layers: &[usize], num_layers: usize) -> Result<()> {
    if let Some(&bad) = layers.iter().find(|&&l| l >= num_layers) {
        bail!("layer {bad} is out of range: the model has {num_layers} layers (0-{})", num_layers - 1);
    }
    Ok(())
}
