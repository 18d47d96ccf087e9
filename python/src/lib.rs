//! `alens._alens`: the Rust half of the `alens` Python package. Thin `#[pyclass]` wrappers over
//! `probe` and `steer` (the Python half, `python/alens/__init__.py`, gives them their
//! TransformerLens-shaped faces). Everything heavy runs with the GIL released; every error
//! reaches Python as an exception carrying the CLI's one-line message, and no panic crosses
//! the boundary. The module sets no process-wide state (allocator, environment, signals, panic
//! hook): it is a guest in the user's interpreter.

mod errors;
mod hooks;
mod inputs;
mod model;
mod study;
mod vectors;

use pyo3::prelude::*;

#[pymodule]
fn _alens(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // Files the package writes are recorded in the same ledger the CLI keeps (src/process.rs),
    // so `alens` later recognises them as its own outputs.
    // Its rare warnings (an unwritable or corrupt ledger) go to stderr, as the CLI's do.
    let ledger = probe::ledger::ProcessOutputs::new(probe::home::cache_dir().join("written.tsv"), |line| {
        eprintln!("alens warning: {line}")
    });
    probe::io::install_host(Box::new(ledger));
    m.add_class::<model::Model>()?;
    m.add_class::<vectors::ControlVectors>()?;
    m.add_function(wrap_pyfunction!(study::lat, m)?)?;
    m.add_function(wrap_pyfunction!(study::sweep, m)?)?;
    m.add_function(wrap_pyfunction!(study::eval, m)?)?;
    m.add_function(wrap_pyfunction!(study::patch, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
