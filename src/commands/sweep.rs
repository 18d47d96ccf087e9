use crate::model_arg;
use crate::steering_args::SteeringArgs;
use anyhow::Result;
use clap::Args;
use probe::stimuli::read_jsonl;
use std::path::PathBuf;
use steer::generate::GenerationConfig;
use steer::knob::SweepReport;
use steer::sweep::{parse_alphas, sweep, SweepOptions};

/// Sweep the correction-strength knob: for each alpha, steer every record and report the
/// mean correction magnitude (normalised token edit distance answer -> output), the copy rate
/// and the exact-correction rate, for copy cases and correct cases separately.
///
/// Example:
///   alens sweep --alphas -8:8:2 --json sweep.json --csv sweep.csv
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct SweepArgs {
    #[command(flatten)]
    model: model_arg::ModelArgs,
    /// Records with question, answer, correction. Default: the test records shipped beside the model (test.jsonl), else the mini-aligner's test split.
    #[arg(long)]
    data: Option<PathBuf>,
    /// start:stop:step (inclusive) or a list such as -4,0,4. Default: the vector file's grid,
    /// else the steering mode's (add: -8:8:2; project: -3,-2,-1.5,-1,-0.5,0,0.5,1,1.5,2,3).
    #[arg(long, allow_hyphen_values = true)]
    alphas: Option<String>,
    #[command(flatten)]
    steering: SteeringArgs,
    /// Use only the first N records.
    /// Bounds: 1 to 10,000,000.
    #[arg(long, value_parser = crate::bounds::count::<1, 10_000_000>)]
    limit: Option<usize>,
    /// Bounds: 1 to 4,096.
    #[arg(long, value_parser = crate::bounds::count::<1, 4_096>, default_value_t = 64)]
    max_new_tokens: usize,
    /// Records generated together (left-padded, one KV cache).
    /// Bounds: 1 to 4,096.
    #[arg(long, value_parser = crate::bounds::count::<1, 4_096>, default_value_t = 32)]
    batch_size: usize,
    /// Figure of the curves (.png or .svg).
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Also sweep a random direction of the same norm per layer (JSON key random_control),
    /// drawn with this seed: the control a knob must beat.
    #[arg(long, num_args = 0..=1, default_missing_value = "0")]
    random_control: Option<u64>,
    /// Continue an interrupted sweep from its journal (OUT.partial.jsonl beside the first of
    /// --json, --csv, --out): only the missing batches are generated, the result is the same.
    #[arg(long)]
    resume: bool,
    /// Sweep only shard I of N of the records (contiguous, in whole batches); --json then
    /// journals every record's outcome per alpha, and `alens merge` joins the shards.
    #[arg(long, value_name = "I/N", value_parser = crate::bounds::shard, allow_hyphen_values = true, requires = "json")]
    shard: Option<probe::shard::ShardSpec>,
}

