//! The study commands end to end on a tiny golden checkpoint: lat, scan, heatmap, generate
//! with steering, sweep; and their refusals of bad input.

mod common;
use common::*;
use std::path::Path;

fn write_stimuli(path: &Path, pairs: usize) {
    let mut text = String::new();
    for k in 0..pairs {
        let q = format!("w{} w{}", k % 20, (k * 7) % 20 + 20);
        let good = format!("w{} w{} w{}", 40 + k % 5, 45 + k % 7, 41 + k % 3);
        let bad = format!("w{} w{}", 52 + k % 6, 50 + k % 9);
        text.push_str(&format!(
            "{{\"question\": \"{q}\", \"answer\": \"{good}\", \"correction\": \"{good}\"}}\n"
        ));
        text.push_str(&format!(
            "{{\"question\": \"{q}\", \"answer\": \"{bad}\", \"correction\": \"{good}\"}}\n"
        ));
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn lat_scan_heatmap_on_a_golden_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    let model = golden("llama_gqa").display().to_string();
    write_stimuli(dir.path().join("stim.jsonl").as_path(), 24);

    let table = alens_ok(&[
        "lat",
        "--model",
        &model,
        "--data",
        &p("stim.jsonl"),
        "--out",
        &p("v.safetensors"),
        "--gguf",
        &p("v.gguf"),
        "--plot",
        &p("acc.png"),
        "--seed",
        "3",
    ]);
    assert!(
        table.contains("held-out acc") && table.contains("explained variance"),
        "{table}"
    );
    let sidecar: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p("v.json")).unwrap()).unwrap();
    for key in [
        "model",
        "d_model",
        "layers",
        "accuracy",
        "explained_variance",
        "method",
        "position",
        "seed",
        "default_layers",
        "sign",
    ] {
        assert!(sidecar.get(key).is_some(), "sidecar lacks {key}");
    }
    assert_eq!(sidecar["sign"], "positive = correct");
    assert_eq!(sidecar["layers"].as_array().unwrap().len(), 3);
    assert_eq!(read_f32(Path::new(&p("v.safetensors"))).len(), 3);

    // Same seed, same bytes.
    alens_ok(&[
        "lat",
        "--model",
        &model,
        "--data",
        &p("stim.jsonl"),
        "--out",
        &p("v2.safetensors"),
        "--seed",
        "3",
    ]);
    assert_eq!(
        std::fs::read(p("v.safetensors")).unwrap(),
        std::fs::read(p("v2.safetensors")).unwrap()
    );

    alens_ok(&[
        "scan",
        "--model",
        &model,
        "--vectors",
        &p("v.safetensors"),
        "--question",
        "w1 w2",
        "--answer",
        "w3",
        "--out",
        &p("scan.svg"),
        "--csv",
        &p("scan.csv"),
        "--npy",
        &p("scan.npy"),
    ]);
    let csv = std::fs::read_to_string(p("scan.csv")).unwrap();
    assert!(csv.starts_with("token,layer_0,layer_1,layer_2"));
    assert!(std::fs::read_to_string(p("scan.svg")).unwrap().contains("<svg"));

    alens_ok(&[
        "heatmap",
        "--model",
        &model,
        "--vectors",
        &p("v.gguf"),
        "--data",
        &p("stim.jsonl"),
        "--out",
        &p("heat.png"),
        "--tokens",
        "4",
        "--npy",
        &p("heat.npy"),
    ]);
    assert!(std::fs::metadata(p("heat.png")).unwrap().len() > 1000);

    // Bad stimulus sets and layer ranges are one clear line.
    std::fs::write(
        p("one-class.jsonl"),
        "{\"question\": \"w1\", \"answer\": \"w2\", \"correction\": \"w2\"}\n",
    )
    .unwrap();
    assert!(alens_err(&[
        "lat",
        "--model",
        &model,
        "--data",
        &p("one-class.jsonl"),
        "--out",
        &p("x.safetensors")
    ])
    .contains("only copy"));
    assert!(alens_err(&[
        "lat",
        "--model",
        &model,
        "--data",
        &p("stim.jsonl"),
        "--layers",
        "5",
        "--out",
        &p("x.safetensors")
    ])
    .contains("out of range"));
}

