//! `config.json` of a Llama-family checkpoint, read as HF writes it.
//!
//! Two layouts exist in the wild: transformers 4.x puts `rope_theta`, `rope_scaling` and
//! `torch_dtype` at the top level (most published checkpoints, Aligner-7B included); 5.x
//! nests RoPE under `rope_parameters` and renames `torch_dtype` to `dtype`. Both resolve to
//! the same [`ModelConfig`].

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Architectures this model implementation covers. They differ only in which projections
/// carry a bias and whether attention uses a sliding window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    Llama,
    Mistral,
    Qwen2,
}

/// How positions are rescaled before rotary embedding (`rope_scaling.rope_type`).
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor` (position interpolation).
    Linear {
        factor: f64,
    },
    /// Llama 3.1's frequency-dependent scaling.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
    /// One divisor per rotary frequency, as llama.cpp stores Llama 3.1's scaling in a GGUF
    /// (`rope_freqs.weight`).
    Factors(Vec<f64>),
}

/// Everything the forward pass needs, resolved from either config layout.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Bias on q/k/v projections (Qwen2 always; Llama with `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on the output projection (Llama with `attention_bias` only).
    pub o_bias: bool,
    pub mlp_bias: bool,
    pub sliding_window: Option<usize>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
}

/// Upper bounds on config sizes, shared with the GGUF reader: well past any real model.
pub const MAX_LAYERS: usize = 1024;
pub const MAX_WIDTH: usize = 1 << 17;
pub const MAX_HEADS: usize = 4096;
pub const MAX_VOCAB: usize = 1 << 22;
pub const MAX_CONTEXT: usize = 1 << 24;

/// The raw JSON, every field optional where HF has a default.
#[derive(Debug, Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    rope_theta: Option<f64>,
    rope_scaling: Option<serde_json::Value>,
    rope_parameters: Option<serde_json::Value>,
    #[serde(default = "default_max_pos")]
    max_position_embeddings: usize,
    #[serde(default)]
    tie_word_embeddings: Option<bool>,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    mlp_bias: bool,
    hidden_act: Option<String>,
    sliding_window: Option<usize>,
    use_sliding_window: Option<bool>,
    bos_token_id: Option<serde_json::Value>,
    eos_token_id: Option<serde_json::Value>,
    pad_token_id: Option<serde_json::Value>,
}

fn default_eps() -> f64 {
    1e-6
}
fn default_max_pos() -> usize {
    2048
}

/// `eos_token_id` may be a number or a list (Llama 3); `null` means none.
pub(crate) fn token_ids(value: &Option<serde_json::Value>) -> Vec<u32> {
    match value {
        Some(serde_json::Value::Number(n)) => n.as_u64().map(|v| vec![v as u32]).unwrap_or_default(),
        Some(serde_json::Value::Array(items)) => items.iter().filter_map(|v| v.as_u64()).map(|v| v as u32).collect(),
        _ => Vec::new(),
    }
}

