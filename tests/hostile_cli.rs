//! Hostile input, class by class, through the binary: broken model files, absurd sizes,
//! malformed or unbalanced data, out-of-range flags and floats. Every case must end with a
//! non-zero exit and exactly one `error:` line, no panic, within a time bound, with every input
//! byte-identical afterwards and no file (temporary or output) left behind.

mod common;
use common::repo;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A copy of the mini-aligner to break, and data files beside it.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model");
        std::fs::create_dir(&model).unwrap();
        for f in [
            "config.json",
            "tokenizer.json",
            "model.safetensors",
            "generation_config.json",
        ] {
            std::fs::copy(repo().join("notebooks-data/mini-aligner").join(f), model.join(f)).unwrap();
        }
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn s(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// A broken copy of the model: `edit` changes one of its files.
    fn model_with(&self, name: &str, file: &str, edit: impl FnOnce(Vec<u8>) -> Option<Vec<u8>>) -> String {
        let dir = self.path(name);
        std::fs::create_dir(&dir).unwrap();
        for entry in std::fs::read_dir(self.path("model")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
        match edit(std::fs::read(dir.join(file)).unwrap()) {
            Some(bytes) => std::fs::write(dir.join(file), bytes).unwrap(),
            None => std::fs::remove_file(dir.join(file)).unwrap(),
        }
        dir.display().to_string()
    }

    /// Every file under the sandbox with its bytes.
    fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.insert(path.clone(), std::fs::read(&path).unwrap());
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(self.dir.path(), &mut out);
        out
    }
}

fn config_with(key: &str, value: serde_json::Value) -> impl FnOnce(Vec<u8>) -> Option<Vec<u8>> {
    let key = key.to_string();
    move |bytes| {
        let mut config: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        config[key] = value;
        Some(serde_json::to_vec(&config).unwrap())
    }
}