#[test]
fn steered_generate_and_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    let model = golden("qwen2_bias").display().to_string();
    let vectors = golden("qwen2_bias").join("steer.safetensors").display().to_string();
    let base = [
        "generate",
        "--model",
        &model,
        "--question",
        "w1 w2",
        "--answer",
        "w3 w4",
        "--max-new-tokens",
        "6",
        "--ignore-eos",
        "--vectors",
        &vectors,
        "--layers",
        "1",
        "--json",
    ];

    let with = |extra: &[&str]| -> serde_json::Value {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        let out = alens_ok(&args);
        serde_json::from_str(out.trim().lines().last().unwrap()).unwrap()
    };
    let steered = with(&["--alpha", "3"]);
    assert_eq!(steered["token_ids"].as_array().unwrap().len(), 6);
    let zero = with(&["--alpha", "0"]);
    let plain: serde_json::Value = serde_json::from_str(
        alens_ok(&[
            "generate",
            "--model",
            &model,
            "--question",
            "w1 w2",
            "--answer",
            "w3 w4",
            "--max-new-tokens",
            "6",
            "--ignore-eos",
            "--json",
        ])
        .trim()
        .lines()
        .last()
        .unwrap(),
    )
    .unwrap();
    assert_eq!(zero["token_ids"], plain["token_ids"], "alpha 0 is the unsteered run");

    let mut args = base.to_vec();
    args.extend_from_slice(&["--alpha", "nan"]);
    assert!(alens_err(&args).contains("finite"));
    let err = alens_err(&[
        "generate",
        "--model",
        &model,
        "--question",
        "w1",
        "--answer",
        "w2",
        "--vectors",
        &vectors,
        "--alpha",
        "1",
        "--layers",
        "9",
    ]);
    assert!(err.contains("out of range"), "{err}");

    // A vector of the wrong width.
    let narrow = dir.path().join("narrow.safetensors");
    let data: Vec<u8> = vec![0u8; 16 * 4];
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![16], &data).unwrap();
    std::fs::write(
        &narrow,
        safetensors::serialize(vec![("layers.1".to_string(), view)], None).unwrap(),
    )
    .unwrap();
    let err = alens_err(&[
        "generate",
        "--model",
        &model,
        "--question",
        "w1",
        "--answer",
        "w2",
        "--vectors",
        narrow.to_str().unwrap(),
        "--alpha",
        "1",
    ]);
    assert!(err.contains("width 16"), "{err}");

    write_stimuli(dir.path().join("stim.jsonl").as_path(), 3);
    alens_ok(&[
        "sweep",
        "--model",
        &model,
        "--vectors",
        &vectors,
        "--layers",
        "1",
        "--data",
        &p("stim.jsonl"),
        "--alphas",
        "-2:2:2",
        "--max-new-tokens",
        "4",
        "--json",
        &p("sweep.json"),
        "--csv",
        &p("sweep.csv"),
        "--out",
        &p("sweep.png"),
        "--random-control",
        "7",
    ]);
    let sweep: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p("sweep.json")).unwrap()).unwrap();
    assert_eq!(sweep["alphas"].as_array().unwrap().len(), 3);
    for class in ["copy_cases", "correct_cases"] {
        for key in [
            "correction_magnitude",
            "copy_rate",
            "exact_correction_rate",
            "degenerate_rate",
        ] {
            assert_eq!(sweep[class][key].as_array().unwrap().len(), 3, "{class}.{key}");
            // At alpha 0 (the middle) the knob and its random control are both the bare model.
            assert_eq!(
                sweep[class][key][1], sweep["random_control"][class][key][1],
                "{class}.{key} at alpha 0"
            );
        }
    }
    assert_eq!(sweep["random_control"]["seed"], 7);
    assert_eq!(std::fs::read_to_string(p("sweep.csv")).unwrap().lines().count(), 4);
}

