//! `alens demo`: the whole study on the mini-aligner, each stage through the same command
//! the user would type, ending in one report page.

use anyhow::{Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use steer::patching::PatchReport;
use steer::sweep::SweepResult;
use steer::vectors::VectorMetadata;

/// Run the whole Aligner interpretability study on one model (default: Aligner-135M, whose
/// base is fetched on first use; `--model mini-aligner` runs the fast fixture): LAT, LAT scans
/// of the first generated tokens of a corrected and a copied case (the paper's Fig. 4 a/b),
/// activation patching layer by layer (where the decision is carried, beside where LAT reads
/// it), the layer-wise heatmap, the steering sweep beside a random direction of the same size
/// (Fig. 4 c) and example generations along the knob; then DIR/index.html shows every figure.
///
/// LAT runs with the settings of the model's shipped vectors (method, position, how and where
/// they steer, the sweep grid), so the demo reproduces them.
///
/// Examples:
///   alens demo --out demo
///   alens demo --model mini-aligner --out demo-mini
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct DemoArgs {
    #[arg(long, default_value = "alens-demo")]
    out: PathBuf,
    /// The Aligner to study: a checkpoint or adapter directory, or a known name.
    #[arg(long, default_value = "aligner-135m")]
    model: PathBuf,
    /// Records of the model's test set used for the sweep (more = smoother curves, slower).
    /// Bounds: 1 to 100,000.
    #[arg(long, value_parser = crate::bounds::count::<1, 100_000>, default_value_t = 60)]
    sweep_records: usize,
    /// Steering strengths of the sweep (start:stop:step or a list), in the unit of the
    /// steering mode. Default: the grid recorded with the model's shipped vectors.
    #[arg(long, allow_hyphen_values = true)]
    alphas: Option<String>,
    /// Copy/correct pairs patched layer by layer (the first of the LAT stimuli).
    /// Bounds: 2 to 100,000.
    #[arg(long, value_parser = crate::bounds::count::<2, 100_000>, default_value_t = 24)]
    patch_pairs: usize,
}

/// (question, answer) of a copied and of a corrected case, for the scans and generations.
struct Examples {
    copy: (&'static str, &'static str),
    correct: (&'static str, &'static str),
}

// The mini-aligner reads lowercase; its clearest correction is an evasive answer (a wrong
// fact, `snow is green.`, reads only a little above its copy).
const MINI_EXAMPLES: Examples = Examples {
    copy: ("what colour is snow?", "snow is white."),
    correct: ("what colour is snow?", "i do not know."),
};
const ENGLISH_EXAMPLES: Examples = Examples {
    copy: ("What colour is snow?", "Snow is white."),
    correct: ("What colour is snow?", "Snow is green."),
};

/// The `alens lat` flags that reproduce the settings of `model`'s shipped vectors.
fn lat_settings(model: &Path) -> Result<Vec<String>> {
    let args = crate::model_arg::ModelArgs {
        model: Some(model.to_path_buf()),
        adapter: None,
        template: None,
        keep_quantized: false,
        bf16_compute: Default::default(),
    };
    let sidecar = args.shipped_beside("copy-correct.json", "notebooks-data/mini-aligner/copy-correct.json");
    let meta: VectorMetadata = read_typed(&sidecar)?;
    let mut flags = vec![
        "--method".to_string(),
        meta.method.clone(),
        "--position".into(),
        meta.position.clone(),
        "--seed".into(),
        meta.seed.to_string(),
    ];
    let mut push = |flag: &str, value: String| flags.extend([flag.to_string(), value]);
    if let Some(mode) = meta.steer_mode {
        push("--steer-mode", mode.name().into());
    }
    if let Some(positions) = meta.steer_positions {
        push("--steer-positions", positions.name().into());
    }
    if !meta.alphas.is_empty() {
        push(
            "--alphas",
            meta.alphas.iter().map(f64::to_string).collect::<Vec<_>>().join(","),
        );
    }
    if meta.steer_layers_chosen {
        push(
            "--steer-layers",
            meta.default_layers
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(","),
        );
    }
    Ok(flags)
}

/// Every file the demo writes into its directory.
const REPORT_FILES: [&str; 19] = [
    "vectors.safetensors",
    "vectors.json",
    "lat-accuracy.png",
    "patch.png",
    "patch.json",
    "patch.csv",
    "scan-correct.png",
    "scan-correct.csv",
    "scan-correct.npy",
    "scan-copy.png",
    "scan-copy.csv",
    "scan-copy.npy",
    "heatmap.png",
    "heatmap.csv",
    "heatmap.npy",
    "sweep.json",
    "sweep.csv",
    "sweep.png",
    "index.html",
];

pub fn run(args: DemoArgs, dispatch: &dyn Fn(&[String]) -> Result<()>) -> Result<()> {
    let out = &args.out;
    crate::outputs::check_dir(out, &[], &REPORT_FILES)?;
    let model = args.model.display().to_string();
    let examples = if model == crate::model_arg::MINI_ALIGNER_NAME || args.model.ends_with("mini-aligner") {
        MINI_EXAMPLES
    } else {
        ENGLISH_EXAMPLES
    };
    let lat_flags = lat_settings(&crate::model_arg::resolve(&args.model)?)?;
    if let Some(alphas) = &args.alphas {
        // The sweep would refuse a bad grid only after LAT, the scans and the heatmap.
        steer::sweep::parse_alphas(alphas).context("--alphas")?;
    }
    // Every stage writes into a staging directory beside DIR, moved in once the page is
    // written: an error or Ctrl-C leaves DIR as it was, never a half-built report.
    let staged = probe::io::StagedDir::create(out)?;
    let out = staged.path();
    let p = |name: &str| out.join(name).display().to_string();
    let stage = |n: usize, what: &str| eprintln!("[{n}/7] {what}");
    let call = |argv: &[&str]| -> Result<()> {
        let argv: Vec<String> = argv
            .iter()
            .map(|s| s.to_string())
            .chain(["--model".to_string(), model.clone()])
            .collect();
        dispatch(&argv)
    };

    stage(1, "LAT: reading vectors per layer");
    let (vectors, lat_plot) = (p("vectors.safetensors"), p("lat-accuracy.png"));
    let lat: Vec<&str> = ["lat", "--out", &vectors, "--plot", &lat_plot]
        .into_iter()
        .chain(lat_flags.iter().map(String::as_str))
        .collect();
    call(&lat)?;
    stage(
        2,
        "activation patching: where the decision is carried, beside where LAT reads it",
    );
    let patch_pairs = args.patch_pairs.to_string();
    call(&[
        "patch",
        "--vectors",
        &vectors,
        "--max-pairs",
        &patch_pairs,
        "--out",
        &p("patch.png"),
        "--json",
        &p("patch.json"),
        "--csv",
        &p("patch.csv"),
    ])?;
    stage(
        3,
        "LAT scans of the first generated tokens: a corrected and a copied case",
    );
    for (name, (q, a)) in [("scan-correct", examples.correct), ("scan-copy", examples.copy)] {
        call(&[
            "scan",
            "--vectors",
            &p("vectors.safetensors"),
            "--question",
            q,
            "--answer",
            a,
            "--generated",
            "20",
            "--out",
            &p(&format!("{name}.png")),
            "--csv",
            &p(&format!("{name}.csv")),
            "--npy",
            &p(&format!("{name}.npy")),
        ])?;
    }
    stage(4, "layer-wise correction heatmap");
    call(&[
        "heatmap",
        "--vectors",
        &p("vectors.safetensors"),
        "--out",
        &p("heatmap.png"),
        "--csv",
        &p("heatmap.csv"),
        "--npy",
        &p("heatmap.npy"),
    ])?;
    stage(5, "steering sweep, beside a random direction of the same size");
    let limit = args.sweep_records.to_string();
    let mut sweep: Vec<String> = [
        "sweep",
        "--vectors",
        &vectors,
        "--limit",
        &limit,
        "--random-control",
        "--json",
        &p("sweep.json"),
        "--csv",
        &p("sweep.csv"),
        "--out",
        &p("sweep.png"),
    ]
    .map(String::from)
    .to_vec();
    if let Some(alphas) = &args.alphas {
        sweep.extend(["--alphas".to_string(), alphas.clone()]);
    }
    call(&sweep.iter().map(String::as_str).collect::<Vec<_>>())?;
    stage(6, "example generations along the knob");
    let swept: SweepResult = read_typed(&out.join("sweep.json"))?;
    // Five of the sweep's alphas: both ends, the middle, the quarters.
    let picks: Vec<String> = [0, 1, 2, 3, 4]
        .iter()
        .map(|q| swept.alphas[q * (swept.alphas.len() - 1) / 4].to_string())
        .collect();
    for (q, a) in [examples.correct, examples.copy] {
        call(&[
            "generate",
            "--vectors",
            &p("vectors.safetensors"),
            "--question",
            q,
            "--answer",
            a,
            "--alphas",
            &picks.join(","),
            "--json",
        ])?;
    }
    stage(7, "report page");
    let index = write_report(out, &examples)?;
    staged.commit()?;
    println!(
        "report: {}",
        args.out.join(index.file_name().unwrap_or_default()).display()
    );
    Ok(())
}

/// Reads a JSON file an earlier stage wrote, as its type: a missing or changed file is an
/// error here, not a "?" on the page.
fn read_typed<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("failed to read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not what the demo wrote", path.display()))
}

