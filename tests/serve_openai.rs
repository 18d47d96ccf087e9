//! The official `openai` Python client against `alens serve` (examples/openai_client.py):
//! plain and streamed chat completions equal `alens generate`'s output at several alphas.
//! Skips, saying so, where python3 or the openai package is missing.

mod serve_support;

use serve_support::{generate_json, repo, Server};
use std::process::Command;

#[test]
fn openai_client_gets_what_generate_prints() {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let has_openai = Command::new(&python)
        .args(["-c", "import openai"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !has_openai {
        eprintln!("skipped: python3 with the openai package is not installed (pip install openai)");
        return;
    }
    // generate's default budget, so the two are the same request.
    let server = Server::start(&["--max-new-tokens", "64"]);
    let (question, answer) = ("how many legs has a dog got?", "ugh, obviously. a dog has four legs.");
    let out = Command::new(&python)
        .arg(repo().join("examples/openai_client.py"))
        .args([
            "--base-url",
            &format!("{}/v1", server.url),
            "--question",
            question,
            "--answer",
            answer,
        ])
        .args(["--alpha=-1", "--alpha=0", "--alpha=0.5", "--alpha=1"])
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    for line in lines {
        let alpha = line["alpha"].as_f64().unwrap();
        let expected = generate_json(question, answer, alpha);
        assert_eq!(line["output"], expected["output"], "alpha {alpha}");
        assert_eq!(line["streamed"], expected["output"], "alpha {alpha}, streamed");
        assert_eq!(line["finish_reason"], expected["finish_reason"], "alpha {alpha}");
    }
}
