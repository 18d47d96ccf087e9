//! Activation patching: where the copy-or-correct decision is *carried*, beside where LAT
//! reads it.
//!
//! For each pair (a copy case and a correct case of one question) both prompts run clean; then
//! each runs again with the activation at one hook point of one layer replaced, at the chosen
//! positions, by the other run's. If the first generated token becomes the other run's, the
//! patched activation carried the decision there. Two controls go with every layer: the same
//! rerun patched from an unrelated record of the target's own class (it carries the same
//! decision, so nothing may switch) and from the run itself (the result must be the clean run,
//! bit for bit).
//!
//! A patch is a hook that replaces an activation with a stored one, in the prompt's forward only
//! (the generated tokens then follow from the patched KV cache, as an HF forward hook on the
//! prefill does). Positions are aligned from the end of the prompt: prompts are left-padded, so
//! the k-th token from the end of every row is one column. The columns before the first patched
//! one are the same in every variant; they run once, and each variant decodes from a rewound
//! copy of that prefix's KV cache, so patching the decision position costs one token per row.

use crate::generate::{GenerationConfig, PromptBatch};
use anyhow::{bail, Result};
use candle_core::{DType, Tensor};
use probe::hooks::{Cache, HookPoint, Hooks, NoHooks, Site};
use probe::stimuli::StimulusRecord;
use probe::{AlignerTemplate, Checkpoint, Model};
use serde::{Deserialize, Serialize};

/// Which positions of the prompt a patch replaces, counted from the end of the prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum PatchPositions {
    /// The last prompt token, where the first generated token is chosen.
    Decision,
    /// The upstream answer's tokens: the positions from the end at which both prompts hold
    /// answer tokens.
    Answer,
    /// Every prompt position; the two prompts of a pair must have the same length.
    All,
}

impl PatchPositions {
    pub fn name(self) -> &'static str {
        match self {
            Self::Decision => "decision",
            Self::Answer => "answer",
            Self::All => "all",
        }
    }
}

/// One record's prompt, tokenized, and the tokens `answer.0..answer.1` that hold the upstream
/// answer.
#[derive(Debug, Clone)]
pub struct PatchPrompt {
    pub ids: Vec<u32>,
    pub answer: (usize, usize),
}

/// The copy case and the correct case of one question.
#[derive(Debug, Clone)]
pub struct PatchPair {
    pub question: String,
    pub copy: PatchPrompt,
    pub correct: PatchPrompt,
}

/// What to patch: `site` at each of `layers` (one layer per rerun), at `positions`; the reruns
/// decode with `generation` (greedy; `max_new_tokens` 1 compares first tokens only).
#[derive(Debug, Clone)]
pub struct PatchSettings {
    pub site: Site,
    pub layers: Vec<usize>,
    pub positions: PatchPositions,
    pub generation: GenerationConfig,
}

/// One direction of one pair at one layer: the target run patched from its pair's other run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Transfer {
    /// The patched first token is the source run's.
    pub switched: bool,
    /// The patched output (all `max_new_tokens`) is the source run's.
    pub output_switched: bool,
    /// Change of `logit[source's first token] - logit[target's first token]` from the clean
    /// target run to the patched one.
    pub logit_diff_change: f64,
    /// That change over the whole gap between the clean runs (0: nothing moved, 1: the
    /// source's logit difference).
    pub logit_diff_recovered: f64,
    /// The same rerun patched from an unrelated record of the target's class; `None` when the
    /// batch held no other question.
    pub control: Option<ControlTransfer>,
}

/// The unrelated-record control of a [`Transfer`], measured against the same pair's tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ControlTransfer {
    /// The first token became the pair's other run's (must not happen).
    pub switched: bool,
    /// The first token changed at all (the unrelated record's own token may take its place).
    pub changed: bool,
    pub logit_diff_change: f64,
    /// Over the same gap as the patch it controls.
    pub logit_diff_recovered: f64,
}

/// One pair's clean first tokens and, per layer, `[correct_from_copy, copy_from_correct]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairPatch {
    pub copy_first_token: u32,
    pub correct_first_token: u32,
    pub layers: Vec<[Transfer; 2]>,
}

impl PairPatch {
    /// Patching can only switch a pair whose clean runs start differently.
    pub fn usable(&self) -> bool {
        self.copy_first_token != self.correct_first_token
    }
}

