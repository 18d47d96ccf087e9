//! Reliability 2 through the binary, the classes the first suites reach only in unit tests:
//! two runs on one output (class 1), a file that appears at the output while a run works
//! (class 3), a vector file and sidecar found mismatched (class 4), a ledger that is
//! unwritable, corrupt or handed a forging path (class 5), a file-size limit (class 6), and an
//! alpha list too long for the demo (class 9). Each ends in one `error:` line (or one `warning:` where the
//! command rightly goes on), no panic, every file that was there byte-identical, and nothing
//! left but what the error line names.

mod common;
use common::repo;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = if path.is_symlink() {
            std::fs::read_link(&path).unwrap().display().to_string().into_bytes()
        } else if path.is_dir() {
            Vec::new()
        } else {
            std::fs::read(&path).unwrap()
        };
        out.insert(path, bytes);
    }
    out
}

fn alens(home: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_alens"));
    command
        .current_dir(repo())
        .env("ALENS_MODEL", "mini-aligner")
        .env("ALENS_HOME", home);
    command
}

/// Exactly one `error:` line and no panic, after a non-zero exit; the line.
fn one_error(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "should fail: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "not one error line: {stderr}");
    errors[0].to_string()
}

/// `n` records of the shipped test set.
fn records(path: &Path, n: usize) {
    let test = std::fs::read_to_string(repo().join("notebooks-data/corpus/test.jsonl")).unwrap();
    let lines: Vec<&str> = test.lines().collect();
    let text: String = (0..n).map(|k| format!("{}\n", lines[k % lines.len()])).collect();
    std::fs::write(path, text).unwrap();
}

fn wait_for(path: &Path, child: &mut std::process::Child) {
    let started = Instant::now();
    while !path.exists() {
        assert!(child.try_wait().unwrap().is_none(), "ended before {}", path.display());
        assert!(started.elapsed() < Duration::from_secs(120), "no {}", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Class 1: a second capture to an output another is writing stops at once, and the first's
/// staging file and journal are not touched by it.
#[test]
fn two_runs_on_one_output_never_mix() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    records(&dir.path().join("d.jsonl"), 800);
    let out = dir.path().join("acts.safetensors");
    let capture = |home: &Path| {
        let mut command = alens(home);
        command.args([
            "capture",
            "--data",
            dir.path().join("d.jsonl").to_str().unwrap(),
            "--points",
            "resid_post",
            "--positions",
            "last",
            "--out",
            out.to_str().unwrap(),
        ]);
        command
    };
    let mut first = capture(&home)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&dir.path().join("acts.safetensors.partial.jsonl"), &mut first);
    let second = capture(&home).output().unwrap();
    let line = one_error(&second);
    assert!(line.contains("another alens run"), "{line}");
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success(), "the first run was disturbed");
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["acts.safetensors", "d.jsonl", "home"]);
}

/// Class 3: a file that appears at the output path while the run works is left as it is; the
/// run's result is kept under the name its one error line gives, and nothing else is left.
#[test]
fn a_file_that_appears_at_the_output_meanwhile_is_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    records(&dir.path().join("d.jsonl"), 800);
    let out = dir.path().join("acts.safetensors");
    let mut child = alens(&home)
        .args([
            "capture",
            "--data",
            dir.path().join("d.jsonl").to_str().unwrap(),
            "--points",
            "resid_post",
            "--positions",
            "last",
            "--out",
            out.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&dir.path().join("acts.safetensors.partial.jsonl"), &mut child);
    std::fs::write(&out, "a user's file, made meanwhile").unwrap();
    let line = one_error(&child.wait_with_output().unwrap());
    assert!(line.contains("appeared"), "{line}");
    assert_eq!(std::fs::read(&out).unwrap(), b"a user's file, made meanwhile");
    let kept: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("acts.safetensors.")
        })
        .collect();
    assert_eq!(kept.len(), 1, "only the kept result: {kept:?}");
    assert!(line.contains(&kept[0].display().to_string()), "{line}");
    assert!(
        std::fs::read(&kept[0]).unwrap().len() > 800 * 4,
        "the kept result is whole"
    );
}

