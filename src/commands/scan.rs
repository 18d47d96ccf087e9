use crate::model_arg;
use crate::steering_args::load_vectors;
use anyhow::Result;
use clap::Args;
use probe::lat::scan;
use std::path::PathBuf;
use viz::Panel;

/// LAT scan of one Aligner prompt: every token's activation at every layer projected on that
/// layer's reading vector (red = towards correcting, blue = towards copying), drawn as a
/// tokens x layers heatmap; numbers also go to --csv / --npy.
///
/// With --generated N the model first answers (greedy, up to N tokens) and the scan shows
/// the last prompt token and the generated tokens instead, the Aligner paper's Fig. 4 (a)/(b):
/// a correction reads positive from the first generated token on, a copy negative.
///
/// Examples:
///   alens scan --question "what colour is snow?" --answer "snow is green." --out scan.png --csv scan.csv
///   alens scan --model notebooks-data/aligner-135m --question "What colour is snow?" \
///       --answer "Snow is green." --generated 20 --out scan-generated.png
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct ScanArgs {
    #[command(flatten)]
    model: model_arg::ModelArgs,
    /// Reading vectors from `alens lat`. Default: the vectors shipped beside the model.
    #[arg(long)]
    vectors: Option<PathBuf>,
    #[arg(long)]
    question: String,
    #[arg(long)]
    answer: String,
    /// Figure: .png or .svg.
    #[arg(long)]
    out: PathBuf,
    /// Also write the tokens x layers numbers as CSV.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Also write them as a [tokens, layers] .npy.
    #[arg(long)]
    npy: Option<PathBuf>,
    /// Colour limit: scores beyond +/- this many spreads are drawn at full colour (the numbers
    /// written stay unclipped).
    #[arg(long, default_value_t = 3.0, value_parser = parse_clip)]
    clip: f64,
    /// Generate up to N tokens (greedy) and scan those, after the last prompt token (1-4096).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=4096))]
    generated: Option<u16>,
}

