//! `x @ W^T` for bf16-rounded activations and a bf16 weight on Intel AMX tiles (Sapphire
//! Rapids and later): `tdpbf16ps` multiplies a 16 x 32 bf16 tile by a 32 x 16 one into 16 x 16
//! f32 accumulators in one instruction, about 8x the rate of AVX512-BF16's `vdpbf16ps` and
//! what torch's oneDNN uses for bf16 on these CPUs. The arithmetic is `Native`'s: bf16
//! products summed in f32.
//!
//! Layout: the weight, as stored (`[n, k]`, k contiguous), is the A operand, 16 weight rows x
//! 32 k per tile; the activations, repacked by `pack_row_pairs` (16 rows x one k-pair per 64
//! bytes), are the B operand; each accumulator tile is a 16 x 16 block of `y^T`, transposed on
//! the way out. Nothing is repacked at load, so the weight stays the checkpoint's tensor.
//!
//! Rust has no stable AMX intrinsics, so the instructions are inline assembly. Linux hands
//! out the tile registers only after `arch_prctl(ARCH_REQ_XCOMP_PERM)`; [`available`] asks
//! once and says no (and the AVX512-BF16 kernels run) when the CPU or kernel refuses.

static GRANTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Asks Linux for the tile registers when the CPU has AMX-BF16 and this build has the `amx`
/// feature; returns whether they were granted. Asking changes the whole process (every
/// thread's signal frames grow), so only a host calls it, once, before its other threads
/// start: a process whose threads already run on signal stacks sized without AMX state may be
/// refused (then the AVX512-BF16 kernels run).
pub fn request() -> bool {
    let granted = cfg!(feature = "amx") && imp::cpu_has_amx_bf16_and_permission();
    GRANTED.store(granted, std::sync::atomic::Ordering::Relaxed);
    granted
}

