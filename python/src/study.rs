//! The study's functions on a loaded model, as the CLI's commands run them: `alens.lat`,
//! `alens.sweep`, `alens.eval` and `alens.patch`, each returning what the command writes.

use crate::errors::{self, guarded};
use crate::model::{finish, Model};
use crate::vectors::{parse_method, parse_read_position, serialized, steering, stimulus_records, ControlVectors};
use anyhow::anyhow;
use probe::capture::parse_layers;
use probe::lat::{build_pairs, fit, read_activations};
use pyo3::prelude::*;
use std::path::PathBuf;
use steer::knob::SweepReport;
use steer::sweep::SweepOptions;
use steer::vectors::ControlVectors as Vectors;

/// LAT as `alens lat`: pairs from the records, activations read at `position`, one reading
/// vector per layer fitted by `method`, the `layers` kept.
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
    let records = stimulus_records(pairs)?;
    let (method, position) = (parse_method(method)?, parse_read_position(position)?);
    let ckpt = &*model.ckpt;
    let keep =
        parse_layers(layers.as_deref().unwrap_or("all"), ckpt.config.num_hidden_layers).map_err(errors::value)?;
    if !(0.0..1.0).contains(&test_fraction) {
        return Err(errors::value(anyhow!(
            "test_fraction must be in [0, 1), got {test_fraction}"
        )));
    }
    if batch_size == 0 {
        return Err(errors::value(anyhow!("batch_size must be at least 1")));
    }
    let contrast = build_pairs(&records).map_err(errors::value)?;
    let template = &model.template;
    let inner = py
        .detach(|| {
            guarded("lat panicked", || {
                let activations = read_activations(ckpt, template, &records, position, batch_size)?;
                let result = fit(&activations, &contrast, method, test_fraction, seed)?;
                Ok(Vectors::from_lat(ckpt, &result, position, seed, &keep, None))
            })
        })
        .map_err(errors::runtime)?;
    Ok(ControlVectors {
        inner,
        source: PathBuf::from("<alens.lat>"),
    })
}

/// The steering sweep as `alens sweep --json`.
#[pyfunction]
#[pyo3(signature = (model, records, vectors=None, alphas=None, random_control=true, layers=None, site="resid_post",
                    steer_positions=None, steer_mode=None, random_seed=0, max_new_tokens=64, batch_size=32))]
#[allow(clippy::too_many_arguments)]
pub fn sweep<'py>(
    py: Python<'py>,
    model: &Model,
    records: &Bound<'py, PyAny>,
    vectors: Option<&Bound<'py, PyAny>>,
    alphas: Option<Vec<f64>>,
    random_control: bool,
    layers: Option<Vec<usize>>,
    site: &str,
    steer_positions: Option<&str>,
    steer_mode: Option<&str>,
    random_seed: u64,
    max_new_tokens: usize,
    batch_size: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let records = stimulus_records(records)?;
    let steering = steering(&model.ckpt, vectors, layers, site, steer_positions, steer_mode)?;
    let alphas = match alphas {
        Some(a) if a.is_empty() => return Err(errors::value(anyhow!("alphas needs at least one value"))),
        Some(a) if a.len() > steer::sweep::MAX_ALPHAS => {
            return Err(errors::value(anyhow!(
                "alphas has {} values; at most {}",
                a.len(),
                steer::sweep::MAX_ALPHAS
            )))
        }
        Some(a) => a,
        // As `alens sweep` without --alphas: the vector file's grid, else the mode's.
        None => match steering.vectors.metadata.as_ref() {
            Some(m) if !m.alphas.is_empty() => m.alphas.clone(),
            _ => steering.mode.default_alphas(),
        },
    };
    for &alpha in &alphas {
        steer::steering::check_alpha(alpha).map_err(errors::value)?;
    }
    if batch_size == 0 {
        return Err(errors::value(anyhow!("batch_size must be at least 1")));
    }
    let ckpt = &*model.ckpt;
    let generation = crate::model::generation(ckpt, max_new_tokens, false, 0.0, 0.9, 0)?;
    let options = SweepOptions {
        alphas,
        generation,
        batch_size,
        random_control: random_control.then_some(random_seed),
    };
    let template = &model.template;
    let report = py
        .detach(|| {
            guarded("sweep panicked", || {
                Ok(SweepReport::new(
                    steer::sweep::sweep(ckpt, template, &records, &steering, &options, None)?,
                    None,
                ))
            })
        })
        .map_err(errors::runtime)?;
    let _ = finish::<()>(Ok(()), None);
    serialized(py, &report)
}