impl ModelConfig {
    /// Reads and resolves `config.json`; every error names the file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("failed to read {}", path.display()))?;
        Self::from_json(&text).with_context(|| format!("invalid model config {}", path.display()))
    }

    pub fn from_json(text: &str) -> Result<Self> {
        let raw: RawConfig = serde_json::from_str(text)?;
        let architecture = match raw.model_type.as_deref() {
            Some("llama") => Architecture::Llama,
            Some("mistral") => Architecture::Mistral,
            Some("qwen2") => Architecture::Qwen2,
            Some(other) => bail!("unsupported model_type {other:?}: aligner-lens covers llama, mistral and qwen2"),
            None => bail!("missing model_type"),
        };
        if let Some(act) = raw.hidden_act.as_deref() {
            if act != "silu" {
                bail!("unsupported hidden_act {act:?}: Llama-family MLPs use silu");
            }
        }
        if raw.num_attention_heads == 0 || raw.hidden_size == 0 || raw.num_hidden_layers == 0 {
            bail!("hidden_size, num_attention_heads and num_hidden_layers must be positive");
        }
        // Sizes far past any real checkpoint are refused before anything is allocated from them.
        for (name, value, max) in [
            ("vocab_size", raw.vocab_size, MAX_VOCAB),
            ("hidden_size", raw.hidden_size, MAX_WIDTH),
            ("intermediate_size", raw.intermediate_size, 8 * MAX_WIDTH),
            ("num_hidden_layers", raw.num_hidden_layers, MAX_LAYERS),
            ("num_attention_heads", raw.num_attention_heads, MAX_HEADS),
            ("max_position_embeddings", raw.max_position_embeddings, MAX_CONTEXT),
        ] {
            if value > max {
                bail!("{name} = {value} is out of range (at most {max})");
            }
        }
        if !(raw.rms_norm_eps.is_finite() && raw.rms_norm_eps > 0.0) {
            bail!("rms_norm_eps must be a positive number, got {}", raw.rms_norm_eps);
        }
        let num_key_value_heads = raw.num_key_value_heads.unwrap_or(raw.num_attention_heads);
        if num_key_value_heads == 0 || !raw.num_attention_heads.is_multiple_of(num_key_value_heads) {
            bail!(
                "num_attention_heads ({}) must be a multiple of num_key_value_heads ({num_key_value_heads})",
                raw.num_attention_heads
            );
        }
        // Real configs carry head_dim (Qwen2, Mistral Nemo); hidden/heads is only the default.
        let head_dim = raw.head_dim.unwrap_or(raw.hidden_size / raw.num_attention_heads);
        if !head_dim.is_multiple_of(2) {
            bail!("head_dim {head_dim} must be even for rotary embeddings");
        }

        // 5.x nests theta and scaling in rope_parameters; 4.x keeps them at the top level.
        let rope_block = raw.rope_parameters.as_ref().or(raw.rope_scaling.as_ref());
        let rope_theta = raw
            .rope_theta
            .or_else(|| raw.rope_parameters.as_ref()?.get("rope_theta")?.as_f64())
            .unwrap_or(10_000.0);
        if !(rope_theta.is_finite() && rope_theta > 0.0) {
            bail!("rope_theta must be a positive number, got {rope_theta}");
        }
        let rope_scaling = parse_rope_scaling(rope_block, raw.rope_parameters.is_some())?;

        let (qkv_bias, o_bias) = match architecture {
            Architecture::Qwen2 => (true, false),
            _ => (raw.attention_bias, raw.attention_bias),
        };
        let sliding_window = match architecture {
            Architecture::Mistral => raw.sliding_window,
            Architecture::Qwen2 if raw.use_sliding_window == Some(true) => raw.sliding_window,
            _ => None,
        };
        if sliding_window == Some(0) {
            bail!("sliding_window must be positive (or null for full attention), got 0");
        }
        // Llama and Mistral default to untied embeddings, Qwen2 configs always say.
        let tie_word_embeddings = raw.tie_word_embeddings.unwrap_or(false);

        Ok(Self {
            architecture,
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: raw.rms_norm_eps,
            rope_theta,
            rope_scaling,
            max_position_embeddings: raw.max_position_embeddings,
            tie_word_embeddings,
            qkv_bias,
            o_bias,
            mlp_bias: raw.mlp_bias,
            sliding_window,
            bos_token_id: token_ids(&raw.bos_token_id).first().copied(),
            eos_token_ids: token_ids(&raw.eos_token_id),
            pad_token_id: token_ids(&raw.pad_token_id).first().copied(),
        })
    }
}

