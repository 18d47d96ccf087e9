//! Control-vector files.
//!
//! Safetensors with one `[d_model]` f32 tensor per layer named `layers.{i}`, the vector added
//! at alpha = 1 (`blocks.{i}.hook_resid_post += alpha * layers.{i}`), and a JSON sidecar at
//! the same path with `.json` for `.safetensors`. A file with only `layers.{i}` tensors (as
//! other tools write them) loads too, and so does a llama.cpp GGUF control vector.
//!
//! llama.cpp adds `direction.{k}` to the output of decoder layer k (0-based), i.e. our
//! `blocks.{k}.hook_resid_post`, and has no slot for layer 0 (`llama_adapter_cvec` keeps
//! `tensors[0]` empty). So our `layers.{k}` is exported as `direction.{k}` unchanged, and a
//! vector at layer 0 cannot be exported.

use anyhow::{bail, Context, Result};
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use crate::mode::{SteerMode, SteerPositions};
use probe::lat::ScanDirection;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The sidecar: where the vectors came from and how good they are. Keys another tool's
/// sidecar leaves out take their defaults.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct VectorMetadata {
    pub model: String,
    pub d_model: usize,
    pub layers: Vec<usize>,
    /// Held-out pair accuracy per entry of `layers` (training accuracy if `accuracy_is_training`).
    pub accuracy: Vec<f64>,
    pub explained_variance: Vec<f64>,
    /// Projection spread per layer (the norm of `layers.{i}`).
    #[serde(default)]
    pub scale: Vec<f64>,
    /// Mean training projection on the unit direction per layer (the class boundary).
    #[serde(default)]
    pub midpoint: Vec<f64>,
    pub method: String,
    pub position: String,
    pub seed: u64,
    pub default_layers: Vec<usize>,
    pub sign: String,
    #[serde(default)]
    pub accuracy_is_training: bool,
    #[serde(default)]
    pub train_pairs: usize,
    #[serde(default)]
    pub test_pairs: usize,
    /// Mean training projection of the copy / correct records on the unit direction, per
    /// entry of `layers`: the targets of project-mode steering.
    #[serde(default)]
    pub copy_mean: Vec<f64>,
    #[serde(default)]
    pub correct_mean: Vec<f64>,
    /// How these vectors are meant to be applied when the command line does not say
    /// (found by a sweep; absent: add at every position).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steer_mode: Option<SteerMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steer_positions: Option<SteerPositions>,
    /// The sweep grid in the mode's unit when `--alphas` is not given (empty: the mode's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alphas: Vec<f64>,
    /// True when `default_layers` was chosen (by a sweep) rather than picked by LAT accuracy.
    #[serde(default)]
    pub steer_layers_chosen: bool,
    /// What alpha = 1 means for each steering mode.
    #[serde(default)]
    pub alpha_unit: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<probe::provenance::Provenance>,
}

pub const SIGN_CONVENTION: &str = "positive = correct";

/// Control vectors by layer, with optional metadata.
#[derive(Debug, Clone)]
pub struct ControlVectors {
    pub vectors: BTreeMap<usize, Vec<f32>>,
    pub metadata: Option<VectorMetadata>,
}

pub fn sidecar_path(path: &Path) -> PathBuf {
    path.with_extension("json")
}

/// Whether `path` holds a vector sidecar (as alens writes it: a JSON object with the sign
/// convention), so writing vectors next to it replaces nothing else.
pub fn is_sidecar(path: &Path) -> bool {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .is_some_and(|v| v.get("sign").is_some() && v.get("layers").is_some())
}

impl ControlVectors {
    /// The vectors a LAT fit gives, for the layers in `keep`: `layers.{i}` = unit direction x
    /// projection std (the vector added at alpha = 1), with the sidecar `alens lat` writes
    /// (steering defaults and provenance left for the caller). `default_layers`: the layers to
    /// steer by default (those kept of LAT's recommendation when `None`).
    pub fn from_lat(
        ckpt: &probe::Checkpoint,
        result: &probe::lat::LatResult,
        position: probe::lat::ReadPosition,
        seed: u64,
        keep: &[usize],
        default_layers: Option<Vec<usize>>,
    ) -> Self {
        let kept: Vec<&probe::lat::ReadingVector> = result.vectors.iter().filter(|v| keep.contains(&v.layer)).collect();
        let default_layers = match default_layers {
            Some(layers) => layers,
            None => result.default_layers().into_iter().filter(|l| keep.contains(l)).collect(),
        };
        let metadata = VectorMetadata {
            model: ckpt.path.display().to_string(),
            d_model: ckpt.config.hidden_size,
            layers: kept.iter().map(|v| v.layer).collect(),
            accuracy: kept.iter().map(|v| v.accuracy).collect(),
            explained_variance: kept.iter().map(|v| v.explained_variance).collect(),
            scale: kept.iter().map(|v| v.scale as f64).collect(),
            midpoint: kept.iter().map(|v| v.midpoint).collect(),
            method: result.method.name().into(),
            position: position.name().into(),
            seed,
            default_layers: if default_layers.is_empty() { kept.iter().map(|v| v.layer).collect() } else { default_layers },
            sign: SIGN_CONVENTION.into(),
            accuracy_is_training: result.accuracy_is_training,
            train_pairs: result.train_pairs,
            test_pairs: result.test_pairs,
            copy_mean: kept.iter().map(|v| v.copy_mean).collect(),
            correct_mean: kept.iter().map(|v| v.correct_mean).collect(),
            steer_mode: None,
            steer_positions: None,
            alphas: Vec::new(),
            steer_layers_chosen: false,
            provenance: None,
            alpha_unit: [SteerMode::Add, SteerMode::Project].iter().map(|m| (m.name().to_string(), m.unit().to_string())).collect(),
        };
        Self { vectors: kept.iter().map(|v| (v.layer, v.control_vector())).collect(), metadata: Some(metadata) }
    }