/// A batch of pairs: every pair's outcomes, and per layer the self-patch control.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchPatch {
    pub pairs: Vec<PairPatch>,
    /// Per layer, the largest |logit| difference between the self-patched and the clean runs.
    pub self_max_abs_logit_diff: Vec<f32>,
    /// Per layer, whether the self-patched runs equal the clean ones bit for bit (first
    /// logits and outputs).
    pub self_identical: Vec<bool>,
}

/// Refuses pairs the positions cannot patch, before any work: with [`PatchPositions::All`],
/// a pair whose prompts differ in length.
pub fn check_pairs(pairs: &[PatchPair], positions: PatchPositions) -> Result<()> {
    if pairs.len() < 2 {
        bail!(
            "patching needs at least two copy/correct pairs (the control patches from another pair's record); there are {}",
            pairs.len()
        );
    }
    if positions == PatchPositions::All {
        equal_lengths(pairs, 0)?;
    }
    Ok(())
}

/// Every pair's two prompts have one length (`first_pair`: the first one's index, for the
/// message).
fn equal_lengths(pairs: &[PatchPair], first_pair: usize) -> Result<()> {
    if let Some((i, p)) = pairs
        .iter()
        .enumerate()
        .find(|(_, p)| p.copy.ids.len() != p.correct.ids.len())
    {
        bail!(
            "--positions all needs the two prompts of a pair to have the same length; pair {} has {} (copy) and {} (correct) tokens: patch the decision or answer positions instead",
            first_pair + i + 1,
            p.copy.ids.len(),
            p.correct.ids.len()
        );
    }
    Ok(())
}

/// Batches of pairs: `pairs_per_batch` each, the last one widened rather than left with a single
/// pair, which would have no unrelated record for its control.
pub fn batch_ranges(pairs: usize, pairs_per_batch: usize) -> Vec<std::ops::Range<usize>> {
    let size = pairs_per_batch.max(2);
    let mut ranges: Vec<std::ops::Range<usize>> = (0..pairs).step_by(size).map(|s| s..(s + size).min(pairs)).collect();
    if ranges.len() > 1 && ranges.last().is_some_and(|r| r.len() == 1) {
        let last = ranges.pop().map_or(pairs, |r| r.end);
        if let Some(previous) = ranges.last_mut() {
            previous.end = last;
        }
    }
    ranges
}

/// The copy/correct pairs of `records` (as LAT builds them), tokenized through `template`.
pub fn patch_pairs(
    ckpt: &Checkpoint,
    template: &AlignerTemplate,
    records: &[StimulusRecord],
) -> Result<Vec<PatchPair>> {
    let tokenizer = ckpt.tokenizer()?;
    let prompt = |r: &StimulusRecord| -> Result<PatchPrompt> {
        let ids = tokenizer.encode(&template.render(&r.question, &r.answer))?;
        let answer = probe::lat::answer_span(tokenizer, template, &r.question, &r.answer, ids.len())?;
        Ok(PatchPrompt { ids, answer })
    };
    let pairs = probe::lat::build_pairs(records)?
        .into_iter()
        .map(|p| {
            Ok(PatchPair {
                question: records[p.copy].question.clone(),
                copy: prompt(&records[p.copy])?,
                correct: prompt(&records[p.correct])?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let all: Vec<Vec<u32>> = pairs
        .iter()
        .flat_map(|p| [p.copy.ids.clone(), p.correct.ids.clone()])
        .collect();
    probe::batched::check_sequences(ckpt, &all)?;
    Ok(pairs)
}

/// One finished batch, as the journal of a resumable run keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PatchEntry {
    pub batch: usize,
    pub result: BatchPatch,
}

/// Patches every batch of `pairs` (`pairs_per_batch` each, see [`batch_ranges`]); batches the
/// journal holds are taken from it, new ones recorded as they finish. `on_batch` is told how
/// many pairs were done.
pub fn run_patching(
    model: &Model,
    pairs: &[PatchPair],
    settings: &PatchSettings,
    pairs_per_batch: usize,
    mut journal: Option<&mut probe::journal::Journal<PatchEntry>>,
    on_batch: &mut dyn FnMut(usize),
) -> Result<Vec<BatchPatch>> {
    check_pairs(pairs, settings.positions)?;
    let mut batches = Vec::new();
    for (index, range) in batch_ranges(pairs.len(), pairs_per_batch).into_iter().enumerate() {
        let done = journal
            .as_ref()
            .and_then(|j| j.entries().iter().find(|e| e.batch == index).map(|e| e.result.clone()));
        let result = match done {
            Some(result) if result.pairs.len() == range.len() => result,
            Some(_) => bail!("the journal's batch {index} holds another number of pairs: it is from another run"),
            None => {
                let result = patch_batch(model, &pairs[range.clone()], range.start, settings)?;
                if let Some(j) = journal.as_mut() {
                    j.put(&PatchEntry {
                        batch: index,
                        result: result.clone(),
                    })?;
                }
                result
            }
        };
        on_batch(range.len());
        batches.push(result);
    }
    Ok(batches)
}

/// Per layer, over the pairs whose clean runs start differently, one direction's patches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DirectionCurve {
    /// Share of pairs whose first token switched to the source run's.
    pub switch_rate: Vec<f64>,
    /// Mean change of the logit difference (source's first token minus target's).
    pub logit_diff_change: Vec<f64>,
    /// Mean share of the clean runs' logit-difference gap the patch closed.
    pub logit_diff_recovered: Vec<f64>,
    /// Share of pairs whose whole output (max_new_tokens > 1) became the source run's.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub output_switch_rate: Option<Vec<f64>>,
}

/// Per layer, the unrelated-record control of one direction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlCurve {
    /// Share switched to the pair's other run's first token: must stay 0.
    pub switch_rate: Vec<f64>,
    /// Share whose first token changed at all.
    pub changed_rate: Vec<f64>,
    pub logit_diff_change: Vec<f64>,
    pub logit_diff_recovered: Vec<f64>,
}

/// Patched from an unrelated record of the target's class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnrelatedControl {
    /// Pairs with an unrelated record in their batch (and clean runs that start differently).
    pub pairs: usize,
    pub correct_from_copy: ControlCurve,
    pub copy_from_correct: ControlCurve,
}

