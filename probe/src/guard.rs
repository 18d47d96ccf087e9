//! Third-party code that asserts instead of returning an error (`tokenizers` on some
//! malformed files) must not reach the user as a panic.

use anyhow::{anyhow, Result};

/// Runs `f`, turning a panic inside it into an error that says `what` failed. The panic
/// message is not printed: the error line is the whole report.
pub fn without_panics<T>(what: &str, f: impl FnOnce() -> T) -> Result<T> {
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(quiet);
    outcome.map_err(|_| anyhow!("{what}"))
}
