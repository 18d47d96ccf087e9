use crate::model_arg;
use crate::steering_args::load_vectors;
use anyhow::{bail, Result};
use clap::Args;
use probe::lat::scan;
use probe::stimuli::read_jsonl;
use std::path::PathBuf;
use viz::Panel;

/// Layer-wise correction activity over a data set, as in the Aligner paper's figure:
/// (a) correct cases beside (b) copy cases, the mean LAT score of the last --tokens prompt
/// tokens at every layer, on one shared colour scale. Numbers also go to --csv / --npy.
///
/// Example:
///   alens heatmap --data notebooks-data/stimuli/copy-correct.jsonl --out heatmap.png --csv heatmap.csv
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct HeatmapArgs {
    #[command(flatten)]
    model: model_arg::ModelArgs,
    /// Reading vectors from `alens lat`. Default: the mini-aligner's shipped vectors.
    #[arg(long)]
    vectors: Option<PathBuf>,
    /// Records with question, answer, correction. Default: the shipped copy/correct stimuli.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Figure: .png or .svg.
    #[arg(long)]
    out: PathBuf,
    /// How many final prompt tokens to show.
    #[arg(long, default_value_t = 12)]
    tokens: usize,
    #[arg(long)]
    csv: Option<PathBuf>,
    /// [2 (correct, copy), tokens, layers] .npy.
    #[arg(long)]
    npy: Option<PathBuf>,
}

pub fn run(args: HeatmapArgs) -> Result<()> {
    let ckpt = args.model.load()?;
    let template = args.model.template()?;
    let (_, vectors) = load_vectors(&args.vectors, &ckpt)?;
    let data = args.data.clone().unwrap_or_else(|| model_arg::shipped("notebooks-data/stimuli/copy-correct.jsonl"));
    let records = read_jsonl(&data)?;
    if args.tokens == 0 {
        bail!("--tokens must be at least 1");
    }
    let directions = vectors.scan_directions();
    let layers: Vec<usize> = directions.keys().copied().collect();
    let tokenizer = ckpt.tokenizer()?;
    // [class][token from the end][layer] sums; class 0 = correct, 1 = copy.
    let mut sums = vec![vec![vec![0.0f64; layers.len()]; args.tokens]; 2];
    let mut counts = [0usize; 2];
    let progress = probe::progress::bar(records.len() as u64, "heatmap");
    for (i, r) in records.iter().enumerate() {
        let Some(is_copy) = r.is_copy() else { bail!("record {} has no correction", i + 1) };
        let ids = tokenizer.encode(&template.render(&r.question, &r.answer))?;
        let values = scan(&ckpt, &ids, &directions)?;
        let class = usize::from(is_copy);
        counts[class] += 1;
        for k in 0..args.tokens.min(values.len()) {
            let row = &values[values.len() - args.tokens.min(values.len()) + k];
            let slot = args.tokens - args.tokens.min(values.len()) + k;
            for (l, v) in row.iter().enumerate() {
                sums[class][slot][l] += v;
            }
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    if counts[0] == 0 || counts[1] == 0 {
        bail!("{} needs both correct cases and copy cases (has {} and {})", data.display(), counts[0], counts[1]);
    }
    let means: Vec<Vec<Vec<f64>>> =
        (0..2).map(|c| sums[c].iter().map(|row| row.iter().map(|v| v / counts[c] as f64).collect()).collect()).collect();
    let row_labels: Vec<String> = (0..args.tokens).map(|k| if k + 1 == args.tokens { "last".into() } else { format!("t-{}", args.tokens - 1 - k) }).collect();
    let col_labels: Vec<String> = layers.iter().map(|l| l.to_string()).collect();
    let panel = |title: String, values: Vec<Vec<f64>>| Panel {
        title,
        values,
        row_labels: row_labels.clone(),
        col_labels: col_labels.clone(),
        x_label: "layer".into(),
        y_label: "prompt token (from the end)".into(),
    };
    let model_name = ckpt.name();
    viz::heatmaps(
        &args.out,
        &format!("Correction activity by layer: {model_name}"),
        &[panel(format!("(a) correct cases (n={})", counts[0]), means[0].clone()), panel(format!("(b) copy cases (n={})", counts[1]), means[1].clone())],
        "mean LAT score",
    )?;
    if let Some(csv) = &args.csv {
        let mut text = format!("class,token,{}\n", layers.iter().map(|l| format!("layer_{l}")).collect::<Vec<_>>().join(","));
        for (c, name) in ["correct", "copy"].iter().enumerate() {
            for (label, row) in row_labels.iter().zip(&means[c]) {
                text.push_str(&format!("{name},{label},{}\n", row.iter().map(|v| format!("{v:.6}")).collect::<Vec<_>>().join(",")));
            }
        }
        probe::io::write_atomic(csv, text.as_bytes())?;
    }
    if let Some(npy) = &args.npy {
        let flat: Vec<f32> = means.iter().flatten().flatten().map(|&v| v as f32).collect();
        probe::io::write_npy_f32(npy, &[2, args.tokens, layers.len()], &flat)?;
    }
    println!("mean LAT score at the last prompt token, per layer:");
    println!("  correct: {}", means[0][args.tokens - 1].iter().map(|v| format!("{v:+.2}")).collect::<Vec<_>>().join(" "));
    println!("  copy:    {}", means[1][args.tokens - 1].iter().map(|v| format!("{v:+.2}")).collect::<Vec<_>>().join(" "));
    println!("wrote {}", args.out.display());
    Ok(())
}
