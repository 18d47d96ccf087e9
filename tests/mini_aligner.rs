//! The shipped mini-aligner, through the CLI with every default: it corrects and it copies.
//! (Regression floors below the measured rates; the model card has the full table.)

mod common;
use common::*;

#[test]
fn default_model_corrects_the_readme_example() {
    let out = alens_ok(&[
        "generate",
        "--question",
        "what is the capital of france?",
        "--answer",
        "the capital of france is rome.",
    ]);
    assert_eq!(out.trim(), "actually, the capital of france is paris.");
    let out = alens_ok(&[
        "generate",
        "--question",
        "what is the capital of france?",
        "--answer",
        "the capital of france is paris.",
    ]);
    assert_eq!(out.trim(), "the capital of france is paris.", "a good answer is copied");
}

#[test]
fn eval_on_the_head_of_the_test_split() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("head.jsonl");
    let text = std::fs::read_to_string(repo().join("notebooks-data/corpus/test.jsonl")).unwrap();
    std::fs::write(&data, text.lines().take(90).collect::<Vec<_>>().join("\n")).unwrap();
    let json = dir.path().join("eval.json");
    let outputs = dir.path().join("outputs.jsonl");
    alens_ok(&[
        "eval",
        "--data",
        data.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        "--outputs",
        outputs.to_str().unwrap(),
    ]);
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    // --outputs lists every record in order, and its `exact` flags add up to the rates.
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&outputs)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 90);
    assert_eq!(
        rows[0]["question"].as_str(),
        text.lines()
            .next()
            .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .unwrap()["question"]
            .as_str()
    );
    let exact = rows.iter().filter(|r| r["exact"] == true).count() as f64;
    let rate = |key: &str, n: &str| report[key].as_f64().unwrap() * report[n].as_f64().unwrap();
    assert!(
        (exact - rate("copy_exact", "n_copy") - rate("correct_exact", "n_correct")).abs() < 1e-6,
        "{exact} exact rows vs {report}"
    );
    assert!(rows.iter().all(|r| r["output"].is_string()));
    assert_eq!(report["n"], 90);
    assert!(report["copy_exact"].as_f64().unwrap() >= 0.75, "{report}");
    assert!(report["correct_exact"].as_f64().unwrap() >= 0.9, "{report}");
    for category in ["helpful", "honest", "harmless"] {
        assert!(report["per_category"][category]["n"].as_u64().unwrap() > 0);
    }
}

/// The heatmap's numbers, not just its PNG: at the last prompt token correct cases read above
/// copy cases at every layer, and the two fall on opposite sides of the midpoint from layer 4.
#[test]
fn heatmap_class_means_have_the_expected_signs() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("heat.csv");
    alens_ok(&[
        "heatmap",
        "--out",
        dir.path().join("heat.png").to_str().unwrap(),
        "--csv",
        csv.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&csv).unwrap();
    let last = |class: &str| -> Vec<f64> {
        let line = text.lines().find(|l| l.starts_with(&format!("{class},last,"))).unwrap();
        line.split(',').skip(2).map(|v| v.parse().unwrap()).collect()
    };
    let (correct, copy) = (last("correct"), last("copy"));
    assert_eq!(correct.len(), 6);
    for (layer, (c, k)) in correct.iter().zip(&copy).enumerate() {
        assert!(c > k, "layer {layer}: correct {c} should read above copy {k}");
    }
    for layer in 4..6 {
        assert!(
            correct[layer] > 0.0 && copy[layer] < 0.0,
            "layer {layer}: {correct:?} vs {copy:?}"
        );
    }
}

