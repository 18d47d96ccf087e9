//! Activation capture: run token sequences through the model and stream the activations at
//! the requested hook points to a safetensors or npz file.
//!
//! Like TransformerLens' `run_with_cache(names_filter=...)`, only what was asked for is kept;
//! unlike it, the cache goes to disk batch by batch, so memory follows the batch size, not the
//! data set size.

use crate::batched::{check_sequences, run_batched_skipping};
use crate::hooks::{HookPoint, Site};
use crate::io::{TensorFileWriter, TensorSpec};
use crate::journal::Journal;
use crate::model::Checkpoint;
use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Which token positions of each sequence are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum PositionMode {
    /// Every token: tensors `[total tokens, d]`.
    All,
    /// The last token of each sequence (the last prompt token, where an Aligner decides to
    /// copy or correct): tensors `[sequences, d]`.
    Last,
}

impl PositionMode {
    pub fn name(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Last => "last",
        }
    }
}

/// Parses a layer list (`all`, `0-3,7`) against the model depth; out of range is an error.
pub fn parse_layers(spec: &str, num_layers: usize) -> Result<Vec<usize>> {
    if spec.trim() == "all" {
        return Ok((0..num_layers).collect());
    }
    let mut layers = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let parse = |s: &str| {
            s.trim()
                .parse::<usize>()
                .with_context(|| format!("bad layer {s:?} in {spec:?}"))
        };
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (parse(a)?, parse(b)?),
            None => (parse(part)?, parse(part)?),
        };
        if lo > hi {
            bail!("empty layer range {part:?}");
        }
        if hi >= num_layers {
            bail!(
                "layer {hi} is out of range: the model has {num_layers} layers (0-{})",
                num_layers - 1
            );
        }
        layers.extend(lo..=hi);
    }
    if layers.is_empty() {
        bail!("no layers selected by {spec:?}");
    }
    layers.sort_unstable();
    layers.dedup();
    Ok(layers)
}

/// What to capture: hook points plus, optionally, the final logits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureRequest {
    pub points: Vec<HookPoint>,
    pub logits: bool,
    pub positions: PositionMode,
}

impl CaptureRequest {
    /// From a point list (`resid_post,logits`, `all`, or full names such as
    /// `blocks.3.hook_attn_out`) and a layer list, which applies to short per-layer names.
    pub fn parse(points: &str, layers: &str, num_layers: usize, positions: PositionMode) -> Result<Self> {
        let layers = parse_layers(layers, num_layers)?;
        let mut out = Vec::new();
        let mut logits = false;
        for name in points.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match name {
                "logits" => logits = true,
                "all" => {
                    out.push(HookPoint::Embed);
                    for &l in &layers {
                        out.extend(Site::ALL.iter().map(|&s| HookPoint::block(l, s)));
                    }
                    out.push(HookPoint::FinalNorm);
                }
                "embed" | "hook_embed" => out.push(HookPoint::Embed),
                "ln_final" | "normalized" | "ln_final.hook_normalized" => out.push(HookPoint::FinalNorm),
                full if full.starts_with("blocks.") => {
                    let point: HookPoint = full.parse()?;
                    if let Some(layer) = point.layer().filter(|&l| l >= num_layers) {
                        bail!("{full}: layer {layer} is out of range (the model has {num_layers} layers)");
                    }
                    out.push(point);
                }
                short => match Site::from_short(short) {
                    Some(site) => out.extend(layers.iter().map(|&l| HookPoint::block(l, site))),
                    None => bail!(
                        "unknown hook point {short:?} (known: embed, resid_pre, attn_out, resid_mid, mlp_out, \
                         resid_post, ln_final, logits, all, or a full name such as blocks.3.hook_attn_out)"
                    ),
                },
            }
        }
        out.sort();
        out.dedup();
        if out.is_empty() && !logits {
            bail!("no hook points selected by {points:?}");
        }
        Ok(Self {
            points: out,
            logits,
            positions,
        })
    }
}

/// What a capture did, for the CLI to report.
#[derive(Debug, Clone)]
pub struct CaptureSummary {
    pub sequences: usize,
    pub tokens: usize,
    pub tensors: Vec<String>,
    pub seconds: f64,
}

/// Runs `sequences` (token ids, fed exactly as given) through the model in batches of
/// `batch_size` ([`run_batched`]) and writes the requested activations to `out`, each
/// sequence's rows at its place in input order.
/// Where a resumable capture keeps its partial output and the batches it finished: after a
/// kill, a capture with the same journal skips those batches and keeps their rows.
pub struct Resumable<'a> {
    pub staging: PathBuf,
    pub journal: &'a mut Journal<usize>,
}

impl Resumable<'_> {
    /// The staging file and journal for output `out`.
    pub fn staging_for(out: &Path) -> PathBuf {
        let mut name = out.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        name.push(".partial");
        out.with_file_name(name)
    }
}

