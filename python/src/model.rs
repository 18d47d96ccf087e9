//! `alens._alens.Model`: a loaded checkpoint with its template; the hooked forward, the
//! activation cache and generation, each a thin call into `probe` or `steer`.

use crate::errors::{self, guarded};
use crate::hooks::PyHooks;
use crate::inputs::sequences;
use crate::vectors::{self, ControlVectors};
use anyhow::{anyhow, bail, Result};
use candle_core::Tensor;
use kernels::bf16::Bf16Compute;
use numpy::{PyArray1, PyArrayMethods};
use probe::capture::{CaptureRequest, PositionMode};
use probe::model::LoadOptions;
use probe::{AlignerTemplate, Checkpoint, HookPoint, NoHooks, Positions};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::path::PathBuf;
use std::sync::Arc;
use steer::generate::{run_aligner_many, Correction, GenerationConfig, Sampling};

#[pyclass(module = "alens._alens", frozen)]
pub struct Model {
    pub ckpt: Arc<Checkpoint>,
    pub template: AlignerTemplate,
}

/// Raises the interrupt Python has pending (Ctrl-C), if any: called between batches.
pub fn interrupted(pending: &mut Option<PyErr>) -> Result<()> {
    if let Err(e) = Python::attach(|py| py.check_signals()) {
        *pending = Some(e);
        bail!("interrupted");
    }
    Ok(())
}

/// The error a computation ended with: a Python exception it stored (an interrupt, a hook
/// that raised) wins over the Rust error it caused.
pub fn finish<T>(result: Result<T>, pending: Option<PyErr>) -> PyResult<T> {
    match (result, pending) {
        (Ok(v), _) => Ok(v),
        (Err(_), Some(e)) => Err(e),
        (Err(e), None) => Err(errors::runtime(e)),
    }
}

/// What `run_with_cache` hands the Python layer: logits, the cache, token ids, the mask.
type CacheRun<'py> = (
    Bound<'py, PyAny>,
    Bound<'py, PyDict>,
    Bound<'py, PyAny>,
    Bound<'py, PyAny>,
);

fn array<'py, const N: usize>(py: Python<'py>, data: Vec<f32>, shape: [usize; N]) -> PyResult<Bound<'py, PyAny>> {
    Ok(PyArray1::from_vec(py, data).reshape(shape.to_vec())?.into_any())
}

/// The generation settings `alens generate` builds from its flags.
pub fn generation(
    ckpt: &Checkpoint,
    max_new_tokens: usize,
    ignore_eos: bool,
    temperature: f64,
    top_p: f64,
    seed: u64,
) -> PyResult<GenerationConfig> {
    if !(1..=4096).contains(&max_new_tokens) {
        return Err(errors::value(anyhow!(
            "max_new_tokens must be between 1 and 4,096, got {max_new_tokens}"
        )));
    }
    let sampling = if temperature > 0.0 {
        if !((0.001..=100.0).contains(&temperature) && top_p > 0.0 && top_p <= 1.0) {
            return Err(errors::value(anyhow!(
                "temperature must be 0 or between 0.001 and 100, top_p in (0, 1]"
            )));
        }
        Sampling::TopP {
            temperature,
            top_p,
            seed,
        }
    } else if temperature == 0.0 {
        Sampling::Greedy
    } else {
        return Err(errors::value(anyhow!(
            "temperature must be 0 or between 0.001 and 100, got {temperature}"
        )));
    };
    Ok(GenerationConfig {
        max_new_tokens,
        eos_token_ids: ckpt.eos_token_ids.clone(),
        ignore_eos,
        sampling,
    })
}

fn correction_dict<'py>(py: Python<'py>, c: &Correction) -> PyResult<Bound<'py, PyAny>> {
    let json = serde_json::to_string(c).map_err(|e| errors::runtime(e.into()))?;
    py.import("json")?.call_method1("loads", (json,))
}

#[pymethods]
impl Model {
    #[new]
    #[pyo3(signature = (name_or_path, adapter=None, bf16_compute=None, template=None))]
    fn new(
        py: Python<'_>,
        name_or_path: PathBuf,
        adapter: Option<PathBuf>,
        bf16_compute: Option<&str>,
        template: Option<&str>,
    ) -> PyResult<Self> {
        let bf16_compute = match bf16_compute {
            None | Some("native") => Bf16Compute::Native,
            Some("exact") => Bf16Compute::Exact,
            Some(other) => {
                return Err(errors::value(anyhow!(
                    "bf16_compute must be \"native\" or \"exact\", got {other:?}"
                )))
            }
        };
        let template = match template {
            Some(t) => AlignerTemplate::new(t).map_err(errors::value)?,
            None => AlignerTemplate::default(),
        };
        let options = LoadOptions {
            keep_quantized: false,
            bf16_compute,
        };
        let ckpt = py
            .detach(|| {
                guarded("loading the model panicked", || {
                    probe::model::named::load(&name_or_path, adapter.as_deref(), options, None)
                })
            })
            .map_err(errors::runtime)?;
        Ok(Self {
            ckpt: Arc::new(ckpt),
            template,
        })
    }

