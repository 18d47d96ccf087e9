//! `alens demo`: the whole study on the mini-aligner, each stage through the same command
//! the user would type, ending in one report page.

use anyhow::{Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use steer::sweep::SweepResult;
use steer::vectors::VectorMetadata;

/// Run the whole Aligner interpretability study on the shipped mini-aligner: LAT, a scan of a
/// copy and a correct example, the layer-wise heatmap, the steering sweep and example
/// generations at several alphas; then write DIR/index.html showing every figure.
///
/// Example:
///   alens demo --out demo
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct DemoArgs {
    #[arg(long, default_value = "alens-demo")]
    out: PathBuf,
    /// Records of the test split used for the sweep (more = smoother curves, slower).
    #[arg(long, default_value_t = 60)]
    sweep_records: usize,
    /// Steering strengths of the sweep (start:stop:step or a list). In units of the vector
    /// file (alpha = 1 adds one projection std per steered layer at every position); on the
    /// mini-aligner outputs degrade beyond |alpha| = 1 (repetition by 3), so the demo stops there.
    #[arg(long, default_value = "-1:1:0.25")]
    alphas: String,
}

const COPY_EXAMPLE: (&str, &str) = ("what colour is snow?", "snow is white.");
// An evasive answer: the kind of correction the mini-aligner's reading vector shows most
// clearly (a wrong fact, `snow is green.`, reads only a little above its copy).
const CORRECT_EXAMPLE: (&str, &str) = ("what colour is snow?", "i do not know.");

pub fn run(args: DemoArgs, dispatch: &dyn Fn(&[String]) -> Result<()>) -> Result<()> {
    let out = &args.out;
    crate::outputs::check_dir(out, &[])?;
    let alphas = steer::sweep::parse_alphas(&args.alphas)?;
    // Five of the sweep's alphas for the side-by-side generations: both ends, the middle, the quarters.
    let picks: Vec<String> = [0, 1, 2, 3, 4].iter().map(|q| alphas[q * (alphas.len() - 1) / 4].to_string()).collect();
    std::fs::create_dir_all(out).with_context(|| format!("failed to create {}", out.display()))?;
    let p = |name: &str| out.join(name).display().to_string();
    let stage = |n: usize, what: &str| eprintln!("[{n}/6] {what}");
    let call = |argv: &[&str]| -> Result<()> {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        dispatch(&argv)
    };

    stage(1, "LAT: reading vectors per layer");
    call(&["lat", "--out", &p("vectors.safetensors"), "--plot", &p("lat-accuracy.png"), "--seed", "0"])?;
    stage(2, "LAT scans of a copy and a correct example");
    for (name, (q, a)) in [("scan-copy", COPY_EXAMPLE), ("scan-correct", CORRECT_EXAMPLE)] {
        call(&["scan", "--vectors", &p("vectors.safetensors"), "--question", q, "--answer", a,
               "--out", &p(&format!("{name}.png")), "--csv", &p(&format!("{name}.csv")), "--npy", &p(&format!("{name}.npy"))])?;
    }
    stage(3, "layer-wise correction heatmap");
    call(&["heatmap", "--vectors", &p("vectors.safetensors"), "--out", &p("heatmap.png"), "--csv", &p("heatmap.csv"), "--npy", &p("heatmap.npy")])?;
    stage(4, "steering sweep");
    call(&["sweep", "--vectors", &p("vectors.safetensors"), "--alphas", &args.alphas, "--limit", &args.sweep_records.to_string(),
           "--json", &p("sweep.json"), "--csv", &p("sweep.csv"), "--out", &p("sweep.png")])?;
    stage(5, "example generations at several alphas");
    call(&["generate", "--vectors", &p("vectors.safetensors"), "--question", CORRECT_EXAMPLE.0, "--answer", CORRECT_EXAMPLE.1,
           "--alphas", &picks.join(","), "--json"])?;
    stage(6, "report page");
    let index = write_report(out)?;
    println!("report: {}", index.display());
    Ok(())
}

/// Reads a JSON file an earlier stage wrote, as its type: a missing or changed file is an
/// error here, not a "?" on the page.
fn read_typed<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("failed to read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not what the demo wrote", path.display()))
}

fn write_report(out: &Path) -> Result<PathBuf> {
    let sidecar: VectorMetadata = read_typed(&out.join("vectors.json"))?;
    let sweep: SweepResult = read_typed(&out.join("sweep.json"))?;
    let fmt_list = |v: &[f64]| v.iter().map(|f| format!("{f:.2}")).collect::<Vec<_>>().join(", ");
    let examples: String = sweep
        .examples
        .iter()
        .map(|e| format!("<tr><td>{}</td><td>{}</td></tr>", e["alpha"], html(e["output"].as_str().unwrap_or(""))))
        .collect();
    let figures = [
        ("lat-accuracy.png", "LAT: held-out copy/correct pair accuracy per layer",
         format!("Accuracy by layer: [{}]. Explained variance: [{}]. Default steering layers: {:?}.",
                 fmt_list(&sidecar.accuracy), fmt_list(&sidecar.explained_variance), sidecar.default_layers)),
        ("scan-copy.png", "LAT scan of a copy case (the answer is already right)",
         format!("Q: {} A: {} (numbers: scan-copy.csv)", COPY_EXAMPLE.0, COPY_EXAMPLE.1)),
        ("scan-correct.png", "LAT scan of a correct case (the answer evades; the model completes it)",
         format!("Q: {} A: {} (numbers: scan-correct.csv)", CORRECT_EXAMPLE.0, CORRECT_EXAMPLE.1)),
        ("heatmap.png", "Layer-wise correction activity: (a) correct cases beside (b) copy cases",
         "Mean LAT score of the last prompt tokens per layer, one colour scale (numbers: heatmap.csv).".to_string()),
        ("sweep.png", "Steering: correction magnitude, copy rate and exact-correction rate against alpha",
         format!("alphas [{}]; correct cases' magnitude [{}]; copy cases' magnitude [{}].",
                 fmt_list(&sweep.alphas), fmt_list(&sweep.correct_cases.correction_magnitude),
                 fmt_list(&sweep.copy_cases.correction_magnitude))),
    ];
    let mut body = String::new();
    for (file, title, caption) in &figures {
        body.push_str(&format!("<figure><h2>{}</h2><img src=\"{file}\" alt=\"{}\"><figcaption>{}</figcaption></figure>\n", html(title), html(title), html(caption)));
    }
    let page = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>aligner-lens report</title>\
         <style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}img{{max-width:100%;border:1px solid #ddd}}\
         figure{{margin:2em 0}}td{{padding:2px 8px;border-bottom:1px solid #eee}}</style></head><body>\
         <h1>aligner-lens: the Aligner study on the mini-aligner</h1>\
         <p>Copy-or-correct: where the decision shows up in the layers (LAT), and how adding the reading vector with \
         a negative or positive coefficient dials the model from copying to correcting.</p>\n{body}\
         <h2>Example outputs along the sweep (first correct case)</h2><table><tr><th>alpha</th><th>output</th></tr>{examples}</table>\
         <p>Exports for notebooks: vectors.safetensors (+ .json), scan-*.npy/csv, heatmap.npy/csv, sweep.json/csv.</p>\
         <script>addEventListener('load', () => {{ const broken = [...document.images].filter(i => !i.naturalWidth).length; \
         document.body.dataset.brokenImages = broken; }});</script></body></html>\n"
    );
    let index = out.join("index.html");
    probe::io::write_atomic(&index, page.as_bytes())?;
    Ok(index)
}

fn html(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
