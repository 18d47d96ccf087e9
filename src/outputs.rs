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

/// The same for an output directory, into which the command writes `files`.
pub fn check_dir(dir: &Path, inputs: &[PathBuf], files: &[&str]) -> Result<()> {
    let inputs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
    probe::io::check_output_dir(dir, &inputs, files)
}

/// Where an output of this run comes from: the alens version, the command line, `seed`, and
/// the model's identity.
pub fn provenance(ckpt: &probe::Checkpoint, seed: Option<u64>) -> Result<probe::provenance::Provenance> {
    probe::provenance::Provenance::of(env!("CARGO_PKG_VERSION"), ckpt, seed)
}

/// The journal of a resumable run whose outputs are `outputs` (beside the first one given),
/// keyed by `settings` (everything that determines the result: hashes of the data, model and
/// vectors, and the options). None when the run writes no file, so there is nothing to resume.
pub fn journal(outputs: &[Option<&PathBuf>], settings: serde_json::Value, resume: bool) -> Result<Option<steer::journal::Journal>> {
    let Some(first) = outputs.iter().flatten().next() else {
        anyhow::ensure!(!resume, "--resume continues a run that writes an output file: give one");
        return Ok(None);
    };
    let fingerprint = probe::provenance::sha256_hex(settings.to_string().as_bytes());
    Ok(Some(steer::journal::Journal::open(&steer::journal::Journal::path_for(first), &fingerprint, resume)?))
}

/// The content hash of an input file, for a journal's fingerprint.
pub fn file_hash(path: &Path) -> Result<String> {
    probe::model::known::sha256_file(path)
}

/// A vector file and its sidecar, as inputs.
pub fn vector_inputs(path: &Path) -> [PathBuf; 2] {
    [path.to_path_buf(), steer::vectors::sidecar_path(path)]
}
