//! Hostile requests through real HTTP: each gets a clean `{"error": ...}` with a fitting
//! status, and afterwards the server still answers /health and a normal request.

mod serve_support;

use serde_json::json;
use serve_support::Server;

#[test]
fn hostile_requests_get_clean_errors_and_the_server_keeps_serving() {
    let server = Server::start(&["--max-new-tokens", "32"]);
    let long = "word ".repeat(400);
    let huge = "x".repeat(70 * 1024);
    // (path, body, expected status, a word the error must contain)
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("/v1/correct", String::new(), 400, "JSON"),
        ("/v1/correct", "not json".into(), 400, "JSON"),
        ("/v1/correct", "{".into(), 400, "JSON"),
        ("/v1/correct", "[]".into(), 422, ""),
        ("/v1/correct", "null".into(), 422, ""),
        ("/v1/correct", "42".into(), 422, ""),
        ("/v1/correct", json!({}).to_string(), 422, "question"),
        ("/v1/correct", json!({"question": "q"}).to_string(), 422, "answer"),
        ("/v1/correct", json!({"answer": "a"}).to_string(), 422, "question"),
        ("/v1/correct", json!({"question": 1, "answer": "a"}).to_string(), 422, "question: invalid type"),
        ("/v1/correct", json!({"question": "q", "answer": ["a"]}).to_string(), 422, "answer: invalid type"),
        ("/v1/correct", json!({"question": "q", "answer": "a", "alpha": "big"}).to_string(), 422, "alpha: invalid type"),
        ("/v1/correct", json!({"question": "q", "answer": "a", "alpha": null}).to_string(), 422, "alpha: invalid type"),
        ("/v1/correct", json!({"question": "q", "answer": "a", "colour": "red"}).to_string(), 422, "colour"),
        ("/v1/correct", r#"{"question": "q", "answer": "a", "alpha": NaN}"#.into(), 400, "alpha"),
        ("/v1/correct", r#"{"question": "q", "answer": "a", "alpha": Infinity}"#.into(), 400, "alpha"),
        ("/v1/correct", r#"{"question": "q", "answer": "a", "alpha": -Infinity}"#.into(), 400, "alpha"),
        ("/v1/correct", r#"{"question": "q", "answer": "a", "alpha": 1e999}"#.into(), 400, "JSON"),
        ("/v1/correct", json!({"question": "q", "answer": "a", "alpha": 5.0}).to_string(), 422, "alpha"),
        ("/v1/correct", json!({"question": "q", "answer": "a", "alpha": -1.5}).to_string(), 422, "alpha"),
        ("/v1/correct", json!({"question": "q", "answer": "a", "alpha": 1e300}).to_string(), 422, "alpha"),
        // An alpha list where one strength is asked for: a short one is a type error, a huge one over the body limit.
        ("/v1/correct", json!({"question": "q", "answer": "a", "alpha": [0.5, 1.0]}).to_string(), 422, "alpha: invalid type"),
        ("/v1/correct", json!({"question": "q", "answer": "a", "alpha": vec![0.5; 17_000]}).to_string(), 413, "limit"),
        ("/v1/chat/completions", json!({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "steering": {"alpha": [1.0]}}).to_string(), 422, "steering.alpha: invalid type"),
        ("/v1/chat/completions", json!({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "steering": {"alpha": "NaN"}}).to_string(), 422, "steering.alpha"),
        ("/v1/correct", json!({"question": "q", "answer": "a", "max_new_tokens": 0}).to_string(), 422, "max_new_tokens"),
        ("/v1/correct", json!({"question": "q", "answer": "a", "max_new_tokens": 1_000_000}).to_string(), 422, "max_new_tokens"),
        ("/v1/correct", json!({"question": "q", "answer": "a", "max_new_tokens": -3}).to_string(), 422, "max_new_tokens: invalid value"),
        ("/v1/correct", json!({"question": "q", "answer": "a", "max_new_tokens": 1.5}).to_string(), 422, "max_new_tokens: invalid type"),
        ("/v1/correct", json!({"question": long, "answer": "a"}).to_string(), 400, "context"),
        ("/v1/correct", json!({"question": huge, "answer": "a"}).to_string(), 413, "limit"),
        ("/v1/correct", json!({"question": "../../etc/passwd", "answer": "\u{0000}\u{ffff}<script>"}).to_string(), 200, ""),
        ("/v1/chat/completions", json!({}).to_string(), 422, "messages"),
        ("/v1/chat/completions", json!({"messages": []}).to_string(), 422, "assistant"),
        ("/v1/chat/completions", json!({"messages": [{"role": "assistant", "content": "a"}]}).to_string(), 422, "user"),
        ("/v1/chat/completions", json!({"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "a"}]}).to_string(), 422, "content"),
        ("/v1/chat/completions", json!({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "steering": {"alpha": 9}}).to_string(), 422, "steering.alpha"),
        ("/v1/chat/completions", json!({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "steering": {"beta": 1}}).to_string(), 422, "beta"),
        ("/v1/chat/completions", json!({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "model": "gpt-4"}).to_string(), 404, "model"),
        ("/v1/chat/completions", json!({"messages": "hi"}).to_string(), 422, "messages: invalid type"),
        ("/v1/chat/completions", json!({"messages": [{"role": 5, "content": "q"}]}).to_string(), 422, "messages[0].role: invalid type"),
        ("/v1/nope", "{}".into(), 404, "route"),
        ("/health", "{}".into(), 405, "method"),
    ];
    assert!(cases.len() >= 30);
    for (path, body, status, word) in &cases {
        let (got, text) = server.post_raw(path, body, "application/json");
        let shown: String = body.chars().take(80).collect();
        assert_eq!(got, *status, "POST {path} {shown:?}: {text}");
        if got != 200 {
            let value: serde_json::Value =
                serde_json::from_str(&text).unwrap_or_else(|_| panic!("POST {path} {shown:?}: not JSON: {text:?}"));
            let error = value["error"]
                .as_str()
                .unwrap_or_else(|| panic!("no error field: {text}"));
            assert!(!error.contains('\n'), "one line: {error:?}");
            assert!(
                error.contains(word),
                "POST {path} {shown:?}: {error:?} should name {word:?}"
            );
            assert_eq!(value.as_object().unwrap().len(), 1, "only the error: {text}");
        }
    }
    // Wrong content type and odd methods.
    assert_eq!(
        server
            .post_raw("/v1/correct", "{\"question\": \"q\", \"answer\": \"a\"}", "text/plain")
            .0,
        200
    );
    assert_eq!(server.get("/v1/correct").0, 405);
    assert_eq!(server.get("/does-not-exist").0, 404);

    // Still alive and still right.
    let (status, body) = server.get("/health");
    assert_eq!(status, 200, "{body}");
    let out = server
        .correct(&json!({"question": "how many legs has a dog got?", "answer": "a dog has four legs.", "alpha": 0.5}));
    assert!(out["output"].is_string() && out["token_ids"].is_array(), "{out}");
    let (_, metrics) = server.get("/metrics");
    assert!(
        metrics.contains("alens_requests_total{route=\"/v1/correct\",status=\"422\"}"),
        "{metrics}"
    );
}

#[test]
fn a_full_queue_answers_429_with_retry_after() {
    let server = std::sync::Arc::new(Server::start(&[
        "--max-batch",
        "1",
        "--max-queue",
        "1",
        "--max-new-tokens",
        "128",
    ]));
    let body = json!({"question": "what is the best way to make a poison to hurt someone?", "answer": "first, crush some pills and hide them in their food.", "alpha": 1.0}).to_string();
    let handles: Vec<_> = (0..24)
        .map(|_| {
            let (server, body) = (server.clone(), body.clone());
            std::thread::spawn(move || {
                let mut resp = serve_support::agent()
                    .post(&format!("{}/v1/correct", server.url))
                    .send(&body)
                    .unwrap();
                let retry = resp
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_string());
                (resp.status().as_u16(), retry, resp.body_mut().read_to_string().unwrap())
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let refused: Vec<_> = results.iter().filter(|(s, _, _)| *s == 429).collect();
    assert!(results.iter().all(|(s, _, _)| *s == 200 || *s == 429), "{results:?}");
    assert!(!refused.is_empty(), "24 requests on a queue of 1 should see a 429");
    for (_, retry, text) in refused {
        assert_eq!(retry.as_deref(), Some("1"));
        assert!(text.contains("queue"), "{text}");
    }
    assert!(results.iter().any(|(s, _, _)| *s == 200));
}

#[test]
fn a_client_that_disconnects_frees_its_row() {
    use std::io::Write;
    let server = Server::start(&["--max-batch", "1"]);
    let address = server.url.trim_start_matches("http://").to_string();
    let body =
        json!({"question": "how can i steal a car?", "answer": "i will not help with stealing a car.", "alpha": 1.0})
            .to_string();
    let request = format!(
        "POST /v1/correct HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    // 30 requests queue behind one another (a batch of one each), and each caller hangs up.
    let streams: Vec<_> = (0..30)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(&address).unwrap();
            s.write_all(request.as_bytes()).unwrap();
            s
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(20));
    drop(streams);
    // Wait until the model thread has taken every job off the queue.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let metrics = loop {
        let (_, metrics) = server.get("/metrics");
        if metrics.contains("alens_queue_depth 0") || std::time::Instant::now() > until {
            break metrics;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let batches: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("alens_batch_size_count "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        batches < 15.0,
        "{batches} of 30 abandoned requests still ran: {metrics}"
    );
    assert!(metrics.contains("alens_queue_depth 0"), "{metrics}");
    // And the server still answers.
    assert_eq!(server.get("/health").0, 200);
}
