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
use crate::shard::ShardInfo;
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
    // An empty capture is a shard with no records (more shards than records).
    if !sequences.is_empty() {
        check_sequences(ckpt, sequences)?;
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

    if sequences.is_empty() {
        writer.finish()?;
        return Ok(CaptureSummary {
            sequences: 0,
            tokens: 0,
            tensors: tensor_names,
            seconds: started.elapsed().as_secs_f64(),
        });
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
                let logits = unembed(ckpt, &normed)?;
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

/// The logits of `normed` `[rows, width, d]`. A product with a single row takes the
/// matrix-vector kernel, which adds in another order than the matrix-matrix one: a row's logits
/// would then depend on which batch it met, and a shard's capture would differ from the
/// unsharded one in the last bits. So a lone row is unembedded beside a copy of itself.
fn unembed(ckpt: &Checkpoint, normed: &Tensor) -> Result<Tensor> {
    let (rows, width, _) = normed.dims3()?;
    if rows * width != 1 {
        return ckpt.model.logits(normed);
    }
    let pair = Tensor::cat(&[normed, normed], 0)?;
    Ok(ckpt.model.logits(&pair)?.narrow(0, 0, 1)?)
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

/// The metadata key under which a shard's capture records its [`ShardInfo`].
pub const SHARD_KEY: &str = "shard";

/// One tensor of a safetensors file, as its header lists it.
struct StoredTensor {
    name: String,
    dtype: String,
    shape: Vec<usize>,
    /// Byte range within the data section.
    start: u64,
    end: u64,
}

/// A safetensors file's header: its tensors, its metadata, and where its data starts.
struct StoredHeader {
    tensors: Vec<StoredTensor>,
    metadata: BTreeMap<String, String>,
    data_start: u64,
}

fn read_header(path: &Path) -> Result<StoredHeader> {
    use std::io::Read;
    let not_ours = || format!("{} is not a safetensors capture", path.display());
    let mut file = std::fs::File::open(path).with_context(|| format!("failed to open {}", path.display()))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).with_context(not_ours)?;
    let len = u64::from_le_bytes(len);
    if len > 100 << 20 {
        bail!("{}", not_ours());
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header).with_context(not_ours)?;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header).with_context(not_ours)?;
    let mut tensors = Vec::new();
    let mut metadata = BTreeMap::new();
    for (name, value) in header {
        if name == "__metadata__" {
            metadata = serde_json::from_value(value).with_context(not_ours)?;
            continue;
        }
        #[derive(serde::Deserialize)]
        struct Entry {
            dtype: String,
            shape: Vec<usize>,
            data_offsets: [u64; 2],
        }
        let entry: Entry = serde_json::from_value(value).with_context(not_ours)?;
        tensors.push(StoredTensor {
            name,
            dtype: entry.dtype,
            shape: entry.shape,
            start: entry.data_offsets[0],
            end: entry.data_offsets[1],
        });
    }
    Ok(StoredHeader {
        tensors,
        metadata,
        data_start: 8 + len,
    })
}

/// The [`ShardInfo`] a capture shard carries in its metadata.
pub fn shard_info(path: &Path) -> Result<ShardInfo> {
    let header = read_header(path)?;
    let info = header
        .metadata
        .get(SHARD_KEY)
        .with_context(|| format!("{} is not a shard output (it has no shard entry)", path.display()))?;
    serde_json::from_str(info).with_context(|| format!("{}: unreadable shard entry", path.display()))
}

/// Joins the capture shards `shards` (any order) into `out`: every tensor's rows concatenated
/// in record order, `token_offsets` rebuilt, the metadata of the unsharded run with the shard
/// files listed in its provenance. Returns the number of records.
pub fn merge_shards(shards: &[PathBuf], out: &Path) -> Result<usize> {
    let mut set = Vec::new();
    let mut headers = Vec::new();
    for path in shards {
        let header = read_header(path)?;
        let info: ShardInfo = serde_json::from_str(
            header
                .metadata
                .get(SHARD_KEY)
                .with_context(|| format!("{} is not a shard output (it has no shard entry)", path.display()))?,
        )
        .with_context(|| format!("{}: unreadable shard entry", path.display()))?;
        set.push((path.clone(), info));
        headers.push((path.clone(), header));
    }
    let set = crate::shard::check_set(set)?;
    let header_of = |path: &PathBuf| &headers.iter().find(|(p, _)| p == path).expect("checked").1;
    let total = set[0].1.total;
    // The writer lays tensors out in request order with token_offsets last; the shard with the
    // most records has every tensor non-empty, so its offsets give that order.
    let (largest, _) = set.iter().max_by_key(|(_, i)| i.records).expect("at least one shard");
    let mut order: Vec<&StoredTensor> = header_of(largest)
        .tensors
        .iter()
        .filter(|t| t.name != "token_offsets")
        .collect();
    order.sort_by_key(|t| t.start);
    let all = header_of(largest).metadata.get("positions").map(String::as_str) == Some("all");
    let mut specs = Vec::new();
    for t in &order {
        let rows: usize = set
            .iter()
            .map(|(p, _)| {
                header_of(p)
                    .tensors
                    .iter()
                    .find(|s| s.name == t.name && s.dtype == t.dtype && s.shape[1..] == t.shape[1..])
                    .map(|s| s.shape[0])
                    .with_context(|| format!("{} has no tensor {} like the other shards'", p.display(), t.name))
            })
            .sum::<Result<usize>>()?;
        let mut shape = t.shape.clone();
        shape[0] = rows;
        specs.push(match t.dtype.as_str() {
            "F32" => TensorSpec::f32(t.name.clone(), shape),
            "I64" => TensorSpec::i64(t.name.clone(), shape),
            other => bail!(
                "{}: tensor {} has dtype {other}, not a capture's",
                largest.display(),
                t.name
            ),
        });
    }
    if all && total > 1 {
        specs.push(TensorSpec::i64("token_offsets", vec![total + 1]));
    }
    let mut metadata = header_of(largest).metadata.clone();
    metadata.remove(SHARD_KEY);
    if let Some(text) = metadata.get_mut("provenance") {
        let mut provenance: crate::provenance::Provenance = serde_json::from_str(text)?;
        provenance.shards = crate::shard::shard_list(&set);
        *text = serde_json::to_string(&provenance)?;
    }
    let mut writer = TensorFileWriter::create(out, specs.clone(), &metadata)?;
    let mut first_rows = vec![0usize; specs.len()];
    let mut offsets: Vec<i64> = vec![0];
    for (path, info) in &set {
        use std::io::{Read, Seek, SeekFrom};
        let header = header_of(path);
        let mut file = std::fs::File::open(path).with_context(|| format!("failed to open {}", path.display()))?;
        for (k, spec) in specs.iter().enumerate() {
            if spec.name == "token_offsets" {
                continue;
            }
            let stored = header
                .tensors
                .iter()
                .find(|t| t.name == spec.name)
                .expect("checked above");
            let mut bytes = vec![0u8; (stored.end - stored.start) as usize];
            file.seek(SeekFrom::Start(header.data_start + stored.start))?;
            file.read_exact(&mut bytes)
                .with_context(|| format!("{} is cut short", path.display()))?;
            if spec.dtype == crate::io::ElementType::F32 {
                let values: Vec<f32> = bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                writer.write_f32_rows(&spec.name, first_rows[k], &values)?;
            } else {
                let values: Vec<i64> = bytes
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect();
                writer.write_i64_rows(&spec.name, first_rows[k], &values)?;
            }
            first_rows[k] += stored.shape[0];
        }
        // Each shard's sequence starts, shifted to the merged rows.
        if all {
            let base = *offsets.last().expect("starts with 0");
            let local: Vec<i64> = match header.tensors.iter().find(|t| t.name == "token_offsets") {
                Some(t) => {
                    let mut bytes = vec![0u8; (t.end - t.start) as usize];
                    file.seek(SeekFrom::Start(header.data_start + t.start))?;
                    file.read_exact(&mut bytes)?;
                    bytes
                        .chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                        .collect()
                }
                None => {
                    let rows = header
                        .tensors
                        .iter()
                        .find(|t| t.name == "token_ids")
                        .map_or(0, |t| t.shape[0]);
                    if info.records == 0 {
                        vec![0]
                    } else {
                        vec![0, rows as i64]
                    }
                }
            };
            offsets.extend(local.iter().skip(1).map(|o| base + o));
        }
    }
    if all && total > 1 {
        anyhow::ensure!(
            offsets.len() == total + 1,
            "the shards' token offsets do not add up to {total} records"
        );
        writer.write_i64_rows("token_offsets", 0, &offsets)?;
    }
    writer.finish()?;
    Ok(total)
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
