//! `--model DIR`, defaulting to the shipped mini-aligner.

use anyhow::Result;
use probe::Checkpoint;
use std::path::{Path, PathBuf};

/// Where the mini-aligner ships inside the repository.
pub const MINI_ALIGNER: &str = "notebooks-data/mini-aligner";

/// The default model: `$ALENS_MODEL`, else `notebooks-data/mini-aligner` under the current
/// directory, else the one in the source tree this binary was built from.
pub fn default_model_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ALENS_MODEL") {
        return PathBuf::from(dir);
    }
    shipped(MINI_ALIGNER)
}

/// A file shipped in the repository: under the current directory if there, else in the
/// source tree this binary was built from.
pub fn shipped(relative: &str) -> PathBuf {
    let local = PathBuf::from(relative);
    if local.exists() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

pub fn load(model: &Option<PathBuf>) -> Result<Checkpoint> {
    let dir = model.clone().unwrap_or_else(default_model_dir);
    Checkpoint::load(&dir)
}
