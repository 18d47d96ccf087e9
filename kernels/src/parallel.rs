//! Work spread over the kernels' own thread pool, built to be a good tenant of a shared
//! machine.
//!
//! Candle's barrier pool (which these loops used before) makes the caller wait at every op
//! until each worker has checked in, and its idle workers spin before they park. That is fast
//! on cores nobody else wants; beside another job holding a core, every op waits for a
//! descheduled worker to get a time slice, and the spinning takes turns from the job that
//! holds the core. Here the caller takes part in its own work, chunks go to whichever
//! thread claims them first, and the caller waits only for chunks another thread has claimed:
//! a worker that is not running when the work arrives simply finds none left. Idle workers
//! poll briefly, then yield their turn, then park.
//!
//! Which thread runs a chunk never changes what the chunk computes, so results are the same
//! bits whoever runs them, and the same as a single thread's.

use std::any::Any;
use std::cell::Cell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// Pause instructions a waiting thread polls through before it starts yielding: a few
/// microseconds, the order of the gap between two small ops of one forward pass.
const POLL_ROUNDS: u32 = 256;

/// How long a waiting thread keeps yielding its turn (polling between turns) before it
/// parks. Yielding keeps the hand-off between back-to-back ops fast on an idle core and
/// hands the core over to whoever else wants it; parking costs a wake-up on the next op.
const YIELD_FOR: Duration = Duration::from_micros(200);

/// The threads this pool computes with, the caller's included: the thread count candle
/// uses (`RAYON_NUM_THREADS`, else candle's default), so that work split by thread count
/// splits as it does in candle's ops.
pub fn threads() -> usize {
    candle_core::utils::get_num_threads().max(1)
}

/// `f(0)`, ..., `f(count - 1)` on the pool; the results come back in index order.
pub fn in_parallel<T: Send>(count: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let results: Vec<Mutex<Option<T>>> = (0..count).map(|_| Mutex::new(None)).collect();
    for_each(count, |c| {
        let value = f(c);
        *results[c].lock().unwrap_or_else(PoisonError::into_inner) = Some(value);
    });
    results
        .into_iter()
        .map(|r| {
            r.into_inner()
                .unwrap_or_else(PoisonError::into_inner)
                .expect("every chunk ran")
        })
        .collect()
}

/// `f(0)`, ..., `f(count - 1)`, each exactly once, on the calling thread and whichever pool
/// workers join in. Runs them all on the calling thread when called from inside a chunk, or
/// while another thread's work holds the pool. A panic in `f` is raised again here once
/// every claimed chunk has finished.
pub fn for_each<F: Fn(usize) + Sync>(count: usize, f: F) {
    let workers = workers();
    if count <= 1 || workers.is_empty() || INSIDE.get() {
        return run_here(count, f);
    }
    let job = Arc::new(Job {
        call: call::<F>,
        data: &f as *const F as *const (),
        count,
        next: AtomicUsize::new(0),
        finished: AtomicUsize::new(0),
        caller: std::thread::current(),
        panic: Mutex::new(None),
    });
    {
        // Never block on the slot: a worker holding it for a moment, or another thread's
        // work in progress, means this work runs here, which gives the same results.
        let Ok(mut slot) = SLOT.current.try_lock() else {
            return run_here(count, f);
        };
        if slot.as_ref().is_some_and(|j| !j.is_finished()) {
            drop(slot);
            return run_here(count, f);
        }
        *slot = Some(Arc::clone(&job));
    }
    SLOT.generation.fetch_add(1, Ordering::Release);
    for worker in workers.iter().take(count - 1) {
        worker.unpark();
    }
    {
        let _inside = Inside::enter();
        job.work();
    }
    wait_until(|| job.is_finished());
    // The finished job stays in the slot (a late worker finds nothing left to claim in it);
    // the next call replaces it.
    let payload = job.panic.lock().unwrap_or_else(PoisonError::into_inner).take();
    if let Some(payload) = payload {
        resume_unwind(payload);
    }
}

/// Every chunk on the calling thread, with the pool's contract: a panic is raised again once
/// the other chunks have run (a caller's cleanup may count on every chunk having run).
fn run_here<F: Fn(usize)>(count: usize, f: F) {
    let mut panic = None;
    for i in 0..count {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| f(i))) {
            panic.get_or_insert(payload);
        }
    }
    if let Some(payload) = panic {
        resume_unwind(payload);
    }
}