/// Writes `layers.{i}` f32 vectors (and optionally a sidecar listing `sidecar_layers`).
fn write_vectors(path: &Path, vectors: &[(usize, Vec<f32>)], sidecar_layers: Option<&[usize]>) {
    let data: Vec<(String, Vec<u8>)> = vectors
        .iter()
        .map(|(l, v)| (format!("layers.{l}"), v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = data
        .iter()
        .map(|(name, bytes)| {
            (
                name.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![bytes.len() / 4], bytes).unwrap(),
            )
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
    if let Some(layers) = sidecar_layers {
        let sidecar = serde_json::json!({"model": "test", "d_model": vectors[0].1.len(), "layers": layers});
        std::fs::write(path.with_extension("json"), sidecar.to_string()).unwrap();
    }
}

#[test]
fn every_command_that_reads_vectors_refuses_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    let model = golden("qwen2_bias").display().to_string();
    let d_model = read_f32(&golden("qwen2_bias").join("steer.safetensors"))
        .into_values()
        .next()
        .unwrap()
        .1
        .len();
    write_stimuli(dir.path().join("stim.jsonl").as_path(), 3);

    let mut nan = vec![0.5f32; d_model];
    nan[1] = f32::NAN;
    write_vectors(Path::new(&p("nan.safetensors")), &[(1, nan)], None);
    write_vectors(
        Path::new(&p("narrow.safetensors")),
        &[(1, vec![0.5; d_model - 1])],
        None,
    );
    write_vectors(
        Path::new(&p("gap.safetensors")),
        &[(1, vec![0.5; d_model])],
        Some(&[0, 1]),
    );
    let cases = [("nan", "NaN"), ("narrow", "width"), ("gap", "no layers.0")];

    let (stim, scan_png, heat_png) = (p("stim.jsonl"), p("scan.png"), p("heat.png"));
    for (file, expected) in cases {
        let vectors = p(&format!("{file}.safetensors"));
        let commands: [Vec<&str>; 4] = [
            vec![
                "generate",
                "--question",
                "w1",
                "--answer",
                "w2",
                "--alpha",
                "1",
                "--max-new-tokens",
                "2",
            ],
            vec!["sweep", "--data", &stim, "--alphas", "0,1", "--max-new-tokens", "2"],
            vec!["scan", "--question", "w1", "--answer", "w2", "--out", &scan_png],
            vec!["heatmap", "--data", &stim, "--out", &heat_png],
        ];
        for mut args in commands {
            args.extend_from_slice(&["--model", &model, "--vectors", &vectors]);
            let err = alens_err(&args);
            assert!(err.contains(expected), "{} with {file}: {err}", args[0]);
        }
    }
    // A layer the file does not hold.
    write_vectors(Path::new(&p("one.safetensors")), &[(1, vec![0.5; d_model])], None);
    let err = alens_err(&[
        "generate",
        "--model",
        &model,
        "--vectors",
        &p("one.safetensors"),
        "--question",
        "w1",
        "--answer",
        "w2",
        "--alpha",
        "1",
        "--layers",
        "0",
    ]);
    assert!(err.contains("layer 0"), "{err}");
}

#[test]
fn a_model_without_vectors_beside_it_is_told_how_to_make_them() {
    // The golden checkpoint (d_model 32) ships no vectors, so the mini-aligner's are tried.
    let model = golden("llama_gqa");
    let err = alens_err(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--question",
        "w1",
        "--answer",
        "w2",
        "--alpha",
        "1",
    ]);
    assert!(
        err.contains("no copy-correct.safetensors beside it") && err.contains("alens lat --model"),
        "{err}"
    );
}
