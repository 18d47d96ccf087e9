//! The f32 register tile of the packed products: 6 rows of activations x 64 output columns
//! (four 16-lane vectors), one `vfmadd231ps` per row, vector and k, each output summed from
//! zero in k order and stored once or added to what an earlier depth block stored. The packed
//! f32 weights run on it, and bf16 panels widened to f32 for many rows.
//!
//! A depth block can also be run in pieces ([`Tile`]): the running sums are parked in a
//! scratch block between pieces and picked up again, which changes no bit (a parked f32 is
//! the f32 it was), so a piece of the weight panel small enough for L1 serves every strip
//! of rows before the next piece is read.

/// Rows of activations per register tile (a strip).
pub(crate) const MR: usize = 6;
/// Output columns per tile and per packed panel: four 16-lane vectors.
pub(crate) const PANEL: usize = 64;

/// Floats of the scratch block a strip's running sums are parked in between pieces.
pub(crate) const PARKED: usize = MR * PANEL;

/// Where a tile's sums come from and go to.
#[derive(Clone, Copy)]
pub(crate) enum Tile {
    /// From zero, stored to the rows (the first depth block, in one piece).
    Store([*mut f32; MR]),
    /// From zero, added to what the rows hold (a later depth block, in one piece).
    Add([*mut f32; MR]),
    /// A piece of a depth block: from zero or from the sums parked at `from`, and either
    /// parked at `park` ([`PARKED`] floats, all 64 columns) or, for the block's last piece,
    /// stored to or added to the rows as `then` says.
    Piece {
        from: Option<*const f32>,
        park: *mut f32,
        then: Option<Finish>,
    },
}

/// How a depth block's last piece leaves its sums.
#[derive(Clone, Copy)]
pub(crate) enum Finish {
    Store([*mut f32; MR]),
    Add([*mut f32; MR]),
}

/// k-steps of a weight panel run over every strip of a block at a time: 32 KiB of panel, so it
/// stays in L1 (48 KiB on the AVX-512 CPUs measured) while the strips pass over it. gemm's
/// depth blocks (384 to 512 steps, 96 to 128 KiB of panel) would be read from L2 per strip.
const PIECE: usize = 128;

/// The strips `strips` of packed activations (`strip(s)`: strip `s`, `k` steps of [`MR`]
/// rows, `rows(s)` of them real) times one f32 panel `ws` (`k` steps of [`PANEL`] columns,
/// the first `cols` real), summed in depth blocks of `depth` steps, each from zero and added
/// to the blocks before it (gemm's order, for `depth` = gemm's depth block). A depth block
/// runs in pieces of [`PIECE`] steps, outermost, every strip's sums parked in `parked`
/// between pieces. `out(s, r)` is where row `r` of strip `s` goes: its first column.
///
/// # Safety
/// The CPU must have AVX-512F; each `strip(s)` holds `k * MR` floats and `ws` `k * PANEL`;
/// `out(s, r)` for `r < rows(s)` points at `cols` floats that this call alone writes (and
/// reads back to add), distinct for each strip and row.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn panel_in_pieces<'a>(
    strips: std::ops::Range<usize>,
    strip: impl Fn(usize) -> &'a [f32],
    rows: impl Fn(usize) -> usize,
    ws: &[f32],
    k: usize,
    depth: usize,
    cols: usize,
    out: impl Fn(usize, usize) -> *mut f32,
    parked: &mut Vec<f32>,
) {
    if depth > PIECE {
        parked.resize(strips.len() * PARKED, 0.0);
    }
    // Each strip's row pointers, once (rows past the strip's real ones are never written).
    let targets: Vec<(usize, [*mut f32; MR])> = strips
        .clone()
        .map(|s| {
            let rows = rows(s);
            (
                rows,
                std::array::from_fn(|r| if r < rows { out(s, r) } else { std::ptr::null_mut() }),
            )
        })
        .collect();
    for k0 in (0..k).step_by(depth.max(1)) {
        let kc = depth.min(k - k0);
        for p0 in (k0..k0 + kc).step_by(PIECE) {
            let piece = PIECE.min(k0 + kc - p0);
            let wpiece = &ws[p0 * PANEL..(p0 + piece) * PANEL];
            for (i, (s, &(rows, ys))) in strips.clone().zip(&targets).enumerate() {
                let xs = &strip(s)[p0 * MR..(p0 + piece) * MR];
                let finish = if k0 == 0 { Finish::Store(ys) } else { Finish::Add(ys) };
                let tile = if piece == kc {
                    match finish {
                        Finish::Store(ys) => Tile::Store(ys),
                        Finish::Add(ys) => Tile::Add(ys),
                    }
                } else {
                    let park = parked[i * PARKED..(i + 1) * PARKED].as_mut_ptr();
                    Tile::Piece {
                        from: (p0 > k0).then_some(park.cast_const()),
                        park,
                        then: (p0 + piece == k0 + kc).then_some(finish),
                    }
                };
                // SAFETY: the caller's contract: `xs` is `piece` steps of strip `s` and
                // `wpiece` the same of the panel; the strip's rows go where `out` says; the
                // strip's parked block is its own, written by its previous piece.
                unsafe { x86::tile_dispatch(rows, xs, wpiece, piece, tile, cols) };
            }
        }
    }
}

