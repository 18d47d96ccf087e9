//! `x @ W^T` for f32 activations and a bf16 weight, on the CPU's native bf16 dot products.
//!
//! candle 0.11 has no bf16 matmul on the CPU ("widen to f32, multiply, narrow back"), so a
//! bf16 checkpoint used to be cast to f32 one matrix per call: every forward wrote a 4-byte
//! copy of every weight and then ran the f32 GEMM, slower than an f32 checkpoint. Here the
//! weight is read as stored, two bytes per value, by AVX512-BF16's `vdpbf16ps` (32 products
//! of bf16 pairs summed into 16 f32 lanes per instruction).
//!
//! Precision: the weight is exactly bf16, but the activations are f32. Each activation is
//! split into three bf16 terms (`x = hi + mid + lo`, exact to about 2^-26 relative), each
//! multiplied exactly (a product of two bf16 fits in f32) and summed in f32, so the result
//! matches the f32 path on the same weights to f32 rounding rather than to bf16's 3 digits
//! (two terms left 2e-4 of error in the HF goldens, over their 1e-4 bound). The extra dot
//! products cost compute, which the halved weight traffic pays for where bandwidth bounds
//! the matmul (decoding).

use half::bf16;
use rayon::prelude::*;

/// Output columns per parallel task: a chunk of the weight (`CHUNK x k` bf16) stays in L2
/// while every row tile of `x` passes over it.
const CHUNK: usize = 128;

/// Whether this CPU has the instructions (checked once per call; the check is cached by std).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `x` `[m, k]` (row-major f32) times `w^T`, `w` `[n, k]` (row-major bf16): `[m, n]` f32.
/// `None` when the CPU lacks AVX512-BF16 or `k` is not a multiple of 32 (the caller then
/// takes the f32 path).
pub fn matmul_t(x: &[f32], m: usize, k: usize, w: &[bf16], n: usize) -> Option<Vec<f32>> {
    if !available() || !k.is_multiple_of(32) || x.len() != m * k || w.len() != n * k || m == 0 || n == 0 {
        return None;
    }
    let (hi, mid, lo) = split(x);
    let chunks: Vec<(usize, Vec<f32>)> = (0..n.div_ceil(CHUNK))
        .into_par_iter()
        .map(|c| {
            let (j0, j1) = (c * CHUNK, ((c + 1) * CHUNK).min(n));
            let mut out = vec![0f32; m * (j1 - j0)];
            // Safety: `available()` checked the target features; slices are sized above.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                x86::chunk([&hi, &mid, &lo], m, k, &w[j0 * k..j1 * k], j1 - j0, &mut out)
            };
            (j0, out)
        })
        .collect();
    let mut y = vec![0f32; m * n];
    for (j0, out) in chunks {
        let width = out.len() / m;
        for (row, part) in out.chunks_exact(width).enumerate() {
            y[row * n + j0..row * n + j0 + width].copy_from_slice(part);
        }
    }
    Some(y)
}

