//! Hook points: named sites in the forward pass where an activation can be read or replaced.
//!
//! Names follow TransformerLens (`blocks.3.hook_resid_post`), so users address activations
//! the way the interpretability literature does. Capture and intervention are one mechanism:
//! a hook sees the activation and may return a replacement.

use anyhow::{bail, Result};
use candle_core::Tensor;
use std::fmt;
use std::str::FromStr;

/// Where in a decoder block (or around the stack) a hook sits, in forward order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Site {
    /// The token embeddings, before the first block (`hook_embed`).
    Embed,
    /// The residual stream entering block i.
    ResidPre,
    /// The attention output (after `o_proj`), before it joins the residual.
    AttnOut,
    /// The residual after attention has been added.
    ResidMid,
    /// The MLP output, before it joins the residual.
    MlpOut,
    /// The residual leaving block i: what HF's `model.layers[i]` returns.
    ResidPost,
    /// After the final RMSNorm, what the unembedding reads (`ln_final.hook_normalized`).
    FinalNorm,
}

impl Site {
    /// The per-layer sites, in the order the forward pass reaches them.
    pub const PER_LAYER: [Site; 5] =
        [Site::ResidPre, Site::AttnOut, Site::ResidMid, Site::MlpOut, Site::ResidPost];

    /// The short name used on the command line (`resid_post`).
    pub fn short_name(self) -> &'static str {
        match self {
            Site::Embed => "embed",
            Site::ResidPre => "resid_pre",
            Site::AttnOut => "attn_out",
            Site::ResidMid => "resid_mid",
            Site::MlpOut => "mlp_out",
            Site::ResidPost => "resid_post",
            Site::FinalNorm => "normalized",
        }
    }

    pub fn is_per_layer(self) -> bool {
        !matches!(self, Site::Embed | Site::FinalNorm)
    }

    /// Parses a short name (`resid_post`, `hook_resid_post`, `embed`, `ln_final`, `normalized`).
    pub fn parse_short(name: &str) -> Result<Self> {
        let name = name.trim().trim_start_matches("hook_");
        Ok(match name {
            "embed" => Site::Embed,
            "resid_pre" => Site::ResidPre,
            "attn_out" => Site::AttnOut,
            "resid_mid" => Site::ResidMid,
            "mlp_out" => Site::MlpOut,
            "resid_post" => Site::ResidPost,
            "normalized" | "ln_final" | "ln_final.hook_normalized" => Site::FinalNorm,
            other => bail!(
                "unknown hook point {other:?} (known: embed, resid_pre, attn_out, resid_mid, \
                 mlp_out, resid_post, ln_final)"
            ),
        })
    }
}

/// One named activation site: a [`Site`] and, for per-layer sites, the block index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HookPoint {
    pub layer: usize,
    pub site: Site,
}

impl HookPoint {
    pub fn embed() -> Self {
        Self { layer: 0, site: Site::Embed }
    }
    pub fn final_norm() -> Self {
        Self { layer: 0, site: Site::FinalNorm }
    }
    pub fn block(layer: usize, site: Site) -> Self {
        Self { layer, site }
    }
    pub fn resid_post(layer: usize) -> Self {
        Self::block(layer, Site::ResidPost)
    }
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.site {
            Site::Embed => write!(f, "hook_embed"),
            Site::FinalNorm => write!(f, "ln_final.hook_normalized"),
            site => write!(f, "blocks.{}.hook_{}", self.layer, site.short_name()),
        }
    }
}

impl FromStr for HookPoint {
    type Err = anyhow::Error;

    /// Parses full TransformerLens names: `hook_embed`, `blocks.3.hook_resid_post`,
    /// `ln_final.hook_normalized`.
    fn from_str(name: &str) -> Result<Self> {
        match name {
            "hook_embed" => return Ok(Self::embed()),
            "ln_final.hook_normalized" => return Ok(Self::final_norm()),
            _ => {}
        }
        let parts: Vec<&str> = name.splitn(3, '.').collect();
        if let ["blocks", layer, site] = parts.as_slice() {
            if let (Ok(layer), Ok(site)) = (layer.parse::<usize>(), Site::parse_short(site)) {
                if site.is_per_layer() && site_has_prefix(name) {
                    return Ok(Self::block(layer, site));
                }
            }
        }
        bail!("not a hook point name: {name:?} (expected e.g. blocks.3.hook_resid_post)")
    }
}

fn site_has_prefix(name: &str) -> bool {
    name.rsplit('.').next().is_some_and(|s| s.starts_with("hook_"))
}

/// Called by the model at every hook point, in forward order.
///
/// `wants` is asked first and is meant to be cheap: a forward whose hooks want nothing does no
/// hook work at all, so an unhooked run costs what a plain forward costs.
pub trait Hooks {
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

/// Runs several hooks at each point, in order; each sees the previous one's replacement.
/// This is how a capture sees a steered activation, or two control vectors compose.
pub struct HookChain<'a>(pub Vec<&'a mut dyn Hooks>);

impl Hooks for HookChain<'_> {
    fn wants(&self, point: HookPoint) -> bool {
        self.0.iter().any(|h| h.wants(point))
    }
    fn on(&mut self, point: HookPoint, activation: &Tensor) -> Result<Option<Tensor>> {
        let mut current: Option<Tensor> = None;
        for hook in self.0.iter_mut() {
            if !hook.wants(point) {
                continue;
            }
            let seen = current.as_ref().unwrap_or(activation);
            if let Some(replacement) = hook.on(point, seen)? {
                current = Some(replacement);
            }
        }
        Ok(current)
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
        for name in ["hook_embed", "blocks.3.hook_resid_post", "blocks.0.hook_attn_out",
                     "blocks.12.hook_resid_mid", "ln_final.hook_normalized"] {
            assert_eq!(name.parse::<HookPoint>().unwrap().to_string(), name);
        }
        assert!("blocks.x.hook_resid_post".parse::<HookPoint>().is_err());
        assert!("blocks.1.resid_post".parse::<HookPoint>().is_err());
        assert!("blocks.1.hook_embed".parse::<HookPoint>().is_err());
    }
}