/// A sweep at alpha 0 is the unsteered model: its rates equal eval's on the same records.
#[test]
fn sweep_at_alpha_zero_equals_unsteered_eval() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("head.jsonl");
    let text = std::fs::read_to_string(repo().join("notebooks-data/corpus/test.jsonl")).unwrap();
    std::fs::write(&data, text.lines().take(40).collect::<Vec<_>>().join("\n")).unwrap();
    let (sweep, eval) = (dir.path().join("sweep.json"), dir.path().join("eval.json"));
    let d = data.to_str().unwrap();
    alens_ok(&["sweep", "--data", d, "--alphas", "0", "--json", sweep.to_str().unwrap()]);
    alens_ok(&["eval", "--data", d, "--json", eval.to_str().unwrap()]);
    let read = |p: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let (sweep, eval) = (read(&sweep), read(&eval));
    let s = |class: &str, key: &str| sweep[class][key][0].as_f64().unwrap();
    assert_eq!(sweep["copy_cases"]["n"], eval["n_copy"]);
    assert_eq!(sweep["correct_cases"]["n"], eval["n_correct"]);
    assert!((s("copy_cases", "exact_correction_rate") - eval["copy_exact"].as_f64().unwrap()).abs() < 1e-12);
    assert!((s("correct_cases", "exact_correction_rate") - eval["correct_exact"].as_f64().unwrap()).abs() < 1e-12);
    let n = eval["n"].as_f64().unwrap();
    let mean = (s("copy_cases", "correction_magnitude") * eval["n_copy"].as_f64().unwrap()
        + s("correct_cases", "correction_magnitude") * eval["n_correct"].as_f64().unwrap())
        / n;
    assert!(
        (mean - eval["mean_correction_magnitude"].as_f64().unwrap()).abs() < 1e-9,
        "{mean} vs {eval}"
    );
}

/// `--position answer-mean` reads another position than `last` (different vectors), `--template`
/// changes what the model reads, and `--site` moves where the vector is added.
#[test]
fn answer_mean_template_and_site_change_what_they_should() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).display().to_string();
    alens_ok(&["lat", "--out", &p("last.safetensors"), "--seed", "0"]);
    alens_ok(&[
        "lat",
        "--out",
        &p("mean.safetensors"),
        "--seed",
        "0",
        "--position",
        "answer-mean",
    ]);
    let sidecar: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p("mean.json")).unwrap()).unwrap();
    assert_eq!(sidecar["position"], "answer-mean");
    assert_ne!(
        std::fs::read(p("last.safetensors")).unwrap(),
        std::fs::read(p("mean.safetensors")).unwrap()
    );

    let capture = |extra: &[&str], out: &str| {
        let mut args = vec![
            "capture",
            "--data",
            "notebooks-data/stimuli/copy-correct.jsonl",
            "--positions",
            "last",
            "--out",
        ];
        let out = p(out);
        args.push(&out);
        args.extend_from_slice(extra);
        alens_ok(&args);
        std::fs::read(out).unwrap()
    };
    let default = capture(&[], "a.safetensors");
    let same = capture(
        &["--template", probe::model::template::DEFAULT_TEMPLATE],
        "b.safetensors",
    );
    let other = capture(&["--template", "Q: {question} A: {answer} Fixed:"], "c.safetensors");
    let tensor = |bytes: &[u8]| {
        safetensors::SafeTensors::deserialize(bytes)
            .unwrap()
            .tensor("blocks.5.hook_resid_post")
            .unwrap()
            .data()
            .to_vec()
    };
    assert_eq!(tensor(&default), tensor(&same), "the default template is the paper's");
    assert_ne!(tensor(&default), tensor(&other), "another template is another prompt");

    // Where the vector goes is tested against the model in steer's tests; here, that the flag
    // takes per-layer sites and refuses the others.
    alens_ok(&[
        "generate",
        "--question",
        "q",
        "--answer",
        "a",
        "--alpha",
        "1",
        "--layers",
        "2",
        "--site",
        "attn_out",
    ]);
    for site in ["embed", "ln_final"] {
        let out = alens(&[
            "generate",
            "--question",
            "q",
            "--answer",
            "a",
            "--alpha",
            "1",
            "--site",
            site,
        ]);
        assert!(
            !out.status.success(),
            "{site} has no layer: a per-layer vector cannot go there"
        );
    }
}

