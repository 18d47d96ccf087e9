//! The one path from token sequences to activations: sequences sorted by length, batched,
//! right-padded, run with a [`Cache`], and handed to a sink per batch with each row traced back
//! to its sequence. Capture, LAT reading and scans are sinks of this.
//!
//! Right padding is exact: with causal attention a real token never sees the padding after it,
//! so each sequence gets the activations it would get alone.

use crate::hooks::{Cache, HookPoint};
use crate::model::{Checkpoint, Positions};
use anyhow::{bail, Result};
use candle_core::Tensor;

/// One batch after its forward pass.
pub struct Batch<'a> {
    /// Which batch this is (batches are the same for the same inputs and batch size).
    pub index: usize,
    /// The input index of each row's sequence.
    pub sequences: &'a [usize],
    lens: Vec<usize>,
    cache: Cache,
    /// Final-norm hidden states `[rows, width, d]` (what `lm_head` reads).
    pub normed: Tensor,
}

impl Batch<'_> {
    /// Row `row`'s activation at `point` over its real tokens: `[len, d]`.
    pub fn rows(&self, point: HookPoint, row: usize) -> Result<Tensor> {
        Ok(self.cache.require(point)?.get(row)?.narrow(0, 0, self.lens[row])?)
    }

    /// Row `row`'s activation at `point` at its last real token: `[d]`.
    pub fn last(&self, point: HookPoint, row: usize) -> Result<Tensor> {
        Ok(self.cache.require(point)?.get(row)?.get(self.lens[row] - 1)?)
    }

    /// Each row's last real normalised hidden state, `[rows, 1, d]`, for unembedding.
    pub fn last_normed(&self) -> Result<Tensor> {
        let rows = (0..self.lens.len())
            .map(|row| self.normed.get(row)?.narrow(0, self.lens[row] - 1, 1))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Tensor::stack(&rows, 0)?)
    }

    pub fn len(&self, row: usize) -> usize {
        self.lens[row]
    }
}

/// How many batches' worth of sequences are sorted by length together (see
/// [`run_batched_skipping`]); a shard of a capture or of LAT's reading is whole windows.
pub const SORT_WINDOW: usize = 4;

/// Checks token sequences against the model before anything is allocated for them: none empty,
/// every id in the vocabulary, none longer than the model's context.
pub fn check_sequences(ckpt: &Checkpoint, sequences: &[Vec<u32>]) -> Result<()> {
    let cfg = &ckpt.config;
    if sequences.is_empty() {
        bail!("no sequences to run");
    }
    for (i, seq) in sequences.iter().enumerate() {
        if seq.is_empty() {
            bail!("sequence {} is empty", i + 1);
        }
        if seq.len() > cfg.max_position_embeddings {
            bail!(
                "sequence {} has {} tokens, more than the model's context of {}",
                i + 1,
                seq.len(),
                cfg.max_position_embeddings
            );
        }
        if let Some(&bad) = seq.iter().find(|&&id| id as usize >= cfg.vocab_size) {
            bail!(
                "token id {bad} in sequence {} is outside the vocabulary (size {})",
                i + 1,
                cfg.vocab_size
            );
        }
    }
    Ok(())
}

/// Runs `sequences` (token ids, fed as given) in batches of `batch_size`, longest first,
/// keeping the activations at `points`; `sink` sees every batch. `label` names the progress bar.
pub fn run_batched(
    ckpt: &Checkpoint,
    sequences: &[Vec<u32>],
    points: &[HookPoint],
    batch_size: usize,
    label: &str,
    sink: impl FnMut(&Batch) -> Result<()>,
) -> Result<()> {
    run_batched_skipping(ckpt, sequences, points, batch_size, label, &|_| false, sink)
}

/// [`run_batched`], leaving out the batches `done` says an interrupted run finished.
pub fn run_batched_skipping(
    ckpt: &Checkpoint,
    sequences: &[Vec<u32>],
    points: &[HookPoint],
    batch_size: usize,
    label: &str,
    done: &dyn Fn(usize) -> bool,
    mut sink: impl FnMut(&Batch) -> Result<()>,
) -> Result<()> {
    if batch_size == 0 {
        bail!("batch size must be at least 1");
    }
    check_sequences(ckpt, sequences)?;
    // Longest first within each window of SORT_WINDOW batches, not over the whole set: a
    // row's activations depend in their last bits on the width its batch is padded to, so a
    // shard (whole windows, see `ShardSpec::batch_range`) meets the very batches of the
    // unsharded run.
    let mut order: Vec<usize> = (0..sequences.len()).collect();
    for window in order.chunks_mut(batch_size.saturating_mul(SORT_WINDOW)) {
        window.sort_by_key(|&i| std::cmp::Reverse(sequences[i].len()));
    }
    let pad = ckpt.config.pad_token_id.unwrap_or(0);
    let device = ckpt.model.device();
    let progress = crate::progress::bar(sequences.len() as u64, label);
    for (index, chunk) in order.chunks(batch_size).enumerate() {
        if done(index) {
            progress.inc(chunk.len() as u64);
            continue;
        }
        let lens: Vec<usize> = chunk.iter().map(|&i| sequences[i].len()).collect();
        let width = lens.iter().copied().max().unwrap_or(0);
        let mut ids = Vec::with_capacity(chunk.len() * width);
        for &i in chunk {
            ids.extend_from_slice(&sequences[i]);
            ids.extend(std::iter::repeat_n(pad, width - sequences[i].len()));
        }
        let ids = Tensor::from_vec(ids, (chunk.len(), width), device)?;
        // Every reader of a batch reads the real tokens alone (`Batch::rows`, `Batch::last`).
        let positions = Positions::right_padded(lens.clone(), width, device)?;
        let (normed, cache) = ckpt.model.run_with_cache(&ids, &positions, points.iter().copied())?;
        sink(&Batch {
            index,
            sequences: chunk,
            lens,
            cache,
            normed,
        })?;
        progress.inc(chunk.len() as u64);
    }
    progress.finish_and_clear();
    Ok(())
}
