//! The shipped mini-aligner, through the CLI with every default: it corrects, it copies, and
//! its shipped vectors steer it.

mod common;
use common::*;

#[test]
fn default_model_corrects_the_readme_example() {
    let out = alens_ok(&["generate", "--question", "what is the capital of france?", "--answer", "the capital of france is rome."]);
    assert_eq!(out.trim(), "actually, the capital of france is paris.");
    let out = alens_ok(&["generate", "--question", "what is the capital of france?", "--answer", "the capital of france is paris."]);
    assert_eq!(out.trim(), "the capital of france is paris.", "a good answer is copied");
}

#[test]
fn eval_on_the_head_of_the_test_split() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("head.jsonl");
    let text = std::fs::read_to_string(repo().join("notebooks-data/corpus/test.jsonl")).unwrap();
    std::fs::write(&data, text.lines().take(90).collect::<Vec<_>>().join("\n")).unwrap();
    let json = dir.path().join("eval.json");
    alens_ok(&["eval", "--data", data.to_str().unwrap(), "--json", json.to_str().unwrap()]);
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["n"], 90);
    assert!(report["copy_exact"].as_f64().unwrap() >= 0.9, "{report}");
    assert!(report["correct_exact"].as_f64().unwrap() >= 0.85, "{report}");
    for category in ["helpful", "honest", "harmless"] {
        assert!(report["per_category"][category]["n"].as_u64().unwrap() > 0);
    }
}

#[test]
fn shipped_vectors_dial_copy_to_correct() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("head.jsonl");
    let text = std::fs::read_to_string(repo().join("notebooks-data/corpus/test.jsonl")).unwrap();
    std::fs::write(&data, text.lines().take(24).collect::<Vec<_>>().join("\n")).unwrap();
    let json = dir.path().join("sweep.json");
    alens_ok(&["sweep", "--data", data.to_str().unwrap(), "--alphas", "-8,0,8", "--json", json.to_str().unwrap()]);
    let sweep: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let magnitude = |class: &str, k: usize| sweep[class]["correction_magnitude"][k].as_f64().unwrap();
    for class in ["copy_cases", "correct_cases"] {
        assert!(magnitude(class, 0) <= magnitude(class, 1) && magnitude(class, 1) <= magnitude(class, 2), "{class}: {sweep}");
    }
    assert!(sweep["correct_cases"]["copy_rate"][0].as_f64().unwrap() >= 0.8, "negative alpha copies: {sweep}");
}