    /// Per layer: the vector, and the (midpoint, scale) a scan centres and divides by. Files
    /// without a sidecar scan raw projections (midpoint 0) divided by the vector's norm.
    pub fn scan_directions(&self) -> BTreeMap<usize, ScanDirection> {
        self.vectors
            .iter()
            .map(|(&layer, v)| {
                let norm = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
                let from_meta = self.metadata.as_ref().and_then(|m| {
                    let k = m.layers.iter().position(|&l| l == layer)?;
                    Some((*m.midpoint.get(k)?, *m.scale.get(k)?))
                });
                let (midpoint, scale) = from_meta.unwrap_or((0.0, norm));
                (layer, ScanDirection { direction: v.clone(), midpoint, scale })
            })
            .collect()
    }

    /// The (copy, correct) class means of the projections at `layer`, from the sidecar.
    pub fn class_means(&self, layer: usize) -> Result<(f64, f64)> {
        let found = self.metadata.as_ref().and_then(|m| {
            let k = m.layers.iter().position(|&l| l == layer)?;
            Some((*m.copy_mean.get(k)?, *m.correct_mean.get(k)?))
        });
        match found {
            Some((copy, correct)) if copy.is_finite() && correct.is_finite() => Ok((copy, correct)),
            Some(_) => bail!("the sidecar's class means at layer {layer} are not finite numbers"),
            None => bail!("project steering needs the class means (copy_mean, correct_mean) of layer {layer} in the vectors' sidecar; vectors from `alens lat` have them"),
        }
    }

    /// The layers to steer when none are given: the sidecar's `default_layers`, else all.
    pub fn default_layers(&self) -> Vec<usize> {
        match &self.metadata {
            Some(m) if !m.default_layers.is_empty() => m.default_layers.clone(),
            _ => self.vectors.keys().copied().collect(),
        }
    }

