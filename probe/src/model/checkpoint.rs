//! Loading a checkpoint: a local HF-layout directory or a llama.cpp GGUF file.
//!
//! A directory holds `config.json`, `model.safetensors` or `model.safetensors.index.json` +
//! shards (memory mapped), `tokenizer.json`, and optionally `generation_config.json`. A GGUF
//! file holds all of that in one header (see [`super::gguf`]). Both end in the same
//! [`Model`]. Every failure is one line naming the file and, for weights, the key.

use super::adapter::{LoraAdapter, Merged};
use super::config::{expected_tensors, token_ids, ModelConfig};
use super::gguf::{self, GgufFile};
use super::gguf_tokenizer;
use super::llama::Model;
use super::tokenizer::AlignerTokenizer;
use anyhow::{bail, Context, Result};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use kernels::bf16::Bf16Compute;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// A loaded checkpoint: the model, its config, its tokenizer (if the source has one) and
/// the special tokens generation needs.
pub struct Checkpoint {
    /// The directory or GGUF file the checkpoint was loaded from.
    pub path: PathBuf,
    pub config: ModelConfig,
    pub model: Model,
    tokenizer: Option<AlignerTokenizer>,
    /// End-of-sequence ids: `generation_config.json` wins over `config.json`, as in HF.
    pub eos_token_ids: Vec<u32>,
    /// The dtype the weight matrices are held in.
    pub weight_dtype: DType,
    /// The chat template the source carries (`tokenizer.chat_template` in a GGUF), if any.
    pub chat_template: Option<String>,
    /// The LoRA adapter merged into the weights, if any.
    pub adapter: Option<PathBuf>,
}

/// How to hold a checkpoint's weights.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Keep a GGUF file's block-quantized matrices quantized and multiply through candle's
    /// quantized kernels (less memory, faster decoding); an adapter then stays a separate
    /// low-rank delta beside each quantized matrix instead of being merged. Refused for
    /// safetensors checkpoints, which hold no quantized matrices.
    pub keep_quantized: bool,
    /// How activations meet bf16 weight matrices (bf16 checkpoints only).
    pub bf16_compute: Bf16Compute,
}

/// The weights as read, with an adapter merged on the way out when there is one.
fn weight_source<B: SimpleBackend + 'static>(base: B, adapter: Option<LoraAdapter>) -> Result<Box<dyn SimpleBackend>> {
    Ok(match adapter {
        None => Box::new(base),
        Some(adapter) => {
            adapter.check_targets(|name| base.contains_tensor(name))?;
            Box::new(Merged { base, adapter })
        }
    })
}

impl Checkpoint {
    /// Loads an HF directory or a `.gguf` file.
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_on(path, &Device::Cpu)
    }

    pub fn load_on(path: &Path, device: &Device) -> Result<Self> {
        Self::load_with_adapter(path, None, device)
    }

    /// Loads the base at `path` with `adapter` merged into its weights.
    pub fn load_with_adapter(path: &Path, adapter: Option<LoraAdapter>, device: &Device) -> Result<Self> {
        Self::load_with(path, adapter, LoadOptions::default(), device)
    }

    /// Loads the base at `path` with `adapter`, holding the weights as `options` says.
    pub fn load_with(path: &Path, adapter: Option<LoraAdapter>, options: LoadOptions, device: &Device) -> Result<Self> {
        let adapter_dir = adapter.as_ref().map(|a| a.dir.clone());
        let gguf = is_gguf(path);
        if options.keep_quantized && !gguf {
            bail!(
                "{} is not a GGUF file: only GGUF models hold quantized matrices to keep",
                path.display()
            );
        }
        let mut ckpt = if gguf {
            Self::load_gguf(path, adapter, options, device)?
        } else {
            Self::load_dir(path, adapter, device)?
        };
        ckpt.adapter = adapter_dir;
        ckpt.model.set_bf16_compute(options.bf16_compute);
        Ok(ckpt)
    }

    fn load_dir(path: &Path, adapter: Option<LoraAdapter>, device: &Device) -> Result<Self> {
        if !path.is_dir() {
            if path.exists() {
                bail!("{} is neither a checkpoint directory nor a GGUF file", path.display());
            }
            bail!("model {} does not exist", path.display());
        }
        let dir = path;
        let config = ModelConfig::from_file(&dir.join("config.json"))?;
        let weights = WeightFiles::find(dir)?;
        // SAFETY: the map is read-only and dropped before this function returns; a file changed
        // under a running process is outside what alens can defend against, as for any mmap.
        let st = unsafe { MmapedSafetensors::multi(&weights.files) }
            .with_context(|| format!("failed to read safetensors in {}", dir.display()))?;
        let weight_dtype = weights.check(&st, &config)?;
        let vb = VarBuilder::from_backend(weight_source(st, adapter)?, weight_dtype, device.clone());
        let model =
            Model::load(vb, &config).with_context(|| format!("failed to load weights from {}", dir.display()))?;

        let tokenizer_path = dir.join("tokenizer.json");
        let tokenizer = if tokenizer_path.exists() {
            Some(AlignerTokenizer::from_file(&tokenizer_path)?)
        } else {
            None
        };
        let generation = read_generation_config(&dir.join("generation_config.json"))?;
        let eos_token_ids = generation
            .as_ref()
            .map(|g| token_ids(&g.get("eos_token_id").cloned()))
            .filter(|ids| !ids.is_empty())
            .unwrap_or_else(|| config.eos_token_ids.clone());
        Ok(Self {
            path: dir.to_path_buf(),
            config,
            model,
            tokenizer,
            eos_token_ids,
            weight_dtype,
            chat_template: None,
            adapter: None,
        })
    }

    fn load_gguf(path: &Path, adapter: Option<LoraAdapter>, options: LoadOptions, device: &Device) -> Result<Self> {
        let mut file = GgufFile::open(path)?;
        let tokenizer = gguf_tokenizer::from_gguf(&file)?.map(AlignerTokenizer::from_tokenizer);
        let chat_template = file.string("tokenizer.chat_template")?.map(str::to_string);
        let weights = gguf::read_weights(&mut file, None, options.keep_quantized)?;
        // A quantized matrix cannot take a merged delta: its factors stay beside it.
        let (merged, beside) = match adapter {
            Some(a) => a.split(|name| weights.quantized.contains(name)),
            None => (None, Vec::new()),
        };
        let vb = VarBuilder::from_backend(weight_source(weights.tensors, merged)?, weights.dtype, device.clone());
        let mut model = Model::load_with_quantized(vb, &weights.config, weights.quantized)
            .with_context(|| format!("failed to build the model from {}", path.display()))?;
        model.attach_lora(beside)?;
        Ok(Self {
            path: path.to_path_buf(),
            eos_token_ids: weights.config.eos_token_ids.clone(),
            config: weights.config,
            model,
            tokenizer,
            weight_dtype: weights.dtype,
            chat_template,
            adapter: None,
        })
    }

    /// The tokenizer, or an error saying the checkpoint has none.
    pub fn tokenizer(&self) -> Result<&AlignerTokenizer> {
        self.tokenizer.as_ref().with_context(|| {
            format!(
                "{} has no tokenizer: only token ids can be fed to it",
                self.path.display()
            )
        })
    }

    /// A short name for titles and metadata: the directory or file name.
    /// A short name for titles: the adapter's directory when one is merged (it is the model
    /// the user named), else the checkpoint's.
    pub fn name(&self) -> String {
        let path = self.adapter.as_ref().unwrap_or(&self.path);
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// The safetensors files of an HF directory (one file, or the shards its index lists).
pub(crate) fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(WeightFiles::find(dir)?.files)
}

