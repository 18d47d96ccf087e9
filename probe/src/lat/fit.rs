//! Fitting reading vectors: mean-diff and RepE's PCA, sign, scale and held-out accuracy.

use super::{ContrastPair, LatMethod};
use anyhow::{bail, Result};
use linfa::traits::Fit;
use linfa::DatasetBase;
use ndarray::{Array1, Array2, Axis};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

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
    /// Mean training projection of the copy records, and of the correct records.
    pub copy_mean: f64,
    pub correct_mean: f64,
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
        bail!("the held-out fraction must be in [0, 1), got {test_fraction}");
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
    // Layers are independent: fitted side by side on candle's thread pool, each exactly as it
    // would be alone, so the vectors do not depend on the thread count.
    let fitted = crate::parallel::in_parallel(activations.len(), |layer| {
        fit_layer(layer, &activations[layer], &train, evaluate_on, method, seed)
    });
    let vectors = fitted.into_iter().collect::<Result<Vec<_>>>()?;
    Ok(LatResult { vectors, method, train_pairs: train.len(), test_pairs: test.len(), accuracy_is_training: test.is_empty() })
}

fn fit_layer(
    layer: usize,
    acts: &Array2<f32>,
    train: &[ContrastPair],
    evaluate_on: &[ContrastPair],
    method: LatMethod,
    seed: u64,
) -> Result<ReadingVector> {
    let acts = acts.mapv(f64::from);
    let (mut direction, explained_variance) = match method {
        LatMethod::MeanDiff => mean_difference(&acts, train),
        LatMethod::Pca => first_component(&acts, train, seed.wrapping_add(layer as u64))?,
    };
    // Sign: positive projection = correct, judged on the training pairs.
    let mean_gap: f64 = train.iter().map(|p| (acts.row(p.correct).to_owned() - acts.row(p.copy)).dot(&direction)).sum();
    if mean_gap < 0.0 {
        direction.mapv_inplace(|v| -v);
    }
    let projections: Vec<f64> = train.iter().flat_map(|p| [p.copy, p.correct]).map(|i| acts.row(i).dot(&direction)).collect();
    let mean = projections.iter().sum::<f64>() / projections.len() as f64;
    let var = projections.iter().map(|p| (p - mean).powi(2)).sum::<f64>() / projections.len() as f64;
    let class_mean = |pick: fn(&ContrastPair) -> usize| train.iter().map(|p| acts.row(pick(p)).dot(&direction)).sum::<f64>() / train.len() as f64;
    let (copy_mean, correct_mean) = (class_mean(|p| p.copy), class_mean(|p| p.correct));
    let hits = evaluate_on.iter().filter(|p| acts.row(p.correct).dot(&direction) > acts.row(p.copy).dot(&direction)).count();
    Ok(ReadingVector {
        layer,
        direction: direction.iter().map(|&v| v as f32).collect(),
        scale: var.sqrt() as f32,
        accuracy: hits as f64 / evaluate_on.len() as f64,
        explained_variance,
        midpoint: mean,
        copy_mean,
        correct_mean,
    })
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
    let centred = &diffs - &diffs.mean_axis(Axis(0)).unwrap_or_else(|| Array1::zeros(diffs.ncols()));
    let spread: f64 = centred.iter().map(|v| v * v).sum();
    if !(spread.is_finite() && spread > 1e-12 * diffs.iter().map(|v| v * v).sum::<f64>().max(1e-300)) {
        bail!(
            "PCA finds no direction: the pair differences do not vary (duplicate records, or the same \
             difference in every pair); the mean-diff method reads them"
        );
    }
    // linfa asserts on some degenerate inputs instead of returning an error.
    let pca = crate::guard::without_panics("PCA failed on these pair differences (degenerate data); the mean-diff method reads them", || {
        linfa_reduction::Pca::params(1).fit(&DatasetBase::from(diffs.clone()))
    })?
    .map_err(|e| anyhow::anyhow!("PCA failed: {e}"))?;
    let direction = unit(pca.components().row(0).to_owned());
    Ok((direction.clone(), explained_share(&diffs, &direction)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stimuli::StimulusRecord;
    use crate::lat::build_pairs;

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
        let result = fit(std::slice::from_ref(&acts), &pairs, LatMethod::MeanDiff, 0.0, 0).unwrap();
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
    fn pca_on_differences_that_do_not_vary_is_an_error_not_a_panic() {
        let acts = Array2::<f64>::zeros((8, 4));
        let pairs: Vec<ContrastPair> = (0..4).map(|k| ContrastPair { copy: 2 * k, correct: 2 * k + 1 }).collect();
        let err = first_component(&acts, &pairs, 0).unwrap_err();
        assert!(err.to_string().contains("mean-diff"), "{err}");
    }

    #[test]
    fn pca_agrees_with_power_iteration_and_points_to_correct() {
        let (acts, pairs, truth) = planted(60, 24, 2);
        let result = fit(std::slice::from_ref(&acts), &pairs, LatMethod::Pca, 0.25, 7).unwrap();
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
