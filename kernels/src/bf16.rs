//! `x @ W^T` for f32 activations and a bf16 weight, on the CPU's native bf16 dot products.
//!
//! candle 0.11 has no bf16 matmul on the CPU ("widen to f32, multiply, narrow back"), so a
//! bf16 checkpoint used to be cast to f32 one matrix per call: every forward wrote a 4-byte
//! copy of every weight and then ran the f32 GEMM, slower than an f32 checkpoint. Here the
//! weight is read as stored, two bytes per value, by AVX512-BF16's `vdpbf16ps` (32 products
//! of bf16 pairs summed into 16 f32 lanes per instruction), or, for 16 rows or more in
//! `Native`, by AMX tiles where the CPU has them (`super::amx`).
//!
//! Precision ([`Bf16Compute`]): the weight is exactly bf16; the activations are f32.
//! - `Native` rounds each activation to bf16 at the matmul and sums the products in f32, as
//!   torch does with a bf16 model (there the residual stream is bf16 too; here it stays f32).
//!   One dot product per weight: the CPU's full bf16 rate, about 3x `Exact`'s.
//! - `Exact` splits each activation into three bf16 terms (`x = hi + mid + lo`, exact to
//!   about 2^-26 relative), each multiplied exactly (a product of two bf16 fits in f32), so
//!   the result matches the f32 path on the same weights to f32 rounding rather than to
//!   bf16's 3 digits (two terms left 2e-4 of error in the HF goldens, over their 1e-4 bound).

use half::bf16;

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

/// Whether many-row `Native` products run on AMX tiles: the host asked for them
/// ([`request_amx`]) and Linux granted them.
pub fn amx_available() -> bool {
    super::amx::available()
}

/// Asks Linux for the AMX tile registers (with the `amx` feature, on a CPU that has them);
/// returns whether they were granted. It changes the whole process, so only a host calls it,
/// once, before its other threads start.
pub fn request_amx() -> bool {
    super::amx::request()
}

/// How the f32 activations meet a bf16 weight (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Bf16Compute {
    /// Activations rounded to bf16, products summed in f32: torch's bf16 arithmetic, fastest.
    #[default]
    Native,
    /// Activations as three bf16 terms: the f32 path's results, at a third of the rate.
    Exact,
}

/// `x` `[m, k]` (row-major f32) times `w^T`, `w` `[n, k]` (row-major bf16): `[m, n]` f32.
/// `None` when the CPU lacks AVX512-BF16 or `k` is not a multiple of 32 (the caller then
/// takes the f32 path).
pub fn matmul_t(x: &[f32], m: usize, k: usize, w: &[bf16], n: usize, compute: Bf16Compute) -> Option<Vec<f32>> {
    if !available() || !k.is_multiple_of(32) || x.len() != m * k || w.len() != n * k || m == 0 || n == 0 {
        return None;
    }
    if compute == Bf16Compute::Native && m >= OUTER_MIN_ROWS {
        return Some(outer_product(x, m, k, w, n));
    }
    let terms = split(x, compute);
    let terms: Vec<&[u16]> = terms.iter().map(Vec::as_slice).collect();
    let chunks = crate::parallel::in_parallel(n.div_ceil(CHUNK), |c| {
        let (j0, j1) = (c * CHUNK, ((c + 1) * CHUNK).min(n));
        let mut out = vec![0f32; m * (j1 - j0)];
        // SAFETY: `available()` checked the target features; slices are sized above.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            match terms[..] {
                [x] => x86::chunk([x], m, k, &w[j0 * k..j1 * k], j1 - j0, &mut out),
                [hi, mid, lo] => x86::chunk([hi, mid, lo], m, k, &w[j0 * k..j1 * k], j1 - j0, &mut out),
                _ => unreachable!("split gives one or three terms"),
            }
        };
        (j0, out)
    });
    Some(assemble(chunks, m, n))
}

