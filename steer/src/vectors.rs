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

use crate::mode::{SteerMode, SteerPositions};
use anyhow::{bail, Context, Result};
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use probe::lat::ScanDirection;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What LAT read at one layer: how well the direction separates the classes, and where the
/// classes sit along it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LayerReading {
    pub layer: usize,
    /// Held-out pair accuracy (training accuracy if the sidecar's `accuracy_is_training`).
    pub accuracy: Option<f64>,
    /// Share of the pair differences' variance along the direction.
    pub explained_variance: Option<f64>,
    /// Projection spread (the norm of `layers.{i}`).
    pub scale: Option<f64>,
    /// Mean training projection on the unit direction (the class boundary).
    pub midpoint: Option<f64>,
    /// Mean training projection of the copy / correct records: the targets of project-mode
    /// steering.
    pub copy_mean: Option<f64>,
    pub correct_mean: Option<f64>,
    /// The within-pair spread of the training projections (see
    /// `probe::lat::ReadingVector::pair_spread`): what scans divide by.
    pub pair_spread: Option<f64>,
}

/// The sidecar: where the vectors came from and how good they are, one [`LayerReading`] per
/// layer. On disk the readings stay seven parallel arrays (`layers`, `accuracy`, ...), the
/// format notebooks and other tools read; keys another tool's sidecar leaves out take their
/// defaults, and a value an array lacks is `None` in its reading.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(from = "SidecarFile", into = "SidecarFile")]
pub struct VectorMetadata {
    pub model: String,
    pub d_model: usize,
    pub readings: Vec<LayerReading>,
    pub method: String,
    pub position: String,
    pub seed: u64,
    pub default_layers: Vec<usize>,
    pub sign: String,
    pub accuracy_is_training: bool,
    pub train_pairs: usize,
    pub test_pairs: usize,
    /// How these vectors are meant to be applied when the command line does not say
    /// (found by a sweep; absent: add at every position).
    pub steer_mode: Option<SteerMode>,
    pub steer_positions: Option<SteerPositions>,
    /// The sweep grid in the mode's unit when `--alphas` is not given (empty: the mode's).
    pub alphas: Vec<f64>,
    /// True when `default_layers` was chosen (by a sweep) rather than picked by LAT accuracy.
    pub steer_layers_chosen: bool,
    /// What alpha = 1 means for each steering mode.
    pub alpha_unit: BTreeMap<String, String>,
    pub provenance: Option<probe::provenance::Provenance>,
    /// sha256 of the vector file this sidecar was written with: the two are replaced by two
    /// renames, and a reader refuses a pair that a crash between them left mismatched.
    pub vectors_sha256: Option<String>,
}

impl VectorMetadata {
    /// The reading of `layer`, if the sidecar lists it.
    pub fn reading(&self, layer: usize) -> Option<&LayerReading> {
        self.readings.iter().find(|r| r.layer == layer)
    }

    /// The layers the sidecar lists, in its order.
    pub fn layers(&self) -> Vec<usize> {
        self.readings.iter().map(|r| r.layer).collect()
    }

    /// One field of every reading, in the sidecar's order (a missing value as NaN).
    pub fn per_layer(&self, field: impl Fn(&LayerReading) -> Option<f64>) -> Vec<f64> {
        self.readings.iter().map(|r| field(r).unwrap_or(f64::NAN)).collect()
    }
}

/// The per-layer spread a scan standardises by, best first: the within-pair spread LAT
/// records; for older sidecars the pooled within-class spread, derived exactly from the
/// projection std and the class means (balanced pairs: var = within + (gap / 2)^2); the
/// projection std alone; the vector's norm for foreign files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ScanSpread {
    WithinPair,
    WithinClass,
    ProjectionStd,
    VectorNorm,
}

impl ScanSpread {
    /// What the scores are, for a colour bar or a CSV header.
    pub fn score_label(self) -> &'static str {
        match self {
            Self::WithinPair => "(projection - midpoint) / within-pair spread",
            Self::WithinClass => "(projection - midpoint) / within-class std",
            Self::ProjectionStd => "(projection - midpoint) / projection std",
            Self::VectorNorm => "projection / vector norm",
        }
    }

    /// The unit of the scores, short enough for a colour bar.
    pub fn unit(self) -> &'static str {
        match self {
            Self::WithinPair => "within-pair spreads",
            Self::WithinClass => "within-class stds",
            Self::ProjectionStd => "projection stds",
            Self::VectorNorm => "vector norms",
        }
    }
}