/// Patched from the run itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelfControl {
    /// Per layer, the largest |logit| difference from the clean runs (must be 0).
    pub max_abs_logit_diff: Vec<f32>,
    /// Per layer, whether every self-patched run equals its clean run bit for bit.
    pub identical: Vec<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Controls {
    pub unrelated: UnrelatedControl,
    #[serde(rename = "self")]
    pub self_patch: SelfControl,
}

/// What `alens patch --json` writes: per layer, how often patching one run's activation into
/// the other's switches its first token (and output), both directions, with the controls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchReport {
    /// The hook point's site (`resid_post`, `attn_out`, `mlp_out`, ...).
    pub point: String,
    pub positions: PatchPositions,
    pub max_new_tokens: usize,
    /// Copy/correct pairs run.
    pub pairs: usize,
    /// Of those, the pairs whose clean runs start with different tokens: the rates' denominator.
    pub pairs_used: usize,
    pub layers: Vec<usize>,
    /// The correct case patched from the copy case.
    pub correct_from_copy: DirectionCurve,
    /// The copy case patched from the correct case.
    pub copy_from_correct: DirectionCurve,
    pub controls: Controls,
    /// LAT's held-out accuracy per layer (readable), from the vectors given, beside the
    /// switch rates (carried); `None` at a layer the vectors do not cover.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub lat_accuracy: Option<Vec<Option<f64>>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub provenance: Option<probe::provenance::Provenance>,
}

