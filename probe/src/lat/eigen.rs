//! The first principal component without forming the covariance: Lanczos on the operator
//! `v -> sum_k r_k (r_k . v) - n m (m . v)` (the centred scatter of rows `r_k` with mean `m`),
//! one pass over the rows per step.
//!
//! LAT needs one component of a few hundred pair differences of a few hundred or thousand
//! dimensions. A full SVD (linfa's PCA, LAPACK's in scikit-learn) spends almost all its time
//! on components nobody reads; Lanczos with full reorthogonalisation converges to the top
//! one in tens of steps when it stands out, and runs on (up to `min(n, d)` steps) when it
//! does not, so the answer is the same component either way.

use anyhow::{bail, Result};
use kernels::lat::{axpy, dot, gram_product};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Relative residual `|A v - theta v| / theta` at which the top Ritz pair is taken: the
/// direction is then within about `1e-9 / relative gap` radians of the exact one, under
/// the f32 rounding of the stored vector (6e-8) while the top component stands out by 2%.
const TOLERANCE: f64 = 1e-9;

/// The centred scatter of `rows` (row-major, `d` per row) about `mean`. The rows are f32,
/// like the activations they are differences of: half the bytes per Lanczos pass, and their
/// rounding (3e-8 relative) is far under the f32 forward's own.
pub(super) struct Scatter<'a> {
    pub rows: &'a [f32],
    pub d: usize,
    /// The mean the rows are centred on (for LAT: of the randomly flipped differences,
    /// while `rows` are unflipped, since `(s r)(s r)^T = r r^T` for a sign `s`).
    pub mean: &'a [f64],
}

impl Scatter<'_> {
    fn count(&self) -> usize {
        self.rows.len() / self.d
    }

    /// `out = (sum_k r_k r_k^T - n m m^T) v`.
    fn apply(&self, v: &[f64], out: &mut [f64]) {
        gram_product(self.rows, v, out);
        let t = self.count() as f64 * dot(self.mean, v);
        axpy(-t, self.mean, out);
    }
}

/// The unit top eigenvector of the scatter and its eigenvalue. Lanczos starts from `guess`
/// (any vector, zero included) plus a small random part drawn under `seed`, so that a guess
/// near the answer saves steps and one orthogonal to it still finds it.
pub(super) fn top_eigenvector(scatter: &Scatter, guess: &[f64], seed: u64) -> Result<(Vec<f64>, f64)> {
    let d = scatter.d;
    // Centring removes one dimension of the row space.
    let max_steps = d.min(scatter.count().saturating_sub(1)).max(1);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5ca7_7e12);
    let mut q: Vec<f64> = (0..d).map(|_| rng.gen::<f64>() - 0.5).collect();
    let norm = dot(&q, &q).sqrt();
    let guess_norm = dot(guess, guess).sqrt();
    if guess_norm.is_finite() && guess_norm > 0.0 {
        scale(&mut q, 1e-3 / norm);
        axpy(1.0 / guess_norm, guess, &mut q);
    }
    let norm = dot(&q, &q).sqrt();
    scale(&mut q, 1.0 / norm);
    let mut basis: Vec<Vec<f64>> = Vec::new();
    let (mut alphas, mut betas) = (Vec::new(), Vec::new());
    let mut w = vec![0.0; d];
    let mut next_check = 4;
    loop {
        scatter.apply(&q, &mut w);
        let alpha = dot(&w, &q);
        basis.push(q);
        alphas.push(alpha);
        // Full reorthogonalisation, twice ("twice is enough"): without it Lanczos vectors lose
        // orthogonality once the top pair converges and ghost copies of it appear.
        for _ in 0..2 {
            for b in &basis {
                let c = dot(&w, b);
                axpy(-c, b, &mut w);
            }
        }
        let beta = dot(&w, &w).sqrt();
        let steps = basis.len();
        // Breakdown (the basis spans an invariant subspace), or a NaN: stop here.
        let breakdown = beta.is_nan() || beta <= f64::EPSILON * alpha.abs().max(f64::MIN_POSITIVE);
        let last = steps >= max_steps || breakdown;
        if last || steps >= next_check {
            let (theta, s) = top_tridiagonal_pair(&alphas, &betas)?;
            // The residual of the Ritz pair is beta times the Ritz vector's last coordinate.
            let residual = beta * s[steps - 1].abs();
            if last || residual <= TOLERANCE * theta.abs() {
                let mut v = vec![0.0; d];
                for (b, &c) in basis.iter().zip(&s) {
                    axpy(c, b, &mut v);
                }
                let norm = dot(&v, &v).sqrt();
                if !(norm.is_finite() && norm > 0.0 && theta.is_finite()) {
                    bail!("PCA failed: the pair differences hold non-finite values");
                }
                scale(&mut v, 1.0 / norm);
                return Ok((v, theta));
            }
            // A check costs an eigensolve of the small tridiagonal (k^3), a step a pass over
            // the rows: check every step while k is small, then at growing intervals.
            next_check = steps + (steps / 16).max(1);
        }
        betas.push(beta);
        q = w.clone();
        scale(&mut q, 1.0 / beta);
    }
}