fn scan_spread(r: &LayerReading) -> (Option<f64>, ScanSpread) {
    let positive = |v: Option<f64>| v.filter(|v| v.is_finite() && *v > 0.0);
    if let Some(s) = positive(r.pair_spread) {
        return (Some(s), ScanSpread::WithinPair);
    }
    if let (Some(std), Some(copy), Some(correct)) = (positive(r.scale), r.copy_mean, r.correct_mean) {
        let within = std * std - ((correct - copy) / 2.0).powi(2);
        if within > 0.0 {
            return (Some(within.sqrt()), ScanSpread::WithinClass);
        }
    }
    match positive(r.scale) {
        Some(s) => (Some(s), ScanSpread::ProjectionStd),
        None => (None, ScanSpread::VectorNorm),
    }
}

/// One optional value of a reading.
type ReadingField = fn(&LayerReading) -> Option<f64>;

/// The sidecar as it is stored: the readings as parallel arrays, in this key order.
#[derive(Serialize, Deserialize, Default)]
#[serde(default)]
struct SidecarFile {
    model: String,
    d_model: usize,
    layers: Vec<usize>,
    accuracy: Vec<f64>,
    explained_variance: Vec<f64>,
    scale: Vec<f64>,
    midpoint: Vec<f64>,
    method: String,
    position: String,
    seed: u64,
    default_layers: Vec<usize>,
    sign: String,
    accuracy_is_training: bool,
    train_pairs: usize,
    test_pairs: usize,
    copy_mean: Vec<f64>,
    correct_mean: Vec<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pair_spread: Vec<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    steer_mode: Option<SteerMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    steer_positions: Option<SteerPositions>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    alphas: Vec<f64>,
    steer_layers_chosen: bool,
    alpha_unit: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    provenance: Option<probe::provenance::Provenance>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vectors_sha256: Option<String>,
}

impl From<SidecarFile> for VectorMetadata {
    fn from(f: SidecarFile) -> Self {
        let at = |values: &[f64], k: usize| values.get(k).copied();
        let readings = f
            .layers
            .iter()
            .enumerate()
            .map(|(k, &layer)| LayerReading {
                layer,
                accuracy: at(&f.accuracy, k),
                explained_variance: at(&f.explained_variance, k),
                scale: at(&f.scale, k),
                midpoint: at(&f.midpoint, k),
                copy_mean: at(&f.copy_mean, k),
                correct_mean: at(&f.correct_mean, k),
                pair_spread: at(&f.pair_spread, k),
            })
            .collect();
        Self {
            model: f.model,
            d_model: f.d_model,
            readings,
            method: f.method,
            position: f.position,
            seed: f.seed,
            default_layers: f.default_layers,
            sign: f.sign,
            accuracy_is_training: f.accuracy_is_training,
            train_pairs: f.train_pairs,
            test_pairs: f.test_pairs,
            steer_mode: f.steer_mode,
            steer_positions: f.steer_positions,
            alphas: f.alphas,
            steer_layers_chosen: f.steer_layers_chosen,
            alpha_unit: f.alpha_unit,
            provenance: f.provenance,
            vectors_sha256: f.vectors_sha256,
        }
    }
}