impl PatchReport {
    /// Aggregates the batches of one run.
    pub fn from_batches(batches: &[BatchPatch], settings: &PatchSettings) -> Result<Self> {
        let pairs: Vec<&PairPatch> = batches.iter().flat_map(|b| &b.pairs).collect();
        let used: Vec<&PairPatch> = pairs.iter().copied().filter(|p| p.usable()).collect();
        if used.is_empty() {
            bail!(
                "in none of the {} pairs do the copy and correct runs start with different tokens: there is nothing for a patch to switch",
                pairs.len()
            );
        }
        let layers = settings.layers.len();
        let mean = |values: &mut dyn Iterator<Item = f64>| {
            let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
            if n == 0 {
                0.0
            } else {
                sum / n as f64
            }
        };
        let rate = |flag: bool| f64::from(u8::from(flag));
        let direction = |d: usize| DirectionCurve {
            switch_rate: (0..layers)
                .map(|l| mean(&mut used.iter().map(|p| rate(p.layers[l][d].switched))))
                .collect(),
            logit_diff_change: (0..layers)
                .map(|l| mean(&mut used.iter().map(|p| p.layers[l][d].logit_diff_change)))
                .collect(),
            logit_diff_recovered: (0..layers)
                .map(|l| mean(&mut used.iter().map(|p| p.layers[l][d].logit_diff_recovered)))
                .collect(),
            output_switch_rate: (settings.generation.max_new_tokens > 1).then(|| {
                (0..layers)
                    .map(|l| mean(&mut used.iter().map(|p| rate(p.layers[l][d].output_switched))))
                    .collect()
            }),
        };
        let controlled: Vec<&PairPatch> = used
            .iter()
            .copied()
            .filter(|p| p.layers.iter().all(|t| t.iter().all(|d| d.control.is_some())))
            .collect();
        let control = |d: usize| {
            let over = |f: &dyn Fn(&ControlTransfer) -> f64| -> Vec<f64> {
                (0..layers)
                    .map(|l| mean(&mut controlled.iter().filter_map(|p| p.layers[l][d].control.as_ref().map(f))))
                    .collect()
            };
            ControlCurve {
                switch_rate: over(&|c| rate(c.switched)),
                changed_rate: over(&|c| rate(c.changed)),
                logit_diff_change: over(&|c| c.logit_diff_change),
                logit_diff_recovered: over(&|c| c.logit_diff_recovered),
            }
        };
        Ok(Self {
            point: settings.site.short_name().to_string(),
            positions: settings.positions,
            max_new_tokens: settings.generation.max_new_tokens,
            pairs: pairs.len(),
            pairs_used: used.len(),
            layers: settings.layers.clone(),
            correct_from_copy: direction(0),
            copy_from_correct: direction(1),
            controls: Controls {
                unrelated: UnrelatedControl {
                    pairs: controlled.len(),
                    correct_from_copy: control(0),
                    copy_from_correct: control(1),
                },
                self_patch: SelfControl {
                    max_abs_logit_diff: (0..layers)
                        .map(|l| batches.iter().map(|b| b.self_max_abs_logit_diff[l]).fold(0.0, f32::max))
                        .collect(),
                    identical: (0..layers)
                        .map(|l| batches.iter().all(|b| b.self_identical[l]))
                        .collect(),
                },
            },
            lat_accuracy: None,
            provenance: None,
        })
    }

    /// Adds LAT's held-out accuracy per patched layer from `vectors`' sidecar, if it has any.
    pub fn with_lat_accuracy(mut self, vectors: &crate::vectors::ControlVectors) -> Self {
        if let Some(meta) = &vectors.metadata {
            let accuracy: Vec<Option<f64>> = self
                .layers
                .iter()
                .map(|&l| meta.reading(l).and_then(|r| r.accuracy))
                .collect();
            if accuracy.iter().any(Option::is_some) {
                self.lat_accuracy = Some(accuracy);
            }
        }
        self
    }

    /// One CSV row per layer and direction.
    pub fn to_csv(&self) -> String {
        let mut out = String::from(
            "layer,direction,switch_rate,logit_diff_change,logit_diff_recovered,output_switch_rate,\
             control_switch_rate,control_changed_rate,control_logit_diff_recovered,self_max_abs_logit_diff,lat_accuracy\n",
        );
        let directions = [
            (
                "correct_from_copy",
                &self.correct_from_copy,
                &self.controls.unrelated.correct_from_copy,
            ),
            (
                "copy_from_correct",
                &self.copy_from_correct,
                &self.controls.unrelated.copy_from_correct,
            ),
        ];
        for (i, layer) in self.layers.iter().enumerate() {
            for (name, curve, control) in directions {
                let output = curve
                    .output_switch_rate
                    .as_ref()
                    .map(|o| o[i].to_string())
                    .unwrap_or_default();
                let lat = self
                    .lat_accuracy
                    .as_ref()
                    .and_then(|a| a[i])
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                out.push_str(&format!(
                    "{layer},{name},{},{},{},{output},{},{},{},{},{lat}\n",
                    curve.switch_rate[i],
                    curve.logit_diff_change[i],
                    curve.logit_diff_recovered[i],
                    control.switch_rate[i],
                    control.changed_rate[i],
                    control.logit_diff_recovered[i],
                    self.controls.self_patch.max_abs_logit_diff[i],
                ));
            }
        }
        out
    }
}

