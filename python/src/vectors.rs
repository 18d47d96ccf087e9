//! Control vectors, steering, LAT, sweeps and eval: `steer` and `probe::lat` as Python values.

use crate::errors;
use anyhow::anyhow;
use numpy::{PyArray1, PyArrayMethods};
use probe::lat::{LatMethod, ReadPosition};
use probe::stimuli::StimulusRecord;
use probe::{Checkpoint, Site};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::path::PathBuf;
use steer::steering::{check_layers, SteerMode, SteerPositions, Steering};
use steer::vectors::ControlVectors as Vectors;

/// The vector file a shipped model keeps beside its weights (or its adapter), and the
/// mini-aligner's, which is the CLI's fallback.
const MODEL_VECTORS: &str = "copy-correct.safetensors";

#[pyclass(module = "alens._alens", frozen)]
#[derive(Clone)]
pub struct ControlVectors {
    pub inner: Vectors,
    /// Where they were read from, for error messages.
    pub source: PathBuf,
}

#[pymethods]
impl ControlVectors {
    /// Reads `.safetensors` (+ its `.json` sidecar) or a llama.cpp/repeng `.gguf`.
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let inner = py.detach(|| Vectors::load_unchecked(&path)).map_err(errors::runtime)?;
        if inner.vectors.is_empty() {
            return Err(errors::value(anyhow!(
                "{} holds no layers.{{i}} (or direction.{{k}}) vectors",
                path.display()
            )));
        }
        Ok(Self { inner, source: path })
    }

    /// Writes `.safetensors` and its sidecar, atomically, as `alens lat` does.
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        // A wrong file name is a bad argument (ValueError), not a failed write.
        let kind = if path.extension().is_some_and(|e| e == "safetensors") {
            errors::Kind::Runtime
        } else {
            errors::Kind::Value
        };
        // The CLI's rule for every output: never over a file alens did not write (a user's,
        // or one changed since), a dangling link, a directory or a device.
        let sidecar = steer::vectors::sidecar_path(&path);
        probe::io::check_outputs(&[&path, &sidecar], &[]).map_err(errors::exists)?;
        py.detach(|| self.inner.save(&path)).map_err(|e| errors::to_py(e, kind))
    }

    /// The layers that have a vector, ascending.
    #[getter]
    fn layers(&self) -> Vec<usize> {
        self.inner.vectors.keys().copied().collect()
    }

    /// `[len(layers), d_model]` float32, row k the vector of `layers[k]`.
    #[getter]
    fn vectors<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let rows = self.inner.vectors.len();
        let d = self.inner.vectors.values().next().map_or(0, Vec::len);
        let flat: Vec<f32> = self.inner.vectors.values().flatten().copied().collect();
        Ok(PyArray1::from_vec(py, flat).reshape([rows, d])?.into_any())
    }

    /// The sidecar as a dict (None for a file without one).
    #[getter]
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match &self.inner.metadata {
            None => Ok(py.None().into_bound(py)),
            Some(meta) => json_value(py, &serde_json::to_value(meta).map_err(|e| errors::runtime(e.into()))?),
        }
    }

    /// Held-out pair accuracy per layer (training accuracy when nothing was held out).
    #[getter]
    fn accuracy(&self) -> Option<Vec<f64>> {
        self.inner.metadata.as_ref().map(|m| m.per_layer(|r| r.accuracy))
    }

    /// Share of the pair-difference variance along each layer's direction.
    #[getter]
    fn explained_variance(&self) -> Option<Vec<f64>> {
        self.inner
            .metadata
            .as_ref()
            .map(|m| m.per_layer(|r| r.explained_variance))
    }

    /// Mean training projection of the copy records per layer (the class means project
    /// steering moves toward).
    #[getter]
    fn copy_mean(&self) -> Option<Vec<f64>> {
        self.inner.metadata.as_ref().map(|m| m.per_layer(|r| r.copy_mean))
    }

    /// Mean training projection of the correct records per layer.
    #[getter]
    fn correct_mean(&self) -> Option<Vec<f64>> {
        self.inner.metadata.as_ref().map(|m| m.per_layer(|r| r.correct_mean))
    }

    fn default_layers(&self) -> Vec<usize> {
        self.inner.default_layers()
    }

    fn __repr__(&self) -> String {
        format!(
            "ControlVectors(layers={:?}, from={})",
            self.layers(),
            self.source.display()
        )
    }
}

/// A serde value as the Python object `json.loads` makes of it.
pub fn json_value<'py>(py: Python<'py>, value: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    py.import("json")?.call_method1("loads", (value.to_string(),))
}

/// `(question, answer)` of each record (dicts with those keys).
pub fn question_answers(records: &Bound<'_, PyAny>) -> PyResult<Vec<(String, String)>> {
    Ok(stimulus_records(records)?
        .into_iter()
        .map(|r| (r.question, r.answer))
        .collect())
}

