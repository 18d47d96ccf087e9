//! Python functions as forward hooks (TransformerLens' `fwd_hooks=[(name, fn)]`): each sees
//! the activation as a float32 numpy array `[batch, pos, d_model]` and its hook name, and may
//! return a replacement of the same shape and dtype.

use crate::errors;
use anyhow::{anyhow, bail, Result};
use candle_core::Tensor;
use numpy::{PyArray1, PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
use probe::capture::{CaptureRequest, PositionMode};
use probe::{HookPoint, Hooks};
use pyo3::prelude::*;
use std::collections::BTreeMap;

pub struct PyHooks {
    hooks: BTreeMap<HookPoint, Vec<Py<PyAny>>>,
    /// The Python exception a hook raised (or the check of its return value), re-raised as is
    /// once the forward has unwound.
    pub error: Option<PyErr>,
}

impl PyHooks {
    /// `(name, fn)` pairs; a name is a full hook name (`blocks.3.hook_resid_post`) or a short
    /// one (`resid_post`: every layer), as `alens capture --points` reads them.
    pub fn new(num_layers: usize, fwd_hooks: Vec<(String, Py<PyAny>)>) -> PyResult<Self> {
        let mut hooks: BTreeMap<HookPoint, Vec<Py<PyAny>>> = BTreeMap::new();
        for (name, f) in fwd_hooks {
            let request = CaptureRequest::parse(&name, "all", num_layers, PositionMode::All).map_err(errors::value)?;
            if request.logits || name.contains(',') {
                return Err(errors::value(anyhow!(
                    "{name:?} is not one hook point (logits are returned, not hooked)"
                )));
            }
            Python::attach(|py| -> PyResult<()> {
                if !f.bind(py).is_callable() {
                    return Err(errors::value(anyhow!("the hook for {name} is not callable")));
                }
                Ok(())
            })?;
            for point in request.points {
                Python::attach(|py| hooks.entry(point).or_default().push(f.clone_ref(py)));
            }
        }
        Ok(Self { hooks, error: None })
    }

    /// Calls the hooks at `point` in the order given, each on the previous one's result.
    fn call(&self, py: Python<'_>, point: HookPoint, activation: &Tensor) -> PyResult<Option<Tensor>> {
        let dims = activation.dims().to_vec();
        let values: Vec<f32> = activation
            .flatten_all()
            .and_then(|t| t.to_vec1())
            .map_err(|e| errors::runtime(e.into()))?;
        let mut current = PyArray1::from_vec(py, values).reshape(dims.clone())?.into_any();
        let mut replaced = false;
        let name = point.to_string();
        for f in &self.hooks[&point] {
            let returned = f.bind(py).call1((current.clone(), &name))?;
            if returned.is_none() {
                continue;
            }
            checked(&returned, &dims, &name).map_err(errors::value)?;
            current = returned;
            replaced = true;
        }
        if !replaced {
            // The hook may still have written into the array it was given.
            let array = current.cast::<PyArrayDyn<f32>>()?;
            let values = array.readonly().as_slice()?.to_vec();
            let unchanged = activation
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(|e| errors::runtime(e.into()))?;
            if values == unchanged {
                return Ok(None);
            }
            checked(&current, &dims, &name).map_err(errors::value)?;
        }
        let array = current.cast::<PyArrayDyn<f32>>()?;
        let values = array.readonly().as_array().iter().copied().collect::<Vec<f32>>();
        let tensor = Tensor::from_vec(values, dims, activation.device()).map_err(|e| errors::runtime(e.into()))?;
        Ok(Some(tensor))
    }
}

/// A hook's return value: a float32 numpy array with the activation's shape, finite.
fn checked(value: &Bound<'_, PyAny>, dims: &[usize], name: &str) -> Result<()> {
    let Ok(array) = value.cast::<PyArrayDyn<f32>>() else {
        let kind = match value.getattr("dtype") {
            Ok(dtype) => format!("an array of {dtype}"),
            Err(_) => value.get_type().name().map(|n| n.to_string()).unwrap_or_default(),
        };
        bail!("the hook at {name} returned {kind}; return None or a float32 numpy array of shape {dims:?}");
    };
    if array.shape() != dims {
        bail!(
            "the hook at {name} returned shape {:?}; the activation's shape is {dims:?}",
            array.shape()
        );
    }
    let finite = array.readonly().as_array().iter().all(|x| x.is_finite());
    if !finite {
        bail!("the hook at {name} returned NaN or infinite values");
    }
    Ok(())
}

impl Hooks for PyHooks {
    fn wants(&self, point: HookPoint) -> bool {
        self.error.is_none() && self.hooks.contains_key(&point)
    }

    fn on(&mut self, point: HookPoint, activation: &Tensor) -> Result<Option<Tensor>> {
        match Python::attach(|py| self.call(py, point, activation)) {
            Ok(replacement) => Ok(replacement),
            Err(e) => {
                self.error = Some(e);
                bail!("the hook at {point} failed")
            }
        }
    }
}
