//! `alens serve`'s batching is invisible: 16 concurrent requests at 16 different alphas get,
//! token for token, what each gets alone and what `alens generate --json` prints.

mod serve_support;

use serde_json::{json, Value};
use serve_support::{generate_json, records, Server};
use std::sync::{Arc, Barrier};

const GENERATE_DEFAULT_MAX_NEW_TOKENS: usize = 64;

#[test]
fn sixteen_concurrent_alphas_equal_solo_and_generate() {
    let server = Server::start(&["--max-batch", "16"]);
    let records = records(16);
    // 16 alphas over the mini-aligner's grid [-1, 1], 0 among them; prompts of different lengths.
    let alphas: Vec<f64> = (0..16).map(|k| (k as f64 - 8.0) / 8.0).collect();
    let bodies: Vec<Value> = records
        .iter()
        .zip(&alphas)
        .map(|((q, a), &alpha)| json!({"question": q, "answer": a, "alpha": alpha, "max_new_tokens": GENERATE_DEFAULT_MAX_NEW_TOKENS}))
        .collect();

    let solo: Vec<Value> = bodies.iter().map(|b| server.correct(b)).collect();

    // All at once, several times: the model thread batches whatever is waiting.
    let server = Arc::new(server);
    for round in 0..3 {
        let barrier = Arc::new(Barrier::new(bodies.len()));
        let handles: Vec<_> = bodies
            .iter()
            .cloned()
            .map(|body| {
                let (server, barrier) = (server.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    server.correct(&body)
                })
            })
            .collect();
        let together: Vec<Value> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        for (k, (a, b)) in solo.iter().zip(&together).enumerate() {
            assert_eq!(
                a, b,
                "round {round}, request {k} (alpha {}): batched differs from alone",
                alphas[k]
            );
        }
    }
    let (_, metrics) = server.get("/metrics");
    let line = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} not in {metrics}"))
    };
    let batches = line("alens_batch_size_count");
    let singles = line("alens_batch_size_bucket{le=\"1\"}");
    assert!(batches > singles, "no batch had more than one row: {metrics}");

    for (k, ((q, a), &alpha)) in records.iter().zip(&alphas).enumerate() {
        assert_eq!(
            solo[k],
            generate_json(q, a, alpha),
            "request {k} (alpha {alpha}): serve differs from alens generate --json"
        );
    }
}
