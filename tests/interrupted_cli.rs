//! Reliability 2, class 2: a directory output interrupted by Ctrl-C (SIGINT) or SIGTERM.
//! `demo`, `tune`, `train-mini` and `export-hf` build in a staging directory beside the one
//! named and move their files in at the end, so an interruption leaves that directory as it
//! was: no half-built report or model, every file that was there byte-identical, no staging
//! directory behind, one `error:` line and no panic. A tune interrupted after a checkpoint
//! keeps it beside the output (not in it) for `--resume`, which ends on the uninterrupted
//! adapter.

mod common;
use common::repo;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Everything under `dir`, hidden entries and directories included: (kind, bytes or target).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (char, Vec<u8>)> {
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, (char, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.insert(path, ('l', target.display().to_string().into_bytes()));
            } else if meta.is_dir() {
                out.insert(path.clone(), ('d', Vec::new()));
                walk(&path, out);
            } else {
                out.insert(path.clone(), ('f', std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, &mut out);
    out
}

fn spawn(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_alens"))
        .args(args)
        .current_dir(repo())
        .env("ALENS_MODEL", "mini-aligner")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until `ready` holds (at most 120 s), then sends `signal` (`-INT`, `-TERM`).
fn signal_when(child: &mut Child, signal: &str, what: &str, ready: impl Fn() -> bool) {
    let started = Instant::now();
    while !ready() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("alens ended ({status}) before {what}");
        }
        assert!(started.elapsed() < Duration::from_secs(120), "never {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
    Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
}

/// The child's exit and its stderr, checked: interrupted, exactly one `error:` line, no panic.
fn interrupted(child: Child, signal: &str) -> String {
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{signal}: the run should have been interrupted");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{signal}: {stderr}"
    );
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{signal}: not one error line: {stderr}");
    errors[0].to_string()
}

/// Whether `dir` holds an entry whose name starts with `prefix` and, inside it, `file`.
fn staged(dir: &Path, prefix: &str, file: &str) -> bool {
    std::fs::read_dir(dir).unwrap().any(|e| {
        let e = e.unwrap();
        e.file_name().to_string_lossy().starts_with(prefix) && e.path().join(file).exists()
    })
}

#[test]
fn an_interrupted_demo_leaves_no_half_built_report() {
    for signal in ["-INT", "-TERM"] {
        let dir = tempfile::tempdir().unwrap();
        // A report directory that holds a user's file, and one that does not exist yet.
        let report = dir.path().join("report");
        std::fs::create_dir(&report).unwrap();
        std::fs::write(report.join("notes.txt"), "a user's notes").unwrap();
        let before = snapshot(dir.path());
        for out in [report.clone(), dir.path().join("fresh")] {
            let mut child = spawn(&[
                "demo",
                "--model",
                "mini-aligner",
                "--sweep-records",
                "2",
                "--out",
                out.to_str().unwrap(),
            ]);
            let prefix = format!(".{}.", out.file_name().unwrap().to_string_lossy());
            // Interrupted once the first stages are in: the report is half-built by then.
            signal_when(&mut child, signal, "wrote the scans", || {
                staged(dir.path(), &prefix, "scan-correct.png")
            });
            let line = interrupted(child, signal);
            assert!(line.contains("interrupted"), "{line}");
            assert_eq!(
                snapshot(dir.path()),
                before,
                "{signal} on demo --out {}: changed or left files",
                out.display()
            );
        }
    }
}

#[test]
fn an_interrupted_tune_keeps_its_output_as_it_was_and_resumes_to_the_whole_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).display().to_string();
    let test = std::fs::read_to_string(repo().join("notebooks-data/corpus/test.jsonl")).unwrap();
    let data: String = test.lines().take(12).map(|l| format!("{l}\n")).collect();
    std::fs::write(p("d.jsonl"), data).unwrap();
    let tune_every = |every: &str, out: &str, extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "tune",
            "--base",
            "notebooks-data/mini-aligner",
            "--data",
            &p("d.jsonl"),
            "--steps",
            "8",
            "--batch-size",
            "1",
            "--rank",
            "2",
            "--checkpoint-every",
            every,
            "--out",
            out,
        ]
        .map(String::from)
        .to_vec();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let tune = |out: &str, extra: &[&str]| tune_every("2", out, extra);
    let run = |args: &[String]| {
        let out = Command::new(env!("CARGO_BIN_EXE_alens"))
            .args(args)
            .current_dir(repo())
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, stderr) = run(&tune(&p("whole"), &[]));
    assert!(ok, "{stderr}");

    // An output directory with a user's file in it, interrupted after a checkpoint.
    std::fs::create_dir(p("cut")).unwrap();
    std::fs::write(dir.path().join("cut/README.md"), "a user's notes").unwrap();
    let before = snapshot(&dir.path().join("cut"));
    let args = tune(&p("cut"), &[]);
    let mut child = spawn(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let state = dir.path().join("cut.partial/trainer_state.json");
    signal_when(&mut child, "-INT", "wrote a checkpoint", || state.exists());
    let line = interrupted(child, "-INT");
    assert!(
        line.contains("cut.partial") && line.contains("--resume"),
        "the kept checkpoint is said: {line}"
    );
    assert_eq!(
        snapshot(&dir.path().join("cut")),
        before,
        "the output directory changed"
    );
    let partial = snapshot(&dir.path().join("cut.partial"));
    assert!(
        partial
            .keys()
            .all(|k| !k.file_name().unwrap().to_string_lossy().starts_with('.')),
        "a temporary was left in the checkpoint: {partial:?}"
    );

    // Not resumed by accident, nor on other records as many as its own (class 7), then
    // resumed on purpose.
    let (ok, stderr) = run(&args);
    assert!(!ok && stderr.contains("--resume"), "{stderr}");
    let other: String = test.lines().skip(12).take(12).map(|l| format!("{l}\n")).collect();
    std::fs::write(p("other.jsonl"), other).unwrap();
    let mut on_other = tune(&p("cut"), &["--resume"]);
    let data = on_other.iter().position(|a| a == "--data").unwrap() + 1;
    on_other[data] = p("other.jsonl");
    let (ok, stderr) = run(&on_other);
    assert!(!ok && stderr.contains("other training records"), "{stderr}");
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{stderr}"
    );
    assert_eq!(snapshot(&dir.path().join("cut.partial")), partial);
    assert_eq!(snapshot(&dir.path().join("cut")), before);
    let (ok, stderr) = run(&tune(&p("cut"), &["--resume"]));
    assert!(ok, "{stderr}");
    assert!(
        !dir.path().join("cut.partial").exists(),
        "the checkpoint goes once moved in"
    );
    let read = |d: &str, f: &str| std::fs::read(dir.path().join(d).join(f)).unwrap();
    assert_eq!(
        read("cut", "adapter_model.safetensors"),
        read("whole", "adapter_model.safetensors"),
        "resume must end on the uninterrupted adapter"
    );
    assert_eq!(read("cut", "README.md"), b"a user's notes");
    for file in ["training.json", "trainer_state.json", "adapter_config.json"] {
        let text = String::from_utf8(read("cut", file)).unwrap();
        assert!(!text.contains(".partial"), "{file} names the staging directory: {text}");
    }

    // Interrupted before any checkpoint: nothing to resume, so nothing is left.
    for signal in ["-INT", "-TERM"] {
        let before = snapshot(dir.path());
        let args = tune_every("0", &p("early"), &[]);
        let mut child = spawn(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let partial = dir.path().join("early.partial");
        signal_when(&mut child, signal, "claimed its staging directory", || partial.exists());
        interrupted(child, signal);
        assert_eq!(snapshot(dir.path()), before, "{signal} left files");
    }
}