    /// Writes the safetensors file and its sidecar, each atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        if path.extension().and_then(|e| e.to_str()) != Some("safetensors") {
            bail!("vector file {} must end in .safetensors", path.display());
        }
        let tensors: Vec<(String, Vec<u8>, usize)> = self
            .vectors
            .iter()
            .map(|(l, v)| (format!("layers.{l}"), v.iter().flat_map(|x| x.to_le_bytes()).collect(), v.len()))
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
            .iter()
            .map(|(name, bytes, n)| Ok((name.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![*n], bytes)?)))
            .collect::<Result<_>>()?;
        let bytes = safetensors::serialize(views, None)?;
        probe::io::write_atomic(path, &bytes)?;
        if let Some(meta) = &self.metadata {
            probe::io::write_atomic(&sidecar_path(path), &serde_json::to_vec_pretty(meta)?)?;
        }
        Ok(())
    }

    /// Loads `.safetensors` (with its sidecar if present) or `.gguf`, and checks it against
    /// the model: width, layer range, finite values.
    pub fn load(path: &Path, d_model: usize, num_layers: usize) -> Result<Self> {
        let loaded = Self::load_unchecked(path)?;
        loaded.validate(path, d_model, num_layers)?;
        Ok(loaded)
    }

    /// Loads `.safetensors` (with its sidecar) or `.gguf` without a model to check against
    /// (the Python package's `ControlVectors.load(path)`); [`Self::validate`] before use.
    pub fn load_unchecked(path: &Path) -> Result<Self> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("gguf") => Self::load_gguf(path),
            _ => Self::load_safetensors(path),
        }
    }

    fn load_safetensors(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("failed to read vector file {}", path.display()))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .with_context(|| format!("{} is not a safetensors file", path.display()))?;
        let mut vectors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let Some(layer) = name.strip_prefix("layers.").and_then(|l| l.parse::<usize>().ok()) else {
                continue;
            };
            if view.dtype() != safetensors::Dtype::F32 || view.shape().len() != 1 {
                bail!("{}: tensor {name} must be a 1-D f32 vector, found {:?} {:?}", path.display(), view.dtype(), view.shape());
            }
            vectors.insert(layer, view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect());
        }
        let sidecar = sidecar_path(path);
        let metadata = if sidecar.exists() {
            let text = std::fs::read_to_string(&sidecar)?;
            Some(serde_json::from_str(&text).with_context(|| format!("invalid sidecar {}", sidecar.display()))?)
        } else {
            None
        };
        Ok(Self { vectors, metadata })
    }

    /// Checks the vectors against a model: width, layer range, finite values, a consistent
    /// sidecar. `path` names them in errors.
    pub fn validate(&self, path: &Path, d_model: usize, num_layers: usize) -> Result<()> {
        if self.vectors.is_empty() {
            bail!("{} holds no layers.{{i}} (or direction.{{k}}) vectors", path.display());
        }
        for (&layer, v) in &self.vectors {
            if layer >= num_layers {
                bail!("{}: vector for layer {layer}, but the model has {num_layers} layers", path.display());
            }
            if v.len() != d_model {
                bail!("{}: vector for layer {layer} has width {}, the model's d_model is {d_model}", path.display(), v.len());
            }
            if v.iter().any(|x| !x.is_finite()) {
                bail!("{}: vector for layer {layer} contains NaN or infinite values", path.display());
            }
        }
        if let Some(meta) = &self.metadata {
            if meta.d_model != 0 && meta.d_model != d_model {
                bail!("{}: sidecar says d_model {}, the model's is {d_model}", path.display(), meta.d_model);
            }
            if let Some(&missing) = meta.layers.iter().find(|l| !self.vectors.contains_key(l)) {
                bail!("{}: sidecar lists layer {missing} but the file has no layers.{missing}", path.display());
            }
            // Projections of f32 activations: anything outside f32's range is corrupt.
            let in_range = |x: &f64| x.is_finite() && x.abs() <= f32::MAX as f64;
            for (name, values) in [("scale", &meta.scale), ("midpoint", &meta.midpoint), ("copy_mean", &meta.copy_mean),
                                   ("correct_mean", &meta.correct_mean), ("alphas", &meta.alphas)] {
                if let Some(bad) = values.iter().find(|x| !in_range(x)) {
                    bail!("{}: sidecar {name} holds {bad:e}, not a finite number within f32 range", sidecar_path(path).display());
                }
            }
            if let Some(bad) = meta.scale.iter().find(|s| **s <= 0.0) {
                bail!("{}: sidecar scale holds {bad}; a projection spread must be positive", sidecar_path(path).display());
            }
        }
        Ok(())
    }

    /// Exports llama.cpp's control-vector GGUF; returns the layers left out (layer 0).
    pub fn save_gguf(&self, path: &Path, model_hint: &str) -> Result<Vec<usize>> {
        let exported: Vec<(&usize, &Vec<f32>)> = self.vectors.iter().filter(|(&l, _)| l > 0).collect();
        if exported.is_empty() {
            bail!("nothing to export to GGUF: llama.cpp has no slot for layer 0");
        }
        let qtensors: Vec<(String, QTensor)> = exported
            .iter()
            .map(|(l, v)| {
                let t = Tensor::new(v.as_slice(), &Device::Cpu)?;
                Ok((format!("direction.{l}"), QTensor::quantize(&t, GgmlDType::F32)?))
            })
            .collect::<Result<_>>()?;
        let layer_count = gguf_file::Value::I32(exported.len() as i32);
        let arch = gguf_file::Value::String("controlvector".into());
        let hint = gguf_file::Value::String(model_hint.into());
        let metadata = [
            ("general.architecture", &arch),
            ("controlvector.model_hint", &hint),
            ("controlvector.layer_count", &layer_count),
        ];
        let tensor_refs: Vec<(&str, &QTensor)> = qtensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let mut out = probe::io::AtomicFile::create(path)?;
        gguf_file::write(out.file(), &metadata, &tensor_refs).context("failed to write GGUF")?;
        out.commit()?;
        Ok(self.vectors.keys().copied().filter(|&l| l == 0).collect())
    }

    fn load_gguf(path: &Path) -> Result<Self> {
        let mut file = std::fs::File::open(path).with_context(|| format!("failed to open {}", path.display()))?;
        let content = gguf_file::Content::read(&mut file).with_context(|| format!("{} is not a GGUF file", path.display()))?;
        let mut vectors = BTreeMap::new();
        for name in content.tensor_infos.keys() {
            let Some(layer) = name.strip_prefix("direction.").and_then(|l| l.parse::<usize>().ok()) else {
                continue;
            };
            let t = content.tensor(&mut file, name, &Device::Cpu)?.dequantize(&Device::Cpu)?;
            vectors.insert(layer, t.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(Self { vectors, metadata: None })
    }
}
