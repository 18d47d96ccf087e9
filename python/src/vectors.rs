//! Control vectors, steering, LAT, sweeps and eval: `steer` and `probe::lat` as Python values.

use crate::errors::{self, guarded};
use crate::model::{finish, Model};
use anyhow::anyhow;
use numpy::{PyArray1, PyArrayMethods};
use probe::stimuli::StimulusRecord;
use probe::Site;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::path::{Path, PathBuf};
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
            return Err(errors::value(anyhow!("{} holds no layers.{{i}} (or direction.{{k}}) vectors", path.display())));
        }
        Ok(Self { inner, source: path })
    }

    /// Writes `.safetensors` and its sidecar, atomically, as `alens lat` does.
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        py.detach(|| self.inner.save(&path)).map_err(errors::runtime)
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

    fn default_layers(&self) -> Vec<usize> {
        self.inner.default_layers()
    }

    fn __repr__(&self) -> String {
        format!("ControlVectors(layers={:?}, from={})", self.layers(), self.source.display())
    }
}

/// A serde value as the Python object `json.loads` makes of it.
pub fn json_value<'py>(py: Python<'py>, value: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    py.import("json")?.call_method1("loads", (value.to_string(),))
}

/// `(question, answer)` of each record (dicts with those keys).
pub fn question_answers(records: &Bound<'_, PyAny>) -> PyResult<Vec<(String, String)>> {
    Ok(stimulus_records(records)?.into_iter().map(|r| (r.question, r.answer)).collect())
}

/// Records (dicts with question, answer and optionally correction, category) through the
/// stimulus format's own parser, so the fields mean what they mean in a JSONL file.
pub fn stimulus_records(records: &Bound<'_, PyAny>) -> PyResult<Vec<StimulusRecord>> {
    let py = records.py();
    let items: Vec<Bound<'_, PyAny>> = if records.cast::<PyDict>().is_ok() {
        vec![records.clone()]
    } else {
        records.try_iter().map_err(|_| errors::value(anyhow!("records must be a list of dicts with question and answer")))?.collect::<PyResult<_>>()?
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
                return Err(errors::value(anyhow!("record {} is not a dict with question and answer", i + 1)));
            }
            let text: String = dumps.call1((item,))?.extract()?;
            serde_json::from_str::<StimulusRecord>(&text).map_err(|e| errors::value(anyhow!("record {}: {e}", i + 1)))
        })
        .collect()
}

/// The vectors shipped beside the model (its adapter's directory, then its own), else `None`.
pub fn default_vectors(model: &Model) -> PyResult<Option<ControlVectors>> {
    let ckpt = &model.ckpt;
    let beside = ckpt.adapter.iter().chain(std::iter::once(&ckpt.path)).map(|p| p.join(MODEL_VECTORS)).find(|p| p.is_file());
    match beside {
        None => Ok(None),
        Some(path) => Python::attach(|py| ControlVectors::load(py, path)).map(Some),
    }
}

/// `vectors` as given (a ControlVectors, a path) or the model's shipped ones, checked against
/// the model.
pub fn resolve_vectors(model: &Model, vectors: Option<&Bound<'_, PyAny>>) -> PyResult<ControlVectors> {
    let cv = match vectors {
        Some(v) => match v.cast::<ControlVectors>() {
            Ok(cv) => cv.get().clone(),
            Err(_) => {
                let path: PathBuf = v.extract().map_err(|_| errors::value(anyhow!("vectors must be an alens.ControlVectors or a path")))?;
                ControlVectors::load(v.py(), path)?
            }
        },
        None => default_vectors(model)?.ok_or_else(|| {
            errors::value(anyhow!("{} has no {MODEL_VECTORS} beside it: pass vectors= (e.g. from alens.lat)", model.ckpt.path.display()))
        })?,
    };
    let cfg = &model.ckpt.config;
    cv.inner.validate(&cv.source, cfg.hidden_size, cfg.num_hidden_layers).map_err(errors::value)?;
    Ok(cv)
}

fn parse_site(site: &str) -> PyResult<Site> {
    Site::from_short(site).ok_or_else(|| errors::value(anyhow!("unknown site {site:?} (resid_pre, attn_out, resid_mid, mlp_out, resid_post)")))
}

fn parse_positions(p: &str) -> PyResult<SteerPositions> {
    [SteerPositions::All, SteerPositions::Prompt, SteerPositions::Generated, SteerPositions::Decision]
        .into_iter()
        .find(|x| x.name() == p)
        .ok_or_else(|| errors::value(anyhow!("steer_positions must be all, prompt, generated or decision, got {p:?}")))
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
    model: &Model,
    vectors: Option<&Bound<'_, PyAny>>,
    layers: Option<Vec<usize>>,
    site: &str,
    steer_positions: Option<&str>,
    steer_mode: Option<&str>,
) -> PyResult<Steering> {
    let cv = resolve_vectors(model, vectors)?;
    let n = model.ckpt.config.num_hidden_layers;
    let layers = layers.unwrap_or_else(|| cv.inner.default_layers());
    check_layers(&layers, n).map_err(errors::value)?;
    let meta = cv.inner.metadata.as_ref();
    let mode = match steer_mode {
        Some(m) => parse_mode(m)?,
        None => meta.and_then(|m| m.steer_mode).unwrap_or(SteerMode::Add),
    };
    let positions = match steer_positions {
        Some(p) => parse_positions(p)?,
        None => meta.and_then(|m| m.steer_positions).unwrap_or(SteerPositions::All),
    };
    Steering::new(cv.inner, layers, parse_site(site)?, positions, mode).map_err(errors::value)
}

#[allow(dead_code)]
fn exists(path: &Path) -> bool {
    path.exists()
}

#[pyfunction]
#[pyo3(signature = (model, pairs, method="pca", layers=None, position="last", test_fraction=0.25, seed=0, batch_size=8))]
#[allow(clippy::too_many_arguments)]
pub fn lat(
    py: Python<'_>,
    model: &Model,
    pairs: &Bound<'_, PyAny>,
    method: &str,
    layers: Option<String>,
    position: &str,
    test_fraction: f64,
    seed: u64,
    batch_size: usize,
) -> PyResult<ControlVectors> {
    let _ = (py, model, pairs, method, layers, position, test_fraction, seed, batch_size);
    Err(errors::runtime(anyhow!("alens.lat is not built yet")))
}

#[pyfunction]
#[pyo3(signature = (model, records, vectors=None, alphas=None))]
pub fn sweep<'py>(py: Python<'py>, model: &Model, records: &Bound<'py, PyAny>, vectors: Option<&Bound<'py, PyAny>>, alphas: Option<Vec<f64>>) -> PyResult<Bound<'py, PyAny>> {
    let _ = (model, records, vectors, alphas);
    let _ = finish::<()>(Ok(()), None);
    let _ = PyList::empty(py);
    Err(errors::runtime(anyhow!("alens.sweep is not built yet")))
}

#[pyfunction]
#[pyo3(signature = (model, records, max_new_tokens=64, batch_size=8))]
pub fn eval<'py>(py: Python<'py>, model: &Model, records: &Bound<'py, PyAny>, max_new_tokens: usize, batch_size: usize) -> PyResult<Bound<'py, PyAny>> {
    let _ = (py, model, records, max_new_tokens, batch_size);
    let _ = guarded::<()>("", || Ok(()));
    Err(errors::runtime(anyhow!("alens.eval is not built yet")))
}