#[test]
fn an_interrupted_train_mini_leaves_nothing_behind() {
    for signal in ["-INT", "-TERM"] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("mini");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("notes.txt"), "a user's notes").unwrap();
        let before = snapshot(dir.path());
        let mut child = spawn(&["train-mini", "--steps", "100000", "--out", out.to_str().unwrap()]);
        signal_when(&mut child, signal, "staged", || {
            std::fs::read_dir(dir.path()).unwrap().count() > 1
        });
        // Some training under way, not only the set-up.
        std::thread::sleep(Duration::from_millis(300));
        interrupted(child, signal);
        assert_eq!(snapshot(dir.path()), before, "{signal} changed or left files");
    }
}

/// An export is quick: the signal may land before, during or after the work. Whenever it
/// lands, the directory is whole or absent, and nothing else is left.
#[test]
fn an_interrupted_export_is_whole_or_absent() {
    for signal in ["-INT", "-TERM", "-INT", "-TERM"] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("export");
        let mut child = spawn(&[
            "export-hf",
            "--model",
            "notebooks-data/mini-aligner",
            "--out",
            out.to_str().unwrap(),
        ]);
        signal_when(&mut child, signal, "staged", || {
            std::fs::read_dir(dir.path()).unwrap().count() > 0
        });
        let done = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&done.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
        let left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        if done.status.success() {
            assert_eq!(left, ["export"], "{stderr}");
            let mut files: Vec<String> = std::fs::read_dir(&out)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            files.sort();
            assert_eq!(
                files,
                [
                    "config.json",
                    "generation_config.json",
                    "model.safetensors",
                    "tokenizer.json",
                    "tokenizer_config.json"
                ]
            );
        } else {
            assert_eq!(
                stderr.lines().filter(|l| l.starts_with("error:")).count(),
                1,
                "{stderr}"
            );
            // The signal came as the files were moved in (that finishes first, and says so), or
            // just after the move ended, before the process exited: either way the export is
            // whole. The second case's message cannot tell (see the stop note of issue 33).
            let whole = [
                "config.json",
                "generation_config.json",
                "model.safetensors",
                "tokenizer.json",
                "tokenizer_config.json",
            ]
            .iter()
            .all(|f| out.join(f).is_file());
            assert!(
                left.is_empty() || (whole && left == ["export"]),
                "{signal} left {left:?}: {stderr}"
            );
        }
    }
}