/// The top eigenpair of the symmetric tridiagonal matrix with diagonal `alphas` and
/// off-diagonal `betas` (one shorter), by cyclic Jacobi on its dense form: it is small
/// (the Lanczos step count) and Jacobi's eigenvectors are accurate to rounding.
fn top_tridiagonal_pair(alphas: &[f64], betas: &[f64]) -> Result<(f64, Vec<f64>)> {
    let k = alphas.len();
    let mut a = vec![0.0; k * k];
    for i in 0..k {
        a[i * k + i] = alphas[i];
        if i + 1 < k {
            a[i * k + i + 1] = betas[i];
            a[(i + 1) * k + i] = betas[i];
        }
    }
    let mut vectors = vec![0.0; k * k];
    for i in 0..k {
        vectors[i * k + i] = 1.0;
    }
    let total: f64 = a.iter().map(|v| v * v).sum();
    if !total.is_finite() {
        bail!("PCA failed: the pair differences hold non-finite values");
    }
    for _sweep in 0..100 {
        let off: f64 = (0..k)
            .flat_map(|i| (0..k).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * k + j].powi(2))
            .sum();
        if off <= 1e-30 * total {
            break;
        }
        for p in 0..k {
            for r in p + 1..k {
                let apr = a[p * k + r];
                if apr == 0.0 {
                    continue;
                }
                // The rotation that zeroes a[p][r] (Golub & Van Loan, Alg. 8.4.1).
                let tau = (a[r * k + r] - a[p * k + p]) / (2.0 * apr);
                let t = tau.signum() / (tau.abs() + (1.0 + tau * tau).sqrt());
                let t = if tau == 0.0 { 1.0 } else { t };
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = t * c;
                for i in 0..k {
                    let (aip, air) = (a[i * k + p], a[i * k + r]);
                    a[i * k + p] = c * aip - s * air;
                    a[i * k + r] = s * aip + c * air;
                }
                for j in 0..k {
                    let (apj, arj) = (a[p * k + j], a[r * k + j]);
                    a[p * k + j] = c * apj - s * arj;
                    a[r * k + j] = s * apj + c * arj;
                }
                for i in 0..k {
                    let (vip, vir) = (vectors[i * k + p], vectors[i * k + r]);
                    vectors[i * k + p] = c * vip - s * vir;
                    vectors[i * k + r] = s * vip + c * vir;
                }
            }
        }
    }
    let top = (0..k)
        .max_by(|&i, &j| a[i * k + i].total_cmp(&a[j * k + j]))
        .expect("at least one step");
    Ok((a[top * k + top], (0..k).map(|i| vectors[i * k + top]).collect()))
}