/// Whether AMX-BF16 can be used in this process: the host asked ([`request`]) and was granted.
pub fn available() -> bool {
    GRANTED.load(std::sync::atomic::Ordering::Relaxed)
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
mod imp {
    pub fn cpu_has_amx_bf16_and_permission() -> bool {
        false
    }

    /// Never called: [`super::available`] is false off Linux on x86_64.
    ///
    /// # Safety
    /// None needed; it panics.
    pub unsafe fn chunk(_: &[u16], _: usize, _: usize, _: &[half::bf16], _: usize, _: &mut [f32]) {
        unreachable!("AMX is only used on Linux on x86_64")
    }
}

pub use imp::chunk;

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod imp {
    use half::bf16;
    use std::arch::asm;

    pub fn cpu_has_amx_bf16_and_permission() -> bool {
        // CPUID.(EAX=7, ECX=0):EDX bit 22 = AMX-BF16, bit 24 = AMX-TILE.
        let leaf = std::arch::x86_64::__cpuid_count(7, 0);
        if leaf.edx & (1 << 22) == 0 || leaf.edx & (1 << 24) == 0 {
            return false;
        }
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        // SAFETY: arch_prctl(ARCH_REQ_XCOMP_PERM) takes two integers and touches no memory.
        unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
    }

    /// Palette 1 with every tile 16 rows x 64 bytes: tmm0-3 accumulators, tmm4-5 weight
    /// tiles, tmm6-7 activation tiles.
    #[repr(C, align(64))]
    struct TileConfig {
        palette: u8,
        start_row: u8,
        reserved: [u8; 14],
        bytes_per_row: [u16; 16],
        rows: [u8; 16],
    }

    const CONFIG: TileConfig = TileConfig {
        palette: 1,
        start_row: 0,
        reserved: [0; 14],
        bytes_per_row: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
        rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
    };

    /// `out` `[m, nw]` = `x @ w^T` for a chunk `w` `[nw, k]` with `nw` a multiple of 32, `x`
    /// packed by `pack_row_pairs` (`[m/16][k/2][16][2]`), `k` a multiple of 32.
    ///
    /// # Safety
    /// [`super::available`] must be true, and the slices sized as above.
    pub unsafe fn chunk(xp: &[u16], m: usize, k: usize, w: &[bf16], nw: usize, out: &mut [f32]) {
        debug_assert!(nw.is_multiple_of(32) && k.is_multiple_of(32));
        // SAFETY: the caller guarantees the tiles were granted and the slices are sized as
        // documented; every tile load and store below stays inside them.
        unsafe { chunk_on_tiles(xp, m, k, w, nw, out) }
    }

    thread_local! {
        /// Whether this thread has loaded the tile configuration: once per thread, as candle
        /// does, since every chunk uses the same palette (`tilerelease` would drop it).
        static CONFIGURED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// # Safety
    /// As [`chunk`].
    unsafe fn chunk_on_tiles(xp: &[u16], m: usize, k: usize, w: &[bf16], nw: usize, out: &mut [f32]) {
        let tiles = m.div_ceil(16);
        let kp = k / 2;
        let w_stride = k * 2;
        let mut c = [[0f32; 256]; 4];
        if !CONFIGURED.with(|c| c.replace(true)) {
            // SAFETY: CONFIG is a valid 64-byte palette-1 configuration; the tiles were granted.
            unsafe { asm!("ldtilecfg [{}]", in(reg) &CONFIG as *const TileConfig, options(nostack)) };
        }
        // SAFETY: the caller's contract (tiles granted, `xp` packed for `m` x `k`, `w` `[nw, k]`,
        // `out` `[m, nw]`): every pointer below stays inside those slices.
        unsafe {
            for j in (0..nw).step_by(32) {
                let mut t = 0;
                while t < tiles {
                    let both = t + 1 < tiles;
                    asm!(
                        "tilezero tmm0",
                        "tilezero tmm1",
                        "tilezero tmm2",
                        "tilezero tmm3",
                        options(nostack, nomem)
                    );
                    for kb in 0..k / 32 {
                        let w0 = w.as_ptr().add(j * k + kb * 32);
                        let w1 = w.as_ptr().add((j + 16) * k + kb * 32);
                        let x0 = xp.as_ptr().add((t * kp + kb * 16) * 32);
                        asm!(
                            "tileloadd tmm4, [{w0} + {ws}*1]",
                            "tileloadd tmm5, [{w1} + {ws}*1]",
                            "tileloadd tmm6, [{x0} + {xs}*1]",
                            "tdpbf16ps tmm0, tmm4, tmm6",
                            "tdpbf16ps tmm1, tmm5, tmm6",
                            w0 = in(reg) w0, w1 = in(reg) w1, x0 = in(reg) x0, ws = in(reg) w_stride, xs = in(reg) 64usize,
                            options(nostack, readonly),
                        );
                        if both {
                            let x1 = xp.as_ptr().add(((t + 1) * kp + kb * 16) * 32);
                            asm!(
                                "tileloadd tmm7, [{x1} + {xs}*1]",
                                "tdpbf16ps tmm2, tmm4, tmm7",
                                "tdpbf16ps tmm3, tmm5, tmm7",
                                x1 = in(reg) x1, xs = in(reg) 64usize,
                                options(nostack, readonly),
                            );
                        }
                    }
                    asm!(
                        "tilestored [{c0} + {s}*1], tmm0",
                        "tilestored [{c1} + {s}*1], tmm1",
                        "tilestored [{c2} + {s}*1], tmm2",
                        "tilestored [{c3} + {s}*1], tmm3",
                        c0 = in(reg) c[0].as_mut_ptr(), c1 = in(reg) c[1].as_mut_ptr(),
                        c2 = in(reg) c[2].as_mut_ptr(), c3 = in(reg) c[3].as_mut_ptr(), s = in(reg) 64usize,
                        options(nostack),
                    );
                    // Tile (a, b): weight rows j + 16a.., activation rows 16(t + b)..; its entry
                    // [r][l] is y[16(t + b) + l][j + 16a + r].
                    for (index, tile) in c.iter().enumerate().take(if both { 4 } else { 2 }) {
                        let (a, b) = (index % 2, index / 2);
                        for l in 0..16 {
                            let row = 16 * (t + b) + l;
                            if row >= m {
                                break;
                            }
                            let dst = &mut out[row * nw + j + 16 * a..row * nw + j + 16 * a + 16];
                            for (r, value) in dst.iter_mut().enumerate() {
                                *value = tile[r * 16 + l];
                            }
                        }
                    }
                    t += if both { 2 } else { 1 };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reports_whether_amx_is_granted() {
        eprintln!("AMX-BF16 granted: {}", super::available());
    }
}