impl From<VectorMetadata> for SidecarFile {
    fn from(m: VectorMetadata) -> Self {
        // A field no reading has stays an empty array, as the file it came from had it.
        let column = |field: ReadingField| -> Vec<f64> {
            if m.readings.iter().all(|r| field(r).is_none()) {
                Vec::new()
            } else {
                m.per_layer(field)
            }
        };
        Self {
            layers: m.layers(),
            accuracy: column(|r| r.accuracy),
            explained_variance: column(|r| r.explained_variance),
            scale: column(|r| r.scale),
            midpoint: column(|r| r.midpoint),
            copy_mean: column(|r| r.copy_mean),
            correct_mean: column(|r| r.correct_mean),
            pair_spread: column(|r| r.pair_spread),
            model: m.model,
            d_model: m.d_model,
            method: m.method,
            position: m.position,
            seed: m.seed,
            default_layers: m.default_layers,
            sign: m.sign,
            accuracy_is_training: m.accuracy_is_training,
            train_pairs: m.train_pairs,
            test_pairs: m.test_pairs,
            steer_mode: m.steer_mode,
            steer_positions: m.steer_positions,
            alphas: m.alphas,
            steer_layers_chosen: m.steer_layers_chosen,
            alpha_unit: m.alpha_unit,
            provenance: m.provenance,
            vectors_sha256: m.vectors_sha256,
        }
    }
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
            None => result
                .default_layers()
                .into_iter()
                .filter(|l| keep.contains(l))
                .collect(),
        };
        let metadata = VectorMetadata {
            model: ckpt.path.display().to_string(),
            d_model: ckpt.config.hidden_size,
            readings: kept
                .iter()
                .map(|v| LayerReading {
                    layer: v.layer,
                    accuracy: Some(v.accuracy),
                    explained_variance: Some(v.explained_variance),
                    scale: Some(v.scale as f64),
                    midpoint: Some(v.midpoint),
                    copy_mean: Some(v.copy_mean),
                    correct_mean: Some(v.correct_mean),
                    pair_spread: Some(v.pair_spread),
                })
                .collect(),
            method: result.method.name().into(),
            position: position.name().into(),
            seed,
            default_layers: if default_layers.is_empty() {
                kept.iter().map(|v| v.layer).collect()
            } else {
                default_layers
            },
            sign: SIGN_CONVENTION.into(),
            accuracy_is_training: result.accuracy_is_training,
            train_pairs: result.train_pairs,
            test_pairs: result.test_pairs,
            steer_mode: None,
            steer_positions: None,
            alphas: Vec::new(),
            steer_layers_chosen: false,
            provenance: None,
            vectors_sha256: None,
            alpha_unit: [SteerMode::Add, SteerMode::Project]
                .iter()
                .map(|m| (m.name().to_string(), m.unit().to_string()))
                .collect(),
        };
        Self {
            vectors: kept.iter().map(|v| (v.layer, v.control_vector())).collect(),
            metadata: Some(metadata),
        }
    }

    /// Per layer: the vector, and the (midpoint, spread) a scan centres and divides by (the
    /// spread by [`ScanSpread`]'s order). Files without a sidecar scan raw projections
    /// (midpoint 0) divided by the vector's norm.
    pub fn scan_directions(&self) -> BTreeMap<usize, ScanDirection> {
        self.vectors
            .iter()
            .map(|(&layer, v)| {
                let norm = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
                let reading = self.metadata.as_ref().and_then(|m| m.reading(layer));
                let midpoint = reading.and_then(|r| r.midpoint);
                let (spread, _) = reading.map_or((None, ScanSpread::VectorNorm), scan_spread);
                let (midpoint, scale) = match (midpoint, spread) {
                    (Some(m), Some(s)) => (m, s),
                    _ => (0.0, norm),
                };
                (
                    layer,
                    ScanDirection {
                        direction: v.clone(),
                        midpoint,
                        scale,
                    },
                )
            })
            .collect()
    }

    /// Which spread [`Self::scan_directions`] divides by (the weakest any layer falls back
    /// to), for figure labels.
    pub fn scan_spread(&self) -> ScanSpread {
        self.vectors
            .keys()
            .map(|&layer| {
                let reading = self.metadata.as_ref().and_then(|m| m.reading(layer));
                match reading {
                    Some(r) if r.midpoint.is_some() => scan_spread(r).1,
                    _ => ScanSpread::VectorNorm,
                }
            })
            .max()
            .unwrap_or(ScanSpread::VectorNorm)
    }

    /// The (copy, correct) class means of the projections at `layer`, from the sidecar.
    pub fn class_means(&self, layer: usize) -> Result<(f64, f64)> {
        let found = self.metadata.as_ref().and_then(|m| {
            let reading = m.reading(layer)?;
            Some((reading.copy_mean?, reading.correct_mean?))
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

    /// Writes the safetensors file and its sidecar, together (see [`probe::io::OutputSet`]).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut outputs = probe::io::OutputSet::new();
        self.save_into(path, &mut outputs)?;
        outputs.commit()
    }

    /// [`ControlVectors::save`] as part of a command's outputs, which go into place together.
    pub fn save_into(&self, path: &Path, outputs: &mut probe::io::OutputSet) -> Result<()> {
        if path.extension().and_then(|e| e.to_str()) != Some("safetensors") {
            bail!("vector file {} must end in .safetensors", path.display());
        }
        let tensors: Vec<(String, Vec<u8>, usize)> = self
            .vectors
            .iter()
            .map(|(l, v)| {
                (
                    format!("layers.{l}"),
                    v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    v.len(),
                )
            })
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
            .iter()
            .map(|(name, bytes, n)| {
                Ok((
                    name.clone(),
                    safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![*n], bytes)?,
                ))
            })
            .collect::<Result<_>>()?;
        let bytes = safetensors::serialize(views, None)?;
        // The sidecar names the vectors' bytes, so whichever of the two renames a crash
        // interrupts, a reader finds the pair mismatched instead of mixing two runs.
        let sidecar = match &self.metadata {
            Some(meta) => {
                let meta = VectorMetadata {
                    vectors_sha256: Some(probe::provenance::sha256_hex(&bytes)),
                    ..meta.clone()
                };
                Some(serde_json::to_vec_pretty(&meta)?)
            }
            None => None,
        };
        outputs.write(path, &bytes)?;
        if let Some(sidecar) = sidecar {
            outputs.write(&sidecar_path(path), &sidecar)?;
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
                bail!(
                    "{}: tensor {name} must be a 1-D f32 vector, found {:?} {:?}",
                    path.display(),
                    view.dtype(),
                    view.shape()
                );
            }
            vectors.insert(
                layer,
                view.data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            );
        }
        let sidecar = sidecar_path(path);
        let metadata: Option<VectorMetadata> = if sidecar.exists() {
            let text = std::fs::read_to_string(&sidecar)?;
            Some(serde_json::from_str(&text).with_context(|| format!("invalid sidecar {}", sidecar.display()))?)
        } else {
            None
        };
        if let Some(expected) = metadata.as_ref().and_then(|m| m.vectors_sha256.as_deref()) {
            if probe::provenance::sha256_hex(&bytes) != expected {
                bail!(
                    "{} was written with other vectors than {} (an interrupted write, or one file replaced by hand); \
                     rerun alens lat, or delete the sidecar to use the vectors without it",
                    sidecar.display(),
                    path.display()
                );
            }
        }
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
                bail!(
                    "{}: vector for layer {layer}, but the model has {num_layers} layers",
                    path.display()
                );
            }
            if v.len() != d_model {
                bail!(
                    "{}: vector for layer {layer} has width {}, the model's d_model is {d_model}",
                    path.display(),
                    v.len()
                );
            }
            if v.iter().any(|x| !x.is_finite()) {
                bail!(
                    "{}: vector for layer {layer} contains NaN or infinite values",
                    path.display()
                );
            }
        }
        if let Some(meta) = &self.metadata {
            if meta.d_model != 0 && meta.d_model != d_model {
                bail!(
                    "{}: sidecar says d_model {}, the model's is {d_model}",
                    path.display(),
                    meta.d_model
                );
            }
            if let Some(missing) = meta
                .readings
                .iter()
                .map(|r| r.layer)
                .find(|l| !self.vectors.contains_key(l))
            {
                bail!(
                    "{}: sidecar lists layer {missing} but the file has no layers.{missing}",
                    path.display()
                );
            }
            // Projections of f32 activations: anything outside f32's range is corrupt.
            let in_range = |x: &f64| x.is_finite() && x.abs() <= f32::MAX as f64;
            let fields: [(&str, ReadingField); 5] = [
                ("scale", |r| r.scale),
                ("midpoint", |r| r.midpoint),
                ("copy_mean", |r| r.copy_mean),
                ("correct_mean", |r| r.correct_mean),
                ("pair_spread", |r| r.pair_spread),
            ];
            for (name, field) in fields {
                if let Some(bad) = meta.readings.iter().filter_map(field).find(|x| !in_range(x)) {
                    bail!(
                        "{}: sidecar {name} holds {bad:e}, not a finite number within f32 range",
                        sidecar_path(path).display()
                    );
                }
            }
            if let Some(bad) = meta.alphas.iter().find(|x| !in_range(x)) {
                bail!(
                    "{}: sidecar alphas holds {bad:e}, not a finite number within f32 range",
                    sidecar_path(path).display()
                );
            }
            if let Some(bad) = meta.readings.iter().filter_map(|r| r.scale).find(|s| *s <= 0.0) {
                bail!(
                    "{}: sidecar scale holds {bad}; a projection spread must be positive",
                    sidecar_path(path).display()
                );
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
        let content =
            gguf_file::Content::read(&mut file).with_context(|| format!("{} is not a GGUF file", path.display()))?;
        let mut vectors = BTreeMap::new();
        for name in content.tensor_infos.keys() {
            let Some(layer) = name.strip_prefix("direction.").and_then(|l| l.parse::<usize>().ok()) else {
                continue;
            };
            let t = content
                .tensor(&mut file, name, &Device::Cpu)?
                .dequantize(&Device::Cpu)?;
            vectors.insert(layer, t.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(Self {
            vectors,
            metadata: None,
        })
    }
}

#[cfg(test)]
mod sidecar_tests {
    use super::*;

    /// The shipped sidecars read into per-layer readings and write back as they were: the
    /// same keys in the same order and the same values (to the last digit serde_json's float
    /// parsing keeps: without its `float_roundtrip` feature it may be one ulp off).
    #[test]
    fn shipped_sidecars_round_trip() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let keys = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|l| l.starts_with("  \""))
                .map(|l| l.split(':').next().unwrap_or("").to_string())
                .collect()
        };
        fn close(a: &serde_json::Value, b: &serde_json::Value) -> bool {
            match (a, b) {
                (serde_json::Value::Number(x), serde_json::Value::Number(y)) => {
                    let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                    (x - y).abs() <= 1e-14 * x.abs().max(y.abs()).max(1.0)
                }
                (serde_json::Value::Array(x), serde_json::Value::Array(y)) => {
                    x.len() == y.len() && x.iter().zip(y).all(|(a, b)| close(a, b))
                }
                (serde_json::Value::Object(x), serde_json::Value::Object(y)) => {
                    x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| close(v, w)))
                }
                _ => a == b,
            }
        }
        for file in [
            "notebooks-data/mini-aligner/copy-correct.json",
            "notebooks-data/aligner-135m/copy-correct.json",
            "docs/aligner-135m-research/proportional-vectors/copy-correct.json",
        ] {
            let text = std::fs::read_to_string(repo.join(file)).unwrap();
            let meta: VectorMetadata = serde_json::from_str(&text).unwrap();
            assert!(
                !meta.readings.is_empty() && meta.readings.iter().all(|r| r.accuracy.is_some() && r.scale.is_some()),
                "{file}"
            );
            let written = serde_json::to_string_pretty(&meta).unwrap();
            assert_eq!(keys(&written), keys(&text), "{file}: keys or their order differ");
            let (a, b): (serde_json::Value, serde_json::Value) = (
                serde_json::from_str(&written).unwrap(),
                serde_json::from_str(&text).unwrap(),
            );
            assert!(close(&a, &b), "{file}: values differ");
        }
    }

    #[test]
    fn vectors_and_a_sidecar_of_another_write_are_refused_as_a_pair() {
        let dir = tempfile::tempdir().unwrap();
        let reading = LayerReading {
            layer: 1,
            accuracy: Some(0.9),
            ..Default::default()
        };
        let meta = VectorMetadata {
            readings: vec![reading],
            ..Default::default()
        };
        let make = |x: f32| ControlVectors {
            vectors: BTreeMap::from([(1, vec![x; 4])]),
            metadata: Some(meta.clone()),
        };
        let (a, b) = (dir.path().join("a.safetensors"), dir.path().join("b.safetensors"));
        make(1.0).save(&a).unwrap();
        make(2.0).save(&b).unwrap();
        assert!(ControlVectors::load_unchecked(&a).is_ok());
        // A crash between the two renames of a rerun: new vectors beside the old sidecar.
        std::fs::copy(&b, &a).unwrap();
        let err = ControlVectors::load_unchecked(&a).unwrap_err().to_string();
        assert!(err.contains("written with other vectors"), "{err}");
    }

    #[test]
    fn a_foreign_sidecar_without_some_arrays_keeps_them_absent() {
        let meta: VectorMetadata = serde_json::from_str(r#"{"layers": [3, 5], "accuracy": [0.9, 0.8]}"#).unwrap();
        assert_eq!(meta.reading(5).unwrap().accuracy, Some(0.8));
        assert_eq!(meta.reading(5).unwrap().scale, None);
        let back: serde_json::Value = serde_json::to_value(&meta).unwrap();
        assert_eq!(back["scale"], serde_json::json!([]));
        assert_eq!(back["layers"], serde_json::json!([3, 5]));
    }

    /// Scans divide by the within-pair spread where LAT recorded it; an older sidecar falls
    /// back to the within-class std its scale and class means imply (var = within + gap^2/4).
    #[test]
    fn scans_divide_by_the_best_spread_the_sidecar_holds() {
        let reading = LayerReading {
            layer: 0,
            scale: Some(5.0),
            midpoint: Some(1.0),
            copy_mean: Some(-2.0),
            correct_mean: Some(4.0),
            pair_spread: Some(0.5),
            ..Default::default()
        };
        assert_eq!(scan_spread(&reading), (Some(0.5), ScanSpread::WithinPair));
        let older = LayerReading {
            pair_spread: None,
            ..reading
        };
        assert_eq!(scan_spread(&older), (Some(4.0), ScanSpread::WithinClass));
        let means_only = LayerReading {
            copy_mean: None,
            ..older
        };
        assert_eq!(scan_spread(&means_only), (Some(5.0), ScanSpread::ProjectionStd));
        assert_eq!(scan_spread(&LayerReading::default()).1, ScanSpread::VectorNorm);
    }
}