/// One call's chunks: claimed by index through `next`, counted through `finished`.
struct Job {
    /// Runs chunk `i` of the closure behind `data`.
    call: unsafe fn(*const (), usize),
    /// The caller's closure, borrowed from its stack frame.
    data: *const (),
    count: usize,
    next: AtomicUsize,
    finished: AtomicUsize,
    /// Unparked by whoever finishes the last chunk.
    caller: Thread,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

// SAFETY: `data` points to a `Sync` closure (`for_each` takes `impl Fn(usize) + Sync`), and
// `work` dereferences it only for a claimed chunk, while the caller is still waiting.
unsafe impl Send for Job {}
// SAFETY: as for Send; every other field is itself Sync.
unsafe impl Sync for Job {}

/// # Safety
/// `data` must point to a live `F`.
unsafe fn call<F: Fn(usize)>(data: *const (), i: usize) {
    // SAFETY: the caller's contract.
    unsafe { (*(data as *const F))(i) }
}

impl Job {
    /// Claims and runs chunks until none is left to claim.
    fn work(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.count {
                return;
            }
            // SAFETY: chunk i < count is claimed and not finished, so the caller is still in
            // `for_each` (it returns only once `finished == count`) and `data` is alive.
            let outcome = catch_unwind(AssertUnwindSafe(|| unsafe { (self.call)(self.data, i) }));
            if let Err(payload) = outcome {
                self.panic
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get_or_insert(payload);
            }
            // AcqRel: the chunk's writes reach the caller, which loads `finished` with Acquire.
            if self.finished.fetch_add(1, Ordering::AcqRel) + 1 == self.count {
                self.caller.unpark();
            }
        }
    }

    fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire) == self.count
    }
}

/// Where a caller hands its job to the workers.
struct Slot {
    /// Bumped for every job put in `current`; idle workers watch it.
    generation: AtomicUsize,
    current: Mutex<Option<Arc<Job>>>,
}

static SLOT: Slot = Slot {
    generation: AtomicUsize::new(0),
    current: Mutex::new(None),
};

/// The pool's workers, started on first use: one fewer than [`threads`], the caller being
/// the other.
fn workers() -> &'static [Thread] {
    static WORKERS: OnceLock<Vec<Thread>> = OnceLock::new();
    WORKERS.get_or_init(|| {
        (1..threads())
            .filter_map(|i| {
                std::thread::Builder::new()
                    .name(format!("kernels-{i}"))
                    .spawn(worker)
                    .ok()
                    .map(|handle| handle.thread().clone())
            })
            .collect()
    })
}

fn worker() {
    INSIDE.set(true);
    let mut seen = 0;
    loop {
        wait_until(|| SLOT.generation.load(Ordering::Acquire) != seen);
        seen = SLOT.generation.load(Ordering::Acquire);
        let job = SLOT.current.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(job) = job {
            job.work();
        }
    }
}

/// Waits for `ready`: polls, then yields, then parks (an unpark from the thread that makes
/// it ready ends the park; a stale one only costs another look).
fn wait_until(ready: impl Fn() -> bool) {
    for _ in 0..POLL_ROUNDS {
        if ready() {
            return;
        }
        std::hint::spin_loop();
    }
    let start = Instant::now();
    while !ready() {
        if start.elapsed() < YIELD_FOR {
            std::thread::yield_now();
        } else {
            std::thread::park();
        }
    }
}

thread_local! {
    /// Set on pool workers, and on a caller while it runs chunks: work started from inside
    /// a chunk runs inline.
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

struct Inside;

impl Inside {
    fn enter() -> Self {
        INSIDE.set(true);
        Inside
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        INSIDE.set(false);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_index_runs_once_in_order() {
        for count in [0, 1, 2, 3, 17, 1000] {
            assert_eq!(
                in_parallel(count, |i| i * 3),
                (0..count).map(|i| i * 3).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn nested_work_runs_inline() {
        let outer = in_parallel(5, |i| in_parallel(4, move |j| i * 10 + j).iter().sum::<usize>());
        assert_eq!(outer, (0..5).map(|i| 40 * i + 6).collect::<Vec<_>>());
    }

    #[test]
    fn concurrent_callers_each_get_their_results() {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                std::thread::spawn(move || {
                    (0..200).all(|round| {
                        in_parallel(9, |i| t * 1000 + round + i)
                            == (0..9).map(|i| t * 1000 + round + i).collect::<Vec<_>>()
                    })
                })
            })
            .collect();
        assert!(handles.into_iter().all(|h| h.join().unwrap()));
    }

    #[test]
    fn a_panic_reaches_the_caller_after_the_other_chunks() {
        let ran = AtomicUsize::new(0);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            for_each(8, |i| {
                ran.fetch_add(1, Ordering::Relaxed);
                assert!(i != 5, "chunk 5 fails");
            })
        }));
        assert!(outcome.is_err());
        assert_eq!(ran.load(Ordering::Relaxed), 8);
        assert_eq!(in_parallel(3, |i| i), vec![0, 1, 2], "the pool still works");
    }
}