/// Strips per block of rows: a block's packed activations and one weight panel stay in L2
/// together while the block's strips pass over the panel.
pub(crate) const STRIPS_PER_BLOCK: usize = 16;

/// Where a packed product's strips of rows go in its `[m, n]` output: packed row `i` is output
/// row `selected[i]` (row `i` with no selection).
pub(crate) struct OutputRows<'a> {
    y: crate::parallel::SendPtr,
    n: usize,
    selected: Option<&'a [usize]>,
    packed_rows: usize,
}

impl OutputRows<'_> {
    /// The real rows of strip `s` (1 to [`MR`]).
    pub(crate) fn rows(&self, s: usize) -> usize {
        (self.packed_rows - s * MR).min(MR)
    }

    /// Where row `r` of strip `s` goes, at panel `panel`'s first column (inside the output
    /// for `r < self.rows(s)` and `panel` one of the product's).
    pub(crate) fn at(&self, s: usize, r: usize, panel: usize) -> *mut f32 {
        let packed = s * MR + r;
        let row = self.selected.map_or(packed, |rows| rows[packed]);
        self.y.get().wrapping_add(row * self.n + panel * PANEL)
    }
}

/// The `[m, n]` output of a packed product of `packed_rows` rows (the rows `selected` of `m`,
/// strictly ascending; all `m` with `None`) and a weight in panels of [`PANEL`] columns.
/// `task(strips, panels, out)` runs on the pool for each block of [`STRIPS_PER_BLOCK`] strips
/// and each group of panels (enough tasks that the threads finish together, few enough that
/// each covers whole panels for a whole block); the rows not selected come out zero.
///
/// # Safety
/// `task` must write, through `out`, every real row of each of its strips, each of its panels'
/// columns (`PANEL`, fewer in a last panel past `n`), and nothing else.
pub(crate) unsafe fn packed_output(
    m: usize,
    n: usize,
    selected: Option<&[usize]>,
    task: impl Fn(std::ops::Range<usize>, std::ops::Range<usize>, &OutputRows) + Sync,
) -> Vec<f32> {
    if let Some(rows) = selected {
        assert!(
            rows.windows(2).all(|w| w[0] < w[1]) && rows.last().is_none_or(|&r| r < m),
            "packed matmul: the selected rows are not ascending rows of the {m}"
        );
    }
    let mut y = Vec::<f32>::with_capacity(m * n);
    let out = OutputRows {
        y: crate::parallel::SendPtr(y.as_mut_ptr()),
        n,
        selected,
        packed_rows: selected.map_or(m, <[usize]>::len),
    };
    let strips = out.packed_rows.div_ceil(MR);
    let blocks = strips.div_ceil(STRIPS_PER_BLOCK);
    let panels = n.div_ceil(PANEL);
    let panels_per_task = (panels * blocks / 16).clamp(1, 4);
    let groups = panels.div_ceil(panels_per_task);
    crate::parallel::in_parallel(blocks * groups, |t| {
        let (block, group) = (t / groups, t % groups);
        task(
            block * STRIPS_PER_BLOCK..((block + 1) * STRIPS_PER_BLOCK).min(strips),
            group * panels_per_task..((group + 1) * panels_per_task).min(panels),
            &out,
        );
    });
    if let Some(rows) = selected {
        let mut next = rows.iter().peekable();
        for row in 0..m {
            if next.next_if_eq(&&row).is_none() {
                // SAFETY: `y` has room for `m * n` floats, and `row < m`.
                unsafe { std::ptr::write_bytes(out.y.get().add(row * n), 0, n) };
            }
        }
    }
    // SAFETY: the tasks cover every block of strips and every panel, and wrote all real rows
    // and columns of them (the caller's contract); the rows not selected were zeroed above.
    unsafe { y.set_len(m * n) };
    y
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use super::{Finish, Tile, MR, PANEL};
    use std::arch::x86_64::*;

    /// The register tile for `rows` (1 to [`MR`]) rows of a strip.
    ///
    /// # Safety
    /// As [`tile`].
    pub unsafe fn tile_dispatch(rows: usize, xs: &[f32], ws: &[f32], kc: usize, out: Tile, cols: usize) {
        // SAFETY: the caller's contract is the tile's, for these `R`.
        unsafe {
            match rows {
                6 => tile::<6>(xs, ws, kc, out, cols),
                5 => tile::<5>(xs, ws, kc, out, cols),
                4 => tile::<4>(xs, ws, kc, out, cols),
                3 => tile::<3>(xs, ws, kc, out, cols),
                2 => tile::<2>(xs, ws, kc, out, cols),
                1 => tile::<1>(xs, ws, kc, out, cols),
                _ => unreachable!("a strip has 1 to {MR} rows"),
            }
        }
    }

    /// `sum over the block's k of x[r][k] * w[c][k]` for the `R` rows of one strip and the
    /// first `cols` columns of one panel, each sum by one `vfmadd231ps` per k in order (gemm's
    /// microkernels sum so), from zero or from parked sums, then left as `out` says.
    ///
    /// # Safety
    /// The CPU must have AVX-512F; `xs` holds `kc * MR` floats (k-major, [`MR`] rows per k),
    /// `ws` `kc * PANEL`; the row pointers of `out`, for each of the first `R` rows, point at
    /// that row's first column of the output block, which may be read and written for `cols`
    /// (at most [`PANEL`]) columns (read only to add, after a store); a parked block `from`
    /// or `park` holds [`super::PARKED`] floats (`from` written by an earlier piece for these
    /// rows), and `park` may be written.
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const R: usize>(xs: &[f32], ws: &[f32], kc: usize, out: Tile, cols: usize) {
        debug_assert!(xs.len() >= kc * MR && ws.len() >= kc * PANEL && cols <= PANEL);
        let mut acc = [[_mm512_setzero_ps(); 4]; R];
        if let Tile::Piece { from: Some(from), .. } = out {
            for (r, row) in acc.iter_mut().enumerate() {
                for (v, a) in row.iter_mut().enumerate() {
                    // SAFETY: row `r`, vector `v` of the parked block (`MR * PANEL` floats).
                    *a = unsafe { _mm512_loadu_ps(from.add(r * PANEL + v * 16)) };
                }
            }
        }
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
        let (rows, add) = match out {
            Tile::Store(rows)
            | Tile::Piece {
                then: Some(Finish::Store(rows)),
                ..
            } => (rows, false),
            Tile::Add(rows)
            | Tile::Piece {
                then: Some(Finish::Add(rows)),
                ..
            } => (rows, true),
            Tile::Piece { park, then: None, .. } => {
                for (r, row) in acc.iter().enumerate() {
                    for (v, a) in row.iter().enumerate() {
                        // SAFETY: row `r`, vector `v` of the parked block the caller lets
                        // this tile write.
                        unsafe { _mm512_storeu_ps(park.add(r * PANEL + v * 16), *a) };
                    }
                }
                return;
            }
        };
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
                    let at = rows[r].add(c0);
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
