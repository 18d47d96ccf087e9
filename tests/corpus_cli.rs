//! The shipped corpus files reproduce byte for byte from the commands their cards give.

mod common;
use common::*;

#[test]
fn shipped_corpus_files_reproduce_from_their_documented_commands() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[&str]); 5] = [
        ("corpus/test.jsonl", &["--seed", "101", "--n", "600", "--split", "test"]),
        ("stimuli/copy-correct.jsonl", &["--seed", "7", "--lat-pairs", "200"]),
        (
            "aligner-135m/test.jsonl",
            &["--style", "english", "--split", "test", "--n", "300", "--seed", "7"],
        ),
        (
            "aligner-135m/copy-correct-proportional.jsonl",
            &["--style", "english", "--lat-pairs", "150", "--seed", "11"],
        ),
        (
            "aligner-135m/copy-correct.jsonl",
            &[
                "--style",
                "english",
                "--lat-pairs",
                "800",
                "--seed",
                "12",
                "--per-kind",
                "30",
            ],
        ),
    ];
    for (k, (shipped, args)) in cases.iter().enumerate() {
        let out = dir.path().join(format!("{k}.jsonl"));
        let stdout = alens_ok(&[&["corpus"], *args, &["--out", out.to_str().unwrap()]].concat());
        let want = std::fs::read(repo().join("notebooks-data").join(shipped)).unwrap();
        assert!(
            std::fs::read(&out).unwrap() == want,
            "alens corpus {args:?} no longer writes notebooks-data/{shipped}"
        );
        if args.contains(&"--per-kind") {
            let kinds = "pairs by kind: false-fact 30, evasion 30, cut-off 30, harmful 30, insult 115";
            assert!(stdout.contains(kinds), "{stdout}");
        }
    }
}

#[test]
fn per_kind_needs_lat_pairs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("c.jsonl");
    let run = alens(&["corpus", "--per-kind", "30", "--out", out.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success() && stderr.contains("--lat-pairs"), "{stderr}");
    assert!(!out.exists());
}
