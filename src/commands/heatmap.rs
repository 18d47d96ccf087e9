use crate::model_arg;
use crate::steering_args::load_vectors;
use anyhow::{Context, Result};
use clap::Args;
use probe::lat::correction_activity;
use probe::stimuli::read_jsonl;
use std::path::PathBuf;
use viz::Panel;

/// Layer-wise correction activity over a data set, as in the Aligner paper's figure:
/// (a) correct cases beside (b) copy cases, the mean LAT score of the last --tokens prompt
/// tokens at every layer, and (c) their difference (a) - (b) on its own scale. Scores are
/// (projection - midpoint) / the within-pair spread of the fitted pairs' projections at that
/// layer; (a) and (b) share one colour scale clipped at +/- --clip, the decision row (the last
/// prompt token, where the vectors were read) is outlined, and rows off the fitted
/// distribution are starred. Numbers (unclipped) also go to --csv / --npy.
///
/// Example:
///   alens heatmap --data notebooks-data/stimuli/copy-correct.jsonl --out heatmap.png --csv heatmap.csv
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct HeatmapArgs {
    #[command(flatten)]
    model: model_arg::ModelArgs,
    /// Reading vectors from `alens lat`. Default: the vectors shipped beside the model.
    #[arg(long)]
    vectors: Option<PathBuf>,
    /// Records with question, answer, correction. Default: the LAT stimuli shipped beside the model (copy-correct.jsonl), else the mini-aligner's.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Figure: .png or .svg.
    #[arg(long)]
    out: PathBuf,
    /// How many final prompt tokens to show (1 to 4096).
    /// Bounds: 1 to 4,096.
    #[arg(long, value_parser = crate::bounds::count::<1, 4_096>, default_value_t = 12)]
    tokens: usize,
    /// Records per forward pass.
    /// Bounds: 1 to 4,096.
    #[arg(long, value_parser = crate::bounds::count::<1, 4_096>, default_value_t = 8)]
    batch_size: usize,
    /// Colour limit of panels (a) and (b): scores beyond +/- this many spreads are drawn at
    /// full colour (the numbers written stay unclipped).
    #[arg(long, default_value_t = 3.0, value_parser = crate::commands::scan::parse_clip)]
    clip: f64,
    #[arg(long)]
    csv: Option<PathBuf>,
    /// [2 (correct, copy), tokens, layers] .npy.
    #[arg(long)]
    npy: Option<PathBuf>,
}

pub fn run(args: HeatmapArgs) -> Result<()> {
    let vectors_path = args
        .vectors
        .clone()
        .unwrap_or_else(|| crate::steering_args::default_vectors(&args.model));
    let mut inputs = args.model.input_paths();
    inputs.extend(crate::outputs::vector_inputs(&vectors_path));
    inputs.extend(args.data.clone());
    crate::outputs::check_with_figures(&[args.csv.as_ref(), args.npy.as_ref()], &[Some(&args.out)], &inputs)?;
    let ckpt = args.model.load()?;
    let template = args.model.template()?;
    let (_, vectors) = load_vectors(&vectors_path, &ckpt)?;
    let data = args.data.clone().unwrap_or_else(|| args.model.default_stimuli());
    let records = read_jsonl(&data)?;
    let activity = correction_activity(
        &ckpt,
        &template,
        &records,
        &vectors.scan_directions(),
        args.tokens,
        args.batch_size,
    )
    .with_context(|| format!("correction activity over {}", data.display()))?;
    let tokens = args.tokens;
    let row_labels: Vec<String> = (0..tokens)
        .map(|k| {
            if k + 1 == tokens {
                "last".into()
            } else {
                format!("t-{}", tokens - 1 - k)
            }
        })
        .collect();
    let col_labels: Vec<String> = activity.layers.iter().map(|l| l.to_string()).collect();
    let difference: Vec<Vec<f64>> = activity
        .correct
        .iter()
        .zip(&activity.copy)
        .map(|(a, b)| a.iter().zip(b).map(|(a, b)| a - b).collect())
        .collect();
    let flagged: Vec<usize> = (0..tokens)
        .filter(|&r| {
            crate::commands::scan::off_distribution(&activity.correct[r], args.clip)
                || crate::commands::scan::off_distribution(&activity.copy[r], args.clip)
        })
        .collect();
    let panel = |title: String, values: &Vec<Vec<f64>>, scale: usize| Panel {
        title,
        values: values.clone(),
        // The figure names the decision row; the CSV keeps the plain label readers key on.
        row_labels: row_labels
            .iter()
            .map(|l| {
                if l == "last" {
                    "last (decision)".to_string()
                } else {
                    l.clone()
                }
            })
            .collect(),
        col_labels: col_labels.clone(),
        x_label: "layer".into(),
        y_label: "prompt token (from the end)".into(),
        scale,
        marked_rows: vec![tokens - 1],
        flagged_rows: flagged.clone(),
    };
    // The difference's own scale reaches its largest magnitude over the rows on the fitted
    // distribution, so a starred row cannot wash out where the classes part.
    let difference_scale = viz::ColourScale::symmetric(
        difference
            .iter()
            .enumerate()
            .filter(|(r, _)| !flagged.contains(r))
            .flat_map(|(_, row)| row),
        "(a) - (b), same unit",
    );
    let scales = [
        crate::commands::scan::clip_scale(vectors.scan_spread(), args.clip),
        difference_scale,
    ];
    // All of the outputs, or none: each goes into place once every one is written.
    let mut outputs = probe::io::OutputSet::new();
    outputs.write_through(&args.out, |figure| {
        viz::heatmaps(
            figure,
            &format!("Correction activity by layer: {}", ckpt.name()),
            &[
                panel(
                    format!("(a) correct cases (n={})", activity.n_correct),
                    &activity.correct,
                    0,
                ),
                panel(format!("(b) copy cases (n={})", activity.n_copy), &activity.copy, 0),
                panel("(c) difference (a) - (b)".into(), &difference, 1),
            ],
            &scales,
            &crate::commands::scan::figure_note(vectors.scan_spread(), args.clip, !flagged.is_empty()),
        )
    })?;
    if let Some(path) = &args.csv {
        let mut csv = csv::Writer::from_writer(Vec::new());
        let header: Vec<String> = ["class".to_string(), "token".to_string()]
            .into_iter()
            .chain(activity.layers.iter().map(|l| format!("layer_{l}")))
            .collect();
        csv.write_record(&header)?;
        for (name, means) in [("correct", &activity.correct), ("copy", &activity.copy)] {
            for (label, row) in row_labels.iter().zip(means) {
                let cells = [name.to_string(), label.clone()]
                    .into_iter()
                    .chain(row.iter().map(|v| format!("{v:.6}")));
                csv.write_record(cells)?;
            }
        }
        outputs.write(path, &csv.into_inner()?)?;
    }
    if let Some(npy) = &args.npy {
        let flat: Vec<f32> = activity
            .correct
            .iter()
            .chain(&activity.copy)
            .flatten()
            .map(|&v| v as f32)
            .collect();
        outputs.write(npy, &probe::io::npy_f32(&[2, tokens, activity.layers.len()], &flat)?)?;
    }
    outputs.commit()?;
    let last_row = |means: &Vec<Vec<f64>>| {
        means[tokens - 1]
            .iter()
            .map(|v| format!("{v:+.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!("mean LAT score at the last prompt token, per layer:");
    println!("  correct: {}", last_row(&activity.correct));
    println!("  copy:    {}", last_row(&activity.copy));
    println!("wrote {}", args.out.display());
    Ok(())
}
