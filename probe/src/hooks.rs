//! Hook points: named sites in the forward pass where an activation can be read or replaced.
//!
//! Names follow TransformerLens (`blocks.3.hook_resid_post`), so users address activations
//! the way the interpretability literature does. Capture and intervention are one mechanism:
//! a hook sees the activation and may return a replacement.

use anyhow::{bail, Result};
use candle_core::Tensor;
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

/// Where in a decoder block a hook sits, in forward order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Site {
    /// The residual stream entering block i.
    #[cfg_attr(feature = "clap", value(name = "resid_pre"))]
    ResidPre,
    /// The attention output (after `o_proj`), before it joins the residual.
    #[cfg_attr(feature = "clap", value(name = "attn_out"))]
    AttnOut,
    /// The residual after attention has been added.
    #[cfg_attr(feature = "clap", value(name = "resid_mid"))]
    ResidMid,
    /// The MLP output, before it joins the residual.
    #[cfg_attr(feature = "clap", value(name = "mlp_out"))]
    MlpOut,
    /// The residual leaving block i: what HF's `model.layers[i]` returns.
    #[cfg_attr(feature = "clap", value(name = "resid_post"))]
    ResidPost,
}

impl Site {
    /// Every site, in the order the forward pass reaches them.
    pub const ALL: [Site; 5] = [
        Site::ResidPre,
        Site::AttnOut,
        Site::ResidMid,
        Site::MlpOut,
        Site::ResidPost,
    ];

    /// The short name (`resid_post`), as in `blocks.3.hook_resid_post`.
    pub fn short_name(self) -> &'static str {
        match self {
            Site::ResidPre => "resid_pre",
            Site::AttnOut => "attn_out",
            Site::ResidMid => "resid_mid",
            Site::MlpOut => "mlp_out",
            Site::ResidPost => "resid_post",
        }
    }

    /// Parses a short name, with or without `hook_` (`resid_post`, `hook_resid_post`).
    pub fn from_short(name: &str) -> Option<Self> {
        let name = name.trim().trim_start_matches("hook_");
        Site::ALL.into_iter().find(|s| s.short_name() == name)
    }
}

/// One named activation site. The per-layer points carry their layer, so "layer 3 of the
/// final norm" cannot be written (candle-mi's `HookPoint` does the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HookPoint {
    /// The token embeddings, before the first block (`hook_embed`).
    Embed,
    /// A site inside decoder block `layer` (`blocks.{layer}.hook_{site}`).
    Block { layer: usize, site: Site },
    /// After the final RMSNorm, what the unembedding reads (`ln_final.hook_normalized`).
    FinalNorm,
}

impl HookPoint {
    pub fn block(layer: usize, site: Site) -> Self {
        Self::Block { layer, site }
    }

    pub fn resid_post(layer: usize) -> Self {
        Self::block(layer, Site::ResidPost)
    }

    /// Every hook point of a model with `num_layers` blocks, in forward order.
    pub fn all(num_layers: usize) -> Vec<HookPoint> {
        std::iter::once(HookPoint::Embed)
            .chain((0..num_layers).flat_map(|l| Site::ALL.map(|s| HookPoint::block(l, s))))
            .chain(std::iter::once(HookPoint::FinalNorm))
            .collect()
    }

    /// The block index of a per-layer point.
    pub fn layer(self) -> Option<usize> {
        match self {
            Self::Block { layer, .. } => Some(layer),
            _ => None,
        }
    }
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Embed => write!(f, "hook_embed"),
            Self::FinalNorm => write!(f, "ln_final.hook_normalized"),
            Self::Block { layer, site } => write!(f, "blocks.{layer}.hook_{}", site.short_name()),
        }
    }
}

impl FromStr for HookPoint {
    type Err = anyhow::Error;