/// `[m, n]` from column chunks, each `[m, width]` starting at column `j0`.
fn assemble(chunks: Vec<(usize, Vec<f32>)>, m: usize, n: usize) -> Vec<f32> {
    let mut y = vec![0f32; m * n];
    for (j0, out) in chunks {
        let width = out.len() / m;
        for (row, part) in out.chunks_exact(width).enumerate() {
            y[row * n + j0..row * n + j0 + width].copy_from_slice(part);
        }
    }
    y
}

/// From this many rows on (prefill, batched capture), `Native` takes the outer-product
/// kernel; below (decoding), the dot-product one, which reads each weight once per call and
/// wastes no lanes on missing rows.
const OUTER_MIN_ROWS: usize = 16;

/// `Native` for many rows: on AMX tiles where the CPU has them (`super::amx`), else as GEMM
/// libraries do it with AVX512-BF16: the activations are repacked so that one
/// 512-bit register holds 16 rows x one pair of k, each weight pair is broadcast from the
/// weight as stored, and `vdpbf16ps` accumulates a 16-row x 1-column strip per register. A
/// 32-row x 12-column tile keeps 24 accumulators in registers and loads 2 activation vectors
/// and 12 four-byte weight pairs per 24 instructions, so it runs on the dot-product units
/// rather than on cache bandwidth (the dot-product kernel streams the weight from L2 for
/// every 4 rows, which capped it near the f32 GEMM's speed).
fn outer_product(x: &[f32], m: usize, k: usize, w: &[bf16], n: usize) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `matmul_t` checked the target features.
        let packed = x86::pack_row_pairs(&unsafe { x86::round_to_bf16(x) }, m, k);
        // AMX tiles where the CPU has them (8x the dot-product rate), for column counts it
        // tiles (chunks of 128 are then multiples of 32).
        let amx = n.is_multiple_of(32) && super::amx::available();
        let chunks = crate::parallel::in_parallel(n.div_ceil(CHUNK), |c| {
            let (j0, j1) = (c * CHUNK, ((c + 1) * CHUNK).min(n));
            let mut out = vec![0f32; m * (j1 - j0)];
            let w = &w[j0 * k..j1 * k];
            if amx {
                // SAFETY: the tiles were granted (`amx::available`), `packed` holds `m` rows for
                // `k`, `w` is this chunk's `[j1 - j0, k]` and `out` `[m, j1 - j0]`.
                unsafe { super::amx::chunk(&packed, m, k, w, j1 - j0, &mut out) };
            } else {
                // SAFETY: `matmul_t` checked the target features; the sizes are as above.
                unsafe { x86::outer_chunk(&packed, m, k, w, j1 - j0, &mut out) };
            }
            (j0, out)
        });
        assemble(chunks, m, n)
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("matmul_t returns None off x86_64")
}

