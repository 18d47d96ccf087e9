//! Counters for `GET /metrics`, in Prometheus' text format: requests by status, queue depth,
//! batch sizes, generated tokens, request latency.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

const LATENCY_BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
const BATCH_BUCKETS: [f64; 8] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, value: f64) {
        for (bound, count) in self.bounds.iter().zip(&mut self.counts) {
            if value <= *bound {
                *count += 1;
            }
        }
        self.sum += value;
        self.count += 1;
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}",
            self.count, self.sum, self.count
        );
    }
}

pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    queued: AtomicU64,
    generated_tokens: AtomicU64,
    batches: Mutex<Histogram>,
    latency: Mutex<Histogram>,
    batch_seconds: Mutex<Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Mutex::default(),
            queued: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            batches: Mutex::new(Histogram::new(&BATCH_BUCKETS)),
            latency: Mutex::new(Histogram::new(&LATENCY_BUCKETS)),
            batch_seconds: Mutex::new(Histogram::new(&LATENCY_BUCKETS)),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A counter poisoned by a panicking thread still counts.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Metrics {
    pub fn request(&self, route: &str, status: u16, seconds: f64) {
        *lock(&self.requests).entry((route.to_string(), status)).or_default() += 1;
        lock(&self.latency).observe(seconds);
    }

    pub fn enqueued(&self) {
        self.queued.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dequeued(&self, n: usize) {
        self.queued.fetch_sub(n as u64, Ordering::Relaxed);
    }

    pub fn batch(&self, rows: usize) {
        lock(&self.batches).observe(rows as f64);
    }

    pub fn batch_seconds(&self, seconds: f64) {
        lock(&self.batch_seconds).observe(seconds);
    }

    pub fn generated(&self, tokens: usize) {
        self.generated_tokens.fetch_add(tokens as u64, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP alens_requests_total HTTP requests answered, by route and status.\n# TYPE alens_requests_total counter\n");
        for ((route, status), n) in lock(&self.requests).iter() {
            let _ = writeln!(out, "alens_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP alens_queue_depth Requests waiting for the model.\n# TYPE alens_queue_depth gauge\nalens_queue_depth {}",
            self.queued.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP alens_generated_tokens_total Tokens generated for answered requests.\n# TYPE alens_generated_tokens_total counter\nalens_generated_tokens_total {}",
            self.generated_tokens.load(Ordering::Relaxed)
        );
        lock(&self.batches).render("alens_batch_size", "Rows per model batch.", &mut out);
        lock(&self.batch_seconds).render("alens_batch_seconds", "Wall time per model batch.", &mut out);
        lock(&self.latency).render(
            "alens_request_seconds",
            "Request latency, from arrival to response.",
            &mut out,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_has_every_series() {
        let m = Metrics::default();
        m.request("/v1/correct", 200, 0.03);
        m.request("/v1/correct", 422, 0.001);
        m.enqueued();
        m.enqueued();
        m.dequeued(1);
        m.batch(3);
        m.generated(17);
        let text = m.render();
        for line in [
            "alens_requests_total{route=\"/v1/correct\",status=\"200\"} 1",
            "alens_requests_total{route=\"/v1/correct\",status=\"422\"} 1",
            "alens_queue_depth 1",
            "alens_generated_tokens_total 17",
            "alens_batch_size_bucket{le=\"2\"} 0",
            "alens_batch_size_bucket{le=\"4\"} 1",
            "alens_request_seconds_bucket{le=\"0.05\"} 2",
            "alens_request_seconds_count 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from:\n{text}");
        }
    }
}
