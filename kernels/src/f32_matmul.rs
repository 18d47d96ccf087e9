//! f32 products with a frozen weight, on the kernels' thread pool ([`crate::parallel`]):
//! each thread runs the `gemm` crate single-threaded on its own block of output columns.
//!
//! candle's matmul runs `gemm` on rayon's pool while candle's own pool (every elementwise op)
//! spins beside it, so on a small machine the two pools' threads share the cores; it also
//! zero-fills every output before `gemm` overwrites it. Here the output is written once, by
//! a pool whose idle threads do not spin.
//!
//! At inference a weight is packed once instead ([`PackedF32Weight`]) and multiplied by a
//! register tile that sums in `gemm`'s order: the same bits, without repacking per call.

use crate::bf16::{pack_activations, Bf16Compute};
use crate::parallel::SendPtr;
use crate::tile::PANEL;

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
        gemm_into(
            dst.add(c0),
            n,
            m,
            c1 - c0,
            k,
            (x.as_ptr(), k, 1),
            (w.as_ptr().add(c0 * k), 1, k),
        )
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
        gemm_into(
            dst.add(c0),
            k,
            m,
            c1 - c0,
            n,
            (g.as_ptr(), n, 1),
            (w.as_ptr().add(c0), k, 1),
        )
    })
}

/// `dst = lhs @ rhs`, single-threaded: `dst` is `m x cols` with row stride `dst_rs` (its
/// rows' values contiguous), `lhs` is `m x inner` with strides `lhs_rs` (down) and `lhs_cs`
/// (across), `rhs` is `inner x cols` with strides `rhs_rs` and `rhs_cs`. The call candle's
/// matmul makes for each matrix of a batch.
///
/// # Safety
/// The pointers must address matrices of those shapes and strides.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_into(
    dst: *mut f32,
    dst_rs: usize,
    m: usize,
    cols: usize,
    inner: usize,
    (lhs, lhs_rs, lhs_cs): (*const f32, usize, usize),
    (rhs, rhs_rs, rhs_cs): (*const f32, usize, usize),
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
            lhs_cs as isize,
            lhs_rs as isize,
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

/// Whether the packed f32 product runs here (AVX-512F; checked once per process).
pub fn packed_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE.get_or_init(|| is_x86_feature_detected!("avx512f"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// gemm's depth block for a product over `k`: its microkernels sum each block from zero and
/// add the blocks in order, so summing in the same blocks gives gemm's bits. It depends on
/// `k` and the caches only (the row count enters gemm's choice only below 2 rows, where gemm
/// takes a matrix-vector path, and for tiny products).
fn gemm_depth_block(k: usize) -> usize {
    // gemm's f32 AVX-512 microkernel: 4 vectors of 16 by 6.
    gemm_common::cache::kernel_params(1024, 1024, k, 64, 6, std::mem::size_of::<f32>())
        .kc
        .max(1)
}

/// An f32 weight `[n, k]` packed once, at load, for [`PackedF32Weight::matmul_t`]: panels of
/// 64 output columns (the last zero-padded), each `[k][64]`, so a register tile reads four
/// vectors per k in one linear stream.
///
/// `gemm` repacks its right-hand side at every call: with two threads and a capture batch
/// (hundreds of rows) that repacking and gemm's per-call setup were a fifth of the matmul's
/// time, and with a few rows (decoding) most of it. Packed once, the weight is only read.
#[derive(Clone)]
pub struct PackedF32Weight {
    n: usize,
    k: usize,
    data: Vec<f32>,
}

impl std::fmt::Debug for PackedF32Weight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedF32Weight [{}, {}]", self.n, self.k)
    }
}

impl PackedF32Weight {
    /// Packs `w` `[n, k]` (row-major, as a linear layer stores it); `None` where the packed
    /// product does not run ([`packed_available`]) or the sizes do not match.
    pub fn pack(w: &[f32], n: usize, k: usize) -> Option<Self> {
        if !packed_available() || w.len() != n * k || n == 0 || k == 0 {
            return None;
        }
        let panel_len = k * PANEL;
        let mut data = vec![0f32; n.div_ceil(PANEL) * panel_len];
        let panels: Vec<std::sync::Mutex<&mut [f32]>> = data.chunks_mut(panel_len).map(std::sync::Mutex::new).collect();
        crate::parallel::in_parallel(panels.len(), |panel| {
            let mut out = panels[panel].lock().unwrap_or_else(|e| e.into_inner());
            for lane in 0..(n - panel * PANEL).min(PANEL) {
                let row = &w[(panel * PANEL + lane) * k..(panel * PANEL + lane + 1) * k];
                for (i, v) in row.iter().enumerate() {
                    out[i * PANEL + lane] = *v;
                }
            }
        });
        drop(panels);
        Some(Self { n, k, data })
    }

    /// `(n, k)`: the weight's `[out, in]`.
    pub fn dims(&self) -> (usize, usize) {
        (self.n, self.k)
    }

    /// The weight as it was given to [`PackedF32Weight::pack`], `[n, k]` row-major.
    pub fn unpack(&self) -> Vec<f32> {
        let k = self.k;
        let mut w = Vec::with_capacity(self.n * k);
        for col in 0..self.n {
            let panel = &self.data[(col / PANEL) * k * PANEL..];
            w.extend((0..k).map(|i| panel[i * PANEL + col % PANEL]));
        }
        w
    }

