//! No output path destroys an input: each refusal is one error line before any work, and the
//! inputs are byte-identical afterwards.

mod common;
use common::*;

#[test]
fn outputs_that_are_inputs_model_files_or_devices_are_refused_and_inputs_survive() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).display().to_string();
    let stimuli = std::fs::read(repo().join("notebooks-data/stimuli/copy-correct.jsonl")).unwrap();
    std::fs::write(p("pairs.json"), &stimuli).unwrap();
    std::fs::write(p("d.jsonl"), &stimuli).unwrap();
    std::os::unix::fs::symlink(p("d.jsonl"), p("link.jsonl")).unwrap();
    std::fs::write(p("v.json"), b"{\"mine\": true}").unwrap();
    let model = repo().join("notebooks-data/mini-aligner");
    let model_files: Vec<(String, Vec<u8>)> = ["config.json", "tokenizer.json"]
        .iter()
        .map(|f| (f.to_string(), std::fs::read(model.join(f)).unwrap()))
        .collect();
    let cases: Vec<Vec<String>> = vec![
        vec![
            "lat".into(),
            "--data".into(),
            p("pairs.json"),
            "--out".into(),
            p("pairs.safetensors"),
        ],
        vec!["lat".into(), "--out".into(), p("v.safetensors")],
        vec![
            "eval".into(),
            "--data".into(),
            p("d.jsonl"),
            "--json".into(),
            p("d.jsonl"),
        ],
        vec![
            "eval".into(),
            "--data".into(),
            p("d.jsonl"),
            "--outputs".into(),
            p("link.jsonl"),
        ],
        vec![
            "capture".into(),
            "--token-ids".into(),
            "1,2".into(),
            "--out".into(),
            model.join("config.safetensors").display().to_string(),
        ],
        vec![
            "capture".into(),
            "--token-ids".into(),
            "1,2".into(),
            "--out".into(),
            "/dev/null".into(),
        ],
        vec![
            "heatmap".into(),
            "--data".into(),
            p("d.jsonl"),
            "--out".into(),
            p("h.png"),
            "--csv".into(),
            p("d.jsonl"),
        ],
        vec![
            "scan".into(),
            "--question".into(),
            "q".into(),
            "--answer".into(),
            "a".into(),
            "--out".into(),
            p("s.png"),
            "--npy".into(),
            repo()
                .join("notebooks-data/mini-aligner/copy-correct.json")
                .display()
                .to_string(),
        ],
    ];
    for case in &cases {
        let args: Vec<&str> = case.iter().map(String::as_str).collect();
        let line = alens_err(&args);
        assert!(line.contains("refusing"), "{args:?}: {line}");
    }
    for name in ["pairs.json", "d.jsonl"] {
        assert_eq!(std::fs::read(p(name)).unwrap(), stimuli, "{name} changed");
    }
    assert_eq!(std::fs::read(p("v.json")).unwrap(), b"{\"mine\": true}");
    for (f, bytes) in model_files {
        assert_eq!(std::fs::read(model.join(&f)).unwrap(), bytes, "{f} changed");
    }
    assert!(!model.join("config.safetensors").exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    assert_eq!(leftovers.len(), 4, "nothing new was written: {leftovers:?}");
}

/// Ctrl-C (SIGINT) or SIGTERM during a capture removes its temporary file: nothing is left
/// behind and no output appears.
#[test]
fn an_interrupted_capture_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("many.jsonl");
    alens_ok(&[
        "corpus",
        "--seed",
        "3",
        "--n",
        "20000",
        "--split",
        "test",
        "--out",
        data.to_str().unwrap(),
    ]);
    for signal in ["-INT", "-TERM"] {
        let out = dir.path().join("acts.safetensors");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_alens"))
            .args([
                "capture",
                "--data",
                data.to_str().unwrap(),
                "--points",
                "all",
                "--out",
                out.to_str().unwrap(),
            ])
            .current_dir(repo())
            .env("ALENS_MODEL", "mini-aligner")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until the partial output and its journal exist, then interrupt.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !dir.path().join("acts.safetensors.partial.jsonl").exists() {
            assert!(std::time::Instant::now() < deadline, "capture never started writing");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::process::Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success(), "{signal}: the capture should have been interrupted");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["many.jsonl".to_string()], "{signal} left files behind");
    }
}

