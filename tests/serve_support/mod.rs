//! Helpers for the `serve_*` end-to-end tests: start the real `alens serve` on a free port,
//! talk to it over real HTTP, stop it.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A running `alens serve --model mini-aligner --port 0`, killed when dropped.
pub struct Server {
    pub child: Child,
    pub url: String,
}

impl Server {
    pub fn start(extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_alens"))
            .args(["serve", "--model", "mini-aligner", "--port", "0"])
            .args(extra)
            .current_dir(repo())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("alens serve starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("the URL line");
        let url = line
            .trim()
            .strip_prefix("alens serve: listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        Server { child, url }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM (or another signal) to the server.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for the server to exit, up to `limit`; its exit code.
    pub fn wait(&mut self, limit: Duration) -> Option<i32> {
        let until = std::time::Instant::now() + limit;
        while std::time::Instant::now() < until {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the server did not exit within {limit:?}");
    }

    pub fn post(&self, path: &str, body: &str) -> (u16, Value) {
        let (status, text) = self.post_raw(path, body, "application/json");
        let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("POST {path}: not JSON ({e}): {text:?}"));
        (status, value)
    }

    pub fn post_raw(&self, path: &str, body: &str, content_type: &str) -> (u16, String) {
        let mut resp = agent()
            .post(&format!("{}{path}", self.url))
            .header("content-type", content_type)
            .send(body)
            .expect("request sent");
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_string().expect("body read"))
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        let mut resp = agent()
            .get(&format!("{}{path}", self.url))
            .call()
            .expect("request sent");
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_string().expect("body read"))
    }

    pub fn correct(&self, body: &Value) -> Value {
        let (status, value) = self.post("/v1/correct", &body.to_string());
        assert_eq!(status, 200, "{value}");
        value
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client that returns 4xx/5xx responses instead of failing on them.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

/// The first `n` records of the shipped test corpus, as (question, answer).
pub fn records(n: usize) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo().join("notebooks-data/corpus/test.jsonl")).unwrap();
    text.lines()
        .take(n)
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["question"].as_str().unwrap().to_string(),
                v["answer"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// `alens generate --json` for one record and alpha: its last line, parsed.
pub fn generate_json(question: &str, answer: &str, alpha: f64) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_alens"))
        .args([
            "generate",
            "--model",
            "mini-aligner",
            "--json",
            "--question",
            question,
            "--answer",
            answer,
            &format!("--alpha={alpha}"),
        ])
        .current_dir(repo())
        .output()
        .expect("alens generate runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}