fn scale(v: &mut [f64], by: f64) {
    v.iter_mut().for_each(|x| *x *= by);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normal(rng: &mut StdRng) -> f64 {
        let (u1, u2): (f64, f64) = (rng.gen::<f64>().max(1e-12), rng.gen());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// The dense centred scatter and its top eigenpair, as the reference.
    fn dense_top(rows: &[f32], d: usize, mean: &[f64]) -> (f64, Vec<f64>) {
        let n = rows.len() / d;
        let mut c = vec![0.0; d * d];
        for r in rows.chunks_exact(d) {
            for i in 0..d {
                for j in 0..d {
                    c[i * d + j] += f64::from(r[i]) * f64::from(r[j]);
                }
            }
        }
        for i in 0..d {
            for j in 0..d {
                c[i * d + j] -= n as f64 * mean[i] * mean[j];
            }
        }
        // Power iteration on the dense matrix, run far past convergence.
        let mut v = vec![1.0; d];
        let mut lambda = 0.0;
        for _ in 0..20_000 {
            let mut w = vec![0.0; d];
            for i in 0..d {
                w[i] = (0..d).map(|j| c[i * d + j] * v[j]).sum();
            }
            lambda = dot(&w, &v) / dot(&v, &v);
            let norm = dot(&w, &w).sqrt();
            v = w.iter().map(|x| x / norm).collect();
        }
        (lambda, v)
    }

    fn planted(n: usize, d: usize, strength: f64, seed: u64) -> (Vec<f32>, Vec<f64>) {
        let mut rng = StdRng::seed_from_u64(seed);
        let truth: Vec<f64> = (0..d).map(|_| normal(&mut rng)).collect();
        let mut rows = Vec::with_capacity(n * d);
        for _ in 0..n {
            let along = strength * normal(&mut rng);
            rows.extend(truth.iter().map(|t| (along * t + normal(&mut rng)) as f32));
        }
        let mean: Vec<f64> = (0..d)
            .map(|j| rows.iter().skip(j).step_by(d).map(|&v| f64::from(v)).sum::<f64>() / n as f64)
            .collect();
        (rows, mean)
    }

    #[test]
    fn lanczos_finds_the_top_component_of_the_centred_scatter() {
        for (n, d, strength) in [(60, 24, 1.0), (20, 40, 0.6), (200, 8, 0.3)] {
            let (rows, mean) = planted(n, d, strength, n as u64);
            let (v, theta) = top_eigenvector(
                &Scatter {
                    rows: &rows,
                    d,
                    mean: &mean,
                },
                &[],
                1,
            )
            .unwrap();
            let (lambda, reference) = dense_top(&rows, d, &mean);
            assert!((theta - lambda).abs() <= 1e-9 * lambda, "{n}x{d}: {theta} vs {lambda}");
            assert!(
                dot(&v, &reference).abs() >= 1.0 - 1e-9,
                "{n}x{d}: |cos| {}",
                dot(&v, &reference).abs()
            );
        }
    }

    #[test]
    fn tridiagonal_pair_is_an_eigenpair() {
        let (alphas, betas) = ([4.0, 1.0, 3.0, -2.0], [0.5, 2.0, 1e-3]);
        let (theta, s) = top_tridiagonal_pair(&alphas, &betas).unwrap();
        for i in 0..4 {
            let mut ts = alphas[i] * s[i];
            if i > 0 {
                ts += betas[i - 1] * s[i - 1];
            }
            if i < 3 {
                ts += betas[i] * s[i + 1];
            }
            assert!((ts - theta * s[i]).abs() < 1e-12);
        }
        assert!(theta > 4.0);
    }

    #[test]
    fn non_finite_rows_are_an_error() {
        let rows = vec![1.0, f32::NAN, 0.5, 2.0, 1.0, 0.0];
        let mean = vec![0.0; 2];
        assert!(top_eigenvector(
            &Scatter {
                rows: &rows,
                d: 2,
                mean: &mean
            },
            &[],
            0
        )
        .is_err());
    }
}