/// An existing file is replaced only when alens wrote it and it is unchanged since; a user's
/// file, or an alens output edited afterwards, is refused and left as it was.
#[test]
fn only_unchanged_alens_outputs_are_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("records.jsonl");
    let p = path.to_str().unwrap();
    alens_ok(&["corpus", "--n", "5", "--out", p]);
    alens_ok(&["corpus", "--n", "6", "--seed", "2", "--out", p]);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap().lines().count(),
        6,
        "its own output is replaced"
    );

    let mine = dir.path().join("mine.jsonl");
    std::fs::write(&mine, "my notes\n").unwrap();
    let line = alens_err(&["corpus", "--n", "5", "--out", mine.to_str().unwrap()]);
    assert!(line.contains("alens did not write it"), "{line}");
    assert_eq!(std::fs::read_to_string(&mine).unwrap(), "my notes\n");

    // Edited after alens wrote it (a different length): now it is the user's.
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("{\"question\":\"q\",\"answer\":\"a\"}\n");
    std::fs::write(&path, &text).unwrap();
    assert!(alens_err(&["corpus", "--n", "5", "--out", p]).contains("refusing to overwrite"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
}

/// A sweep killed mid-run (SIGKILL: no cleanup at all) resumes from its journal with
/// --resume and writes what an uninterrupted sweep writes; the journal then goes. Without
/// --resume the journal is refused, not overwritten; a journal of other options is refused.
#[test]
fn a_killed_sweep_resumes_to_the_uninterrupted_result() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    alens_ok(&["corpus", "--seed", "5", "--n", "160", "--out", &p("d.jsonl")]);
    let sweep = |json: &str, extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "sweep",
            "--data",
            &p("d.jsonl"),
            "--alphas",
            "-1,0,1",
            "--batch-size",
            "8",
            "--max-new-tokens",
            "24",
            "--random-control",
            "--json",
            json,
        ]
        .map(String::from)
        .to_vec();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    alens_ok(
        &sweep(&p("whole.json"), &[])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );

    let journal = dir.path().join("cut.json.partial.jsonl");
    let batches = kill_after_batches(&sweep(&p("cut.json"), &[]), &journal, 7);
    assert!(!dir.path().join("cut.json").exists());
    assert!(batches < 2 * 3 * 20, "killed before the end ({batches} batches)");

    assert!(alens_err(
        &sweep(&p("cut.json"), &[])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    )
    .contains("--resume"));
    let other = alens_err(
        &sweep(&p("cut.json"), &["--resume", "--limit", "100"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(other.contains("another run"), "{other}");
    alens_ok(
        &sweep(&p("cut.json"), &["--resume"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(!journal.exists(), "a finished run removes its journal");
    let read = |n: &str| {
        let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p(n)).unwrap()).unwrap();
        v.as_object_mut().unwrap().remove("provenance");
        v
    };
    assert_eq!(read("cut.json"), read("whole.json"));
}

/// A capture killed with SIGKILL leaves its partial output and journal; `--resume` finishes
/// it into the very file an uninterrupted capture writes, and removes both.
#[test]
fn a_killed_capture_resumes_to_the_identical_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    alens_ok(&["corpus", "--seed", "8", "--n", "2000", "--out", &p("d.jsonl")]);
    let capture = |out: &str| {
        [
            "capture",
            "--data",
            &p("d.jsonl"),
            "--points",
            "resid_post",
            "--positions",
            "last",
            "--out",
            out,
        ]
        .map(String::from)
    };
    // The uninterrupted file, at the same path (the command line is in its metadata).
    alens_ok(&capture(&p("cut.safetensors")).each_ref().map(String::as_str));
    let whole = std::fs::read(p("cut.safetensors")).unwrap();
    std::fs::remove_file(p("cut.safetensors")).unwrap();

    let journal = dir.path().join("cut.safetensors.partial.jsonl");
    let batches = kill_after_batches(&capture(&p("cut.safetensors")), &journal, 9);
    assert!(!dir.path().join("cut.safetensors").exists());
    assert!(
        dir.path().join("cut.safetensors.partial").exists(),
        "a kill leaves the partial output to resume"
    );
    assert!(batches < 250, "killed before the end ({batches} of 250 batches)");

    let mut resume = capture(&p("cut.safetensors")).to_vec();
    resume.push("--resume".into());
    alens_ok(&resume.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        std::fs::read(p("cut.safetensors")).unwrap() == whole,
        "the resumed file differs from the uninterrupted one"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "only the data and the output remain: {left:?}");
}

/// A journal is keyed by the model's weights, not only by their layout: a run killed on one
/// model does not resume on another whose config and tensor table are the same but whose
/// values differ (reliability 2, class 7; the provenance's content hash sees only the layout).
#[test]
fn a_resume_on_other_weights_of_the_same_layout_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    let model = dir.path().join("m");
    std::fs::create_dir(&model).unwrap();
    for f in [
        "config.json",
        "tokenizer.json",
        "model.safetensors",
        "generation_config.json",
    ] {
        std::fs::copy(repo().join("notebooks-data/mini-aligner").join(f), model.join(f)).unwrap();
    }
    alens_ok(&["corpus", "--seed", "5", "--n", "160", "--out", &p("d.jsonl")]);
    let eval = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "eval",
            "--model",
            &p("m"),
            "--data",
            &p("d.jsonl"),
            "--batch-size",
            "8",
            "--max-new-tokens",
            "24",
            "--json",
            &p("e.json"),
        ]
        .map(String::from)
        .to_vec();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    kill_after_batches(&eval(&[]), &dir.path().join("e.json.partial.jsonl"), 1);
    let weights = model.join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&weights, bytes).unwrap();
    let err = alens_err(&eval(&["--resume"]).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.contains("another run"), "{err}");
}
