use crate::model_arg;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

/// Write a model as an HF transformers directory.
///
/// A GGUF is dequantized (f32 below 1B parameters, bf16 above) with llama.cpp's Q/K rotary
/// permutation undone, so `AutoModelForCausalLM.from_pretrained(DIR)` and alens load the very
/// same weights. Writes config.json (transformers 4.x layout), model.safetensors,
/// tokenizer.json, tokenizer_config.json (with the GGUF's chat template) and
/// generation_config.json. DIR must not exist yet (or be empty); it appears whole or not at all.
///
/// Example:
///   alens export-hf --model smollm2-135m-instruct --out smollm2-hf
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct ExportHfArgs {
    /// A .gguf file, an HF directory or a known name (see `alens fetch`).
    #[arg(long)]
    model: PathBuf,
    /// The directory to create.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: ExportHfArgs) -> Result<()> {
    let source = model_arg::resolve(&args.model)?;
    crate::outputs::check_dir(&args.out, std::slice::from_ref(&source), &[])?;
    let exported = probe::model::export::export_hf(&source, &args.out)?;
    println!(
        "wrote {} tensors ({:?}) to {}",
        exported.tensors,
        exported.dtype,
        exported.dir.display()
    );
    Ok(())
}
