use crate::model_arg;
use anyhow::{Context, Result};
use clap::Args;
use probe::io::StagedDir;
use probe::stimuli::read_jsonl;
use std::path::PathBuf;
use tune::lora::{tune, LoraOptions};

/// Fine-tune a pretrained model into an Aligner with LoRA and write a PEFT adapter.
///
/// The base stays frozen; low-rank factors on the chosen projections learn to write each
/// record's correction (copy cases: the answer itself) after the Aligner prompt, loss on the
/// correction and EOS only. AdamW, warm-up then cosine decay, gradient clipping; seeded and
/// bit-reproducible on one machine. A checkpoint lands in OUT.partial (beside --out) every
/// --checkpoint-every steps; after an interruption, the same command with --resume continues
/// from it and ends with the same adapter, moved into --out only when it is done. The adapter loads with --adapter DIR (or as --model DIR) and with
/// peft's PeftModel.from_pretrained.
///
/// Example:
///   alens tune --base smollm2-135m-instruct --data train.jsonl --out my-aligner --steps 400
///   alens generate --model my-aligner --question "..." --answer "..."
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct TuneArgs {
    /// The base model: an HF directory, a .gguf file or a known name.
    #[arg(long)]
    base: PathBuf,
    /// Training records (question, answer, correction).
    #[arg(long)]
    data: PathBuf,
    /// The adapter directory to write (and resume from).
    #[arg(long)]
    out: PathBuf,
    /// Aligner prompt template with {question} and {answer}.
    #[arg(long)]
    template: Option<String>,
    /// Bounds: 1 to 1,024.
    #[arg(long, value_parser = crate::bounds::count::<1, 1_024>, default_value_t = 16)]
    rank: usize,
    #[arg(long, default_value_t = 32.0)]
    lora_alpha: f64,
    /// Projections to adapt.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
    )]
    targets: Vec<String>,
    /// Bounds: 1 to 10,000,000.
    #[arg(long, value_parser = crate::bounds::count::<1, 10_000_000>, default_value_t = 400)]
    steps: usize,
    /// Bounds: 1 to 4,096.
    #[arg(long, value_parser = crate::bounds::count::<1, 4_096>, default_value_t = 8)]
    batch_size: usize,
    #[arg(long, default_value_t = 5e-4)]
    learning_rate: f64,
    /// Bounds: 0 to 10,000,000.
    #[arg(long, value_parser = crate::bounds::count::<0, 10_000_000>, default_value_t = 20)]
    warmup_steps: usize,
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// First steps train answer -> answer (the paper's identity warm-up).
    /// Bounds: 0 to 10,000,000.
    #[arg(long, value_parser = crate::bounds::count::<0, 10_000_000>, default_value_t = 0)]
    identity_steps: usize,
    /// Draw copy cases this many times as often as correct cases.
    #[arg(long, default_value_t = 1.0)]
    copy_weight: f64,
    /// Steps between checkpoints (0: only at the end).
    /// Bounds: 0 to 10,000,000.
    #[arg(long, value_parser = crate::bounds::count::<0, 10_000_000>, default_value_t = 25)]
    checkpoint_every: usize,
    /// Continue the run whose checkpoint is in --out.
    #[arg(long)]
    resume: bool,
    /// Start from this adapter (same rank and targets) instead of fresh factors: a second
    /// phase of training with its own data, schedule and seed.
    #[arg(long)]
    init_adapter: Option<PathBuf>,
    /// Store the finished adapter in f16 (half the size; checkpoints stay f32 so a resumed
    /// run is bit-identical). Rerunning a finished run with --resume only converts it.
    #[arg(long)]
    f16: bool,
    /// Train through one-pass fused ops (RMSNorm, RoPE, softmax, SwiGLU, cross-entropy, each
    /// with its own backward) instead of candle's composed ones: faster and as reproducible,
    /// but not the same bits, so the card's commands (composed) reproduce the shipped adapter
    /// only without it. Recorded in the run's options; a resumed run keeps its choice.
    #[arg(long)]
    fused: bool,
}

