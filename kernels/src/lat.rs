//! The f64 vector loops LAT's fit spends its time in, written so the compiler vectorises
//! them: 16 independent partial sums (floating-point sums are not reassociated on their
//! own), compiled once more for AVX-512 and picked at run time. The summation order is fixed,
//! so a fit gives the same bits on every run on one machine.

const LANES: usize = 16;

/// `pub fn $name` running `$portable` under AVX-512F where the CPU has it.
macro_rules! with_avx512 {
    ($(#[$doc:meta])* fn $name:ident => $portable:ident ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        $(#[$doc])*
        #[inline]
        pub fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            if is_x86_feature_detected!("avx512f") {
                #[target_feature(enable = "avx512f")]
                fn wide($($arg: $ty),*) -> $ret {
                    $portable($($arg),*)
                }
                // SAFETY: the CPU has AVX-512F, checked just above.
                return unsafe { wide($($arg),*) };
            }
            $portable($($arg),*)
        }
    };
}

with_avx512!(
    /// `a . b`.
    fn dot => dot_portable(a: &[f64], b: &[f64]) -> f64
);
with_avx512!(
    /// `a . b` for an f32 row (an activation) and an f64 vector, widening as it goes.
    fn dot_widened => dot_widened_portable(a: &[f32], b: &[f64]) -> f64
);
with_avx512!(
    /// `y += a x`.
    fn axpy => axpy_portable(a: f64, x: &[f64], y: &mut [f64]) -> ()
);
with_avx512!(
    /// `out = sum_k r_k (r_k . v)` over the f32 rows of `rows` (`v.len()` per row): the scatter
    /// product Lanczos spends its time in, one pass over the rows (each row is read twice
    /// while it sits in L1).
    fn gram_product => gram_product_portable(rows: &[f32], v: &[f64], out: &mut [f64]) -> ()
);
with_avx512!(
    /// `out = correct - copy` in f64 (exact for f32 inputs); returns `|out|^2`.
    fn difference => difference_portable(correct: &[f32], copy: &[f32], out: &mut [f64]) -> f64
);

#[inline(always)]
fn sum_partials(partial: [f64; LANES], tail: f64) -> f64 {
    partial.iter().fold(tail, |s, p| s + p)
}

#[inline(always)]
fn dot_portable(a: &[f64], b: &[f64]) -> f64 {
    let mut partial = [0.0f64; LANES];
    let (a_body, b_body) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail = a_body
        .remainder()
        .iter()
        .zip(b_body.remainder())
        .map(|(x, y)| x * y)
        .sum::<f64>();
    for (x, y) in a_body.zip(b_body) {
        for l in 0..LANES {
            partial[l] += x[l] * y[l];
        }
    }
    sum_partials(partial, tail)
}

#[inline(always)]
fn dot_widened_portable(a: &[f32], b: &[f64]) -> f64 {
    dot_widened_in::<LANES>(a, b)
}

/// `a . b` with `W` partial sums.
#[inline(always)]
fn dot_widened_in<const W: usize>(a: &[f32], b: &[f64]) -> f64 {
    let mut partial = [0.0f64; W];
    let (a_body, b_body) = (a.chunks_exact(W), b.chunks_exact(W));
    let tail = a_body
        .remainder()
        .iter()
        .zip(b_body.remainder())
        .map(|(&x, y)| f64::from(x) * y)
        .sum::<f64>();
    for (x, y) in a_body.zip(b_body) {
        for l in 0..W {
            partial[l] += f64::from(x[l]) * y[l];
        }
    }
    partial.iter().fold(tail, |s, p| s + p)
}

#[inline(always)]
fn axpy_portable(a: f64, x: &[f64], y: &mut [f64]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// `y += a x` for an f32 `x`, widened as it goes.
#[inline(always)]
fn axpy_widened_portable(a: f64, x: &[f32], y: &mut [f64]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += a * f64::from(x);
    }
}

#[inline(always)]
fn gram_product_portable(rows: &[f32], v: &[f64], out: &mut [f64]) {
    out.fill(0.0);
    if v.is_empty() {
        return;
    }
    for row in rows.chunks_exact(v.len()) {
        // Twice the partial sums of `dot`: the row dot product is the latency chain here.
        let t = dot_widened_in::<{ 2 * LANES }>(row, v);
        axpy_widened_portable(t, row, out);
    }
}

#[inline(always)]
fn difference_portable(correct: &[f32], copy: &[f32], out: &mut [f64]) -> f64 {
    let mut partial = [0.0f64; LANES];
    let mut tail = 0.0;
    let mut body = out.chunks_exact_mut(LANES);
    let (mut c, mut p) = (correct.chunks_exact(LANES), copy.chunks_exact(LANES));
    for ((o, c), p) in (&mut body).zip(&mut c).zip(&mut p) {
        for l in 0..LANES {
            o[l] = f64::from(c[l]) - f64::from(p[l]);
            partial[l] += o[l] * o[l];
        }
    }
    for ((o, &c), &p) in body.into_remainder().iter_mut().zip(c.remainder()).zip(p.remainder()) {
        *o = f64::from(c) - f64::from(p);
        tail += *o * *o;
    }
    sum_partials(partial, tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loops_agree_with_the_plain_sums_on_every_remainder() {
        for n in [0, 1, 15, 16, 17, 40, 576] {
            let a: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin()).collect();
            let b: Vec<f64> = (0..n).map(|i| (i as f64 * 0.11).cos()).collect();
            let (a32, b32): (Vec<f32>, Vec<f32>) = (
                a.iter().map(|&v| v as f32).collect(),
                b.iter().map(|&v| v as f32).collect(),
            );
            let plain: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - plain).abs() < 1e-12);
            let widened: f64 = a32.iter().zip(&b).map(|(&x, y)| f64::from(x) * y).sum();
            assert!((dot_widened(&a32, &b) - widened).abs() < 1e-12);
            let mut y = b.clone();
            axpy(2.0, &a, &mut y);
            assert!(y.iter().zip(&a).zip(&b).all(|((y, a), b)| *y == b + 2.0 * a));
            let rows: Vec<f32> = a32.iter().chain(&b32).copied().collect();
            let mut gram = vec![0.0; n];
            gram_product(&rows, &b, &mut gram);
            for (j, g) in gram.iter().enumerate() {
                let expected = dot_widened(&a32, &b) * f64::from(a32[j]) + dot_widened(&b32, &b) * f64::from(b32[j]);
                assert!(
                    (g - expected).abs() < 1e-9 * (1.0 + expected.abs()),
                    "gram {n}: {g} vs {expected}"
                );
            }
            let mut out = vec![0.0; n];
            let squares = difference(&a32, &b32, &mut out);
            assert!(out
                .iter()
                .zip(&a32)
                .zip(&b32)
                .all(|((o, &a), &b)| *o == f64::from(a) - f64::from(b)));
            assert!((squares - out.iter().map(|v| v * v).sum::<f64>()).abs() < 1e-12);
        }
    }
}
