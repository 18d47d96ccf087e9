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
/// Example:
///   alens scan --question "what colour is snow?" --answer "snow is green." --out scan.png --csv scan.csv
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct ScanArgs {
    #[command(flatten)]
    model: model_arg::ModelArgs,
    /// Reading vectors from `alens lat`. Default: the mini-aligner's shipped vectors.
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
}

pub fn run(args: ScanArgs) -> Result<()> {
    let mut inputs = args.model.input_paths();
    inputs.extend(crate::outputs::vector_inputs(&args.vectors.clone().unwrap_or_else(|| model_arg::shipped(crate::steering_args::SHIPPED_VECTORS))));
    crate::outputs::check(&[Some(&args.out), args.csv.as_ref(), args.npy.as_ref()], &inputs)?;
    let ckpt = args.model.load()?;
    let template = args.model.template()?;
    let (vectors_path, vectors) = load_vectors(&args.vectors, &ckpt)?;
    let tokenizer = ckpt.tokenizer()?;
    let ids = tokenizer.encode(&template.render(&args.question, &args.answer))?;
    let directions = vectors.scan_directions();
    let values = scan(&ckpt, &ids, &directions)?.values;
    let tokens = tokenizer.token_strings(&ids).into_iter().map(|t| t.replace('\u{120}', "_")).collect::<Vec<_>>();
    let layers: Vec<usize> = directions.keys().copied().collect();
    let panel = Panel {
        title: format!("Q: {} | A: {}", args.question, args.answer),
        values: values.clone(),
        row_labels: tokens.clone(),
        col_labels: layers.iter().map(|l| l.to_string()).collect(),
        x_label: "layer".into(),
        y_label: "token".into(),
    };
    let model_name = ckpt.name();
    let vec_name = vectors_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    viz::heatmaps(&args.out, &format!("LAT scan: {model_name}, {vec_name}"), &[panel], "(projection - midpoint) / std")?;
    if let Some(path) = &args.csv {
        let mut csv = csv::Writer::from_writer(Vec::new());
        csv.write_record(std::iter::once("token".to_string()).chain(layers.iter().map(|l| format!("layer_{l}"))))?;
        for (t, row) in tokens.iter().zip(&values) {
            csv.write_record(std::iter::once(t.clone()).chain(row.iter().map(|v| format!("{v:.6}"))))?;
        }
        probe::io::write_atomic(path, &csv.into_inner()?)?;
    }
    if let Some(npy) = &args.npy {
        let flat: Vec<f32> = values.iter().flatten().map(|&v| v as f32).collect();
        probe::io::write_npy_f32(npy, &[values.len(), layers.len()], &flat)?;
    }
    let last = values.last().cloned().unwrap_or_default();
    println!("last prompt token, per layer: {}", last.iter().map(|v| format!("{v:+.2}")).collect::<Vec<_>>().join(" "));
    println!("wrote {}", args.out.display());
    Ok(())
}