/// Each value as three bf16 terms, each the nearest bf16 to what the ones before missed.
fn split(x: &[f32]) -> (Vec<u16>, Vec<u16>, Vec<u16>) {
    let (mut hi, mut mid, mut lo) = (Vec::with_capacity(x.len()), Vec::with_capacity(x.len()), Vec::with_capacity(x.len()));
    for &v in x {
        let h = bf16::from_f32(v);
        let rest = v - h.to_f32();
        let m = bf16::from_f32(rest);
        hi.push(h.to_bits());
        mid.push(m.to_bits());
        lo.push(bf16::from_f32(rest - m.to_f32()).to_bits());
    }
    (hi, mid, lo)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use half::bf16;
    use std::arch::x86_64::*;

    /// The three bf16 terms of the activations, each `[m, k]`.
    type Terms<'a> = [&'a [u16]; 3];

    /// `out` `[m, nw]` = `x @ w^T` for a chunk `w` `[nw, k]`, in tiles of up to 4 rows of `x`
    /// by 4 rows of `w` (16 accumulators, 4 weight and 3 activation registers of the 32).
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn chunk(x: Terms, m: usize, k: usize, w: &[bf16], nw: usize, out: &mut [f32]) {
        let mut i = 0;
        while i < m {
            let rows = (m - i).min(4);
            let mut j = 0;
            while j < nw {
                let cols = (nw - j).min(4);
                match (rows, cols) {
                    (4, 4) => tile::<4, 4>(x, i, k, w, j, nw, out),
                    (3, 4) => tile::<3, 4>(x, i, k, w, j, nw, out),
                    (2, 4) => tile::<2, 4>(x, i, k, w, j, nw, out),
                    (1, 4) => tile::<1, 4>(x, i, k, w, j, nw, out),
                    (4, _) => (0..cols).for_each(|c| tile::<4, 1>(x, i, k, w, j + c, nw, out)),
                    (3, _) => (0..cols).for_each(|c| tile::<3, 1>(x, i, k, w, j + c, nw, out)),
                    (2, _) => (0..cols).for_each(|c| tile::<2, 1>(x, i, k, w, j + c, nw, out)),
                    _ => (0..cols).for_each(|c| tile::<1, 1>(x, i, k, w, j + c, nw, out)),
                }
                j += cols;
            }
            i += rows;
        }
    }

    #[inline(always)]
    unsafe fn tile<const R: usize, const C: usize>(
        x: Terms,
        i: usize,
        k: usize,
        w: &[bf16],
        j: usize,
        nw: usize,
        out: &mut [f32],
    ) {
        let mut acc = [[_mm512_setzero_ps(); C]; R];
        let mut p = 0;
        while p < k {
            let mut wv = [_mm512_setzero_si512(); C];
            for (c, v) in wv.iter_mut().enumerate() {
                *v = _mm512_loadu_si512(w.as_ptr().add((j + c) * k + p) as *const __m512i);
            }
            for (r, row) in acc.iter_mut().enumerate() {
                let offset = (i + r) * k + p;
                for term in x {
                    let xt: __m512bh = std::mem::transmute(_mm512_loadu_si512(term.as_ptr().add(offset) as *const __m512i));
                    for (a, w) in row.iter_mut().zip(&wv) {
                        *a = _mm512_dpbf16_ps(*a, xt, std::mem::transmute::<__m512i, __m512bh>(*w));
                    }
                }
            }
            p += 32;
        }
        for (r, row) in acc.iter().enumerate() {
            for (c, a) in row.iter().enumerate() {
                out[(i + r) * nw + j + c] = _mm512_reduce_add_ps(*a);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_f32_product_of_the_same_bf16_weights() {
        if !available() {
            eprintln!("skipping: this CPU has no AVX512-BF16");
            return;
        }
        // Shapes with every remainder: 7 rows (4 + 3), 11 columns (4 + 4 + 3), k = 96.
        for (m, k, n) in [(7usize, 96usize, 11usize), (1, 64, 300), (4, 32, 4)] {
            let x: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.3).collect();
            let w: Vec<bf16> = (0..n * k).map(|i| bf16::from_f32(((i * 53 % 89) as f32 - 44.0) / 31.0)).collect();
            let y = matmul_t(&x, m, k, &w, n).expect("available");
            let mut worst = 0f32;
            let mut scale = 0f32;
            for r in 0..m {
                for c in 0..n {
                    let exact: f64 = (0..k).map(|p| x[r * k + p] as f64 * w[c * k + p].to_f64()).sum();
                    worst = worst.max((y[r * n + c] as f64 - exact).abs() as f32);
                    scale = scale.max(exact.abs() as f32);
                }
            }
            // Two terms left 6e-6 of the largest output, bf16 activations alone about 4e-3.
            assert!(worst / scale < 1e-6, "{m}x{k}x{n}: {worst} of {scale}");
        }
    }

    #[test]
    fn unsupported_shapes_fall_back() {
        assert!(matmul_t(&[0.0; 30], 1, 30, &[bf16::ZERO; 30], 1).is_none());
    }
}