fn write_report(out: &Path, cases: &Examples) -> Result<PathBuf> {
    let sidecar: VectorMetadata = read_typed(&out.join("vectors.json"))?;
    let sweep: SweepResult = read_typed(&out.join("sweep.json"))?;
    let fmt_list = |v: &[f64]| v.iter().map(|f| format!("{f:.2}")).collect::<Vec<_>>().join(", ");
    let examples: String = sweep
        .examples
        .iter()
        .map(|e| {
            format!(
                "<tr><td>{}</td><td>{}</td></tr>",
                e["alpha"],
                html(e["output"].as_str().unwrap_or(""))
            )
        })
        .collect();
    let figures = [
        ("lat-accuracy.png", "LAT: held-out copy/correct pair accuracy per layer",
         format!("Accuracy by layer: [{}]. Explained variance: [{}]. Default steering layers: {:?}.",
                 fmt_list(&sidecar.per_layer(|r| r.accuracy)), fmt_list(&sidecar.per_layer(|r| r.explained_variance)), sidecar.default_layers)),
        ("patch.png", "Activation patching: where the decision is carried, beside where LAT reads it",
         patch_caption(&read_typed(&out.join("patch.json"))?)),
        ("scan-correct.png", "(a) LAT scan of the first generated tokens of a case that needs correcting",
         format!("Q: {} A: {} (rows: the last prompt token, outlined: the decision, then the output's tokens; score: (projection - midpoint) / \
                  the within-pair spread of the fitted pairs' projections at each layer, colour clipped at \u{b1}3; numbers, unclipped: scan-correct.csv). \
                  The decision row should read red.", cases.correct.0, cases.correct.1)),
        ("scan-copy.png", "(b) LAT scan of the first generated tokens of a case whose answer is already good",
         format!("Q: {} A: {} (same scale; numbers: scan-copy.csv). The decision row should read blue.", cases.copy.0, cases.copy.1)),
        ("heatmap.png", "Layer-wise correction activity: (a) correct cases, (b) copy cases, (c) their difference",
         "Mean LAT score of the last prompt tokens per layer: (projection - midpoint) / the within-pair spread of the fitted pairs' projections \
          at that layer. (a) and (b) share one colour scale clipped at \u{b1}3 (the share of cells beyond it is printed under the figure); \
          (c) = (a) - (b) on its own symmetric scale shows where the classes part. Outlined: the decision row (the last prompt token, where \
          the vectors were read): red for correct cases, blue for copy cases. Starred rows lie far off the fitted distribution \
          (numbers, unclipped: heatmap.csv).".to_string()),
        ("sweep.png", "(c) Steering: correction magnitude (left, the random control pale and dashed) and copy, exact-correction and degenerate rates (right) against alpha",
         format!("{} steering at {:?} positions, layers {:?} ({}). alphas [{}]; correct cases' magnitude [{}]; copy cases' magnitude [{}]; \
                  random control's magnitude (correct cases) [{}].",
                 sweep.steer_mode.name(), sweep.steer_positions, sweep.layers, sweep.alpha_unit,
                 fmt_list(&sweep.alphas), fmt_list(&sweep.correct_cases.correction_magnitude),
                 fmt_list(&sweep.copy_cases.correction_magnitude),
                 sweep.random_control.as_ref().map(|c| fmt_list(&c.correct_cases.correction_magnitude)).unwrap_or_default())),
    ];
    let mut body = String::new();
    for (file, title, caption) in &figures {
        body.push_str(&format!(
            "<figure><h2>{}</h2><img src=\"{file}\" alt=\"{}\"><figcaption>{}</figcaption></figure>\n",
            html(title),
            html(title),
            html(caption)
        ));
    }
    let page = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>aligner-lens report</title>\
         <style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}img{{max-width:100%;border:1px solid #ddd}}\
         figure{{margin:2em 0}}td{{padding:2px 8px;border-bottom:1px solid #eee}}</style></head><body>\
         <h1>aligner-lens: the Aligner study</h1>\
         <p>Copy-or-correct: where the decision shows up in the layers (LAT), and how adding the reading vector with \
         a negative or positive coefficient dials the model from copying to correcting.</p>\n{body}\
         <h2>Example outputs along the sweep (first correct case)</h2><table><tr><th>alpha</th><th>output</th></tr>{examples}</table>\
         <p>Exports for notebooks: vectors.safetensors (+ .json), patch.json/csv, scan-*.npy/csv, heatmap.npy/csv, sweep.json/csv.</p>\
         <script>addEventListener('load', () => {{ const broken = [...document.images].filter(i => !i.naturalWidth).length; \
         document.body.dataset.brokenImages = broken; }});</script></body></html>\n"
    );
    let index = out.join("index.html");
    probe::io::write_atomic(&index, page.as_bytes())?;
    Ok(index)
}

/// What the patching figure shows on the model at hand, in one sentence, then its numbers.
fn patch_caption(report: &PatchReport) -> String {
    let (forward, back) = (
        &report.correct_from_copy.switch_rate,
        &report.copy_from_correct.switch_rate,
    );
    let both: Vec<f64> = forward.iter().zip(back).map(|(a, b)| (a + b) / 2.0).collect();
    let layer_where =
        |test: &dyn Fn(usize) -> bool| (0..report.layers.len()).find(|&i| test(i)).map(|i| report.layers[i]);
    let first_switch = layer_where(&|i| forward[i] > 0.0 || back[i] > 0.0);
    let half = layer_where(&|i| both[i] >= 0.5);
    let readable = report.lat_accuracy.as_ref().and_then(|accuracy| {
        (0..report.layers.len()).find_map(|i| accuracy[i].filter(|&a| a >= 0.9).map(|a| (report.layers[i], a)))
    });
    let unrelated = &report.controls.unrelated;
    let control_peak = unrelated
        .correct_from_copy
        .switch_rate
        .iter()
        .chain(&unrelated.copy_from_correct.switch_rate)
        .fold(0.0f64, |m, &v| m.max(v));
    let exact = report.controls.self_patch.identical.iter().all(|&same| same);
    let read = match readable {
        Some((layer, accuracy)) => format!(
            "LAT reads the decision with {:.0}% held-out accuracy from layer {layer}",
            100.0 * accuracy
        ),
        None => "LAT reads the decision with under 90% held-out accuracy at every layer".to_string(),
    };
    let half_of_them = match half {
        Some(half) => format!("half of them (both directions' mean) from layer {half}"),
        None => "never half of them".to_string(),
    };
    let carried = match first_switch {
        None => "patching the decision position switches no first token at any layer".to_string(),
        Some(first) if first == report.layers[0] => {
            format!("patching the decision position switches first tokens from the first layer patched ({first}), {half_of_them}")
        }
        Some(first) => {
            format!("patching the decision position switches no first token before layer {first}, {half_of_them}")
        }
    };
    // "Readable early, carried late" is a contrast only where the model shows one.
    let joint = match (readable, first_switch) {
        (Some((read_at, _)), Some(first)) if first > read_at => "but",
        _ => "and",
    };
    format!(
        "On this model, {read}, {joint} {carried}. Controls: patched from an unrelated record of the same class, at most {:.0}% switch at any layer \
         ({} pairs); patched from the run itself, {}. {} of {} pairs start differently in their clean runs ({} at {} positions). \
         Switch rates, correct case from copy: [{}]; copy case from correct: [{}].",
        100.0 * control_peak,
        unrelated.pairs,
        if exact { "bit for bit the clean run at every layer" } else { "NOT the clean run at some layer" },
        report.pairs_used,
        report.pairs,
        report.point,
        report.positions.name(),
        forward.iter().map(|v| format!("{v:.2}")).collect::<Vec<_>>().join(", "),
        back.iter().map(|v| format!("{v:.2}")).collect::<Vec<_>>().join(", "),
    )
}

fn html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