/// Runs every patch of `settings` on one batch of `pairs` (the rows: every copy prompt, then
/// every correct prompt). `first_pair` is the batch's first pair's index, for messages.
pub fn patch_batch(
    model: &Model,
    pairs: &[PatchPair],
    first_pair: usize,
    settings: &PatchSettings,
) -> Result<BatchPatch> {
    let k = pairs.len();
    if k < 2 {
        bail!("patching needs at least two pairs: the control patches from another pair's record");
    }
    if settings.generation.max_new_tokens == 0 {
        bail!("patching compares generated tokens: max_new_tokens must be at least 1");
    }
    let prompts: Vec<&PatchPrompt> = pairs
        .iter()
        .map(|p| &p.copy)
        .chain(pairs.iter().map(|p| &p.correct))
        .collect();
    let ids: Vec<Vec<u32>> = prompts.iter().map(|p| p.ids.clone()).collect();
    let batch = PromptBatch::left_padded(model, &ids)?;
    let rows = batch.rows();
    if settings.positions == PatchPositions::All {
        equal_lengths(pairs, first_pair)?;
    }

    let partner = |r: usize| if r < k { r + k } else { r - k };
    let masks_main: Vec<Vec<bool>> = (0..rows)
        .map(|r| columns(&batch, &prompts, settings.positions, r, partner(r)))
        .collect();
    // The columns before the first one any variant may patch run once, for every variant (a
    // row's own patchable columns bound those it can take from any source).
    let from = (0..rows)
        .filter_map(|r| {
            columns(&batch, &prompts, settings.positions, r, r)
                .iter()
                .position(|&on| on)
        })
        .min()
        .unwrap_or(batch.width() - 1)
        .min(batch.width() - 1);
    let chunk = batch.width() - from;
    let mut cache = batch.cache_for(model, settings.generation.max_new_tokens);
    batch.prefill(model, &mut cache, from, &mut NoHooks)?;

    let points: Vec<HookPoint> = settings
        .layers
        .iter()
        .map(|&l| HookPoint::block(l, settings.site))
        .collect();
    let mut clean_hooks = FirstForward::new(Cache::new(points.iter().copied()));
    let clean = batch.decode(model, &mut cache, from, &settings.generation, &mut clean_hooks)?;
    let clean_logits = logit_rows(&clean.first_logits)?;
    let clean_first: Vec<u32> = clean_logits.iter().map(|l| argmax(l)).collect();

    // Row r's control source: the same class's row of the next pair (cyclically) with another
    // question whose clean run does not itself start with the token that would count as a
    // switch (patching it in would hand over that token, not a decision).
    let control_source: Vec<Option<usize>> = (0..rows)
        .map(|r| {
            let (class_start, i) = if r < k { (0, r) } else { (k, r - k) };
            (1..k).map(|step| class_start + (i + step) % k).find(|&s| {
                pairs[s - class_start].question != pairs[i].question && clean_first[s] != clean_first[partner(r)]
            })
        })
        .collect();
    let masks_control: Vec<Vec<bool>> = (0..rows)
        .map(|r| match control_source[r] {
            Some(s) => columns(&batch, &prompts, settings.positions, r, s),
            None => vec![false; batch.width()],
        })
        .collect();

    let device = model.device();
    let mut rerun = |point: HookPoint, sources: &[usize], masks: &[Vec<bool>]| -> Result<Rerun> {
        let clean_activation = clean_hooks.inner.require(point)?;
        let index = Tensor::from_vec(sources.iter().map(|&s| s as u32).collect::<Vec<_>>(), rows, device)?;
        let source = clean_activation.index_select(&index, 0)?;
        let on: Vec<u8> = masks
            .iter()
            .flat_map(|m| m[from..].iter().map(|&b| u8::from(b)))
            .collect();
        let mask = Tensor::from_vec(on, (rows, chunk, 1), device)?
            .broadcast_as(source.shape())?
            .contiguous()?;
        let mut hooks = FirstForward::new(Replace { point, source, mask });
        cache.truncate(from);
        let patched = batch.decode(model, &mut cache, from, &settings.generation, &mut hooks)?;
        Ok(Rerun {
            logits: logit_rows(&patched.first_logits)?,
            outputs: patched.generated,
        })
    };

    let identity: Vec<usize> = (0..rows).collect();
    let partners: Vec<usize> = (0..rows).map(partner).collect();
    let controls: Vec<usize> = (0..rows).map(|r| control_source[r].unwrap_or(r)).collect();
    let mut per_layer: Vec<Vec<Transfer>> = Vec::with_capacity(points.len());
    let (mut self_max, mut self_identical) = (Vec::new(), Vec::new());
    for &point in &points {
        let main = rerun(point, &partners, &masks_main)?;
        let control = rerun(point, &controls, &masks_control)?;
        let itself = rerun(point, &identity, &masks_main)?;
        let transfers = (0..rows)
            .map(|target| {
                let source = partner(target);
                let (to, from_token) = (clean_first[source], clean_first[target]);
                let diff = |logits: &[f32]| logits[to as usize] as f64 - logits[from_token as usize] as f64;
                let clean_diff = diff(&clean_logits[target]);
                let gap = diff(&clean_logits[source]) - clean_diff;
                let change = diff(&main.logits[target]) - clean_diff;
                let recovered = |change: f64| if gap != 0.0 { change / gap } else { 0.0 };
                Transfer {
                    switched: argmax(&main.logits[target]) == to,
                    output_switched: main.outputs[target] == clean.generated[source],
                    logit_diff_change: change,
                    logit_diff_recovered: recovered(change),
                    control: control_source[target].map(|_| {
                        let token = argmax(&control.logits[target]);
                        let change = diff(&control.logits[target]) - clean_diff;
                        ControlTransfer {
                            switched: token == to,
                            changed: token != from_token,
                            logit_diff_change: change,
                            logit_diff_recovered: recovered(change),
                        }
                    }),
                }
            })
            .collect();
        per_layer.push(transfers);
        let mut largest = 0f32;
        let mut identical = itself.outputs == clean.generated;
        for (patched, reference) in itself.logits.iter().zip(&clean_logits) {
            for (a, b) in patched.iter().zip(reference) {
                largest = largest.max((a - b).abs());
                identical &= a.to_bits() == b.to_bits();
            }
        }
        self_max.push(largest);
        self_identical.push(identical);
    }
    let pairs = (0..k)
        .map(|i| PairPatch {
            copy_first_token: clean_first[i],
            correct_first_token: clean_first[k + i],
            // Row k + i is the correct run (patched from the copy), row i the copy run.
            layers: per_layer.iter().map(|t| [t[k + i], t[i]]).collect(),
        })
        .collect();
    Ok(BatchPatch {
        pairs,
        self_max_abs_logit_diff: self_max,
        self_identical,
    })
}

