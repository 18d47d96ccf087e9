//! The f32 register tile of the packed products: 6 rows of activations x 64 output columns
//! (four 16-lane vectors), one `vfmadd231ps` per row, vector and k, each output summed from
//! zero in k order and stored once or added to what an earlier depth block stored. The packed
//! f32 weights run on it, and bf16 panels widened to f32 for many rows.

/// Rows of activations per register tile (a strip).
pub(crate) const MR: usize = 6;
/// Output columns per tile and per packed panel: four 16-lane vectors.
pub(crate) const PANEL: usize = 64;

/// The row pointers of a strip whose rows lie `ld` floats apart from `first` (rows past the
/// strip's end are never written: the tile takes its row count).
pub(crate) fn strided_rows(first: *mut f32, ld: usize) -> [*mut f32; MR] {
    std::array::from_fn(|r| first.wrapping_add(r * ld))
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use super::{MR, PANEL};
    use std::arch::x86_64::*;

    /// The register tile for `rows` (1 to [`MR`]) rows of a strip.
    ///
    /// # Safety
    /// As [`tile`].
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn tile_dispatch(
        rows: usize,
        xs: &[f32],
        ws: &[f32],
        kc: usize,
        y: [*mut f32; MR],
        cols: usize,
        add: bool,
    ) {
        // SAFETY: the caller's contract is the tile's, for these `R`.
        unsafe {
            match rows {
                6 => tile::<6>(xs, ws, kc, y, cols, add),
                5 => tile::<5>(xs, ws, kc, y, cols, add),
                4 => tile::<4>(xs, ws, kc, y, cols, add),
                3 => tile::<3>(xs, ws, kc, y, cols, add),
                2 => tile::<2>(xs, ws, kc, y, cols, add),
                1 => tile::<1>(xs, ws, kc, y, cols, add),
                _ => unreachable!("a strip has 1 to {MR} rows"),
            }
        }
    }

    /// `y[r][c] (+)= sum over the block's k of x[r][k] * w[c][k]` for the `R` rows of one strip
    /// and the first `cols` columns of one panel, each sum from zero by one `vfmadd231ps` per
    /// k in order (gemm's microkernels sum so), then stored, or with `add` added to `y`.
    ///
    /// # Safety
    /// The CPU must have AVX-512F; `xs` holds `kc * MR` floats (k-major, [`MR`] rows per k),
    /// `ws` `kc * PANEL`, and `y[r]` for each of the first `R` rows points at that row's
    /// first column of the output block, which may be read and written for `cols` (at most
    /// [`PANEL`]) columns (read only with `add`, after a store).
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const R: usize>(xs: &[f32], ws: &[f32], kc: usize, y: [*mut f32; MR], cols: usize, add: bool) {
        debug_assert!(xs.len() >= kc * MR && ws.len() >= kc * PANEL && cols <= PANEL);
        let mut acc = [[_mm512_setzero_ps(); 4]; R];
        let (xs, ws) = (xs.as_ptr(), ws.as_ptr());
        for p in 0..kc {
            let mut wv = [_mm512_setzero_ps(); 4];
            for (v, w) in wv.iter_mut().enumerate() {
                // SAFETY: k-step `p` of the panel block is `PANEL` floats from `p * PANEL`.
                *w = unsafe { _mm512_loadu_ps(ws.add(p * PANEL + v * 16)) };
            }
            for (r, row) in acc.iter_mut().enumerate() {
                // SAFETY: row `r` at k-step `p` is at `p * MR + r`, inside the strip block.
                let xb = _mm512_set1_ps(unsafe { *xs.add(p * MR + r) });
                for (a, w) in row.iter_mut().zip(&wv) {
                    *a = _mm512_fmadd_ps(xb, *w, *a);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (v, a) in row.iter().enumerate() {
                let c0 = v * 16;
                if c0 >= cols {
                    break;
                }
                let mask: __mmask16 = if c0 + 16 <= cols { !0 } else { (1u16 << (cols - c0)) - 1 };
                // SAFETY: row `r < R` and the `mask`ed columns from `c0` are inside the row
                // block the caller lets this tile write (and, with `add`, read).
                unsafe {
                    let at = y[r].add(c0);
                    let value = if add {
                        _mm512_add_ps(_mm512_maskz_loadu_ps(mask, at), *a)
                    } else {
                        *a
                    };
                    _mm512_mask_storeu_ps(at, mask, value);
                }
            }
        }
    }
}
