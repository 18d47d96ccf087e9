//! `alens patch` through the binary on the mini-aligner: the report's contract, its controls,
//! resume after a kill, and bad input.

mod common;
use common::*;

fn patch_args(dir: &std::path::Path, name: &str, extra: &[&str]) -> Vec<String> {
    let p = |n: &str| dir.join(n).display().to_string();
    let mut args: Vec<String> = [
        "patch",
        "--max-pairs",
        "40",
        "--batch-size",
        "4",
        "--out",
        &p(&format!("{name}.png")),
        "--json",
        &p(&format!("{name}.json")),
        "--csv",
        &p(&format!("{name}.csv")),
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn run_ok(args: &[String]) -> String {
    alens_ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn read_json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every layer has both directions' switch rate and logit-difference change; at the last layer
/// the decision position's residual is the whole of what the unembedding reads, so every pair
/// switches and the patched run is the source run exactly; the self-patch is the clean run bit
/// for bit at every layer; the unrelated control switches far less than the patch.
#[test]
fn patch_reports_both_directions_per_layer_with_controls() {
    let dir = tempfile::tempdir().unwrap();
    let stdout = run_ok(&patch_args(dir.path(), "p", &[]));
    assert!(stdout.contains("40 pairs"), "{stdout}");
    let report = read_json(&dir.path().join("p.json"));
    let layers = report["layers"].as_array().unwrap().len();
    assert_eq!(layers, 6, "the mini-aligner has 6 layers, all patched by default");
    for direction in ["correct_from_copy", "copy_from_correct"] {
        for key in ["switch_rate", "logit_diff_change", "logit_diff_recovered"] {
            assert_eq!(
                report[direction][key].as_array().unwrap().len(),
                layers,
                "{direction}.{key}"
            );
        }
        let last = |key: &str| report[direction][key][layers - 1].as_f64().unwrap();
        assert_eq!(last("switch_rate"), 1.0, "{direction}");
        assert_eq!(last("logit_diff_recovered"), 1.0, "{direction}");
        let control = &report["controls"]["unrelated"][direction]["switch_rate"];
        let peak = control
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .fold(0.0, f64::max);
        assert!(peak <= 0.25, "{direction}: the unrelated control switches {peak}");
    }
    assert!(report["controls"]["unrelated"]["pairs"].as_u64().unwrap() > 20);
    let identical = report["controls"]["self"]["identical"].as_array().unwrap();
    assert!(identical.iter().all(|v| v.as_bool() == Some(true)), "{identical:?}");
    assert!(report["controls"]["self"]["max_abs_logit_diff"]
        .as_array()
        .unwrap()
        .iter()
        .all(|v| v.as_f64() == Some(0.0)));
    assert_eq!(report["positions"], "decision");
    assert_eq!(report["point"], "resid_post");
    assert_eq!(
        report["lat_accuracy"].as_array().unwrap().len(),
        layers,
        "the mini-aligner's shipped vectors give LAT's accuracy"
    );
    let csv = std::fs::read_to_string(dir.path().join("p.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 2 * layers);
    assert!(csv.starts_with("layer,direction,switch_rate,"));
    let png = std::fs::read(dir.path().join("p.png")).unwrap();
    assert_eq!(&png[..4], b"\x89PNG");

    // The other hook points and positions run, and whole outputs are compared with more tokens.
    let stdout = run_ok(&patch_args(
        dir.path(),
        "q",
        &[
            "--points",
            "mlp_out",
            "--positions",
            "answer",
            "--layers",
            "1-2",
            "--max-new-tokens",
            "4",
        ],
    ));
    assert!(stdout.contains("mlp_out at answer positions"), "{stdout}");
    let report = read_json(&dir.path().join("q.json"));
    assert_eq!(report["layers"], serde_json::json!([1, 2]));
    assert_eq!(
        report["correct_from_copy"]["output_switch_rate"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

/// A patch killed with SIGKILL resumes from its journal to the uninterrupted report.
#[test]
fn a_killed_patch_resumes_to_the_uninterrupted_report() {
    let dir = tempfile::tempdir().unwrap();
    run_ok(&patch_args(dir.path(), "whole", &[]));
    let journal = dir.path().join("cut.png.partial.jsonl");
    let batches = kill_after_batches(&patch_args(dir.path(), "cut", &[]), &journal, 2);
    assert!(batches < 10, "killed before the end ({batches} batches)");
    assert!(!dir.path().join("cut.json").exists());
    let refused = alens_err(
        &patch_args(dir.path(), "cut", &[])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(refused.contains("--resume"), "{refused}");
    run_ok(&patch_args(dir.path(), "cut", &["--resume"]));
    assert!(!journal.exists(), "a finished run removes its journal");
    let read = |n: &str| {
        let mut v = read_json(&dir.path().join(n));
        v.as_object_mut().unwrap().remove("provenance");
        v
    };
    assert_eq!(read("cut.json"), read("whole.json"));
    assert_eq!(
        std::fs::read(dir.path().join("cut.csv")).unwrap(),
        std::fs::read(dir.path().join("whole.csv")).unwrap()
    );
}

/// Bad input: one error line, and nothing written or touched.
#[test]
fn patch_refuses_bad_input_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    let err = alens_err(&["patch", "--positions", "all", "--out", &p("a.png")]);
    assert!(err.contains("same length") && err.contains("pair 1"), "{err}");
    let err = alens_err(&["patch", "--layers", "6", "--out", &p("a.png")]);
    assert!(err.contains('6'), "{err}");
    // A flag out of its bounds is clap's usage error (exit 2).
    let out = alens(&["patch", "--max-pairs", "1", "--out", &p("a.png")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("out of range"), "{err}");
    let err = alens_err(&["patch", "--out", &p("a.gif")]);
    assert!(err.contains("gif") || err.contains("png"), "{err}");
    std::fs::write(dir.path().join("mine.json"), "keep me").unwrap();
    let err = alens_err(&["patch", "--out", &p("a.png"), "--json", &p("mine.json")]);
    assert!(err.contains("mine.json"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("mine.json")).unwrap(),
        "keep me"
    );
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("mine.json")],
        "nothing else written"
    );
}
