//! What `alens` sets up for its whole process, once, in this order, before any other thread
//! exists: the allocator's settings, the thread count, the AMX tiles, the panic hook, the
//! record of files alens writes, and the signal handler that removes temporaries. The library
//! crates do none of this to their host; they receive what they need.

use probe::ledger::ProcessOutputs;

/// Sets everything up; call it first thing in `main` (parsing the command line may come
/// first: it starts no thread). `exit_on_signal` installs the handler that removes temporaries
/// and exits on Ctrl-C or SIGTERM; a command that handles those signals itself passes false.
pub fn set_up(exit_on_signal: bool) {
    keep_freed_memory();
    fix_thread_count();
    // Ask for the AMX tile registers before any thread exists (the Ctrl-C handler's is the
    // first): Linux refuses them to a process whose threads have signal stacks sized without
    // them, and bf16 checkpoints then run on the AVX512-BF16 kernels.
    let _ = kernels::bf16::request_amx();
    quiet_guarded_panics();
    write_past_file_size_limit_fails();
    let outputs: &'static ProcessOutputs = Box::leak(Box::new(ProcessOutputs::new(
        probe::home::cache_dir().join("written.tsv"),
        |line| eprintln!("warning: {line}"),
    )));
    probe::io::install_host(Box::new(SharedOutputs(outputs)));
    if !exit_on_signal {
        return;
    }
    // Ctrl-C or SIGTERM mid-write: no temporary file or half-built directory stays behind.
    let _ = ctrlc::set_handler(move || {
        INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
        // An output halfway into place is let finish first; no commit starts after this.
        let (_commits, finished) = probe::io::commit_lock_after_any();
        // The command's thread runs on meanwhile: what it creates in the moment after the
        // first pass (a figure's temporary in a staging directory) goes in the second.
        outputs.remove_temporaries();
        std::thread::sleep(std::time::Duration::from_millis(20));
        outputs.remove_temporaries();
        if finished {
            eprintln!(
                "error: interrupted as an output was moved into place (that output is whole); temporary files removed"
            );
            std::process::exit(130);
        }
        let note = INTERRUPT_NOTE
            .lock()
            .map(|note| {
                if note.is_empty() {
                    String::new()
                } else {
                    format!("; {note}")
                }
            })
            .unwrap_or_default();
        eprintln!("error: interrupted; temporary files removed, outputs left as they were{note}");
        std::process::exit(130);
    });
}

static INTERRUPT_NOTE: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Called as the command ends: while a signal is being handled, the handler ends the process
/// (removing the temporaries, with its own line), not the command's error from files it
/// found removed.
pub fn wait_if_interrupted() {
    while INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
        std::thread::park();
    }
}

/// What the line printed on Ctrl-C or SIGTERM adds from now on (empty: nothing): what the
/// interruption leaves on purpose, such as a checkpoint to resume from.
pub fn on_interrupt_say(note: &str) {
    if let Ok(mut held) = INTERRUPT_NOTE.lock() {
        *held = note.to_string();
    }
}

/// A write past the file-size limit (`ulimit -f`) raises SIGXFSZ, whose default ends the
/// process on the spot, leaving its temporary and saying nothing. Ignored, the write fails
/// with EFBIG instead: one error line, and the temporary goes with its guard.
fn write_past_file_size_limit_fails() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler code.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// glibc's allocator hands big freed blocks back to the kernel (munmap, heap trimming), so
/// every training step and every forward pass page-faults and zeroes the same few MB again:
/// most of a `train-mini` run was system time (docs/performance.md). Blocks up to 32 MiB
/// (glibc's ceiling for the threshold: a larger value is refused and leaves the default)
/// come from the heap, and the heap is never trimmed. Other allocators need nothing.
/// Returns whether glibc took both settings.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn keep_freed_memory() -> bool {
    // SAFETY: mallopt only sets allocator parameters; no other thread exists yet.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) == 1 && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn keep_freed_memory() -> bool {
    true
}

