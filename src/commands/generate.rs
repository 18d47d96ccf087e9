use crate::model_arg;
use anyhow::Result;
use clap::Args;
use probe::{AlignerTemplate, NoHooks};
use std::path::PathBuf;
use steer::generate::{correct, GenerationConfig, Sampling};

/// Generate the Aligner's corrected answer for a question and an upstream answer.
///
/// Example:
///   alens generate --question "what is the capital of france?" --answer "the capital of france is rome."
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct GenerateArgs {
    /// Checkpoint directory. Default: the shipped mini-aligner.
    #[arg(long)]
    model: Option<PathBuf>,
    #[arg(long)]
    question: String,
    #[arg(long)]
    answer: String,
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// Continue past end-of-sequence until --max-new-tokens.
    #[arg(long)]
    ignore_eos: bool,
    /// Sampling temperature; 0 (default) is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    #[arg(long, default_value_t = 0.9)]
    top_p: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Aligner prompt template with {question} and {answer}.
    #[arg(long)]
    template: Option<String>,
    /// Print {"output", "token_ids"} as the last line.
    #[arg(long)]
    json: bool,
}

pub fn run(args: GenerateArgs) -> Result<()> {
    let ckpt = model_arg::load(&args.model)?;
    let template = match &args.template {
        Some(t) => AlignerTemplate::new(t)?,
        None => AlignerTemplate::default(),
    };
    let sampling = if args.temperature > 0.0 {
        Sampling::TopP { temperature: args.temperature, top_p: args.top_p, seed: args.seed }
    } else {
        Sampling::Greedy
    };
    let config = GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        eos_token_ids: ckpt.eos_token_ids.clone(),
        ignore_eos: args.ignore_eos,
        sampling,
    };
    let (output, ids) = correct(&ckpt, &template, &args.question, &args.answer, &config, &mut NoHooks)?;
    println!("{output}");
    if args.json {
        println!("{}", serde_json::json!({"output": output, "token_ids": ids}));
    }
    Ok(())
}
