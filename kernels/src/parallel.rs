//! Work spread over candle's CPU thread pool, for loops outside candle's own ops.

/// `f(0)`, ..., `f(count - 1)` on candle's CPU thread pool. Not rayon: candle's idle workers
/// spin for a while after every op, so a second pool's threads would share the cores with
/// spinning ones (perf showed a third of a bf16 capture in candle's barrier wait).
/// Results come back in index order.
pub fn in_parallel<T: Send>(count: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let results: Vec<std::sync::Mutex<Option<T>>> = (0..count).map(|_| std::sync::Mutex::new(None)).collect();
    candle_core::utils::barrier_pool().execute_chunked(count, |range| {
        for c in range {
            let value = f(c);
            *results[c].lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
        }
    });
    results
        .into_iter()
        .map(|r| {
            r.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .expect("every chunk ran")
        })
        .collect()
}

/// An output buffer's address shared with the pool's threads, each of which writes its own
/// disjoint part (rows or column blocks); the caller keeps the buffer alive across the call.
#[derive(Clone, Copy)]
pub struct SendPtr(pub *mut f32);
// SAFETY: the threads write disjoint parts of the buffer, which outlives the pool call.
unsafe impl Send for SendPtr {}
// SAFETY: as for Send: shared, the address is only used for disjoint writes.
unsafe impl Sync for SendPtr {}
impl SendPtr {
    pub fn get(self) -> *mut f32 {
        self.0
    }
}
