use crate::model_arg;
use crate::steering_args::SteeringArgs;
use anyhow::{bail, Result};
use clap::Args;
use probe::NoHooks;
use steer::generate::{run_aligner, Correction, GenerationConfig, Sampling};

/// Generate the Aligner's corrected answer for a question and an upstream answer, optionally
/// steered: --alpha adds alpha x the control vector at the chosen layers' outputs (positive =
/// more correction, negative = more copying).
///
/// Examples:
///   alens generate --question "what is the capital of france?" --answer "the capital of france is rome."
///   alens generate --question "what colour is snow?" --answer "snow is white." --alphas -4,0,4
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: model_arg::ModelArgs,
    #[arg(long)]
    question: String,
    #[arg(long)]
    answer: String,
    /// Steering strength (the correction knob), in the unit of --steer-mode. add: alpha = 1
    /// adds the stored vector once (one std of the LAT projection at that layer) at each
    /// steered layer and position; project: alpha = +1 / -1 moves the projection to the
    /// correct / copy class mean. Vectors, mode, positions and layers default to those shipped
    /// beside the model. On the mini-aligner (add, every position) |alpha| <= 0.75 changes
    /// little and outputs degrade beyond |alpha| = 1.
    #[arg(long, allow_hyphen_values = true, conflicts_with = "alphas")]
    alpha: Option<f64>,
    /// Several strengths, one output each, side by side (e.g. -4,0,4).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    alphas: Option<Vec<f64>>,
    #[command(flatten)]
    steering: SteeringArgs,
    /// Bounds: 1 to 4,096.
    #[arg(long, value_parser = crate::bounds::count::<1, 4_096>, default_value_t = 64)]
    max_new_tokens: usize,
    /// Continue past end-of-sequence until --max-new-tokens.
    #[arg(long)]
    ignore_eos: bool,
    /// Sampling temperature; 0 (default) is greedy, otherwise between 0.001 and 100.
    #[arg(long, default_value_t = 0.0, value_parser = crate::bounds::temperature)]
    temperature: f64,
    /// Nucleus mass kept when sampling, in (0, 1].
    #[arg(long, default_value_t = 0.9, value_parser = crate::bounds::share)]
    top_p: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print the result as JSON on the last line: {"output", "token_ids", "copied",
    /// "correction_magnitude", "alpha", "finish_reason", "model"} (an array of them for
    /// --alphas); `alens serve`'s /v1/correct returns the same object.
    #[arg(long)]
    json: bool,
}

pub fn run(args: GenerateArgs) -> Result<()> {
    let ckpt = args.model.load()?;
    let template = args.model.template()?;
    let sampling = if args.temperature > 0.0 {
        Sampling::TopP {
            temperature: args.temperature,
            top_p: args.top_p,
            seed: args.seed,
        }
    } else {
        Sampling::Greedy
    };
    let config = GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        eos_token_ids: ckpt.eos_token_ids.clone(),
        ignore_eos: args.ignore_eos,
        sampling,
    };
    let alphas: Option<Vec<f64>> = args.alphas.clone().or(args.alpha.map(|a| vec![a]));
    let tokenizer = ckpt.tokenizer()?;
    let model_name = ckpt.name();
    let correction = |out, alpha| Correction::new(tokenizer, &args.answer, out, alpha, &model_name);
    let Some(alphas) = alphas else {
        let out = correction(
            run_aligner(&ckpt, &template, &args.question, &args.answer, &config, &mut NoHooks)?,
            0.0,
        )?;
        println!("{}", out.output);
        if args.json {
            println!("{}", serde_json::to_string(&out)?);
        }
        return Ok(());
    };
    if alphas.len() > steer::sweep::MAX_ALPHAS {
        bail!(
            "--alphas gives {} values; at most {}",
            alphas.len(),
            steer::sweep::MAX_ALPHAS
        );
    }
    if alphas.is_empty() {
        bail!("--alphas needs at least one value");
    }
    let steering = args.steering.steering(&args.model, &ckpt)?;
    let mut results = Vec::new();
    for &alpha in &alphas {
        let mut hook = steering.at(alpha, ckpt.model.device())?;
        let out = run_aligner(&ckpt, &template, &args.question, &args.answer, &config, &mut hook)?;
        results.push(correction(out, alpha)?);
    }
    if let [out] = results.as_slice() {
        println!("{}", out.output);
        if args.json {
            println!("{}", serde_json::to_string(out)?);
        }
    } else {
        for out in &results {
            println!("alpha {:>+6.2} | {}", out.alpha, out.output);
        }
        if args.json {
            println!("{}", serde_json::to_string(&results)?);
        }
    }
    Ok(())
}