/// Scores on records with references, as `alens eval --json`.
#[pyfunction]
#[pyo3(signature = (model, records, max_new_tokens=64, batch_size=32))]
pub fn eval<'py>(
    py: Python<'py>,
    model: &Model,
    records: &Bound<'py, PyAny>,
    max_new_tokens: usize,
    batch_size: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let records = stimulus_records(records)?;
    crate::model::generation(&model.ckpt, max_new_tokens, false, 0.0, 0.9, 0)?;
    if batch_size == 0 {
        return Err(errors::value(anyhow!("batch_size must be at least 1")));
    }
    let (ckpt, template) = (&*model.ckpt, &model.template);
    let report = py
        .detach(|| {
            guarded("eval panicked", || {
                steer::eval::evaluate(ckpt, template, &records, max_new_tokens, batch_size, None)
            })
        })
        .map_err(errors::runtime)?;
    serialized(py, &report)
}

/// Activation patching as `alens patch --json`: per layer, both directions' switch rates and
/// logit-difference changes, the controls, and LAT's accuracy from `vectors` (default: the ones
/// shipped beside the model, if any).
#[pyfunction]
#[pyo3(signature = (model, records, positions="decision", layers=None, point="resid_post", max_new_tokens=1,
                    max_pairs=None, batch_size=8, vectors=None))]
#[allow(clippy::too_many_arguments)]
pub fn patch<'py>(
    py: Python<'py>,
    model: &Model,
    records: &Bound<'py, PyAny>,
    positions: &str,
    layers: Option<Vec<usize>>,
    point: &str,
    max_new_tokens: usize,
    max_pairs: Option<usize>,
    batch_size: usize,
    vectors: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    use steer::patching::{PatchPositions, PatchReport, PatchSettings};
    let records = stimulus_records(records)?;
    let ckpt = &*model.ckpt;
    let positions = match positions {
        "decision" => PatchPositions::Decision,
        "answer" => PatchPositions::Answer,
        "all" => PatchPositions::All,
        other => {
            return Err(errors::value(anyhow!(
                "positions must be decision, answer or all, not {other:?}"
            )))
        }
    };
    let site = probe::Site::from_short(point).ok_or_else(|| {
        errors::value(anyhow!(
            "point must be a site such as resid_post, attn_out or mlp_out, not {point:?}"
        ))
    })?;
    let layers = layers.unwrap_or_else(|| (0..ckpt.config.num_hidden_layers).collect());
    steer::steering::check_layers(&layers, ckpt.config.num_hidden_layers).map_err(errors::value)?;
    if batch_size < 2 {
        return Err(errors::value(anyhow!("batch_size must be at least 2 pairs")));
    }
    let vectors = match vectors {
        Some(_) => Some(crate::vectors::resolve_vectors(ckpt, vectors)?),
        None => crate::vectors::default_vectors(ckpt)?,
    };
    let generation = crate::model::generation(ckpt, max_new_tokens, false, 0.0, 0.9, 0)?;
    if max_new_tokens == 0 {
        return Err(errors::value(anyhow!("max_new_tokens must be at least 1")));
    }
    let mut pairs = steer::patching::patch_pairs(ckpt, &model.template, &records).map_err(errors::value)?;
    if let Some(n) = max_pairs {
        pairs.truncate(n);
    }
    steer::patching::check_pairs(&pairs, positions).map_err(errors::value)?;
    let settings = PatchSettings {
        site,
        layers,
        positions,
        generation,
    };
    let report = py
        .detach(|| {
            guarded("patch panicked", || {
                let batches =
                    steer::patching::run_patching(&ckpt.model, &pairs, &settings, batch_size, None, &mut |_| {})?;
                PatchReport::from_batches(&batches, &settings)
            })
        })
        .map_err(errors::runtime)?;
    let report = match &vectors {
        Some(v) => report.with_lat_accuracy(&v.inner),
        None => report,
    };
    serialized(py, &report)
}