pub fn run(args: SweepArgs) -> Result<()> {
    let mut inputs = args.model.input_paths();
    inputs.extend(crate::outputs::vector_inputs(&args.steering.vectors_path(&args.model)));
    inputs.extend(args.data.clone());
    crate::outputs::check_with_figures(&[args.json.as_ref(), args.csv.as_ref()], &[args.out.as_ref()], &inputs)?;
    let ckpt = args.model.load()?;
    let template = args.model.template()?;
    let steering = args.steering.steering(&args.model, &ckpt)?;
    let alphas = match &args.alphas {
        Some(spec) => parse_alphas(spec)?,
        None => steering.default_alphas(),
    };
    let data = args.data.clone().unwrap_or_else(|| args.model.default_test_records());
    let mut records = read_jsonl(&data)?;
    if let Some(limit) = args.limit {
        records.truncate(limit.max(1));
    }
    let options = SweepOptions {
        alphas,
        generation: GenerationConfig::greedy(args.max_new_tokens, ckpt.eos_token_ids.clone()),
        batch_size: args.batch_size,
        random_control: args.random_control,
    };
    let provenance = crate::outputs::provenance(&ckpt, args.random_control)?;
    let vectors_path = args.steering.vectors_path(&args.model);
    let mut settings = serde_json::json!({"command": "sweep", "data": crate::outputs::file_hash(&data)?, "limit": args.limit,
        "model": provenance.model.content_hash, "template": template.as_str(), "vectors": crate::outputs::file_hash(&vectors_path)?,
        "layers": steering.layers, "site": format!("{:?}", steering.site), "mode": steering.mode.name(), "positions": steering.positions.name(),
        "alphas": options.alphas, "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size, "random_control": args.random_control});
    let shard = match args.shard {
        Some(spec) => {
            let block = spec.batch_range(records.len(), args.batch_size);
            let mut options = settings.clone();
            for key in ["command", "data", "model"] {
                options.as_object_mut().map(|o| o.remove(key));
            }
            let info = crate::outputs::shard_info("sweep", spec, &block, records.len(), &data, &provenance, options)?;
            records = records.drain(block).collect();
            settings["shard"] = spec.to_string().into();
            Some(info)
        }
        None => None,
    };
    let mut journal = crate::outputs::journal(
        &[args.json.as_ref(), args.csv.as_ref(), args.out.as_ref()],
        settings,
        &ckpt,
        args.resume,
    )?;
    let mut report = SweepReport::new(
        sweep(&ckpt, &template, &records, &steering, &options, journal.as_mut())?,
        Some(provenance),
    );
    if let Some(info) = shard {
        report = report.as_shard(info);
    }
    let result = &report.result;
    println!(
        "steering layers {:?} ({} at {:?} positions: {}); {} copy cases, {} correct cases",
        steering.layers,
        steering.mode.name(),
        steering.positions,
        steering.mode.unit(),
        result.copy_cases.n,
        result.correct_cases.n
    );
    println!(
        "{:>7} | {:>9} {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9} {:>9}",
        "alpha", "copy:mag", "copied", "exact", "degen", "corr:mag", "copied", "exact", "degen"
    );
    for (k, a) in result.alphas.iter().enumerate() {
        let (c, r) = (&result.copy_cases, &result.correct_cases);
        println!(
            "{a:>7.2} | {:>9.3} {:>8.1}% {:>8.1}% {:>8.1}% | {:>9.3} {:>8.1}% {:>8.1}% {:>8.1}%",
            c.correction_magnitude[k],
            100.0 * c.copy_rate[k],
            100.0 * c.exact_correction_rate[k],
            100.0 * c.degenerate_rate[k],
            r.correction_magnitude[k],
            100.0 * r.copy_rate[k],
            100.0 * r.exact_correction_rate[k],
            100.0 * r.degenerate_rate[k]
        );
    }
    if let Some(control) = &result.random_control {
        println!(
            "random control (seed {}): correction magnitude, copy cases | correct cases",
            control.seed
        );
        for (k, a) in result.alphas.iter().enumerate() {
            println!(
                "{a:>7.2} | {:>9.3} | {:>9.3}",
                control.copy_cases.correction_magnitude[k], control.correct_cases.correction_magnitude[k]
            );
        }
    }
    if let Some(checks) = &report.checks {
        println!("{}", checks.report());
    }
    // All of the outputs, or none: each goes into place once every one is written.
    let mut outputs = probe::io::OutputSet::new();
    if let Some(path) = &args.json {
        outputs.write(path, &serde_json::to_vec_pretty(&report)?)?;
    }
    if let Some(path) = &args.out {
        outputs.write_through(path, |figure| draw_sweep(figure, result))?;
    }
    if let Some(path) = &args.csv {
        outputs.write(path, result.to_csv().as_bytes())?;
    }
    outputs.commit()?;
    if let Some(journal) = journal {
        journal.finish()?;
    }
    Ok(())
}

/// The sweep figure, in two panels like the Aligner paper's Fig. 4 (c): correction magnitude
/// per class with the random control as a pale dashed line of the class's colour, and the
/// rates (copy, exact correction, degenerate); legends under the plots, x over the grid.
pub(crate) fn draw_sweep(path: &std::path::Path, result: &steer::sweep::SweepResult) -> Result<PathBuf> {
    let (c, r) = (&result.copy_cases, &result.correct_cases);
    let curve = |name: &str, ys: &Vec<f64>, colour: usize, control: bool| viz::Curve {
        name: name.into(),
        ys: ys.clone(),
        colour,
        control,
    };
    let (red, blue, orange, grey) = (0, 1, 3, 5);
    let mut magnitude = vec![
        curve("correct cases", &r.correction_magnitude, red, false),
        curve("copy cases", &c.correction_magnitude, blue, false),
    ];
    if let Some(k) = &result.random_control {
        magnitude.push(curve(
            "correct cases, random direction",
            &k.correct_cases.correction_magnitude,
            red,
            true,
        ));
        magnitude.push(curve(
            "copy cases, random direction",
            &k.copy_cases.correction_magnitude,
            blue,
            true,
        ));
    }
    let degenerate: Vec<f64> = c
        .degenerate_rate
        .iter()
        .zip(&r.degenerate_rate)
        .map(|(a, b)| (a * c.n as f64 + b * r.n as f64) / (c.n + r.n).max(1) as f64)
        .collect();
    let rates = vec![
        curve("correct cases: copy rate", &r.copy_rate, red, false),
        curve(
            "correct cases: exact correction",
            &r.exact_correction_rate,
            orange,
            false,
        ),
        // A copy case's correction is its answer: its exact-correction rate is its copy rate.
        curve("copy cases: copy rate (= exact correction)", &c.copy_rate, blue, false),
        curve("all cases: degenerate output", &degenerate, grey, false),
    ];
    let title = format!(
        "Steering sweep: {} at {} positions, layers {}",
        result.steer_mode.name(),
        result.steer_positions.name(),
        layer_ranges(&result.layers)
    );
    let x_label = match result.steer_mode {
        steer::mode::SteerMode::Project => "alpha (+1 / -1: to the correct / copy class mean)",
        steer::mode::SteerMode::Add => "alpha (1 = one std of LAT's training projections)",
    };
    viz::curve_panels(
        path,
        &title,
        x_label,
        &result.alphas,
        &[
            viz::CurvePanel {
                title: "correction magnitude".into(),
                y_label: "token edit distance (0 = copied)".into(),
                curves: magnitude,
                y_range: (0.0, 1.05),
            },
            viz::CurvePanel {
                title: "copy and exact-correction rates".into(),
                y_label: "share of records".into(),
                curves: rates,
                y_range: (0.0, 1.05),
            },
        ],
    )
}

/// `[0, 1, 2, 5]` as `0-2, 5`, for titles.
fn layer_ranges(layers: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut k = 0;
    while k < layers.len() {
        let start = k;
        while k + 1 < layers.len() && layers[k + 1] == layers[k] + 1 {
            k += 1;
        }
        parts.push(if k > start {
            format!("{}-{}", layers[start], layers[k])
        } else {
            layers[start].to_string()
        });
        k += 1;
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    /// Redraws the README's sweep figure from the sweep it shows (the card's 60-record run):
    /// `cargo test -p alens --bin alens redraw_docs_sweep_figure -- --ignored`.
    #[test]
    #[ignore]
    fn redraw_docs_sweep_figure() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let json = root.join("docs/aligner-135m-research/phase8-shipped-defaults-fresh60.json");
        let result: steer::sweep::SweepResult = serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap();
        super::draw_sweep(&root.join("docs/aligner-135m-sweep.png"), &result).unwrap();
    }

    #[test]
    fn layer_ranges_are_compact() {
        assert_eq!(super::layer_ranges(&[0, 1, 2, 5, 7, 8]), "0-2, 5, 7-8");
        assert_eq!(super::layer_ranges(&[3]), "3");
    }
}