/// Runs one hostile case and checks everything the suite promises.
fn refused(sandbox: &Sandbox, args: &[String]) {
    let before = sandbox.snapshot();
    let started = Instant::now();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_alens"))
        .args(args)
        .current_dir(repo())
        .env("ALENS_MODEL", "mini-aligner")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("alens {args:?} ran over 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "alens {args:?} should fail: {stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "alens {args:?} panicked: {stderr}"
    );
    let errors = stderr.lines().filter(|l| l.starts_with("error:")).count();
    assert_eq!(errors, 1, "alens {args:?}: not exactly one error line: {stderr}");
    assert_eq!(
        sandbox.snapshot(),
        before,
        "alens {args:?} changed, added or left files: {stderr}"
    );
}

fn case(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

#[test]
fn broken_models_are_refused() {
    let sb = Sandbox::new();
    let truncated_config = sb.model_with("truncated-config", "config.json", |b| Some(b[..b.len() / 2].to_vec()));
    let deep = sb.model_with(
        "deep",
        "config.json",
        config_with("num_hidden_layers", 1_000_000_000u64.into()),
    );
    let wide = sb.model_with("wide", "config.json", config_with("hidden_size", 10_000_000u64.into()));
    let negative_theta = sb.model_with(
        "negative-theta",
        "config.json",
        config_with("rope_theta", (-1.0).into()),
    );
    let nan_eps = sb.model_with(
        "nan-eps",
        "config.json",
        config_with("rms_norm_eps", serde_json::json!("NaN")),
    );
    let no_tokenizer = sb.model_with("no-tokenizer", "tokenizer.json", |_| None);
    let bad_tokenizer = sb.model_with("bad-tokenizer", "tokenizer.json", |_| Some(b"{\"model\": 7}".to_vec()));
    let truncated_weights = sb.model_with("truncated-weights", "model.safetensors", |b| {
        Some(b[..b.len() / 3].to_vec())
    });
    let huge_header = sb.model_with("huge-header", "model.safetensors", |mut b| {
        b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        Some(b)
    });
    let acts = sb.s("acts.safetensors");
    for model in [
        &truncated_config,
        &deep,
        &wide,
        &negative_theta,
        &nan_eps,
        &no_tokenizer,
        &bad_tokenizer,
        &truncated_weights,
        &huge_header,
    ] {
        refused(
            &sb,
            &case(&["capture", "--model", model, "--prompt", "hi", "--out", &acts]),
        );
    }
    for model in [&truncated_config, &no_tokenizer, &truncated_weights] {
        refused(
            &sb,
            &case(&["generate", "--model", model, "--question", "q", "--answer", "a"]),
        );
    }
}

#[test]
fn malformed_and_unbalanced_data_is_refused() {
    let sb = Sandbox::new();
    let model = sb.s("model");
    std::fs::write(sb.path("empty.jsonl"), "").unwrap();
    std::fs::write(sb.path("not-json.jsonl"), "{\"question\": \"q\", \"answer\": \n").unwrap();
    std::fs::write(
        sb.path("latin1.jsonl"),
        b"{\"question\": \"caf\xe9\", \"answer\": \"a\", \"correction\": \"a\"}\n",
    )
    .unwrap();
    std::fs::write(
        sb.path("no-answer.jsonl"),
        "{\"question\": \"q\", \"correction\": \"a\"}\n",
    )
    .unwrap();
    let copy_only: String = (0..6)
        .map(|k| format!("{{\"question\": \"q{k}\", \"answer\": \"a\", \"correction\": \"a\"}}\n"))
        .collect();
    std::fs::write(sb.path("copy-only.jsonl"), copy_only).unwrap();
    let long = format!(
        "{{\"question\": \"q\", \"answer\": \"{}\", \"correction\": \"a\"}}\n",
        "word ".repeat(20_000)
    );
    std::fs::write(sb.path("too-long.jsonl"), long).unwrap();
    let (out, json) = (sb.s("v.safetensors"), sb.s("e.json"));
    for data in [
        "empty.jsonl",
        "not-json.jsonl",
        "latin1.jsonl",
        "no-answer.jsonl",
        "copy-only.jsonl",
        "too-long.jsonl",
    ] {
        refused(
            &sb,
            &case(&["lat", "--model", &model, "--data", &sb.s(data), "--out", &out]),
        );
    }
    for data in ["empty.jsonl", "not-json.jsonl", "no-answer.jsonl", "too-long.jsonl"] {
        refused(
            &sb,
            &case(&["eval", "--model", &model, "--data", &sb.s(data), "--json", &json]),
        );
        refused(
            &sb,
            &case(&[
                "heatmap",
                "--model",
                &model,
                "--data",
                &sb.s(data),
                "--out",
                &sb.s("h.png"),
            ]),
        );
    }
}

#[test]
fn out_of_range_flags_and_floats_are_refused() {
    let sb = Sandbox::new();
    let model = sb.s("model");
    let nan_vectors = sb.path("nan.safetensors");
    let values: Vec<u8> = (0..128)
        .flat_map(|k| if k == 3 { f32::NAN } else { 0.5f32 }.to_le_bytes())
        .collect();
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![128], &values).unwrap();
    std::fs::write(
        &nan_vectors,
        safetensors::serialize(vec![("layers.2".to_string(), view)], None).unwrap(),
    )
    .unwrap();
    let huge_midpoint = sb.path("mid.safetensors");
    std::fs::copy(
        repo().join("notebooks-data/mini-aligner/copy-correct.safetensors"),
        &huge_midpoint,
    )
    .unwrap();
    let mut sidecar: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("notebooks-data/mini-aligner/copy-correct.json")).unwrap(),
    )
    .unwrap();
    sidecar["midpoint"] = serde_json::json!([1e308, 0, 0, 0, 0, 0]);
    std::fs::write(sb.path("mid.json"), sidecar.to_string()).unwrap();
    let (png, json) = (sb.s("o.png"), sb.s("o.json"));
    let generate = ["generate", "--model", &model, "--question", "q", "--answer", "a"];
    let with = |extra: &[&str]| -> Vec<String> { generate.iter().chain(extra).map(|s| s.to_string()).collect() };
    for args in [
        with(&["--alpha", "nan"]),
        with(&["--alpha", "1e308"]),
        with(&["--alpha", "1", "--layers", "99"]),
        with(&["--alpha", "1", "--vectors", nan_vectors.to_str().unwrap()]),
        with(&["--temperature", "1e-300"]),
        with(&["--top-p", "0"]),
        with(&["--max-new-tokens", "0"]),
        case(&[
            "scan",
            "--model",
            &model,
            "--vectors",
            huge_midpoint.to_str().unwrap(),
            "--question",
            "q",
            "--answer",
            "a",
            "--out",
            &png,
        ]),
        case(&["heatmap", "--model", &model, "--tokens", "1000000000", "--out", &png]),
        case(&[
            "sweep",
            "--model",
            &model,
            "--alphas=-1e308,1e308",
            "--limit",
            "2",
            "--json",
            &json,
            "--out",
            &png,
        ]),
        case(&["sweep", "--model", &model, "--alphas", "0:1e9:1e-9", "--json", &json]),
        case(&["corpus", "--n", "1000000000000", "--out", &sb.s("c.jsonl")]),
        case(&["train-mini", "--hidden", "1000000", "--out", &sb.s("m")]),
        case(&[
            "capture",
            "--model",
            &model,
            "--token-ids",
            "1,99999999",
            "--out",
            &sb.s("a.safetensors"),
        ]),
        case(&[
            "capture",
            "--model",
            &model,
            "--prompt",
            "hi",
            "--layers",
            "7",
            "--out",
            &sb.s("a.safetensors"),
        ]),
    ] {
        refused(&sb, &args);
    }
}

