//! Third-party code that asserts instead of returning an error (`tokenizers` on some
//! malformed files) must not reach the user as a panic.

use anyhow::{anyhow, Result};
use std::cell::Cell;

thread_local! {
    static GUARDED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, turning a panic inside it into an error that says `what` failed. The panic hook
/// is the host's and is left alone; a host that prints panics can ask [`inside_guard`] and
/// stay quiet for this one, so the error line is the whole report.
pub fn without_panics<T>(what: &str, f: impl FnOnce() -> T) -> Result<T> {
    let outer = GUARDED.with(|g| g.replace(true));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(outer));
    outcome.map_err(|_| anyhow!("{what}"))
}

/// Whether this thread is inside [`without_panics`], where a panic becomes an error.
pub fn inside_guard() -> bool {
    GUARDED.with(Cell::get)
}
