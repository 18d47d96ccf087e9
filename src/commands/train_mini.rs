use anyhow::Result;
use clap::Args;
use mini::train::{train, TrainOptions};
use std::path::PathBuf;

/// Train the miniature Aligner from scratch (reproduces the shipped one with its seed).
///
/// Generates the synthetic correction corpus, trains a byte-level BPE tokenizer on it, then
/// trains a small Llama with AdamW (loss only on the corrected answer after ASSISTANT:),
/// and writes an HF-layout checkpoint that alens and HF transformers both load.
///
/// Example:
///   alens train-mini --out my-mini-aligner --seed 20241
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct TrainMiniArgs {
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = TrainOptions::default().seed)]
    seed: u64,
    /// Bounds: 1 to 10,000,000.
    #[arg(long, value_parser = crate::bounds::count::<1, 10_000_000>, default_value_t = TrainOptions::default().steps)]
    steps: usize,
    /// Warm-up steps on the identity mapping (answer -> answer) before corrections, as in the
    /// Aligner paper's residual correction; they count towards --steps.
    /// Bounds: 0 to 10,000,000.
    #[arg(long, value_parser = crate::bounds::count::<0, 10_000_000>, default_value_t = TrainOptions::default().identity_steps)]
    identity_steps: usize,
    /// Peak learning rate of the correction phase after --identity-steps (default: --learning-rate).
    #[arg(long)]
    correction_learning_rate: Option<f64>,
    /// Bounds: 1 to 4,096.
    #[arg(long, value_parser = crate::bounds::count::<1, 4_096>, default_value_t = TrainOptions::default().batch_size)]
    batch_size: usize,
    #[arg(long, default_value_t = TrainOptions::default().learning_rate)]
    learning_rate: f64,
    /// Records drawn for training.
    /// Bounds: 1 to 10,000,000.
    #[arg(long, value_parser = crate::bounds::count::<1, 10_000_000>, default_value_t = TrainOptions::default().train_records)]
    train_records: usize,
    /// Bounds: 1 to 64.
    #[arg(long, value_parser = crate::bounds::count::<1, 64>, default_value_t = TrainOptions::default().layers)]
    layers: usize,
    /// Bounds: 8 to 4,096.
    #[arg(long, value_parser = crate::bounds::count::<8, 4_096>, default_value_t = TrainOptions::default().hidden)]
    hidden: usize,
}

pub fn run(args: TrainMiniArgs) -> Result<()> {
    crate::outputs::check_dir(&args.out, &[], &mini::train::FILES)?;
    let defaults = TrainOptions::default();
    let opts = TrainOptions {
        seed: args.seed,
        steps: args.steps,
        identity_steps: args.identity_steps,
        correction_learning_rate: args.correction_learning_rate,
        batch_size: args.batch_size,
        learning_rate: args.learning_rate,
        warmup_steps: defaults.warmup_steps.min(args.steps / 5).max(1),
        train_records: args.train_records,
        layers: args.layers,
        hidden: args.hidden,
        ..defaults
    };
    let bar = probe::progress::bar(opts.steps as u64, "train");
    let mut smoothed = None::<f64>;
    let log_to_terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let started = std::time::Instant::now();
    // Built beside --out and moved in at the end: an error or Ctrl-C leaves no half-written
    // checkpoint where a loadable one is expected.
    let staged = probe::io::StagedDir::create(&args.out)?;
    let report = train(&opts, staged.path(), &mut |step, loss| {
        let s = smoothed.map_or(loss, |m| 0.95 * m + 0.05 * loss);
        smoothed = Some(s);
        bar.set_position(step as u64 + 1);
        bar.set_message(format!("loss {s:.4}"));
        // The bar draws only on a terminal; a run logged to a file still reports every 5%.
        if !log_to_terminal && (step + 1) % (opts.steps / 20).max(1) == 0 {
            eprintln!(
                "train: step {}/{} loss {s:.4} ({:.0}s)",
                step + 1,
                opts.steps,
                started.elapsed().as_secs_f64()
            );
        }
    })?;
    staged.commit()?;
    bar.finish_and_clear();
    println!(
        "trained {} parameters for {} steps in {:.0}s: loss {:.4} -> {:.4}, validation loss {:.4}; wrote {}",
        report.parameters,
        report.steps,
        report.seconds,
        report.first_loss,
        report.final_loss,
        report.validation_loss,
        args.out.display()
    );
    Ok(())
}
