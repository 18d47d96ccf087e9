//! Rust errors to the Python exception a user expects, with the CLI's one-line message
//! (anyhow's `{:#}`: the context chain joined by ": ").

use pyo3::exceptions::{PyFileExistsError, PyFileNotFoundError, PyRuntimeError, PyValueError};
use pyo3::PyErr;

/// How an error reaches Python.
pub enum Kind {
    /// The arguments were wrong (a name, a shape, a range): `ValueError`.
    Value,
    /// The work itself failed: `RuntimeError`, or `FileNotFoundError` when a file is missing.
    Runtime,
}

/// A missing file or model anywhere in the chain becomes `FileNotFoundError`.
fn is_not_found(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound)
            || cause.to_string().contains("does not exist")
            || cause.to_string().contains("is not fetched yet")
    })
}

pub fn to_py(err: anyhow::Error, kind: Kind) -> PyErr {
    let message = format!("{err:#}");
    if is_not_found(&err) {
        return PyFileNotFoundError::new_err(message);
    }
    match kind {
        Kind::Value => PyValueError::new_err(message),
        Kind::Runtime => PyRuntimeError::new_err(message),
    }
}

/// A bad argument.
pub fn value(err: anyhow::Error) -> PyErr {
    to_py(err, Kind::Value)
}

/// An output path that would destroy something: `FileExistsError` when a file alens did not
/// write stands there, else `ValueError` (a directory, a device, a dangling link).
pub fn exists(err: anyhow::Error) -> PyErr {
    if format!("{err:#}").contains("alens did not write it") {
        PyFileExistsError::new_err(format!("{err:#}"))
    } else {
        value(err)
    }
}

/// A failed computation.
pub fn runtime(err: anyhow::Error) -> PyErr {
    to_py(err, Kind::Runtime)
}

/// Runs `f`, turning a panic in it (third-party code that asserts) into an error instead of
/// letting it unwind into Python.
pub fn guarded<T>(what: &str, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    probe::guard::without_panics(what, f).and_then(|r| r)
}