/// A GGUF file: by its magic, so a renamed file still loads and a directory never does.
pub fn is_gguf(path: &Path) -> bool {
    if !path.is_file() {
        return false;
    }
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok_and(|_| &magic == b"GGUF")
        || path.extension().is_some_and(|e| e == "gguf")
}

fn read_generation_config(path: &Path) -> Result<Option<serde_json::Value>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("failed to read {}", path.display()))?;
    let value = serde_json::from_str(&text).with_context(|| format!("invalid JSON in {}", path.display()))?;
    Ok(Some(value))
}

/// The safetensors files of a checkpoint and which file each tensor lives in.
struct WeightFiles {
    files: Vec<PathBuf>,
    /// Tensor name -> file name, from the shard index (empty for a single file).
    routing: HashMap<String, String>,
    dir: PathBuf,
}

impl WeightFiles {
    fn find(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        if index.exists() {
            #[derive(serde::Deserialize)]
            struct Index {
                weight_map: BTreeMap<String, String>,
            }
            let text =
                std::fs::read_to_string(&index).with_context(|| format!("failed to read {}", index.display()))?;
            let parsed: Index =
                serde_json::from_str(&text).with_context(|| format!("invalid shard index {}", index.display()))?;
            let mut names: Vec<&String> = parsed.weight_map.values().collect();
            names.sort();
            names.dedup();
            let files: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
            if let Some(missing) = files.iter().find(|f| !f.exists()) {
                bail!(
                    "{} lists shard {} which does not exist",
                    index.display(),
                    missing.display()
                );
            }
            let routing = parsed.weight_map.into_iter().collect();
            Ok(Self {
                files,
                routing,
                dir: dir.to_path_buf(),
            })
        } else if single.exists() {
            Ok(Self {
                files: vec![single],
                routing: HashMap::new(),
                dir: dir.to_path_buf(),
            })
        } else {
            bail!(
                "no weights in {}: expected model.safetensors or model.safetensors.index.json",
                dir.display()
            )
        }
    }

    fn file_of(&self, name: &str) -> String {
        match self.routing.get(name) {
            Some(file) => self.dir.join(file).display().to_string(),
            None if self.files.len() == 1 => self.files[0].display().to_string(),
            None => format!("the shards of {}", self.dir.display()),
        }
    }

    /// Checks every tensor the config implies is present with the right shape, so a broken
    /// checkpoint fails with the file and key named rather than deep inside the model. Returns
    /// the dtype the weight matrices are stored in.
    fn check(&self, st: &MmapedSafetensors, cfg: &ModelConfig) -> Result<DType> {
        let present: HashMap<String, Vec<usize>> = st
            .tensors()
            .into_iter()
            .map(|(name, view)| (name, view.shape().to_vec()))
            .collect();
        for (name, shape) in expected_tensors(cfg) {
            match present.get(&name) {
                None => bail!("{} has no tensor {name}", self.file_of(&name)),
                Some(found) if *found != shape => {
                    bail!(
                        "{}: tensor {name} has shape {found:?}, config.json implies {shape:?}",
                        self.file_of(&name)
                    )
                }
                _ => {}
            }
        }
        let name = "model.embed_tokens.weight";
        let dtype = st
            .get(name)
            .with_context(|| format!("{} has no tensor {name}", self.file_of(name)))?
            .dtype();
        match dtype {
            safetensors::Dtype::F32 => Ok(DType::F32),
            safetensors::Dtype::F16 => Ok(DType::F16),
            safetensors::Dtype::BF16 => Ok(DType::BF16),
            other => bail!(
                "{}: weights stored as {other:?}; supported: F32, F16, BF16",
                self.file_of(name)
            ),
        }
    }
}