/// Each value as bf16 terms: one (the nearest bf16) for `Native`, three for `Exact`, each
/// the nearest bf16 to what the ones before missed.
fn split(x: &[f32], compute: Bf16Compute) -> Vec<Vec<u16>> {
    if compute == Bf16Compute::Native {
        #[cfg(target_arch = "x86_64")]
        if available() {
            // SAFETY: `available()` checked the target features.
            return vec![unsafe { x86::round_to_bf16(x) }];
        }
        return vec![x.iter().map(|&v| bf16::from_f32(v).to_bits()).collect()];
    }
    let (mut hi, mut mid, mut lo) = (
        Vec::with_capacity(x.len()),
        Vec::with_capacity(x.len()),
        Vec::with_capacity(x.len()),
    );
    for &v in x {
        let h = bf16::from_f32(v);
        let rest = v - h.to_f32();
        let m = bf16::from_f32(rest);
        hi.push(h.to_bits());
        mid.push(m.to_bits());
        lo.push(bf16::from_f32(rest - m.to_f32()).to_bits());
    }
    vec![hi, mid, lo]
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use half::bf16;
    use std::arch::x86_64::*;

    /// Each value as the nearest bf16 (round to nearest even, as `half` rounds), 16 at a time.
    ///
    /// # Safety
    /// The CPU must have AVX-512F and AVX512-BF16.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn round_to_bf16(x: &[f32]) -> Vec<u16> {
        // SAFETY: the target features are the caller's contract; each 16-lane load and store is inside `x` and `out`, which have the same length.
        unsafe {
            let mut out = vec![0u16; x.len()];
            let blocks = x.len() / 16;
            for b in 0..blocks {
                let v = _mm512_loadu_ps(x.as_ptr().add(16 * b));
                let h: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(v));
                _mm256_storeu_si256(out.as_mut_ptr().add(16 * b) as *mut __m256i, h);
            }
            for i in 16 * blocks..x.len() {
                out[i] = bf16::from_f32(x[i]).to_bits();
            }
            out
        }
    }

    /// Row-major `[m, k]` bf16 bits as `[m/16][k/2][16][2]`: for each tile of 16 rows and each
    /// pair of k, the 16 rows' pairs in one 64-byte run (rows past `m` are zero).
    pub fn pack_row_pairs(x: &[u16], m: usize, k: usize) -> Vec<u16> {
        let kp = k / 2;
        let mut packed = vec![0u16; m.div_ceil(16) * kp * 32];
        for row in 0..m {
            let (tile, lane) = (row / 16, row % 16);
            for p in 0..kp {
                let at = (tile * kp + p) * 32 + 2 * lane;
                packed[at] = x[row * k + 2 * p];
                packed[at + 1] = x[row * k + 2 * p + 1];
            }
        }
        packed
    }

    /// `out` `[m, nw]` = `x @ w^T` for a chunk `w` `[nw, k]`, `x` packed by
    /// [`pack_row_pairs`]. Rows go in blocks of 256 so a block's activations stay in L2 while
    /// every column tile passes over them; a column tile's weights stay in L1 meanwhile.
    ///
    /// # Safety
    /// The CPU must have AVX-512F and AVX512-BF16; `xp` holds `m` rows packed for `k` (`k` even), `w` is `[nw, k]` and `out` `[m, nw]`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn outer_chunk(xp: &[u16], m: usize, k: usize, w: &[bf16], nw: usize, out: &mut [f32]) {
        // SAFETY: the caller's contract covers the features and the sizes that `strip` reads and writes.
        unsafe {
            const TILES_PER_BLOCK: usize = 16;
            let tiles = m.div_ceil(16);
            for b0 in (0..tiles).step_by(TILES_PER_BLOCK) {
                let b1 = (b0 + TILES_PER_BLOCK).min(tiles);
                let mut j = 0;
                while j < nw {
                    let cols = match nw - j {
                        c if c >= 12 => 12,
                        c if c >= 8 => 8,
                        c if c >= 4 => 4,
                        _ => 1,
                    };
                    let mut t = b0;
                    while t < b1 {
                        let pair = b1 - t >= 2;
                        let at = Strip { t, j, m, k, nw };
                        match (pair, cols) {
                            (true, 12) => strip::<2, 12>(xp, w, at, out),
                            (true, 8) => strip::<2, 8>(xp, w, at, out),
                            (true, 4) => strip::<2, 4>(xp, w, at, out),
                            (true, _) => strip::<2, 1>(xp, w, at, out),
                            (false, 12) => strip::<1, 12>(xp, w, at, out),
                            (false, 8) => strip::<1, 8>(xp, w, at, out),
                            (false, 4) => strip::<1, 4>(xp, w, at, out),
                            (false, _) => strip::<1, 1>(xp, w, at, out),
                        }
                        t += if pair { 2 } else { 1 };
                    }
                    j += cols;
                }
            }
        }
    }

    /// Where a tile of the outer-product kernel sits: row tile `t` (16 rows each), chunk
    /// column `j`, and the problem's `m`, `k` and chunk width `nw`.
    #[derive(Clone, Copy)]
    pub struct Strip {
        t: usize,
        j: usize,
        m: usize,
        k: usize,
        nw: usize,
    }

    /// `V` row tiles (16 rows each) x `C` columns, every k.
    ///
    /// # Safety
    /// As [`outer_chunk`], with `at` inside its problem.
    #[inline(always)]
    unsafe fn strip<const V: usize, const C: usize>(xp: &[u16], w: &[bf16], at: Strip, out: &mut [f32]) {
        // SAFETY: as `outer_chunk`: activation loads stay inside `xp`'s packed tiles, weight pairs inside `w`, and writes check `r < m`.
        unsafe {
            let Strip { t, j, m, k, nw } = at;
            let kp = k / 2;
            let mut acc = [[_mm512_setzero_ps(); C]; V];
            let wp = w.as_ptr() as *const u16;
            for p in 0..kp {
                let mut xv = [_mm512_setzero_si512(); V];
                for (v, x) in xv.iter_mut().enumerate() {
                    *x = _mm512_loadu_si512(xp.as_ptr().add(((t + v) * kp + p) * 32) as *const __m512i);
                }
                for c in 0..C {
                    let pair = (wp.add((j + c) * k + 2 * p) as *const i32).read_unaligned();
                    let wb: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
                    for (row, x) in acc.iter_mut().zip(&xv) {
                        row[c] = _mm512_dpbf16_ps(row[c], std::mem::transmute::<__m512i, __m512bh>(*x), wb);
                    }
                }
            }
            let mut lanes = [0f32; 16];
            for (v, row) in acc.iter().enumerate() {
                for (c, a) in row.iter().enumerate() {
                    _mm512_storeu_ps(lanes.as_mut_ptr(), *a);
                    for (l, value) in lanes.iter().enumerate() {
                        let r = (t + v) * 16 + l;
                        if r < m {
                            out[r * nw + j + c] = *value;
                        }
                    }
                }
            }
        }
    }

    /// The `T` bf16 terms of the activations (1 or 3), each `[m, k]`.
    type Terms<'a, const T: usize> = [&'a [u16]; T];

    /// `out` `[m, nw]` = `x @ w^T` for a chunk `w` `[nw, k]`, in tiles of up to 4 rows of `x`
    /// by 4 rows of `w` (16 accumulators, 4 weight and 3 activation registers of the 32).
    ///
    /// # Safety
    /// The CPU must have AVX-512F and AVX512-BF16; each term is `[m, k]` with `k` a multiple of 32, `w` is `[nw, k]` and `out` `[m, nw]`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn chunk<const T: usize>(x: Terms<T>, m: usize, k: usize, w: &[bf16], nw: usize, out: &mut [f32]) {
        // SAFETY: the caller's contract covers the features and the sizes `tile` reads and writes.
        unsafe {
            let mut i = 0;
            while i < m {
                let rows = (m - i).min(4);
                let mut j = 0;
                while j < nw {
                    let cols = (nw - j).min(4);
                    match (rows, cols) {
                        (4, 4) => tile::<T, 4, 4>(x, i, k, w, j, nw, out),
                        (3, 4) => tile::<T, 3, 4>(x, i, k, w, j, nw, out),
                        (2, 4) => tile::<T, 2, 4>(x, i, k, w, j, nw, out),
                        (1, 4) => tile::<T, 1, 4>(x, i, k, w, j, nw, out),
                        (4, _) => (0..cols).for_each(|c| tile::<T, 4, 1>(x, i, k, w, j + c, nw, out)),
                        (3, _) => (0..cols).for_each(|c| tile::<T, 3, 1>(x, i, k, w, j + c, nw, out)),
                        (2, _) => (0..cols).for_each(|c| tile::<T, 2, 1>(x, i, k, w, j + c, nw, out)),
                        _ => (0..cols).for_each(|c| tile::<T, 1, 1>(x, i, k, w, j + c, nw, out)),
                    }
                    j += cols;
                }
                i += rows;
            }
        }
    }

    /// # Safety
    /// As [`chunk`], with rows `i..i + R` and columns `j..j + C` inside the problem.
    #[inline(always)]
    unsafe fn tile<const T: usize, const R: usize, const C: usize>(
        x: Terms<T>,
        i: usize,
        k: usize,
        w: &[bf16],
        j: usize,
        nw: usize,
        out: &mut [f32],
    ) {
        // SAFETY: as `chunk`: each 32-value load is inside a term or `w` because `k` is a multiple of 32.
        unsafe {
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
                        let xt: __m512bh =
                            std::mem::transmute(_mm512_loadu_si512(term.as_ptr().add(offset) as *const __m512i));
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
            let w: Vec<bf16> = (0..n * k)
                .map(|i| bf16::from_f32(((i * 53 % 89) as f32 - 44.0) / 31.0))
                .collect();
            let y = matmul_t(&x, m, k, &w, n, Bf16Compute::Exact).expect("available");
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
    fn native_is_the_exact_product_of_bf16_rounded_activations() {
        if !available() {
            eprintln!("skipping: this CPU has no AVX512-BF16");
            return;
        }
        // Below 16 rows the dot-product kernel; from 16 on the outer-product one, with every
        // remainder of its 32-row x 12-column tiles (rows 37 = 32 + 5, columns 300 = 2 x 128 +
        // 44 = 3 x 12 + 8); column counts that are multiples of 32 run on AMX where the CPU
        // has it (row tiles 2 + 1 of 16, column chunks 128 + 32).
        for (m, k, n) in [
            (7usize, 96usize, 11usize),
            (9, 64, 300),
            (16, 32, 4),
            (37, 96, 300),
            (300, 64, 131),
            (37, 96, 160),
            (300, 64, 128),
        ] {
            let x: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.3).collect();
            let w: Vec<bf16> = (0..n * k)
                .map(|i| bf16::from_f32(((i * 53 % 89) as f32 - 44.0) / 31.0))
                .collect();
            let y = matmul_t(&x, m, k, &w, n, Bf16Compute::Native).expect("available");
            let (mut from_rounded, mut from_f32, mut scale) = (0f64, 0f64, 0f64);
            for r in 0..m {
                for c in 0..n {
                    let dot = |round: bool| -> f64 {
                        (0..k)
                            .map(|p| {
                                let v = x[r * k + p];
                                let v = if round { bf16::from_f32(v).to_f64() } else { v as f64 };
                                v * w[c * k + p].to_f64()
                            })
                            .sum()
                    };
                    from_rounded = from_rounded.max((y[r * n + c] as f64 - dot(true)).abs());
                    from_f32 = from_f32.max((y[r * n + c] as f64 - dot(false)).abs());
                    scale = scale.max(dot(false).abs());
                }
            }
            // Products of bf16 pairs are exact, so only the f32 sum rounds; against the f32
            // activations the error is bf16's rounding of x, a few parts in a thousand.
            assert!(from_rounded / scale < 1e-6, "{m}x{k}x{n}: {from_rounded} of {scale}");
            assert!(
                from_f32 / scale < 1e-2 && from_f32 / scale > 1e-5,
                "{m}x{k}x{n}: {from_f32} of {scale}"
            );
        }
    }

    #[test]
    fn vector_rounding_agrees_with_half() {
        if !available() {
            eprintln!("skipping: this CPU has no AVX512-BF16");
            return;
        }
        let x: Vec<f32> = (0..1000)
            .map(|i| ((i as f32) * 0.37).sin() * 10f32.powi(i % 7 - 3))
            .chain([0.0, -0.0, 1e-40, 3.0e38])
            .collect();
        // SAFETY: the test runs only where `available()` says the CPU has the features.
        let ours = unsafe { x86::round_to_bf16(&x) };
        for (v, o) in x.iter().zip(ours) {
            assert_eq!(o, bf16::from_f32(*v).to_bits(), "{v}");
        }
    }

    #[test]
    fn unsupported_shapes_fall_back() {
        assert!(matmul_t(&[0.0; 30], 1, 30, &[bf16::ZERO; 30], 1, Bf16Compute::Native).is_none());
    }
}
