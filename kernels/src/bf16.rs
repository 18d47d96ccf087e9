//! `x @ W^T` for f32 activations and a bf16 weight, on the CPU's native bf16 dot products.
//!
//! candle 0.11 has no bf16 matmul on the CPU ("widen to f32, multiply, narrow back"), so a
//! bf16 checkpoint used to be cast to f32 one matrix per call: every forward wrote a 4-byte
//! copy of every weight and then ran the f32 GEMM, slower than an f32 checkpoint. Here the
//! weight is read as bf16, two bytes per value, by AVX512-BF16's `vdpbf16ps` (32 products
//! of bf16 pairs summed into 16 f32 lanes per instruction), or, for 16 rows or more in
//! `Native`, by AMX tiles where the CPU has them (`super::amx`).
//!
//! The AVX512-BF16 GEMM is laid out as GEMM libraries lay theirs out (oneDNN's brgemm,
//! tract-linalg, candle's `repack_x86`): the weight is repacked once ([`PackedWeight`], at
//! load) into panels of 64 output columns, each k-pair of a panel's columns one contiguous
//! 256-byte run (the "VNNI" layout `vdpbf16ps` reads: a column's two k values side by side);
//! the activations are rounded and repacked per call into strips of 6 rows. The register
//! tile is 6 rows x 64 columns: per k-pair it loads 4 weight vectors, broadcasts 6 activation
//! pairs and issues 24 `vdpbf16ps` into 24 accumulators, which go to the output once, as rows.
//! A panel (64 columns x k) stays in L2 while every strip of a block of rows passes over it,
//! and the streams it reads are linear, so the kernel runs on the dot-product units rather
//! than on cache bandwidth. The same tile serves decoding (a strip of 1 to 5 rows: the weight
//! is read once per call, linearly) and prefill or capture (hundreds of rows).
//!
//! Precision ([`Bf16Compute`]): the weight is exactly bf16; the activations are f32.
//! - `Native` rounds each activation to bf16 at the matmul and sums the products in f32, as
//!   torch does with a bf16 model (there the residual stream is bf16 too; here it stays f32).
//!   One dot product per weight: the CPU's full bf16 rate, about 3x `Exact`'s.
//! - `Exact` splits each activation into three bf16 terms (`x = hi + mid + lo`, exact to
//!   about 2^-26 relative), each multiplied exactly (a product of two bf16 fits in f32), so
//!   the result matches the f32 path on the same weights to f32 rounding rather than to
//!   bf16's 3 digits (two terms left 2e-4 of error in the HF goldens, over their 1e-4 bound).
//!
//! Setting `ALENS_BF16_KERNELS=off` in the environment makes [`available`] say no, so every
//! caller takes its fallback (the weight cast to f32 per call) as on a CPU without the
//! instructions: for tests of that path, and to compare the two on one machine.

use crate::tile::MR;
use half::bf16;
use std::mem::MaybeUninit;
use std::sync::{Mutex, OnceLock, PoisonError};

/// Whether this CPU has the instructions and the environment has not turned them off
/// (checked once per process).
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let off = std::env::var("ALENS_BF16_KERNELS").is_ok_and(|v| v.eq_ignore_ascii_case("off"));
        !off && cpu_has_avx512_bf16()
    })
}

