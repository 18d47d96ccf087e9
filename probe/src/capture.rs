//! Activation capture: run token sequences through the model and stream the activations at
//! the requested hook points to a safetensors or npz file.
//!
//! Like TransformerLens' `run_with_cache(names_filter=...)`, only what was asked for is kept;
//! unlike it, the cache goes to disk batch by batch, so memory follows the batch size, not the
//! data set size.

use crate::hooks::{HookPoint, Hooks, Site};
use crate::io::{TensorFileWriter, TensorSpec};
use crate::model::{Checkpoint, Positions};
use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Which token positions of each sequence are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PositionMode {
    /// Every token: tensors `[total tokens, d]`.
    All,
    /// The last token of each sequence (the last prompt token, where an Aligner decides to
    /// copy or correct): tensors `[sequences, d]`.
    Last,
}

impl std::str::FromStr for PositionMode {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "all" => Ok(Self::All),
            "last" => Ok(Self::Last),
            other => bail!("--positions must be all or last, not {other:?}"),
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
        let parse = |s: &str| s.trim().parse::<usize>().with_context(|| format!("bad layer {s:?} in {spec:?}"));
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (parse(a)?, parse(b)?),
            None => (parse(part)?, parse(part)?),
        };
        if lo > hi {
            bail!("empty layer range {part:?}");
        }
        if hi >= num_layers {
            bail!("layer {hi} is out of range: the model has {num_layers} layers (0-{})", num_layers - 1);
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
    /// From `--points` (`resid_post,logits`, `all`, or full names such as
    /// `blocks.3.hook_attn_out`) and `--layers`, which applies to short per-layer names.
    pub fn parse(points: &str, layers: &str, num_layers: usize, positions: PositionMode) -> Result<Self> {
        let layers = parse_layers(layers, num_layers)?;
        let mut out = Vec::new();
        let mut logits = false;
        for name in points.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match name {
                "logits" => logits = true,
                "all" => {
                    out.push(HookPoint::embed());
                    for &l in &layers {
                        out.extend(Site::PER_LAYER.iter().map(|&s| HookPoint::block(l, s)));
                    }
                    out.push(HookPoint::final_norm());
                }
                full if full.starts_with("blocks.") => {
                    let point: HookPoint = full.parse()?;
                    if point.layer >= num_layers {
                        bail!("{full}: layer {} is out of range (the model has {num_layers} layers)", point.layer);
                    }
                    out.push(point);
                }
                short => match Site::parse_short(short)? {
                    Site::Embed => out.push(HookPoint::embed()),
                    Site::FinalNorm => out.push(HookPoint::final_norm()),
                    site => out.extend(layers.iter().map(|&l| HookPoint::block(l, site))),
                },
            }
        }
        out.sort();
        out.dedup();
        if out.is_empty() && !logits {
            bail!("no hook points selected by --points {points:?}");
        }
        Ok(Self { points: out, logits, positions })
    }
}

/// Keeps the activations at the requested points for one batch.
struct CaptureHooks<'a> {
    wanted: &'a [HookPoint],
    seen: HashMap<HookPoint, Tensor>,
}

