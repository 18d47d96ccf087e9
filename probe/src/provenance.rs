//! Where an output came from: the alens version, the command line, the seed, and the model's
//! identity (its path and a content hash), recorded in every JSON output and sidecar so a
//! result can be traced and rerun.

use crate::model::checkpoint::is_gguf;
use crate::model::Checkpoint;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub alens_version: String,
    pub command_line: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    pub model: ModelIdentity,
    /// A merged output's shards (`I/N FILE`, in shard order); empty for a run on one machine.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelIdentity {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<String>,
    /// sha256 over the config, the weight files' headers (safetensors) or metadata and tensor
    /// table (GGUF), and a merged adapter's files: it changes when the weights' layout or the
    /// adapter changes, and costs milliseconds even for a 7B model. It does not see the weight
    /// values: what must be the same model to the bit (a resumed run) also compares
    /// [`weight_files`]' contents.
    pub content_hash: String,
}

/// Every file whose bytes are the model's weights: the safetensors files or the GGUF, and a
/// merged adapter's files.
pub fn weight_files(ckpt: &Checkpoint) -> Result<Vec<std::path::PathBuf>> {
    let mut files = if is_gguf(&ckpt.path) {
        vec![ckpt.path.clone()]
    } else {
        crate::model::checkpoint::weight_files(&ckpt.path)?
    };
    if let Some(dir) = &ckpt.adapter {
        files.extend(["adapter_config.json", "adapter_model.safetensors"].map(|name| dir.join(name)));
    }
    Ok(files)
}

/// The biggest header hashed per weight file: safetensors headers are a few KB to a few MB.
const MAX_HEADER_BYTES: u64 = 64 << 20;

impl ModelIdentity {
    pub fn of(ckpt: &Checkpoint) -> Result<Self> {
        let mut hash = Sha256::new();
        hash.update(serde_json::to_vec(&ckpt.config.to_hf_json("float32")?)?);
        if is_gguf(&ckpt.path) {
            hash_gguf_header(&ckpt.path, &mut hash)?;
        } else {
            for file in crate::model::checkpoint::weight_files(&ckpt.path)? {
                hash_safetensors_header(&file, &mut hash)?;
            }
        }
        if let Some(dir) = &ckpt.adapter {
            for name in ["adapter_config.json", "adapter_model.safetensors"] {
                let path = dir.join(name);
                hash.update(std::fs::read(&path).with_context(|| format!("failed to read {}", path.display()))?);
            }
        }
        Ok(Self {
            path: ckpt.path.display().to_string(),
            adapter: ckpt.adapter.as_ref().map(|a| a.display().to_string()),
            content_hash: format!("{:x}", hash.finalize()),
        })
    }
}

impl Provenance {
    /// For an output of the running command on `ckpt`.
    pub fn of(alens_version: &str, ckpt: &Checkpoint, seed: Option<u64>) -> Result<Self> {
        // `--resume` changes how a run gets done, not what it makes: a resumed run's output
        // is the uninterrupted one's, byte for byte.
        let command_line = std::env::args().filter(|a| a != "--resume").collect();
        Ok(Self {
            alens_version: alens_version.into(),
            command_line,
            seed,
            model: ModelIdentity::of(ckpt)?,
            shards: Vec::new(),
        })
    }
}

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

fn hash_safetensors_header(path: &Path, hash: &mut Sha256) -> Result<()> {
    let mut file = std::fs::File::open(path).with_context(|| format!("failed to open {}", path.display()))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .with_context(|| format!("{} is too short for a safetensors file", path.display()))?;
    hash.update(len);
    let n = u64::from_le_bytes(len).min(MAX_HEADER_BYTES);
    let mut header = Vec::new();
    file.take(n).read_to_end(&mut header)?;
    hash.update(&header);
    Ok(())
}

/// GGUF keeps its metadata and tensor table first: the bytes before the tensor data.
fn hash_gguf_header(path: &Path, hash: &mut Sha256) -> Result<()> {
    let mut file = std::fs::File::open(path).with_context(|| format!("failed to open {}", path.display()))?;
    let content = candle_core::quantized::gguf_file::Content::read(&mut file)
        .with_context(|| format!("{} is not a GGUF file", path.display()))?;
    let mut header = Vec::new();
    std::io::Seek::rewind(&mut file)?;
    file.take(content.tensor_data_offset.min(MAX_HEADER_BYTES))
        .read_to_end(&mut header)?;
    hash.update(&header);
    Ok(())
}
