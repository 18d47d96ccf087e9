//! Fitting reading vectors: mean-diff and RepE's PCA, sign, scale and held-out accuracy.

use super::{ContrastPair, LatMethod};
use anyhow::{bail, Result};
use kernels::lat::{axpy, difference, dot, dot_widened};
use ndarray::{Array2, ArrayView2};
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
    /// The within-pair spread of the training projections: each pair's two projections
    /// centred on the pair's own mean (which takes out what the question adds to both) lie
    /// at +/- half their difference, and this is the normal-consistent robust spread of
    /// those, 1.4826 x the median absolute deviation of the differences / 2. Scans divide by
    /// it, so a class mean sits about `gap / spread_of_differences` from the midpoint, which
    /// is what the held-out pair accuracy measures (a few outlying pairs do not inflate it).
    pub pair_spread: f64,
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
        middle
            .iter()
            .filter(|v| v.accuracy >= best - 0.02)
            .map(|v| v.layer)
            .collect()
    }
}

/// Splits pairs into train and test deterministically under `seed`.
pub fn split_pairs(
    pairs: &[ContrastPair],
    test_fraction: f64,
    seed: u64,
) -> Result<(Vec<ContrastPair>, Vec<ContrastPair>)> {
    if !(0.0..1.0).contains(&test_fraction) {
        bail!("the held-out fraction must be in [0, 1), got {test_fraction}");
    }
    let mut shuffled = pairs.to_vec();
    shuffled.shuffle(&mut StdRng::seed_from_u64(seed));
    let n_test = (pairs.len() as f64 * test_fraction).round() as usize;
    if n_test > 0 && pairs.len() - n_test < 2 {
        bail!(
            "{} pairs are too few to hold {n_test} out: need at least 2 for fitting",
            pairs.len()
        );
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
    // Layers are independent: fitted side by side on the kernels' thread pool, each exactly as it
    // would be alone, so the vectors do not depend on the thread count.
    let fitted = kernels::parallel::in_parallel(activations.len(), |layer| {
        fit_layer(layer, &activations[layer], &train, evaluate_on, method, seed)
    });
    let vectors = fitted.into_iter().collect::<Result<Vec<_>>>()?;
    Ok(LatResult {
        vectors,
        method,
        train_pairs: train.len(),
        test_pairs: test.len(),
        accuracy_is_training: test.is_empty(),
    })
}

fn fit_layer(
    layer: usize,
    acts: &Array2<f32>,
    train: &[ContrastPair],
    evaluate_on: &[ContrastPair],
    method: LatMethod,
    seed: u64,
) -> Result<ReadingVector> {
    let acts = acts.as_standard_layout();
    let row = |i: usize| acts.row(i).to_slice().expect("standard layout rows are contiguous");
    let n = train.len() as f64;
    let flips = match method {
        LatMethod::MeanDiff => None,
        LatMethod::Pca => Some(flip_signs(train.len(), seed.wrapping_add(layer as u64))),
    };
    let sums = PairSums::of(&acts.view(), train, flips.as_deref());
    // Mean-diff's direction; for PCA, where Lanczos starts. The explained share is measured
    // on the (flipped, for PCA) differences recentred on their mean, `centre`.
    let mean_difference: Vec<f64> = sums.difference.iter().map(|v| v / n).collect();
    let (direction, centre) = match &sums.flipped_difference {
        None => (unit(mean_difference.clone()), mean_difference),
        Some(flipped) => {
            let centre: Vec<f64> = flipped.iter().map(|v| v / n).collect();
            // The first component usually lies near the mean difference.
            let direction = first_component(&sums, &centre, &mean_difference, seed.wrapping_add(layer as u64))?;
            (direction, centre)
        }
    };
    // Projections with the direction as found; the sign (positive projection = correct,
    // judged on the training pairs) is applied afterwards, which negates each one exactly.
    let mut projections: Vec<f64> = train
        .iter()
        .flat_map(|p| [p.copy, p.correct])
        .map(|i| dot_widened(row(i), &direction))
        .collect();
    let gaps = projections.chunks_exact(2).map(|pair| pair[1] - pair[0]);
    let sign = if gaps.clone().sum::<f64>() < 0.0 { -1.0 } else { 1.0 };
    // Share of the recentred rows' squared norm along the direction: each row is
    // s_k (correct - copy) - centre, and the sum of squared norms of rows centred on their
    // mean is the sum of their squared norms less n |centre|^2.
    let centre_along = dot(&centre, &direction);
    let along: f64 = gaps
        .zip(0..)
        .map(|(gap, k)| (flips.as_ref().map_or(1.0, |f| f[k]) * gap - centre_along).powi(2))
        .sum();
    let total = sums.squares - n * dot(&centre, &centre);
    projections.iter_mut().for_each(|p| *p *= sign);
    let mean = projections.iter().sum::<f64>() / projections.len() as f64;
    let var = projections.iter().map(|p| (p - mean).powi(2)).sum::<f64>() / projections.len() as f64;
    let class_mean = |offset: usize| projections.iter().skip(offset).step_by(2).sum::<f64>() / n;
    let hits = if std::ptr::eq(evaluate_on, train) {
        projections.chunks_exact(2).filter(|pair| pair[1] > pair[0]).count()
    } else {
        evaluate_on
            .iter()
            .filter(|p| sign * dot_widened(row(p.correct), &direction) > sign * dot_widened(row(p.copy), &direction))
            .count()
    };
    Ok(ReadingVector {
        layer,
        direction: direction.iter().map(|&v| (sign * v) as f32).collect(),
        scale: var.sqrt() as f32,
        accuracy: hits as f64 / evaluate_on.len() as f64,
        explained_variance: if total > 0.0 { (along / total).min(1.0) } else { 0.0 },
        midpoint: mean,
        copy_mean: class_mean(0),
        correct_mean: class_mean(1),
        pair_spread: pair_spread(&projections),
    })
}

/// [`ReadingVector::pair_spread`] of `(copy, correct)` projections laid out pair by pair.
fn pair_spread(projections: &[f64]) -> f64 {
    let median = |mut v: Vec<f64>| -> f64 {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        match n {
            0 => 0.0,
            _ if n % 2 == 1 => v[n / 2],
            _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    };
    let diffs: Vec<f64> = projections.chunks_exact(2).map(|p| p[1] - p[0]).collect();
    let centre = median(diffs.clone());
    1.4826 * median(diffs.iter().map(|d| (d - centre).abs()).collect()) / 2.0
}

fn unit(mut v: Vec<f64>) -> Vec<f64> {
    let norm = dot(&v, &v).sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// RepE flips the order within each pair at random, so the component does not just encode
/// the order: the sign each pair's difference (correct - copy) takes.
fn flip_signs(pairs: usize, seed: u64) -> Vec<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..pairs).map(|_| if rng.gen_bool(0.5) { -1.0 } else { 1.0 }).collect()
}

/// What one pass over the training pairs' activations collects.
struct PairSums {
    /// Sum of the differences (correct - copy): n times mean-diff's direction, unnormalised.
    difference: Vec<f64>,
    /// For PCA, the sum of the differences each times its flip sign: n times the centre.
    flipped_difference: Option<Vec<f64>>,
    /// Sum of the differences' squared norms.
    squares: f64,
    /// Row-major `[pairs, d]` differences, unflipped, rounded to f32 (`eigen::Scatter`);
    /// kept for PCA only.
    differences: Vec<f32>,
}

impl PairSums {
    fn of(acts: &ArrayView2<f32>, pairs: &[ContrastPair], flips: Option<&[f64]>) -> Self {
        let d = acts.ncols();
        let row = |i: usize| acts.row(i).to_slice().expect("standard layout rows are contiguous");
        let mut sums = PairSums {
            difference: vec![0.0; d],
            flipped_difference: flips.map(|_| vec![0.0; d]),
            squares: 0.0,
            differences: vec![0.0; if flips.is_some() { pairs.len() * d } else { 0 }],
        };
        let mut out = vec![0.0; d];
        for (k, p) in pairs.iter().enumerate() {
            sums.squares += difference(row(p.correct), row(p.copy), &mut out);
            axpy(1.0, &out, &mut sums.difference);
            if let (Some(flips), Some(flipped)) = (flips, sums.flipped_difference.as_mut()) {
                axpy(flips[k], &out, flipped);
                sums.differences[k * d..(k + 1) * d]
                    .iter_mut()
                    .zip(&out)
                    .for_each(|(s, &v)| *s = v as f32);
            }
        }
        sums
    }
}

/// RepE's LAT: the first principal component of the randomly flipped pair differences,
/// recentred on their mean `centre` (Lanczos on the unformed covariance, `super::eigen`).
fn first_component(sums: &PairSums, centre: &[f64], guess: &[f64], seed: u64) -> Result<Vec<f64>> {
    let pairs = sums.differences.len() / centre.len().max(1);
    if pairs < 2 {
        bail!("PCA needs at least 2 training pairs, got {pairs}");
    }
    let squares = sums.squares;
    let spread = squares - pairs as f64 * dot(centre, centre);
    if !(spread.is_finite() && spread > 1e-12 * squares.max(1e-300)) {
        bail!(
            "PCA finds no direction: the pair differences do not vary (duplicate records, or the same \
             difference in every pair); the mean-diff method reads them"
        );
    }
    let scatter = super::eigen::Scatter {
        rows: &sums.differences,
        d: centre.len(),
        mean: centre,
    };
    Ok(super::eigen::top_eigenvector(&scatter, guess, seed)?.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The within-pair spread ignores what a pair's question adds to both members, and a
    /// few outlying pairs: it is the robust spread of the differences, halved.
    #[test]
    fn pair_spread_is_the_robust_spread_of_the_differences() {
        // Differences 1, 2, 3, 4, 100 at wildly different pair levels: median 3, absolute
        // deviations 2, 1, 0, 1, 97 with median 1.
        let projections = [0.0, 1.0, 50.0, 52.0, -9.0, -6.0, 7.0, 11.0, 3.0, 103.0];
        assert!((pair_spread(&projections) - 1.4826 / 2.0).abs() < 1e-12);
    }
    use crate::lat::build_pairs;
    use crate::stimuli::StimulusRecord;
    use ndarray::Array1;

    /// Activations with a planted copy/correct direction plus noise: records 2k (copy) and
    /// 2k + 1 (correct) of each pair.
    fn planted(pairs: usize, d: usize, seed: u64) -> (Array2<f32>, Vec<ContrastPair>, Array1<f64>) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut normal = || -> f64 {
            let (u1, u2): (f64, f64) = (rng.gen::<f64>().max(1e-12), rng.gen());
            (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
        };
        let truth = Array1::from(unit((0..d).map(|_| normal()).collect()));
        let mut acts = Array2::zeros((2 * pairs, d));
        for k in 0..pairs {
            let base = Array1::from_iter((0..d).map(|_| normal()));
            let shift = 3.0 + normal().abs();
            let noise = Array1::from_iter((0..d).map(|_| 0.3 * normal()));
            acts.row_mut(2 * k).assign(&base.mapv(|v| v as f32));
            acts.row_mut(2 * k + 1)
                .assign(&(&base + &(&truth * shift) + noise).mapv(|v| v as f32));
        }
        let pairs = (0..pairs)
            .map(|k| ContrastPair {
                copy: 2 * k,
                correct: 2 * k + 1,
            })
            .collect();
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
        let acts = Array2::<f32>::zeros((8, 4));
        let pairs: Vec<ContrastPair> = (0..4)
            .map(|k| ContrastPair {
                copy: 2 * k,
                correct: 2 * k + 1,
            })
            .collect();
        let err = fit(&[acts], &pairs, LatMethod::Pca, 0.0, 0).unwrap_err();
        assert!(err.to_string().contains("mean-diff"), "{err}");
    }

    #[test]
    fn pca_matches_linfa_on_the_same_flipped_differences_and_points_to_correct() {
        use linfa::traits::Fit;
        for (pairs_n, d, test_fraction) in [(60, 24, 0.25), (12, 40, 0.0)] {
            let (acts, pairs, truth) = planted(pairs_n, d, 2);
            let result = fit(std::slice::from_ref(&acts), &pairs, LatMethod::Pca, test_fraction, 7).unwrap();
            let ours = Array1::from_iter(result.vectors[0].direction.iter().map(|&v| v as f64));
            // The reference: linfa's PCA (a full SVD) of the same training differences with
            // the same random flips, as `first_component` used before Lanczos replaced it.
            let (train, _) = split_pairs(&pairs, test_fraction, 7).unwrap();
            let flips = flip_signs(train.len(), 7);
            let diffs = Array2::from_shape_fn((train.len(), d), |(k, j)| {
                flips[k] * (f64::from(acts[[train[k].correct, j]]) - f64::from(acts[[train[k].copy, j]]))
            });
            let pca = linfa_reduction::Pca::params(1)
                .fit(&linfa::DatasetBase::from(diffs))
                .unwrap();
            let theirs = Array1::from(unit(pca.components().row(0).to_vec()));
            // Equal to f32 rounding (the sign of a component is arbitrary).
            let theirs = if theirs.dot(&ours) < 0.0 { -theirs } else { theirs };
            let worst = (&ours - &theirs).iter().fold(0f64, |m, v| m.max(v.abs()));
            assert!(worst <= 1e-7, "{pairs_n}x{d}: components differ by up to {worst}");
            assert!(ours.dot(&truth) > 0.9, "sign: positive = correct");
            assert!(result.vectors[0].accuracy >= 0.99);
            // Deterministic under the seed.
            let again = fit(&[acts], &pairs, LatMethod::Pca, test_fraction, 7).unwrap();
            assert_eq!(again.vectors[0].direction, result.vectors[0].direction);
        }
    }

    fn rec(q: &str, a: &str, c: &str) -> StimulusRecord {
        StimulusRecord {
            question: q.into(),
            answer: a.into(),
            correction: Some(c.into()),
            category: None,
        }
    }

    #[test]
    fn pairs_need_both_classes_per_question() {
        assert!(build_pairs(&[]).unwrap_err().to_string().contains("empty"));
        let only_copy = [rec("q", "a", "a"), rec("r", "b", "b")];
        assert!(build_pairs(&only_copy).unwrap_err().to_string().contains("only copy"));
        let unpaired = [rec("q", "a", "a"), rec("r", "b", "c")];
        assert!(build_pairs(&unpaired)
            .unwrap_err()
            .to_string()
            .contains("no copy/correct pairs"));
        let ok = [rec("q", "a", "a"), rec("q", "x", "a"), rec("r", "y", "b")];
        assert_eq!(build_pairs(&ok).unwrap(), vec![ContrastPair { copy: 0, correct: 1 }]);
    }
}