impl Hooks for CaptureHooks<'_> {
    fn wants(&self, point: HookPoint) -> bool {
        self.wanted.contains(&point)
    }
    fn on(&mut self, point: HookPoint, activation: &Tensor) -> Result<Option<Tensor>> {
        self.seen.insert(point, activation.clone());
        Ok(None)
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
/// `batch_size` and writes the requested activations to `out`.
///
/// Batches are right-padded: with causal attention a real token never sees the padding after
/// it, so each sequence gets exactly the activations it would get alone. Sequences are
/// batched by length to waste little on padding, and written back in input order.
pub fn capture_to_file(
    ckpt: &Checkpoint,
    sequences: &[Vec<u32>],
    request: &CaptureRequest,
    out: &Path,
    batch_size: usize,
    metadata: BTreeMap<String, String>,
) -> Result<CaptureSummary> {
    let started = std::time::Instant::now();
    let cfg = &ckpt.config;
    if sequences.is_empty() {
        bail!("nothing to capture: no sequences");
    }
    for (i, seq) in sequences.iter().enumerate() {
        if seq.is_empty() {
            bail!("sequence {i} is empty");
        }
        if let Some(&bad) = seq.iter().find(|&&id| id as usize >= cfg.vocab_size) {
            bail!("token id {bad} in sequence {i} is outside the vocabulary (size {})", cfg.vocab_size);
        }
    }
    let all = request.positions == PositionMode::All;
    // First output row of each sequence.
    let mut first_row = Vec::with_capacity(sequences.len());
    let mut rows = 0usize;
    for seq in sequences {
        first_row.push(rows);
        rows += if all { seq.len() } else { 1 };
    }

    let d = cfg.hidden_size;
    let mut specs: Vec<TensorSpec> = request.points.iter().map(|p| TensorSpec::f32(p.to_string(), vec![rows, d])).collect();
    if request.logits {
        specs.push(TensorSpec::f32("logits", vec![rows, cfg.vocab_size]));
    }
    let token_ids: Vec<i64> = if all {
        sequences.iter().flatten().map(|&t| t as i64).collect()
    } else {
        sequences.iter().map(|s| *s.last().unwrap() as i64).collect()
    };
    specs.push(TensorSpec::i64("token_ids", vec![rows]));
    if all && sequences.len() > 1 {
        specs.push(TensorSpec::i64("token_offsets", vec![sequences.len() + 1]));
    }
    let tensor_names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    let mut writer = TensorFileWriter::create(out, specs, &metadata)?;
    writer.write_i64_rows("token_ids", 0, &token_ids)?;
    if all && sequences.len() > 1 {
        let mut offsets: Vec<i64> = first_row.iter().map(|&r| r as i64).collect();
        offsets.push(rows as i64);
        writer.write_i64_rows("token_offsets", 0, &offsets)?;
    }

    let mut order: Vec<usize> = (0..sequences.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(sequences[i].len()));
    let pad = cfg.pad_token_id.unwrap_or(0);
    let progress = crate::progress::bar(sequences.len() as u64, "capture");
    let device = ckpt.model.device();
    for batch in order.chunks(batch_size.max(1)) {
        let width = batch.iter().map(|&i| sequences[i].len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(batch.len() * width);
        for &i in batch {
            ids.extend_from_slice(&sequences[i]);
            ids.extend(std::iter::repeat_n(pad, width - sequences[i].len()));
        }
        let ids = Tensor::from_vec(ids, (batch.len(), width), device)?;
        let positions = Positions::contiguous(batch.len(), width, 0, device)?;
        let mut hooks = CaptureHooks { wanted: &request.points, seen: HashMap::new() };
        let normed = ckpt.model.forward(&ids, &positions, None, &mut hooks)?;
        for point in &request.points {
            let act = hooks.seen.remove(point).with_context(|| format!("hook point {point} was never reached"))?;
            write_rows(&mut writer, &point.to_string(), &act, batch, sequences, &first_row, all)?;
        }
        if request.logits {
            if all {
                let logits = ckpt.model.logits(&normed)?;
                write_rows(&mut writer, "logits", &logits, batch, sequences, &first_row, true)?;
            } else {
                // Unembed only each sequence's last row: [b, 1, vocab].
                let logits = ckpt.model.logits(&last_rows(&normed, batch, sequences)?)?;
                for (row, &i) in batch.iter().enumerate() {
                    writer.write_f32_rows("logits", first_row[i], &logits.get(row)?.flatten_all()?.to_vec1()?)?;
                }
            }
        }
        progress.inc(batch.len() as u64);
    }
    progress.finish_and_clear();
    writer.finish()?;
    Ok(CaptureSummary {
        sequences: sequences.len(),
        tokens: sequences.iter().map(Vec::len).sum(),
        tensors: tensor_names,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// `[b, s, k]` -> `[b, 1, k]`: each row's last real token.
fn last_rows(x: &Tensor, batch: &[usize], sequences: &[Vec<u32>]) -> Result<Tensor> {
    let rows = batch
        .iter()
        .enumerate()
        .map(|(row, &i)| x.get(row)?.narrow(0, sequences[i].len() - 1, 1))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Tensor::stack(&rows, 0)?)
}

/// Writes each sequence's rows of a `[b, s, k]` activation at that sequence's place.
fn write_rows(
    writer: &mut TensorFileWriter,
    name: &str,
    act: &Tensor,
    batch: &[usize],
    sequences: &[Vec<u32>],
    first_row: &[usize],
    all: bool,
) -> Result<()> {
    for (row, &i) in batch.iter().enumerate() {
        let len = sequences[i].len();
        let rows = if all { act.get(row)?.narrow(0, 0, len)? } else { act.get(row)?.narrow(0, len - 1, 1)? };
        let values: Vec<f32> = rows.flatten_all()?.to_vec1()?;
        if values.iter().any(|v| !v.is_finite()) {
            bail!("non-finite activation at {name} for sequence {i}");
        }
        writer.write_f32_rows(name, first_row[i], &values)?;
    }
    Ok(())
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
        assert_eq!(CaptureRequest::parse("all", "all", 2, PositionMode::Last).unwrap().points.len(), 12);
        assert!(CaptureRequest::parse("blocks.5.hook_resid_post", "all", 2, PositionMode::All).is_err());
        assert!(CaptureRequest::parse("resid_side", "all", 2, PositionMode::All).is_err());
    }
}
