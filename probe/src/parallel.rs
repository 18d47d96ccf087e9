//! Work spread over candle's CPU thread pool, for loops outside candle's own ops.

/// Sets `RAYON_NUM_THREADS` to candle's own default when it is unset. candle reads the
/// thread count at every matmul, and without the variable that means parsing
/// `/proc/cpuinfo` each time: 1.4% of a training run's samples in perf. The same count, so
/// the same results. Call it before other threads exist (it writes the environment).
pub fn fix_thread_count() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let threads = candle_core::utils::get_num_threads();
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
}

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
    results.into_iter().map(|r| r.into_inner().unwrap_or_else(|e| e.into_inner()).expect("every chunk ran")).collect()
}

/// An output buffer's address shared with the pool's threads, each of which writes its own
/// disjoint part (rows or column blocks); the caller keeps the buffer alive across the call.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);
// SAFETY: the threads write disjoint parts of the buffer.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}