/// Sets `RAYON_NUM_THREADS` when it is unset: candle reads the thread count at every matmul,
/// and without the variable that means parsing `/proc/cpuinfo` each time (measurable in a
/// training run's profile). The count is what this process may use, not what the node has:
/// candle's default, capped by the CPUs the affinity mask and cgroup quota leave it (as
/// `nproc` sees them) and by a Slurm task's `SLURM_CPUS_PER_TASK`, so a task given K CPUs of a
/// big shared node runs K threads. Also sets `CANDLE_NUM_THREADS` to 1 when it is unset (see
/// below). It writes the environment, so no other thread may exist yet.
pub fn fix_thread_count() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() && !keeps_quantized(std::env::args_os()) {
        // candle's barrier pool makes the calling thread spin, without yielding, until every
        // worker has checked in after each op: beside another job holding a core, one op waits
        // for a descheduled worker's next turn, and a run slowed several-fold. With no workers
        // candle runs those ops (elementwise ones on large tensors) on the calling thread; the
        // matmuls and fused ops run on the kernels' own pool (`kernels::parallel`), sized below.
        // candle's quantized matmuls do run on the barrier pool, so a run that keeps quantized
        // weights keeps it.
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let available = std::thread::available_parallelism().map_or(usize::MAX, |n| n.get());
        let threads = thread_count(
            candle_core::utils::get_num_threads(),
            available,
            std::env::var("SLURM_CPUS_PER_TASK").ok().as_deref(),
        );
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
}

/// Whether the command line keeps a GGUF's quantized matrices (`--keep-quantized`).
fn keeps_quantized(mut args: impl Iterator<Item = std::ffi::OsString>) -> bool {
    args.any(|a| a == "--keep-quantized")
}

/// The smallest of candle's default, the CPUs available, and a valid `SLURM_CPUS_PER_TASK`;
/// at least 1.
fn thread_count(default: usize, available: usize, slurm_cpus_per_task: Option<&str>) -> usize {
    let slurm = slurm_cpus_per_task
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(usize::MAX);
    default.min(available).min(slurm).max(1)
}

/// Panics keep the default report, except inside `probe::guard::without_panics`, where a
/// third-party panic becomes the command's one error line.
fn quiet_guarded_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !probe::guard::inside_guard() {
            default(info);
        }
    }));
}

/// The process's one [`ProcessOutputs`], shared by the library (as its output host) and the
/// signal handler.
struct SharedOutputs(&'static ProcessOutputs);

impl probe::io::OutputHost for SharedOutputs {
    fn staging(&self, path: &std::path::Path) {
        self.0.staging(path)
    }
    fn unstaged(&self, path: &std::path::Path) {
        self.0.unstaged(path)
    }
    fn written(&self, path: &std::path::Path) {
        self.0.written(path)
    }
    fn written_by_alens(&self, path: &std::path::Path) -> bool {
        self.0.written_by_alens(path)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn glibc_takes_the_settings() {
        assert!(super::keep_freed_memory());
    }

    #[test]
    fn keeping_quantized_weights_is_seen_on_the_command_line() {
        let args = |line: &str| {
            line.split(' ')
                .map(std::ffi::OsString::from)
                .collect::<Vec<_>>()
                .into_iter()
        };
        assert!(super::keeps_quantized(args(
            "alens eval --model m.gguf --keep-quantized"
        )));
        assert!(!super::keeps_quantized(args("alens eval --model m.gguf")));
    }

    #[test]
    fn threads_follow_the_cpus_given() {
        use super::thread_count;
        assert_eq!(thread_count(64, 64, None), 64);
        assert_eq!(thread_count(64, 8, None), 8, "an affinity mask or cgroup quota of 8");
        assert_eq!(thread_count(64, 64, Some("4")), 4, "--cpus-per-task=4");
        assert_eq!(thread_count(64, 2, Some("4")), 2);
        assert_eq!(thread_count(64, 64, Some("zero")), 64);
        assert_eq!(thread_count(64, 64, Some("0")), 64);
        assert_eq!(thread_count(0, 0, None), 1);
    }
}
