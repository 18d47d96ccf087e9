use crate::model_arg;
use anyhow::{Context, Result};
use clap::Args;
use probe::capture::parse_layers;
use probe::stimuli::read_jsonl;
use probe::Site;
use std::path::PathBuf;
use steer::generate::GenerationConfig;
use steer::patching::{patch_pairs, run_patching, PatchEntry, PatchPositions, PatchReport, PatchSettings};
use steer::vectors::ControlVectors;

/// Activation patching: where the copy-or-correct decision is carried, layer by layer.
///
/// For each copy/correct pair (records sharing a question, as LAT pairs them) both runs go
/// clean, then each reruns with one layer's activation at --points replaced by the other
/// run's, at --positions counted from the end of the prompt (decision: the last prompt token;
/// answer: the upstream answer's tokens; all: every position, for prompts of equal length).
/// Reported per layer, both directions (correct_from_copy: the correct case patched from the
/// copy case; copy_from_correct: the reverse), over the pairs whose clean runs start with
/// different tokens: the share whose first generated token switches to the other run's, and
/// the mean change in the logit difference between the two runs' first tokens. With
/// --max-new-tokens N, also the share whose whole output switches.
///
/// Controls at every layer: the rerun patched from an unrelated record of its own class (it
/// carries the same decision: nothing may switch), and from the run itself (the clean run,
/// bit for bit). The figure draws the switch rates beside LAT's held-out accuracy from
/// --vectors: where the decision is carried, beside where it is readable.
///
/// Finished batches go to a journal beside the first output; after a kill, the same command
/// with --resume patches only what is missing.
///
/// Example:
///   alens patch --model aligner-135m --max-pairs 48 --out patch.png --json patch.json
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct PatchArgs {
    #[command(flatten)]
    model: model_arg::ModelArgs,
    /// Stimulus records (question, answer, correction), paired as LAT pairs them. Default: the LAT stimuli shipped beside the model (copy-correct.jsonl), else the mini-aligner's.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Which prompt positions are patched, counted from the end of the prompt.
    #[arg(long, default_value = "decision")]
    positions: PatchPositions,
    /// Layers to patch, one at a time: all, or a list such as 0-3,8.
    #[arg(long, default_value = "all")]
    layers: String,
    /// The hook point patched in each layer.
    #[arg(long, default_value = "resid_post")]
    points: Site,
    /// Tokens generated after the patched prompt; above 1, the whole output is compared too.
    /// Bounds: 1 to 4,096.
    #[arg(long, value_parser = crate::bounds::count::<1, 4_096>, default_value_t = 1)]
    max_new_tokens: usize,
    /// Use only the first N pairs (in file order).
    #[arg(long, value_parser = crate::bounds::count::<2, 1_000_000>)]
    max_pairs: Option<usize>,
    /// Pairs per forward pass (each is two rows).
    /// Bounds: 2 to 2,048.
    #[arg(long, value_parser = crate::bounds::count::<2, 2_048>, default_value_t = 8)]
    batch_size: usize,
    /// LAT vectors whose sidecar's held-out accuracy is drawn beside the switch rates. Default: the vectors shipped beside the model (copy-correct.safetensors), if any.
    #[arg(long)]
    vectors: Option<PathBuf>,
    /// The figure (.png or .svg).
    #[arg(long)]
    out: PathBuf,
    /// Also write the report as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also write one row per layer and direction as CSV.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Continue an interrupted run from its journal.
    #[arg(long)]
    resume: bool,
}