/// Reliability 2, classes 8-11: nonsense configs, unbounded alpha lists, templates that would
/// leave a slot unfilled, and LAT pairs whose two prompts are the same text.
#[test]
fn nonsense_configs_lists_templates_and_pairs_are_refused() {
    let sb = Sandbox::new();
    let model = sb.s("model");
    let acts = sb.s("acts.safetensors");
    let rope =
        |name: &str, value: serde_json::Value| sb.model_with(name, "config.json", config_with("rope_scaling", value));
    let broken = [
        rope("rope-no-type", serde_json::json!({"factor": 2.0})),
        rope("rope-numeric-type", serde_json::json!({"rope_type": 3, "factor": 2.0})),
        rope(
            "rope-unknown-type",
            serde_json::json!({"rope_type": "sideways", "factor": 2.0}),
        ),
        rope(
            "rope-zero-factor",
            serde_json::json!({"rope_type": "linear", "factor": 0.0}),
        ),
        rope(
            "rope-negative-factor",
            serde_json::json!({"rope_type": "linear", "factor": -2.0}),
        ),
        rope("rope-number", serde_json::json!(2.0)),
        sb.model_with("window-zero", "config.json", |bytes| {
            let mut config: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            config["model_type"] = "mistral".into();
            config["sliding_window"] = 0.into();
            Some(serde_json::to_vec(&config).unwrap())
        }),
    ];
    for bad in &broken {
        refused(
            &sb,
            &case(&["capture", "--model", bad, "--prompt", "hi", "--out", &acts]),
        );
    }
    let many = vec!["0.5"; 1001].join(",");
    refused(
        &sb,
        &case(&[
            "generate",
            "--model",
            &model,
            "--question",
            "q",
            "--answer",
            "a",
            &format!("--alphas={many}"),
        ]),
    );
    refused(
        &sb,
        &case(&[
            "sweep",
            "--model",
            &model,
            &format!("--alphas={many}"),
            "--json",
            &sb.s("s.json"),
        ]),
    );
    refused(
        &sb,
        &case(&[
            "generate",
            "--model",
            &model,
            "--question",
            "q",
            "--answer",
            "a",
            "--template",
            "only {question}",
        ]),
    );
    let same: String = (0..4)
        .flat_map(|k| {
            [
                format!("{{\"question\": \"q{k}\", \"answer\": \"a{k}\", \"correction\": \"a{k}\"}}\n"),
                format!("{{\"question\": \"q{k}\", \"answer\": \"a{k}\", \"correction\": \"b{k}\"}}\n"),
            ]
        })
        .collect();
    std::fs::write(sb.path("same-prompts.jsonl"), same).unwrap();
    refused(
        &sb,
        &case(&[
            "lat",
            "--model",
            &model,
            "--data",
            &sb.s("same-prompts.jsonl"),
            "--out",
            &sb.s("v.safetensors"),
        ]),
    );
}