pub fn run(args: TuneArgs) -> Result<()> {
    let base = model_arg::resolve(&args.base)?;
    let inputs: Vec<PathBuf> = [base.clone(), args.data.clone()]
        .into_iter()
        .chain(args.init_adapter.clone())
        .collect();
    let files: Vec<&str> = tune::lora::FILES.into_iter().chain(["training.json"]).collect();
    crate::outputs::check_dir(&args.out, &inputs, &files)?;
    // Checkpoints and the finished adapter are built in OUT.partial and moved into OUT at the
    // end: an interrupted run leaves OUT as it was, and its last checkpoint for --resume.
    let partial = StagedDir::partial_path(&args.out);
    crate::outputs::check_dir(&partial, &inputs, &[])?;
    // A finished run continued with --resume (to convert it with --f16) starts from its own
    // last checkpoint, which stays in OUT.
    let finished = args.resume && !partial.exists() && args.out.join(tune::lora::STATE_FILE).is_file();
    anyhow::ensure!(
        !args.resume || finished || partial.exists(),
        "nothing to resume: there is no interrupted run in {} and no finished one in {}",
        partial.display(),
        args.out.display()
    );
    let mut ckpt = probe::Checkpoint::load(&base)?;
    let provenance = crate::outputs::provenance(&ckpt, Some(args.seed))?;
    let template = model_arg::template(&args.template)?;
    let records = read_jsonl(&args.data)?;
    let opts = LoraOptions {
        rank: args.rank,
        alpha: args.lora_alpha,
        targets: args.targets.clone(),
        steps: args.steps,
        batch_size: args.batch_size,
        learning_rate: args.learning_rate,
        warmup_steps: args.warmup_steps,
        weight_decay: args.weight_decay,
        max_grad_norm: args.max_grad_norm,
        seed: args.seed,
        identity_steps: args.identity_steps,
        copy_weight: args.copy_weight,
        init_adapter: args.init_adapter.clone(),
        fused: args.fused,
    };
    // A known name is recorded as such, so the adapter finds its base on any machine.
    let base_name = if args.base.exists() {
        base.display().to_string()
    } else {
        args.base.display().to_string()
    };
    let bar = probe::progress::bar(args.steps as u64, "tune");
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} eta {eta} {msg}")
            .expect("static template is valid")
            .progress_chars("=> "),
    );
    let mut staged = StagedDir::resumable(&args.out, args.resume && !finished)?;
    let staging = staged.path().to_path_buf();
    if finished {
        for name in tune::lora::FILES {
            let from = args.out.join(name);
            std::fs::copy(&from, staging.join(name)).with_context(|| format!("failed to read {}", from.display()))?;
        }
    }
    let resume_note = format!(
        "the last checkpoint is in {}: rerun with --resume to continue",
        staging.display()
    );
    let mut held = args.resume && !finished;
    if held {
        crate::process::on_interrupt_say(&resume_note);
    }
    let started = std::time::Instant::now();
    let mut tokens_seen = 0usize;
    let logging = !std::io::IsTerminal::is_terminal(&std::io::stderr());
    let report = tune(
        &mut ckpt,
        &template,
        &records,
        &opts,
        &base_name,
        &staging,
        args.checkpoint_every,
        args.resume,
        &mut |step, loss, tokens| {
            // Once a checkpoint is in, an interruption or error leaves it for --resume.
            if !held && staging.join(tune::lora::STATE_FILE).is_file() {
                staged.hold();
                crate::process::on_interrupt_say(&resume_note);
                held = true;
            }
            tokens_seen += tokens;
            let rate = tokens_seen as f64 / started.elapsed().as_secs_f64().max(1e-9);
            bar.set_position(step as u64 + 1);
            bar.set_message(format!("loss {loss:.4}  {rate:.0} tok/s"));
            if logging && (step + 1) % (args.steps / 20).max(1) == 0 {
                eprintln!("step {}/{}: loss {loss:.4}, {rate:.0} tok/s", step + 1, args.steps);
            }
            Ok(())
        },
    )
    .with_context(|| {
        // Only a checkpoint can be resumed from; point at it only when there is one.
        if held {
            format!(
                "tuning {} (rerun with --resume to continue from the last checkpoint in {})",
                base.display(),
                staging.display()
            )
        } else {
            format!("tuning {}", base.display())
        }
    })?;
    bar.finish_and_clear();
    if args.f16 {
        tune::lora::convert_adapter(&staging, candle_core::DType::F16)?;
    }
    probe::io::write_atomic(
        &staging.join("training.json"),
        &serde_json::to_vec_pretty(&serde_json::json!({"options": opts, "report": report, "provenance": provenance}))?,
    )?;
    staged.commit()?;
    crate::process::on_interrupt_say("");
    println!(
        "{} steps, loss {:.4} -> {:.4}, {} trainable parameters, {:.0} tok/s over {:.0} s; adapter in {}",
        report.steps,
        report.first_loss,
        report.final_loss,
        report.trainable_parameters,
        report.tokens_per_second,
        report.seconds,
        args.out.display()
    );
    Ok(())
}