pub fn run(args: PatchArgs) -> Result<()> {
    let data = args.data.clone().unwrap_or_else(|| args.model.default_stimuli());
    let vectors_path = args
        .vectors
        .clone()
        .or_else(|| args.model.beside("copy-correct.safetensors"));
    let mut inputs = args.model.input_paths();
    inputs.push(data.clone());
    if let Some(v) = &vectors_path {
        inputs.extend(crate::outputs::vector_inputs(v));
    }
    crate::outputs::check_with_figures(&[args.json.as_ref(), args.csv.as_ref()], &[Some(&args.out)], &inputs)?;
    let ckpt = args.model.load()?;
    let template = args.model.template()?;
    let layers = parse_layers(&args.layers, ckpt.config.num_hidden_layers)?;
    let vectors = vectors_path
        .as_ref()
        .map(|v| ControlVectors::load(v, ckpt.config.hidden_size, ckpt.config.num_hidden_layers))
        .transpose()?;
    let mut records = read_jsonl(&data)?;
    let mut pairs = patch_pairs(&ckpt, &template, &records)?;
    if let Some(n) = args.max_pairs {
        pairs.truncate(n);
    }
    steer::patching::check_pairs(&pairs, args.positions)?;
    records.clear();
    let settings = PatchSettings {
        site: args.points,
        layers,
        positions: args.positions,
        generation: GenerationConfig::greedy(args.max_new_tokens, ckpt.eos_token_ids.clone()),
    };

    let provenance = crate::outputs::provenance(&ckpt, None)?;
    let fingerprint = serde_json::json!({"command": "patch", "data": crate::outputs::file_hash(&data)?,
        "model": provenance.model.content_hash, "template": template.as_str(), "positions": args.positions.name(),
        "layers": settings.layers, "point": args.points.short_name(), "max_new_tokens": args.max_new_tokens,
        "pairs": pairs.len(), "batch_size": args.batch_size});
    let outputs = [Some(&args.out), args.json.as_ref(), args.csv.as_ref()];
    let mut journal = crate::outputs::journal_of::<PatchEntry>(&outputs, fingerprint, &ckpt, args.resume)?;
    let progress = probe::progress::bar(pairs.len() as u64, "patch");
    let batches = run_patching(
        &ckpt.model,
        &pairs,
        &settings,
        args.batch_size,
        journal.as_mut(),
        &mut |n| progress.inc(n as u64),
    )?;
    progress.finish_and_clear();
    let mut report = PatchReport::from_batches(&batches, &settings)?;
    if let Some(vectors) = &vectors {
        report = report.with_lat_accuracy(vectors);
    }
    report.provenance = Some(provenance);
    print_table(&report);

    // All of the outputs, or none: each goes into place once every one is written (viz draws
    // into the set's temporary).
    let mut outputs = probe::io::OutputSet::new();
    outputs.write_through(&args.out, |figure| draw_patch(figure, &report, vectors_path.is_some()))?;
    if let Some(path) = &args.json {
        outputs.write(path, &serde_json::to_vec_pretty(&report)?)?;
    }
    if let Some(path) = &args.csv {
        outputs.write(path, report.to_csv().as_bytes())?;
    }
    outputs.commit()?;
    for path in std::iter::once(&args.out).chain(&args.json).chain(&args.csv) {
        println!("wrote {}", path.display());
    }
    // Everything is written: the journal goes.
    drop(journal);
    Ok(())
}

fn print_table(report: &PatchReport) {
    println!(
        "{} pairs, {} whose copy and correct runs start differently; {} at {} positions",
        report.pairs,
        report.pairs_used,
        report.point,
        report.positions.name()
    );
    println!(
        "{:>5} {:>9} {:>9} {:>9} {:>9} {:>8} {:>6}",
        "layer", "corr<-cp", "cp<-corr", "ctrl", "ld-rec", "self", "LAT"
    );
    let unrelated = &report.controls.unrelated;
    for (i, layer) in report.layers.iter().enumerate() {
        let control = unrelated.correct_from_copy.switch_rate[i].max(unrelated.copy_from_correct.switch_rate[i]);
        let lat = report
            .lat_accuracy
            .as_ref()
            .and_then(|a| a[i])
            .map_or("-".to_string(), |a| format!("{:.0}%", 100.0 * a));
        println!(
            "{layer:>5} {:>8.0}% {:>8.0}% {:>8.0}% {:>9.2} {:>8} {lat:>6}",
            100.0 * report.correct_from_copy.switch_rate[i],
            100.0 * report.copy_from_correct.switch_rate[i],
            100.0 * control,
            report.correct_from_copy.logit_diff_recovered[i],
            if report.controls.self_patch.identical[i] {
                "exact"
            } else {
                "DIFFERS"
            },
        );
    }
}

