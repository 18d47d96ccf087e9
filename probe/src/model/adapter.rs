//! PEFT LoRA adapters, merged into the weights at load so steering and capture pay nothing.
//!
//! The layout is peft's `save_pretrained` output: `adapter_config.json` (`peft_type` LORA, `r`,
//! `lora_alpha`, `target_modules`, `base_model_name_or_path`, optionally `use_rslora`) and
//! `adapter_model.safetensors` with keys
//! `base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight` (`[r, in]`) and
//! `...lora_B.weight` (`[out, r]`). Merging is peft's `merge_and_unload`:
//! `W += scale * B @ A` with `scale = lora_alpha / r` (or `/ sqrt(r)` under rsLoRA).

use super::linear::LoraDelta;
use anyhow::{bail, Context, Result};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// peft's prefix in front of the base model's own key names.
const PEFT_PREFIX: &str = "base_model.model.";

/// `adapter_config.json`, the fields that change the merged weights.
#[derive(Debug, Clone, Deserialize)]
pub struct AdapterConfig {
    pub peft_type: String,
    pub r: usize,
    pub lora_alpha: f64,
    #[serde(default)]
    pub target_modules: serde_json::Value,
    pub base_model_name_or_path: Option<String>,
    #[serde(default)]
    pub use_rslora: bool,
    #[serde(default)]
    pub fan_in_fan_out: bool,
    #[serde(default)]
    pub use_dora: bool,
    /// Per-module ranks and alphas; only the uniform case is supported.
    #[serde(default)]
    pub rank_pattern: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub alpha_pattern: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub lora_bias: bool,
}

/// A loaded adapter: for each base weight it changes, the low-rank delta's factors.
pub struct LoraAdapter {
    pub dir: PathBuf,
    pub config: AdapterConfig,
    /// Base weight name (`model.layers.0.self_attn.q_proj.weight`) -> (A `[r, in]`, B `[out, r]`).
    pub factors: HashMap<String, (Tensor, Tensor)>,
}

/// Is `dir` an adapter directory (has `adapter_config.json`)?
pub fn is_adapter_dir(dir: &Path) -> bool {
    dir.join(CONFIG_FILE).is_file()
}