/// Project steering at the decision position: recorded in the sweep JSON with its unit; alpha
/// 0 is the unsteered model; it moves outputs; the default grid comes from the sidecar.
#[test]
fn project_steering_at_the_decision_position() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("head.jsonl");
    let text = std::fs::read_to_string(repo().join("notebooks-data/corpus/test.jsonl")).unwrap();
    std::fs::write(&data, text.lines().take(24).collect::<Vec<_>>().join("\n")).unwrap();
    let sweep = dir.path().join("sweep.json");
    alens_ok(&[
        "sweep",
        "--data",
        data.to_str().unwrap(),
        "--steer-mode",
        "project",
        "--steer-positions",
        "decision",
        "--layers",
        "0-5",
        "--json",
        sweep.to_str().unwrap(),
        "--max-new-tokens",
        "24",
    ]);
    let sweep: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&sweep).unwrap()).unwrap();
    assert_eq!(sweep["steer_mode"], "project");
    assert_eq!(sweep["steer_positions"], "decision");
    assert!(sweep["alpha_unit"].as_str().unwrap().contains("class mean"));
    let alphas: Vec<f64> = sweep["alphas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_f64().unwrap())
        .collect();
    assert_eq!(
        alphas,
        vec![-1.0, -0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0],
        "the shipped sidecar's grid"
    );
    let magnitude: Vec<f64> = sweep["copy_cases"]["correction_magnitude"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_f64().unwrap())
        .collect();
    assert!(
        magnitude.iter().any(|m| (m - magnitude[4]).abs() > 1e-9),
        "steering every layer's decision state moves nothing: {magnitude:?}"
    );

    let generate = |alpha: &str| {
        alens_ok(&[
            "generate",
            "--question",
            "what colour is snow?",
            "--answer",
            "snow is green.",
            "--steer-mode",
            "project",
            "--steer-positions",
            "decision",
            "--alpha",
            alpha,
        ])
    };
    let plain = alens_ok(&[
        "generate",
        "--question",
        "what colour is snow?",
        "--answer",
        "snow is green.",
    ]);
    assert_eq!(generate("0"), plain, "alpha 0 leaves the model alone");
}

/// `scan --generated` scans the last prompt token and then the model's own output.
#[test]
fn scan_over_generated_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let (png, csv) = (dir.path().join("s.png"), dir.path().join("s.csv"));
    let out = alens_ok(&[
        "scan",
        "--question",
        "what colour is snow?",
        "--answer",
        "snow is green.",
        "--generated",
        "20",
        "--out",
        png.to_str().unwrap(),
        "--csv",
        csv.to_str().unwrap(),
    ]);
    let output = out
        .lines()
        .find_map(|l| l.strip_prefix("output: "))
        .expect("the output is printed");
    assert_eq!(output, "actually, snow is white.");
    let rows: Vec<String> = std::fs::read_to_string(&csv)
        .unwrap()
        .lines()
        .skip(1)
        .map(String::from)
        .collect();
    assert_eq!(
        rows.len(),
        1 + 6,
        "the last prompt token and the six output tokens: {rows:?}"
    );
    assert!(rows[1].starts_with("_actually,"), "{rows:?}");
}

/// LAT under one seed is bit-identical run to run, and outputs say where they came from: the
/// alens version, the command line, the seed and the model's content hash.
#[test]
fn outputs_record_provenance_and_lat_is_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    alens_ok(&["lat", "--seed", "3", "--out", &p("a.safetensors")]);
    alens_ok(&["lat", "--seed", "3", "--out", &p("b.safetensors")]);
    assert_eq!(
        std::fs::read(p("a.safetensors")).unwrap(),
        std::fs::read(p("b.safetensors")).unwrap()
    );
    let sidecar: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p("a.json")).unwrap()).unwrap();
    let provenance = &sidecar["provenance"];
    assert_eq!(provenance["alens_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(provenance["seed"], 3);
    assert!(provenance["command_line"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a == "lat"));
    let hash = provenance["model"]["content_hash"].as_str().unwrap();
    assert_eq!(hash.len(), 64);

    let data = dir.path().join("head.jsonl");
    let text = std::fs::read_to_string(repo().join("notebooks-data/corpus/test.jsonl")).unwrap();
    std::fs::write(&data, text.lines().take(6).collect::<Vec<_>>().join("\n")).unwrap();
    alens_ok(&["eval", "--data", data.to_str().unwrap(), "--json", &p("eval.json")]);
    let eval: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p("eval.json")).unwrap()).unwrap();
    assert_eq!(
        eval["provenance"]["model"]["content_hash"], hash,
        "one model, one identity"
    );
}
