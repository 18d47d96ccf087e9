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

/// As [`check`], where `figures` are also outputs, drawn by viz: their format is checked too,
/// so a figure alens cannot draw stops the command before any work or any other output.
pub fn check_with_figures(files: &[Option<&PathBuf>], figures: &[Option<&PathBuf>], inputs: &[PathBuf]) -> Result<()> {
    for figure in figures.iter().flatten() {
        viz::check_figure_path(figure)?;
    }
    let all: Vec<Option<&PathBuf>> = figures.iter().chain(files).copied().collect();
    check(&all, inputs)
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
/// vectors, and the options) and the model's weights. None when the run writes no file, so
/// there is nothing to resume.
pub fn journal(
    outputs: &[Option<&PathBuf>],
    settings: serde_json::Value,
    ckpt: &probe::Checkpoint,
    resume: bool,
) -> Result<Option<steer::journal::Journal>> {
    journal_key(outputs, settings, ckpt, resume)?
        .map(|(path, fingerprint)| steer::journal::Journal::open(&path, &fingerprint, resume))
        .transpose()
}

/// [`journal`] for a command whose finished units are entries of its own kind.
pub fn journal_of<E: serde::Serialize + serde::de::DeserializeOwned>(
    outputs: &[Option<&PathBuf>],
    settings: serde_json::Value,
    ckpt: &probe::Checkpoint,
    resume: bool,
) -> Result<Option<probe::journal::Journal<E>>> {
    journal_key(outputs, settings, ckpt, resume)?
        .map(|(path, fingerprint)| probe::journal::Journal::open(&path, &fingerprint, resume))
        .transpose()
}

/// Where the journal goes and the fingerprint that keys it.
fn journal_key(
    outputs: &[Option<&PathBuf>],
    settings: serde_json::Value,
    ckpt: &probe::Checkpoint,
    resume: bool,
) -> Result<Option<(PathBuf, String)>> {
    let Some(first) = outputs.iter().flatten().next() else {
        anyhow::ensure!(!resume, "--resume continues a run that writes an output file: give one");
        return Ok(None);
    };
    Ok(Some((
        steer::journal::Journal::path_for(first),
        run_fingerprint(settings, ckpt)?,
    )))
}

/// What a journal is keyed by: `settings` and the sha256 of every weight file, so a resumed run
/// continues only on the very same model (the provenance's content hash sees the layout, not
/// the values).
pub fn run_fingerprint(mut settings: serde_json::Value, ckpt: &probe::Checkpoint) -> Result<String> {
    let weights: Vec<String> = probe::provenance::weight_files(ckpt)?
        .iter()
        .map(|f| weights_sha256(f))
        .collect::<Result<_>>()?;
    settings["weights_sha256"] = serde_json::json!(weights);
    Ok(probe::provenance::sha256_hex(settings.to_string().as_bytes()))
}

/// The sha256 of a weight file, read once and then remembered in `$ALENS_HOME/weights-sha256.tsv`
/// by (path, length, modification time): a 7B checkpoint is hashed on first use only.
fn weights_sha256(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path).map_err(|e| anyhow::anyhow!("failed to read {}: {e}", path.display()))?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let resolved = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    // A name with a control character could forge a line: hashed every time instead.
    let key = resolved
        .to_str()
        .filter(|name| !name.chars().any(char::is_control))
        .map(|name| format!("{}\t{modified}\t{name}", meta.len()));
    let cache = probe::home::cache_dir().join("weights-sha256.tsv");
    if let (Some(key), Ok(text)) = (&key, std::fs::read_to_string(&cache)) {
        if let Some(hash) = text
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .find(|(_, rest)| rest == key)
            .map(|(hash, _)| hash)
        {
            return Ok(hash.to_string());
        }
    }
    let hash = probe::model::known::sha256_file(path)?;
    if let Some(key) = key {
        use std::io::Write as _;
        let _ = std::fs::create_dir_all(probe::home::cache_dir());
        if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(&cache) {
            let _ = file.write_all(format!("{hash}\t{key}\n").as_bytes());
        }
    }
    Ok(hash)
}

/// The content hash of an input file, for a journal's fingerprint.
pub fn file_hash(path: &Path) -> Result<String> {
    probe::model::known::sha256_file(path)
}

/// A vector file and its sidecar, as inputs.
pub fn vector_inputs(path: &Path) -> [PathBuf; 2] {
    [path.to_path_buf(), steer::vectors::sidecar_path(path)]
}

/// What a shard's output records about itself (see `probe::shard`): its block of `total`
/// records, the hashes of data and model, and `options`, everything else the result depends on.
pub fn shard_info(
    kind: &str,
    spec: probe::shard::ShardSpec,
    block: &std::ops::Range<usize>,
    total: usize,
    data: &Path,
    provenance: &probe::provenance::Provenance,
    options: serde_json::Value,
) -> Result<probe::shard::ShardInfo> {
    Ok(probe::shard::ShardInfo {
        kind: kind.into(),
        spec: spec.to_string(),
        first: block.start,
        records: block.len(),
        total,
        data_sha256: file_hash(data)?,
        model: provenance.model.content_hash.clone(),
        options,
        alens_version: provenance.alens_version.clone(),
    })
}