/// Reliability 2, class 6: a reader that goes away does not make alens panic, and the files
/// it was asked for are still written.
#[test]
fn a_closed_stdout_is_no_panic_and_the_outputs_are_still_written() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("eval.json");
    let data = dir.path().join("eight.jsonl");
    let test = std::fs::read_to_string(repo().join("notebooks-data/corpus/test.jsonl")).unwrap();
    std::fs::write(
        &data,
        test.lines().take(8).map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_alens"))
        .args([
            "eval",
            "--model",
            "mini-aligner",
            "--data",
            data.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
        ])
        .current_dir(repo())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "eval with a closed stdout failed: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert!(json.is_file(), "the --json output was not written");
}

/// Reliability 2, classes 1 and 7: the staging file and journal alens derives from an output
/// path get the output's own checks. A symbolic link or a user's file there is refused and
/// left as it is, as is an output path that is a dangling link; a journal of another format is
/// not resumed.
#[test]
fn derived_paths_and_dangling_links_are_refused() {
    let sb = Sandbox::new();
    let model = sb.s("model");
    let data: String = (0..4)
        .map(|k| format!("{{\"question\": \"q{k}\", \"answer\": \"a{k}\"}}\n"))
        .collect();
    std::fs::write(sb.path("d.jsonl"), data).unwrap();
    let capture = |out: &str, extra: &[&str]| -> Vec<String> {
        let mut args = case(&[
            "capture",
            "--model",
            &model,
            "--data",
            &sb.s("d.jsonl"),
            "--positions",
            "last",
            "--out",
            out,
        ]);
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    std::fs::write(sb.path("victim.txt"), "a user's file").unwrap();
    std::os::unix::fs::symlink(sb.path("victim.txt"), sb.path("linked.safetensors.partial")).unwrap();
    refused(&sb, &capture(&sb.s("linked.safetensors"), &[]));
    std::fs::write(
        sb.path("mine.safetensors.partial"),
        "a user's notes that happen to have this name",
    )
    .unwrap();
    refused(&sb, &capture(&sb.s("mine.safetensors"), &[]));
    std::fs::write(
        sb.path("old.safetensors.partial.jsonl"),
        "{\"alens_journal\":99,\"fingerprint\":\"x\"}\n",
    )
    .unwrap();
    refused(&sb, &capture(&sb.s("old.safetensors"), &["--resume"]));

    // A dangling link as the output (the snapshot cannot read it, so checked by hand).
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("out.json");
    std::os::unix::fs::symlink(dir.path().join("nowhere.json"), &link).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_alens"))
        .args(["corpus", "--n", "4", "--out", link.to_str().unwrap()])
        .current_dir(repo())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.trim().lines().count() == 1 && stderr.contains("dangling"),
        "{stderr}"
    );
    assert!(
        std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(),
        "the link was replaced"
    );
    assert!(!dir.path().join("nowhere.json").exists());
}

