//! Every command checks its output paths against its inputs before any work, through this
//! one function: nothing a user points at is overwritten by mistake.

use anyhow::Result;
use std::path::{Path, PathBuf};

/// `files`: the output files given (absent ones skipped); `inputs`: every file or directory
/// the command reads.
pub fn check(files: &[Option<&PathBuf>], inputs: &[PathBuf]) -> Result<()> {
    let outputs: Vec<&Path> = files.iter().flatten().map(|p| p.as_path()).collect();
    let inputs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
    probe::io::check_outputs(&outputs, &inputs)
}

/// The same for an output directory.
pub fn check_dir(dir: &Path, inputs: &[PathBuf]) -> Result<()> {
    let inputs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
    probe::io::check_output_dir(dir, &inputs)
}

/// Where an output of this run comes from: the alens version, the command line, `seed`, and
/// the model's identity.
pub fn provenance(ckpt: &probe::Checkpoint, seed: Option<u64>) -> Result<probe::provenance::Provenance> {
    probe::provenance::Provenance::of(env!("CARGO_PKG_VERSION"), ckpt, seed)
}

/// A vector file and its sidecar, as inputs.
pub fn vector_inputs(path: &Path) -> [PathBuf; 2] {
    [path.to_path_buf(), steer::vectors::sidecar_path(path)]
}
