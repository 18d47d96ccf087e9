//! `alens`: the command line of aligner-lens. Each command parses flags, calls a library crate
//! (`probe`, `steer`, `viz`) and prints; the maths lives in the crates.

/// Everything a command prints to stdout goes through here: a reader that went away
/// (`alens eval ... | head -1`) must not turn into a panic halfway through the command, and
/// the files it was asked for are still written. So a failed print is ignored, not fatal.
/// Defined before the modules so that their `println!` is this one.
macro_rules! println {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// The same for stderr: `alens ... 2>&1 | head -1` must not panic once the reader has gone,
/// whatever is left to say (a progress line, a warning, the error line itself).
macro_rules! eprintln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod bounds;
mod commands;
mod model_arg;
mod outputs;
mod process;
mod steering_args;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "alens",
    version,
    about = "Look inside and steer Aligner models (Llama, Mistral, Qwen2 checkpoints)",
    long_about = "Look inside and steer Aligner models.\n\n\
        Every command takes --model: a local HF-layout checkpoint directory, a llama.cpp .gguf \
        file, a PEFT adapter directory, or a known name (aligner-135m, smollm2-135m-instruct, \
        mini-aligner); the default is $ALENS_MODEL, else aligner-135m.\n\n\
        Example:\n  alens capture --token-ids 1,5,9,2 --points resid_post,logits --out acts.safetensors"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Capture(commands::capture::CaptureArgs),
    Generate(commands::generate::GenerateArgs),
    Eval(commands::eval::EvalArgs),
    Corpus(commands::corpus::CorpusArgs),
    TrainMini(commands::train_mini::TrainMiniArgs),
    Lat(commands::lat::LatArgs),
    Sweep(commands::sweep::SweepArgs),
    Scan(commands::scan::ScanArgs),
    Heatmap(commands::heatmap::HeatmapArgs),
    Demo(commands::demo::DemoArgs),
    Fetch(commands::fetch::FetchArgs),
    ExportHf(commands::export_hf::ExportHfArgs),
    Tune(commands::tune::TuneArgs),
    Serve(commands::serve::ServeArgs),
    Merge(commands::merge::MergeArgs),
    Patch(commands::patch::PatchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` drains its requests on SIGINT/SIGTERM itself; every other command exits at
    // once, removing its temporaries.
    process::set_up(!matches!(cli.command, Command::Serve(_)));
    let result = dispatch(cli);
    process::wait_if_interrupted();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line, with the context chain, never a backtrace: a control character (a
            // newline in a path the user gave) is shown escaped, so it cannot break the line.
            let line: String = format!("{err:#}")
                .chars()
                .map(|c| {
                    if c.is_control() {
                        c.escape_debug().to_string()
                    } else {
                        c.to_string()
                    }
                })
                .collect();
            eprintln!("error: {line}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a command line given as arguments (without the program name): how `demo` chains the
/// other commands exactly as a user would type them.
fn run_argv(argv: &[String]) -> anyhow::Result<()> {
    let cli = Cli::try_parse_from(std::iter::once("alens".to_string()).chain(argv.iter().cloned()))?;
    dispatch(cli)
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Capture(args) => commands::capture::run(args),
        Command::Generate(args) => commands::generate::run(args),
        Command::Eval(args) => commands::eval::run(args),
        Command::Corpus(args) => commands::corpus::run(args),
        Command::TrainMini(args) => commands::train_mini::run(args),
        Command::Lat(args) => commands::lat::run(args),
        Command::Sweep(args) => commands::sweep::run(args),
        Command::Scan(args) => commands::scan::run(args),
        Command::Heatmap(args) => commands::heatmap::run(args),
        Command::Demo(args) => commands::demo::run(args, &run_argv),
        Command::Fetch(args) => commands::fetch::run(args),
        Command::ExportHf(args) => commands::export_hf::run(args),
        Command::Tune(args) => commands::tune::run(args),
        Command::Serve(args) => commands::serve::run(args),
        Command::Merge(args) => commands::merge::run(args),
        Command::Patch(args) => commands::patch::run(args),
    }
}