    /// The checkpoint's config as HF's config.json would hold it (JSON text).
    fn config_json(&self) -> PyResult<String> {
        let dtype = match self.ckpt.weight_dtype {
            candle_core::DType::BF16 => "bfloat16",
            candle_core::DType::F16 => "float16",
            _ => "float32",
        };
        let value = self.ckpt.config.to_hf_json(dtype).map_err(errors::runtime)?;
        Ok(value.to_string())
    }

    #[getter]
    fn path(&self) -> String {
        self.ckpt.path.display().to_string()
    }

    #[getter]
    fn name(&self) -> String {
        self.ckpt.name()
    }

    #[getter]
    fn hook_points(&self) -> Vec<String> {
        HookPoint::all(self.ckpt.config.num_hidden_layers)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[getter]
    fn eos_token_ids(&self) -> Vec<u32> {
        self.ckpt.eos_token_ids.clone()
    }

    fn tokenize(&self, text: &str) -> PyResult<Vec<u32>> {
        self.ckpt
            .tokenizer()
            .and_then(|t| t.encode(text))
            .map_err(errors::value)
    }

    fn to_string(&self, ids: Vec<u32>) -> PyResult<String> {
        self.ckpt
            .tokenizer()
            .and_then(|t| t.decode(&ids))
            .map_err(errors::value)
    }

    fn to_str_tokens(&self, ids: Vec<u32>) -> PyResult<Vec<String>> {
        Ok(self.ckpt.tokenizer().map_err(errors::value)?.token_strings(&ids))
    }

    fn aligner_prompt(&self, question: &str, answer: &str) -> String {
        self.template.render(question, answer)
    }

    /// `(logits | None, {name: array}, token_ids [batch, pos], mask [batch, pos])`.
    #[pyo3(signature = (inputs, names=None, positions="all", batch_size=8, logits=true))]
    fn run_with_cache<'py>(
        &self,
        py: Python<'py>,
        inputs: &Bound<'py, PyAny>,
        names: Option<Vec<String>>,
        positions: &str,
        batch_size: usize,
        logits: bool,
    ) -> PyResult<CacheRun<'py>> {
        let ckpt = &*self.ckpt;
        let seqs = sequences(ckpt, &self.template, inputs)?;
        let all = match positions {
            "all" => true,
            "last" => false,
            other => {
                return Err(errors::value(anyhow!(
                    "positions must be \"all\" or \"last\", got {other:?}"
                )))
            }
        };
        if batch_size == 0 {
            return Err(errors::value(anyhow!("batch_size must be at least 1")));
        }
        let n = ckpt.config.num_hidden_layers;
        let mode = if all { PositionMode::All } else { PositionMode::Last };
        let points = match &names {
            None => HookPoint::all(n),
            Some(list) if list.is_empty() => Vec::new(),
            Some(list) => {
                CaptureRequest::parse(&list.join(","), "all", n, mode)
                    .map_err(errors::value)?
                    .points
            }
        };
        let (b, d, vocab) = (seqs.len(), ckpt.config.hidden_size, ckpt.config.vocab_size);
        let width = seqs.iter().map(Vec::len).max().unwrap_or(0);
        let rows = if all { b * width } else { b };
        let mut kept: Vec<Vec<f32>> = points.iter().map(|_| vec![0.0; rows * d]).collect();
        let mut unembedded: Vec<f32> = if logits { vec![0.0; rows * vocab] } else { Vec::new() };
        let mut pending = None;
        let result = py.detach(|| {
            guarded("run_with_cache panicked", || {
                probe::batched::run_batched(ckpt, &seqs, &points, batch_size, "run_with_cache", |batch| {
                    for (row, &i) in batch.sequences.iter().enumerate() {
                        let first = if all { i * width } else { i };
                        for (k, &point) in points.iter().enumerate() {
                            let act = if all {
                                batch.rows(point, row)?
                            } else {
                                batch.last(point, row)?
                            };
                            let values: Vec<f32> = act.flatten_all()?.to_vec1()?;
                            kept[k][first * d..first * d + values.len()].copy_from_slice(&values);
                        }
                    }
                    if logits {
                        // As `alens capture --points logits`: unembed only what is kept.
                        let normed = if all {
                            batch.normed.clone()
                        } else {
                            batch.last_normed()?
                        };
                        let out = ckpt.model.logits(&normed)?;
                        for (row, &i) in batch.sequences.iter().enumerate() {
                            let first = if all { i * width } else { i };
                            let rows = if all {
                                out.get(row)?.narrow(0, 0, batch.len(row))?
                            } else {
                                out.get(row)?
                            };
                            let values: Vec<f32> = rows.flatten_all()?.to_vec1()?;
                            unembedded[first * vocab..first * vocab + values.len()].copy_from_slice(&values);
                        }
                    }
                    interrupted(&mut pending)
                })
            })
        });
        finish(result, pending)?;
        let cache = PyDict::new(py);
        for (point, values) in points.iter().zip(kept) {
            let arr = if all {
                array(py, values, [b, width, d])?
            } else {
                array(py, values, [b, d])?
            };
            cache.set_item(point.to_string(), arr)?;
        }
        let logits = match (logits, all) {
            (false, _) => py.None().into_bound(py),
            (true, true) => array(py, unembedded, [b, width, vocab])?,
            (true, false) => array(py, unembedded, [b, vocab])?,
        };
        let (ids, mask) = padded(&seqs, width);
        let ids = PyArray1::from_vec(py, ids).reshape([b, width])?.into_any();
        let mask = PyArray1::from_vec(py, mask).reshape([b, width])?.into_any();
        Ok((logits, cache, ids, mask))
    }

    /// One forward over all inputs (right-padded, in input order) with Python hooks; the
    /// logits `[batch, pos, vocab]`.
    #[pyo3(signature = (inputs, fwd_hooks, logits=true))]
    fn run_with_hooks<'py>(
        &self,
        py: Python<'py>,
        inputs: &Bound<'py, PyAny>,
        fwd_hooks: Vec<(String, Py<PyAny>)>,
        logits: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let ckpt = &*self.ckpt;
        let seqs = sequences(ckpt, &self.template, inputs)?;
        let mut hooks = PyHooks::new(ckpt.config.num_hidden_layers, fwd_hooks)?;
        let (b, vocab) = (seqs.len(), ckpt.config.vocab_size);
        let width = seqs.iter().map(Vec::len).max().unwrap_or(0);
        let pad = ckpt.config.pad_token_id.unwrap_or(0);
        let result = py.detach(|| {
            guarded("run_with_hooks panicked", || {
                let mut ids = Vec::with_capacity(b * width);
                for seq in &seqs {
                    ids.extend_from_slice(seq);
                    ids.extend(std::iter::repeat_n(pad, width - seq.len()));
                }
                let device = ckpt.model.device();
                let ids = Tensor::from_vec(ids, (b, width), device)?;
                let positions = Positions::contiguous(b, width, 0, device)?;
                let normed = ckpt.model.forward(&ids, &positions, None, &mut hooks)?;
                if !logits {
                    return Ok(Vec::new());
                }
                Ok(ckpt.model.logits(&normed)?.flatten_all()?.to_vec1::<f32>()?)
            })
        });
        let pending = hooks.error.take();
        let values = finish(result, pending)?;
        if !logits {
            return Ok(py.None().into_bound(py));
        }
        array(py, values, [b, width, vocab])
    }

    /// The Aligner's corrected answer as a dict with the `alens generate --json` fields.
    #[pyo3(signature = (question, answer, alpha=None, vectors=None, layers=None, site="resid_post", steer_positions=None,
                        steer_mode=None, max_new_tokens=64, ignore_eos=false, temperature=0.0, top_p=0.9, seed=0))]
    #[allow(clippy::too_many_arguments)]
    fn generate<'py>(
        &self,
        py: Python<'py>,
        question: String,
        answer: String,
        alpha: Option<f64>,
        vectors: Option<&Bound<'py, PyAny>>,
        layers: Option<Vec<usize>>,
        site: &str,
        steer_positions: Option<&str>,
        steer_mode: Option<&str>,
        max_new_tokens: usize,
        ignore_eos: bool,
        temperature: f64,
        top_p: f64,
        seed: u64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let records = PyList::new(py, [PyDict::new(py)])?;
        let record = records.get_item(0)?;
        record.set_item("question", question)?;
        record.set_item("answer", answer)?;
        let alphas = alpha.map(|a| vec![a]);
        let out = self.generate_many(
            py,
            records.as_any(),
            alphas,
            vectors,
            layers,
            site,
            steer_positions,
            steer_mode,
            max_new_tokens,
            ignore_eos,
            temperature,
            top_p,
            seed,
            1,
        )?;
        out.get_item(0)
    }

    /// Every record at every alpha (record-major), batched: a list of `generate --json` dicts.
    /// With `alphas=None` the model runs unsteered (alpha 0 in the output).
    #[pyo3(signature = (records, alphas=None, vectors=None, layers=None, site="resid_post", steer_positions=None,
                        steer_mode=None, max_new_tokens=64, ignore_eos=false, temperature=0.0, top_p=0.9, seed=0, batch_size=8))]
    #[allow(clippy::too_many_arguments)]
    fn generate_many<'py>(
        &self,
        py: Python<'py>,
        records: &Bound<'py, PyAny>,
        alphas: Option<Vec<f64>>,
        vectors: Option<&Bound<'py, PyAny>>,
        layers: Option<Vec<usize>>,
        site: &str,
        steer_positions: Option<&str>,
        steer_mode: Option<&str>,
        max_new_tokens: usize,
        ignore_eos: bool,
        temperature: f64,
        top_p: f64,
        seed: u64,
        batch_size: usize,
    ) -> PyResult<Bound<'py, PyList>> {
        let ckpt = &*self.ckpt;
        let pairs = vectors::question_answers(records)?;
        let config = generation(ckpt, max_new_tokens, ignore_eos, temperature, top_p, seed)?;
        if batch_size == 0 {
            return Err(errors::value(anyhow!("batch_size must be at least 1")));
        }
        let steering = match &alphas {
            Some(list) if list.is_empty() => return Err(errors::value(anyhow!("alphas needs at least one value"))),
            Some(list) if list.len() > steer::sweep::MAX_ALPHAS => {
                return Err(errors::value(anyhow!(
                    "alphas has {} values; at most {}",
                    list.len(),
                    steer::sweep::MAX_ALPHAS
                )))
            }
            // Unsteered, or alpha 0 with no vectors named: the plain forward (bit-identical).
            None => None,
            Some(list) if vectors.is_none() && list.iter().all(|&a| a == 0.0) => None,
            Some(_) => Some(vectors::steering(
                &self.ckpt,
                vectors,
                layers,
                site,
                steer_positions,
                steer_mode,
            )?),
        };
        for &alpha in alphas.iter().flatten() {
            steer::steering::check_alpha(alpha).map_err(errors::value)?;
        }
        let alphas = alphas.unwrap_or_else(|| vec![0.0]);
        let template = &self.template;
        let mut pending = None;
        let result = py.detach(|| {
            guarded("generation panicked", || {
                let tokenizer = ckpt.tokenizer()?;
                let pair_refs: Vec<(&str, &str)> = pairs.iter().map(|(q, a)| (q.as_str(), a.as_str())).collect();
                let mut per_alpha = Vec::new();
                for &alpha in &alphas {
                    let outputs = match &steering {
                        None => run_aligner_many(
                            ckpt,
                            template,
                            &pair_refs,
                            &config,
                            batch_size,
                            &mut NoHooks,
                            &mut |_| {},
                            None,
                        )?,
                        Some(s) => {
                            let mut hook = s.at(alpha, ckpt.model.device())?;
                            run_aligner_many(
                                ckpt,
                                template,
                                &pair_refs,
                                &config,
                                batch_size,
                                &mut hook,
                                &mut |_| {},
                                None,
                            )?
                        }
                    };
                    interrupted(&mut pending)?;
                    let corrections: Vec<Correction> = outputs
                        .into_iter()
                        .zip(&pairs)
                        .map(|(out, (_, answer))| Correction::new(tokenizer, answer, out, alpha, &ckpt.name()))
                        .collect::<Result<_>>()?;
                    per_alpha.push(corrections);
                }
                Ok(per_alpha)
            })
        });
        let per_alpha = finish(result, pending)?;
        let out = PyList::empty(py);
        for i in 0..pairs.len() {
            for corrections in &per_alpha {
                out.append(correction_dict(py, &corrections[i])?)?;
            }
        }
        Ok(out)
    }

    /// The control vectors shipped beside this model (copy-correct.safetensors), if any.
    fn default_vectors(&self) -> PyResult<Option<ControlVectors>> {
        vectors::default_vectors(&self.ckpt)
    }
}

/// Right-padded token ids (pad 0) and the mask of real tokens, `[batch * width]` each.
fn padded(seqs: &[Vec<u32>], width: usize) -> (Vec<i64>, Vec<bool>) {
    let mut ids = Vec::with_capacity(seqs.len() * width);
    let mut mask = Vec::with_capacity(seqs.len() * width);
    for seq in seqs {
        ids.extend(seq.iter().map(|&t| t as i64));
        ids.extend(std::iter::repeat_n(0, width - seq.len()));
        mask.extend(std::iter::repeat_n(true, seq.len()));
        mask.extend(std::iter::repeat_n(false, width - seq.len()));
    }
    (ids, mask)
}