/// Reliability 2, class 2: a directory output follows the files' rule. A file there that the
/// command would write, and that alens did not write, stops the command before any work.
#[test]
fn directory_outputs_never_overwrite_files_alens_did_not_write() {
    let sb = Sandbox::new();
    let model = sb.s("model");
    let data: String = (0..4)
        .map(|k| format!("{{\"question\": \"q{k}\", \"answer\": \"a{k}\", \"correction\": \"c{k}\"}}\n"))
        .collect();
    std::fs::write(sb.path("d.jsonl"), data).unwrap();
    for (dir, file) in [
        ("report", "index.html"),
        ("adapter", "adapter_model.safetensors"),
        ("mini", "config.json"),
        ("export", "notes.txt"),
    ] {
        std::fs::create_dir(sb.path(dir)).unwrap();
        std::fs::write(sb.path(dir).join(file), format!("a user's {file}")).unwrap();
    }
    refused(&sb, &case(&["demo", "--model", &model, "--out", &sb.s("report")]));
    refused(
        &sb,
        &case(&[
            "tune",
            "--base",
            &model,
            "--data",
            &sb.s("d.jsonl"),
            "--steps",
            "2",
            "--out",
            &sb.s("adapter"),
        ]),
    );
    refused(&sb, &case(&["train-mini", "--steps", "2", "--out", &sb.s("mini")]));
    refused(&sb, &case(&["export-hf", "--model", &model, "--out", &sb.s("export")]));
}

/// Reliability 2, class 4: every output of a command is checked before any work, so one that
/// cannot be written (a figure format alens cannot draw, a parent that is a file) leaves none
/// of the others written.
#[test]
fn one_bad_output_leaves_none_written() {
    let sb = Sandbox::new();
    let model = sb.s("model");
    std::fs::write(sb.path("a-file"), "not a directory").unwrap();
    let stimuli = repo()
        .join("notebooks-data/stimuli/copy-correct.jsonl")
        .display()
        .to_string();
    let under_file = sb.path("a-file").join("x.json").display().to_string();
    for args in [
        case(&[
            "sweep",
            "--model",
            &model,
            "--limit",
            "2",
            "--alphas",
            "0",
            "--json",
            &sb.s("s.json"),
            "--out",
            &sb.s("s.gif"),
        ]),
        case(&[
            "sweep",
            "--model",
            &model,
            "--limit",
            "2",
            "--alphas",
            "0",
            "--out",
            &sb.s("s.png"),
            "--json",
            &under_file,
        ]),
        case(&[
            "lat",
            "--model",
            &model,
            "--data",
            &stimuli,
            "--out",
            &sb.s("v.safetensors"),
            "--plot",
            &sb.s("p.gif"),
        ]),
        case(&[
            "heatmap",
            "--model",
            &model,
            "--out",
            &sb.s("h.gif"),
            "--csv",
            &sb.s("h.csv"),
        ]),
        case(&[
            "eval",
            "--model",
            &model,
            "--json",
            &sb.s("e.json"),
            "--outputs",
            &under_file,
        ]),
    ] {
        refused(&sb, &args);
    }
}

/// Reliability 2, class 11: a finite vector so large that the forward overflows stops the run
/// with one line, instead of an empty answer and exit 0.
#[test]
fn a_steering_push_that_overflows_the_forward_is_refused() {
    let sb = Sandbox::new();
    let values: Vec<u8> = (0..128).flat_map(|_| 3e38f32.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![128], &values).unwrap();
    std::fs::write(
        sb.path("huge.safetensors"),
        safetensors::serialize(vec![("layers.2".to_string(), view)], None).unwrap(),
    )
    .unwrap();
    for positions in ["all", "decision"] {
        refused(
            &sb,
            &case(&[
                "generate",
                "--model",
                &sb.s("model"),
                "--question",
                "q",
                "--answer",
                "a",
                "--vectors",
                &sb.s("huge.safetensors"),
                "--alpha",
                "1",
                "--steer-positions",
                positions,
            ]),
        );
    }
}