pub fn capture_to_file(
    ckpt: &Checkpoint,
    sequences: &[Vec<u32>],
    request: &CaptureRequest,
    out: &Path,
    batch_size: usize,
    metadata: BTreeMap<String, String>,
    resumable: Option<Resumable>,
) -> Result<CaptureSummary> {
    let started = std::time::Instant::now();
    let cfg = &ckpt.config;
    check_sequences(ckpt, sequences)?;
    let all = request.positions == PositionMode::All;
    // First output row of each sequence.
    let mut first_row = Vec::with_capacity(sequences.len());
    let mut rows = 0usize;
    for seq in sequences {
        first_row.push(rows);
        rows += if all { seq.len() } else { 1 };
    }

    let d = cfg.hidden_size;
    let mut specs: Vec<TensorSpec> = request
        .points
        .iter()
        .map(|p| TensorSpec::f32(p.to_string(), vec![rows, d]))
        .collect();
    if request.logits {
        specs.push(TensorSpec::f32("logits", vec![rows, cfg.vocab_size]));
    }
    let token_ids: Vec<i64> = if all {
        sequences.iter().flatten().map(|&t| t as i64).collect()
    } else {
        sequences.iter().filter_map(|s| s.last()).map(|&t| t as i64).collect()
    };
    specs.push(TensorSpec::i64("token_ids", vec![rows]));
    if all && sequences.len() > 1 {
        specs.push(TensorSpec::i64("token_offsets", vec![sequences.len() + 1]));
    }
    let tensor_names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    let (mut writer, mut journal) = match resumable {
        Some(r) => {
            // Rows of an interrupted run are kept only when its journal vouches for them.
            let reuse = !r.journal.entries().is_empty();
            (
                TensorFileWriter::create_resumable(out, specs, &metadata, &r.staging, reuse)?,
                Some(r.journal),
            )
        }
        None => (TensorFileWriter::create(out, specs, &metadata)?, None),
    };
    let done: std::collections::HashSet<usize> = journal
        .as_ref()
        .map(|j| j.entries().iter().copied().collect())
        .unwrap_or_default();
    writer.write_i64_rows("token_ids", 0, &token_ids)?;
    if all && sequences.len() > 1 {
        let mut offsets: Vec<i64> = first_row.iter().map(|&r| r as i64).collect();
        offsets.push(rows as i64);
        writer.write_i64_rows("token_offsets", 0, &offsets)?;
    }

    run_batched_skipping(
        ckpt,
        sequences,
        &request.points,
        batch_size,
        "capture",
        &|k| done.contains(&k),
        |batch| {
            for (row, &i) in batch.sequences.iter().enumerate() {
                for &point in &request.points {
                    let act = if all {
                        batch.rows(point, row)?
                    } else {
                        batch.last(point, row)?
                    };
                    write_finite(&mut writer, &point.to_string(), first_row[i], &act, i)?;
                }
            }
            if request.logits {
                // Unembed only what is kept: every position, or each row's last.
                let normed = if all {
                    batch.normed.clone()
                } else {
                    batch.last_normed()?
                };
                let logits = ckpt.model.logits(&normed)?;
                for (row, &i) in batch.sequences.iter().enumerate() {
                    let kept = if all {
                        logits.get(row)?.narrow(0, 0, batch.len(row))?
                    } else {
                        logits.get(row)?
                    };
                    write_finite(&mut writer, "logits", first_row[i], &kept, i)?;
                }
            }
            if let Some(journal) = journal.as_mut() {
                writer.sync()?;
                journal.put(&batch.index)?;
            }
            Ok(())
        },
    )?;
    writer.finish()?;
    Ok(CaptureSummary {
        sequences: sequences.len(),
        tokens: sequences.iter().map(Vec::len).sum(),
        tensors: tensor_names,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Writes one sequence's rows of `name`, refusing NaN or infinity with the place named.
fn write_finite(
    writer: &mut TensorFileWriter,
    name: &str,
    first_row: usize,
    rows: &Tensor,
    sequence: usize,
) -> Result<()> {
    let values: Vec<f32> = rows.flatten_all()?.to_vec1()?;
    if values.iter().any(|v| !v.is_finite()) {
        bail!("non-finite activation at {name} for sequence {}", sequence + 1);
    }
    writer.write_f32_rows(name, first_row, &values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_lists() {
        assert_eq!(parse_layers("all", 3).unwrap(), vec![0, 1, 2]);
        assert_eq!(parse_layers("0-1,3", 4).unwrap(), vec![0, 1, 3]);
        assert!(parse_layers("4", 4).unwrap_err().to_string().contains("out of range"));
        assert!(parse_layers("2-1", 4).is_err());
    }

    #[test]
    fn point_lists() {
        let r = CaptureRequest::parse("resid_post,logits", "0-1", 3, PositionMode::All).unwrap();
        assert!(r.logits);
        let names: Vec<String> = r.points.iter().map(|p| p.to_string()).collect();
        assert_eq!(names, ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]);
        assert_eq!(
            CaptureRequest::parse("all", "all", 2, PositionMode::Last)
                .unwrap()
                .points
                .len(),
            12
        );
        assert!(CaptureRequest::parse("blocks.5.hook_resid_post", "all", 2, PositionMode::All).is_err());
        assert!(CaptureRequest::parse("resid_side", "all", 2, PositionMode::All).is_err());
    }
}