impl ModelConfig {
    /// `config.json` as transformers 4.x writes it (top-level `rope_theta`/`rope_scaling`,
    /// `torch_dtype`), which both 4.x and 5.x read. `torch_dtype`: "float32", "bfloat16", ...
    pub fn to_hf_json(&self, torch_dtype: &str) -> Result<serde_json::Value> {
        use serde_json::json;
        let (model_type, class) = match self.architecture {
            Architecture::Llama => ("llama", "LlamaForCausalLM"),
            Architecture::Mistral => ("mistral", "MistralForCausalLM"),
            Architecture::Qwen2 => ("qwen2", "Qwen2ForCausalLM"),
        };
        let rope_scaling = match &self.rope_scaling {
            RopeScaling::None => serde_json::Value::Null,
            RopeScaling::Linear { factor } => json!({"rope_type": "linear", "factor": factor}),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => json!({
                "rope_type": "llama3", "factor": factor, "low_freq_factor": low_freq_factor,
                "high_freq_factor": high_freq_factor,
                "original_max_position_embeddings": original_max_position_embeddings,
            }),
            RopeScaling::Factors(_) => {
                bail!("per-frequency rope factors (a GGUF's rope_freqs.weight) have no config.json form")
            }
        };
        let mut cfg = json!({
            "architectures": [class],
            "model_type": model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": rope_scaling,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "mlp_bias": self.mlp_bias,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": match self.eos_token_ids.as_slice() {
                [] => serde_json::Value::Null,
                [one] => json!(one),
                many => json!(many),
            },
            "pad_token_id": self.pad_token_id,
            "torch_dtype": torch_dtype,
        });
        match self.architecture {
            Architecture::Qwen2 => {
                cfg["use_sliding_window"] = json!(self.sliding_window.is_some());
                cfg["sliding_window"] = json!(self.sliding_window);
            }
            Architecture::Mistral => cfg["sliding_window"] = json!(self.sliding_window),
            Architecture::Llama => {
                if self.qkv_bias != self.o_bias {
                    bail!("a Llama config.json cannot say q/k/v have a bias but o_proj has none");
                }
                cfg["attention_bias"] = json!(self.qkv_bias);
            }
        }
        Ok(cfg)
    }
}

fn parse_rope_scaling(block: Option<&serde_json::Value>, is_rope_parameters: bool) -> Result<RopeScaling> {
    let Some(block) = block.filter(|b| !b.is_null()) else {
        return Ok(RopeScaling::None);
    };
    if !block.is_object() {
        bail!("rope_scaling must be an object with a \"rope_type\", got {block}");
    }
    // Older configs say "type", newer "rope_type"; transformers 5.x's rope_parameters may omit
    // it for plain RoPE, but a rope_scaling block exists to scale, so it must say how.
    let kind = match block.get("rope_type").or_else(|| block.get("type")) {
        Some(serde_json::Value::String(kind)) => kind.as_str(),
        Some(other) => bail!("rope_scaling.rope_type must be a string, got {other}"),
        None if is_rope_parameters => "default",
        None => bail!("rope_scaling has no \"rope_type\" (or \"type\"): cannot tell how positions are scaled"),
    };
    let num = |key: &str| -> Result<f64> {
        let value = block
            .get(key)
            .and_then(|v| v.as_f64())
            .with_context(|| format!("rope scaling of type {kind:?} needs a numeric {key:?}"))?;
        if !(value.is_finite() && value > 0.0) {
            bail!("rope_scaling.{key} must be a positive number, got {value}");
        }
        Ok(value)
    };
    Ok(match kind {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear { factor: num("factor")? },
        "llama3" => RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: num("original_max_position_embeddings")?,
        },
        other => bail!("unsupported rope scaling type {other:?} (supported: default, linear, llama3)"),
    })
}

