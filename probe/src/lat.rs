//! LAT (Linear Artificial Tomography, Zou et al. 2023, "Representation Engineering"): find,
//! at each layer, the direction that separates the model's state when it is about to copy an
//! answer from its state when it is about to correct one (Aligner, Ji et al. 2024, Sec. 5).
//!
//! Stimuli are contrast pairs sharing a question: one record whose answer is already good
//! (copy) and one whose answer needs fixing (correct). A [`ReadingVector`] per layer is a unit
//! direction with the sign fixed so that a positive projection means "correct", plus the
//! spread of projections along it, so steering coefficients are comparable across layers.

use crate::hooks::{HookPoint, Hooks, Site};
use crate::model::{AlignerTemplate, Checkpoint, Positions};
use crate::stimuli::StimulusRecord;
use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use linfa::traits::Fit;
use linfa::DatasetBase;
use ndarray::{Array1, Array2, Axis};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatMethod {
    /// RepE's LAT: first principal component of (randomly ordered, recentred) pair differences.
    Pca,
    /// Difference of the class means, correct minus copy.
    MeanDiff,
}

impl std::str::FromStr for LatMethod {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "pca" => Ok(Self::Pca),
            "mean-diff" => Ok(Self::MeanDiff),
            other => bail!("--method must be pca or mean-diff, not {other:?}"),
        }
    }
}

impl LatMethod {
    pub fn name(self) -> &'static str {
        match self {
            Self::Pca => "pca",
            Self::MeanDiff => "mean-diff",
        }
    }
}

/// Which token's activation stands for a stimulus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadPosition {
    /// The last prompt token (`ASSISTANT:`), where the copy-or-correct decision is taken.
    Last,
    /// The mean over the upstream answer's tokens.
    AnswerMean,
}

impl std::str::FromStr for ReadPosition {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "last" => Ok(Self::Last),
            "answer-mean" => Ok(Self::AnswerMean),
            other => bail!("--position must be last or answer-mean, not {other:?}"),
        }
    }
}

impl ReadPosition {
    pub fn name(self) -> &'static str {
        match self {
            Self::Last => "last",
            Self::AnswerMean => "answer-mean",
        }
    }
}

/// One copy/correct contrast: indices into the stimulus records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContrastPair {
    pub copy: usize,
    pub correct: usize,
}

/// Pairs each question's copy records with its correct records, in file order. Records
/// without a `correction` cannot be classed and are an error.
pub fn build_pairs(records: &[StimulusRecord]) -> Result<Vec<ContrastPair>> {
    if records.is_empty() {
        bail!("the stimulus set is empty");
    }
    let mut by_question: BTreeMap<&str, (Vec<usize>, Vec<usize>)> = BTreeMap::new();
    for (i, r) in records.iter().enumerate() {
        let is_copy = r.is_copy().with_context(|| format!("record {} has no correction, so it is neither copy nor correct", i + 1))?;
        let entry = by_question.entry(r.question.as_str()).or_default();
        if is_copy { entry.0.push(i) } else { entry.1.push(i) }
    }
    let copies: usize = by_question.values().map(|v| v.0.len()).sum();
    if copies == 0 || copies == records.len() {
        bail!(
            "the stimulus set has only {} cases: LAT needs both copy cases (correction == answer) and correct cases",
            if copies == 0 { "correct" } else { "copy" }
        );
    }
    let mut pairs: Vec<ContrastPair> = by_question
        .values()
        .flat_map(|(copy, correct)| copy.iter().zip(correct).map(|(&a, &b)| ContrastPair { copy: a, correct: b }))
        .collect();
    pairs.sort_by_key(|p| p.copy.min(p.correct));
    if pairs.is_empty() {
        bail!("no copy/correct pairs can be built: no question has both a copy record and a correct record");
    }
    Ok(pairs)
}

/// Keeps the chosen position's activation at every `resid_post` of one sequence.
struct ReadHook {
    span: (usize, usize),
    rows: BTreeMap<usize, Vec<f32>>,
}