/// Records (dicts with question, answer and optionally correction, category) through the
/// stimulus format's own parser, so the fields mean what they mean in a JSONL file.
pub fn stimulus_records(records: &Bound<'_, PyAny>) -> PyResult<Vec<StimulusRecord>> {
    let py = records.py();
    let items: Vec<Bound<'_, PyAny>> = if records.cast::<PyDict>().is_ok() {
        vec![records.clone()]
    } else {
        records
            .try_iter()
            .map_err(|_| errors::value(anyhow!("records must be a list of dicts with question and answer")))?
            .collect::<PyResult<_>>()?
    };
    if items.is_empty() {
        return Err(errors::value(anyhow!("no records given")));
    }
    let dumps = py.import("json")?.getattr("dumps")?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            if item.cast::<PyDict>().is_err() {
                return Err(errors::value(anyhow!(
                    "record {} is not a dict with question and answer",
                    i + 1
                )));
            }
            let text: String = dumps.call1((item,))?.extract()?;
            serde_json::from_str::<StimulusRecord>(&text).map_err(|e| errors::value(anyhow!("record {}: {e}", i + 1)))
        })
        .collect()
}

/// The vectors shipped beside the model (its adapter's directory, then its own), else `None`.
pub fn default_vectors(ckpt: &Checkpoint) -> PyResult<Option<ControlVectors>> {
    let beside = ckpt
        .adapter
        .iter()
        .chain(std::iter::once(&ckpt.path))
        .map(|p| p.join(MODEL_VECTORS))
        .find(|p| p.is_file());
    match beside {
        None => Ok(None),
        Some(path) => Python::attach(|py| ControlVectors::load(py, path)).map(Some),
    }
}

/// `vectors` as given (a ControlVectors, a path) or the model's shipped ones, checked against
/// the model.
pub fn resolve_vectors(ckpt: &Checkpoint, vectors: Option<&Bound<'_, PyAny>>) -> PyResult<ControlVectors> {
    let cv = match vectors {
        Some(v) => match v.cast::<ControlVectors>() {
            Ok(cv) => cv.get().clone(),
            Err(_) => {
                let path: PathBuf = v
                    .extract()
                    .map_err(|_| errors::value(anyhow!("vectors must be an alens.ControlVectors or a path")))?;
                ControlVectors::load(v.py(), path)?
            }
        },
        None => default_vectors(ckpt)?.ok_or_else(|| {
            errors::value(anyhow!(
                "{} has no {MODEL_VECTORS} beside it: pass vectors= (e.g. from alens.lat)",
                ckpt.path.display()
            ))
        })?,
    };
    let cfg = &ckpt.config;
    cv.inner
        .validate(&cv.source, cfg.hidden_size, cfg.num_hidden_layers)
        .map_err(errors::value)?;
    Ok(cv)
}

fn parse_site(site: &str) -> PyResult<Site> {
    Site::from_short(site).ok_or_else(|| {
        errors::value(anyhow!(
            "unknown site {site:?} (resid_pre, attn_out, resid_mid, mlp_out, resid_post)"
        ))
    })
}

fn parse_positions(p: &str) -> PyResult<SteerPositions> {
    [
        SteerPositions::All,
        SteerPositions::Prompt,
        SteerPositions::Generated,
        SteerPositions::Decision,
    ]
    .into_iter()
    .find(|x| x.name() == p)
    .ok_or_else(|| {
        errors::value(anyhow!(
            "steer_positions must be all, prompt, generated or decision, got {p:?}"
        ))
    })
}

fn parse_mode(m: &str) -> PyResult<SteerMode> {
    [SteerMode::Add, SteerMode::Project]
        .into_iter()
        .find(|x| x.name() == m)
        .ok_or_else(|| errors::value(anyhow!("steer_mode must be add or project, got {m:?}")))
}

/// The steering `alens generate`/`sweep` build from their flags: what is not given comes from
/// the vector file's sidecar (layers, mode, positions), else add at every position.
pub fn steering(
    ckpt: &Checkpoint,
    vectors: Option<&Bound<'_, PyAny>>,
    layers: Option<Vec<usize>>,
    site: &str,
    steer_positions: Option<&str>,
    steer_mode: Option<&str>,
) -> PyResult<Steering> {
    let cv = resolve_vectors(ckpt, vectors)?;
    if let Some(layers) = &layers {
        check_layers(layers, ckpt.config.num_hidden_layers).map_err(errors::value)?;
    }
    let positions = steer_positions.map(parse_positions).transpose()?;
    let mode = steer_mode.map(parse_mode).transpose()?;
    Steering::with_sidecar_defaults(cv.inner, layers, parse_site(site)?, positions, mode).map_err(errors::value)
}

pub fn parse_method(m: &str) -> PyResult<LatMethod> {
    [LatMethod::Pca, LatMethod::MeanDiff]
        .into_iter()
        .find(|x| x.name() == m)
        .ok_or_else(|| errors::value(anyhow!("method must be pca or mean-diff, got {m:?}")))
}

pub fn parse_read_position(p: &str) -> PyResult<ReadPosition> {
    [ReadPosition::Last, ReadPosition::AnswerMean]
        .into_iter()
        .find(|x| x.name() == p)
        .ok_or_else(|| errors::value(anyhow!("position must be last or answer-mean, got {p:?}")))
}

pub fn serialized<'py>(py: Python<'py>, value: &impl serde::Serialize) -> PyResult<Bound<'py, PyAny>> {
    json_value(py, &serde_json::to_value(value).map_err(|e| errors::runtime(e.into()))?)
}