/// Every tensor name and shape a checkpoint with this config must hold.
pub fn expected_tensors(cfg: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let (d, i, hd) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim);
    let (q, kv) = (cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd);
    let mut out = vec![
        ("model.embed_tokens.weight".to_string(), vec![cfg.vocab_size, d]),
        ("model.norm.weight".to_string(), vec![d]),
    ];
    if !cfg.tie_word_embeddings {
        out.push(("lm_head.weight".to_string(), vec![cfg.vocab_size, d]));
    }
    for layer in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{layer}");
        let mut add = |name: &str, shape: Vec<usize>| out.push((format!("{p}.{name}"), shape));
        add("input_layernorm.weight", vec![d]);
        add("post_attention_layernorm.weight", vec![d]);
        add("self_attn.q_proj.weight", vec![q, d]);
        add("self_attn.k_proj.weight", vec![kv, d]);
        add("self_attn.v_proj.weight", vec![kv, d]);
        add("self_attn.o_proj.weight", vec![d, q]);
        if cfg.qkv_bias {
            add("self_attn.q_proj.bias", vec![q]);
            add("self_attn.k_proj.bias", vec![kv]);
            add("self_attn.v_proj.bias", vec![kv]);
        }
        if cfg.o_bias {
            add("self_attn.o_proj.bias", vec![d]);
        }
        add("mlp.gate_proj.weight", vec![i, d]);
        add("mlp.up_proj.weight", vec![i, d]);
        add("mlp.down_proj.weight", vec![d, i]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#""vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
        "num_hidden_layers": 2, "num_attention_heads": 2"#;

    #[test]
    fn reads_transformers_4_layout() {
        let cfg = ModelConfig::from_json(&format!(
            r#"{{"model_type": "llama", {BASE}, "rope_theta": 500000.0, "torch_dtype": "bfloat16",
            "rope_scaling": {{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}},
            "eos_token_id": [1, 2]}}"#
        ))
        .unwrap();
        assert_eq!(cfg.rope_theta, 500000.0);
        assert!(matches!(cfg.rope_scaling, RopeScaling::Llama3 { factor, .. } if factor == 8.0));
        assert_eq!(cfg.eos_token_ids, vec![1, 2]);
        assert_eq!(cfg.num_key_value_heads, 2);
        assert_eq!(cfg.head_dim, 4);
    }

    #[test]
    fn reads_transformers_5_layout() {
        let cfg = ModelConfig::from_json(&format!(
            r#"{{"model_type": "qwen2", {BASE}, "dtype": "float32",
            "rope_parameters": {{"rope_type": "linear", "factor": 2.0, "rope_theta": 1000.0}}}}"#
        ))
        .unwrap();
        assert_eq!(cfg.rope_theta, 1000.0);
        assert_eq!(cfg.rope_scaling, RopeScaling::Linear { factor: 2.0 });
        assert!(cfg.qkv_bias && !cfg.o_bias);
    }

    #[test]
    fn absurd_sizes_and_bad_floats_are_refused() {
        for (key, value) in [("num_hidden_layers", "1000000000"), ("vocab_size", "1000000000000")] {
            let json = format!(r#"{{"model_type": "llama", {BASE}, "{key}": {value}}}"#)
                .replace(&format!(r#""{key}": 2,"#), "")
                .replace(&format!(r#""{key}": 10,"#), "");
            let err = ModelConfig::from_json(&json).unwrap_err();
            assert!(err.to_string().contains(key), "{err}");
        }
        let err =
            ModelConfig::from_json(&format!(r#"{{"model_type": "llama", {BASE}, "rope_theta": -1.0}}"#)).unwrap_err();
        assert!(err.to_string().contains("rope_theta"), "{err}");
        let err = ModelConfig::from_json(&format!(r#"{{"model_type": "llama", {BASE}, "rms_norm_eps": -1e-6}}"#))
            .unwrap_err();
        assert!(err.to_string().contains("rms_norm_eps"), "{err}");
    }

    #[test]
    fn rejects_unknown_architecture_and_scaling() {
        let err = ModelConfig::from_json(&format!(r#"{{"model_type": "gpt2", {BASE}}}"#)).unwrap_err();
        assert!(err.to_string().contains("gpt2"), "{err}");
        let err = ModelConfig::from_json(&format!(
            r#"{{"model_type": "llama", {BASE}, "rope_scaling": {{"type": "yarn", "factor": 4}}}}"#
        ))
        .unwrap_err();
        assert!(err.to_string().contains("yarn"), "{err}");
    }
}