impl LoraAdapter {
    pub fn load(dir: &Path) -> Result<Self> {
        let config_path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&config_path)
            .with_context(|| format!("failed to read {}", config_path.display()))?;
        let config: AdapterConfig =
            serde_json::from_str(&text).with_context(|| format!("invalid adapter config {}", config_path.display()))?;
        if config.peft_type != "LORA" {
            bail!(
                "{}: peft_type {:?} is not supported (only LORA)",
                config_path.display(),
                config.peft_type
            );
        }
        if config.r == 0 || !config.lora_alpha.is_finite() {
            bail!("{}: r must be positive and lora_alpha finite", config_path.display());
        }
        if config.use_dora || config.fan_in_fan_out || config.lora_bias {
            bail!(
                "{}: DoRA, fan_in_fan_out and lora_bias adapters are not supported",
                config_path.display()
            );
        }
        if !config.rank_pattern.is_empty() || !config.alpha_pattern.is_empty() {
            bail!(
                "{}: per-module rank_pattern/alpha_pattern are not supported",
                config_path.display()
            );
        }
        let weights = dir.join(WEIGHTS_FILE);
        if !weights.is_file() {
            bail!("{} has no {WEIGHTS_FILE}", dir.display());
        }
        // SAFETY: the map is read-only and dropped before this function returns; a file changed
        // under a running process is outside what alens can defend against, as for any mmap.
        let st = unsafe { MmapedSafetensors::new(&weights) }
            .with_context(|| format!("failed to read {}", weights.display()))?;
        let mut factors = HashMap::new();
        for (key, _) in st.tensors() {
            let Some(module) = key.strip_suffix(".lora_A.weight") else {
                continue;
            };
            let b_key = format!("{module}.lora_B.weight");
            let a = st.load(&key, &Device::Cpu)?.to_dtype(DType::F32)?;
            let b = st
                .load(&b_key, &Device::Cpu)
                .with_context(|| format!("{}: {key} has no matching {b_key}", weights.display()))?
                .to_dtype(DType::F32)?;
            let (ra, rb) = (a.dims2()?.0, b.dims2()?.1);
            if ra != config.r || rb != config.r {
                bail!(
                    "{}: {module} has rank {ra}/{rb}, the config says r = {}",
                    weights.display(),
                    config.r
                );
            }
            let base = module.strip_prefix(PEFT_PREFIX).unwrap_or(module);
            factors.insert(format!("{base}.weight"), (a, b));
        }
        if factors.is_empty() {
            bail!("{}: no lora_A/lora_B tensors", weights.display());
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            factors,
        })
    }

    /// `lora_alpha / r`, or `lora_alpha / sqrt(r)` with rsLoRA.
    pub fn scale(&self) -> f64 {
        let r = self.config.r as f64;
        if self.config.use_rslora {
            self.config.lora_alpha / r.sqrt()
        } else {
            self.config.lora_alpha / r
        }
    }

    /// The base named in the config, resolved against the adapter directory when relative.
    pub fn base_model(&self) -> Result<PathBuf> {
        let base = self
            .config
            .base_model_name_or_path
            .as_deref()
            .filter(|b| !b.is_empty())
            .with_context(|| {
                format!(
                    "{}: no base_model_name_or_path, so the base model must be given",
                    self.dir.display()
                )
            })?;
        let path = Path::new(base);
        Ok(if path.is_relative() && self.dir.join(path).exists() {
            self.dir.join(path)
        } else {
            path.to_path_buf()
        })
    }

    /// `weight + scale * B @ A`, in the weight's dtype.
    pub fn merged(&self, name: &str, weight: &Tensor) -> Result<Option<Tensor>> {
        let Some((a, b)) = self.factors.get(name) else {
            return Ok(None);
        };
        let delta = (b.matmul(a)? * self.scale())?;
        if delta.dims() != weight.dims() {
            bail!(
                "{}: the adapter's delta for {name} has shape {:?}, the base weight {:?} (wrong base model?)",
                self.dir.display(),
                delta.dims(),
                weight.dims()
            );
        }
        Ok(Some((weight.to_dtype(DType::F32)? + delta)?.to_dtype(weight.dtype())?))
    }

    /// Splits off the weights `apart` picks, as deltas to keep beside those weights unmerged;
    /// the rest stays an adapter to merge (`None` when nothing is left).
    pub fn split(mut self, apart: impl Fn(&str) -> bool) -> (Option<Self>, Vec<(String, LoraDelta)>) {
        let scale = self.scale();
        let names: Vec<String> = self.factors.keys().filter(|n| apart(n)).cloned().collect();
        let mut deltas: Vec<(String, LoraDelta)> = names
            .into_iter()
            .filter_map(|name| {
                self.factors
                    .remove(&name)
                    .map(|(a, b)| (name, LoraDelta { a, b, scale }))
            })
            .collect();
        deltas.sort_by(|x, y| x.0.cmp(&y.0));
        let rest = if self.factors.is_empty() { None } else { Some(self) };
        (rest, deltas)
    }

    /// Checks every adapted weight exists in the base, so a mismatched pair fails at load.
    pub fn check_targets(&self, has: impl Fn(&str) -> bool) -> Result<()> {
        if let Some(missing) = self.factors.keys().find(|n| !has(n)) {
            bail!(
                "{}: adapts {missing}, which the base model does not have (wrong base model?)",
                self.dir.display()
            );
        }
        Ok(())
    }
}

/// A weight source with an adapter merged on the way out: what `VarBuilder` reads from.
pub struct Merged<B> {
    pub base: B,
    pub adapter: LoraAdapter,
}

impl<B: SimpleBackend> SimpleBackend for Merged<B> {
    fn get(&self, s: Shape, name: &str, h: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let w = self.base.get(s, name, h, dtype, dev)?;
        self.merge(name, w)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let w = self.base.get_unchecked(name, dtype, dev)?;
        self.merge(name, w)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.base.contains_tensor(name)
    }
}

impl<B> Merged<B> {
    fn merge(&self, name: &str, w: Tensor) -> candle_core::Result<Tensor> {
        match self.adapter.merged(name, &w) {
            Ok(Some(m)) => Ok(m),
            Ok(None) => Ok(w),
            Err(e) => Err(candle_core::Error::Msg(format!("{e:#}"))),
        }
    }
}
