//! Writing a loadable model as an HF directory (`config.json` in the 4.x layout,
//! `model.safetensors`, `tokenizer.json`, `generation_config.json`), so HF tools and our own
//! golden scripts can load the very same weights a GGUF holds after dequantization.

use super::checkpoint::is_gguf;
use super::config::expected_tensors;
use super::config::ModelConfig;
use super::gguf::{self, GgufFile};
use super::gguf_tokenizer;
use anyhow::{bail, Context, Result};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tokenizers::Tokenizer;

/// What was written.
pub struct Exported {
    pub dir: PathBuf,
    pub tensors: usize,
    pub dtype: DType,
}

/// Everything an HF directory is made of.
struct Parts {
    config: ModelConfig,
    tensors: HashMap<String, Tensor>,
    dtype: DType,
    tokenizer: Option<Tokenizer>,
    chat_template: Option<String>,
}

/// Writes the model at `source` (GGUF file or HF directory) as an HF directory `out`, which
/// must not exist yet (or be empty). The directory appears whole or not at all: it is built
/// in a staging directory beside `out` ([`crate::io::StagedDir`]) and moved into place.
pub fn export_hf(source: &Path, out: &Path) -> Result<Exported> {
    if out.exists() && std::fs::read_dir(out).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!(
            "{} already exists and is not an empty directory; choose a new path",
            out.display()
        );
    }
    let parts = if is_gguf(source) {
        from_gguf(source)?
    } else {
        from_hf_dir(source)?
    };
    let staging = crate::io::StagedDir::create(out)?;
    let dir = staging.path();

    let dtype_name = match parts.dtype {
        DType::F32 => "float32",
        DType::F16 => "float16",
        DType::BF16 => "bfloat16",
        other => bail!("cannot export weights held as {other:?}"),
    };
    let config = parts.config.to_hf_json(dtype_name)?;
    write_json(&dir.join("config.json"), &config)?;
    let generation = json!({
        "bos_token_id": parts.config.bos_token_id,
        "eos_token_id": config["eos_token_id"],
        "pad_token_id": parts.config.pad_token_id,
        "do_sample": false,
    });
    write_json(&dir.join("generation_config.json"), &generation)?;
    candle_core::safetensors::save(&parts.tensors, dir.join("model.safetensors"))
        .with_context(|| format!("failed to write model.safetensors in {}", dir.display()))?;
    if let Some(tokenizer) = &parts.tokenizer {
        tokenizer
            .save(dir.join("tokenizer.json"), false)
            .map_err(|e| anyhow::anyhow!("failed to write tokenizer.json: {e}"))?;
        let name = |id: Option<u32>| id.and_then(|i| tokenizer.id_to_token(i));
        let mut tok_cfg = json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": name(parts.config.bos_token_id),
            "eos_token": name(parts.config.eos_token_ids.first().copied()),
            "pad_token": name(parts.config.pad_token_id),
        });
        if let Some(template) = &parts.chat_template {
            tok_cfg["chat_template"] = json!(template);
        }
        write_json(&dir.join("tokenizer_config.json"), &tok_cfg)?;
    }
    staging.commit()?;
    Ok(Exported {
        dir: out.to_path_buf(),
        tensors: parts.tensors.len(),
        dtype: parts.dtype,
    })
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(value)? + "\n")
        .with_context(|| format!("failed to write {}", path.display()))
}

fn from_gguf(path: &Path) -> Result<Parts> {
    let mut file = GgufFile::open(path)?;
    let tokenizer = gguf_tokenizer::from_gguf(&file)?;
    let chat_template = file.string("tokenizer.chat_template")?.map(str::to_string);
    let weights = gguf::read_weights(&mut file, None, false)?;
    Ok(Parts {
        config: weights.config,
        tensors: weights.tensors,
        dtype: weights.dtype,
        tokenizer,
        chat_template,
    })
}

fn from_hf_dir(dir: &Path) -> Result<Parts> {
    if !dir.is_dir() {
        bail!(
            "model {} is neither a checkpoint directory nor a GGUF file",
            dir.display()
        );
    }
    let config = ModelConfig::from_file(&dir.join("config.json"))?;
    let files = super::checkpoint::weight_files(dir)?;
    // SAFETY: the map is read-only and dropped before this function returns; a file changed
    // under a running process is outside what alens can defend against, as for any mmap.
    let st = unsafe { MmapedSafetensors::multi(&files) }
        .with_context(|| format!("failed to read safetensors in {}", dir.display()))?;
    let mut tensors = HashMap::new();
    let mut dtype = DType::F32;
    for (name, shape) in expected_tensors(&config) {
        let t = st
            .load(&name, &Device::Cpu)
            .with_context(|| format!("{} has no tensor {name}", dir.display()))?;
        if t.dims() != shape.as_slice() {
            bail!(
                "{}: tensor {name} has shape {:?}, config.json implies {shape:?}",
                dir.display(),
                t.dims()
            );
        }
        if name == "model.embed_tokens.weight" {
            dtype = t.dtype();
        }
        tensors.insert(name, t);
    }
    let tokenizer_path = dir.join("tokenizer.json");
    let tokenizer = if tokenizer_path.exists() {
        Some(crate::model::AlignerTokenizer::from_file(&tokenizer_path)?.into_inner())
    } else {
        None
    };
    Ok(Parts {
        config,
        tensors,
        dtype,
        tokenizer,
        chat_template: None,
    })
}
