//! glibc's allocator hands big freed blocks back to the kernel (munmap, heap trimming), so
//! every training step and every forward pass page-faults and zeroes the same few MB again:
//! 15 of 31 s were system time in a 40-step `train-mini`. Keeping freed memory in the
//! process cut that run to 21 s (1.9 s system) with identical weights. Other allocators need
//! nothing. `alens` calls this first thing; the benches do too, so they time what it runs.

/// Blocks up to 32 MiB (glibc's ceiling for the threshold: a larger value is refused and
/// leaves the default, 128 KiB rising with use) come from the heap, and the heap is never
/// trimmed. Call it before other threads exist. Returns whether glibc took both settings.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn keep_freed_memory() -> bool {
    // SAFETY: mallopt only sets allocator parameters.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) == 1 && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn keep_freed_memory() -> bool {
    true
}

#[cfg(test)]
mod tests {
    #[test]
    fn glibc_takes_the_settings() {
        assert!(super::keep_freed_memory());
    }
}