pub fn run(args: ScanArgs) -> Result<()> {
    let vectors_path = args
        .vectors
        .clone()
        .unwrap_or_else(|| crate::steering_args::default_vectors(&args.model));
    let mut inputs = args.model.input_paths();
    inputs.extend(crate::outputs::vector_inputs(&vectors_path));
    crate::outputs::check_with_figures(&[args.csv.as_ref(), args.npy.as_ref()], &[Some(&args.out)], &inputs)?;
    let ckpt = args.model.load()?;
    let template = args.model.template()?;
    let (vectors_path, vectors) = load_vectors(&vectors_path, &ckpt)?;
    let tokenizer = ckpt.tokenizer()?;
    let mut ids = tokenizer.encode(&template.render(&args.question, &args.answer))?;
    let directions = vectors.scan_directions();
    // With --generated, rows from the last prompt token on: where the decision is taken, then
    // the text it produced.
    let mut first_row = 0;
    let mut title = format!("Q: {} | A: {}", args.question, args.answer);
    if let Some(n) = args.generated {
        let config = steer::generate::GenerationConfig::greedy(n as usize, ckpt.eos_token_ids.clone());
        let output = steer::generate::run_aligner(
            &ckpt,
            &template,
            &args.question,
            &args.answer,
            &config,
            &mut probe::NoHooks,
        )?;
        println!("output: {}", output.text);
        title = format!("A: {} | output: {}", args.answer, output.text);
        first_row = ids.len() - 1;
        ids.extend(&output.ids);
    }
    let values = scan(&ckpt, &ids, &directions)?.values[first_row..].to_vec();
    let tokens = tokenizer
        .token_strings(&ids[first_row..])
        .into_iter()
        .map(|t| t.replace('\u{120}', "_"))
        .collect::<Vec<_>>();
    let layers: Vec<usize> = directions.keys().copied().collect();
    // The decision row: the last prompt token, first with --generated, else last.
    let decision = if args.generated.is_some() { 0 } else { values.len() - 1 };
    let flagged: Vec<usize> = (0..values.len())
        .filter(|&r| off_distribution(&values[r], args.clip))
        .collect();
    let mut row_labels = tokens.clone();
    row_labels[decision] = format!("{} (decision)", row_labels[decision]);
    let panel = Panel {
        title,
        values: values.clone(),
        row_labels,
        col_labels: layers.iter().map(|l| l.to_string()).collect(),
        x_label: "layer".into(),
        y_label: "token".into(),
        scale: 0,
        marked_rows: vec![decision],
        flagged_rows: flagged.clone(),
    };
    let model_name = ckpt.name();
    let vec_name = vectors_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // All of the outputs, or none: each goes into place once every one is written.
    let mut outputs = probe::io::OutputSet::new();
    outputs.write_through(&args.out, |figure| {
        viz::heatmaps(
            figure,
            &format!("LAT scan: {model_name}, {vec_name}"),
            &[panel],
            &[clip_scale(vectors.scan_spread(), args.clip)],
            &figure_note(vectors.scan_spread(), args.clip, !flagged.is_empty()),
        )
    })?;
    if let Some(path) = &args.csv {
        let mut csv = csv::Writer::from_writer(Vec::new());
        csv.write_record(std::iter::once("token".to_string()).chain(layers.iter().map(|l| format!("layer_{l}"))))?;
        for (t, row) in tokens.iter().zip(&values) {
            csv.write_record(std::iter::once(t.clone()).chain(row.iter().map(|v| format!("{v:.6}"))))?;
        }
        outputs.write(path, &csv.into_inner()?)?;
    }
    if let Some(npy) = &args.npy {
        let flat: Vec<f32> = values.iter().flatten().map(|&v| v as f32).collect();
        outputs.write(npy, &probe::io::npy_f32(&[values.len(), layers.len()], &flat)?)?;
    }
    outputs.commit()?;
    let last = values[decision].clone();
    println!(
        "last prompt token, per layer: {}",
        last.iter().map(|v| format!("{v:+.2}")).collect::<Vec<_>>().join(" ")
    );
    println!("wrote {}", args.out.display());
    Ok(())
}

/// `--clip`: a positive, finite colour limit.
pub fn parse_clip(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("expected a positive number of spreads, got {text:?}")),
    }
}

/// How far from the midpoint, in clips, a score marks its position as off the distribution
/// the vectors were fitted on: ten times the colour limit (30 spreads at the default) is far
/// beyond any fitted pair, as at early prompt tokens or attention-sink positions with massive
/// activations at layers whose spread is small.
const OFF_DISTRIBUTION_CLIPS: f64 = 10.0;

/// Whether a row of scores is off the fitted distribution (see [`OFF_DISTRIBUTION_CLIPS`]).
pub fn off_distribution(row: &[f64], clip: f64) -> bool {
    row.iter().any(|v| v.abs() > OFF_DISTRIBUTION_CLIPS * clip)
}

/// The colour scale of scores: clipped at `clip`, its bar naming the unit and the clip.
pub fn clip_scale(spread: steer::vectors::ScanSpread, clip: f64) -> viz::ColourScale {
    viz::ColourScale::clip(clip, format!("score ({}), clipped at \u{b1}{clip}", spread.unit()))
}

/// The lines under a scan or heatmap: what the score is, what the outline and the stars mean.
pub fn figure_note(spread: steer::vectors::ScanSpread, clip: f64, any_flagged: bool) -> String {
    let mut note = format!(
        "score = {} of the fitted pairs' projections at each layer\n\
         outlined: the decision row (the last prompt token, where the vectors were read)",
        spread.score_label()
    );
    if any_flagged {
        note.push_str(&format!(
            "\n* a position off the fitted distribution: beyond ±{} at some layer",
            OFF_DISTRIBUTION_CLIPS * clip
        ));
    }
    note
}