fn cpu_has_avx512_bf16() -> bool {
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

/// 16-column vectors of `w` per register tile.
const NV: usize = 4;
/// Output columns per weight panel.
const NR: usize = 16 * NV;
// The packed products share `crate::tile`'s output driver, which splits columns in its panels.
const _: () = assert!(NR == crate::tile::PANEL);
/// From this many strips of rows on, a panel is widened to f32 once and the strips run the f32
/// tile over it (`crate::tile`): the register tile's widening (one shift or mask per 16
/// weights, on the ports the FMAs use) is then paid once per panel instead of once per strip.
/// Both sum each output in k order from zero, so the bits are the same either way.
const WIDEN_FROM_STRIPS: usize = 3;

/// `x` `[m, k]` (row-major f32) times `w^T`, `w` `[n, k]` (row-major bf16): `[m, n]` f32.
/// `None` when the kernels are not [`available`] (the caller then takes the f32 path).
/// The weight is packed on every call; a weight used more than once is packed once, at
/// load, by [`PackedWeight::pack`].
pub fn matmul_t(x: &[f32], m: usize, k: usize, w: &[bf16], n: usize, compute: Bf16Compute) -> Option<Vec<f32>> {
    if !available() || x.len() != m * k || w.len() != n * k || m == 0 || n == 0 || k == 0 {
        return None;
    }
    if compute == Bf16Compute::Native
        && m >= AMX_MIN_ROWS
        && k.is_multiple_of(32)
        && n.is_multiple_of(32)
        && super::amx::available()
    {
        return Some(amx_product(x, m, k, w, n));
    }
    Some(PackedWeight::pack(w, n, k)?.matmul_t(x, m, compute))
}

/// A bf16 weight `[n, k]` in the layout the AVX512-BF16 kernel reads: panels of [`NR`]
/// columns (the last one zero-padded), each `[k/2][NR][2]`, k padded to even with a zero.
#[derive(Clone)]
pub struct PackedWeight {
    n: usize,
    k: usize,
    data: Vec<u16>,
}

impl std::fmt::Debug for PackedWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedWeight [{}, {}] bf16", self.n, self.k)
    }
}