    /// Parses full TransformerLens names: `hook_embed`, `blocks.3.hook_resid_post`,
    /// `ln_final.hook_normalized`.
    fn from_str(name: &str) -> Result<Self> {
        match name {
            "hook_embed" => return Ok(Self::Embed),
            "ln_final.hook_normalized" => return Ok(Self::FinalNorm),
            _ => {}
        }
        if let ["blocks", layer, site] = name.splitn(3, '.').collect::<Vec<_>>().as_slice() {
            if let (Ok(layer), true, Some(site)) = (
                layer.parse::<usize>(),
                site.starts_with("hook_"),
                Site::from_short(site),
            ) {
                return Ok(Self::block(layer, site));
            }
        }
        bail!("not a hook point name: {name:?} (expected e.g. blocks.3.hook_resid_post)")
    }
}

/// Called by the model at every hook point, in forward order.
///
/// `wants` is asked first and is meant to be cheap: a forward whose hooks want nothing does no
/// hook work at all, so an unhooked run costs what a plain forward costs.
pub trait Hooks {
    /// Told once at the start of every forward pass: `cached_len` positions are already in the
    /// KV cache (0 for a prompt's prefill, more for each decoding step). This is how a hook
    /// tells prompt tokens from generated ones without counting calls.
    fn begin_forward(&mut self, _cached_len: usize) {}
    fn wants(&self, point: HookPoint) -> bool;
    /// Sees the activation `[batch, seq, d_model]`; returning `Some` replaces it downstream.
    fn on(&mut self, point: HookPoint, activation: &Tensor) -> Result<Option<Tensor>>;
}

/// The plain forward pass.
pub struct NoHooks;

impl Hooks for NoHooks {
    fn wants(&self, _: HookPoint) -> bool {
        false
    }
    fn on(&mut self, _: HookPoint, _: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }
}

/// The one activation cache (TransformerLens' `run_with_cache(names_filter=...)`): keeps the
/// activation at every point asked for, and nothing else, as `[batch, seq, d]`.
#[derive(Debug, Default)]
pub struct Cache {
    wanted: Vec<HookPoint>,
    seen: HashMap<HookPoint, Tensor>,
}

impl Cache {
    pub fn new(points: impl IntoIterator<Item = HookPoint>) -> Self {
        let mut wanted: Vec<HookPoint> = points.into_iter().collect();
        wanted.sort();
        wanted.dedup();
        Self {
            wanted,
            seen: HashMap::new(),
        }
    }

    /// The points this cache keeps.
    pub fn points(&self) -> &[HookPoint] {
        &self.wanted
    }

    /// The activation at `point`, or an error naming it when it was not kept.
    pub fn require(&self, point: HookPoint) -> Result<&Tensor> {
        match self.seen.get(&point) {
            Some(t) => Ok(t),
            None if self.wanted.contains(&point) => bail!("hook point {point} was never reached"),
            None => bail!("hook point {point} was not asked for"),
        }
    }

    /// Empties the cache for the next forward pass.
    pub fn clear(&mut self) {
        self.seen.clear();
    }
}

impl Hooks for Cache {
    fn wants(&self, point: HookPoint) -> bool {
        self.wanted.binary_search(&point).is_ok()
    }
    fn on(&mut self, point: HookPoint, activation: &Tensor) -> Result<Option<Tensor>> {
        self.seen.insert(point, activation.clone());
        Ok(None)
    }
}

/// Applies `hooks` at `point`: the model's single call site for every hook.
pub(crate) fn run_hook(hooks: &mut dyn Hooks, point: HookPoint, x: Tensor) -> Result<Tensor> {
    if !hooks.wants(point) {
        return Ok(x);
    }
    Ok(hooks.on(point, &x)?.unwrap_or(x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in [
            "hook_embed",
            "blocks.3.hook_resid_post",
            "blocks.0.hook_attn_out",
            "blocks.12.hook_resid_mid",
            "ln_final.hook_normalized",
        ] {
            assert_eq!(name.parse::<HookPoint>().unwrap().to_string(), name);
        }
        assert!("blocks.x.hook_resid_post".parse::<HookPoint>().is_err());
        assert!("blocks.1.resid_post".parse::<HookPoint>().is_err());
        assert!("blocks.1.hook_embed".parse::<HookPoint>().is_err());
    }
}