impl Hooks for ReadHook {
    fn wants(&self, point: HookPoint) -> bool {
        point.site == Site::ResidPost
    }
    fn on(&mut self, point: HookPoint, activation: &Tensor) -> Result<Option<Tensor>> {
        let (start, end) = self.span;
        let row = activation.get(0)?.narrow(0, start, end - start)?.mean(0)?;
        self.rows.insert(point.layer, row.to_vec1()?);
        Ok(None)
    }
}

/// Activations of every record at every layer's `resid_post`: one `[records, d]` array per
/// layer, at the chosen position of the Aligner prompt.
pub fn read_activations(
    ckpt: &Checkpoint,
    template: &AlignerTemplate,
    records: &[StimulusRecord],
    position: ReadPosition,
) -> Result<Vec<Array2<f32>>> {
    let tokenizer = ckpt.tokenizer()?;
    let (layers, d) = (ckpt.config.num_hidden_layers, ckpt.config.hidden_size);
    let mut out = vec![Array2::<f32>::zeros((records.len(), d)); layers];
    let progress = crate::progress::bar(records.len() as u64, "activations");
    for (i, r) in records.iter().enumerate() {
        let prompt = template.render(&r.question, &r.answer);
        let ids = tokenizer.encode(&prompt)?;
        let span = match position {
            ReadPosition::Last => (ids.len() - 1, ids.len()),
            ReadPosition::AnswerMean => {
                // The answer spans from the end of the prompt text before it to the end of the
                // text through it; token boundaries may merge one token at either edge.
                let before = template.render(&r.question, "\u{0}");
                let head = before.split('\u{0}').next().unwrap_or("");
                let start = tokenizer.encode(head.trim_end())?.len();
                let end = tokenizer.encode(&format!("{head}{}", r.answer))?.len().clamp(start + 1, ids.len());
                (start.min(ids.len() - 1), end)
            }
        };
        let input = Tensor::new(ids.as_slice(), ckpt.model.device())?.unsqueeze(0)?;
        let positions = Positions::contiguous(1, ids.len(), 0, ckpt.model.device())?;
        let mut hook = ReadHook { span, rows: BTreeMap::new() };
        ckpt.model.forward(&input, &positions, None, &mut hook)?;
        for (layer, row) in hook.rows {
            if row.iter().any(|v| !v.is_finite()) {
                bail!("non-finite activation at layer {layer} for record {}", i + 1);
            }
            out[layer].row_mut(i).assign(&Array1::from(row));
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    Ok(out)
}

/// The copy-vs-correct direction at one layer.
#[derive(Debug, Clone)]
pub struct ReadingVector {
    pub layer: usize,
    /// Unit norm; positive projection = correct.
    pub direction: Vec<f32>,
    /// Standard deviation of the training activations' projections on `direction`.
    pub scale: f32,
    /// Share of evaluation pairs whose correct member projects higher.
    pub accuracy: f64,
    /// Share of the (recentred) pair-difference variance along the direction.
    pub explained_variance: f64,
    /// Mean projection of the training activations: the copy/correct boundary, so a scan can
    /// show (projection - midpoint) / scale with 0 between the classes.
    pub midpoint: f64,
}

impl ReadingVector {
    /// The vector a steering hook adds at alpha = 1: direction times the projection spread.
    pub fn control_vector(&self) -> Vec<f32> {
        self.direction.iter().map(|v| v * self.scale).collect()
    }
}

#[derive(Debug, Clone)]
pub struct LatResult {
    pub vectors: Vec<ReadingVector>,
    pub method: LatMethod,
    pub train_pairs: usize,
    pub test_pairs: usize,
    /// True when there was no held-out split and accuracy is training accuracy.
    pub accuracy_is_training: bool,
}

impl LatResult {
    /// The middle layers LAT recommends for steering: in the middle third of the depth, those
    /// within 2 points of the best accuracy there (Aligner steers with middle-layer vectors).
    pub fn default_layers(&self) -> Vec<usize> {
        let n = self.vectors.len();
        let (lo, hi) = (n / 3, (2 * n).div_ceil(3).max(n / 3 + 1));
        let middle: Vec<&ReadingVector> = self.vectors[lo..hi.min(n)].iter().collect();
        let best = middle.iter().map(|v| v.accuracy).fold(0.0, f64::max);
        middle.iter().filter(|v| v.accuracy >= best - 0.02).map(|v| v.layer).collect()
    }
}

/// Splits pairs into train and test deterministically under `seed`.
pub fn split_pairs(pairs: &[ContrastPair], test_fraction: f64, seed: u64) -> Result<(Vec<ContrastPair>, Vec<ContrastPair>)> {
    if !(0.0..1.0).contains(&test_fraction) {
        bail!("--test-fraction must be in [0, 1), got {test_fraction}");
    }
    let mut shuffled = pairs.to_vec();
    shuffled.shuffle(&mut StdRng::seed_from_u64(seed));
    let n_test = (pairs.len() as f64 * test_fraction).round() as usize;
    if n_test > 0 && pairs.len() - n_test < 2 {
        bail!("{} pairs are too few to hold {n_test} out: need at least 2 for fitting", pairs.len());
    }
    let test = shuffled.split_off(pairs.len() - n_test);
    Ok((shuffled, test))
}

/// Fits a reading vector at every layer. `activations[layer]` is `[records, d]`.
pub fn fit(
    activations: &[Array2<f32>],
    pairs: &[ContrastPair],
    method: LatMethod,
    test_fraction: f64,
    seed: u64,
) -> Result<LatResult> {
    let (train, test) = split_pairs(pairs, test_fraction, seed)?;
    if train.is_empty() {
        bail!("no pairs to fit on");
    }
    let evaluate_on = if test.is_empty() { &train } else { &test };
    let mut vectors = Vec::with_capacity(activations.len());
    for (layer, acts) in activations.iter().enumerate() {
        let acts = acts.mapv(f64::from);
        let (mut direction, explained_variance) = match method {
            LatMethod::MeanDiff => mean_difference(&acts, &train),
            LatMethod::Pca => first_component(&acts, &train, seed.wrapping_add(layer as u64))?,
        };
        // Sign: positive projection = correct, judged on the training pairs.
        let mean_gap: f64 = train.iter().map(|p| (acts.row(p.correct).to_owned() - acts.row(p.copy)).dot(&direction)).sum();
        if mean_gap < 0.0 {
            direction.mapv_inplace(|v| -v);
        }
        let projections: Vec<f64> = train.iter().flat_map(|p| [p.copy, p.correct]).map(|i| acts.row(i).dot(&direction)).collect();
        let mean = projections.iter().sum::<f64>() / projections.len() as f64;
        let var = projections.iter().map(|p| (p - mean).powi(2)).sum::<f64>() / projections.len() as f64;
        let hits = evaluate_on.iter().filter(|p| acts.row(p.correct).dot(&direction) > acts.row(p.copy).dot(&direction)).count();
        vectors.push(ReadingVector {
            layer,
            direction: direction.iter().map(|&v| v as f32).collect(),
            scale: var.sqrt() as f32,
            accuracy: hits as f64 / evaluate_on.len() as f64,
            explained_variance,
            midpoint: mean,
        });
    }
    Ok(LatResult { vectors, method, train_pairs: train.len(), test_pairs: test.len(), accuracy_is_training: test.is_empty() })
}

/// Keeps every `resid_post` of one sequence, `[tokens, d]` per layer.
struct KeepResidPost(BTreeMap<usize, Tensor>);

impl Hooks for KeepResidPost {
    fn wants(&self, point: HookPoint) -> bool {
        point.site == Site::ResidPost
    }
    fn on(&mut self, point: HookPoint, activation: &Tensor) -> Result<Option<Tensor>> {
        self.0.insert(point.layer, activation.get(0)?);
        Ok(None)
    }
}

/// LAT scan: for every token of `ids` and every layer in `directions`, the projection of
/// `blocks.{l}.hook_resid_post` on the layer's unit direction, as `(p - midpoint) / scale`
/// (raw projection when no midpoint/scale is known). Rows are tokens, columns the layers in
/// ascending order.
pub fn scan(ckpt: &Checkpoint, ids: &[u32], directions: &BTreeMap<usize, (Vec<f32>, f64, f64)>) -> Result<Vec<Vec<f64>>> {
    if ids.is_empty() {
        bail!("nothing to scan: the prompt has no tokens");
    }
    let input = Tensor::new(ids, ckpt.model.device())?.unsqueeze(0)?;
    let positions = Positions::contiguous(1, ids.len(), 0, ckpt.model.device())?;
    let mut keep = KeepResidPost(BTreeMap::new());
    ckpt.model.forward(&input, &positions, None, &mut keep)?;
    let mut columns = Vec::new();
    for (layer, (direction, midpoint, scale)) in directions {
        let acts = keep.0.get(layer).with_context(|| format!("layer {layer} is not in the model"))?;
        let norm = direction.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt().max(1e-12);
        let unit_dir = Tensor::new(direction.as_slice(), ckpt.model.device())?.affine(1.0 / norm, 0.0)?;
        let proj: Vec<f32> = acts.matmul(&unit_dir.unsqueeze(1)?)?.flatten_all()?.to_vec1()?;
        let scale = if *scale > 0.0 { *scale } else { 1.0 };
        columns.push(proj.into_iter().map(|p| (p as f64 - midpoint) / scale).collect::<Vec<f64>>());
    }
    Ok((0..ids.len()).map(|t| columns.iter().map(|c| c[t]).collect()).collect())
}

fn unit(v: Array1<f64>) -> Array1<f64> {
    let norm = v.dot(&v).sqrt();
    if norm > 0.0 { v / norm } else { v }
}

/// Normalised difference of class means over the training pairs, and the share of the
/// pair-difference variance it explains.
fn mean_difference(acts: &Array2<f64>, pairs: &[ContrastPair]) -> (Array1<f64>, f64) {
    let class_mean = |pick: fn(&ContrastPair) -> usize| {
        let idx: Vec<usize> = pairs.iter().map(pick).collect();
        acts.select(Axis(0), &idx).mean_axis(Axis(0)).expect("pairs are not empty")
    };
    let direction = unit(class_mean(|p| p.correct) - class_mean(|p| p.copy));
    let diffs = differences(acts, pairs, None);
    (direction.clone(), explained_share(&diffs, &direction))
}

/// Pair differences (correct - copy), each flipped at random when `flip` is given, as RepE
/// shuffles the order within each pair so the component does not just encode the order.
fn differences(acts: &Array2<f64>, pairs: &[ContrastPair], flip: Option<&mut StdRng>) -> Array2<f64> {
    let mut out = Array2::zeros((pairs.len(), acts.ncols()));
    let mut flip = flip;
    for (k, p) in pairs.iter().enumerate() {
        let mut diff = acts.row(p.correct).to_owned() - acts.row(p.copy);
        if let Some(rng) = flip.as_deref_mut() {
            if rng.gen_bool(0.5) {
                diff.mapv_inplace(|v| -v);
            }
        }
        out.row_mut(k).assign(&diff);
    }
    out
}

/// Share of the recentred rows' squared norm that lies along `direction`.
fn explained_share(rows: &Array2<f64>, direction: &Array1<f64>) -> f64 {
    let centred = rows - &rows.mean_axis(Axis(0)).expect("rows are not empty");
    let total: f64 = centred.iter().map(|v| v * v).sum();
    let along: f64 = centred.dot(direction).iter().map(|v| v * v).sum();
    if total > 0.0 { along / total } else { 0.0 }
}

/// RepE's LAT: randomly flipped pair differences, recentred, first principal component (linfa).
fn first_component(acts: &Array2<f64>, pairs: &[ContrastPair], seed: u64) -> Result<(Array1<f64>, f64)> {
    if pairs.len() < 2 {
        bail!("PCA needs at least 2 training pairs, got {}", pairs.len());
    }
    let diffs = differences(acts, pairs, Some(&mut StdRng::seed_from_u64(seed)));
    let pca = linfa_reduction::Pca::params(1)
        .fit(&DatasetBase::from(diffs.clone()))
        .map_err(|e| anyhow::anyhow!("PCA failed: {e}"))?;
    let direction = unit(pca.components().row(0).to_owned());
    Ok((direction.clone(), explained_share(&diffs, &direction)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Activations with a planted copy/correct direction plus noise: records 2k (copy) and
    /// 2k + 1 (correct) of each pair.
    fn planted(pairs: usize, d: usize, seed: u64) -> (Array2<f32>, Vec<ContrastPair>, Array1<f64>) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut normal = || -> f64 {
            let (u1, u2): (f64, f64) = (rng.gen::<f64>().max(1e-12), rng.gen());
            (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
        };
        let truth = unit(Array1::from_iter((0..d).map(|_| normal())));
        let mut acts = Array2::zeros((2 * pairs, d));
        for k in 0..pairs {
            let base = Array1::from_iter((0..d).map(|_| normal()));
            let shift = 3.0 + normal().abs();
            let noise = Array1::from_iter((0..d).map(|_| 0.3 * normal()));
            acts.row_mut(2 * k).assign(&base.mapv(|v| v as f32));
            acts.row_mut(2 * k + 1).assign(&(&base + &(&truth * shift) + noise).mapv(|v| v as f32));
        }
        let pairs = (0..pairs).map(|k| ContrastPair { copy: 2 * k, correct: 2 * k + 1 }).collect();
        (acts, pairs, truth)
    }

    #[test]
    fn mean_diff_is_the_normalised_difference_of_class_means() {
        let (acts, pairs, _) = planted(40, 16, 1);
        let result = fit(&[acts.clone()], &pairs, LatMethod::MeanDiff, 0.0, 0).unwrap();
        let (mut copy, mut correct) = (vec![0f64; 16], vec![0f64; 16]);
        for p in &pairs {
            for j in 0..16 {
                copy[j] += acts[[p.copy, j]] as f64 / 40.0;
                correct[j] += acts[[p.correct, j]] as f64 / 40.0;
            }
        }
        let diff: Vec<f64> = correct.iter().zip(&copy).map(|(a, b)| a - b).collect();
        let norm = diff.iter().map(|v| v * v).sum::<f64>().sqrt();
        for (ours, theirs) in result.vectors[0].direction.iter().zip(&diff) {
            assert!((*ours as f64 - theirs / norm).abs() < 1e-5);
        }
        assert!(result.accuracy_is_training);
        assert_eq!(result.vectors[0].accuracy, 1.0);
    }

    #[test]
    fn pca_agrees_with_power_iteration_and_points_to_correct() {
        let (acts, pairs, truth) = planted(60, 24, 2);
        let result = fit(&[acts.clone()], &pairs, LatMethod::Pca, 0.25, 7).unwrap();
        let ours = Array1::from_iter(result.vectors[0].direction.iter().map(|&v| v as f64));
        // Power iteration on the second-moment matrix of the differences (flip-invariant).
        let diffs = differences(&acts.mapv(f64::from), &pairs, None);
        let moment = diffs.t().dot(&diffs);
        let mut v = Array1::from_elem(24, 1.0);
        for _ in 0..500 {
            v = unit(moment.dot(&v));
        }
        assert!(ours.dot(&v).abs() >= 0.99, "|cos| = {}", ours.dot(&v).abs());
        assert!(ours.dot(&truth) > 0.9, "sign: positive = correct");
        assert_eq!(result.test_pairs, 15);
        assert!(result.vectors[0].accuracy >= 0.99);
        // Deterministic under the seed.
        let again = fit(&[acts], &pairs, LatMethod::Pca, 0.25, 7).unwrap();
        assert_eq!(again.vectors[0].direction, result.vectors[0].direction);
    }

    fn rec(q: &str, a: &str, c: &str) -> StimulusRecord {
        StimulusRecord { question: q.into(), answer: a.into(), correction: Some(c.into()), category: None }
    }

    #[test]
    fn pairs_need_both_classes_per_question() {
        assert!(build_pairs(&[]).unwrap_err().to_string().contains("empty"));
        let only_copy = [rec("q", "a", "a"), rec("r", "b", "b")];
        assert!(build_pairs(&only_copy).unwrap_err().to_string().contains("only copy"));
        let unpaired = [rec("q", "a", "a"), rec("r", "b", "c")];
        assert!(build_pairs(&unpaired).unwrap_err().to_string().contains("no copy/correct pairs"));
        let ok = [rec("q", "a", "a"), rec("q", "x", "a"), rec("r", "y", "b")];
        assert_eq!(build_pairs(&ok).unwrap(), vec![ContrastPair { copy: 0, correct: 1 }]);
    }
}