/// Switch rates per layer beside LAT's accuracy, with the unrelated-record controls dashed; and
/// the share of the logit-difference gap each patch closes.
fn draw_patch(path: &std::path::Path, report: &PatchReport, asked_for_lat: bool) -> Result<PathBuf> {
    let xs: Vec<f64> = report.layers.iter().map(|&l| l as f64).collect();
    let curve = |name: &str, ys: &[f64], colour: usize, control: bool| viz::Curve {
        name: name.into(),
        ys: ys.to_vec(),
        colour,
        control,
    };
    let (red, blue, green) = (0, 1, 2);
    let unrelated = &report.controls.unrelated;
    let mut carried = vec![
        curve(
            "correct case patched from copy: switches to copy",
            &report.correct_from_copy.switch_rate,
            red,
            false,
        ),
        curve(
            "copy case patched from correct: switches to correct",
            &report.copy_from_correct.switch_rate,
            blue,
            false,
        ),
        curve(
            "control: from an unrelated correct case",
            &unrelated.correct_from_copy.switch_rate,
            red,
            true,
        ),
        curve(
            "control: from an unrelated copy case",
            &unrelated.copy_from_correct.switch_rate,
            blue,
            true,
        ),
    ];
    if let Some(accuracy) = &report.lat_accuracy {
        // A layer the vectors do not cover has no reading: drawn at chance.
        let ys: Vec<f64> = accuracy.iter().map(|a| a.unwrap_or(0.5)).collect();
        carried.push(curve("LAT held-out accuracy (readable)", &ys, green, false));
    } else if asked_for_lat {
        eprintln!("note: the vectors' sidecar has no accuracy per layer; the figure shows patching only");
    }
    let recovered = vec![
        curve(
            "correct case patched from copy",
            &report.correct_from_copy.logit_diff_recovered,
            red,
            false,
        ),
        curve(
            "copy case patched from correct",
            &report.copy_from_correct.logit_diff_recovered,
            blue,
            false,
        ),
        curve(
            "control: unrelated correct case",
            &unrelated.correct_from_copy.logit_diff_recovered,
            red,
            true,
        ),
        curve(
            "control: unrelated copy case",
            &unrelated.copy_from_correct.logit_diff_recovered,
            blue,
            true,
        ),
    ];
    let (lo, hi) = recovered
        .iter()
        .flat_map(|c| &c.ys)
        .fold((0.0f64, 1.0f64), |(lo, hi), &y| (lo.min(y), hi.max(y)));
    let title = format!(
        "Activation patching: {} at {} position{}, {} of {} pairs",
        report.point,
        report.positions.name(),
        if report.positions == PatchPositions::Decision {
            ""
        } else {
            "s"
        },
        report.pairs_used,
        report.pairs
    );
    viz::curve_panels(
        path,
        &title,
        "layer",
        &xs,
        &[
            viz::CurvePanel {
                title: "carried (patching switches the first token) vs readable (LAT)".into(),
                y_label: "share of pairs".into(),
                curves: carried,
                y_range: (0.0, 1.05),
            },
            viz::CurvePanel {
                title: "logit difference recovered (a control also loses the target's own token)".into(),
                y_label: "share of the gap between the two runs".into(),
                curves: recovered,
                y_range: (lo - 0.05, hi + 0.05),
            },
        ],
    )
    .context("drawing the patching figure")
}
