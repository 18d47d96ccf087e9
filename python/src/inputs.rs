//! What `run_with_cache` and `run_with_hooks` accept as inputs, to token sequences: a string,
//! an Aligner record `{"question", "answer"}`, a list of token ids, or a list of any of these.

use crate::errors;
use anyhow::{anyhow, bail, Result};
use probe::{AlignerTemplate, Checkpoint};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

/// One input: tokenized like `alens capture --prompt` (with the tokenizer's post-processor),
/// a record rendered through the template first, token ids as given.
fn one(ckpt: &Checkpoint, template: &AlignerTemplate, item: &Bound<'_, PyAny>, index: usize) -> Result<Vec<u32>> {
    if let Ok(text) = item.cast::<PyString>() {
        return ckpt.tokenizer()?.encode(&text.to_string());
    }
    if let Ok(record) = item.cast::<PyDict>() {
        let field = |name: &str| -> Result<String> {
            let value = record.get_item(name).map_err(|e| anyhow!("{e}"))?;
            let value = value.ok_or_else(|| {
                anyhow!(
                    "input {} has no {name:?} (an Aligner record needs question and answer)",
                    index + 1
                )
            })?;
            value
                .extract::<String>()
                .map_err(|_| anyhow!("input {}: {name:?} must be a string", index + 1))
        };
        let (question, answer) = (field("question")?, field("answer")?);
        return ckpt.tokenizer()?.encode(&template.render(&question, &answer));
    }
    let ids: Vec<i64> = item.extract().map_err(|_| {
        anyhow!(
            "input {} is a {}: give a string, an Aligner record {{\"question\", \"answer\"}} or a list of token ids",
            index + 1,
            item.get_type().name().map(|n| n.to_string()).unwrap_or_default()
        )
    })?;
    ids.into_iter()
        .map(|id| u32::try_from(id).map_err(|_| anyhow!("token id {id} in input {} is not a valid id", index + 1)))
        .collect()
}

/// The token sequences of `inputs`. A single string, record or flat id list is a batch of one.
pub fn sequences(ckpt: &Checkpoint, template: &AlignerTemplate, inputs: &Bound<'_, PyAny>) -> PyResult<Vec<Vec<u32>>> {
    let parse = || -> Result<Vec<Vec<u32>>> {
        if inputs.cast::<PyString>().is_ok() || inputs.cast::<PyDict>().is_ok() {
            return Ok(vec![one(ckpt, template, inputs, 0)?]);
        }
        let items: Vec<Bound<'_, PyAny>> = if let Ok(list) = inputs.cast::<PyList>() {
            list.iter().collect()
        } else if let Ok(tuple) = inputs.cast::<PyTuple>() {
            tuple.iter().collect()
        } else if let Ok(ids) = inputs.extract::<Vec<i64>>() {
            // A 1-D array of ids.
            let list = PyList::new(inputs.py(), ids).map_err(|e| anyhow!("{e}"))?;
            return Ok(vec![one(ckpt, template, list.as_any(), 0)?]);
        } else {
            bail!("inputs must be a string, an Aligner record, a list of token ids, or a list of these");
        };
        if items.is_empty() {
            bail!("no inputs to run");
        }
        // A flat list of ints is one sequence of token ids.
        if items.iter().all(|i| i.extract::<i64>().is_ok()) {
            return Ok(vec![one(ckpt, template, inputs, 0)?]);
        }
        items
            .iter()
            .enumerate()
            .map(|(i, item)| one(ckpt, template, item, i))
            .collect()
    };
    let sequences = parse().map_err(errors::value)?;
    probe::batched::check_sequences(ckpt, &sequences).map_err(errors::value)?;
    Ok(sequences)
}