/// Class 5: a ledger that cannot be written is said in one warning line and the output is
/// still written, but not taken for alens' own later; a corrupt ledger is said once and its
/// good lines still count; a path with a newline is never logged, so it cannot forge a line.
#[test]
fn an_unwritable_corrupt_or_forged_ledger_is_said_and_never_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join("written.tsv")).unwrap();
    let out = dir.path().join("c.jsonl");
    let corpus = |home: &Path, out: &Path| {
        alens(home)
            .args(["corpus", "--n", "3", "--out", out.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let first = corpus(&home, &out);
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{stderr}");
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("warning:")).count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("ledger"), "{stderr}");
    let written = std::fs::read(&out).unwrap();
    let line = one_error(&corpus(&home, &out));
    assert!(line.contains("alens did not write it"), "{line}");
    assert_eq!(std::fs::read(&out).unwrap(), written);

    // Corrupt lines beside good ones: said once, the good ones still count.
    let home = dir.path().join("home2");
    let own = corpus(&home, &out.with_file_name("own.jsonl"));
    assert!(own.status.success());
    let ledger = home.join("written.tsv");
    let mut text = std::fs::read_to_string(&ledger).unwrap();
    text.push_str("garbage\n12\tnot-a-time\t/x\n");
    std::fs::write(&ledger, &text).unwrap();
    let again = corpus(&home, &out.with_file_name("own.jsonl"));
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "its own output is still its own: {stderr}");
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("warning:")).count(),
        1,
        "{stderr}"
    );

    // A name that would forge a ledger line is never logged: the next run refuses it.
    let forged = dir.path().join("f.jsonl\n0\t0\tx");
    assert!(corpus(&home, &forged).status.success());
    assert!(!std::fs::read_to_string(&ledger).unwrap().contains("f.jsonl"));
    let line = one_error(&corpus(&home, &forged));
    assert!(
        line.contains("alens did not write it") && line.contains("f.jsonl\\n0"),
        "{line}"
    );
}

/// Class 6: a write past the file-size limit is one error line, and its temporary goes; with
/// several outputs, none is written (class 4).
#[test]
fn a_file_size_limit_is_one_line_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    records(&dir.path().join("d.jsonl"), 400);
    let d = dir.path().join("d.jsonl").display().to_string();
    let out = |name: &str| dir.path().join(name).display().to_string();
    for args in [
        vec!["corpus", "--n", "20000", "--out", &out("big.jsonl")],
        vec![
            "capture",
            "--data",
            &d,
            "--points",
            "all",
            "--out",
            &out("a.safetensors"),
        ],
        vec!["capture", "--data", &d, "--points", "all", "--out", &out("a.npz")],
        // Class 4 as well: the JSON and CSV fit, the figure does not; none is written.
        vec![
            "sweep",
            "--limit",
            "2",
            "--alphas",
            "0,1",
            "--json",
            &out("s.json"),
            "--csv",
            &out("s.csv"),
            "--out",
            &out("s.png"),
        ],
    ] {
        let before = snapshot(dir.path());
        let script = "ulimit -f 64; exec \"$0\" \"$@\"";
        let output = alens(&home).program_and_args_in_shell(script, &args).output().unwrap();
        let line = one_error(&output);
        assert!(
            line.contains("too large") || line.contains("File too large"),
            "{args:?}: {line}"
        );
        assert_eq!(snapshot(dir.path()), before, "{args:?} left files");
    }
}

/// Class 4: a vector file replaced without its sidecar (a crash between the two renames) is
/// refused by every reader. Class 9: the demo bounds its alpha list before any work.
#[test]
fn mismatched_vectors_and_long_alpha_lists_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let shipped = repo().join("notebooks-data/mini-aligner/copy-correct");
    std::fs::copy(shipped.with_extension("json"), dir.path().join("v.json")).unwrap();
    let mut bytes = std::fs::read(shipped.with_extension("safetensors")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(dir.path().join("v.safetensors"), bytes).unwrap();
    let vectors = dir.path().join("v.safetensors").display().to_string();
    let before = snapshot(dir.path());
    let question = ["--question", "q", "--answer", "a"];
    for args in [
        [&["generate", "--vectors", &vectors, "--alpha", "1"][..], &question[..]].concat(),
        [
            &[
                "scan",
                "--vectors",
                &vectors,
                "--out",
                &dir.path().join("s.png").display().to_string(),
            ][..],
            &question[..],
        ]
        .concat(),
    ] {
        let line = one_error(&alens(&home).args(&args).output().unwrap());
        assert!(line.contains("sha256") || line.contains("sidecar"), "{args:?}: {line}");
        assert_eq!(snapshot(dir.path()), before, "{args:?}");
    }
    let many = vec!["0.5"; 1001].join(",");
    let started = Instant::now();
    let report = dir.path().join("report").display().to_string();
    let line = one_error(
        &alens(&home)
            .args(["demo", "--model", "mini-aligner", "--alphas", &many, "--out", &report])
            .output()
            .unwrap(),
    );
    assert!(line.contains("at most 1000"), "{line}");
    assert!(started.elapsed() < Duration::from_secs(20), "refused only after work");
    assert_eq!(snapshot(dir.path()), before);
}

