//! f32 products with a frozen weight, on the kernels' thread pool ([`crate::parallel`]):
//! each thread runs the `gemm` crate single-threaded on its own block of output columns.
//!
//! candle's matmul runs `gemm` on rayon's pool while candle's own pool (every elementwise op)
//! spins beside it, so on a small machine the two pools' threads share the cores; it also
//! zero-fills every output before `gemm` overwrites it. Here the output is written once, by
//! a pool whose idle threads do not spin.

use crate::parallel::SendPtr;

/// Output columns per block are a multiple of this (the kernel's register tile width).
const ALIGN: usize = 16;

/// `x @ W^T`: `x` is `[m, k]`, `w` is `[n, k]` (a linear layer's weight as stored); `[m, n]`.
pub fn matmul_t(x: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Vec<f32> {
    assert!(
        x.len() == m * k && w.len() == n * k,
        "matmul_t: operand sizes do not match"
    );
    if k == 0 {
        return vec![0.0; m * n]; // gemm would leave an empty product's output unwritten
    }
    // Columns c0..c1 of `W^T` are rows c0..c1 of `w`: down a column is along a row of `w`.
    // SAFETY: `dst` is `[m, n]` and this block writes its columns c0..c1; `x` is `[m, k]` and
    // rows c0..c1 of `w` `[n, k]` are its right-hand side, read down k and across by k.
    in_column_blocks(m, n, |dst, c0, c1| unsafe {
        gemm_into(dst.add(c0), n, m, c1 - c0, k, x.as_ptr(), w.as_ptr().add(c0 * k), 1, k)
    })
}

/// `g @ W`: `g` is `[m, n]`, `w` is `[n, k]`; `[m, k]` (the gradient a linear layer passes
/// back to its input).
pub fn matmul(g: &[f32], m: usize, n: usize, w: &[f32], k: usize) -> Vec<f32> {
    assert!(
        g.len() == m * n && w.len() == n * k,
        "matmul: operand sizes do not match"
    );
    if n == 0 {
        return vec![0.0; m * k]; // gemm would leave an empty product's output unwritten
    }
    // SAFETY: `dst` is `[m, k]` and this block writes its columns c0..c1; `g` is `[m, n]` and
    // columns c0..c1 of `w` `[n, k]` are its right-hand side.
    in_column_blocks(m, k, |dst, c0, c1| unsafe {
        gemm_into(dst.add(c0), k, m, c1 - c0, n, g.as_ptr(), w.as_ptr().add(c0), k, 1)
    })
}

/// `dst = lhs @ rhs`, single-threaded: `dst` is `m x cols` with row stride `dst_rs`, `lhs` is
/// `m x inner` (rows contiguous), `rhs` is `inner x cols` with strides `rhs_rs` (down) and
/// `rhs_cs` (across).
///
/// # Safety
/// The pointers must address matrices of those shapes and strides.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_into(
    dst: *mut f32,
    dst_rs: usize,
    m: usize,
    cols: usize,
    inner: usize,
    lhs: *const f32,
    rhs: *const f32,
    rhs_rs: usize,
    rhs_cs: usize,
) {
    // SAFETY: the caller's contract is gemm's: pointers that address these shapes and strides.
    unsafe {
        gemm::gemm(
            m,
            cols,
            inner,
            dst,
            1,
            dst_rs as isize,
            false,
            lhs,
            1,
            inner as isize,
            rhs,
            rhs_cs as isize,
            rhs_rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// An `[m, cols]` output, with `block(dst, c0, c1)` filling columns `c0..c1` of every row,
/// one block per pool thread.
fn in_column_blocks(m: usize, cols: usize, block: impl Fn(*mut f32, usize, usize) + Sync) -> Vec<f32> {
    let mut out = Vec::<f32>::with_capacity(m * cols);
    let threads = crate::parallel::threads();
    let per = cols.div_ceil(threads).div_ceil(ALIGN) * ALIGN;
    let blocks = cols.div_ceil(per.max(1));
    let dst = SendPtr(out.as_mut_ptr());
    crate::parallel::in_parallel(blocks, |b| {
        let (c0, c1) = (b * per, ((b + 1) * per).min(cols));
        block(dst.get(), c0, c1);
    });
    // SAFETY: the blocks cover columns 0..cols of all m rows, and gemm wrote every one of
    // them (read_dst = false: nothing was read before).
    unsafe { out.set_len(m * cols) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference_t(x: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Vec<f32> {
        (0..m)
            .flat_map(|i| {
                (0..n).map(move |j| (0..k).map(|l| x[i * k + l] as f64 * w[j * k + l] as f64).sum::<f64>() as f32)
            })
            .collect()
    }

    #[test]
    fn products_match_the_plain_sums_on_ragged_shapes() {
        for (m, k, n) in [
            (1, 1, 1),
            (3, 5, 7),
            (17, 33, 40),
            (64, 96, 130),
            (5, 64, 16),
            (4, 0, 3),
            (0, 8, 3),
        ] {
            let x: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
            let w: Vec<f32> = (0..n * k).map(|i| ((i * 53 % 97) as f32 - 48.0) / 24.0).collect();
            let ours = matmul_t(&x, m, k, &w, n);
            let theirs = reference_t(&x, m, k, &w, n);
            assert!(
                ours.iter()
                    .zip(&theirs)
                    .all(|(a, b)| (a - b).abs() <= 1e-4 * (1.0 + b.abs())),
                "{m}x{k}x{n}"
            );
            // g @ W with g = ours ([m, n]) and W = w ([n, k]).
            let back = matmul(&ours, m, n, &w, k);
            let wt: Vec<f32> = (0..k * n).map(|i| w[(i % n) * k + i / n]).collect();
            let theirs = reference_t(&ours, m, n, &wt, k);
            assert!(
                back.iter()
                    .zip(&theirs)
                    .all(|(a, b)| (a - b).abs() <= 1e-3 * (1.0 + b.abs())),
                "back {m}x{n}x{k}"
            );
        }
    }
}

#[cfg(test)]
mod same_bits {
    use candle_core::{Device, Tensor};

    /// Many rows (training, capture, prefill): candle's matmul's results to the bit, so
    /// switching to these products left shipped vectors and adapters byte for byte the same.
    /// With a few rows `gemm` picks its kernel by block width, and the last bits may differ.
    #[test]
    fn products_match_candles_matmul_to_the_bit_for_many_rows() {
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (m, k, n, bitwise) in [
            (33, 576, 192, true),
            (40, 192, 576, true),
            (33, 100, 192, true),
            (1, 576, 192, true),
            (7, 100, 50, false),
        ] {
            let x = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu).unwrap();
            let w = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu).unwrap();
            let g = Tensor::randn(0f32, 1.0, (m, n), &Device::Cpu).unwrap();
            let (xs, ws, gs) = (flat(&x), flat(&w), flat(&g));
            for (name, candle, ours) in [
                (
                    "x @ W^T",
                    flat(&x.matmul(&w.t().unwrap()).unwrap()),
                    super::matmul_t(&xs, m, k, &ws, n),
                ),
                ("g @ W", flat(&g.matmul(&w).unwrap()), super::matmul(&gs, m, n, &ws, k)),
            ] {
                if bitwise {
                    assert_eq!(candle, ours, "{name}, {m} rows, {k} x {n}");
                } else {
                    assert!(
                        candle
                            .iter()
                            .zip(&ours)
                            .all(|(a, b)| (a - b).abs() <= 1e-5 * (1.0 + a.abs())),
                        "{name}, {m} rows"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod speed {
    /// `cargo test --release -p probe f32_matmul::speed -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn against_candle() {
        use candle_core::{Device, Tensor};
        for (m, k, n) in [(520, 576, 1536), (520, 1536, 576), (520, 576, 576), (520, 576, 192)] {
            let x = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu).unwrap();
            let w = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu).unwrap();
            let (xs, ws) = (
                x.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                w.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            );
            let g = Tensor::randn(0f32, 1.0, (m, n), &Device::Cpu).unwrap();
            let gs = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let time = |f: &mut dyn FnMut()| {
                f();
                let t = std::time::Instant::now();
                for _ in 0..20 {
                    f();
                }
                t.elapsed().as_secs_f64() / 20.0
            };
            let flops = 2.0 * (m * k * n) as f64;
            let c = time(&mut || {
                x.matmul(&w.t().unwrap()).unwrap();
            });
            let o = time(&mut || {
                super::matmul_t(&xs, m, k, &ws, n);
            });
            let cb = time(&mut || {
                g.matmul(&w).unwrap();
            });
            let ob = time(&mut || {
                super::matmul(&gs, m, n, &ws, k);
            });
            println!(
                "{m}x{k}x{n}: fwd candle {:.0} ours {:.0} GFLOP/s; bwd candle {:.0} ours {:.0}",
                flops / c / 1e9,
                flops / o / 1e9,
                flops / cb / 1e9,
                flops / ob / 1e9
            );
        }
    }
}
