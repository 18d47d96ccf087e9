//! The shipped mini-aligner, through the CLI with every default: it corrects and it copies.
//! (Regression floors below the measured rates; the model card has the full table.)

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
    let outputs = dir.path().join("outputs.jsonl");
    alens_ok(&["eval", "--data", data.to_str().unwrap(), "--json", json.to_str().unwrap(), "--outputs", outputs.to_str().unwrap()]);
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    // --outputs lists every record in order, and its `exact` flags add up to the rates.
    let rows: Vec<serde_json::Value> =
        std::fs::read_to_string(&outputs).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 90);
    assert_eq!(rows[0]["question"].as_str(), text.lines().next().and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok()).unwrap()["question"].as_str());
    let exact = rows.iter().filter(|r| r["exact"] == true).count() as f64;
    let rate = |key: &str, n: &str| report[key].as_f64().unwrap() * report[n].as_f64().unwrap();
    assert!((exact - rate("copy_exact", "n_copy") - rate("correct_exact", "n_correct")).abs() < 1e-6, "{exact} exact rows vs {report}");
    assert!(rows.iter().all(|r| r["output"].is_string()));
    assert_eq!(report["n"], 90);
    assert!(report["copy_exact"].as_f64().unwrap() >= 0.75, "{report}");
    assert!(report["correct_exact"].as_f64().unwrap() >= 0.9, "{report}");
    for category in ["helpful", "honest", "harmless"] {
        assert!(report["per_category"][category]["n"].as_u64().unwrap() > 0);
    }
}