impl PackedWeight {
    /// Packs `w` `[n, k]` (row-major, as a linear layer stores it); `None` when the kernels
    /// are not [`available`] or the sizes do not match.
    pub fn pack(w: &[bf16], n: usize, k: usize) -> Option<Self> {
        if !available() || w.len() != n * k || n == 0 || k == 0 {
            return None;
        }
        let kp = k.div_ceil(2);
        let panel_len = kp * NR * 2;
        let mut data = vec![0u16; n.div_ceil(NR) * panel_len];
        let panels: Vec<std::sync::Mutex<&mut [u16]>> = data.chunks_mut(panel_len).map(std::sync::Mutex::new).collect();
        crate::parallel::in_parallel(panels.len(), |panel| {
            let mut out = panels[panel].lock().unwrap_or_else(|e| e.into_inner());
            let cols = (n - panel * NR).min(NR);
            for lane in 0..cols {
                let row = &w[(panel * NR + lane) * k..(panel * NR + lane + 1) * k];
                for (i, v) in row.iter().enumerate() {
                    out[(i / 2) * NR * 2 + 2 * lane + i % 2] = v.to_bits();
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

    /// The weight as it was given to [`PackedWeight::pack`], `[n, k]` row-major.
    pub fn unpack(&self) -> Vec<bf16> {
        let kp = self.k.div_ceil(2);
        let mut w = Vec::with_capacity(self.n * self.k);
        for col in 0..self.n {
            let panel = &self.data[(col / NR) * kp * NR * 2..];
            w.extend((0..self.k).map(|i| bf16::from_bits(panel[(i / 2) * NR * 2 + 2 * (col % NR) + i % 2])));
        }
        w
    }

    /// `x` `[m, k]` (row-major f32) times the weight's transpose: `[m, n]` f32.
    pub fn matmul_t(&self, x: &[f32], m: usize, compute: Bf16Compute) -> Vec<f32> {
        self.matmul_t_rows(x, m, compute, None)
    }

    /// [`PackedWeight::matmul_t`] for the rows `selected` of `x` alone (strictly ascending,
    /// each below `m`; `None`: all of them): each of those output rows is the same bits as in
    /// the whole product, and every other row is zero.
    ///
    /// # Panics
    /// If `x` is not `[m, k]` or `selected` is not strictly ascending rows below `m` (the
    /// candle op, `crate::frozen::PackedBf16Matmul`, refuses those with an error first).
    pub fn matmul_t_rows(&self, x: &[f32], m: usize, compute: Bf16Compute, selected: Option<&[usize]>) -> Vec<f32> {
        let (n, k) = (self.n, self.k);
        assert_eq!(x.len(), m * k, "bf16 matmul: activations are not [{m}, {k}]");
        let packed_rows = selected.map_or(m, <[usize]>::len);
        let kp = k.div_ceil(2);
        let xp = pack_activations(x, packed_rows, k, compute, selected);
        // SAFETY: each task runs a tile over every strip of its block and every panel of its
        // group, which writes each strip's real rows through `out`, all the panel's columns up
        // to `n` (`cols`), and nothing else.
        unsafe {
            crate::tile::packed_output(m, n, selected, |strips, panels, out| {
                let widen = strips.len() >= WIDEN_FROM_STRIPS;
                let mut wide = if widen { vec![0f32; 2 * kp * NR] } else { Vec::new() };
                let mut parked = Vec::new();
                for panel in panels {
                    let wp = &self.data[panel * kp * NR * 2..(panel + 1) * kp * NR * 2];
                    let cols = (n - panel * NR).min(NR);
                    if widen {
                        // `available()` held when this weight was packed; `wp` is one panel for
                        // `kp` pairs and `wide` holds `2 * kp` rows of `NR`; then each strip is
                        // `2 * kp` steps of `MR` rows, the widened panel the same steps of `NR`
                        // f32 (summed in one depth block: the register tile's order, k
                        // ascending), and `out` gives each strip's rows.
                        #[cfg(target_arch = "x86_64")]
                        {
                            x86::widen_panel(wp, kp, &mut wide);
                            crate::tile::panel_in_pieces(
                                strips.clone(),
                                |s| xp.strip(s, kp),
                                |s| out.rows(s),
                                &wide,
                                2 * kp,
                                2 * kp,
                                cols,
                                |s, r| out.at(s, r, panel),
                                &mut parked,
                            );
                        }
                        continue;
                    }
                    for strip in strips.clone() {
                        let rows = out.rows(strip);
                        let ys = std::array::from_fn(|r| {
                            if r < rows {
                                out.at(strip, r, panel)
                            } else {
                                std::ptr::null_mut()
                            }
                        });
                        // `available()` held when this weight was packed; the strip is packed for
                        // `kp` pairs, `wp` is one panel for `kp` pairs, and the tile writes the
                        // strip's `rows` rows, columns up to `cols`.
                        #[cfg(target_arch = "x86_64")]
                        x86::tile_dispatch(rows, xp.strip(strip, kp), wp, kp, ys, cols);
                        #[cfg(not(target_arch = "x86_64"))]
                        unreachable!("nothing is packed off x86_64 ({rows} rows, {cols} columns, {wp:?} {ys:?} {wide:?} {parked:?})");
                    }
                }
            })
        }
    }
}

/// The register tile runs on FMAs with the weight widened to f32 in registers (a bf16 is the
/// top half of an f32, so widening is one shift or one mask per 16 weights).
///
/// On the AVX512-BF16 CPUs measured (docs/performance.md) `vdpbf16ps` issues at a quarter of
/// the rate of `vfmadd231ps`, so its 32 products per instruction are half the FMA units'
/// rate; the FMAs also take f32 activations at no extra cost, so `Exact` needs one pass
/// rather than three. Every row count takes the same tile, so a row's product is the same
/// bits whoever shares its batch (a `vdpbf16ps` tile for few rows would sum in another
/// order).
/// `x` `[m, k]` in strips of [`MR`] rows, with every row of a strip side by side at each k,
/// so a tile's broadcasts read one short run: f32 `[strips][k/2 * 2][MR]`. Rows past `m` and
/// the pad past an odd `k` are zero.
pub(crate) struct PackedActivations(Vec<f32>);

impl PackedActivations {
    pub(crate) fn strip(&self, strip: usize, kp: usize) -> &[f32] {
        let len = kp * MR * 2;
        &self.0[strip * len..(strip + 1) * len]
    }
}

/// `x` packed for the tile: rounded to bf16 for `Native` (the tile then multiplies the
/// rounded values, as `vdpbf16ps` would), as it is for `Exact`. Packed row `i` is `x`'s row
/// `source[i]` (with `None`, its row `i`), for `m` rows.
pub(crate) fn pack_activations(
    x: &[f32],
    m: usize,
    k: usize,
    compute: Bf16Compute,
    source: Option<&[usize]>,
) -> PackedActivations {
    let kp = k.div_ceil(2);
    let strip_len = kp * MR * 2;
    let strips = m.div_ceil(MR);
    // On the pool, a few tasks a thread, and every value written once (pads included), so
    // packing neither holds the other threads up nor zero-fills first.
    let per_task = strips.div_ceil(crate::parallel::threads() * 4).max(1);
    let mut packed = Vec::<f32>::with_capacity(strips * strip_len);
    let tasks: Vec<Mutex<&mut [MaybeUninit<f32>]>> = packed.spare_capacity_mut()[..strips * strip_len]
        .chunks_mut(per_task * strip_len)
        .map(Mutex::new)
        .collect();
    let zeros = vec![0f32; k];
    crate::parallel::for_each(tasks.len(), |task| {
        let mut out = tasks[task].lock().unwrap_or_else(PoisonError::into_inner);
        let native = compute == Bf16Compute::Native;
        let (mut bits, mut rounded) = (vec![0u16; k], vec![0f32; if native { MR * k } else { 0 }]);
        for (s, strip) in out.chunks_mut(strip_len).enumerate() {
            // The strip's rows (zeros past `m`), rounded first for `Native`.
            let mut rows: [&[f32]; MR] = [&zeros; MR];
            for (r, rounded) in rounded.chunks_mut(k.max(1)).enumerate().take(MR) {
                let row = (task * per_task + s) * MR + r;
                if row < m {
                    let from = source.map_or(row, |rows| rows[row]);
                    round_row(&x[from * k..(from + 1) * k], &mut bits);
                    for (o, b) in rounded.iter_mut().zip(&bits) {
                        *o = f32::from_bits(u32::from(*b) << 16);
                    }
                }
            }
            for (r, slot) in rows.iter_mut().enumerate() {
                let row = (task * per_task + s) * MR + r;
                if row < m {
                    let from = source.map_or(row, |rows| rows[row]);
                    *slot = if native {
                        &rounded[r * k..(r + 1) * k]
                    } else {
                        &x[from * k..(from + 1) * k]
                    };
                }
            }
            // k-major: each k-step's MR values side by side, written in order.
            let (body, pad) = strip.split_at_mut(k * MR);
            let [r0, r1, r2, r3, r4, r5] = rows;
            let steps = body
                .chunks_exact_mut(MR)
                .zip(r0)
                .zip(r1)
                .zip(r2)
                .zip(r3)
                .zip(r4)
                .zip(r5);
            for ((((((step, &v0), &v1), &v2), &v3), &v4), &v5) in steps {
                for (slot, v) in step.iter_mut().zip([v0, v1, v2, v3, v4, v5]) {
                    slot.write(v);
                }
            }
            pad.iter_mut().for_each(|v| {
                v.write(0.0);
            });
        }
    });
    drop(tasks);
    // SAFETY: the tasks' chunks cover the first `strips * strip_len` values, and each strip
    // wrote all of its `k * MR` values and then its pad: all of them are initialised.
    unsafe { packed.set_len(strips * strip_len) };
    PackedActivations(packed)
}

/// Each value as the nearest bf16 (round to nearest even, as `half` rounds).
fn round_row(x: &[f32], out: &mut [u16]) {
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: `available()` checked the target features; `out` is as long as `x`.
        unsafe { x86::round_into(x, out) };
        return;
    }
    for (o, &v) in out.iter_mut().zip(x) {
        *o = bf16::from_f32(v).to_bits();
    }
}

/// From this many rows on (prefill, batched capture), `Native` runs on AMX tiles where the
/// host was granted them.
const AMX_MIN_ROWS: usize = 16;

/// `Native` for many rows on AMX tiles (`super::amx`): the activations repacked so that 64
/// bytes hold 16 rows x one pair of k, the weight read as stored, in chunks of 128 columns.
fn amx_product(x: &[f32], m: usize, k: usize, w: &[bf16], n: usize) -> Vec<f32> {
    const CHUNK: usize = 128;
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `matmul_t` checked the target features.
        let packed = x86::pack_row_pairs(&unsafe { x86::round_to_bf16(x) }, m, k);
        let chunks = crate::parallel::in_parallel(n.div_ceil(CHUNK), |c| {
            let (j0, j1) = (c * CHUNK, ((c + 1) * CHUNK).min(n));
            let mut out = vec![0f32; m * (j1 - j0)];
            // SAFETY: the tiles were granted (`amx::available`), `packed` holds `m` rows for
            // `k`, `w[j0 * k..j1 * k]` is this chunk's `[j1 - j0, k]` and `out` `[m, j1 - j0]`.
            unsafe { super::amx::chunk(&packed, m, k, &w[j0 * k..j1 * k], j1 - j0, &mut out) };
            (j0, out)
        });
        let mut y = vec![0f32; m * n];
        for (j0, out) in chunks {
            let width = out.len() / m;
            for (row, part) in out.chunks_exact(width).enumerate() {
                y[row * n + j0..row * n + j0 + width].copy_from_slice(part);
            }
        }
        y
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!(
        "matmul_t returns None off x86_64 ({m}x{k}x{n}, {} {})",
        x.len(),
        w.len()
    )
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{MR, NR, NV};
    use std::arch::x86_64::*;

    /// Each value as the nearest bf16 (round to nearest even, as `half` rounds; a subnormal
    /// becomes zero, as `vcvtneps2bf16` reads it), 16 at a time.
    ///
    /// # Safety
    /// The CPU must have AVX-512F and AVX512-BF16.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn round_to_bf16(x: &[f32]) -> Vec<u16> {
        let mut out = vec![0u16; x.len()];
        // SAFETY: the caller's contract; `out` is as long as `x`.
        unsafe { round_into(x, &mut out) };
        out
    }

    /// As [`round_to_bf16`], into `out`.
    ///
    /// # Safety
    /// The CPU must have AVX-512F and AVX512-BF16; `out` is as long as `x`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn round_into(x: &[f32], out: &mut [u16]) {
        for b in 0..x.len().div_ceil(16) {
            let lanes = (x.len() - 16 * b).min(16);
            let mask: __mmask16 = if lanes == 16 { !0 } else { (1u16 << lanes) - 1 };
            // SAFETY: the masked load and store touch lanes `16 * b..16 * b + lanes`, inside `x`
            // and `out` (the same length, the caller's contract), as do the features.
            unsafe {
                let v = _mm512_maskz_loadu_ps(mask, x.as_ptr().add(16 * b));
                let h: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(v));
                _mm256_mask_storeu_epi16(out.as_mut_ptr().add(16 * b) as *mut i16, mask, h);
            }
        }
    }

    /// Row-major `[m, k]` bf16 bits as `[m/16][k/2][16][2]`: for each tile of 16 rows and each
    /// pair of k, the 16 rows' pairs in one 64-byte run (rows past `m` are zero), as the AMX
    /// kernel reads them.
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

    /// One panel (`kp` pairs of [`NR`] columns, VNNI order) as `2 * kp` rows of [`NR`] f32
    /// in `wide`: row `k` holds column `c`'s weight at k in lane `c`.
    ///
    /// # Safety
    /// The CPU must have AVX-512F; `wp` holds `kp * NR * 2` values and `wide` `2 * kp * NR`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn widen_panel(wp: &[u16], kp: usize, wide: &mut [f32]) {
        debug_assert!(wp.len() >= kp * NR * 2 && wide.len() >= 2 * kp * NR);
        let high = _mm512_set1_epi32(0xffff_0000_u32 as i32);
        let (src, dst) = (wp.as_ptr(), wide.as_mut_ptr());
        for p in 0..kp {
            for v in 0..NV {
                // SAFETY: pair `p`'s vector `v` is 32 values at `p * NR * 2 + v * 32`; rows
                // `2p` and `2p + 1` of `wide` have lanes `v * 16..+16` at those offsets.
                unsafe {
                    let w = _mm512_loadu_si512(src.add(p * NR * 2 + v * 32) as *const __m512i);
                    _mm512_storeu_ps(
                        dst.add(2 * p * NR + v * 16),
                        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(w)),
                    );
                    _mm512_storeu_ps(
                        dst.add((2 * p + 1) * NR + v * 16),
                        _mm512_castsi512_ps(_mm512_and_si512(w, high)),
                    );
                }
            }
        }
    }

    /// The register tile for `rows` (1 to [`MR`]) rows of a strip.
    ///
    /// # Safety
    /// As [`fma_tile`].
    pub unsafe fn tile_dispatch(rows: usize, xs: &[f32], wp: &[u16], kp: usize, y: [*mut f32; MR], cols: usize) {
        // SAFETY: the caller's contract is the tiles', for these `R`.
        unsafe {
            match rows {
                6 => fma_tile::<6>(xs, wp, kp, y, cols),
                5 => fma_tile::<5>(xs, wp, kp, y, cols),
                4 => fma_tile::<4>(xs, wp, kp, y, cols),
                3 => fma_tile::<3>(xs, wp, kp, y, cols),
                2 => fma_tile::<2>(xs, wp, kp, y, cols),
                1 => fma_tile::<1>(xs, wp, kp, y, cols),
                _ => unreachable!("a strip has 1 to {MR} rows"),
            }
        }
    }

    /// `y[r][c] = sum over k of x[r][k] * w[c][k]` for the `R` rows of one strip of f32
    /// activations and the first `cols` columns of one panel: each 64-byte run of weight pairs
    /// becomes two f32 vectors in registers (the even k shifted up into the high half of each
    /// lane, the odd k masked in place), each multiplied into the accumulators by
    /// `vfmadd231ps` with every row's activation broadcast.
    ///
    /// # Safety
    /// The CPU must have AVX-512F and AVX512-BF16; `xs` is one strip of [`super::PackedActivations`]
    /// for `kp` pairs, `wp` one panel of a [`super::PackedWeight`] for `kp` pairs, and `y[r]`
    /// for each of the first `R` rows points at that row's first column of an output block
    /// that may be written for `cols` (at most [`NR`]) columns.
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn fma_tile<const R: usize>(xs: &[f32], wp: &[u16], kp: usize, y: [*mut f32; MR], cols: usize) {
        debug_assert!(xs.len() >= kp * MR * 2 && wp.len() >= kp * NR * 2 && cols <= NR);
        let mut acc = [[_mm512_setzero_ps(); NV]; R];
        let (xs, wp) = (xs.as_ptr(), wp.as_ptr());
        let high = _mm512_set1_epi32(0xffff_0000_u32 as i32);
        for p in 0..kp {
            let mut raw = [_mm512_setzero_si512(); NV];
            for (v, w) in raw.iter_mut().enumerate() {
                // SAFETY: pair `p` of the panel is `NR * 2` values from `p * NR * 2`; vector `v`
                // is 32 of them (64 bytes) at `v * 32`.
                *w = unsafe { _mm512_loadu_si512(wp.add(p * NR * 2 + v * 32) as *const __m512i) };
            }
            for half in 0..2 {
                let wv = raw.map(|w| {
                    _mm512_castsi512_ps(if half == 0 {
                        _mm512_slli_epi32::<16>(w)
                    } else {
                        _mm512_and_si512(w, high)
                    })
                });
                for (r, row) in acc.iter_mut().enumerate() {
                    // SAFETY: row `r` at k `2p + half` is at `(2p + half) * MR + r`, inside the
                    // strip for `r < R <= MR`.
                    let xb = _mm512_set1_ps(unsafe { *xs.add((2 * p + half) * MR + r) });
                    for (a, w) in row.iter_mut().zip(&wv) {
                        *a = _mm512_fmadd_ps(xb, *w, *a);
                    }
                }
            }
        }
        // SAFETY: the caller's contract on `y` and `cols`.
        unsafe { store::<R>(&acc, y, cols) };
    }

    /// The accumulators of a tile to `y`, as rows.
    ///
    /// # Safety
    /// `y[r]` for each of the first `R` rows points at that row's first column of a block
    /// that may be written for `cols` (at most [`NR`]) columns.
    #[inline(always)]
    unsafe fn store<const R: usize>(acc: &[[__m512; NV]; R], y: [*mut f32; MR], cols: usize) {
        for (r, row) in acc.iter().enumerate() {
            for (v, a) in row.iter().enumerate() {
                let c0 = v * 16;
                // SAFETY: row `r < R` and columns `c0..c0 + 16` (or the `cols - c0` of them the
                // mask keeps) are inside the block the caller lets this tile write.
                unsafe {
                    if c0 + 16 <= cols {
                        _mm512_storeu_ps(y[r].add(c0), *a);
                    } else if c0 < cols {
                        _mm512_mask_storeu_ps(y[r].add(c0), (1u16 << (cols - c0)) - 1, *a);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_selected_rows, bits};

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
        // Every remainder of the 6-row x 64-column tiles and of the 96-row blocks (rows 37 =
        // 6 x 6 + 1, 300 = 3 x 96 + 12; columns 300 = 4 x 64 + 44, 131 = 2 x 64 + 3), odd k;
        // column counts that are multiples of 32 run on AMX where the host has it (row tiles
        // 2 + 1 of 16, column chunks 128 + 32).
        for (m, k, n) in [
            (7usize, 96usize, 11usize),
            (9, 64, 300),
            (16, 32, 4),
            (37, 96, 300),
            (300, 64, 131),
            (37, 96, 160),
            (300, 64, 128),
            (5, 33, 70),
            (1, 768, 64),
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
            // The instruction reads a subnormal input as zero (none reaches a matmul in practice).
            let expected = if v.is_subnormal() {
                0
            } else {
                bf16::from_f32(*v).to_bits()
            };
            assert_eq!(o & 0x7fff, expected & 0x7fff, "{v}");
        }
    }

    /// A row's product is the same bits whoever shares its batch: a server's batched answers
    /// must equal each request's alone, and few rows and many rows take different tiles.
    #[test]
    fn a_row_is_the_same_bits_alone_and_batched() {
        if !available() {
            eprintln!("skipping: this CPU has no AVX512-BF16");
            return;
        }
        // 40 rows: 7 strips, whose panels are widened once; a row alone takes the register tile.
        let (m, k, n) = (40usize, 201usize, 130usize);
        let x: Vec<f32> = (0..m * k).map(|i| ((i as f32) * 0.731).sin() * 3.0).collect();
        let w: Vec<bf16> = (0..n * k).map(|i| bf16::from_f32(((i as f32) * 0.377).cos())).collect();
        let packed = PackedWeight::pack(&w, n, k).expect("available");
        for compute in [Bf16Compute::Native, Bf16Compute::Exact] {
            let batched = packed.matmul_t(&x, m, compute);
            for r in 0..m {
                let alone = packed.matmul_t(&x[r * k..(r + 1) * k], 1, compute);
                assert_eq!(bits(&alone), bits(&batched[r * n..(r + 1) * n]), "row {r} {compute:?}");
            }
            // Selected rows (widened panels for 30 of them, the register tile for 3): those
            // rows' bits, zeros elsewhere.
            let many: Vec<usize> = (0..m).filter(|r| r % 4 != 1).collect();
            for selected in [many, vec![2, 17, 39]] {
                let some = packed.matmul_t_rows(&x, m, compute, Some(&selected));
                assert_selected_rows(&some, &batched, &selected, n, &format!("{compute:?}"));
            }
        }
    }

    #[test]
    fn mismatched_sizes_are_refused() {
        assert!(matmul_t(&[0.0; 30], 1, 30, &[bf16::ZERO; 29], 1, Bf16Compute::Native).is_none());
        assert!(matmul_t(&[0.0; 30], 2, 30, &[bf16::ZERO; 30], 1, Bf16Compute::Native).is_none());
        assert!(PackedWeight::pack(&[bf16::ZERO; 30], 2, 16).is_none());
    }

    #[test]
    fn a_packed_weight_unpacks_to_itself_and_multiplies_as_the_unpacked_one() {
        if !available() {
            eprintln!("skipping: this CPU has no AVX512-BF16");
            return;
        }
        for (m, k, n) in [(13usize, 67usize, 130usize), (2, 32, 16), (0, 32, 16)] {
            let x: Vec<f32> = (0..m * k).map(|i| ((i * 29 % 83) as f32 - 41.0) / 9.1).collect();
            let w: Vec<bf16> = (0..n * k)
                .map(|i| bf16::from_f32(((i * 61 % 97) as f32 - 48.0) / 17.0))
                .collect();
            let packed = PackedWeight::pack(&w, n, k).expect("available");
            assert_eq!(packed.dims(), (n, k));
            assert_eq!(packed.unpack(), w);
            for compute in [Bf16Compute::Native, Bf16Compute::Exact] {
                let y = packed.matmul_t(&x, m, compute);
                assert_eq!(y.len(), m * n);
                if m > 0 {
                    assert_eq!(Some(y), matmul_t(&x, m, k, &w, n, compute), "{m}x{k}x{n} {compute:?}");
                }
            }
        }
    }
}