/// Classes 1 and 2: a directory output that is a dangling link, a tune whose checkpoint
/// directory (OUT.partial) is a link or a user's file, and a file output whose name ends in a
/// slash are refused before any work, and left as they are.
#[test]
fn odd_output_paths_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let p = |name: &str| dir.path().join(name).display().to_string();
    std::os::unix::fs::symlink(dir.path().join("nowhere"), dir.path().join("dangling")).unwrap();
    std::fs::create_dir(dir.path().join("users")).unwrap();
    std::fs::write(dir.path().join("users/notes.txt"), "a user's notes").unwrap();
    std::os::unix::fs::symlink(dir.path().join("users"), dir.path().join("linked.partial")).unwrap();
    std::fs::write(dir.path().join("mine.partial"), "a user's file").unwrap();
    records(&dir.path().join("d.jsonl"), 8);
    let tune = |out: &str| {
        vec![
            "tune".to_string(),
            "--base".into(),
            "notebooks-data/mini-aligner".into(),
            "--data".into(),
            p("d.jsonl"),
            "--steps".into(),
            "2".into(),
            "--out".into(),
            out.to_string(),
        ]
    };
    for args in [
        vec![
            "train-mini".to_string(),
            "--steps".into(),
            "2".into(),
            "--out".into(),
            p("dangling"),
        ],
        vec![
            "demo".to_string(),
            "--model".into(),
            "mini-aligner".into(),
            "--out".into(),
            p("dangling"),
        ],
        tune(&p("dangling")),
        tune(&p("linked")),
        tune(&p("mine")),
        vec![
            "corpus".to_string(),
            "--n".into(),
            "2".into(),
            "--out".into(),
            format!("{}/", p("x")),
        ],
    ] {
        let before = snapshot(dir.path());
        let inside = snapshot(&dir.path().join("users"));
        let started = Instant::now();
        let line = one_error(&alens(&home).args(&args).output().unwrap());
        assert!(
            line.contains("refusing") || line.contains("--resume"),
            "{args:?}: {line}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{args:?}: refused only after work"
        );
        assert_eq!(snapshot(dir.path()), before, "{args:?}");
        assert_eq!(snapshot(&dir.path().join("users")), inside, "{args:?}");
    }
    assert!(dir.path().join("dangling").is_symlink() && dir.path().join("linked.partial").is_symlink());
}

/// Class 6: stdout and stderr both to readers that went away (`alens ... 2>&1 | head -1`): no
/// panic, the files asked for are still written, and a failure is still exit 1.
#[test]
fn closed_stdout_and_stderr_are_no_panic() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    records(&dir.path().join("d.jsonl"), 8);
    let json = dir.path().join("e.json");
    let run = |args: &[&str]| {
        let mut child = alens(&home)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        drop(child.stderr.take());
        child.wait().unwrap()
    };
    let data = dir.path().join("d.jsonl").display().to_string();
    let ok = run(&["eval", "--data", &data, "--json", json.to_str().unwrap()]);
    assert!(ok.success(), "{ok}");
    assert!(json.is_file(), "the --json output was not written");
    let failed = run(&[
        "generate",
        "--question",
        "q",
        "--answer",
        "a",
        "--alpha",
        "1",
        "--vectors",
        "/no/such.safetensors",
    ]);
    assert_eq!(failed.code(), Some(1), "{failed}");
}

/// Runs the binary under `sh -c SCRIPT` (the script ends in `exec "$0" "$@"`), keeping the
/// environment and directory already set.
trait InShell {
    fn program_and_args_in_shell(&mut self, script: &str, args: &[&str]) -> Command;
}

impl InShell for Command {
    fn program_and_args_in_shell(&mut self, script: &str, args: &[&str]) -> Command {
        let mut shell = Command::new("sh");
        shell.arg("-c").arg(script).arg(self.get_program()).args(args);
        if let Some(dir) = self.get_current_dir() {
            shell.current_dir(dir);
        }
        for (key, value) in self.get_envs() {
            match value {
                Some(value) => shell.env(key, value),
                None => shell.env_remove(key),
            };
        }
        shell
    }
}
