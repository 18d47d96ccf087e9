//! LAT scans: the projection of every token's `resid_post` on each layer's reading direction,
//! for one prompt (a tokens x layers picture) or over a data set split into correct and copy
//! cases (the Aligner paper's layer-wise correction-activity heatmap).

use crate::batched::run_batched;
use crate::hooks::HookPoint;
use crate::model::{AlignerTemplate, Checkpoint};
use crate::stimuli::StimulusRecord;
use anyhow::{bail, Result};
use candle_core::Tensor;
use std::collections::BTreeMap;

/// What a scan reads at one layer: the direction and how to centre and scale its projection.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanDirection {
    /// Any length; it is normalised before projecting.
    pub direction: Vec<f32>,
    /// The class boundary on the unit direction (0 when unknown).
    pub midpoint: f64,
    /// The spread the projection is divided by: the within-pair spread of the fitted pairs'
    /// projections where the sidecar has it (the direction's norm when nothing is known).
    pub scale: f64,
}

/// A scan's values: `values[token][k]` is the score at the k-th layer of `layers`, as
/// `(projection - midpoint) / scale`.
#[derive(Debug, Clone, PartialEq)]
pub struct LatScan {
    pub layers: Vec<usize>,
    pub values: Vec<Vec<f64>>,
}

/// Scans every sequence, batched through the same path as capture.
pub fn scan_many(
    ckpt: &Checkpoint,
    sequences: &[Vec<u32>],
    directions: &BTreeMap<usize, ScanDirection>,
    batch_size: usize,
) -> Result<Vec<LatScan>> {
    if let Some(bad) = directions.keys().find(|&&l| l >= ckpt.config.num_hidden_layers) {
        bail!(
            "layer {bad} is not in the model ({} layers)",
            ckpt.config.num_hidden_layers
        );
    }
    if directions.is_empty() {
        bail!("no reading directions to scan with");
    }
    let device = ckpt.model.device();
    // [d, layers] of unit directions, so one matmul scores every layer's token at once.
    let units = directions
        .values()
        .map(|d| {
            let norm = d
                .direction
                .iter()
                .map(|v| (*v as f64).powi(2))
                .sum::<f64>()
                .sqrt()
                .max(1e-12);
            Ok(Tensor::new(d.direction.as_slice(), device)?.affine(1.0 / norm, 0.0)?)
        })
        .collect::<Result<Vec<_>>>()?;
    let points: Vec<HookPoint> = directions.keys().map(|&l| HookPoint::resid_post(l)).collect();
    let mut scans = vec![None; sequences.len()];
    run_batched(ckpt, sequences, &points, batch_size, "scan", |batch| {
        for (row, &i) in batch.sequences.iter().enumerate() {
            let mut columns = Vec::with_capacity(points.len());
            for ((point, unit), d) in points.iter().zip(&units).zip(directions.values()) {
                let proj: Vec<f32> = batch
                    .rows(*point, row)?
                    .matmul(&unit.unsqueeze(1)?)?
                    .flatten_all()?
                    .to_vec1()?;
                let scale = if d.scale > 0.0 { d.scale } else { 1.0 };
                columns.push(
                    proj.into_iter()
                        .map(|p| (p as f64 - d.midpoint) / scale)
                        .collect::<Vec<_>>(),
                );
            }
            let values = (0..batch.len(row))
                .map(|t| columns.iter().map(|c| c[t]).collect())
                .collect();
            scans[i] = Some(LatScan {
                layers: directions.keys().copied().collect(),
                values,
            });
        }
        Ok(())
    })?;
    Ok(scans.into_iter().flatten().collect())
}

/// One prompt's scan.
pub fn scan(ckpt: &Checkpoint, ids: &[u32], directions: &BTreeMap<usize, ScanDirection>) -> Result<LatScan> {
    if ids.is_empty() {
        bail!("nothing to scan: the prompt has no tokens");
    }
    let mut scans = scan_many(ckpt, &[ids.to_vec()], directions, 1)?;
    scans.pop().ok_or_else(|| anyhow::anyhow!("the scan produced nothing"))
}

/// The layer-wise correction activity of a data set: the mean scan over the last `tokens`
/// prompt tokens, correct cases and copy cases apart (rows: tokens from the end, the last
/// row is the last prompt token; columns: `layers`).
#[derive(Debug, Clone, PartialEq)]
pub struct CorrectionActivity {
    pub layers: Vec<usize>,
    pub correct: Vec<Vec<f64>>,
    pub copy: Vec<Vec<f64>>,
    pub n_correct: usize,
    pub n_copy: usize,
}

/// Largest number of final prompt tokens a heatmap shows.
pub const MAX_HEATMAP_TOKENS: usize = 4096;

pub fn correction_activity(
    ckpt: &Checkpoint,
    template: &AlignerTemplate,
    records: &[StimulusRecord],
    directions: &BTreeMap<usize, ScanDirection>,
    tokens: usize,
    batch_size: usize,
) -> Result<CorrectionActivity> {
    if tokens == 0 || tokens > MAX_HEATMAP_TOKENS {
        bail!("the number of tokens shown must be between 1 and {MAX_HEATMAP_TOKENS}, got {tokens}");
    }
    let tokenizer = ckpt.tokenizer()?;
    let mut classes = Vec::with_capacity(records.len());
    let mut sequences = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        let Some(is_copy) = r.is_copy() else {
            bail!("record {} has no correction", i + 1)
        };
        classes.push(is_copy);
        sequences.push(tokenizer.encode(&template.render(&r.question, &r.answer))?);
    }
    let (n_copy, n_correct) = (
        classes.iter().filter(|&&c| c).count(),
        classes.iter().filter(|&&c| !c).count(),
    );
    if n_copy == 0 || n_correct == 0 {
        bail!("the data needs both correct cases and copy cases (has {n_correct} and {n_copy})");
    }
    let scans = scan_many(ckpt, &sequences, directions, batch_size)?;
    let layers: Vec<usize> = directions.keys().copied().collect();
    // [class][token from the end][layer]; class 0 = correct, 1 = copy.
    let mut sums = vec![vec![vec![0.0f64; layers.len()]; tokens]; 2];
    for (scan, &is_copy) in scans.iter().zip(&classes) {
        let shown = tokens.min(scan.values.len());
        let first = scan.values.len() - shown;
        for (k, row) in scan.values[first..].iter().enumerate() {
            for (l, v) in row.iter().enumerate() {
                sums[usize::from(is_copy)][tokens - shown + k][l] += v;
            }
        }
    }
    let mean = |class: usize, n: usize| -> Vec<Vec<f64>> {
        sums[class]
            .iter()
            .map(|row| row.iter().map(|v| v / n as f64).collect())
            .collect()
    };
    Ok(CorrectionActivity {
        layers,
        correct: mean(0, n_correct),
        copy: mean(1, n_copy),
        n_correct,
        n_copy,
    })
}