    /// `x` `[m, k]` (row-major) times the weight's transpose: `[m, n]`. For two rows or more
    /// the same bits as [`matmul_t`] (gemm) on the unpacked weight; a row's product is the
    /// same bits whoever shares its batch.
    pub fn matmul_t(&self, x: &[f32], m: usize) -> Vec<f32> {
        self.matmul_t_rows(x, m, None)
    }

    /// [`PackedF32Weight::matmul_t`] for the rows `selected` of `x` alone (strictly ascending,
    /// each below `m`; `None`: all of them): each of those output rows is the same bits as in
    /// the whole product, and every other row is zero. For right-padded batches, whose padding
    /// no one reads.
    ///
    /// # Panics
    /// If `x` is not `[m, k]` or `selected` is not strictly ascending rows below `m` (the
    /// candle op, `crate::frozen::PackedF32Matmul`, refuses those with an error first).
    pub fn matmul_t_rows(&self, x: &[f32], m: usize, selected: Option<&[usize]>) -> Vec<f32> {
        let (n, k) = (self.n, self.k);
        assert_eq!(x.len(), m * k, "packed f32 matmul: activations are not [{m}, {k}]");
        let packed_rows = selected.map_or(m, <[usize]>::len);
        let kp = k.div_ceil(2);
        let xp = pack_activations(x, packed_rows, k, Bf16Compute::Exact, selected);
        let depth = gemm_depth_block(k);
        // SAFETY: each task runs the tile over every strip of its block and every panel of its
        // group, which writes each strip's real rows through `out`, all the panel's columns
        // up to `n` (`cols`), and nothing else.
        unsafe {
            crate::tile::packed_output(m, n, selected, |strips, panels, out| {
                let mut parked = Vec::new();
                for panel in panels {
                    let wp = &self.data[panel * k * PANEL..(panel + 1) * k * PANEL];
                    let cols = (n - panel * PANEL).min(PANEL);
                    #[cfg(target_arch = "x86_64")]
                    // `packed_available()` held when this weight was packed; each strip of `xp`
                    // is `k` steps and `wp` one panel of `k` steps; `out` gives each strip's
                    // rows (distinct rows of the output), which no other task writes.
                    crate::tile::panel_in_pieces(
                        strips.clone(),
                        |s| xp.strip(s, kp),
                        |s| out.rows(s),
                        wp,
                        k,
                        depth,
                        cols,
                        |s, r| out.at(s, r, panel),
                        &mut parked,
                    );
                    #[cfg(not(target_arch = "x86_64"))]
                    unreachable!("nothing is packed off x86_64 ({cols} columns, {wp:?}, {parked:?}, {depth})");
                }
            })
        }
    }
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
mod packed {
    use super::*;
    use crate::testing::{assert_selected_rows, bits};

    /// The packed product is gemm's to the bit from two rows on (capture, prefill, batched
    /// decoding), on the shapes of real models and on ragged ones; a row is the same bits
    /// alone and batched. Tiny products (64 columns or fewer a thread, the size of no real
    /// model's layer) take gemm's small-matrix kernels, which sum in another order.
    #[test]
    fn packed_products_are_gemms_bits_and_batch_invariant() {
        if !packed_available() {
            eprintln!("skipping: this CPU has no AVX-512F");
            return;
        }
        for (m, k, n, bitwise) in [
            (424usize, 768usize, 768usize, true),
            (37, 2048, 768, true),
            (33, 576, 1536, true),
            (2, 1536, 576, true),
            (6, 4096, 130, true),
            (7, 100, 50, false),
            (13, 1100, 70, false),
        ] {
            let x: Vec<f32> = (0..m * k).map(|i| ((i as f32) * 0.7311).sin() * 2.0).collect();
            let w: Vec<f32> = (0..n * k).map(|i| ((i as f32) * 0.3771).cos() * 0.05).collect();
            let packed = PackedF32Weight::pack(&w, n, k).expect("available");
            assert_eq!(packed.dims(), (n, k));
            assert_eq!(packed.unpack(), w);
            let ours = packed.matmul_t(&x, m);
            let gemm = matmul_t(&x, m, k, &w, n);
            if bitwise {
                assert_eq!(bits(&ours), bits(&gemm), "{m} x {k} x {n}");
            } else {
                let worst = ours.iter().zip(&gemm).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(worst < 1e-5, "{m} x {k} x {n}: {worst}");
            }
            // Every third row and the last: those rows' bits, zeros elsewhere.
            let selected: Vec<usize> = (0..m).filter(|r| r % 3 == 0 || *r == m - 1).collect();
            let some = packed.matmul_t_rows(&x, m, Some(&selected));
            assert_selected_rows(&some, &ours, &selected, n, &format!("{m} x {k} x {n}"));
            assert_eq!(packed.matmul_t_rows(&x, m, Some(&[])), vec![0.0; m * n]);
            for r in [0, m - 1] {
                let alone = packed.matmul_t(&x[r * k..(r + 1) * k], 1);
                assert_eq!(
                    bits(&alone),
                    bits(&ours[r * n..(r + 1) * n]),
                    "row {r} of {m} x {k} x {n}"
                );
            }
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
