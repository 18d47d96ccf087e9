//! `alens serve` under load, on loopback, against today's way (one `alens generate` process
//! per request):
//!   cargo bench --bench serve_load
//! Greedy corrections of the shipped test records (notebooks-data/corpus/test.jsonl), each at
//! a random alpha (seeded) over the vector file's range, at concurrency 1, 8 and 32: for each,
//! corrections/s, p50 and p99 latency, the largest batch, and the server's peak RSS.
//! Bounded: `ALENS_BENCH_REQUESTS` requests per level (default 64, at most the 600 records),
//! and a level stops early after `ALENS_BENCH_SECONDS` (default 300). Model:
//! `ALENS_BENCH_MODEL` (default aligner-135m, whose base `alens fetch smollm2-135m-instruct`
//! caches; mini-aligner is the fast fixture). `--max-new-tokens` 64 for both ways.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MAX_NEW_TOKENS: usize = 64;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn repo() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Peak resident set size of a process in MiB (`VmHWM`).
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A tiny seeded generator (xorshift), so the alphas are the same every run.
fn alphas(n: usize, lo: f64, hi: f64) -> Vec<f64> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let unit = (state >> 11) as f64 / (1u64 << 53) as f64;
            ((lo + (hi - lo) * unit) * 100.0).round() / 100.0
        })
        .collect()
}

struct Level {
    concurrency: usize,
    done: usize,
    seconds: f64,
    latencies: Vec<f64>,
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let model = std::env::var("ALENS_BENCH_MODEL").unwrap_or_else(|_| "aligner-135m".into());
    let requests = env_or("ALENS_BENCH_REQUESTS", 64).clamp(1, 600);
    let budget = Duration::from_secs(env_or("ALENS_BENCH_SECONDS", 300) as u64);
    let records: Vec<(String, String)> = std::fs::read_to_string(repo().join("notebooks-data/corpus/test.jsonl"))
        .expect("the shipped test records")
        .lines()
        .take(requests)
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["question"].as_str().unwrap().to_string(),
                v["answer"].as_str().unwrap().to_string(),
            )
        })
        .collect();

    let mut child = Command::new(env!("CARGO_BIN_EXE_alens"))
        .args([
            "serve",
            "--model",
            &model,
            "--port",
            "0",
            "--max-new-tokens",
            &MAX_NEW_TOKENS.to_string(),
            "--max-queue",
            "1024",
        ])
        .current_dir(repo())
        .stdout(Stdio::piped())
        .spawn()
        .expect("alens serve starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let Some(url) = line
        .trim()
        .strip_prefix("alens serve: listening on ")
        .map(str::to_string)
    else {
        let _ = child.kill();
        let _ = child.wait();
        eprintln!("alens serve did not start for {model} (for aligner-135m: alens fetch smollm2-135m-instruct)");
        return;
    };
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let config: Value = agent
        .get(&format!("{url}/v1/config"))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    let (lo, hi) = (
        config["alpha_min"].as_f64().unwrap(),
        config["alpha_max"].as_f64().unwrap(),
    );
    let alphas = alphas(records.len(), lo, hi);
    let bodies: Arc<Vec<String>> = Arc::new(
        records
            .iter()
            .zip(&alphas)
            .map(|((q, a), alpha)| json!({"question": q, "answer": a, "alpha": alpha}).to_string())
            .collect(),
    );
    println!(
        "alens serve on {model}: {} records, random alphas in [{lo}, {hi}], {MAX_NEW_TOKENS} new tokens at most",
        records.len()
    );

    let mut levels = Vec::new();
    for concurrency in [1usize, 8, 32] {
        let next = Arc::new(AtomicUsize::new(0));
        let latencies = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let workers: Vec<_> = (0..concurrency)
            .map(|_| {
                let (next, latencies, bodies, agent, url) = (
                    next.clone(),
                    latencies.clone(),
                    bodies.clone(),
                    agent.clone(),
                    url.clone(),
                );
                std::thread::spawn(move || loop {
                    let k = next.fetch_add(1, Ordering::SeqCst);
                    if k >= bodies.len() || started.elapsed() > budget {
                        break;
                    }
                    let t = Instant::now();
                    let resp = agent
                        .post(&format!("{url}/v1/correct"))
                        .header("content-type", "application/json")
                        .send(bodies[k].as_str());
                    match resp {
                        Ok(r) if r.status() == 200 => latencies.lock().unwrap().push(t.elapsed().as_secs_f64()),
                        Ok(r) => eprintln!("request {k}: status {}", r.status()),
                        Err(e) => eprintln!("request {k}: {e}"),
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        let seconds = started.elapsed().as_secs_f64();
        let mut latencies = std::mem::take(&mut *latencies.lock().unwrap());
        latencies.sort_by(f64::total_cmp);
        levels.push(Level {
            concurrency,
            done: latencies.len(),
            seconds,
            latencies,
        });
        let last = levels.last().unwrap();
        eprintln!(
            "concurrency {concurrency}: {} corrections in {:.1} s",
            last.done, last.seconds
        );
    }
    let metrics = agent
        .get(&format!("{url}/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let rss = peak_rss_mib(child.id());
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();

    // Today's way: a process per request (load, generate, exit), a few of them.
    let n_processes = records.len().min(8);
    let started = Instant::now();
    for ((q, a), alpha) in records.iter().zip(&alphas).take(n_processes) {
        let out = Command::new(env!("CARGO_BIN_EXE_alens"))
            .args([
                "generate",
                "--model",
                &model,
                "--question",
                q,
                "--answer",
                a,
                &format!("--alpha={alpha}"),
                "--max-new-tokens",
                &MAX_NEW_TOKENS.to_string(),
            ])
            .current_dir(repo())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let per_process = started.elapsed().as_secs_f64() / n_processes as f64;

    let batch_sum = metrics
        .lines()
        .find_map(|l| l.strip_prefix("alens_batch_size_sum "))
        .unwrap_or("?");
    let batch_count = metrics
        .lines()
        .find_map(|l| l.strip_prefix("alens_batch_size_count "))
        .unwrap_or("?");
    println!("\n| way | concurrency | corrections/s | p50 latency (s) | p99 latency (s) |");
    println!("|---|---:|---:|---:|---:|");
    for level in &levels {
        println!(
            "| alens serve | {} | {:.2} | {:.2} | {:.2} |",
            level.concurrency,
            level.done as f64 / level.seconds,
            percentile(&level.latencies, 0.5),
            percentile(&level.latencies, 0.99)
        );
    }
    println!(
        "| alens generate, a process per request | 1 | {:.2} | {per_process:.2} | |",
        1.0 / per_process
    );
    println!("\nserver peak RSS {rss:.0} MiB; {batch_count} batches carried {batch_sum} rows");
    if let (Some(one), Some(many)) = (levels.first(), levels.last()) {
        let speedup = (many.done as f64 / many.seconds) / (one.done as f64 / one.seconds);
        println!(
            "throughput at concurrency {} / at 1: {speedup:.2}x (target >= 4x)",
            many.concurrency
        );
    }
    if let Some(eight) = levels.iter().find(|l| l.concurrency == 8) {
        let ratio = percentile(&eight.latencies, 0.99) / percentile(&eight.latencies, 0.5);
        println!("p99 / p50 at concurrency 8: {ratio:.2} (target < 3)");
    }
    println!("HF transformers' batched generate: not run by this bench (no torch here); see the issue");
}