/// One rerun's first-token logits and outputs, per row.
struct Rerun {
    logits: Vec<Vec<f32>>,
    outputs: Vec<Vec<u32>>,
}

/// The columns of `target`'s row that take `source`'s activation.
fn columns(
    batch: &PromptBatch,
    prompts: &[&PatchPrompt],
    positions: PatchPositions,
    target: usize,
    source: usize,
) -> Vec<bool> {
    let width = batch.width();
    let real_from = batch.pad(target).max(batch.pad(source));
    let span = |row: usize| {
        let (start, end) = prompts[row].answer;
        (batch.pad(row) + start, batch.pad(row) + end)
    };
    (0..width)
        .map(|c| match positions {
            PatchPositions::Decision => c == width - 1,
            PatchPositions::All => c >= real_from,
            // Both rows' answer tokens, aligned (like every position) from the end of the prompt.
            PatchPositions::Answer => {
                let ((ts, te), (ss, se)) = (span(target), span(source));
                (ts..te).contains(&c) && (ss..se).contains(&c)
            }
        })
        .collect()
}

fn logit_rows(logits: &Tensor) -> Result<Vec<Vec<f32>>> {
    Ok(logits.to_dtype(DType::F32)?.to_vec2::<f32>()?)
}

/// The first largest logit's token, as greedy decoding picks it.
fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Passes the first forward of a generation (the prompt's) to `inner`, and no later one.
struct FirstForward<H> {
    inner: H,
    forwards: usize,
}

impl<H> FirstForward<H> {
    fn new(inner: H) -> Self {
        Self { inner, forwards: 0 }
    }
}

impl<H: Hooks> Hooks for FirstForward<H> {
    fn begin_forward(&mut self, cached_len: usize) {
        self.forwards += 1;
        if self.forwards == 1 {
            self.inner.begin_forward(cached_len);
        }
    }
    fn wants(&self, point: HookPoint) -> bool {
        self.forwards == 1 && self.inner.wants(point)
    }
    fn on(&mut self, point: HookPoint, activation: &Tensor) -> Result<Option<Tensor>> {
        self.inner.on(point, activation)
    }
}

/// Replaces the activation at `point` with `source` where `mask` is 1.
struct Replace {
    point: HookPoint,
    source: Tensor,
    mask: Tensor,
}

impl Hooks for Replace {
    fn wants(&self, point: HookPoint) -> bool {
        point == self.point
    }
    fn on(&mut self, _: HookPoint, activation: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(self.mask.where_cond(&self.source, activation)?))
    }
}
